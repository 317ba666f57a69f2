"""From a box prompt to a model input and back (SegDiff paper, section 5).

One implementation shared by training, evaluation and the napari plugin, so that a model sees
crops made the same way everywhere and its output lands exactly where the box was.

Coordinates
-----------
All continuous coordinates follow :mod:`segdiff_core.data.boxes`: rows first, pixel edges on
integers, so image pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)`` and has its centre at
``(i + 0.5, j + 0.5)``. The same holds in the model's ``(h, w)`` grid. A crop box ``(y0, x0, y1,
x1)`` (floats) is mapped linearly onto the model grid: model coordinate ``u`` corresponds to image
coordinate ``y0 + u * (y1 - y0) / h`` (same for columns). The mapping is axis-aligned, so a
non-square box is resized *anisotropically* to the square model input and :func:`paste_back`
undoes exactly that mapping.

Crop protocols (:class:`CropProtocol`)
--------------------------------------
* ``tight``: the crop is the box itself.
* ``expansion`` (default for prompts, margin 0.15): the crop is centred on the box and is
  ``1 + margin`` times the box's height and width ("15 % larger than the tight crop").
* custom margin: ``CropProtocol(margin=m)`` for any ``m > -1``.
* training jitter: the crop is ``1 + m`` times a *perturbed* box with ``m ~ U(lo, hi)``
  (paper: 10-20 %); the perturbation optionally shifts the box centre by up to ``shift`` times
  the box size and rescales its height and width independently by factors from ``scale_range``,
  so a model learns to tolerate the sloppy boxes people draw.

Non-square boxes keep their own aspect ratio by default (the crop is stretched to the square
model input, which keeps the object as large as possible in the model's view); ``square=True``
instead grows the shorter side of the crop to the longer one, centred, so the object is not
distorted.

Resampling
----------
Sampling is separable (the transform is axis-aligned): ``order=1`` is bilinear, ``order=0`` is
nearest neighbour (labels/masks, dtype preserved). When a map is *shrunk* by a factor ``s > 1``
along an axis and ``order=1``, a Gaussian anti-aliasing filter with ``sigma = (s - 1) / 2``
(scikit-image's choice) is applied before sampling, unless ``antialias=False``. Regions of the
crop outside the image are padded according to ``mode``:

* ``'reflect'`` (default for images): ``d c b a | a b c d | d c b a`` (edge pixel repeated; numpy's
  ``'symmetric'``, scipy's ``'reflect'``);
* ``'mirror'``: ``d c b | a b c d | c b a`` (numpy's ``'reflect'``);
* ``'nearest'``: edge value repeated;
* ``'wrap'``: periodic;
* ``'constant'`` (default for ``order=0``, i.e. masks): the value ``cval``; bilinear sampling
  interpolates between image and ``cval`` across the border.

Only the part of the image under the crop (plus the filter support) is read, so a crop of a huge
image costs time proportional to the crop, not the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage, sparse

from segdiff_core.data.boxes import Box, BoxError

__all__ = [
    "PAD_MODES",
    "CropError",
    "NoObjectError",
    "CropProtocol",
    "CropGeometry",
    "WindowGrid",
    "as_box",
    "crop_to_model",
    "crop_like",
    "prompt_crop",
    "paste_back",
    "paste_into",
    "crop_whole_image",
    "central_object",
    "stitch",
]

PAD_MODES: tuple[str, ...] = ("reflect", "mirror", "nearest", "wrap", "constant")
"""Padding modes accepted for the parts of a crop that fall outside the image."""


class CropError(ValueError):
    """Invalid crop parameters (size, order, padding mode, array shape)."""


class NoObjectError(ValueError):
    """A label image contains no object to pick."""


# --------------------------------------------------------------------------------------------
# Small validators
# --------------------------------------------------------------------------------------------


def as_box(box: Box | Sequence[float] | np.ndarray) -> Box:
    """Return ``box`` as a :class:`Box`; accepts a Box or 4 numbers ``(y0, x0, y1, x1)``.

    Raises :class:`BoxError` for anything else or for an invalid box (NaN, zero area ...).
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


def _as_shape2(size: int | Sequence[int], what: str) -> tuple[int, int]:
    """Normalise ``size`` (int or (h, w)) to a tuple of two positive ints."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        vals: tuple[Any, ...] = (size, size)
    else:
        try:
            vals = tuple(size)  # type: ignore[arg-type]
        except TypeError as exc:
            raise CropError(f"{what} must be an int or a pair (h, w), got {size!r}") from exc
    if len(vals) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals
    ):
        raise CropError(f"{what} must be an int or a pair of ints (h, w), got {size!r}")
    h, w = int(vals[0]), int(vals[1])
    if h < 1 or w < 1:
        raise CropError(f"{what} must be positive, got {(h, w)}")
    return h, w


def _check_order(order: int) -> int:
    if isinstance(order, bool) or order not in (0, 1):
        raise CropError(
            f"interpolation order must be 0 (nearest, for labels/masks) or 1 (bilinear), "
            f"got {order!r}"
        )
    return int(order)


def _check_mode(mode: str) -> str:
    if mode not in PAD_MODES:
        raise CropError(f"unknown padding mode {mode!r}; use one of {', '.join(PAD_MODES)}")
    return mode


def _check_spatial_array(arr: np.ndarray, what: str) -> np.ndarray:
    """Check that ``arr`` is a non-empty numeric (H, W) or (H, W, C) array."""
    a = np.asarray(arr)
    if a.ndim not in (2, 3):
        raise CropError(
            f"{what} must be a 2D (H, W) or channels-last (H, W, C) array, got shape {a.shape}"
        )
    if a.size == 0:
        raise CropError(f"{what} is empty (shape {a.shape})")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise CropError(f"{what} must have a real numeric or bool dtype, got {a.dtype}")
    return a


# --------------------------------------------------------------------------------------------
# Separable resampling
# --------------------------------------------------------------------------------------------


def _map_indices(idx: np.ndarray, n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Map integer indices of any range into ``[0, n)`` following padding ``mode``.

    Returns ``(mapped, valid)``; ``valid`` is False only in ``'constant'`` mode, where the index
    lies outside the array and the value is ``cval``.
    """
    idx = np.asarray(idx, dtype=np.int64)
    valid = np.ones(idx.shape, dtype=bool)
    if mode == "constant":
        valid = (idx >= 0) & (idx < n)
        return np.where(valid, idx, 0), valid
    if mode == "nearest":
        return np.clip(idx, 0, n - 1), valid
    if mode == "wrap":
        return np.mod(idx, n), valid
    if mode == "reflect":
        j = np.mod(idx, 2 * n)
        return np.where(j >= n, 2 * n - 1 - j, j), valid
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(idx), valid
        period = 2 * n - 2
        j = np.mod(idx, period)
        return np.where(j >= n, period - j, j), valid
    raise CropError(f"unknown padding mode {mode!r}")  # pragma: no cover - checked by callers


def _gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised discrete Gaussian, radius ``int(4 sigma + 0.5)`` (as scipy.ndimage)."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(4.0 * sigma + 0.5)
    k = np.arange(-radius, radius + 1, dtype=float)
    g = np.exp(-0.5 * (k / sigma) ** 2)
    return g / g.sum()


def _linear_axis_matrix(
    coords: np.ndarray, n_src: int, mode: str, sigma: float
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse (n_out, n_src) weights of (Gaussian-prefiltered) linear interpolation at ``coords``.

    ``coords`` are source index coordinates (pixel ``i`` centred at ``i``). Prefiltering by a
    discrete Gaussian ``g`` followed by linear interpolation gives, for ``c = i0 + f``, the weight
    ``(1 - f) g(d) + f g(d - 1)`` on source index ``i0 + d``. Returns the matrix and the per-row
    sum of weights that fall inside the source (``< 1`` only in ``'constant'`` mode).
    """
    g = _gaussian_taps(sigma)
    radius = (len(g) - 1) // 2
    offsets = np.arange(-radius, radius + 2)
    g_at = np.append(g, 0.0)  # g(d) for d = -r .. r+1
    g_at_prev = np.insert(g, 0, 0.0)  # g(d - 1) for d = -r .. r+1

    i0 = np.floor(coords)
    frac = (coords - i0)[:, None]
    weights = (1.0 - frac) * g_at[None, :] + frac * g_at_prev[None, :]
    src_idx = i0.astype(np.int64)[:, None] + offsets[None, :]
    mapped, valid = _map_indices(src_idx, n_src, mode)
    weights = weights * valid
    rows = np.broadcast_to(np.arange(len(coords))[:, None], weights.shape)
    mat = sparse.coo_matrix(
        (weights.ravel(), (rows.ravel(), mapped.ravel())), shape=(len(coords), n_src)
    ).tocsr()
    mat.eliminate_zeros()  # so the read window is not stretched by zero-weight taps
    return mat, weights.sum(axis=1)


def _resample(
    src: np.ndarray,
    coords_y: np.ndarray,
    coords_x: np.ndarray,
    *,
    order: int,
    mode: str,
    cval: float,
    sigma: tuple[float, float],
) -> np.ndarray:
    """Sample ``src`` (H, W[, C]) on the grid ``coords_y x coords_x`` (source index coordinates).

    ``order=0`` returns ``src.dtype``; ``order=1`` returns float32 (computed in float64).
    """
    n_y, n_x = src.shape[0], src.shape[1]
    if order == 0:
        iy, vy = _map_indices(np.floor(coords_y + 0.5), n_y, mode)
        ix, vx = _map_indices(np.floor(coords_x + 0.5), n_x, mode)
        out = src[np.ix_(iy, ix)]
        if mode == "constant":
            inside = vy[:, None] & vx[None, :]
            if out.ndim == 3:
                inside = inside[:, :, None]
            out = np.where(inside, out, np.asarray(cval).astype(src.dtype))
        return np.ascontiguousarray(out)

    wy, in_y = _linear_axis_matrix(coords_y, n_y, mode, sigma[0])
    wx, in_x = _linear_axis_matrix(coords_x, n_x, mode, sigma[1])
    # Read only the source rows/columns that carry weight.
    ry = wy.indices
    rx = wx.indices
    y_lo, y_hi = (int(ry.min()), int(ry.max()) + 1) if ry.size else (0, 1)
    x_lo, x_hi = (int(rx.min()), int(rx.max()) + 1) if rx.size else (0, 1)
    wy = wy[:, y_lo:y_hi]
    wx = wx[:, x_lo:x_hi]
    sub = np.asarray(src[y_lo:y_hi, x_lo:x_hi], dtype=np.float64)
    chans = 1 if sub.ndim == 2 else sub.shape[2]
    sub3 = sub.reshape(sub.shape[0], sub.shape[1], chans)
    tmp = wy @ sub3.reshape(sub3.shape[0], -1)  # (out_y, sub_x * C)
    tmp = tmp.reshape(len(coords_y), sub3.shape[1], chans).transpose(1, 0, 2)
    res = wx @ tmp.reshape(sub3.shape[1], -1)  # (out_x, out_y * C)
    res = res.reshape(len(coords_x), len(coords_y), chans).transpose(1, 0, 2)
    if mode == "constant" and cval != 0:
        res = res + float(cval) * (1.0 - in_y[:, None] * in_x[None, :])[:, :, None]
    if src.ndim == 2:
        res = res[:, :, 0]
    return np.ascontiguousarray(res, dtype=np.float32)


def _antialias_sigma(shrink: float, order: int, antialias: bool) -> float:
    """Gaussian sigma used before shrinking by ``shrink`` (source px per output px)."""
    if not antialias or order == 0:
        return 0.0
    return max(0.0, (shrink - 1.0) / 2.0)


# --------------------------------------------------------------------------------------------
# Crop protocols
# --------------------------------------------------------------------------------------------


def _check_pair(value: Any, name: str, lower: float) -> tuple[float, float] | None:
    """Validate an optional ``(low, high)`` range with ``lower < low <= high``, both finite."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise CropError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= lower or hi < lo:
        raise CropError(
            f"{name} must be a finite range (low, high) with {lower:g} < low <= high, "
            f"got {value!r}"
        )
    return (lo, hi)


@dataclass(frozen=True)
class CropProtocol:
    """How a box becomes the crop that is fed to the model.

    Parameters
    ----------
    margin:
        Fractional enlargement of the box: the crop is ``(1 + margin)`` times the box's height
        and width, centred on the box (``0`` = tight, ``0.15`` = the paper's expansion setting).
        Must be ``> -1``. Ignored when ``jitter_margin`` is given.
    jitter_margin:
        ``(low, high)``: draw the margin uniformly from this range for every crop (paper
        training inputs: ``(0.10, 0.20)``). Makes the protocol random.
    shift:
        Maximum shift of the box centre, as a fraction of the box height (rows) and width
        (columns); each axis draws ``U(-shift, shift)`` independently. ``>= 0``.
    scale_range:
        ``(low, high)``: multiply the box height and width by independent factors drawn from
        ``U(low, high)`` (both ``> 0``) before the margin is applied.
    square:
        Grow the shorter side of the crop to the longer one (centred) so the resize to the
        square model input is isotropic. Default ``False``: the crop keeps the box's aspect
        ratio and is stretched to the model input.

    A random protocol (:attr:`is_random`) needs a ``numpy.random.Generator``. Random draws are
    made in a fixed order, so a seeded generator reproduces crops exactly: height scale, width
    scale (if ``scale_range``), row shift, column shift (if ``shift > 0``), margin (if
    ``jitter_margin``).
    """

    margin: float = 0.15
    jitter_margin: tuple[float, float] | None = None
    shift: float = 0.0
    scale_range: tuple[float, float] | None = None
    square: bool = False

    def __post_init__(self) -> None:
        try:
            margin = float(self.margin)
            shift = float(self.shift)
        except (TypeError, ValueError) as exc:
            raise CropError(
                f"margin and shift must be numbers, got margin={self.margin!r}, "
                f"shift={self.shift!r}"
            ) from exc
        if not math.isfinite(margin) or margin <= -1.0:
            raise CropError(f"margin must be a finite number > -1, got {self.margin!r}")
        if not math.isfinite(shift) or shift < 0.0:
            raise CropError(f"shift must be a finite number >= 0, got {self.shift!r}")
        if not isinstance(self.square, (bool, np.bool_)):
            raise CropError(f"square must be True or False, got {self.square!r}")
        object.__setattr__(self, "margin", margin)
        object.__setattr__(self, "shift", shift)
        object.__setattr__(self, "square", bool(self.square))
        jm = _check_pair(self.jitter_margin, "jitter_margin", -1.0)
        sr = _check_pair(self.scale_range, "scale_range", 0.0)
        object.__setattr__(self, "jitter_margin", jm)
        object.__setattr__(self, "scale_range", sr)

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def tight(cls, square: bool = False) -> "CropProtocol":
        """The crop is the box itself (paper's *tight* setting)."""
        return cls(margin=0.0, square=square)

    @classmethod
    def expansion(cls, margin: float = 0.15, square: bool = False) -> "CropProtocol":
        """The crop is ``1 + margin`` times the box (paper's *expansion* setting: 15 %)."""
        return cls(margin=margin, square=square)

    @classmethod
    def training(
        cls,
        jitter_margin: tuple[float, float] = (0.10, 0.20),
        shift: float = 0.0,
        scale_range: tuple[float, float] | None = None,
        square: bool = False,
    ) -> "CropProtocol":
        """Random training crops: margin ``~ U(jitter_margin)`` plus optional box jitter."""
        lo, hi = (float(v) for v in jitter_margin)
        return cls(
            margin=(lo + hi) / 2.0,
            jitter_margin=(lo, hi),
            shift=shift,
            scale_range=scale_range,
            square=square,
        )

    # -- behaviour ----------------------------------------------------------------------------

    @property
    def is_random(self) -> bool:
        """True if :meth:`crop_box` draws random numbers (needs a Generator)."""
        return self.jitter_margin is not None or self.shift > 0 or self.scale_range is not None

    def crop_box(
        self,
        box: Box | Sequence[float],
        rng: np.random.Generator | None = None,
        image_shape: tuple[int, ...] | None = None,
    ) -> Box:
        """Return the crop box for ``box`` (float coordinates; may extend beyond the image).

        ``rng`` is required when :attr:`is_random`. If ``image_shape`` is given, a box that lies
        entirely outside the image raises :class:`BoxError`.
        """
        b = as_box(box)
        if image_shape is not None:
            b.check_inside(tuple(image_shape))
        if self.is_random and not isinstance(rng, np.random.Generator):
            raise CropError(
                "this crop protocol is random (training jitter); pass rng=np.random.default_rng(seed)"
            )
        cy, cx = b.center
        h, w = b.height, b.width
        if self.scale_range is not None:
            assert rng is not None
            h *= float(rng.uniform(*self.scale_range))
            w *= float(rng.uniform(*self.scale_range))
        if self.shift > 0:
            assert rng is not None
            cy += float(rng.uniform(-self.shift, self.shift)) * b.height
            cx += float(rng.uniform(-self.shift, self.shift)) * b.width
        margin = self.margin
        if self.jitter_margin is not None:
            assert rng is not None
            margin = float(rng.uniform(*self.jitter_margin))
        h *= 1.0 + margin
        w *= 1.0 + margin
        if self.square:
            h = w = max(h, w)
        return Box(cy - h / 2.0, cx - w / 2.0, cy + h / 2.0, cx + w / 2.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (e.g. to record the training protocol in a checkpoint)."""
        return {
            "margin": self.margin,
            "jitter_margin": list(self.jitter_margin) if self.jitter_margin else None,
            "shift": self.shift,
            "scale_range": list(self.scale_range) if self.scale_range else None,
            "square": self.square,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CropProtocol":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`CropError`."""
        if not isinstance(data, Mapping):
            raise CropError(f"crop protocol must be a mapping, got {type(data).__name__}")
        known = {"margin", "jitter_margin", "shift", "scale_range", "square"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CropError(
                f"unknown crop protocol key(s) {unknown}; known keys: {sorted(known)}"
            )
        kwargs = dict(data)
        for key in ("jitter_margin", "scale_range"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Crop geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropGeometry:
    """Everything needed to map between an image and a model-resolution crop of it.

    Attributes
    ----------
    crop_box: the crop in image coordinates (floats, may extend beyond the image).
    image_shape: ``(H, W)`` of the image that was cropped.
    model_shape: ``(h, w)`` of the model grid (square for SegDiff models).
    pad_mode, cval: how the part of the crop outside the image was filled.
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
        object.__setattr__(self, "image_shape", _as_shape2(tuple(self.image_shape)[:2], "image_shape"))
        object.__setattr__(self, "model_shape", _as_shape2(self.model_shape, "model size"))
        _check_mode(self.pad_mode)
        if not math.isfinite(float(self.cval)):
            raise CropError(f"cval must be finite, got {self.cval!r}")
        object.__setattr__(self, "cval", float(self.cval))
        self.crop_box.check_inside(self.image_shape)
        h, w = self.model_shape
        object.__setattr__(
            self, "_scale", (self.crop_box.height / h, self.crop_box.width / w)
        )

    @property
    def scale(self) -> tuple[float, float]:
        """Image pixels per model pixel along rows and columns."""
        return self._scale

    @property
    def affine_model_to_image(self) -> np.ndarray:
        """(3, 3) homogeneous matrix: ``[y, x, 1]_image = A @ [v, u, 1]_model`` (continuous)."""
        sy, sx = self._scale
        return np.array(
            [[sy, 0.0, self.crop_box.y0], [0.0, sx, self.crop_box.x0], [0.0, 0.0, 1.0]]
        )

    @property
    def affine_image_to_model(self) -> np.ndarray:
        """(3, 3) homogeneous matrix, inverse of :attr:`affine_model_to_image`."""
        sy, sx = self._scale
        return np.array(
            [
                [1.0 / sy, 0.0, -self.crop_box.y0 / sy],
                [0.0, 1.0 / sx, -self.crop_box.x0 / sx],
                [0.0, 0.0, 1.0],
            ]
        )

    def model_to_image(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` (row, col) continuous model coordinates to image coordinates."""
        pts = np.asarray(points, dtype=float)
        sy, sx = self._scale
        return pts * np.array([sy, sx]) + np.array([self.crop_box.y0, self.crop_box.x0])

    def image_to_model(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` (row, col) continuous image coordinates to model coordinates."""
        pts = np.asarray(points, dtype=float)
        sy, sx = self._scale
        return (pts - np.array([self.crop_box.y0, self.crop_box.x0])) / np.array([sy, sx])

    @property
    def footprint(self) -> tuple[slice, slice]:
        """Image pixels covered by the crop, clipped to the image: ``(rows, cols)`` slices.

        A pixel is covered when its centre lies in ``[y0, y1) x [x0, x1)``. A crop thinner than a
        pixel that covers no centre along an axis gets the single pixel under the middle of its
        in-image part, so the footprint is never empty.
        """
        b = self.crop_box
        return (
            _axis_footprint(b.y0, b.y1, self.image_shape[0]),
            _axis_footprint(b.x0, b.x1, self.image_shape[1]),
        )

    def sample_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Image index coordinates (pixel ``i`` centred at ``i``) of the model pixel centres."""
        b = self.crop_box
        sy, sx = self._scale
        h, w = self.model_shape
        return (
            b.y0 + (np.arange(h) + 0.5) * sy - 0.5,
            b.x0 + (np.arange(w) + 0.5) * sx - 0.5,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description."""
        return {
            "crop_box": list(self.crop_box.as_tuple()),
            "image_shape": list(self.image_shape),
            "model_shape": list(self.model_shape),
            "pad_mode": self.pad_mode,
            "cval": self.cval,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CropGeometry":
        """Inverse of :meth:`to_dict`."""
        known = {"crop_box", "image_shape", "model_shape", "pad_mode", "cval"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CropError(f"unknown crop geometry key(s) {unknown}; known keys: {sorted(known)}")
        return cls(
            crop_box=as_box(data["crop_box"]),
            image_shape=tuple(data["image_shape"]),  # type: ignore[arg-type]
            model_shape=tuple(data["model_shape"]),  # type: ignore[arg-type]
            pad_mode=data.get("pad_mode", "reflect"),
            cval=data.get("cval", 0.0),
        )


def _axis_footprint(lo: float, hi: float, n: int) -> slice:
    """Pixels ``i`` in ``[0, n)`` whose centre ``i + 0.5`` lies in ``[lo, hi)`` (never empty)."""
    a, b = max(lo, 0.0), min(hi, float(n))
    start = int(math.ceil(a - 0.5))
    stop = int(math.ceil(b - 0.5))
    if stop <= start:
        mid = min(int(math.floor((a + b) / 2.0)), n - 1)
        return slice(mid, mid + 1)
    return slice(start, stop)


# --------------------------------------------------------------------------------------------
# Image -> model
# --------------------------------------------------------------------------------------------


def crop_to_model(
    image: np.ndarray,
    crop_box: Box | Sequence[float],
    size: int | tuple[int, int],
    order: int = 1,
    *,
    mode: str | None = None,
    cval: float = 0.0,
    antialias: bool = True,
) -> tuple[np.ndarray, CropGeometry]:
    """Resample the region ``crop_box`` of ``image`` onto a ``size`` grid.

    Parameters
    ----------
    image: (H, W) or (H, W, C) array, any real dtype. Non-finite values propagate; clean them
        first (:func:`segdiff_core.data.preprocess.to_channels_last`).
    crop_box: the crop in image coordinates (floats; may extend beyond the image but must
        overlap it).
    size: model resolution, ``int`` (square) or ``(h, w)``.
    order: 1 = bilinear (images, probability maps), 0 = nearest (masks, labels).
    mode: padding outside the image (see :data:`PAD_MODES`); default ``'reflect'`` for
        ``order=1`` and ``'constant'`` (with ``cval``) for ``order=0``.
    antialias: Gaussian prefilter when shrinking (``order=1`` only).

    Returns
    -------
    patch: (h, w) or (h, w, C); float32 for ``order=1``, ``image.dtype`` for ``order=0``.
    geometry: the :class:`CropGeometry` to map results back with :func:`paste_back`.
    """
    img = _check_spatial_array(image, "image")
    order = _check_order(order)
    mode = _check_mode(mode if mode is not None else ("reflect" if order else "constant"))
    box = as_box(crop_box)
    geom = CropGeometry(box, img.shape[:2], _as_shape2(size, "model size"), mode, cval)
    return crop_like(img, geom, order, antialias=antialias), geom


def crop_like(
    array: np.ndarray, geometry: CropGeometry, order: int = 0, *, antialias: bool = True
) -> np.ndarray:
    """Resample another array of the same image (e.g. the mask of a training pair) exactly as
    ``geometry`` describes, with the geometry's padding mode and ``cval``.

    ``array`` is (H, W) or (H, W, C) with (H, W) equal to ``geometry.image_shape``; returns
    (h, w[, C]) of dtype ``array.dtype`` for ``order=0`` and float32 for ``order=1``.
    Tip: for a mask target of an image crop padded with ``'reflect'`` you may want a geometry
    with ``pad_mode='constant'`` (``dataclasses.replace(geometry, pad_mode='constant')``).
    """
    arr = _check_spatial_array(array, "array")
    order = _check_order(order)
    if tuple(arr.shape[:2]) != geometry.image_shape:
        raise CropError(
            f"array of shape {arr.shape} does not match the geometry's image shape "
            f"{geometry.image_shape}"
        )
    if arr.dtype == bool and order == 1:
        arr = arr.astype(np.float32)
    coords_y, coords_x = geometry.sample_coords()
    sy, sx = geometry.scale
    sigma = (_antialias_sigma(sy, order, antialias), _antialias_sigma(sx, order, antialias))
    return _resample(
        arr, coords_y, coords_x, order=order, mode=geometry.pad_mode, cval=geometry.cval,
        sigma=sigma,
    )


def prompt_crop(
    image: np.ndarray,
    box: Box | Sequence[float],
    size: int | tuple[int, int],
    protocol: CropProtocol | None = None,
    *,
    rng: np.random.Generator | None = None,
    order: int = 1,
    mode: str | None = None,
    cval: float = 0.0,
    antialias: bool = True,
) -> tuple[np.ndarray, CropGeometry]:
    """Box prompt -> model input: apply ``protocol`` (default: 15 % expansion) and crop.

    Raises :class:`BoxError` if the box is invalid or lies entirely outside the image.
    """
    img = _check_spatial_array(image, "image")
    protocol = protocol if protocol is not None else CropProtocol.expansion()
    crop = protocol.crop_box(box, rng=rng, image_shape=img.shape[:2])
    return crop_to_model(img, crop, size, order, mode=mode, cval=cval, antialias=antialias)


# --------------------------------------------------------------------------------------------
# Model -> image
# --------------------------------------------------------------------------------------------


def paste_back(
    model_map: np.ndarray, geometry: CropGeometry, order: int = 1, *, antialias: bool = True
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Map a model-resolution map onto the image pixels covered by the crop.

    Parameters
    ----------
    model_map: (h, w) or (h, w, C) map on the model grid (probability, uncertainty, labels).
    geometry: from :func:`crop_to_model`.
    order: 1 = bilinear (continuous maps, float32 result), 0 = nearest (labels, dtype kept).
    antialias: Gaussian prefilter when the crop is smaller than the model grid (``order=1``).

    Returns
    -------
    region: ``(rows, cols)`` slices of the image, :attr:`CropGeometry.footprint` (the crop
        clipped to the image; padding is dropped).
    pasted: array of shape ``(rows, cols[, C])`` to put at ``image[region]``.
    """
    m = _check_spatial_array(model_map, "model_map")
    order = _check_order(order)
    if tuple(m.shape[:2]) != geometry.model_shape:
        raise CropError(
            f"model_map of shape {m.shape} does not match the geometry's model shape "
            f"{geometry.model_shape}"
        )
    if m.dtype == bool and order == 1:
        m = m.astype(np.float32)
    rows, cols = geometry.footprint
    b = geometry.crop_box
    sy, sx = geometry.scale
    coords_y = (np.arange(rows.start, rows.stop) + 0.5 - b.y0) / sy - 0.5
    coords_x = (np.arange(cols.start, cols.stop) + 0.5 - b.x0) / sx - 0.5
    sigma = (
        _antialias_sigma(1.0 / sy, order, antialias),
        _antialias_sigma(1.0 / sx, order, antialias),
    )
    pasted = _resample(m, coords_y, coords_x, order=order, mode="nearest", cval=0.0, sigma=sigma)
    return (rows, cols), pasted


def paste_into(
    canvas: np.ndarray, model_map: np.ndarray, geometry: CropGeometry, order: int = 1,
    *, antialias: bool = True,
) -> tuple[slice, slice]:
    """Write :func:`paste_back` of ``model_map`` into ``canvas`` (H, W[, C]) in place.

    Values are cast to ``canvas.dtype``. Returns the written ``(rows, cols)`` region.
    """
    if not isinstance(canvas, np.ndarray):
        raise CropError(f"canvas must be a numpy array, got {type(canvas).__name__}")
    if tuple(canvas.shape[:2]) != geometry.image_shape:
        raise CropError(
            f"canvas of shape {canvas.shape} does not match the geometry's image shape "
            f"{geometry.image_shape}"
        )
    region, pasted = paste_back(model_map, geometry, order, antialias=antialias)
    if canvas.shape[2:] != pasted.shape[2:]:
        raise CropError(
            f"canvas channels {canvas.shape[2:]} do not match the map channels {pasted.shape[2:]}"
        )
    canvas[region] = pasted
    return region


# --------------------------------------------------------------------------------------------
# Vaihingen protocol: whole image, central object
# --------------------------------------------------------------------------------------------


def crop_whole_image(
    image: np.ndarray,
    size: int | tuple[int, int],
    order: int = 1,
    *,
    antialias: bool = True,
) -> tuple[np.ndarray, CropGeometry]:
    """Resize the whole image to the model grid (Vaihingen protocol); no padding is involved."""
    img = _check_spatial_array(image, "image")
    box = Box(0.0, 0.0, float(img.shape[0]), float(img.shape[1]))
    return crop_to_model(img, box, size, order, antialias=antialias)


def central_object(
    label_image: np.ndarray, *, instances: bool | None = None, connectivity: int = 1
) -> np.ndarray:
    """Boolean (H, W) mask of the object under, or closest to, the image centre.

    ``label_image`` is (H, W), 0 = background. With ``instances=None`` an image with a single
    non-zero value (a binary mask such as 0/1 or 0/255) is split into connected components
    (``connectivity`` 1 = 4-neighbours, 2 = 8-neighbours) and an image with several non-zero
    values is read as an instance label image; force either reading with ``instances``.
    The distance of an object to the centre ``(H/2, W/2)`` is that of its nearest pixel centre;
    ties go to the larger object, then to the smaller label.
    """
    lab = np.asarray(label_image)
    if lab.ndim != 2:
        raise CropError(f"label_image must be 2D (H, W), got shape {lab.shape}")
    if connectivity not in (1, 2):
        raise CropError(f"connectivity must be 1 or 2, got {connectivity!r}")
    if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        if np.issubdtype(lab.dtype, np.floating) and np.all(np.isfinite(lab)) and np.all(
            lab == np.round(lab)
        ):
            lab = lab.astype(np.int64)
        else:
            raise CropError(f"label_image must hold integer labels, got dtype {lab.dtype}")
    values = np.unique(lab[lab != 0])
    if values.size == 0:
        raise NoObjectError("label image has no object (all pixels are 0)")
    if instances is None:
        instances = values.size > 1
    if instances:
        labels = lab.astype(np.int64, copy=False)
        ids = values.astype(np.int64)
    else:
        structure = ndimage.generate_binary_structure(2, connectivity)
        labels, n = ndimage.label(lab != 0, structure=structure)
        ids = np.arange(1, n + 1)
    h, w = lab.shape
    dy = (np.arange(h) + 0.5 - h / 2.0) ** 2
    dx = (np.arange(w) + 0.5 - w / 2.0) ** 2
    dist2 = dy[:, None] + dx[None, :]
    min_d = np.asarray(ndimage.minimum(dist2, labels, index=ids), dtype=float)
    areas = np.asarray(ndimage.sum_labels(np.ones_like(dist2), labels, index=ids), dtype=float)
    best = np.lexsort((ids, -areas, min_d))[0]
    return labels == ids[best]


# --------------------------------------------------------------------------------------------
# MoNuSeg protocol: resize to a working size, cut windows, stitch
# --------------------------------------------------------------------------------------------


def _axis_origins(length: int, window: int, stride: int) -> tuple[int, ...]:
    """Window starts along an axis: every ``stride``, the last one snapped to the edge."""
    if length <= window:
        return (0,)
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return tuple(starts)


@dataclass(frozen=True)
class WindowGrid:
    """Sliding windows over an image resized to a working resolution (MoNuSeg protocol).

    The paper resizes 1000x1000 images to 512x512 and tests 256x256 windows with stride 256
    (the four quadrants). Overlapping windows (``stride < window``) are averaged by
    :func:`stitch`. The last window along each axis is snapped to the edge; a working size
    smaller than the window gives one window that is padded (``mode``) when cut.

    Build with :meth:`create`.
    """

    image_shape: tuple[int, int]
    work_shape: tuple[int, int]
    window: int
    stride: int
    origins: tuple[tuple[int, int], ...]

    @classmethod
    def create(
        cls,
        image_shape: tuple[int, ...],
        window: int = 256,
        stride: int | None = None,
        work_size: int | tuple[int, int] | None = 512,
    ) -> "WindowGrid":
        """Grid for an image of ``image_shape`` (only (H, W) is used).

        ``stride`` defaults to ``window`` (non-overlapping); ``work_size=None`` keeps the
        original resolution.
        """
        shape = _as_shape2(tuple(image_shape)[:2], "image_shape")
        work = shape if work_size is None else _as_shape2(work_size, "work_size")
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise CropError(f"window must be a positive int, got {window!r}")
        win = int(window)
        st = win if stride is None else stride
        if isinstance(st, bool) or not isinstance(st, (int, np.integer)) or not 1 <= st <= win:
            raise CropError(
                f"stride must be an int in [1, window={win}] so windows cover the image, "
                f"got {stride!r}"
            )
        ys = _axis_origins(work[0], win, int(st))
        xs = _axis_origins(work[1], win, int(st))
        return cls(shape, work, int(win), int(st), tuple((y, x) for y in ys for x in xs))

    @property
    def n_windows(self) -> int:
        return len(self.origins)

    def work_geometry(self) -> CropGeometry:
        """Geometry of the resize original image -> working resolution."""
        h, w = self.image_shape
        return CropGeometry(Box(0.0, 0.0, float(h), float(w)), self.image_shape, self.work_shape)

    def to_work(self, image: np.ndarray, order: int = 1, *, antialias: bool = True) -> np.ndarray:
        """Resize ``image`` (H, W[, C]) to the working resolution (float32, or dtype for order 0)."""
        img = _check_spatial_array(image, "image")
        if tuple(img.shape[:2]) != self.image_shape:
            raise CropError(
                f"image of shape {img.shape} does not match the grid's image shape "
                f"{self.image_shape}"
            )
        if img.dtype == bool and order == 1:
            img = img.astype(np.float32)
        return crop_like(img, self.work_geometry(), order, antialias=antialias)

    def cut(
        self,
        image: np.ndarray,
        order: int = 1,
        *,
        mode: str | None = None,
        cval: float = 0.0,
        antialias: bool = True,
    ) -> np.ndarray:
        """Windows of ``image`` (original resolution): ``(N, window, window[, C])``.

        The image is resized to the working size once, then cut; windows reaching beyond a
        working size smaller than the window are padded with ``mode`` (default ``'reflect'`` for
        ``order=1``, ``'constant'`` for ``order=0``).
        """
        order = _check_order(order)
        pad = _check_mode(mode if mode is not None else ("reflect" if order else "constant"))
        work = self.to_work(image, order, antialias=antialias)
        out = []
        for oy, ox in self.origins:
            iy, vy = _map_indices(np.arange(oy, oy + self.window), self.work_shape[0], pad)
            ix, vx = _map_indices(np.arange(ox, ox + self.window), self.work_shape[1], pad)
            win = work[np.ix_(iy, ix)]
            if pad == "constant":
                inside = vy[:, None] & vx[None, :]
                if win.ndim == 3:
                    inside = inside[:, :, None]
                win = np.where(inside, win, np.asarray(cval).astype(win.dtype))
            out.append(win)
        return np.stack(out)

    def stitch(
        self, window_maps: np.ndarray, order: int = 1, *, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """See :func:`stitch`."""
        return stitch(window_maps, self, order, weights=weights)


def stitch(
    window_maps: np.ndarray,
    grid: WindowGrid,
    order: int = 1,
    *,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Combine per-window maps into one map at the original image resolution.

    Parameters
    ----------
    window_maps: ``(N, window, window)`` or ``(N, window, window, C)``, one per grid origin.
    grid: the :class:`WindowGrid` that cut the windows.
    order: resampling from the working to the original resolution (1 bilinear, 0 nearest).
    weights: optional ``(window, window)`` positive per-pixel weights (e.g. a taper that trusts
        window centres more); default uniform, i.e. overlaps are averaged.

    Returns
    -------
    float32 array ``(H, W[, C])`` at ``grid.image_shape``.
    """
    maps = np.asarray(window_maps)
    win = grid.window
    if maps.ndim not in (3, 4) or maps.shape[0] != grid.n_windows or maps.shape[1:3] != (win, win):
        raise CropError(
            f"expected window maps of shape ({grid.n_windows}, {win}, {win}[, C]), "
            f"got {maps.shape}"
        )
    if weights is None:
        wmap = np.ones((win, win))
    else:
        wmap = np.asarray(weights, dtype=float)
        if wmap.shape != (win, win) or not np.all(np.isfinite(wmap)) or np.any(wmap <= 0):
            raise CropError(
                f"weights must be a finite, strictly positive ({win}, {win}) array, "
                f"got shape {wmap.shape}"
            )
    hw, ww = grid.work_shape
    extra = maps.shape[3:]
    acc = np.zeros((hw, ww) + extra)
    wsum = np.zeros((hw, ww))
    for k, (oy, ox) in enumerate(grid.origins):
        vh, vw = min(win, hw - oy), min(win, ww - ox)
        wv = wmap[:vh, :vw]
        vals = maps[k, :vh, :vw].astype(np.float64)
        acc[oy:oy + vh, ox:ox + vw] += vals * (wv[:, :, None] if extra else wv)
        wsum[oy:oy + vh, ox:ox + vw] += wv
    if np.any(wsum == 0):  # pragma: no cover - origins always cover the working image
        raise CropError("window grid does not cover the working image")
    work = acc / (wsum[:, :, None] if extra else wsum)
    _, full = paste_back(work.astype(np.float32), grid.work_geometry(), order)
    return full.astype(np.float32, copy=False)
