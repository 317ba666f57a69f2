"""Exponential moving average of model weights (the reference uses EMA 0.9999)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Shadow copy of a model whose weights follow ``w_ema = d * w_ema + (1 - d) * w``.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates, so a short
    run's EMA is not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        ema_params = dict(self.model.named_parameters())
        for name, p in model.named_parameters():
            ema_params[name].lerp_(p.detach(), 1.0 - d)
        ema_bufs = dict(self.model.named_buffers())
        for name, b in model.named_buffers():
            ema_bufs[name].copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["weights"])
