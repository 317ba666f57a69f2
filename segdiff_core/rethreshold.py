"""Re-threshold committed objects from their stored probability, without sampling again (no Qt).

When an object is committed, its probability on the crop footprint is kept
(:class:`StoredObject`: a float16 crop and its offset, plus the mask that was actually
written). Changing the threshold later re-derives each object's mask from that crop:

>>> store = ProbabilityStore(max_bytes=64 * 2**20)                        # doctest: +SKIP
>>> store.add(StoredObject.from_commit(7, (), region, probability, written_mask, 0.5))
>>> plan = plan_rethreshold(store, labels_data, 0.35)                      # doctest: +SKIP
>>> with layer.block_history():                                           # doctest: +SKIP
...     for index, value in plan.writes(): layer.data_setitem(index, value, refresh=False)
>>> plan.commit(store)                                                    # doctest: +SKIP

Rules:

* the new mask is ``probability > threshold`` on the crop (largest connected piece when the
  object was committed that way), restricted to pixels that are background or already this
  object: a re-threshold never paints over another object;
* an object whose current pixels equal none of the masks it was committed with (at this or an
  earlier threshold, e.g. after an undo) was **edited by hand**: it is left alone and named in
  :attr:`RethresholdPlan.messages`;
* objects whose probability was dropped to respect the memory budget are reported the same way.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "RethresholdError",
    "StoredObject",
    "ProbabilityStore",
    "ObjectChange",
    "RethresholdPlan",
    "plan_rethreshold",
    "threshold_mask",
]

HISTORY = 16
"""How many committed masks (thresholds) an object remembers for recognising undo states."""


class RethresholdError(ValueError):
    """Bad inputs: wrong shapes, a threshold outside [0, 1], a region outside the labels."""


def threshold_mask(probability: np.ndarray, threshold: float, largest_only: bool = False) -> np.ndarray:
    """``probability > threshold`` as bool, optionally only its largest connected piece
    (4-connectivity, :func:`scipy.ndimage.label`)."""
    mask = np.asarray(probability) > threshold
    if largest_only and mask.any():
        comp, n = ndimage.label(mask)
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            mask = comp == int(np.argmax(sizes)) + 1
    return mask


def _plane_key(plane: Any) -> Any:
    if isinstance(plane, (tuple, list)) and all(isinstance(i, (int, np.integer)) for i in plane):
        return tuple(int(i) for i in plane)
    return plane


def _leading_plane(labels: np.ndarray, plane: tuple[int, ...]) -> np.ndarray:
    if not isinstance(plane, tuple) or labels.ndim != 2 + len(plane):
        raise RethresholdError(
            f"an object lives on plane {plane!r} but the labels have shape {labels.shape}; "
            "pass plane_of for other plane keys"
        )
    return labels[plane] if plane else labels


def _leading_index(plane: tuple[int, ...], rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
    return (*(np.full(rows.size, i, dtype=np.intp) for i in plane), rows, cols)


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 <= t <= 1.0:  # NaN fails too
        raise RethresholdError(f"threshold must be between 0 and 1, got {threshold!r}")
    return t


@dataclass
class StoredObject:
    """One committed object's probability crop and the masks it was written with.

    Attributes
    ----------
    label
        the object's label id.
    plane
        which 2D plane of the labels the object lies on: by default the leading
        indices (``()`` for 2D labels, ``(z,)`` for a stack); any hashable key when the
        caller passes ``plane_of``/``index_of`` (the plugin uses its ``PlaneSpec``).
    offset
        ``(row, col)`` of the crop's first pixel in the plane.
    probability
        ``(h, w)`` float16 foreground probability on the crop.
    largest_only
        the committed mask was the largest connected piece.
    history
        ``[(threshold, packed mask)]`` of the masks written for this object, oldest
        first (at most :data:`HISTORY`); the last one is the current commit.
    """

    label: int
    plane: Any
    offset: tuple[int, int]
    probability: np.ndarray
    largest_only: bool = False
    history: list[tuple[float, np.ndarray]] = field(default_factory=list)

    @classmethod
    def from_commit(
        cls,
        label: int,
        plane: Any,
        region: tuple[slice, slice],
        probability: np.ndarray,
        written: np.ndarray,
        threshold: float,
        largest_only: bool = False,
    ) -> "StoredObject":
        """Record a commit: ``probability`` and ``written`` (bool, the pixels that received
        ``label``) are ``(h, w)`` maps over ``region`` of the plane."""
        prob = np.asarray(probability, dtype=np.float32)
        written = np.asarray(written, dtype=bool)
        rows, cols = region
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        if prob.shape != shape or written.shape != shape:
            raise RethresholdError(
                f"probability {prob.shape} and mask {written.shape} must match the region {shape}"
            )
        obj = cls(int(label), _plane_key(plane), (int(rows.start), int(cols.start)),
                  prob.astype(np.float16), bool(largest_only))
        obj._remember(_check_threshold(threshold), written)
        return obj

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.probability.shape)  # type: ignore[return-value]

    @property
    def region(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of the crop in the plane."""
        (r, c), (h, w) = self.offset, self.shape
        return slice(r, r + h), slice(c, c + w)

    @property
    def threshold(self) -> float:
        """Threshold of the current commit."""
        return self.history[-1][0]

    @property
    def committed(self) -> np.ndarray:
        """``(h, w)`` bool: the pixels of the current commit."""
        return self._unpack(self.history[-1][1])

    @property
    def nbytes(self) -> int:
        return int(self.probability.nbytes + sum(m.nbytes for _, m in self.history))

    def mask_at(self, threshold: float) -> np.ndarray:
        """``(h, w)`` bool: a fresh threshold of the stored probability (before any clash
        with other objects)."""
        return threshold_mask(self.probability.astype(np.float32), _check_threshold(threshold), self.largest_only)

    def matching_commit(self, current: np.ndarray) -> int | None:
        """Index in :attr:`history` of the commit whose mask equals ``current`` (the crop's
        pixels that carry this label now), newest first; None = edited by hand."""
        packed = np.packbits(np.asarray(current, dtype=bool), axis=None)
        for i in range(len(self.history) - 1, -1, -1):
            if np.array_equal(self.history[i][1], packed):
                return i
        return None

    def _unpack(self, packed: np.ndarray) -> np.ndarray:
        h, w = self.shape
        return np.unpackbits(packed, count=h * w).astype(bool).reshape(h, w)

    def _remember(self, threshold: float, mask: np.ndarray) -> None:
        packed = np.packbits(np.asarray(mask, dtype=bool), axis=None)
        self.history = [e for e in self.history if not np.array_equal(e[1], packed)]
        self.history.append((float(threshold), packed))
        del self.history[:-HISTORY]


class ProbabilityStore:
    """The stored objects of one labels layer, keyed by ``(plane, label)``, within a memory
    budget: when adding goes over ``max_bytes`` the oldest objects are dropped (they can no
    longer be re-thresholded; :attr:`dropped` counts them)."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        if max_bytes < 1:
            raise RethresholdError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._objects: OrderedDict[tuple[Any, int], StoredObject] = OrderedDict()
        self._nbytes = 0
        self.dropped = 0

    def add(self, obj: StoredObject) -> list[StoredObject]:
        """Store (or replace) an object; returns the objects dropped to stay in budget."""
        self.remove(obj.plane, obj.label)
        self._objects[(obj.plane, obj.label)] = obj
        self._nbytes += obj.nbytes
        evicted = []
        while self._nbytes > self.max_bytes and len(self._objects) > 1:
            _, old = self._objects.popitem(last=False)
            self._nbytes -= old.nbytes
            evicted.append(old)
        self.dropped += len(evicted)
        return evicted

    def get(self, plane: Any, label: int) -> StoredObject | None:
        return self._objects.get((_plane_key(plane), int(label)))

    def remove(self, plane: Any, label: int) -> StoredObject | None:
        old = self._objects.pop((_plane_key(plane), int(label)), None)
        if old is not None:
            self._nbytes -= old.nbytes
        return old

    def clear(self) -> None:
        self._objects.clear()
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held (probabilities plus packed masks)."""
        return self._nbytes

    def _resize(self, obj: StoredObject, before: int) -> None:
        self._nbytes += obj.nbytes - before

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[StoredObject]:
        return iter(list(self._objects.values()))

    def __contains__(self, key: tuple[Any, int]) -> bool:
        plane, label = key
        return (_plane_key(plane), int(label)) in self._objects


@dataclass(frozen=True)
class ObjectChange:
    """What a re-threshold does to one object.

    Attributes
    ----------
    obj
        the stored object.
    status
        ``'changed'``, ``'unchanged'`` or ``'edited'`` (left alone).
    new_mask
        ``(h, w)`` bool mask it will carry (None when edited).
    clear, paint
        ``(rows, cols)`` plane pixels that lose / receive the label.
    """

    obj: StoredObject
    status: str
    new_mask: np.ndarray | None = None
    clear: tuple[np.ndarray, np.ndarray] | None = None
    paint: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class RethresholdPlan:
    """The writes of one re-threshold, to apply in one undo step, then :meth:`commit`."""

    threshold: float
    changes: list[ObjectChange]

    @property
    def changed(self) -> list[ObjectChange]:
        return [c for c in self.changes if c.status == "changed"]

    @property
    def edited(self) -> list[ObjectChange]:
        return [c for c in self.changes if c.status == "edited"]

    def writes(
        self, index_of: Callable[[Any, np.ndarray, np.ndarray], tuple[np.ndarray, ...]] | None = None
    ) -> Iterator[tuple[tuple[np.ndarray, ...], int]]:
        """``(index, value)`` pairs for ``Labels.data_setitem``: clears first, then paints.

        ``index_of(plane, rows, cols)`` turns plane pixels into full-array indices (default:
        the plane key is the tuple of leading indices)."""
        index_of = index_of or _leading_index
        for attr in ("clear", "paint"):
            for c in self.changed:
                rows, cols = getattr(c, attr)
                if rows.size:
                    yield index_of(c.obj.plane, rows, cols), (0 if attr == "clear" else c.obj.label)

    def apply(self, labels: np.ndarray) -> None:
        """Write the plan into a plain array with leading-index planes (the plugin writes
        through ``data_setitem``)."""
        for index, value in self.writes():
            labels[index] = value

    def commit(self, store: ProbabilityStore | None = None) -> None:
        """Record the new masks as the objects' current commits (after the writes)."""
        for c in self.changes:
            if c.new_mask is None:
                continue
            before = c.obj.nbytes
            c.obj._remember(self.threshold, c.new_mask)
            if store is not None:
                store._resize(c.obj, before)

    @property
    def messages(self) -> list[str]:
        """Human-readable notes (edited objects left alone)."""
        edited = [c.obj for c in self.edited]
        if not edited:
            return []
        names = ", ".join(_describe(o) for o in edited[:20]) + (" ..." if len(edited) > 20 else "")
        return [f"{len(edited)} object(s) were edited by hand after they were committed; their stored "
                f"probability no longer applies, so they were left as they are: {names}"]


def _describe(obj: StoredObject) -> str:
    plane = obj.plane
    if not isinstance(plane, tuple):
        plane = tuple(i for _, i in getattr(plane, "fixed", ()))
    return f"{obj.label}" + (f" (slice {', '.join(map(str, plane))})" if plane else "")


def _plan_one(obj: StoredObject, plane: np.ndarray, threshold: float) -> ObjectChange:
    rows, cols = obj.region
    if rows.stop > plane.shape[0] or cols.stop > plane.shape[1]:
        return ObjectChange(obj, "edited")
    current = plane[rows, cols]
    mine = current == obj.label
    if obj.matching_commit(mine) is None:
        return ObjectChange(obj, "edited")
    new = obj.mask_at(threshold) & (mine | (current == 0))
    if np.array_equal(new, mine):
        return ObjectChange(obj, "unchanged", new)
    cr, cc = np.nonzero(mine & ~new)
    pr, pc = np.nonzero(new & ~mine)
    return ObjectChange(obj, "changed", new, (cr + rows.start, cc + cols.start), (pr + rows.start, pc + cols.start))


def plan_rethreshold(
    objects: Iterable[StoredObject],
    labels: Any,
    threshold: float,
    plane_of: Callable[[Any, Any], np.ndarray] | None = None,
) -> RethresholdPlan:
    """Plan re-thresholding ``objects`` at ``threshold`` against the current ``labels``
    (not modified).

    ``plane_of(labels, plane)`` returns the ``(H, W)`` plane (rows first) an object lives on;
    by default ``labels`` is an ``(..., H, W)`` array and the plane key its leading indices.

    Objects are planned in order, each against the labels as the earlier ones leave them, so
    two objects whose crops overlap never claim the same free pixel (the earlier one gets it).
    Only the planes that change are copied.
    """
    t = _check_threshold(threshold)
    if plane_of is None:
        labels = np.asarray(labels)
        plane_of = _leading_plane
    working: dict[Any, np.ndarray] = {}
    changes = []
    for obj in objects:
        plane = working.get(obj.plane)
        if plane is None:
            plane = np.asarray(plane_of(labels, obj.plane))
        change = _plan_one(obj, plane, t)
        if change.status == "changed":
            if obj.plane not in working:
                plane = working[obj.plane] = np.array(plane, copy=True)
            assert change.clear is not None and change.paint is not None
            plane[change.clear] = 0
            plane[change.paint] = obj.label
        changes.append(change)
    return RethresholdPlan(t, changes)
