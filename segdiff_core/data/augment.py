"""Paired image/mask augmentation for SegDiff training (NumPy/SciPy/scikit-image, no torchvision).

Every piece is a small callable object::

    image, mask = piece(image, mask, rng)

* ``image``: float array ``(H, W)`` or ``(H, W, C)``, normalised to roughly ``[0, 1]``; the
  output is always ``float32``.
* ``mask``: ``(H, W)`` bool / unsigned / signed integer array (a binary mask or an instance label
  image). Geometric pieces move the mask with exactly the same transform as the image, using
  nearest-neighbour sampling, so the output contains only values that were in the input and keeps
  the input dtype. Photometric pieces return the mask untouched.
* ``rng``: an explicit :class:`numpy.random.Generator` (or an ``int`` seed); nothing here touches
  NumPy's global random state.

:class:`Compose` chains pieces. It derives one independent child generator per piece from the rng
it is given, always in the same order, so a given seed reproduces the same result, and changing
one piece's parameters does not change the random draws of the others.

:func:`paper_augmentation` builds the per-dataset schemes of the SegDiff paper (Cityscapes,
Vaihingen, MoNuSeg) and the scheme used for the bundled nucleus model.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.color import hsv2rgb, rgb2hsv

__all__ = [
    "AugmentError",
    "Transform",
    "Compose",
    "RandomAffine",
    "RandomHFlip",
    "RandomVFlip",
    "RandomRot90",
    "ColorJitter",
    "RandomCrop",
    "GaussianBlur",
    "GaussianNoise",
    "RandomGamma",
    "PRESET_NAMES",
    "paper_augmentation",
]


class AugmentError(ValueError):
    """Invalid augmentation parameters or an image/mask pair that cannot be augmented."""


#: A transform: ``(image, mask, rng) -> (image, mask)``.
Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], "tuple[np.ndarray, np.ndarray]"]

#: Padding modes accepted by :class:`RandomAffine` (``scipy.ndimage`` boundary modes).
PAD_MODES = ("constant", "reflect", "mirror", "nearest", "wrap")

# ITU-R 601 luma weights, as used by torchvision's rgb_to_grayscale.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _as_rng(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise AugmentError(
        f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}; "
        "create one with numpy.random.default_rng(seed)"
    )


def _check_pair(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate an image/mask pair; return ``(image as float32, mask as ndarray)``."""
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim not in (2, 3):
        raise AugmentError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise AugmentError(
            f"image must be a float array normalised to ~[0, 1], got dtype {image.dtype}; "
            "convert and normalise it before augmenting"
        )
    if mask.ndim != 2:
        raise AugmentError(f"mask must be 2D (H, W), got shape {mask.shape}")
    if image.shape[:2] != mask.shape:
        raise AugmentError(
            f"image {image.shape} and mask {mask.shape} differ in height/width; "
            "they must cover the same pixels"
        )
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise AugmentError(
            f"mask must be bool or integer labels, got dtype {mask.dtype}; "
            "threshold or round it first"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise AugmentError(f"image is empty: shape {image.shape}")
    return image.astype(np.float32, copy=False), mask


def _check_probability(p: float, name: str = "p") -> None:
    if not (isinstance(p, (int, float)) and 0.0 <= float(p) <= 1.0):
        raise AugmentError(f"{name} must be a probability in [0, 1], got {p!r}")


def _check_range(
    value: tuple[float, float], name: str, lower: float = -math.inf, strict_lower: bool = False
) -> tuple[float, float]:
    """Validate a ``(lo, hi)`` range with ``lo <= hi``, both finite and above ``lower``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise AugmentError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise AugmentError(
            f"{name} must be a finite (low, high) pair with low <= high, got {value!r}"
        )
    if lo < lower or (strict_lower and lo <= lower):
        bound = ">" if strict_lower else ">="
        raise AugmentError(f"{name} must be {bound} {lower:g}, got {value!r}")
    return lo, hi


def _factor_range(value: float, name: str) -> tuple[float, float]:
    """torchvision-style jitter range: ``value`` -> ``(max(0, 1 - value), 1 + value)``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise AugmentError(f"{name} must be a non-negative number, got {value!r}")
    return max(0.0, 1.0 - float(value)), 1.0 + float(value)


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi)) if hi > lo else lo


def _per_channel(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a 2D function to each channel of an ``(H, W)`` or ``(H, W, C)`` image."""
    if image.ndim == 2:
        return fn(image)
    return np.stack([fn(image[..., c]) for c in range(image.shape[2])], axis=-1)


# --------------------------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order.

    For each call, one seed per transform is drawn from ``rng`` (always ``len(transforms)``
    draws, in order) and each transform gets its own ``numpy.random.default_rng(seed)``. Results
    are therefore reproducible for a given seed, and the random stream of one transform does not
    depend on what the other transforms drew.
    """

    transforms: Sequence[Transform]

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))
        for t in self.transforms:
            if not callable(t):
                raise AugmentError(f"every transform must be callable, got {t!r}")

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | int
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = _as_rng(rng)
        image, mask = _check_pair(image, mask)
        seeds = rng.integers(0, 2**63 - 1, size=len(self.transforms))
        for transform, seed in zip(self.transforms, seeds):
            image, mask = transform(image, mask, np.random.default_rng(int(seed)))
        return image, mask


# --------------------------------------------------------------------------------------------
# geometric pieces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomAffine:
    """Random rotation + isotropic scaling (+ optional translation) about the image centre.

    One resample per call: the image with bilinear interpolation (``order=1``), the mask with
    nearest neighbour (``order=0``), both through ``scipy.ndimage.affine_transform`` with the same
    matrix and the same ``pad_mode``, so pixels brought in from outside the image carry matching
    image and mask values (with ``"constant"`` the image gets ``cval`` and the mask gets 0).

    Parameters
    ----------
    degrees
        a number ``d`` (angle drawn uniformly from ``[-d, d]``) or a ``(low, high)``
        range in degrees, e.g. ``(0, 360)``. Positive angles rotate counter-clockwise as
        displayed (rows down), like ``np.rot90`` and torchvision.
    scale
        ``(low, high)`` zoom factor range, drawn uniformly; > 1 enlarges the content.
    translate
        maximum shift as a fraction of the image size (torchvision semantics: the
        shift along x is drawn from ``[-translate * W, translate * W]``, likewise along y).
    pad_mode
        one of :data:`PAD_MODES` (scipy.ndimage boundary modes).
    cval
        image fill value for ``pad_mode="constant"``.
    p
        probability of applying the transform at all.
    """

    degrees: float | tuple[float, float] = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    pad_mode: str = "reflect"
    cval: float = 0.0
    p: float = 1.0
    _angle_range: tuple[float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.degrees, (int, float)):
            if not (math.isfinite(self.degrees) and self.degrees >= 0):
                raise AugmentError(
                    f"degrees must be a non-negative number or a range, got {self.degrees!r}"
                )
            angle_range = (-float(self.degrees), float(self.degrees))
        else:
            angle_range = _check_range(self.degrees, "degrees")
        object.__setattr__(self, "_angle_range", angle_range)
        scale = _check_range(self.scale, "scale", lower=0.0, strict_lower=True)
        object.__setattr__(self, "scale", scale)
        if not (isinstance(self.translate, (int, float)) and 0.0 <= self.translate <= 1.0):
            raise AugmentError(f"translate must be a fraction in [0, 1], got {self.translate!r}")
        if self.pad_mode not in PAD_MODES:
            raise AugmentError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        _check_probability(self.p)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | int
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = _as_rng(rng)
        image, mask = _check_pair(image, mask)
        if rng.random() >= self.p:
            return image, mask
        angle = _uniform(rng, self._angle_range)
        zoom = _uniform(rng, self.scale)
        h, w = mask.shape
        shift = rng.uniform(-self.translate, self.translate, size=2) * np.array([h, w], float)
        matrix, offset = self.inverse_map(angle, zoom, shift, (h, w))
        return self.apply(image, mask, matrix, offset)

    @staticmethod
    def inverse_map(
        angle_deg: float, zoom: float, shift_yx: np.ndarray, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(matrix, offset)`` mapping output (row, col) to input (row, col) coordinates.

        The forward transform is ``out = c + zoom * R(angle) (in - c) + shift`` with ``c`` the
        pixel-centre of the image; scipy needs its inverse ``in = matrix @ out + offset``.
        """
        theta = math.radians(angle_deg)
        cos, sin = math.cos(theta), math.sin(theta)
        # Counter-clockwise as displayed, in (row, col) coordinates: inverse rotation matrix.
        matrix = np.array([[cos, sin], [-sin, cos]], dtype=float) / zoom
        centre = (np.array(shape, dtype=float) - 1.0) / 2.0
        offset = centre - matrix @ (centre + np.asarray(shift_yx, dtype=float))
        return matrix, offset

    def apply(
        self, image: np.ndarray, mask: np.ndarray, matrix: np.ndarray, offset: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resample ``image`` (bilinear) and ``mask`` (nearest) with a fixed inverse map."""
        image, mask = _check_pair(image, mask)

        def warp_image(channel: np.ndarray) -> np.ndarray:
            return ndimage.affine_transform(
                channel, matrix, offset, order=1, mode=self.pad_mode, cval=self.cval
            )

        out_image = _per_channel(image, warp_image).astype(np.float32, copy=False)
        work = mask.view(np.uint8) if mask.dtype == bool else mask
        out_mask = ndimage.affine_transform(
            work, matrix, offset, order=0, mode=self.pad_mode, cval=0, prefilter=False
        )
        out_mask = out_mask.astype(bool) if mask.dtype == bool else out_mask.astype(mask.dtype)
        return out_image, out_mask


@dataclass(frozen=True)
class _RandomFlip:
    """Mirror along :attr:`axis` (0: rows, 1: columns) with probability ``p``."""

    p: float = 0.5
    axis = 1

    def __post_init__(self) -> None:
        _check_probability(self.p)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | int
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = _as_rng(rng)
        image, mask = _check_pair(image, mask)
        if rng.random() < self.p:
            return (
                np.ascontiguousarray(np.flip(image, axis=self.axis)),
                np.ascontiguousarray(np.flip(mask, axis=self.axis)),
            )
        return image, mask


@dataclass(frozen=True)
class RandomHFlip(_RandomFlip):
    """Mirror left-right (reverse columns) with probability ``p``."""

    axis = 1


@dataclass(frozen=True)
class RandomVFlip(_RandomFlip):
    """Mirror top-bottom (reverse rows) with probability ``p``."""

    axis = 0


@dataclass(frozen=True)
class RandomRot90:
    """Rotate by ``k * 90`` degrees, ``k`` uniform in {0, 1, 2, 3} (exact, no resampling).

    Counter-clockwise as displayed (``np.rot90`` convention). Non-square inputs swap H and W
    for odd ``k``.
    """

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | int
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = _as_rng(rng)
        image, mask = _check_pair(image, mask)
        k = int(rng.integers(0, 4))
        return (
            np.ascontiguousarray(np.rot90(image, k, axes=(0, 1))),
            np.ascontiguousarray(np.rot90(mask, k, axes=(0, 1))),
        )


@dataclass(frozen=True)
class RandomCrop:
    """Crop a random ``size`` window (same window for image and mask).

    Parameters
    ----------
    size
        ``int`` for a square crop or ``(height, width)``.
    pad_if_needed
        if the image is smaller than ``size`` along an axis, zero-pad image and
        mask (mask with 0 = background) at the bottom/right first; otherwise that is an error.
    """

    size: int | tuple[int, int]
    pad_if_needed: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.size, (int, np.integer)):
            size: tuple = (self.size, self.size)
        else:
            size = tuple(self.size)
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
            raise AugmentError(f"size must be a positive int or (height, width), got {self.size!r}")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | int
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = _as_rng(rng)
        image, mask = _check_pair(image, mask)
        ch, cw = self.size
        h, w = mask.shape
        if h < ch or w < cw:
            if not self.pad_if_needed:
                raise AugmentError(
                    f"cannot crop {ch}x{cw} from an image of {h}x{w}; "
                    "use a smaller crop or RandomCrop(..., pad_if_needed=True)"
                )
            pad = ((0, max(0, ch - h)), (0, max(0, cw - w)))
            image = np.pad(image, pad + ((0, 0),) * (image.ndim - 2))
            mask = np.pad(mask, pad)
            h, w = mask.shape
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        return (
            np.ascontiguousarray(image[y0 : y0 + ch, x0 : x0 + cw]),
            np.ascontiguousarray(mask[y0 : y0 + ch, x0 : x0 + cw]),
        )


# --------------------------------------------------------------------------------------------
# photometric pieces (mask untouched)
# --------------------------------------------------------------------------------------------


def _grayscale(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` luminance: luma weights for 3 channels, the channel mean otherwise."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 3:
        return image @ _LUMA
    return image.mean(axis=2)


def _blend(image: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
    return factor * image + (1.0 - factor) * other


def _shift_hue(image: np.ndarray, hue_shift: float) -> np.ndarray:
    hsv = rgb2hsv(np.clip(image, 0.0, 1.0))
    hsv[..., 0] = np.mod(hsv[..., 0] + hue_shift, 1.0)
    return hsv2rgb(hsv).astype(np.float32)


@dataclass(frozen=True)
class ColorJitter:
    """Random brightness, contrast, saturation and hue, with torchvision semantics.

    * brightness ``b``: factor ``f ~ U[max(0, 1-b), 1+b]``; ``image * f``.
    * contrast ``c``: ``f ~ U[max(0, 1-c), 1+c]``; blend with the mean grey level of the image.
    * saturation ``s``: ``f ~ U[max(0, 1-s), 1+s]``; blend with the greyscale image
      (luma ``0.299 R + 0.587 G + 0.114 B``). Only for 3-channel images.
    * hue ``h`` (``0 <= h <= 0.5``): shift ``~ U[-h, h]`` turns of the HSV hue wheel
      (``skimage.color``). Only for 3-channel images.

    The four operations are applied in a random order (as in torchvision). Saturation and hue
    are skipped without drawing for images that are not 3-channel (grey-level microscopy). With
    ``clip=True`` (torchvision behaviour for float images) the result of every step is clipped
    to ``[0, 1]``; the hue step always works on ``[0, 1]``-clipped values.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    clip: bool = True

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            _factor_range(getattr(self, name), name)
        if not (isinstance(self.hue, (int, float)) and 0.0 <= self.hue <= 0.5):
            raise AugmentError(f"hue must be in [0, 0.5], got {self.hue!r}")

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | int
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = _as_rng(rng)
        image, mask = _check_pair(image, mask)
        is_rgb = image.ndim == 3 and image.shape[2] == 3
        out = image
        for op in rng.permutation(4):
            if op == 0 and self.brightness > 0:
                out = out * _uniform(rng, _factor_range(self.brightness, "brightness"))
            elif op == 1 and self.contrast > 0:
                factor = _uniform(rng, _factor_range(self.contrast, "contrast"))
                out = _blend(out, float(_grayscale(out).mean()), factor)
            elif op == 2 and self.saturation > 0 and is_rgb:
                factor = _uniform(rng, _factor_range(self.saturation, "saturation"))
                out = _blend(out, _grayscale(out)[..., None], factor)
            elif op == 3 and self.hue > 0 and is_rgb:
                out = _shift_hue(out, _uniform(rng, (-self.hue, self.hue)))
            else:
                continue
            if self.clip:
                out = np.clip(out, 0.0, 1.0)
        return np.asarray(out, dtype=np.float32), mask


class _RandomIntensity:
    """Base of the photometric pieces below: with probability ``p``, draw a value uniformly from
    the range stored in the field named by :attr:`_range` and apply :meth:`_apply`. Draw order
    (fixed, for reproducibility): the probability test, then the value."""

    _range = ""

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | int
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = _as_rng(rng)
        image, mask = _check_pair(image, mask)
        if rng.random() >= self.p:  # type: ignore[attr-defined]
            return image, mask
        return self._apply(image, _uniform(rng, getattr(self, self._range)), rng), mask

    def _apply(self, image: np.ndarray, value: float, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class GaussianBlur(_RandomIntensity):
    """With probability ``p``, blur each channel with a Gaussian of ``sigma ~ U[sigma]`` pixels."""

    sigma: tuple[float, float] = (0.1, 1.5)
    p: float = 0.5
    _range = "sigma"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", _check_range(self.sigma, "sigma", lower=0.0))
        _check_probability(self.p)

    def _apply(self, image: np.ndarray, value: float, rng: np.random.Generator) -> np.ndarray:
        if value == 0.0:
            return image
        spatial = (value, value) + (0.0,) * (image.ndim - 2)
        return ndimage.gaussian_filter(image, sigma=spatial, mode="reflect")


@dataclass(frozen=True)
class GaussianNoise(_RandomIntensity):
    """With probability ``p``, add i.i.d. ``N(0, std^2)`` noise, ``std ~ U[std]``.

    With ``clip=True`` the result is clipped to ``[0, 1]``.
    """

    std: tuple[float, float] = (0.0, 0.05)
    p: float = 0.5
    clip: bool = True
    _range = "std"

    def __post_init__(self) -> None:
        object.__setattr__(self, "std", _check_range(self.std, "std", lower=0.0))
        _check_probability(self.p)

    def _apply(self, image: np.ndarray, value: float, rng: np.random.Generator) -> np.ndarray:
        out = image + rng.normal(0.0, value, size=image.shape).astype(np.float32)
        if self.clip:
            out = np.clip(out, 0.0, 1.0)
        return out.astype(np.float32, copy=False)


@dataclass(frozen=True)
class RandomGamma(_RandomIntensity):
    """With probability ``p``, apply ``clip(image, 0, 1) ** gamma``, ``gamma ~ U[gamma]``.

    ``gamma < 1`` brightens dim structures, ``gamma > 1`` darkens them (intensity non-linearity
    of different microscopes/cameras). The input is clipped to ``[0, 1]`` first, so the output
    stays in ``[0, 1]``.
    """

    gamma: tuple[float, float] = (0.7, 1.5)
    p: float = 0.5
    _range = "gamma"

    def __post_init__(self) -> None:
        gamma = _check_range(self.gamma, "gamma", lower=0.0, strict_lower=True)
        object.__setattr__(self, "gamma", gamma)
        _check_probability(self.p)

    def _apply(self, image: np.ndarray, value: float, rng: np.random.Generator) -> np.ndarray:
        return np.power(np.clip(image, 0.0, 1.0), value).astype(np.float32)


# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------

#: Names accepted by :func:`paper_augmentation`.
PRESET_NAMES = ("cityscapes", "vaihingen", "monuseg", "nuclei", "nuclei-box", "nuclei-box-stain")

_PAPER_JITTER = dict(brightness=0.6, contrast=0.5, saturation=0.4, hue=0.025)


def paper_augmentation(name: str) -> Compose:
    """The augmentation scheme for a dataset, as a :class:`Compose`.

    * ``"cityscapes"``: rotation ``U[-22, 22]`` deg + scale ``U[0.75, 1.25]`` (one resample,
      zero padding, as torchvision's default fill), horizontal flip 0.5.
    * ``"vaihingen"``: rotation ``U[0, 360]`` deg + scale ``U[0.75, 1.25]`` (the paper gives no
      scale range; the Cityscapes/MoNuSeg one is used), h/v flips 0.5, colour jitter
      (brightness 0.6, contrast 0.5, saturation 0.4, hue 0.025).
    * ``"monuseg"``: random 256x256 crop (zero-padded if the image is smaller), h/v flips 0.5, rotation ``U[-22, 22]`` + scale
      ``U[0.75, 1.25]`` (reflect padding: tissue continues past the crop edge), colour jitter
      with the Vaihingen values (the paper does not give MoNuSeg's).
    * ``"nuclei"`` (the bundled nucleus model): rotation ``U[0, 360]`` + scale ``U[0.8, 1.25]``
      (reflect padding), h/v flips 0.5, mild colour jitter (0.2, 0.2, 0.1, 0.02), and for
      robustness across microscopes Gaussian blur (sigma 0.3-1.2, p 0.3), Gaussian noise
      (std 0-0.03, p 0.3) and gamma (0.75-1.35, p 0.3).
    * ``"nuclei-box"`` (models with a prompt-box channel): as ``"nuclei"`` but the geometry is
      exact: 90-degree rotations and flips only, no resampling. The crop margin jitter of the
      training protocol (0 .. 0.6) already varies the object's scale, and a free rotation would
      turn the drawn box into a rotated rectangle that no user draws.
    * ``"nuclei-box-stain"``: as ``"nuclei-box"`` with the hue turned anywhere on the wheel
      (``U[-0.5, 0.5]`` turns) and stronger saturation jitter (0.4), so that a brightfield model
      cannot tie "nucleus" to the haematoxylin colour of its training stains (grayscale images
      are unchanged by hue).

    Raises
    ------
    AugmentError
        unknown ``name`` (the message lists :data:`PRESET_NAMES`).
    """
    key = str(name).strip().lower()
    if key == "cityscapes":
        return Compose([
            RandomAffine(degrees=22.0, scale=(0.75, 1.25), pad_mode="constant"),
            RandomHFlip(0.5),
        ])
    if key == "vaihingen":
        return Compose([
            RandomAffine(degrees=(0.0, 360.0), scale=(0.75, 1.25), pad_mode="constant"),
            RandomHFlip(0.5),
            RandomVFlip(0.5),
            ColorJitter(**_PAPER_JITTER),
        ])
    if key == "monuseg":
        return Compose([
            RandomCrop(256, pad_if_needed=True),
            RandomHFlip(0.5),
            RandomVFlip(0.5),
            RandomAffine(degrees=22.0, scale=(0.75, 1.25), pad_mode="reflect"),
            ColorJitter(**_PAPER_JITTER),
        ])
    if key == "nuclei":
        return Compose([
            RandomAffine(degrees=(0.0, 360.0), scale=(0.8, 1.25), pad_mode="reflect"),
            RandomHFlip(0.5),
            RandomVFlip(0.5),
            ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.02),
            GaussianBlur(sigma=(0.3, 1.2), p=0.3),
            GaussianNoise(std=(0.0, 0.03), p=0.3),
            RandomGamma(gamma=(0.75, 1.35), p=0.3),
        ])
    if key in ("nuclei-box", "nuclei-box-stain"):
        stain = key == "nuclei-box-stain"
        return Compose([
            RandomRot90(),
            RandomHFlip(0.5),
            RandomVFlip(0.5),
            ColorJitter(brightness=0.2, contrast=0.2, saturation=0.4 if stain else 0.1, hue=0.5 if stain else 0.02),
            GaussianBlur(sigma=(0.3, 1.2), p=0.3),
            GaussianNoise(std=(0.0, 0.03), p=0.3),
            RandomGamma(gamma=(0.75, 1.35), p=0.3),
        ])
    raise AugmentError(
        f"unknown augmentation preset {name!r}; valid names are: {', '.join(PRESET_NAMES)}"
    )
