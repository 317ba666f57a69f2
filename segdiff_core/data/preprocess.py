"""Image preprocessing shared by training and inference.

What the model sees is ``to_model_array(crop, cfg)``: a (in_channels, H, W) float32 array computed from a
crop that has already been resampled to the model resolution (:mod:`segdiff_core.data.crops`).
The steps, each available on its own:

1. :func:`to_channels_last` — any 2D image a user opens (uint8, uint16, other ints, bool, float;
   (H, W), (H, W, C) or (C, H, W)) -> (H, W, C) float32 with non-finite values replaced.
2. :func:`adapt_channels` — match the model's channel count (:class:`PreprocessConfig`).
3. :func:`normalize` — intensity normalisation to roughly [0, 1].

The :class:`PreprocessConfig` is stored inside model checkpoints (:meth:`PreprocessConfig.to_dict`)
so inference repeats exactly the preprocessing the model was trained with.

Decisions (documented here once):

* **Values are not rescaled by dtype.** A uint8 image becomes floats 0..255, a uint16 image
  0..65535, bool becomes 0/1; the normalisation step then maps each crop to ~[0, 1]. This makes a
  uint8 and a float copy of the same picture preprocess identically (with ``normalization`` other
  than ``'none'``).
* **Non-finite values** (NaN, +inf, -inf) are replaced, per channel, by the median of that
  channel's finite values, or by 0 if the channel has none. The median keeps a single hot pixel
  from dominating the normalisation range.
* **Layout of 3D arrays** (``rgb=None``): a channel axis has at most :data:`MAX_CHANNELS` entries.
  If only the last (first) axis qualifies it is the channel axis; if both do, the smaller one
  wins and a tie means channels-last (napari and scikit-image RGB(A) convention). Otherwise the
  array is a volume/stack and :class:`ImageLayoutError` asks for a 2D plane. ``rgb=True`` means
  channels-last RGB(A) (napari's ``rgb=True`` layer: (H, W, 3|4)); ``rgb=False`` means
  channels-first (C, H, W) (napari shows such an array as a stack).
* **Channel policy**: a 1-channel image feeding a 3-channel model is replicated; RGB(A) feeding
  a 1-channel model is converted to luminance (Rec. 709 weights 0.2125, 0.7154, 0.0721, as
  ``skimage.color.rgb2gray``; or the plain mean with ``rgb_to_gray='mean'``); RGBA feeding a
  3-channel model drops alpha; a matching channel count is used as is; anything else raises
  :class:`ChannelMismatchError`.
* **Normalisation** is computed per channel (``per_channel=True``) or jointly over all channels.
  ``'percentile'``: ``(x - p_low) / (p_high - p_low)`` with numpy's linear-interpolated
  percentiles; if those two percentiles coincide (a mostly flat crop with a few bright pixels)
  it falls back to min/max. ``'minmax'``: ``(x - min) / (max - min)``. ``'zscore'``:
  ``(x - mean) / std``. ``'none'``: values unchanged. A constant channel (span or std within
  float32 rounding of its magnitude, or exactly 0) maps to all zeros; nothing is ever divided by
  zero. ``clip=True`` clips the percentile/minmax result to [0, 1].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np

from segdiff_core.data.crops import crop_whole_image

__all__ = [
    "MAX_CHANNELS",
    "NORMALIZATIONS",
    "RGB_TO_GRAY",
    "LUMINANCE_WEIGHTS",
    "PreprocessError",
    "ChannelMismatchError",
    "ImageLayoutError",
    "PreprocessConfig",
    "to_channels_last",
    "adapt_channels",
    "normalize",
    "prepare",
]

MAX_CHANNELS = 16
"""Largest axis length taken for a channel axis when guessing the layout of a 3D array."""

NORMALIZATIONS: tuple[str, ...] = ("percentile", "minmax", "zscore", "none")
RGB_TO_GRAY: tuple[str, ...] = ("luminance", "mean")
LUMINANCE_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
"""Rec. 709 luminance weights for R, G, B (same as ``skimage.color.rgb2gray``)."""

# Relative size below which a span/std is float32 rounding noise, i.e. the channel is constant.
_CONSTANT_RTOL = 4.0 * float(np.finfo(np.float32).eps)


class PreprocessError(ValueError):
    """Invalid preprocessing configuration or input image."""


class ChannelMismatchError(PreprocessError):
    """The image's channel count cannot be adapted to the model's input channels."""


class ImageLayoutError(PreprocessError):
    """The array is not a 2D image in a recognised layout."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image crop becomes the model input; saved with every model checkpoint.

    Attributes
    ----------
    in_channels: model input channels (e.g. 1 for fluorescence, 3 for H&E / RGB).
    input_size: model resolution (square side, pixels).
    normalization: one of :data:`NORMALIZATIONS` (default ``'percentile'``).
    p_low, p_high: percentiles for ``'percentile'`` (default 1.0 / 99.8), ``0 <= p_low < p_high <= 100``.
    per_channel: normalise each channel separately (default) or all channels jointly
        (keeps colour balance).
    clip: clip the ``'percentile'``/``'minmax'`` output to [0, 1].
    rgb_to_gray: how RGB(A) feeds a 1-channel model, one of :data:`RGB_TO_GRAY`.
    """

    in_channels: int = 3
    input_size: int = 256
    normalization: str = "percentile"
    p_low: float = 1.0
    p_high: float = 99.8
    per_channel: bool = True
    clip: bool = False
    rgb_to_gray: str = "luminance"

    def __post_init__(self) -> None:
        if not _is_int(self.in_channels) or self.in_channels < 1:
            raise PreprocessError(f"in_channels must be a positive int, got {self.in_channels!r}")
        if not _is_int(self.input_size) or self.input_size < 1:
            raise PreprocessError(f"input_size must be a positive int, got {self.input_size!r}")
        if self.normalization not in NORMALIZATIONS:
            raise PreprocessError(
                f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        if not (_is_number(self.p_low) and _is_number(self.p_high)):
            raise PreprocessError(
                f"p_low and p_high must be numbers, got {self.p_low!r}, {self.p_high!r}"
            )
        if not 0.0 <= float(self.p_low) < float(self.p_high) <= 100.0:
            raise PreprocessError(
                f"need 0 <= p_low < p_high <= 100, got p_low={self.p_low!r}, p_high={self.p_high!r}"
            )
        for name in ("per_channel", "clip"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise PreprocessError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.rgb_to_gray not in RGB_TO_GRAY:
            raise PreprocessError(
                f"rgb_to_gray must be one of {RGB_TO_GRAY}, got {self.rgb_to_gray!r}"
            )
        # Store plain Python types so to_dict() is JSON-safe.
        object.__setattr__(self, "in_channels", int(self.in_channels))
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "p_low", float(self.p_low))
        object.__setattr__(self, "p_high", float(self.p_high))
        object.__setattr__(self, "per_channel", bool(self.per_channel))
        object.__setattr__(self, "clip", bool(self.clip))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessConfig":
        """Rebuild from :meth:`to_dict` output.

        Unknown keys raise :class:`PreprocessError` (a checkpoint written by a newer version, or
        a typo); missing keys take their defaults.
        """
        if not isinstance(data, Mapping):
            raise PreprocessError(
                f"preprocessing config must be a mapping, got {type(data).__name__}"
            )
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise PreprocessError(
                f"unknown preprocessing config key(s) {unknown}; known keys: {known}"
            )
        return cls(**dict(data))


# --------------------------------------------------------------------------------------------
# Layout and dtype
# --------------------------------------------------------------------------------------------


def _channel_axis(shape: tuple[int, ...], rgb: bool | None) -> int:
    """0 (channels-first) or 2 (channels-last) for a 3D ``shape``; see module docstring."""
    if rgb is True:
        if shape[2] not in (3, 4):
            raise ImageLayoutError(
                f"rgb=True expects an (H, W, 3) or (H, W, 4) array, got shape {shape}"
            )
        return 2
    if rgb is False:
        return 0
    first_ok, last_ok = shape[0] <= MAX_CHANNELS, shape[2] <= MAX_CHANNELS
    if last_ok and (not first_ok or shape[2] <= shape[0]):
        return 2
    if first_ok:
        return 0
    raise ImageLayoutError(
        f"cannot tell the channel axis of an array of shape {shape}: neither the first nor the "
        f"last axis has <= {MAX_CHANNELS} entries, so it looks like a volume or a stack; pass "
        f"a single 2D plane, or rgb=True (H, W, C) / rgb=False (C, H, W)"
    )


def _replace_non_finite(hwc: np.ndarray) -> np.ndarray:
    """Replace NaN/inf per channel by the finite median (0 if none); float64 in, float64 out."""
    bad = ~np.isfinite(hwc)
    if not bad.any():
        return hwc
    out = hwc.copy()
    for c in range(out.shape[2]):
        chan_bad = bad[:, :, c]
        if not chan_bad.any():
            continue
        finite = out[:, :, c][~chan_bad]
        fill = float(np.median(finite)) if finite.size else 0.0
        out[:, :, c][chan_bad] = fill
    return out


def to_channels_last(image: np.ndarray, rgb: bool | None = None) -> np.ndarray:
    """Return a 2D image as an (H, W, C) float32 array.

    Parameters
    ----------
    image: (H, W), (H, W, C) or (C, H, W); leading singleton axes are dropped. Any real dtype or
        bool. Values are converted, not rescaled (uint8 255 -> 255.0).
    rgb: ``True`` for napari-style RGB(A) (H, W, 3|4); ``False`` for channels-first (C, H, W);
        ``None`` to guess (see module docstring).

    Non-finite values are replaced per channel by the channel's finite median (0 if none).
    Float64 values beyond the float32 range are clipped to it.
    """
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise PreprocessError(f"image must have a numeric or bool dtype, got {arr.dtype}")
    if np.iscomplexobj(arr):
        raise PreprocessError(f"complex images are not supported (dtype {arr.dtype})")
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3:
        if _channel_axis(arr.shape, rgb) == 0:
            arr = np.moveaxis(arr, 0, -1)
    else:
        raise ImageLayoutError(
            f"expected a 2D image (H, W), (H, W, C) or (C, H, W), got shape {np.shape(image)}; "
            f"select a single 2D plane first"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ImageLayoutError(f"image is empty (shape {np.shape(image)})")
    work = arr.astype(np.float64)
    work = _replace_non_finite(work)
    f32 = np.finfo(np.float32)
    work = np.clip(work, f32.min, f32.max)
    return np.ascontiguousarray(work, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------------


def _check_hwc(image_hwc: np.ndarray) -> np.ndarray:
    arr = np.asarray(image_hwc)
    if arr.ndim != 3:
        raise ImageLayoutError(
            f"expected an (H, W, C) array (use to_channels_last first), got shape {arr.shape}"
        )
    return arr


def adapt_channels(image_hwc: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Match the channel count of an (H, W, C) image to ``cfg.in_channels``.

    Returns (H, W, cfg.in_channels) float32. Policy: equal counts -> unchanged; 1 -> 3 replicate;
    RGB/RGBA -> 1 luminance (or mean, ``cfg.rgb_to_gray``); RGBA -> 3 drop alpha; otherwise
    :class:`ChannelMismatchError`.
    """
    arr = _check_hwc(image_hwc).astype(np.float32, copy=False)
    k, n = arr.shape[2], cfg.in_channels
    if k == n:
        return arr
    if k == 1 and n == 3:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if k in (3, 4) and n == 1:
        rgb = arr[:, :, :3].astype(np.float64)
        if cfg.rgb_to_gray == "luminance":
            gray = rgb @ LUMINANCE_WEIGHTS
        else:
            gray = rgb.mean(axis=2)
        return np.ascontiguousarray(gray[:, :, None], dtype=np.float32)
    if k == 4 and n == 3:
        return np.ascontiguousarray(arr[:, :, :3])
    raise ChannelMismatchError(
        f"the image has {k} channel(s) but the model expects {n}; supported conversions are "
        f"1 -> 3 (replicate), 3/4 -> 1 (luminance) and 4 -> 3 (drop alpha). Select a layer or "
        f"channels that match the model, or use a model trained for {k}-channel images"
    )


# --------------------------------------------------------------------------------------------
# Intensities
# --------------------------------------------------------------------------------------------


def _is_constant(span: float, magnitude: float) -> bool:
    return span <= 0.0 or span <= _CONSTANT_RTOL * magnitude


def _normalize_block(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Normalise one block of values (a channel or the whole image), float64 in and out."""
    mode = cfg.normalization
    if mode == "none":
        return x
    if mode == "zscore":
        mean = float(x.mean())
        std = float(x.std())
        if _is_constant(std, abs(mean)):
            return np.zeros_like(x)
        return (x - mean) / std
    lo, hi = float(x.min()), float(x.max())
    if mode == "percentile":
        p_lo, p_hi = (float(v) for v in np.percentile(x, [cfg.p_low, cfg.p_high]))
        if not _is_constant(p_hi - p_lo, max(abs(p_lo), abs(p_hi))):
            lo, hi = p_lo, p_hi
    if _is_constant(hi - lo, max(abs(lo), abs(hi))):
        return np.zeros_like(x)
    out = (x - lo) / (hi - lo)
    if cfg.clip:
        out = np.clip(out, 0.0, 1.0)
    return out


def normalize(image_hwc: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Normalise intensities of an (H, W, C) image; returns float32 (H, W, C).

    See the module docstring for the formulas and the constant-image rule.
    """
    arr = _check_hwc(image_hwc).astype(np.float64)
    if arr.size == 0:
        raise ImageLayoutError(f"image is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise PreprocessError(
            "image contains NaN or inf; pass it through to_channels_last first"
        )
    if cfg.per_channel:
        out = np.empty_like(arr)
        for c in range(arr.shape[2]):
            out[:, :, c] = _normalize_block(arr[:, :, c], cfg)
    else:
        out = _normalize_block(arr, cfg)
    return np.ascontiguousarray(out, dtype=np.float32)


def to_model_array(
    image: np.ndarray,
    cfg: PreprocessConfig,
    *,
    rgb: bool | None = None,
    check_size: bool = True,
    resize: bool = False,
) -> np.ndarray:
    """Everything the model input needs: layout, channels, normalisation.

    Parameters
    ----------
    image : (H, W), (H, W, C) or (C, H, W) array
        A crop resampled to the model resolution (any dtype).
    cfg : PreprocessConfig
        The model's preprocessing.
    rgb : bool, optional
        Layout of a 3D array (see :func:`to_channels_last`).
    check_size : bool
        Require ``H == W == cfg.input_size`` (ignored with ``resize``).
    resize : bool
        Resample a crop of another size to ``cfg.input_size`` first, with the same resampler
        that makes crops (:func:`segdiff_core.data.crops.crop_whole_image`).

    Returns
    -------
    (cfg.in_channels, H, W) float32 array
        C-contiguous.
    """
    hwc = to_channels_last(image, rgb=rgb)
    size = (cfg.input_size, cfg.input_size)
    if resize and hwc.shape[:2] != size:
        hwc = crop_whole_image(hwc, size)[0]
    elif check_size and not resize and hwc.shape[:2] != size:
        raise PreprocessError(
            f"image is {hwc.shape[0]}x{hwc.shape[1]} but the model input is "
            f"{cfg.input_size}x{cfg.input_size}; resample the crop to the model size first "
            f"(segdiff_core.data.crops.crop_to_model) or pass check_size=False"
        )
    hwc = adapt_channels(hwc, cfg)
    hwc = normalize(hwc, cfg)
    return np.ascontiguousarray(np.moveaxis(hwc, -1, 0))


prepare = to_model_array
"""Former name of :func:`to_model_array`."""
