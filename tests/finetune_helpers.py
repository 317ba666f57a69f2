"""Real inputs for the fine-tune tests: a tiny base model file and annotated synthetic tiles."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from segdiff_core.checkpoint import save_model
from tests.helpers import random_model

#: a few steps, validated twice, so a test run takes seconds with the 'test' preset
FAST = {"train": {"steps": 6, "val_every": 3, "batch_size": 4, "val_samples": 4, "val_generations": 2,
                  "val_steps": 3, "log_every": 1, "max_minutes": 0.0, "patience": 0}}


def tiny_base_model(folder: Path) -> Path:
    """A 'test'-preset model file with the bundled model's kind of training metadata."""
    model, config = random_model(seed=3)
    meta = {"trained_on": "nothing (test)", "preset": "test",
            "data": {"augmentation": "nuclei", "crop_margin": [0.1, 0.2], "box_shift": 0.1,
                     "box_scale": [0.85, 1.15], "min_area": 16}}
    return save_model(folder / "base.pt", model, config, meta)


def annotated_tile(seed: int = 0, style: str = "he", size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic (image, instance labels) pair with enough objects for a fine-tune."""
    from segdiff_core.data.synthetic import generate_tile

    tile = generate_tile(style, size, np.random.default_rng(seed))
    return tile.image, tile.labels.astype(np.int32)
