"""Crop protocols: how a box prompt becomes a crop box (paper, section 5)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from segdiff_core.data.boxes import Box, as_box
from segdiff_core.validation import check_float, check_range

__all__ = ["CropError", "CropProtocol", "PAPER_MARGIN", "PROMPT_PROTOCOLS", "as_box"]

PAPER_MARGIN = 0.15
"""The paper's *expansion* setting: the crop is 15 % larger than the box."""

PROMPT_PROTOCOLS: tuple[str, ...] = ("tight", "expansion")
"""Names of the box-prompt crop protocols (:meth:`CropProtocol.named`)."""


class CropError(ValueError):
    """Invalid crop parameters (size, order, padding mode, array shape)."""


_PROTOCOL_KEYS = ("margin", "jitter_margin", "shift", "scale_range", "square")


@dataclass(frozen=True)
class CropProtocol:
    """How a box becomes the crop that is fed to the model.

    Parameters
    ----------
    margin : float
        Fractional enlargement of the box: the crop is ``(1 + margin)`` times the box's height
        and width, centred on the box (``0`` = tight, ``0.15`` = the paper's expansion setting).
        Must be ``> -1``. Ignored when ``jitter_margin`` is given.
    jitter_margin : (float, float), optional
        Draw the margin uniformly from this range for every crop (paper training inputs:
        ``(0.10, 0.20)``). Makes the protocol random.
    shift : float
        Maximum shift of the box centre, as a fraction of the box height (rows) and width
        (columns); each axis draws ``U(-shift, shift)`` independently. ``>= 0``.
    scale_range : (float, float), optional
        Multiply the box height and width by independent factors drawn from ``U(low, high)``
        (both ``> 0``) before the margin is applied.
    square : bool
        Grow the shorter side of the crop to the longer one (centred) so the resize to the
        square model input is isotropic. Default ``False``: the crop keeps the box's aspect
        ratio and is stretched to the model input.

    Notes
    -----
    A random protocol (:attr:`is_random`) needs a ``numpy.random.Generator``. Draws are made in
    a fixed order, so a seeded generator reproduces crops exactly: height scale, width scale (if
    ``scale_range``), row shift, column shift (if ``shift > 0``), margin (if ``jitter_margin``).
    """

    margin: float = PAPER_MARGIN
    jitter_margin: tuple[float, float] | None = None
    shift: float = 0.0
    scale_range: tuple[float, float] | None = None
    square: bool = False

    def __post_init__(self) -> None:
        margin = check_float(self.margin, "margin", -1.0, lo_open=True, error=CropError)
        shift = check_float(self.shift, "shift", 0.0, error=CropError)
        if not isinstance(self.square, (bool, np.bool_)):
            raise CropError(f"square must be True or False, got {self.square!r}")
        jm = check_range(self.jitter_margin, "jitter_margin", -1.0, error=CropError)
        sr = check_range(self.scale_range, "scale_range", 0.0, error=CropError)
        for key, value in zip(_PROTOCOL_KEYS, (margin, jm, shift, sr, bool(self.square))):
            object.__setattr__(self, key, value)

    @classmethod
    def tight(cls, square: bool = False) -> "CropProtocol":
        """The crop is the box itself (paper's *tight* setting)."""
        return cls(margin=0.0, square=square)

    @classmethod
    def expansion(cls, margin: float = PAPER_MARGIN, square: bool = False) -> "CropProtocol":
        """The crop is ``1 + margin`` times the box (paper's *expansion* setting: 15 %)."""
        return cls(margin=margin, square=square)

    @classmethod
    def named(cls, name: str, margin: float | None = None) -> "CropProtocol":
        """The protocol called ``name`` (one of :data:`PROMPT_PROTOCOLS`): ``"tight"``, or
        ``"expansion"`` with ``margin`` (default :data:`PAPER_MARGIN`)."""
        if name == "tight":
            return cls.tight()
        if name == "expansion":
            return cls.expansion(PAPER_MARGIN if margin is None else margin)
        raise CropError(f"unknown box crop protocol {name!r}; use one of {', '.join(PROMPT_PROTOCOLS)}")

    @classmethod
    def training(cls, jitter_margin: tuple[float, float] = (0.10, 0.20), shift: float = 0.0,
                 scale_range: tuple[float, float] | None = None,
                 square: bool = False) -> "CropProtocol":
        """Random training crops: margin ``~ U(jitter_margin)`` plus optional box jitter."""
        lo, hi = (float(v) for v in jitter_margin)
        return cls((lo + hi) / 2.0, (lo, hi), shift, scale_range, square)

    @property
    def is_random(self) -> bool:
        """True if :meth:`crop_box` draws random numbers (needs a Generator)."""
        return self.jitter_margin is not None or self.shift > 0 or self.scale_range is not None

    def crop_box(self, box: Box | Sequence[float], rng: np.random.Generator | None = None,
                 image_shape: tuple[int, ...] | None = None) -> Box:
        """Return the crop box for ``box``.

        Parameters
        ----------
        box : Box or sequence of 4 floats
            The prompt ``(y0, x0, y1, x1)``.
        rng : numpy.random.Generator, optional
            Required when :attr:`is_random`.
        image_shape : tuple of int, optional
            If given, a box entirely outside ``(H, W)`` raises :class:`BoxError`.

        Returns
        -------
        Box
            Float coordinates; may extend beyond the image.
        """
        b = as_box(box)
        if image_shape is not None:
            b.check_inside(tuple(image_shape))
        if self.is_random and not isinstance(rng, np.random.Generator):
            raise CropError("this crop protocol is random (training jitter); "
                            "pass rng=np.random.default_rng(seed)")
        (cy, cx), h, w, margin = b.center, b.height, b.width, self.margin
        if self.scale_range is not None:
            h *= float(rng.uniform(*self.scale_range))  # type: ignore[union-attr]
            w *= float(rng.uniform(*self.scale_range))  # type: ignore[union-attr]
        if self.shift > 0:
            cy += float(rng.uniform(-self.shift, self.shift)) * b.height  # type: ignore[union-attr]
            cx += float(rng.uniform(-self.shift, self.shift)) * b.width  # type: ignore[union-attr]
        if self.jitter_margin is not None:
            margin = float(rng.uniform(*self.jitter_margin))  # type: ignore[union-attr]
        h, w = h * (1.0 + margin), w * (1.0 + margin)
        if self.square:
            h = w = max(h, w)
        return Box(cy - h / 2.0, cx - w / 2.0, cy + h / 2.0, cx + w / 2.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (e.g. to record the training protocol in a checkpoint)."""
        out = {key: getattr(self, key) for key in _PROTOCOL_KEYS}
        for key in ("jitter_margin", "scale_range"):
            out[key] = list(out[key]) if out[key] else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CropProtocol":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`CropError`."""
        if not isinstance(data, Mapping):
            raise CropError(f"crop protocol must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_PROTOCOL_KEYS))
        if unknown:
            raise CropError(f"unknown crop protocol key(s) {unknown}; known keys: "
                            f"{sorted(_PROTOCOL_KEYS)}")
        kwargs = dict(data)
        for key in ("jitter_margin", "scale_range"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)
