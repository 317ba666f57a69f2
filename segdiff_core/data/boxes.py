"""Bounding boxes in image pixel coordinates.

Convention used everywhere in napari-segdiff: a box is ``(y0, x0, y1, x1)`` in the pixel
coordinates of a 2D image, rows first (napari's order), with ``y1``/``x1`` exclusive, so the
box ``(0, 0, 10, 20)`` covers rows 0..9 and columns 0..19 and has height 10 and width 20.
Coordinates are floats: a box drawn in napari need not fall on pixel edges.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


class BoxError(ValueError):
    """A box that cannot be used as a prompt (empty, non-finite, outside the image)."""


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``(y0, x0, y1, x1)``, ``y1``/``x1`` exclusive."""

    y0: float
    x0: float
    y1: float
    x1: float

    def __post_init__(self) -> None:
        vals = (self.y0, self.x0, self.y1, self.x1)
        if not all(isinstance(v, (int, float, np.integer, np.floating)) for v in vals):
            raise BoxError(f"box coordinates must be numbers, got {vals!r}")
        if not all(math.isfinite(float(v)) for v in vals):
            raise BoxError(f"box coordinates must be finite, got {vals!r}")
        if self.y1 <= self.y0 or self.x1 <= self.x0:
            raise BoxError(
                f"box has zero or negative area: (y0={self.y0:g}, x0={self.x0:g}, "
                f"y1={self.y1:g}, x1={self.x1:g}); draw a box with a non-zero width and height"
            )

    @classmethod
    def from_corners(cls, corners: np.ndarray) -> "Box":
        """Box spanning an array of (row, col) points, e.g. a napari rectangle's 4 vertices."""
        pts = np.asarray(corners, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise BoxError(f"expected an (N, 2) array of (row, col) points, got shape {pts.shape}")
        (y0, x0), (y1, x1) = pts.min(axis=0), pts.max(axis=0)
        return cls(float(y0), float(x0), float(y1), float(x1))

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "Box":
        """Tight box around the non-zero pixels of a 2D mask (pixel-edge aligned)."""
        m = np.asarray(mask)
        if m.ndim != 2:
            raise BoxError(f"mask must be 2D, got shape {m.shape}")
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        if rows.size == 0:
            raise BoxError("mask is empty: no object to box")
        return cls(float(rows[0]), float(cols[0]), float(rows[-1] + 1), float(cols[-1] + 1))

    @property
    def height(self) -> float:
        return float(self.y1 - self.y0)

    @property
    def width(self) -> float:
        return float(self.x1 - self.x0)

    @property
    def center(self) -> tuple[float, float]:
        return (float(self.y0 + self.y1) / 2.0, float(self.x0 + self.x1) / 2.0)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (float(self.y0), float(self.x0), float(self.y1), float(self.x1))

    def intersects(self, shape: tuple[int, ...]) -> bool:
        """True if the box overlaps the image ``shape[:2]`` by a positive area."""
        h, w = shape[0], shape[1]
        return self.y0 < h and self.x0 < w and self.y1 > 0 and self.x1 > 0

    def check_inside(self, shape: tuple[int, ...]) -> None:
        """Raise :class:`BoxError` if the box does not overlap an image of ``shape``."""
        if not self.intersects(shape):
            raise BoxError(
                f"box (y0={self.y0:g}, x0={self.x0:g}, y1={self.y1:g}, x1={self.x1:g}) lies "
                f"entirely outside the image of size {shape[0]}x{shape[1]}; draw it over the image"
            )


def as_box(box: Box | Sequence[float] | np.ndarray) -> Box:
    """Return ``box`` as a :class:`Box`.

    Parameters
    ----------
    box : Box or sequence of 4 floats
        ``(y0, x0, y1, x1)``.

    Raises
    ------
    BoxError
        For anything else, or an invalid box (NaN, zero area ...).
    """
    if isinstance(box, Box):
        return box
    try:
        vals = np.asarray(box, dtype=float)
    except (TypeError, ValueError) as exc:
        raise BoxError(f"box coordinates must be numbers (y0, x0, y1, x1), got {box!r}") from exc
    if vals.shape != (4,):
        raise BoxError(f"a box is a Box or 4 numbers (y0, x0, y1, x1), got {box!r}")
    return Box(*(float(v) for v in vals))
