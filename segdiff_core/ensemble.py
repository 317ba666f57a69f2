"""From an ensemble of sampled masks to a probability, a mask and uncertainty maps (paper Sec. 4.2)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class EnsembleResult:
    """Per-pixel summary of G generated masks (all arrays (H, W) unless said).

    Attributes
    ----------
    probability
        mean over generations of p_i = clamp((x_0^i + 1) / 2, 0, 1), float32.
    mask
        probability > threshold, bool (a pixel at exactly the threshold is background,
        as in :mod:`segdiff_core.metrics`).
    std
        standard deviation of p_i across generations (the spread), float32.
    entropy
        binary predictive entropy of ``probability`` in bits, in [0, 1], float32.
    threshold
        the threshold used for ``mask``.
    num_generations
        G.
    generations
        the individual p_i, (G, H, W) float32, or None if not requested.
    """

    probability: np.ndarray
    mask: np.ndarray
    std: np.ndarray
    entropy: np.ndarray
    threshold: float
    num_generations: int
    generations: np.ndarray | None = None

    def uncertainty(self, kind: str = "std") -> np.ndarray:
        """The uncertainty map by name: 'std' or 'entropy'."""
        if kind == "std":
            return self.std
        if kind == "entropy":
            return self.entropy
        raise ValueError(f"uncertainty kind must be 'std' or 'entropy', got {kind!r}")


def to_probability(x0: torch.Tensor) -> torch.Tensor:
    """Masks live in [-1, 1]: p = clamp((x + 1) / 2, 0, 1)."""
    return ((x0.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = -p log2 p - (1 - p) log2 (1 - p), with 0 log 0 = 0."""
    p = np.clip(p.astype(np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0))
    return h.astype(np.float32)


def summarize(x0: torch.Tensor, threshold: float = 0.5, keep_generations: bool = False) -> EnsembleResult:
    """Average G samples x0 ((G, 1, H, W) or (G, H, W), values ~[-1, 1]) into an EnsembleResult."""
    if x0.ndim == 4:
        if x0.shape[1] != 1:
            raise ValueError(f"expected one mask channel, got shape {tuple(x0.shape)}")
        x0 = x0[:, 0]
    if x0.ndim != 3:
        raise ValueError(f"expected (G, H, W) or (G, 1, H, W) samples, got shape {tuple(x0.shape)}")
    p = to_probability(x0).cpu().numpy()
    mean = p.mean(axis=0).astype(np.float32)
    std = p.std(axis=0).astype(np.float32)
    return EnsembleResult(
        probability=mean,
        mask=mean > threshold,
        std=std,
        entropy=binary_entropy(mean),
        threshold=float(threshold),
        num_generations=int(p.shape[0]),
        generations=p.astype(np.float32) if keep_generations else None,
    )
