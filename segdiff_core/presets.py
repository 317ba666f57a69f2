"""Named configurations: the paper's three (reference code, C = 128) and small CPU presets.

The paper's models have ~10^8 parameters and cost tens of GFLOPs per step: right for a GPU,
unusable interactively on a laptop CPU. The ``cpu-*`` presets keep the architecture (RRDB
encoder G, F, the sum, the attention U-Net) at a width and depth that sample a box prompt in
about a second on two CPU cores; ``test`` is the smallest model that exercises every part.
"""
from __future__ import annotations

from typing import Callable

from segdiff_core.config import DiffusionConfig, InferenceConfig, ModelConfig, SegDiffConfig


def _paper(image_size: int, channel_mult: tuple[int, ...], rrdb_blocks: int, dropout: float) -> SegDiffConfig:
    return SegDiffConfig(
        model=ModelConfig(
            image_size=image_size,
            in_channels=3,
            model_channels=128,
            channel_mult=channel_mult,
            num_res_blocks=3,
            attention_resolutions=(16, 8),
            num_heads=4,
            dropout=dropout,
            rrdb_blocks=rrdb_blocks,
            rrdb_features=64,
            rrdb_growth=32,
            num_timesteps=100,
        ),
        diffusion=DiffusionConfig(num_timesteps=100),
        inference=InferenceConfig(generations=30, steps=100, sampler="ddpm"),
    )


def _cpu(image_size: int, channels: int, channel_mult: tuple[int, ...], res_blocks: int, rrdb: int, nf: int, gc: int, in_channels: int = 3) -> SegDiffConfig:
    return SegDiffConfig(
        model=ModelConfig(
            image_size=image_size,
            in_channels=in_channels,
            model_channels=channels,
            channel_mult=channel_mult,
            num_res_blocks=res_blocks,
            attention_resolutions=(16, 8),
            num_heads=4,
            rrdb_blocks=rrdb,
            rrdb_features=nf,
            rrdb_growth=gc,
            num_timesteps=100,
        ),
        diffusion=DiffusionConfig(num_timesteps=100),
        inference=InferenceConfig(generations=8, steps=10, sampler="ddim"),
    )


PRESETS: dict[str, Callable[[], SegDiffConfig]] = {
    # The paper's configurations (reference code, Sec. 4.3 and the authors' commands).
    "monuseg": lambda: _paper(256, (1, 1, 1, 2, 2, 4, 4), rrdb_blocks=12, dropout=0.0),
    "vaihingen": lambda: _paper(256, (1, 1, 1, 2, 2, 4, 4), rrdb_blocks=6, dropout=0.1),
    "cityscapes": lambda: _paper(128, (1, 1, 2, 2, 4, 4), rrdb_blocks=15, dropout=0.0),
    # Interactive CPU presets (64x64 box crops).
    "cpu-small": lambda: _cpu(64, 32, (1, 2, 2), res_blocks=1, rrdb=2, nf=32, gc=16),
    "cpu-base": lambda: _cpu(64, 32, (1, 2, 2, 2), res_blocks=2, rrdb=3, nf=32, gc=16),
    # The smallest model that exercises every part (tests, smoke runs).
    "test": lambda: _cpu(32, 16, (1, 2), res_blocks=1, rrdb=1, nf=16, gc=8),
}


def get_preset(name: str) -> SegDiffConfig:
    """A fresh SegDiffConfig for a preset name (see :data:`PRESETS`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
