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

__all__ = ["write_labels_tiff"]

TIFF_EXTENSIONS = (".tif", ".tiff")


def _tiff_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.suffix.lower() not in TIFF_EXTENSIONS:
        p = p.with_name(p.name + ".tif")
    return p


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """napari writer: save a Labels layer's data as a compressed TIFF of the smallest unsigned
    integer type (uint8/16/32) that holds its labels; any number of dimensions.

    When the layer has per-object ``features`` (an ``index`` column = label id: scores and
    review statuses), they are written beside it as ``<name>.objects.csv``, which the plugin's
    reader restores. Returns the written paths (``.tif`` is appended if the name has no TIFF
    extension). Raises :class:`segdiff_core.data.readers.LabelsWriteError` for non-integer or
    negative labels.
    """
    arr = np.asarray(data)
    out = _tiff_path(path)
    axes = "YX" if arr.ndim == 2 else ("ZYX" if arr.ndim == 3 else None)
    write_label_image(out, arr, metadata={"axes": axes} if axes else {})
    written = [str(out)]
    features = meta.get("features") if isinstance(meta, dict) else None
    if features is not None and len(features) and "index" in getattr(features, "columns", ()):
        from napari_segdiff._review_model import sidecar_path, write_objects_csv

        written.append(str(write_objects_csv(sidecar_path(out), features)))  # read back by _reader
    return written
