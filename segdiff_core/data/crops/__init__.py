"""From a box prompt to a model input and back (SegDiff paper, section 5).

One implementation shared by training, evaluation and the napari plugin, so that a model sees
crops made the same way everywhere and its output lands exactly where the box was.

* :mod:`~segdiff_core.data.crops.protocols`: how a box becomes a crop box
  (:class:`CropProtocol`: ``tight``, ``expansion`` with margin 0.15, training jitter).
* :mod:`~segdiff_core.data.crops.geometry`: :class:`CropGeometry`, image -> model grid
  (:func:`crop_to_model`, :func:`prompt_crop`, :func:`crop_like`, :func:`crop_whole_image`)
  and back (:func:`paste_back`), resampled with ``scipy.ndimage``.
* :mod:`~segdiff_core.data.crops.windows`: the MoNuSeg protocol's :class:`WindowGrid` and
  :func:`stitch`.

The Vaihingen protocol's :func:`central_object` is in :mod:`segdiff_core.data.readers.objects`
(still importable from here).
"""
from segdiff_core.data.crops import geometry, protocols, windows
from segdiff_core.data.crops.geometry import *  # noqa: F401,F403
from segdiff_core.data.crops.protocols import *  # noqa: F401,F403
from segdiff_core.data.crops.windows import *  # noqa: F401,F403
from segdiff_core.data.readers.objects import NoObjectError, central_object

__all__ = [*protocols.__all__, *geometry.__all__, *windows.__all__, "central_object",
           "NoObjectError"]
