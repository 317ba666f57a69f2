"""The prompt-box input channel: telling the network where the drawn box lies in its crop.

A crop fed to the model is the drawn box enlarged by a margin (0 = tight, 0.15 = the paper's
expansion, 0.5 = a loose crop). Without more information the network has to guess how large the
object is relative to the crop, and which of several bright blobs is meant. A model whose
:attr:`segdiff_core.config.ModelConfig.box_channel` is true receives one extra input channel after
the image channels: the drawn box rasterised on the model grid (1 inside, 0 outside, fractional
coverage on the border pixels).

Coordinates: boxes are :class:`~segdiff_core.data.boxes.Box` objects in pixel-edge units
(``y1``/``x1`` exclusive); a box "in the crop" uses the crop's own pixel grid, i.e. model pixels
for a patch already resampled to the model size (pixel ``k`` covers ``[k, k + 1)``).

When no box is given the *nominal* box is used: the box that the default expansion protocol
(margin :data:`NOMINAL_MARGIN`) would have produced, centred in the crop. This is the right box
for every crop made by :func:`~segdiff_core.data.crops.prompt_crop` with that protocol.
"""
from __future__ import annotations

import numpy as np

from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import CropGeometry, CropProtocol

__all__ = ["NOMINAL_MARGIN", "nominal_box", "box_in_crop", "box_channel", "jittered_prompt"]

NOMINAL_MARGIN = CropProtocol.expansion().margin
"""Margin of the default expansion protocol; defines the fallback box (:func:`nominal_box`)."""


def nominal_box(shape: tuple[int, int], margin: float = NOMINAL_MARGIN) -> Box:
    """The box a crop of ``shape`` (h, w) holds when it is the box enlarged by ``margin``, centred."""
    h, w = float(shape[0]), float(shape[1])
    bh, bw = h / (1.0 + margin), w / (1.0 + margin)
    return Box((h - bh) / 2.0, (w - bw) / 2.0, (h + bh) / 2.0, (w + bw) / 2.0)


def box_in_crop(geometry: CropGeometry, box: Box) -> Box:
    """``box`` (image coordinates) expressed on the crop's model grid (pixel-edge units).

    The result may extend beyond the crop (a window smaller than the box); it is clipped when
    rasterised by :func:`box_channel`.
    """
    sy, sx = geometry.scale
    c = geometry.crop_box
    return Box((box.y0 - c.y0) / sy, (box.x0 - c.x0) / sx, (box.y1 - c.y0) / sy, (box.x1 - c.x0) / sx)


def _axis_coverage(lo: float, hi: float, n: int) -> np.ndarray:
    edges = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(edges + 1.0, hi) - np.maximum(edges, lo), 0.0, 1.0)


def box_channel(box: Box | None, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise ``box`` (crop pixel-edge coordinates) on an (h, w) grid -> float32 (h, w).

    Each pixel holds the fraction of its area inside the box (1 inside, 0 outside). ``None``
    stands for :func:`nominal_box`.
    """
    h, w = int(shape[0]), int(shape[1])
    b = nominal_box((h, w)) if box is None else box
    return np.outer(_axis_coverage(b.y0, b.y1, h), _axis_coverage(b.x0, b.x1, w)).astype(np.float32)


def jittered_prompt(
    box: Box, protocol: CropProtocol, rng: np.random.Generator | None, image_shape: tuple[int, ...] | None = None
) -> tuple[Box, Box]:
    """(drawn box, crop box) for a tight object ``box`` under a (random) crop ``protocol``.

    The drawn box is the tight box after the protocol's scale and shift jitter (a sloppy hand-drawn
    box); the crop is the drawn box enlarged by the protocol's (possibly random) margin. The random
    draws and the crop equal :meth:`CropProtocol.crop_box`'s for the same generator state.
    """
    jitter = CropProtocol(margin=0.0, shift=protocol.shift, scale_range=protocol.scale_range)
    drawn = jitter.crop_box(box, rng=rng, image_shape=image_shape)
    margin = protocol.margin
    if protocol.jitter_margin is not None:
        assert rng is not None
        margin = float(rng.uniform(*protocol.jitter_margin))
    crop = CropProtocol(margin=margin, square=protocol.square).crop_box(drawn)
    return drawn, crop
