"""The object table: the one owner of per-object records (no Qt, no napari imports).

Every object the annotator (or another tool of this plugin) writes into a Labels layer gets one
:class:`ObjectRecord`: its label id, the plane it lies on, the pixel region it was written to,
the box prompt it came from (if any), a score and a status. The records live in an
:class:`ObjectTable` stored on the Labels layer itself (``labels.metadata["segdiff_objects"]``),
so every widget working on the same Labels layer sees the same table::

    from napari_segdiff._objects import ObjectTable
    table = ObjectTable.of(labels_layer)          # created on first use
    for rec in table.alive(labels_layer.data):    # objects still present in the labels
        rec.label_id, rec.plane, rec.region, rec.box, rec.score, rec.status

How the table stays true through undo/redo and hand edits
    Whether an object *exists* is never stored: it is read from the labels data (``alive``:
    some pixel of its region still carries its id). Undo of a commit therefore removes the
    object and frees its box; redo brings both back. Label ids are never handed out twice
    (:meth:`ObjectTable.next_id` keeps a high-water mark), so an undone id cannot be reused by a
    new object and a later "redo this box" can never erase another object.

How boxes are matched to objects
    A box prompt is identified by :func:`box_key`: the Shapes layer's unique id and its
    vertices (rounded). Nothing is stored in the Shapes layer's ``features`` (napari resets
    feature defaults from the last row, which made every new box look segmented).
    The keys live in memory only; the labels writer saves each object's prompt box
    (:attr:`ObjectRecord.box`) in its ``.objects.csv``, and when the annotator is given a
    reopened labels layer and boxes layer, records are re-created for the boxes that match
    (:func:`napari_segdiff._review_model.link_saved_boxes`).

Extending it (review, batch prediction, "find all objects")
    Add records with :meth:`ObjectTable.add` (``source="auto"`` and ``box_key=None`` for objects
    found without a prompt), set ``score``/``status`` with :meth:`ObjectTable.update`, put extra
    per-object values into ``record.extra``; listen to :attr:`ObjectTable.changed`;
    :meth:`ObjectTable.to_frame` gives a ``pandas.DataFrame`` (one row per record) e.g. for
    ``labels.features``. Ids come from :meth:`ObjectTable.next_id` only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
from psygnal import Signal

from segdiff_core.data.boxes import Box

__all__ = ["META_OBJECTS", "ObjectRecord", "ObjectTable", "box_key", "region_of"]

META_OBJECTS = "segdiff_objects"

Region = tuple[slice, slice]
BoxKey = tuple[str, bytes]


def box_key(layer_id: str, vertices: np.ndarray) -> BoxKey:
    """Identity of a box prompt: the Shapes layer's unique id and its vertices (1e-3 rounding)."""
    verts = np.round(np.asarray(vertices, dtype=np.float64), 3) + 0.0  # -0.0 -> 0.0
    return (str(layer_id), verts.tobytes())


def region_of(rows: np.ndarray, cols: np.ndarray) -> Region:
    """Bounding slices of pixel coordinates (non-empty arrays)."""
    return (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))


@dataclass
class ObjectRecord:
    """One object written to a Labels layer.

    Attributes
    ----------
    label_id : int
        Its id in the labels data (never reused within one table).
    plane : object
        Where it lies: a :class:`napari_segdiff._geometry.PlaneSpec` (``plane.region_key``
        indexes the labels array).
    region : tuple of slice
        ``(rows, cols)`` of the plane covering the pixels written for it.
    box_key : tuple or None
        :func:`box_key` of the prompt that produced it (None: found without a prompt).
    box : Box or None
        That prompt in plane pixel coordinates.
    score : float or None
        A quality score (e.g. mean probability over the object, or a review score).
    status : str
        ``"new"`` when committed; other tools may set e.g. ``"accepted"``/``"rejected"``.
    source : str
        ``"box"`` (a prompt), ``"auto"`` (found without one), ...
    replaces : tuple of int
        Ids this object replaced (redoing a box).
    extra : dict
        Free-form values of other tools.
    """

    label_id: int
    plane: Any
    region: Region
    box_key: BoxKey | None = None
    box: Box | None = None
    score: float | None = None
    status: str = "new"
    source: str = "box"
    replaces: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def present_in(self, labels_data: Any) -> bool:
        """True if some pixel of :attr:`region` still carries :attr:`label_id` (reads only the
        region, so this is cheap on huge or lazy arrays)."""
        crop = np.asarray(labels_data[self.plane.region_key(self.region)])
        return bool(np.any(crop == self.label_id))


class ObjectTable:
    """Records of the objects of one Labels layer; see the module docstring."""

    #: emitted (without arguments) after records were added, updated or removed
    changed = Signal()

    def __init__(self) -> None:
        self._records: dict[int, ObjectRecord] = {}
        self._high = 0

    @classmethod
    def of(cls, labels: Any) -> "ObjectTable":
        """The table stored on ``labels`` (anything with a ``metadata`` dict), created if needed."""
        meta = labels.metadata
        table = meta.get(META_OBJECTS)
        if not isinstance(table, ObjectTable):
            table = cls()
            meta[META_OBJECTS] = table
        return table

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[ObjectRecord]:
        return iter(list(self._records.values()))

    def get(self, label_id: int) -> ObjectRecord | None:
        return self._records.get(int(label_id))

    def records_of(self, label_ids: Iterable[int]) -> list[ObjectRecord]:
        """The records of ``label_ids`` (unknown ids are skipped)."""
        return [self._records[int(i)] for i in label_ids if int(i) in self._records]

    def next_id(self, labels_max: int) -> int:
        """The next unused id: above the labels' maximum and above every id handed out."""
        return max(int(labels_max), self._high) + 1

    def add(self, records: Iterable[ObjectRecord]) -> None:
        """Add (or overwrite) records; ids must not have been handed out to another object."""
        added = False
        for rec in records:
            self._records[int(rec.label_id)] = rec
            self._high = max(self._high, int(rec.label_id))
            added = True
        if added:
            self.changed.emit()

    def update(self, label_id: int, **changes: Any) -> ObjectRecord:
        """Change fields of a record (e.g. ``score=0.8, status="accepted"``)."""
        rec = self._records[int(label_id)]
        new = dataclasses.replace(rec, **changes)
        self._records[int(label_id)] = new
        self.changed.emit()
        return new

    def reserve(self, label_id: int) -> None:
        """Mark ``label_id`` as handed out (e.g. an id written without a record)."""
        self._high = max(self._high, int(label_id))

    def alive(self, labels_data: Any) -> list[ObjectRecord]:
        """The records whose object is present in ``labels_data`` now."""
        return [rec for rec in self._records.values() if rec.present_in(labels_data)]

    def for_box(self, key: BoxKey, labels_data: Any) -> list[ObjectRecord]:
        """The present objects made from the box ``key``."""
        return [
            rec for rec in self._records.values() if rec.box_key == key and rec.present_in(labels_data)
        ]

    def segmented_boxes(self, labels_data: Any) -> set[BoxKey]:
        """Keys of the boxes that have at least one present object."""
        return {rec.box_key for rec in self.alive(labels_data) if rec.box_key is not None}

    def cover(self, regions: dict[int, Region]) -> None:
        """Widen the regions of records (label id -> ``(rows, cols)`` of their plane) to include
        where their objects now reach (a re-threshold grew them beyond the pixels first
        written), so presence checks and a redo of their box see all of them."""
        for label_id, (rows, cols) in regions.items():
            rec = self._records.get(int(label_id))
            if rec is None:
                continue
            r, c = rec.region
            region = (slice(min(r.start, rows.start), max(r.stop, rows.stop)),
                      slice(min(c.start, cols.start), max(c.stop, cols.stop)))
            self._records[int(label_id)] = dataclasses.replace(rec, region=region)

    def rekey(self, moved: dict[BoxKey, BoxKey]) -> None:
        """A box was moved or resized (``moved``: its old :func:`box_key` -> its new one): its
        objects now belong to the edited box (which redoes them)."""
        changed = False
        for label_id, rec in list(self._records.items()):
            new = moved.get(rec.box_key) if rec.box_key is not None else None
            if new is not None and new != rec.box_key:
                self._records[label_id] = dataclasses.replace(rec, box_key=new)
                changed = True
        if changed:
            self.changed.emit()

    def rejected_boxes(self, labels_data: Any) -> set[BoxKey]:
        """Keys of the boxes whose object was rejected in the review (status ``"rejected"``,
        gone from ``labels_data``) and that have no present object: Segment all leaves them."""
        gone = {
            rec.box_key for rec in self._records.values()
            if rec.box_key is not None and rec.status == "rejected" and not rec.present_in(labels_data)
        }
        return gone - self.segmented_boxes(labels_data) if gone else set()

    def to_frame(self, labels_data: Any | None = None) -> pd.DataFrame:
        """One row per record: label_id, plane, region, score, status, source, present."""
        rows = []
        for rec in self._records.values():
            rows.append(
                {
                    "label_id": rec.label_id,
                    "plane": tuple(rec.plane.fixed),
                    "rows": (rec.region[0].start, rec.region[0].stop),
                    "cols": (rec.region[1].start, rec.region[1].stop),
                    "score": np.nan if rec.score is None else float(rec.score),
                    "status": rec.status,
                    "source": rec.source,
                    "present": None if labels_data is None else rec.present_in(labels_data),
                }
            )
        return pd.DataFrame(rows)
