"""Writing annotations: labels as TIFF (also the napari writer contribution) and image/mask
training pairs for the annotate -> fine-tune loop. No Qt."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

__all__ = ["LabelsWriteError", "labels_dtype", "write_labels_tiff", "export_training_pair"]

TIFF_EXTENSIONS = (".tif", ".tiff")


class LabelsWriteError(ValueError):
    """Labels that cannot be stored as an instance label image."""


def labels_dtype(data: np.ndarray) -> np.dtype:
    """The smallest unsigned integer dtype that holds every label of ``data``.

    Raises :class:`LabelsWriteError` for negative or non-integer labels.
    """
    arr = np.asarray(data)
    if arr.dtype == bool:
        return np.dtype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise LabelsWriteError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.size == 0:
        return np.dtype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise LabelsWriteError(f"labels must be >= 0 (0 = background), found {lo}")
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if hi <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise LabelsWriteError(f"label {hi} is too large")  # pragma: no cover - int64 max fits uint64


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
    extension). Raises :class:`LabelsWriteError` for non-integer or negative labels.
    """
    arr = np.asarray(data)
    out = _tiff_path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dtype = labels_dtype(arr)
    axes = "YX" if arr.ndim == 2 else ("ZYX" if arr.ndim == 3 else None)
    metadata = {"axes": axes} if axes else {}
    tifffile.imwrite(
        out, arr.astype(dtype, copy=False), photometric="minisblack", compression="zlib", metadata=metadata
    )
    written = [str(out)]
    features = meta.get("features") if isinstance(meta, dict) else None
    if features is not None and len(features) and "index" in getattr(features, "columns", ()):
        from napari_segdiff._review_model import sidecar_path, write_objects_csv

        written.append(str(write_objects_csv(sidecar_path(out), features)))  # read back by _reader
    return written


def export_training_pair(root: Path, name: str, image: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    """Write ``root/images/<name>.tif`` (the 2D image, dtype kept; (H, W) or (H, W, C)) and
    ``root/masks/<name>.tif`` (its (H, W) instance labels, 0 = background).

    Existing files of the same name are replaced (re-exporting a slice updates it).
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise LabelsWriteError(f"training masks must be 2D (H, W), got shape {lab.shape}")
    if img.shape[:2] != lab.shape:
        raise LabelsWriteError(f"image {img.shape} and labels {lab.shape} differ in size")
    if not name or any(sep in name for sep in ("/", "\\")) or name in (".", ".."):
        raise LabelsWriteError(f"invalid file name {name!r}")
    img_path = root / "images" / f"{name}.tif"
    mask_path = root / "masks" / f"{name}.tif"
    img_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    rgb = img.ndim == 3 and img.shape[2] in (3, 4) and img.dtype == np.uint8
    tifffile.imwrite(img_path, img, photometric="rgb" if rgb else "minisblack", compression="zlib")
    tifffile.imwrite(
        mask_path, lab.astype(labels_dtype(lab), copy=False), photometric="minisblack", compression="zlib"
    )
    return img_path, mask_path
