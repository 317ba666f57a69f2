"""Picking objects: the one at the image centre (the Vaihingen protocol: one building per image)
and random objects of an instance label image (the prompts of training and evaluation)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from segdiff_core.validation import check_int

__all__ = ["NoObjectError", "central_object", "central_component", "pick_objects"]


class NoObjectError(ValueError):
    """A label image contains no object to pick."""


def _as_label_image(label_image: np.ndarray) -> np.ndarray:
    """Check a 2D label image; floats holding whole numbers become int64."""
    lab = np.asarray(label_image)
    if lab.ndim != 2:
        raise ValueError(f"label_image must be 2D (H, W), got shape {lab.shape}")
    if np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool:
        return lab
    if np.issubdtype(lab.dtype, np.floating) and np.all(np.isfinite(lab)):
        if np.all(lab == np.round(lab)):
            return lab.astype(np.int64)
    raise ValueError(f"label_image must hold integer labels, got dtype {lab.dtype}")


def central_object(
    label_image: np.ndarray, *, instances: bool | None = None, connectivity: int = 1
) -> np.ndarray:
    """Boolean mask of the object under, or closest to, the image centre (Vaihingen protocol).

    Parameters
    ----------
    label_image : (H, W) array
        0 = background.
    instances : bool, optional
        With ``None`` an image with a single non-zero value (a binary mask such as 0/1 or 0/255)
        is split into connected components and an image with several non-zero values is read
        as an instance label image; force either reading with True/False.
    connectivity : {1, 2}
        Connected components: 1 = 4-neighbours, 2 = 8-neighbours.

    Returns
    -------
    (H, W) bool array
        The distance of an object to the centre ``(H/2, W/2)`` is that of its nearest pixel
        centre; ties go to the larger object, then to the smaller label.
    """
    lab = _as_label_image(label_image)
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity!r}")
    values = np.unique(lab[lab != 0])
    if values.size == 0:
        raise NoObjectError("label image has no object (all pixels are 0)")
    if instances is None:
        instances = values.size > 1
    if instances:
        labels, ids = lab.astype(np.int64, copy=False), values.astype(np.int64)
    else:
        structure = ndimage.generate_binary_structure(2, connectivity)
        labels, n = ndimage.label(lab != 0, structure=structure)
        ids = np.arange(1, n + 1)
    h, w = lab.shape
    dist2 = (np.arange(h)[:, None] + 0.5 - h / 2.0) ** 2 + (np.arange(w)[None, :] + 0.5 - w / 2.0) ** 2
    min_d = np.asarray(ndimage.minimum(dist2, labels, index=ids), dtype=float)
    areas = np.asarray(ndimage.sum_labels(np.ones_like(dist2), labels, index=ids), dtype=float)
    return labels == ids[np.lexsort((ids, -areas, min_d))[0]]


def central_component(mask: np.ndarray, min_area: int = 1) -> np.ndarray | None:
    """The 8-connected component of ``mask`` at, or closest to, the image centre.

    Parameters
    ----------
    mask : (H, W) bool-like array
    min_area : int
        Components with fewer pixels are ignored (specks).

    Returns
    -------
    (H, W) bool array or None
        The component chosen by :func:`central_object`, or ``None`` if none is large enough.
    """
    m = np.asarray(mask) != 0
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    labels, _ = ndimage.label(m, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    big = sizes >= check_int(min_area, "min_area", 1)
    big[0] = False
    if not big.any():
        return None
    return central_object(np.where(big[labels], labels, 0), instances=True)


def pick_objects(labels: np.ndarray, k: int, rng: np.random.Generator, min_area: int = 16) -> np.ndarray:
    """Up to ``k`` distinct object ids of ``labels`` ``(H, W)`` with at least ``min_area`` pixels.

    Drawn without replacement with one ``rng.choice`` call (no draw, and an empty array, when
    no object is large enough): the one object-picking rule of training and evaluation.
    """
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[areas >= min_area]
    return ids if ids.size == 0 else rng.choice(ids, size=min(int(k), ids.size), replace=False)
