"""Polygon rasterisation for annotation formats that store outlines (MoNuSeg XML, Cityscapes
JSON)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage import draw


def polygon_pixels(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], *, outline: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a polygon clipped to an image of ``shape``.

    The interior is :func:`skimage.draw.polygon` (pixels whose centre, at integer coordinates,
    lies inside or on the boundary). With ``outline=True`` the pixels on the straight lines
    between consecutive (rounded) vertices, closing the ring, are added too, like
    ``PIL.ImageDraw.polygon(fill=..., outline=...)``; this keeps thin or degenerate polygons
    (one or two vertices, slivers) visible.

    Parameters
    ----------
    rows, cols: float (N,) vertex coordinates, rows (y) and columns (x).
    shape: (H, W) of the image.

    Returns
    -------
    ``(rr, cc)`` int arrays of pixel coordinates inside the image (may repeat pixels).
    """
    rows = np.asarray(rows, dtype=float)
    cols = np.asarray(cols, dtype=float)
    if rows.size == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    rr, cc = draw.polygon(rows, cols, shape)
    if not outline:
        return rr, cc
    r = np.round(rows).astype(np.int64)
    c = np.round(cols).astype(np.int64)
    parts_r, parts_c = [rr], [cc]
    for k in range(len(r)):
        lr, lc = draw.line(int(r[k]), int(c[k]), int(r[(k + 1) % len(r)]), int(c[(k + 1) % len(c)]))
        parts_r.append(lr)
        parts_c.append(lc)
    rr = np.concatenate(parts_r)
    cc = np.concatenate(parts_c)
    inside = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
    return rr[inside], cc[inside]


def rasterise_polygons(
    polygons: Sequence[np.ndarray], shape: tuple[int, int], *, outline: bool = False
) -> np.ndarray:
    """Instance label image from polygons drawn in order, later ones over earlier ones.

    Parameters
    ----------
    polygons: sequence of float (N, 2) arrays of (row, col) vertices.
    shape: (H, W).
    outline: also draw each polygon's outline (see :func:`polygon_pixels`).

    Returns
    -------
    int32 (H, W): polygon ``k`` (0-based) has label ``k + 1`` where it is visible, 0 = background.
    """
    labels = np.zeros(shape, dtype=np.int32)
    for k, poly in enumerate(polygons, start=1):
        rr, cc = polygon_pixels(poly[:, 0], poly[:, 1], shape, outline=outline)
        labels[rr, cc] = k
    return labels
