"""Classical baselines: what a user would do without a learned model.

Otsu in the box (prompt protocols)
----------------------------------
:func:`otsu_in_box` segments the object of a box prompt from the crop region at the image's
original resolution:

1. grayscale: 2D images as they are; RGB(A) -> luminance ``0.2125 R + 0.7154 G + 0.0721 B``
   (Rec. 709, scikit-image's ``rgb2gray``; alpha ignored); one channel -> that channel; any
   other channel count -> the channel mean. Computed in float64, so any dtype works.
2. threshold: :func:`skimage.filters.threshold_otsu` over the crop.
3. polarity: the object is assumed to fill the middle of the crop. The mean of the *centre*
   region (the middle half of the rows and of the columns) is compared with the mean of the
   *border* frame (``max(1, min(h, w) // 8)`` pixels wide). If the centre is at least as bright
   as the border the object is the bright class (``gray > t``, e.g. fluorescence nuclei),
   otherwise the dark class (``gray <= t``, e.g. haematoxylin-stained nuclei in brightfield).
4. holes are filled (:func:`scipy.ndimage.binary_fill_holes`);
5. the 4-connected component at, or nearest to, the crop centre is kept
   (:func:`segdiff_core.data.readers.objects.central_object`).

A constant (or non-finite) crop, where no threshold exists, gives an empty mask. The
probability is the binary mask itself (0/1) and there is no uncertainty map.

Global Otsu (windows protocol)
------------------------------
:func:`otsu_foreground` thresholds a whole image the same way, without a centre to compare
against: the foreground is taken to be the *smaller* of the two Otsu classes (nuclei cover
less of a tissue image than the background); holes are filled, every component is kept.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from segdiff_core.data.readers.objects import central_object
from segdiff_core.evaluation.runner import Method

__all__ = [
    "BASELINES",
    "BaselineError",
    "LUMINANCE_WEIGHTS",
    "to_grayscale",
    "object_is_bright",
    "otsu_in_box",
    "otsu_foreground",
    "otsu_method",
]

BASELINES: tuple[str, ...] = ("otsu", "none")
"""Names accepted by ``segdiff-eval --baseline``."""

LUMINANCE_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
"""Rec. 709 luminance weights of R, G, B (as :func:`skimage.color.rgb2gray`)."""


class BaselineError(ValueError):
    """An input a baseline cannot work on (wrong number of dimensions, empty array)."""


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` image of any real dtype -> ``(H, W)`` float64.

    RGB or RGBA: Rec. 709 luminance of the first three channels; one channel: that channel;
    other channel counts: the mean over channels.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise BaselineError(f"expected a non-empty (H, W) or (H, W, C) image, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise BaselineError(f"image must have a real numeric dtype, got {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 2:
        return arr
    channels = arr.shape[2]
    if channels == 1:
        return arr[:, :, 0]
    if channels in (3, 4):
        return arr[:, :, :3] @ LUMINANCE_WEIGHTS
    return arr.mean(axis=2)


def _centre_and_border(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the centre region (middle half of rows and columns, at least one
    pixel) and of the border frame (``max(1, min(h, w) // 8)`` px wide)."""
    h, w = shape
    centre = np.zeros(shape, dtype=bool)
    r0, r1 = h // 4, max(h - h // 4, h // 4 + 1)
    c0, c1 = w // 4, max(w - w // 4, w // 4 + 1)
    centre[r0:r1, c0:c1] = True
    b = max(1, min(h, w) // 8)
    border = np.ones(shape, dtype=bool)
    border[b : h - b, b : w - b] = False
    return centre, border


def object_is_bright(gray: np.ndarray) -> bool:
    """True if the centre of ``gray`` (H, W) is at least as bright, on average, as its border."""
    centre, border = _centre_and_border(gray.shape)
    return bool(gray[centre].mean() >= gray[border].mean())


def _otsu_classes(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(bright, dark)`` masks of the Otsu split, or None if the image is constant/non-finite."""
    if not np.all(np.isfinite(gray)) or float(gray.max()) == float(gray.min()):
        return None
    t = threshold_otsu(gray)
    bright = gray > t
    return bright, ~bright


def otsu_in_box(crop: np.ndarray) -> np.ndarray:
    """Otsu-in-box segmentation of the object in ``crop`` (see the module docstring).

    Parameters
    ----------
    crop
        the crop region of the image at original resolution, ``(h, w)`` or
        ``(h, w, C)``, any real dtype.

    Returns
    -------
        ``(h, w)`` bool mask of one connected object (empty for a constant crop).
    """
    gray = to_grayscale(crop)
    classes = _otsu_classes(gray)
    if classes is None:
        return np.zeros(gray.shape, dtype=bool)
    bright, dark = classes
    fg = bright if object_is_bright(gray) else dark
    fg = ndimage.binary_fill_holes(fg)
    if not fg.any():
        return fg
    return central_object(fg, instances=False, connectivity=1)


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """Global Otsu foreground of a whole image: the smaller Otsu class, holes filled.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, C)``, any real dtype.

    Returns
    -------
        ``(H, W)`` bool mask (empty for a constant image).
    """
    gray = to_grayscale(image)
    classes = _otsu_classes(gray)
    if classes is None:
        return np.zeros(gray.shape, dtype=bool)
    bright, dark = classes
    fg = bright if np.count_nonzero(bright) <= np.count_nonzero(dark) else dark
    return ndimage.binary_fill_holes(fg)


def _predict_in_box(crops: list[np.ndarray]) -> list[np.ndarray]:
    return [otsu_in_box(c).astype(np.float32) for c in crops]


def _predict_foreground(images: list[np.ndarray]) -> list[np.ndarray]:
    return [otsu_foreground(im).astype(np.float32) for im in images]


def otsu_method(prompt: bool = True) -> Method:
    """The Otsu baseline as a ``'native'``-resolution :class:`Method`: :func:`otsu_in_box` for
    the prompt protocols (``prompt=True``), :func:`otsu_foreground` for the windows protocol."""
    if prompt:
        return Method("otsu", _predict_in_box, "native", {"baseline": "otsu-in-box"})
    return Method("otsu", _predict_foreground, "native", {"baseline": "otsu-global"})
