"""The review queue's model (no Qt): one row per object, statuses, counts, features and CSV.

Sources of truth, in order:

1. the labels data: which objects exist, their bounding boxes and areas (read with
   :func:`scipy.ndimage.find_objects` and :func:`numpy.bincount`);
2. the :class:`~napari_segdiff._objects.ObjectTable` of the layer (live records of this
   session: score, status, model, settings, seed);
3. the layer's ``features`` (``index`` = label id): what a saved file brings back (the
   sidecar CSV of :mod:`napari_segdiff._writer`), used for ids without a live record.

Objects painted by hand have neither: they are rows with "no score", never hidden, never
dropped from exports.

Statuses: ``pending`` (committed, not reviewed), ``accepted``, ``rejected`` (deleted through
the review; an undo brings the object back as pending).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "STATUSES",
    "CSV_COLUMNS",
    "ReviewRow",
    "collect_rows",
    "sorted_for_review",
    "counts",
    "rows_to_frame",
    "frame_to_rows",
    "write_objects_csv",
    "read_objects_csv",
    "sidecar_path",
    "next_to_review",
]

STATUSES = ("pending", "accepted", "rejected")

CSV_COLUMNS = ("id", "slice", "y0", "x0", "y1", "x1", "area", "score", "status", "score_kind", "source",
               "model", "settings", "seed")
"""Columns of the per-object CSV (and, with ``index`` for ``id``, of the labels features)."""

SIDECAR_SUFFIX = ".objects.csv"


@dataclass(frozen=True)
class ReviewRow:
    """One object of a labels layer.

    Attributes:
        label_id: its label.
        slice: indices along the leading (non-displayed) axes of its first pixel (``()`` in 2D).
        box: ``(y0, x0, y1, x1)`` bounding box over the last two data axes (ends exclusive).
        area: pixel count (0 for a rejected object).
        score: quality score in ``[0, 1]`` (higher = more certain), None = no score.
        status: one of :data:`STATUSES`.
        score_kind, source, model, settings, seed: where the object came from ('hand' for
            objects painted by hand).
    """

    label_id: int
    slice: tuple[int, ...]
    box: tuple[int, int, int, int]
    area: int
    score: float | None = None
    status: str = "pending"
    score_kind: str = ""
    source: str = "hand"
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict, compare=False)
    seed: int | None = None

    @property
    def has_score(self) -> bool:
        return self.score is not None and math.isfinite(self.score)

    @property
    def centre(self) -> tuple[float, float]:
        """Centre of the box in data pixel coordinates of the last two axes."""
        y0, x0, y1, x1 = self.box
        return (y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0


def _record_status(rec: Any, present: bool) -> str:
    status = getattr(rec, "status", "pending")
    if status == "rejected" and present:
        return "pending"  # an undo brought it back
    return status if status in STATUSES else "pending"


def _from_record(label_id: int, rec: Any, where: tuple[tuple[int, ...], tuple[int, int, int, int]] | None,
                 area: int) -> ReviewRow:
    extra = dict(getattr(rec, "extra", {}) or {})
    if where is None:  # rejected: no pixels; keep the committed region as its box
        rows, cols = rec.region
        lead = tuple(i for _, i in getattr(rec.plane, "fixed", ()))
        where = (lead, (rows.start, cols.start, rows.stop, cols.stop))
    return ReviewRow(
        label_id, where[0], where[1], area, None if rec.score is None else float(rec.score),
        _record_status(rec, area > 0), extra.get("score_kind", "mean_probability"), rec.source,
        str(extra.get("model", "")), dict(extra.get("settings", {})), extra.get("seed"),
    )


def _from_features(label_id: int, feat: dict[str, Any], where: tuple[tuple[int, ...], tuple[int, int, int, int]], area: int) -> ReviewRow:
    score = feat.get("score")
    score = None if score is None or not math.isfinite(float(score)) else float(score)
    settings = feat.get("settings") or "{}"
    try:
        settings = json.loads(settings) if isinstance(settings, str) else dict(settings)
    except (ValueError, TypeError):
        settings = {}
    seed = feat.get("seed")
    seed = None if seed is None or (isinstance(seed, float) and not math.isfinite(seed)) else int(seed)
    status = str(feat.get("status") or "pending")
    return ReviewRow(label_id, where[0], where[1], area, score, status if status in STATUSES else "pending",
                     _text(feat.get("score_kind")), _text(feat.get("source")) or "hand", _text(feat.get("model")),
                     settings, seed)



def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return str(value)


def collect_rows(labels_data: Any, table: Any = None, features: pd.DataFrame | None = None) -> list[ReviewRow]:
    """Every object of ``labels_data`` (``(..., H, W)`` integers) as a :class:`ReviewRow`, plus
    the rejected objects of ``table`` (area 0), in label order.

    ``table``: an :class:`~napari_segdiff._objects.ObjectTable` (or None); ``features``: the
    layer's features (``index`` column = label id) for ids without a record.
    """
    data = np.asarray(labels_data)
    if data.ndim < 2 or not np.issubdtype(data.dtype, np.integer):
        return []
    slices = ndimage.find_objects(data) if data.size and data.max() > 0 else []
    areas = np.bincount(data.ravel()) if slices else np.zeros(1, np.int64)
    feats: dict[int, dict[str, Any]] = {}
    if features is not None and len(features) and "index" in features.columns:
        feats = {int(r["index"]): r for r in features.to_dict("records")}
    rows: list[ReviewRow] = []
    seen: set[int] = set()
    for k, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        where = (tuple(int(s.start) for s in sl[:-2]), (sl[-2].start, sl[-1].start, sl[-2].stop, sl[-1].stop))
        rec = table.get(k) if table is not None else None
        if rec is not None:
            rows.append(_from_record(k, rec, where, int(areas[k])))
        elif k in feats:
            rows.append(_from_features(k, feats[k], where, int(areas[k])))
        else:
            rows.append(ReviewRow(k, where[0], where[1], int(areas[k])))
        seen.add(k)
    for rec in (table or []):
        if rec.label_id not in seen and getattr(rec, "status", "") == "rejected":
            rows.append(_from_record(rec.label_id, rec, None, 0))
    return sorted(rows, key=lambda r: r.label_id)


def sorted_for_review(rows: list[ReviewRow]) -> list[ReviewRow]:
    """The queue: scored objects by score, least certain first; then objects without a score
    (painted by hand: shown, never hidden); rejected objects last."""
    def key(r: ReviewRow) -> tuple[int, float, int]:
        if r.status == "rejected":
            return (2, 0.0, r.label_id)
        return (0, float(r.score), r.label_id) if r.has_score else (1, 0.0, r.label_id)

    return sorted(rows, key=key)


def next_to_review(rows: list[ReviewRow], after: int | None = None) -> ReviewRow | None:
    """The first pending object of the sorted queue (after ``after``, wrapping around)."""
    queue = [r for r in sorted_for_review(rows) if r.status == "pending" and r.area > 0]
    if not queue:
        return None
    ids = [r.label_id for r in sorted_for_review(rows)]
    if after is not None and after in ids:
        pos = ids.index(after)
        later = [r for r in queue if ids.index(r.label_id) > pos]
        if later:
            return later[0]
    return queue[0]


def counts(rows: list[ReviewRow]) -> dict[str, int]:
    """Objects per status, plus ``'no score'`` (present objects without a score)."""
    out = {s: sum(r.status == s for r in rows) for s in STATUSES}
    out["no score"] = sum(not r.has_score and r.status != "rejected" for r in rows)
    return out


def rows_to_frame(rows: list[ReviewRow], id_column: str = "index") -> pd.DataFrame:
    """A DataFrame with the :data:`CSV_COLUMNS` (``id`` named ``id_column``; napari's labels
    features use ``index`` for the label value). Settings are a JSON string."""
    records = []
    for r in rows:
        records.append({
            "id": r.label_id, "slice": " ".join(map(str, r.slice)), "y0": r.box[0], "x0": r.box[1],
            "y1": r.box[2], "x1": r.box[3], "area": r.area, "score": r.score if r.has_score else np.nan,
            "status": r.status, "score_kind": r.score_kind or ("" if r.has_score else "no score"), "source": r.source,
            "model": r.model, "settings": json.dumps(r.settings, sort_keys=True) if r.settings else "",
            "seed": np.nan if r.seed is None else int(r.seed),
        })
    frame = pd.DataFrame.from_records(records, columns=list(CSV_COLUMNS))
    return frame.rename(columns={"id": id_column})


def frame_to_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV frame (``id`` column) as labels features (``index`` column), types restored."""
    out = frame.rename(columns={"id": "index"}).copy()
    for col in ("slice", "status", "score_kind", "source", "model", "settings"):
        if col in out.columns:
            out[col] = out[col].fillna("").astype(str)
    return out


def sidecar_path(labels_path: str | os.PathLike) -> Path:
    """The per-object CSV saved beside a labels file: ``cells.tif`` -> ``cells.objects.csv``."""
    p = Path(labels_path)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def write_objects_csv(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write a per-object CSV atomically (``index`` is written as ``id``)."""
    from segdiff_core.checkpoint import atomic_write

    frame = frame.rename(columns={"index": "id"})
    text = frame.to_csv(index=False, float_format="%.6g")
    return atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def read_objects_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a per-object CSV as labels features (``index`` column). Raises ValueError with a
    clear message for a file that is not one."""
    try:
        frame = pd.read_csv(path, keep_default_na=True, dtype={"slice": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"cannot read the per-object table {path}: {exc}") from exc
    if "id" not in frame.columns:
        raise ValueError(f"{path} is not a per-object table (no 'id' column)")
    return frame_to_rows(frame)
