"""Crop geometry: image -> model grid -> image, resampled with scipy.ndimage.

``order=1`` is bilinear (float32), ``order=0`` nearest neighbour (labels/masks, dtype kept).
Shrinking by ``s > 1`` with ``order=1`` first applies a Gaussian with ``sigma = (s - 1) / 2``
(scikit-image's anti-aliasing) unless ``antialias=False``. Only the source window under the
crop plus the filter support is read: a crop of a huge image costs time in the crop's size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from segdiff_core.data.boxes import Box
from segdiff_core.data.crops.protocols import CropError, CropProtocol, as_box
from segdiff_core.validation import check_choice, check_float, check_shape2, check_spatial_array

__all__ = ["PAD_MODES", "CropGeometry", "crop_to_model", "crop_like", "prompt_crop", "paste_back",
           "crop_whole_image"]

PAD_MODES: tuple[str, ...] = ("reflect", "mirror", "nearest", "wrap", "constant")
"""Padding for the parts of a crop outside the image, named as in ``scipy.ndimage`` filters:
``'reflect'`` ``d c b a | a b c d | d c b a`` (numpy's ``'symmetric'``), ``'mirror'``
``d c b | a b c d | c b a``, ``'nearest'`` (edge repeated), ``'wrap'`` (periodic) and
``'constant'`` (``cval``; bilinear sampling blends image and ``cval`` across the border)."""

# map_coordinates names the padding of PAD_MODES thus (its own "wrap" and "constant" differ)
_SAMPLING_MODE = dict(zip(PAD_MODES, ("reflect", "mirror", "nearest", "grid-wrap", "grid-constant")))


def _check_order(order: int) -> int:
    return int(check_choice(order, "interpolation order (0 or 1)", (0, 1), error=CropError))


def _check_mode(mode: str) -> str:
    return check_choice(mode, "padding mode", PAD_MODES, error=CropError)


def _read_window(coords: np.ndarray, n: int, radius: int, mode: str) -> tuple[int, int]:
    """Source index range ``[a, b)`` along one axis that sampling at ``coords`` reads: the
    interpolation neighbours plus the filter ``radius`` (mirrored too where padding mirrors), so
    filtering the window equals filtering the image at every point that is read."""
    lo = int(math.floor(float(coords.min()))) - radius - 2
    hi = int(math.floor(float(coords.max()))) + radius + 3
    if mode in ("reflect", "mirror"):
        hi = max(hi, -lo + 1) if lo < 0 else hi
        lo = min(lo, 2 * n - hi - 2) if hi > n else lo
    elif mode == "wrap" and (lo < 0 or hi > n):
        lo, hi = 0, n
    a = min(max(lo, 0), n - 1)
    return a, max(min(hi, n), a + 1)


def _outside(coords: np.ndarray, a: int, b: int, radius: int) -> tuple[int, int]:
    """Padding before/after the window ``[a, b)`` that covers ``coords`` (at most the support)."""
    before = max(0, math.ceil(a - float(coords.min()))) + 2
    after = max(0, math.ceil(float(coords.max()) - (b - 1))) + 2
    return min(before, radius + 2), min(after, radius + 2)


def _nearest_indices(coords: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Index of the nearest source pixel for each coordinate, ``-1`` outside in constant mode."""
    idx = np.arange(n, dtype=float)
    return ndimage.map_coordinates(idx, [coords], order=0, mode=_SAMPLING_MODE[mode], cval=-1.0
                                   ).astype(np.int64)


def _take_nearest(src: np.ndarray, coords_y: np.ndarray, coords_x: np.ndarray, mode: str,
                  cval: float) -> np.ndarray:
    """Nearest-neighbour samples of ``src`` (H, W[, C]) on a grid; dtype kept."""
    iy = _nearest_indices(coords_y, src.shape[0], mode)
    ix = _nearest_indices(coords_x, src.shape[1], mode)
    out = src[np.ix_(np.maximum(iy, 0), np.maximum(ix, 0))]
    if mode == "constant":
        outside = (iy < 0)[:, None] | (ix < 0)[None, :]
        out[outside] = np.asarray(cval).astype(src.dtype)
    return np.ascontiguousarray(out)


def _resample(src: np.ndarray, coords_y: np.ndarray, coords_x: np.ndarray, *, order: int,
              mode: str, cval: float, sigma: tuple[float, ...]) -> np.ndarray:
    """Sample ``src`` (H, W[, C]) on the grid ``coords_y x coords_x`` (source indices, pixel
    ``i`` centred at ``i``). ``order=1``: ``gaussian_filter`` (``sigma`` per axis) on the window
    around the grid, then ``map_coordinates``; float32. ``order=0``: ``src.dtype``."""
    if order == 0:
        return _take_nearest(src, coords_y, coords_x, mode, cval)
    radii = [int(4.0 * s + 0.5) if s > 0 else 0 for s in sigma]
    (ya, yb), (xa, xb) = (
        _read_window(c, n, r, mode) for c, n, r in zip((coords_y, coords_x), src.shape, radii)
    )
    sub = np.asarray(src[ya:yb, xa:xb], dtype=np.float64)
    if sub.ndim == 2:
        sub = sub[:, :, None]
    if mode in ("nearest", "constant"):
        # Unlike the mirroring modes, these paddings are not symmetric about the image edge, so
        # sample points outside the image must see the filtered *padded* signal: pad the window
        # to cover them (the filtered signal is constant beyond the filter support).
        pads = [_outside(c, a, b, r) for c, a, b, r in ((coords_y, ya, yb, radii[0]), (coords_x, xa, xb, radii[1]))]
        fill = {"mode": "edge"} if mode == "nearest" else {"mode": "constant", "constant_values": cval}
        sub = np.pad(sub, (*pads, (0, 0)), **fill)  # type: ignore[call-overload]
        ya, xa = ya - pads[0][0], xa - pads[1][0]
    if max(sigma) > 0:
        sub = ndimage.gaussian_filter(sub, (sigma[0], sigma[1], 0), mode=mode, cval=cval)
    grid = np.meshgrid(coords_y - ya, coords_x - xa, indexing="ij")
    out = np.stack([ndimage.map_coordinates(sub[:, :, c], grid, order=1, cval=cval,
                                            mode=_SAMPLING_MODE[mode])
                    for c in range(sub.shape[2])], axis=-1)
    return np.ascontiguousarray(out if src.ndim == 3 else out[:, :, 0], dtype=np.float32)


def _antialias_sigma(shrink: float, order: int, antialias: bool) -> float:
    """Gaussian sigma used before shrinking by ``shrink`` (source px per output px)."""
    return max(0.0, (shrink - 1.0) / 2.0) if antialias and order == 1 else 0.0


def _axis_footprint(lo: float, hi: float, n: int) -> slice:
    """Pixels ``i`` in ``[0, n)`` whose centre ``i + 0.5`` lies in ``[lo, hi)`` (never empty)."""
    a, b = max(lo, 0.0), min(hi, float(n))
    start, stop = int(math.ceil(a - 0.5)), int(math.ceil(b - 0.5))
    if stop <= start:
        mid = min(int(math.floor((a + b) / 2.0)), n - 1)
        return slice(mid, mid + 1)
    return slice(start, stop)


_GEOMETRY_KEYS = ("crop_box", "image_shape", "model_shape", "pad_mode", "cval")


@dataclass(frozen=True)
class CropGeometry:
    """Everything needed to map between an image and a model-resolution crop of it.

    Coordinates follow :mod:`segdiff_core.data.boxes` (rows first, pixel ``(i, j)`` covers
    ``[i, i+1) x [j, j+1)``). Model coordinate ``u`` corresponds to image coordinate
    ``y0 + u * (y1 - y0) / h`` (same for columns): a non-square crop is resized
    anisotropically and :func:`paste_back` undoes exactly that.

    Attributes
    ----------
    crop_box : Box
        The crop in image coordinates (floats, may extend beyond the image).
    image_shape : (int, int)
        ``(H, W)`` of the image that was cropped.
    model_shape : (int, int)
        ``(h, w)`` of the model grid (square for SegDiff models).
    pad_mode : str
        How the part of the crop outside the image was filled (:data:`PAD_MODES`).
    cval : float
        Fill value of ``'constant'`` padding.
    """

    crop_box: Box
    image_shape: tuple[int, int]
    model_shape: tuple[int, int]
    pad_mode: str = "reflect"
    cval: float = 0.0
    _scale: tuple[float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.crop_box, Box):
            raise CropError(f"crop_box must be a Box, got {type(self.crop_box).__name__}")
        image_shape = check_shape2(tuple(self.image_shape)[:2], "image_shape", error=CropError)
        model_shape = check_shape2(self.model_shape, "model size", error=CropError)
        _check_mode(self.pad_mode)
        self.crop_box.check_inside(image_shape)
        object.__setattr__(self, "image_shape", image_shape)
        object.__setattr__(self, "model_shape", model_shape)
        object.__setattr__(self, "cval", check_float(self.cval, "cval", error=CropError))
        b = self.crop_box
        object.__setattr__(self, "_scale", (b.height / model_shape[0], b.width / model_shape[1]))

    @property
    def scale(self) -> tuple[float, float]:
        """Image pixels per model pixel along rows and columns."""
        return self._scale

    @property
    def footprint(self) -> tuple[slice, slice]:
        """Image pixels covered by the crop, clipped to the image: ``(rows, cols)`` slices.

        A pixel is covered when its centre lies in ``[y0, y1) x [x0, x1)``. A crop thinner than a
        pixel that covers no centre along an axis gets the single pixel under the middle of its
        in-image part, so the footprint is never empty.
        """
        b, (h, w) = self.crop_box, self.image_shape
        return _axis_footprint(b.y0, b.y1, h), _axis_footprint(b.x0, b.x1, w)

    def sample_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Image index coordinates (pixel ``i`` centred at ``i``) of the model pixel centres."""
        (b, (sy, sx)), (h, w) = (self.crop_box, self._scale), self.model_shape
        return b.y0 + (np.arange(h) + 0.5) * sy - 0.5, b.x0 + (np.arange(w) + 0.5) * sx - 0.5

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description."""
        out = {key: getattr(self, key) for key in _GEOMETRY_KEYS}
        out["crop_box"] = list(self.crop_box.as_tuple())
        out["image_shape"], out["model_shape"] = list(self.image_shape), list(self.model_shape)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CropGeometry":
        """Inverse of :meth:`to_dict`."""
        unknown = sorted(set(data) - set(_GEOMETRY_KEYS))
        if unknown:
            raise CropError(f"unknown crop geometry key(s) {unknown}; known keys: "
                            f"{sorted(_GEOMETRY_KEYS)}")
        return cls(as_box(data["crop_box"]), tuple(data["image_shape"]),  # type: ignore[arg-type]
                   tuple(data["model_shape"]), data.get("pad_mode", "reflect"),  # type: ignore[arg-type]
                   data.get("cval", 0.0))


def _checked_map(arr: np.ndarray, name: str, shape: tuple[int, int], order: int) -> np.ndarray:
    """Check ``arr`` (H, W[, C]) against the (H, W) a geometry expects; bool -> float32 if bilinear."""
    a = check_spatial_array(arr, name, error=CropError)
    if tuple(a.shape[:2]) != shape:
        which = "model" if name == "model_map" else "image"
        raise CropError(f"{name} of shape {a.shape} does not match the geometry's {which} shape "
                        f"{shape}")
    return a.astype(np.float32) if a.dtype == bool and order == 1 else a


def crop_to_model(image: np.ndarray, crop_box: Box | Sequence[float], size: int | tuple[int, int],
                  order: int = 1, *, mode: str | None = None, cval: float = 0.0,
                  antialias: bool = True) -> tuple[np.ndarray, CropGeometry]:
    """Resample the region ``crop_box`` of ``image`` onto a ``size`` grid.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
        Any real dtype; non-finite values propagate (clean them first).
    crop_box : Box or sequence of 4 floats
        The crop in image coordinates; may extend beyond the image but must overlap it.
    size : int or (int, int)
        Model resolution (an int means square).
    order : {1, 0}
        1 = bilinear (images, probability maps), 0 = nearest (masks, labels).
    mode : str, optional
        Padding outside the image (:data:`PAD_MODES`); default ``'reflect'`` for ``order=1``
        and ``'constant'`` (with ``cval``) for ``order=0``.
    cval : float
        Fill value for ``'constant'`` padding.
    antialias : bool
        Gaussian prefilter when shrinking (``order=1`` only).

    Returns
    -------
    patch : (h, w) or (h, w, C) array
        float32 for ``order=1``, ``image.dtype`` for ``order=0``.
    geometry : CropGeometry
        To map results back with :func:`paste_back`.
    """
    img = check_spatial_array(image, "image", error=CropError)
    order = _check_order(order)
    mode = _check_mode(mode if mode is not None else ("reflect" if order else "constant"))
    shape = check_shape2(size, "model size", error=CropError)
    geom = CropGeometry(as_box(crop_box), img.shape[:2], shape, mode, cval)
    return crop_like(img, geom, order, antialias=antialias), geom


def crop_like(array: np.ndarray, geometry: CropGeometry, order: int = 0, *,
              antialias: bool = True) -> np.ndarray:
    """Resample an array of the image (H, W[, C]) exactly as ``geometry`` describes.

    Uses the geometry's padding; for the mask target of an image crop padded with
    ``'reflect'`` pass ``dataclasses.replace(geometry, pad_mode='constant')``. Returns
    (h, w[, C]): ``array.dtype`` for ``order=0``, float32 for ``order=1``.
    """
    order = _check_order(order)
    arr = _checked_map(array, "array", geometry.image_shape, order)
    sigma = tuple(_antialias_sigma(s, order, antialias) for s in geometry.scale)
    return _resample(arr, *geometry.sample_coords(), order=order, mode=geometry.pad_mode,
                     cval=geometry.cval, sigma=sigma)


def prompt_crop(image: np.ndarray, box: Box | Sequence[float], size: int | tuple[int, int],
                protocol: CropProtocol | None = None, *, rng: np.random.Generator | None = None,
                order: int = 1, mode: str | None = None, cval: float = 0.0,
                antialias: bool = True) -> tuple[np.ndarray, CropGeometry]:
    """Box prompt -> model input: ``protocol`` (default: 15 % expansion), then
    :func:`crop_to_model`. Raises :class:`BoxError` for a box entirely outside the image."""
    img = check_spatial_array(image, "image", error=CropError)
    protocol = protocol if protocol is not None else CropProtocol.expansion()
    crop = protocol.crop_box(box, rng=rng, image_shape=img.shape[:2])
    return crop_to_model(img, crop, size, order, mode=mode, cval=cval, antialias=antialias)


def paste_back(model_map: np.ndarray, geometry: CropGeometry, order: int = 1, *,
               antialias: bool = True) -> tuple[tuple[slice, slice], np.ndarray]:
    """Map a model-resolution map onto the image pixels covered by the crop.

    Parameters
    ----------
    model_map : (h, w) or (h, w, C) array
        Map on the model grid (probability, uncertainty, labels).
    geometry : CropGeometry
        From :func:`crop_to_model`.
    order : {1, 0}
        1 = bilinear (continuous maps, float32 result), 0 = nearest (labels, dtype kept).
    antialias : bool
        Gaussian prefilter when the crop is smaller than the model grid (``order=1``).

    Returns
    -------
    region : (slice, slice)
        ``(rows, cols)`` of the image, :attr:`CropGeometry.footprint` (padding is dropped).
    pasted : (rows, cols[, C]) array
        To put at ``image[region]``.
    """
    order = _check_order(order)
    m = _checked_map(model_map, "model_map", geometry.model_shape, order)
    (rows, cols), (sy, sx), b = geometry.footprint, geometry.scale, geometry.crop_box
    coords_y = (np.arange(rows.start, rows.stop) + 0.5 - b.y0) / sy - 0.5
    coords_x = (np.arange(cols.start, cols.stop) + 0.5 - b.x0) / sx - 0.5
    sigma = tuple(_antialias_sigma(1.0 / s, order, antialias) for s in (sy, sx))
    return (rows, cols), _resample(m, coords_y, coords_x, order=order, mode="nearest", cval=0.0,
                                   sigma=sigma)


def crop_whole_image(image: np.ndarray, size: int | tuple[int, int], order: int = 1, *,
                     antialias: bool = True) -> tuple[np.ndarray, CropGeometry]:
    """Resize the whole image to the model grid (Vaihingen protocol); no padding is involved."""
    img = check_spatial_array(image, "image", error=CropError)
    box = Box(0.0, 0.0, float(img.shape[0]), float(img.shape[1]))
    return crop_to_model(img, box, size, order, antialias=antialias)
