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
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import ndimage

from napari_segdiff._settings import MODEL_THRESHOLD, resolve_threshold

log = logging.getLogger(__name__)

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
    "link_saved_boxes",
    "read_objects_csv",
    "sidecar_path",
    "next_to_review",
    "ReviewSession",
    "remember_commit",
    "probability_store",
    "redo_settings",
    "annotator_model",
    "score_colour",
    "box_edge_colours",
]

STATUSES = ("pending", "accepted", "rejected")

CSV_COLUMNS = ("id", "slice", "y0", "x0", "y1", "x1", "area", "score", "status", "score_kind", "source",
               "model", "settings", "seed", "box_y0", "box_x0", "box_y1", "box_x1")
"""Columns of the per-object CSV (and, with ``index`` for ``id``, of the labels features).
``box_*``: the prompt box the object was made from, in plane pixel coordinates of the labels
(ends exclusive; empty for objects without a box). A reopened boxes layer is linked to its
objects through them (:func:`link_saved_boxes`); files written before they existed open
without links."""

PROMPT_COLUMNS = ("box_y0", "box_x0", "box_y1", "box_x1")

BOX_TOLERANCE = 0.05
"""Pixels a reopened box may differ from its saved prompt box (float rounding of the files)."""

SIDECAR_SUFFIX = ".objects.csv"


@dataclass(frozen=True)
class ReviewRow:
    """One object of a labels layer.

    Attributes
    ----------
    label_id
        its label.
    slice
        indices along the leading (non-displayed) axes of its first pixel (``()`` in 2D).
    box
        ``(y0, x0, y1, x1)`` bounding box over the last two data axes (ends exclusive).
    area
        pixel count (0 for a rejected object).
    score
        quality score in ``[0, 1]`` (higher = more certain), None = no score.
    status
        one of :data:`STATUSES`.
    score_kind, source, model, settings, seed
        where the object came from ('hand' for
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
    prompt: tuple[float, float, float, float] | None = None

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
        None if rec.box is None else (float(rec.box.y0), float(rec.box.x0), float(rec.box.y1), float(rec.box.x1)),
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
                     settings, seed, _saved_prompt(feat))


def _saved_prompt(feat: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """The ``box_*`` columns of a features row (None: absent, empty, or an old file)."""
    try:
        values = tuple(float(feat[c]) for c in PROMPT_COLUMNS)
    except (KeyError, TypeError, ValueError):
        return None
    return values if all(math.isfinite(v) for v in values) else None



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
            **dict(zip(PROMPT_COLUMNS, r.prompt if r.prompt is not None else (np.nan,) * 4)),
        })
    frame = pd.DataFrame.from_records(records, columns=list(CSV_COLUMNS))
    return frame.rename(columns={"id": id_column})


def objects_frame(labels_data: Any, table: Any = None, features: pd.DataFrame | None = None) -> pd.DataFrame:
    """The per-object table of a labels layer as labels features (``index`` = label id, label
    order): every object of ``labels_data`` and the rejected ones of ``table`` (see
    :func:`collect_rows`). What the review panel keeps in ``labels.features`` and what the
    labels writer saves beside the TIFF."""
    return rows_to_frame(collect_rows(labels_data, table, features))


def frame_to_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV frame (``id`` column) as labels features (``index`` column), types restored."""
    out = frame.rename(columns={"id": "index"}).copy()
    for col in ("slice", "status", "score_kind", "source", "model", "settings"):
        if col in out.columns:
            out[col] = out[col].fillna("").astype(str)
    return out


def link_saved_boxes(table: Any, features: pd.DataFrame | None, boxes: list[tuple[Any, Any, Any]]) -> int:
    """Link reopened boxes to the saved objects made from them.

    ``features``: a reopened labels layer's features (``index`` = label id, :data:`PROMPT_COLUMNS`
    as written by the labels writer); ``boxes``: ``(box_key, Box, PlaneSpec)`` of each box of a
    boxes layer, in plane pixel coordinates of the labels. Every saved object without a record
    in ``table`` (an :class:`~napari_segdiff._objects.ObjectTable`) whose prompt box matches one
    of ``boxes`` (same slice, corners within :data:`BOX_TOLERANCE`) gets a record again, with the
    saved score, status and provenance, so its box counts as segmented (or rejected). Objects
    whose box is not among ``boxes``, and files without the prompt columns, stay unlinked.
    Returns the number of records added."""
    from napari_segdiff._objects import ObjectRecord

    if (features is None or not len(features) or "index" not in features.columns
            or not set(PROMPT_COLUMNS) <= set(features.columns) or not boxes):
        return 0
    records = []
    for feat in features.to_dict("records"):
        label_id, prompt = int(feat["index"]), _saved_prompt(feat)
        if prompt is None or table.get(label_id) is not None:
            continue
        lead = tuple(int(v) for v in str(feat.get("slice") or "").split())
        match = next((b for b in boxes if tuple(i for _, i in b[2].fixed) == lead and np.allclose(
            (b[1].y0, b[1].x0, b[1].y1, b[1].x1), prompt, rtol=0.0, atol=BOX_TOLERANCE)), None)
        if match is None:
            continue
        row = _from_features(label_id, feat, (lead, (0, 0, 0, 0)), 0)
        region = (slice(int(feat["y0"]), int(feat["y1"])), slice(int(feat["x0"]), int(feat["x1"])))
        extra = {"model": row.model, "settings": row.settings, "seed": row.seed, "score_kind": row.score_kind}
        records.append(ObjectRecord(label_id, match[2], region, match[0], match[1], row.score, row.status,
                                    row.source if row.source != "hand" else "box", extra=extra))
    table.add(records)
    return len(records)


def sidecar_path(labels_path: str | os.PathLike) -> Path:
    """The per-object CSV saved beside a labels file: ``cells.tif`` -> ``cells.objects.csv``."""
    p = Path(labels_path)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def write_objects_csv(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write a per-object CSV atomically (``index`` is written as ``id``)."""
    from segdiff_core.checkpoint import atomic_write

    frame = frame.rename(columns={"index": "id"})
    text = frame.to_csv(index=False, float_format="%.6g")
    return atomic_write(Path(path), text)


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


# --------------------------------------------------------------------------------------------
# the annotator's hook: keep score, provenance and probability of each committed object
# --------------------------------------------------------------------------------------------

META_PROBABILITIES = "segdiff_probabilities"
"""Key of the :class:`~segdiff_core.rethreshold.ProbabilityStore` in ``labels.metadata``."""

PROBABILITY_BUDGET = 256 * 2**20
"""Bytes of stored probability crops per labels layer (oldest objects are dropped first)."""


def probability_store(labels: Any) -> Any:
    """The :class:`~segdiff_core.rethreshold.ProbabilityStore` of a labels layer (created on
    first use, kept in ``labels.metadata`` beside the object table)."""
    from segdiff_core.rethreshold import ProbabilityStore

    store = labels.metadata.get(META_PROBABILITIES)
    if not isinstance(store, ProbabilityStore):
        store = ProbabilityStore(PROBABILITY_BUDGET)
        labels.metadata[META_PROBABILITIES] = store
    return store


def remember_commit(labels: Any, records: list[Any], written: list[tuple[int, np.ndarray, np.ndarray]],
                    result: Any, request: Any) -> None:
    """Called by the annotator for every committed box: give each new
    :class:`~napari_segdiff._objects.ObjectRecord` the box's quality score (from the engine,
    :mod:`segdiff_core.scoring`), status ``pending``, model, settings and seed, and store its
    probability crop for re-thresholding (:mod:`segdiff_core.rethreshold`)."""
    from segdiff_core.rethreshold import StoredObject

    settings = request.settings
    details = {
        "model": Path(request.model_path).name, "seed": int(request.seed),
        "settings": {**{k: settings_value(getattr(settings, k)) for k in (
            "protocol", "margin", "sampler", "steps", "generations", "largest_object_only", "overwrite")},
            "threshold": float(result.threshold)},  # the value the mask was cut at ("model default" resolved)
    }
    store = probability_store(labels)
    rows, cols = result.region
    pixels = {label_id: (rr, cc) for label_id, rr, cc in written}
    for rec in records:
        if result.score is not None and not result.split:
            rec.score = float(result.score)
        rec.status = "pending"
        rec.extra.update(details, score_kind=result.score_kind if result.score is not None else "mean_probability")
        if result.split:  # windows mode: one probability for many objects; not re-thresholdable
            continue
        rr, cc = pixels.get(rec.label_id, (np.empty(0, int), np.empty(0, int)))
        mask = np.zeros(np.shape(result.probability), bool)
        mask[rr - rows.start, cc - cols.start] = True
        store.add(StoredObject.from_commit(rec.label_id, rec.plane, result.region, result.probability, mask,
                                           result.threshold, settings.largest_object_only and not result.split))


def settings_value(value: Any) -> Any:
    """A JSON-safe settings value."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------------------------
# the review session: what the panel does to a viewer and a labels layer (no Qt)
# --------------------------------------------------------------------------------------------


class ReviewSession:
    """The review of one labels layer in a viewer; the Review dock widget is a thin view.

    Every change to objects goes through the labels layer (``data_setitem`` in
    ``block_history``: one undo step per action) and the layer's
    :class:`~napari_segdiff._objects.ObjectTable`; :meth:`sync_features` writes the rows into
    ``labels.features`` (``index`` = label id), which napari's save keeps through the sidecar
    CSV of :func:`napari_segdiff._writer.write_labels_tiff`.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.labels: Any = None

    # -- reading ---------------------------------------------------------------------------

    def table(self) -> Any:
        from napari_segdiff._objects import ObjectTable

        return ObjectTable.of(self.labels) if self.labels is not None else None

    def rows(self) -> list[ReviewRow]:
        """The queue, sorted for review (see :func:`sorted_for_review`)."""
        if self.labels is None:
            return []
        features = self.labels.features if len(self.labels.features) else None
        return sorted_for_review(collect_rows(self.labels.data, self.table(), features))

    def row(self, label_id: int) -> ReviewRow | None:
        return next((r for r in self.rows() if r.label_id == int(label_id)), None)

    def sync_features(self) -> pd.DataFrame:
        """Write every row (label order) into ``labels.features``; returns the frame."""
        if self.labels is None:
            return rows_to_frame([])
        features = self.labels.features if len(self.labels.features) else None
        frame = objects_frame(self.labels.data, self.table(), features)
        self.labels.features = frame
        return frame

    # -- actions ---------------------------------------------------------------------------

    def set_status(self, label_id: int, status: str) -> None:
        """Record a review decision (a live record, else the layer's features row)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        table = self.table()
        if table is not None and table.get(label_id) is not None:
            table.update(label_id, status=status)
        else:
            frame = self.sync_features()
            frame.loc[frame["index"] == int(label_id), "status"] = status
            self.labels.features = frame
        self.sync_features()

    def accept(self, label_id: int) -> None:
        self.set_status(label_id, "accepted")

    def reject(self, label_id: int) -> int:
        """Delete the object from the labels (one undo step) and mark it rejected; returns the
        number of pixels cleared."""
        labels = self.labels
        row = self.row(label_id)
        if labels is None or row is None or row.area == 0:
            return 0
        y0, x0, y1, x1 = row.box
        lead = tuple(slice(None) for _ in row.slice)
        crop = np.asarray(labels.data[(*lead, slice(y0, y1), slice(x0, x1))])
        idx = np.nonzero(crop == row.label_id)
        offsets = [0] * len(row.slice) + [y0, x0]
        index = tuple(i + o for i, o in zip(idx, offsets))
        with labels.block_history():
            labels.data_setitem(index, 0)
        self.set_status(label_id, "rejected")
        return int(idx[0].size)

    def focus(self, label_id: int, fill: float = 0.4) -> bool:
        """Centre the camera on an object, zoom so its box fills ``fill`` of the canvas, and on
        stacks move the sliders to its slice. Returns False for an unknown object."""
        row = self.row(label_id)
        if self.labels is None or row is None:
            return False
        labels = self.labels
        cy, cx = row.centre
        point = np.array([*row.slice, cy, cx], dtype=float)
        world = np.asarray(labels.data_to_world(point), dtype=float)
        y0, x0, y1, x1 = row.box
        corner0 = np.asarray(labels.data_to_world(np.array([*row.slice, y0 - 0.5, x0 - 0.5], float)))
        corner1 = np.asarray(labels.data_to_world(np.array([*row.slice, y1 - 0.5, x1 - 0.5], float)))
        extent = np.abs(corner1 - corner0)[-2:]
        offset = self.viewer.dims.ndim - len(world)
        for axis, value in enumerate(world[:-2]):
            self.viewer.dims.set_point(offset + axis, float(value))
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; viewer.camera before
        camera = scene.camera if scene is not None and hasattr(scene, "camera") else self.viewer.camera
        camera.center = tuple(world[-2:])
        canvas = np.asarray(getattr(self.viewer.canvas, "size", (600, 600)), dtype=float)
        canvas = np.where(canvas > 1, canvas, 600.0)
        camera.zoom = float(fill * np.min(canvas / np.maximum(extent, 1e-6)))
        return True

    def rethreshold(self, threshold: float, label_ids: list[int] | None = None,
                    annotator: Callable[[], Any] | None = None) -> tuple[int, list[str]]:
        """Re-commit stored objects (all, or ``label_ids``) at ``threshold`` from their stored
        probability, in ONE undo step. Returns ``(objects changed, messages)``; objects edited
        by hand, painted by hand or whose probability is not stored are left alone and named.

        ``threshold`` 0 is the annotator's *model default*: the threshold saved with the model
        chosen in the annotator (``annotator()`` returns the annotator dock widget), resolved by
        :func:`napari_segdiff._settings.resolve_threshold` as for a run."""
        from segdiff_core.rethreshold import plan_rethreshold

        labels = self.labels
        if labels is None:
            return 0, ["no labels layer to re-threshold"]
        if threshold == MODEL_THRESHOLD:
            segmenter = annotator_model(annotator()) if annotator is not None else None
            if segmenter is None:
                return 0, ["the model's default threshold is unknown (its file could not be loaded); "
                           "choose a threshold"]
            threshold = resolve_threshold(threshold, segmenter.inference)
        store = probability_store(labels)
        present = {r.label_id: r for r in self.rows() if r.area > 0}
        wanted = list(present) if label_ids is None else [int(i) for i in label_ids]
        objs = [o for o in store if o.label in wanted and o.label in present]
        stored = {o.label for o in objs}
        missing = [i for i in wanted if i in present and i not in stored]
        plan = plan_rethreshold(objs, labels.data, threshold, plane_of=lambda data, plane: plane.read(data))
        if plan.changed:
            with labels.block_history():
                for index, value in plan.writes(index_of=lambda plane, r, c: plane.indices(r, c)):
                    labels.data_setitem(index, value, refresh=False)
            labels.refresh()
            self.table().cover({c.obj.label: c.obj.region for c in plan.changed})  # they may have grown
        plan.commit(store)
        messages = list(plan.messages)
        if missing:
            messages.append(f"{len(missing)} object(s) have no stored probability (painted by hand, made in windows "
                            f"mode, from a saved file, or dropped to save memory) and were left as they are: "
                            + ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else ""))
        return len(plan.changed), messages

    def redo(self, label_id: int, what: str, annotator: Any) -> Any:
        """Sample an object's box again through ``annotator`` (the annotator dock widget):
        ``what='generations'`` doubles the ensemble, ``'margin'`` crops 10 % more around the
        box. The new object replaces the old one in one undo step; the annotator's own settings
        are left as they were. Returns the worker, or None (with a message) when impossible."""
        from napari.utils.notifications import show_warning

        from napari_segdiff._objects import box_key

        rec = self.table().get(label_id) if self.labels is not None else None
        if rec is None or rec.box_key is None:
            show_warning(f"SegDiff review: object {label_id} was not made from a box (painted by hand, or "
                         "from a saved file); draw a box around it and press Segment to sample it")
            return None
        prompts = next((lay for lay in self.viewer.layers if str(getattr(lay, "unique_id", "")) == rec.box_key[0]), None)
        index = None if prompts is None else next(
            (i for i, v in enumerate(prompts.data) if box_key(prompts.unique_id, v) == rec.box_key), None)
        if index is None:
            show_warning(f"SegDiff review: the box of object {label_id} was deleted; draw it again to redo it")
            return None
        controller = annotator.controller
        before = controller.settings
        if not controller.update_settings(**redo_settings(before, what, annotator_model(annotator))):
            return None
        controller.labels_layer = self.labels
        controller.prompts_layer = prompts
        prompts.selected_data = {index}
        try:
            return annotator.segment("newest")  # the request captures the changed settings
        finally:
            controller.settings = before

    def export_csv(self, path: str | os.PathLike) -> Path:
        """The per-object CSV (id, slice, box, area, score, status, ...), label order."""
        return write_objects_csv(path, self.sync_features())


UNCERTAIN_EDGE = np.array([1.0, 0.1, 0.6, 1.0])
"""Edge colour of a box whose object has score 0 (magenta); score 1 is the annotator's green."""


def score_colour(score: float | None) -> np.ndarray:
    """RGBA edge colour of a segmented box: magenta (score 0, review first) to the annotator's
    green (score 1); green when there is no score. Never the yellow of unsegmented boxes."""
    from napari_segdiff._layers import DONE_EDGE

    if score is None or not math.isfinite(score):
        return DONE_EDGE.copy()
    s = float(np.clip(score, 0.0, 1.0))
    return (1.0 - s) * UNCERTAIN_EDGE + s * DONE_EDGE


REJECTED_EDGE = np.array([0.55, 0.55, 0.55, 1.0])
"""Edge colour of a box whose object was rejected in the review (grey): Segment all leaves it."""


def box_edge_colours(objects: list[list[int]], table: Any, rejected: list[bool] | None = None) -> np.ndarray:
    """``(n_boxes, 4)`` edge colours: yellow for boxes without objects (``objects[i] == []``),
    :data:`REJECTED_EDGE` for those whose object was rejected (``rejected[i]``), else
    :func:`score_colour` of the lowest score of the box's objects."""
    from napari_segdiff._layers import PROMPT_EDGE

    out = np.tile(PROMPT_EDGE, (len(objects), 1))
    for i, ids in enumerate(objects):
        if not ids and rejected is not None and rejected[i]:
            out[i] = REJECTED_EDGE
        elif ids:
            recs = table.records_of(ids) if table is not None else []
            scores = [r.score for r in recs if r.score is not None and math.isfinite(r.score)]
            out[i] = score_colour(min(scores) if scores else None)
    return out


def annotator_model(annotator: Any) -> Any:
    """The :class:`~segdiff_core.segmenter.Segmenter` of the model chosen in ``annotator`` (the
    annotator dock widget; loaded through its cache), or None (logged) if it cannot be loaded."""
    controller = annotator.controller
    try:
        return controller.cache.get(controller.model_path(), controller.settings.device)
    except Exception:  # the annotator reports an unusable model itself when it runs
        log.warning("SegDiff review: could not load the model for its defaults", exc_info=True)
        return None


def redo_settings(settings: Any, what: str, segmenter: Any = None) -> dict[str, Any]:
    """Setting changes of a redo: ``'generations'`` doubles the ensemble (the model's default
    when the settings say 0), ``'margin'`` crops 10 % more around the box."""
    if what == "generations":
        current = settings.generations or (segmenter.inference.generations if segmenter is not None else 8)
        return {"generations": int(min(2 * current, 256))}
    if what == "margin":
        margin = {"tight": 0.0, "custom": settings.margin}.get(settings.protocol, 0.15)
        return {"protocol": "custom", "margin": round(margin + 0.10, 4)}
    raise ValueError(f"redo what must be 'generations' or 'margin', got {what!r}")
