"""Time-step embeddings: the paper's shared learned look-up table, or sinusoidal (reference)."""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding. t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeEmbedding(nn.Module):
    """t -> (B, 4C): a table (or sinusoid) of width C, then Linear-SiLU-Linear to 4C.

    The same embedding feeds every residual block of E and D (paper: "shared").
    ``t`` holds integer steps of the *training* chain, 0 <= t < T, also when sampling with
    fewer (respaced) steps, so respacing never touches the network.
    """

    def __init__(self, kind: str, num_timesteps: int, channels: int) -> None:
        super().__init__()
        self.kind = kind
        self.num_timesteps = num_timesteps
        self.channels = channels
        if kind == "learned":
            self.table = nn.Embedding(num_timesteps, channels)
        elif kind != "sinusoidal":
            raise ValueError(f"unknown time embedding {kind!r}")
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, 4 * channels))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "learned":
            if t.dtype.is_floating_point:
                t = t.round().long()
            if bool(((t < 0) | (t >= self.num_timesteps)).any()):
                raise ValueError(f"time steps must lie in [0, {self.num_timesteps}), got {t.tolist()}")
            base = self.table(t)
        else:
            base = sinusoidal_embedding(t, self.channels)
        return self.mlp(base)
