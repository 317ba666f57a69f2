"""The MoNuSeg protocol: windows over an image at a working resolution, and stitching."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segdiff_core.data.boxes import Box
from segdiff_core.data.crops.geometry import (CropGeometry, _check_mode, _check_order,
                                              _take_nearest, crop_like, paste_back)
from segdiff_core.data.crops.protocols import CropError
from segdiff_core.validation import check_int, check_shape2

__all__ = ["WindowGrid", "stitch"]


def _axis_origins(length: int, window: int, stride: int) -> tuple[int, ...]:
    """Window starts along an axis: every ``stride``, the last one snapped to the edge."""
    if length <= window:
        return (0,)
    return tuple(range(0, length - window, stride)) + (length - window,)


@dataclass(frozen=True)
class WindowGrid:
    """Sliding windows over an image resized to a working resolution (MoNuSeg protocol).

    The paper resizes 1000x1000 images to 512x512 and tests 256x256 windows with stride 256
    (the four quadrants). Overlapping windows (``stride < window``) are averaged by
    :func:`stitch`. The last window along each axis is snapped to the edge; a working size
    smaller than the window gives one window that is padded when cut. Build with
    :meth:`create`.
    """

    image_shape: tuple[int, int]
    work_shape: tuple[int, int]
    window: int
    stride: int
    origins: tuple[tuple[int, int], ...]

    @classmethod
    def create(cls, image_shape: tuple[int, ...], window: int = 256, stride: int | None = None,
               work_size: int | tuple[int, int] | None = 512) -> "WindowGrid":
        """Grid for an image of ``image_shape``.

        Parameters
        ----------
        image_shape : tuple of int
            Only ``(H, W)`` is used.
        window : int
            Window side at the working resolution.
        stride : int, optional
            In ``[1, window]``; defaults to ``window`` (non-overlapping).
        work_size : int or (int, int), optional
            Working resolution; ``None`` keeps the original one.
        """
        shape = check_shape2(tuple(image_shape)[:2], "image_shape", error=CropError)
        work = shape if work_size is None else check_shape2(work_size, "work_size", error=CropError)
        win = check_int(window, "window", 1, error=CropError)
        st = check_int(win if stride is None else stride, "stride (so windows cover the image)",
                       1, win, error=CropError)
        ys, xs = _axis_origins(work[0], win, st), _axis_origins(work[1], win, st)
        return cls(shape, work, win, st, tuple((y, x) for y in ys for x in xs))

    @property
    def n_windows(self) -> int:
        """Number of windows."""
        return len(self.origins)

    def work_geometry(self) -> CropGeometry:
        """Geometry of the resize original image -> working resolution."""
        h, w = self.image_shape
        return CropGeometry(Box(0.0, 0.0, float(h), float(w)), self.image_shape, self.work_shape)

    def to_work(self, image: np.ndarray, order: int = 1, *, antialias: bool = True) -> np.ndarray:
        """Resize ``image`` (H, W[, C]) to the working resolution (float32, or dtype for order 0)."""
        return crop_like(image, self.work_geometry(), order, antialias=antialias)

    def cut(self, image: np.ndarray, order: int = 1, *, mode: str | None = None, cval: float = 0.0,
            antialias: bool = True) -> np.ndarray:
        """Windows of ``image`` (original resolution).

        The image is resized to the working size once, then cut; windows reaching beyond a
        working size smaller than the window are padded with ``mode`` (default ``'reflect'``
        for ``order=1``, ``'constant'`` with ``cval`` for ``order=0``).

        Returns
        -------
        (N, window, window[, C]) array
        """
        order = _check_order(order)
        pad = _check_mode(mode if mode is not None else ("reflect" if order else "constant"))
        work = self.to_work(image, order, antialias=antialias)
        span = np.arange(self.window, dtype=float)
        return np.stack([_take_nearest(work, oy + span, ox + span, pad, cval)
                         for oy, ox in self.origins])

    def stitch(self, window_maps: np.ndarray, order: int = 1, *,
               weights: np.ndarray | None = None) -> np.ndarray:
        """See :func:`stitch`."""
        return stitch(window_maps, self, order, weights=weights)


def _window_weights(weights: np.ndarray | None, win: int) -> np.ndarray:
    if weights is None:
        return np.ones((win, win))
    wmap = np.asarray(weights, dtype=float)
    if wmap.shape != (win, win) or not np.all(np.isfinite(wmap)) or np.any(wmap <= 0):
        raise CropError(f"weights must be a finite, strictly positive ({win}, {win}) array, "
                        f"got shape {wmap.shape}")
    return wmap


def stitch(window_maps: np.ndarray, grid: WindowGrid, order: int = 1, *,
           weights: np.ndarray | None = None) -> np.ndarray:
    """Combine per-window maps into one map at the original image resolution.

    Parameters
    ----------
    window_maps : (N, window, window) or (N, window, window, C) array
        One map per grid origin.
    grid : WindowGrid
        The grid that cut the windows.
    order : {1, 0}
        Resampling from the working to the original resolution (1 bilinear, 0 nearest).
    weights : (window, window) array, optional
        Positive per-pixel weights (e.g. a taper that trusts window centres more); default
        uniform, i.e. overlaps are averaged.

    Returns
    -------
    (H, W[, C]) float32 array
        At ``grid.image_shape``.
    """
    maps, win = np.asarray(window_maps), grid.window
    if maps.ndim not in (3, 4) or maps.shape[0] != grid.n_windows or maps.shape[1:3] != (win, win):
        raise CropError(f"expected window maps of shape ({grid.n_windows}, {win}, {win}[, C]), "
                        f"got {maps.shape}")
    wmap = _window_weights(weights, win)
    (hw, ww), extra = grid.work_shape, maps.shape[3:]
    acc, wsum = np.zeros((hw, ww) + extra), np.zeros((hw, ww))
    for k, (oy, ox) in enumerate(grid.origins):
        vh, vw = min(win, hw - oy), min(win, ww - ox)
        wv = wmap[:vh, :vw]
        acc[oy:oy + vh, ox:ox + vw] += maps[k, :vh, :vw] * (wv[:, :, None] if extra else wv)
        wsum[oy:oy + vh, ox:ox + vw] += wv
    work = acc / (wsum[:, :, None] if extra else wsum)
    _, full = paste_back(work.astype(np.float32), grid.work_geometry(), order)
    return full.astype(np.float32, copy=False)
