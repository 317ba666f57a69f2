"""Small real models for tests (no mocks): the 'test' preset with non-trivial random weights."""
from __future__ import annotations

import torch

from segdiff_core.config import SegDiffConfig
from segdiff_core.model import SegDiffModel
from segdiff_core.presets import get_preset


def random_model(config: SegDiffConfig | None = None, seed: int = 0, std: float = 0.05) -> tuple[SegDiffModel, SegDiffConfig]:
    """A real SegDiff network whose zero-initialised output layers are given random weights,
    so that its predictions depend on x_t, t and the image."""
    config = config or get_preset("test")
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(seed)
        model = SegDiffModel(config.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0 and p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval(), config
