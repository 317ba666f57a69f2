"""Sample data contributions: seeded synthetic nucleus tiles (File > Open Sample > SegDiff).

The tiles come from :func:`segdiff_core.data.synthetic.generate_tile`, the same generator the
bundled model was trained on; the same seed always gives the same picture. The ground-truth
instance labels are added as a hidden Labels layer, so a user can compare an annotation with
the truth.
"""
from __future__ import annotations

from typing import Any

from segdiff_core.data.synthetic import generate_tile

__all__ = ["SAMPLE_SIZE", "SAMPLE_SEED", "fluorescence_nuclei", "he_nuclei"]

SAMPLE_SIZE = 512
SAMPLE_SEED = 20240

LayerData = tuple[Any, dict[str, Any], str]


def _sample(style: str, title: str, rgb: bool, seed: int = SAMPLE_SEED, size: int = SAMPLE_SIZE) -> list[LayerData]:
    tile = generate_tile(style, size, seed)
    image_meta: dict[str, Any] = {"name": f"nuclei ({title})", "rgb": rgb}
    truth_meta: dict[str, Any] = {"name": f"nuclei ({title}) ground truth", "visible": False}
    return [(tile.image, image_meta, "image"), (tile.labels, truth_meta, "labels")]


def fluorescence_nuclei(seed: int = SAMPLE_SEED, size: int = SAMPLE_SIZE) -> list[LayerData]:
    """A 512x512 widefield fluorescence (DAPI-like) tile, gray uint8/uint16, and its truth."""
    return _sample("fluorescence", "fluorescence", False, seed, size)


def he_nuclei(seed: int = SAMPLE_SEED, size: int = SAMPLE_SIZE) -> list[LayerData]:
    """A 512x512 H&E brightfield tile, RGB uint8, and its truth."""
    return _sample("he", "H&E", True, seed, size)
