"""Reading back labels saved by the plugin's writer, with their placement and per-object table.

``cells.tif`` (written by :func:`napari_segdiff._writer.write_labels_tiff`) opens as ONE Labels
layer placed where it was saved (scale, translate, rotate, shear, affine from the TIFF's
description), and, with its ``cells.objects.csv`` sidecar, with ``features`` that hold the scores
and review statuses again. A TIFF written by anything else, without that sidecar, is left to
other readers.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tifffile
from napari.utils.notifications import show_warning

from napari_segdiff._review_model import read_objects_csv, sidecar_path
from napari_segdiff._writer import PLACEMENT_KEY

__all__ = ["get_reader", "read_labels_with_objects"]

log = logging.getLogger(__name__)

TIFF_EXTENSIONS = (".tif", ".tiff")


def _placement(path: Path) -> dict[str, Any] | None:
    """The placement the plugin's writer stored in the TIFF (None: not written by it, or not
    readable as a TIFF)."""
    try:
        with tifffile.TiffFile(path) as tif:
            described = tif.shaped_metadata
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        log.debug("SegDiff: %s is not a readable TIFF: %s", path, exc)
        return None
    value = (described[0] if described else {}).get(PLACEMENT_KEY)
    return value if isinstance(value, dict) else None


def get_reader(path: str | list[str]) -> Callable[[Any], list] | None:
    """napari reader contribution: a reader for a labels TIFF written by the plugin (its
    placement in the description) or with a ``.objects.csv`` sidecar, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.suffix.lower() not in TIFF_EXTENSIONS:
        return None
    if not sidecar_path(p).is_file() and _placement(p) is None:
        return None
    return read_labels_with_objects


def read_labels_with_objects(path: str | list[str]) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """``[(labels, {"name", placement, "features"}, "labels")]``; a sidecar that cannot be read
    is reported and the labels open without features (nothing is lost from the TIFF)."""
    p = Path(path[0] if isinstance(path, list) else path)
    data = tifffile.imread(p)
    meta: dict[str, Any] = {"name": p.stem}
    for name, value in (_placement(p) or {}).items():
        if name in ("scale", "translate", "rotate", "shear", "affine"):
            meta[name] = np.asarray(value, dtype=float)
    if sidecar_path(p).is_file():
        try:
            features = read_objects_csv(sidecar_path(p))
        except ValueError as exc:
            show_warning(f"SegDiff: {exc}; the labels were opened without their scores")
        else:
            meta["features"] = features
    return [(np.asarray(data), meta, "labels")]
