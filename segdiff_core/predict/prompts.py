"""Box prompts for ``segdiff-predict``: from a napari Shapes CSV or from a label image.

napari's Shapes CSV has one row per vertex with the columns ``index, shape-type,
vertex-index, axis-0, axis-1[, ...]`` (the last two axes are the image rows and columns).
napari places pixel centres on integers and :class:`~segdiff_core.data.boxes.Box` places
pixel edges there, so each shape's vertex extent moves by +0.5 (as in the plugin).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from segdiff_core.data.boxes import Box, BoxError

__all__ = ["PromptError", "SHAPES_COLUMNS", "boxes_from_csv", "boxes_from_label_source", "check_boxes"]

SHAPES_COLUMNS: tuple[str, ...] = ("index", "axis-0", "axis-1")
"""Columns a Shapes CSV must have (``shape-type`` and ``vertex-index`` are optional)."""


class PromptError(ValueError):
    """Prompts that cannot be used (bad CSV, boxes outside the image, label image of the wrong shape)."""


def _axis_columns(header: list[str]) -> list[str]:
    axes = sorted((c for c in header if c.startswith("axis-")), key=lambda c: int(c[5:]) if c[5:].isdigit() else -1)
    return axes[-2:]


def boxes_from_csv(path: str | os.PathLike) -> list[Box]:
    """Read one box per shape ``index`` from a napari Shapes CSV (rows = vertices).

    Raises :class:`PromptError` naming the file, line and problem for missing columns,
    non-numeric or non-finite values and degenerate (zero-area) shapes.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's "CSV UTF-8" starts with a BOM
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"prompt CSV {path} cannot be read ({exc})") from exc
    if not rows:
        raise PromptError(f"prompt CSV {path} is empty; expected napari Shapes columns {', '.join(SHAPES_COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in SHAPES_COLUMNS if c not in header]
    if missing:
        raise PromptError(
            f"prompt CSV {path} lacks the column(s) {', '.join(missing)}; a napari Shapes CSV has "
            f"'index, shape-type, vertex-index, axis-0, axis-1' (found: {', '.join(header)})"
        )
    cols = [header.index("index")] + [header.index(c) for c in _axis_columns(header)]
    vertices: dict[int, list[tuple[float, float]]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        idx, y, x = _parse_row(path, line, row, cols)
        vertices.setdefault(idx, []).append((y + 0.5, x + 0.5))
    boxes = []
    for idx, pts in vertices.items():
        try:
            boxes.append(Box.from_corners(np.asarray(pts)))
        except BoxError as exc:
            raise PromptError(f"prompt CSV {path}: shape {idx}: {exc}") from exc
    if not boxes:
        raise PromptError(f"prompt CSV {path} has a header but no shapes")
    return boxes


def _parse_row(path: Path, line: int, row: list[str], cols: list[int]) -> tuple[int, float, float]:
    if len(row) <= max(cols):
        raise PromptError(f"prompt CSV {path}, line {line}: expected {max(cols) + 1} values, got {len(row)}")
    try:
        vals = [float(row[c]) for c in cols]
    except ValueError as exc:
        raise PromptError(f"prompt CSV {path}, line {line}: non-numeric value ({exc})") from exc
    if not all(np.isfinite(vals)):
        raise PromptError(f"prompt CSV {path}, line {line}: non-finite value in {row}")
    return int(vals[0]), vals[1], vals[2]


def check_boxes(boxes: list[Box], shape: tuple[int, int], source: Any) -> list[Box]:
    """Raise :class:`PromptError` listing boxes that lie entirely outside an image of ``shape``.

    Boxes that overlap the image only in part are kept (the crop pads outside the image).
    """
    outside = [i for i, b in enumerate(boxes) if not b.intersects(shape)]
    if outside:
        first = boxes[outside[0]].as_tuple()
        raise PromptError(
            f"{source}: {len(outside)} of {len(boxes)} boxes lie outside the image of shape "
            f"{tuple(shape)} (first: shape {outside[0]}, (y0, x0, y1, x1) = {first}); were the "
            "prompts drawn on another image?"
        )
    return boxes


def boxes_from_label_source(labels: Any, shape: tuple[int, int], block: int = 2048) -> list[Box]:
    """One tight box per label of a label image of the image's ``shape``, read block by block.

    ``labels`` is an :class:`~segdiff_core.predict.io.ImageSource` (so a label image larger
    than memory works): the extents of each label are merged over the blocks. Raises
    :class:`PromptError` for a label image of another shape, a non-integer or negative one, or
    one without labels.
    """
    from scipy import ndimage

    if labels.shape != tuple(shape) or labels.channels != 1:
        raise PromptError(
            f"{labels.path}: label image of shape {tuple(labels.array.shape)} does not match the "
            f"image shape {tuple(shape)}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise PromptError(f"{labels.path}: label image must hold integers, got dtype {labels.dtype}")
    ext: dict[int, list[int]] = {}
    for r0 in range(0, shape[0], block):
        for c0 in range(0, shape[1], block):
            tile = labels.read(slice(r0, r0 + block), slice(c0, c0 + block))
            if tile.min(initial=0) < 0:
                raise PromptError(f"{labels.path}: label image has negative labels")
            for lab, sl in enumerate(ndimage.find_objects(tile.astype(np.int64, copy=False)), start=1):
                if sl is None:
                    continue
                e = [sl[0].start + r0, sl[1].start + c0, sl[0].stop + r0, sl[1].stop + c0]
                old = ext.setdefault(lab, e)
                ext[lab] = [min(old[0], e[0]), min(old[1], e[1]), max(old[2], e[2]), max(old[3], e[3])]
    if not ext:
        raise PromptError(f"{labels.path}: label image has no labels (all 0)")
    return [Box(*(float(v) for v in ext[k])) for k in sorted(ext)]
