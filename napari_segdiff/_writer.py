"""Writing annotations: labels as TIFF (the napari writer contribution), with their review sidecar.

The files themselves are written atomically by the core's writers (an interrupted save leaves the
earlier file whole): :func:`segdiff_core.data.readers.write_label_image` here, and
:func:`segdiff_core.data.readers.write_pair` for the image/mask training pairs of the annotate ->
fine-tune loop. No Qt."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from segdiff_core.data.readers import write_label_image

__all__ = ["write_labels_tiff", "PLACEMENT_KEY"]

TIFF_EXTENSIONS = (".tif", ".tiff")

PLACEMENT_KEY = "segdiff_placement"
"""Key of the layer's data -> world transform in the TIFF's JSON description (read back by
:mod:`napari_segdiff._reader`)."""

_PLACEMENT = ("scale", "translate", "rotate", "shear", "affine")


def _tiff_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.suffix.lower() not in TIFF_EXTENSIONS:
        p = p.with_name(p.name + ".tif")
    return p


def _placement(meta: dict) -> dict[str, Any]:
    """The layer's placement (scale, translate, rotate, shear, affine) from napari's layer
    state ``meta``, as JSON lists; keys napari did not pass are left out."""
    out: dict[str, Any] = {}
    for name in _PLACEMENT:
        value = meta.get(name)
        if value is None:
            continue
        value = getattr(value, "affine_matrix", value)  # an Affine object
        out[name] = np.asarray(value, dtype=float).tolist()
    return out


def _objects(arr: np.ndarray, meta: dict) -> Any:
    """The per-object table to save beside the labels (None: the layer has none): every object
    of the labels with the score and review status of the annotator's object table, else of
    the layer's ``features`` (a reopened file)."""
    from napari_segdiff._objects import META_OBJECTS, ObjectTable
    from napari_segdiff._review_model import objects_frame

    table = (meta.get("metadata") or {}).get(META_OBJECTS)
    table = table if isinstance(table, ObjectTable) and len(table) else None
    features = meta.get("features")
    if features is None or not len(features) or "index" not in getattr(features, "columns", ()):
        features = None
    if table is None and features is None:
        return None
    frame = objects_frame(arr, table, features)
    return frame if len(frame) else None


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """napari writer: save a Labels layer's data as a compressed TIFF of the smallest unsigned
    integer type (uint8/16/32) that holds its labels; any number of dimensions.

    ``meta`` is napari's layer state. The layer's placement (scale, translate, rotate, shear,
    affine) goes into the TIFF's description, so the reopened labels lie over the image again.
    When the layer has per-object records (the annotator's scores, the review's statuses) or
    ``features`` with an ``index`` column = label id, a table of every object is written beside
    it as ``<name>.objects.csv``. The plugin's reader restores both. Returns the written paths
    (``.tif`` is appended if the name has no TIFF extension). Raises
    :class:`segdiff_core.data.readers.LabelsWriteError` for non-integer or negative labels.
    """
    arr = np.asarray(data)
    out = _tiff_path(path)
    meta = meta if isinstance(meta, dict) else {}
    description: dict[str, Any] = {"axes": "YX" if arr.ndim == 2 else "ZYX"} if arr.ndim in (2, 3) else {}
    placement = _placement(meta)
    if placement:
        description[PLACEMENT_KEY] = placement
    write_label_image(out, arr, metadata=description)
    written = [str(out)]
    frame = _objects(arr, meta) if np.issubdtype(arr.dtype, np.integer) else None
    if frame is not None:
        from napari_segdiff._review_model import sidecar_path, write_objects_csv

        written.append(str(write_objects_csv(sidecar_path(out), frame)))  # read back by _reader
    return written
