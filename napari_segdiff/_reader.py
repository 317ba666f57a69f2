"""Reading back labels saved by the plugin's writer together with their per-object table.

``cells.tif`` + ``cells.objects.csv`` (written by :func:`napari_segdiff._writer.write_labels_tiff`
when the layer had per-object features) open as ONE Labels layer whose ``features`` hold the
scores and review statuses again. A TIFF without that sidecar is left to other readers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import tifffile
from napari.utils.notifications import show_warning

from napari_segdiff._review_model import read_objects_csv, sidecar_path

__all__ = ["get_reader", "read_labels_with_objects"]

TIFF_EXTENSIONS = (".tif", ".tiff")


def get_reader(path: str | list[str]) -> Callable[[Any], list] | None:
    """napari reader contribution: a reader for a labels TIFF that has a ``.objects.csv``
    sidecar, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.suffix.lower() not in TIFF_EXTENSIONS or not sidecar_path(p).is_file():
        return None
    return read_labels_with_objects


def read_labels_with_objects(path: str | list[str]) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """``[(labels, {"name", "features"}, "labels")]``; a sidecar that cannot be read is
    reported and the labels open without features (nothing is lost from the TIFF)."""
    p = Path(path[0] if isinstance(path, list) else path)
    data = tifffile.imread(p)
    meta: dict[str, Any] = {"name": p.stem}
    try:
        features = read_objects_csv(sidecar_path(p))
    except ValueError as exc:
        show_warning(f"SegDiff: {exc}; the labels were opened without their scores")
    else:
        meta["features"] = features
    return [(np.asarray(data), meta, "labels")]
