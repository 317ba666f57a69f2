"""Core types of the dataset readers: :class:`Sample`, :class:`Dataset`, errors, and the lazy
indexed-dataset machinery shared by every concrete reader.

How a reader works
------------------
A reader lists its *sources* up front (one per image: an image file plus its annotation).
Readers that give one sample per object also read each annotation once at construction to
find its objects (label value, area, bounding slices); only that small index is kept. Image
pixels are decoded only in ``__getitem__``. The last few decoded images and annotations are
kept in a small per-dataset LRU cache, since consecutive samples usually come from one image.
"""
from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
from scipy import ndimage

from segdiff_core.data.boxes import Box
from segdiff_core.validation import check_int


class DatasetError(ValueError):
    """A dataset that cannot be used: missing or corrupt files, wrong layout, no usable
    sample. The message names the offending file or folder."""


class DatasetWarning(UserWarning):
    """Part of a dataset was ignored (e.g. images without annotation); the rest is usable."""


@dataclass
class Sample:
    """One training / evaluation example for a box-prompted segmenter (the one sample type of
    readers, training validation and the evaluation runner).

    Attributes
    ----------
    image
        (H, W) or (H, W, C) array in the file's dtype (uint8, uint16, float32, ...). A private
        copy: modifying it does not affect the dataset.
    mask
        bool (H, W): the target object, or the whole foreground for binary (semantic) samples.
    box
        Tight box of ``mask`` (:meth:`Box.from_mask`), or ``None`` if ``mask`` is empty (only
        possible for binary samples of an image without foreground).
    name
        Source file name plus object id (``"img01.tif#3"``) for reports.
    class_name
        Object class (e.g. ``"car"``), or ``None`` when the dataset has no classes.
    instance_id
        The object's id in its image (its label value), or ``None`` for binary samples.
    group
        Breakdown key of evaluation reports (synthetic style family or dataset class), or
        ``None``. The evaluation runner's ``EvalItem`` is this class.
    """

    image: np.ndarray
    mask: np.ndarray
    box: Box | None
    name: str
    class_name: str | None = None
    instance_id: int | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.image.ndim not in (2, 3):
            raise ValueError(f"sample image must be (H, W) or (H, W, C), got {self.image.shape}")
        if self.mask.dtype != bool or self.mask.shape != self.image.shape[:2]:
            raise ValueError(
                f"sample mask must be bool of shape {self.image.shape[:2]}, got "
                f"{self.mask.dtype} {self.mask.shape}"
            )


def _normalise_index(index: Any, length: int) -> int:
    try:
        i = operator.index(index)
    except TypeError:
        raise TypeError(f"dataset indices must be integers, got {type(index).__name__}") from None
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"sample index {index} out of range for a dataset of {length} samples")
    return i


class Dataset(ABC):
    """A finite, indexable stream of :class:`Sample` (map-style, like a torch ``Dataset``).

    Subclasses implement ``__len__``, ``_load(i)`` (``i`` already range-checked) and
    ``image_key(i)``.
    """

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _load(self, index: int) -> Sample: ...

    @abstractmethod
    def image_key(self, index: int) -> str:
        """Identifier of the image that sample ``index`` comes from, without decoding anything.

        Samples of one image share a key; used to split by image (see ``split_dataset``)."""

    def __getitem__(self, index: int) -> Sample:
        return self._load(_normalise_index(index, len(self)))

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._load(i)


# --------------------------------------------------------------------------------------------
# sources: one image + its annotation, loaded lazily
# --------------------------------------------------------------------------------------------
ObjectMeta = tuple["str | None", int]
"""``(class_name, instance_id)`` of a target object."""


def every_label(label: int) -> ObjectMeta:
    """Target rule of plain instance-label images: each non-zero label is an object."""
    return (None, int(label))


@dataclass(frozen=True)
class Annotation:
    """A decoded annotation.

    ``labels``: integer (H, W) label image, 0 = background. ``target(label)`` tells whether a
    non-zero label is a target object (``(class_name, instance_id)``) or not (``None``, e.g. a
    Cityscapes road or a car group that only occludes). ``path`` names the annotation for errors.
    """

    labels: np.ndarray
    path: str
    target: Callable[[int], ObjectMeta | None] = every_label


class Source(ABC):
    """One image and its annotation; nothing is decoded until asked."""

    #: unique name of the image within its dataset, used in sample names and as image key
    name: str
    #: human-readable location of the image (a path) for error messages
    image_desc: str

    @abstractmethod
    def load_image(self) -> np.ndarray:
        """(H, W) or (H, W, C) image; :class:`DatasetError` naming the file on failure."""

    @abstractmethod
    def load_annotation(self) -> Annotation:
        """Decoded annotation; :class:`DatasetError` naming the file on failure."""


class _ObjectRef(NamedTuple):
    source: int
    label: int
    class_name: str | None
    instance_id: int
    bounds: tuple[slice, slice]


class _ObjectScan(NamedTuple):
    objects: list[tuple[int, ObjectMeta, tuple[slice, slice]]]
    n_small: int


def scan_objects(ann: Annotation, min_area: int) -> _ObjectScan:
    """Target objects of an annotation with at least ``min_area`` pixels.

    Returns ``(objects, n_small)``: ``objects`` lists ``(label, (class_name, instance_id),
    bounding slices)`` in increasing label order; ``n_small`` counts targets below
    ``min_area``.
    """
    labels = ann.labels
    if labels.size == 0:
        return _ObjectScan([], 0)
    top = int(labels.max())
    if top <= max(1 << 16, labels.size):
        dense = labels if np.can_cast(labels.dtype, np.intp) else labels.astype(np.intp)
        counts = np.bincount(dense.ravel(), minlength=top + 1)
        values = np.flatnonzero(counts)
        slices = ndimage.find_objects(dense)
        bounds = {int(v): slices[v - 1] for v in values if v != 0}
    else:  # sparse, huge label values: compact them first
        values, inverse, counts_c = np.unique(labels.ravel(), return_inverse=True,
                                              return_counts=True)
        slices = ndimage.find_objects(inverse.reshape(labels.shape) + 1)
        bounds = {int(v): slices[k] for k, v in enumerate(values) if v != 0}
        counts = dict(zip((int(v) for v in values), (int(c) for c in counts_c)))
    objects: list[tuple[int, ObjectMeta, tuple[slice, slice]]] = []
    n_small = 0
    for label, bound in bounds.items():
        meta = ann.target(label)
        if meta is None:
            continue
        if int(counts[label]) < min_area:
            n_small += 1
            continue
        objects.append((label, meta, bound))
    return _ObjectScan(objects, n_small)


def check_min_area(min_area: int) -> int:
    """``min_area`` as an int >= 1 (pixels)."""
    return check_int(min_area, "min_area (pixels)", 1)


class _LRU:
    """Tiny least-recently-used cache (per dataset instance; not shared)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        value = make()
        self._data[key] = value
        while len(self._data) > self.size:
            self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        self._data.clear()


class IndexedDataset(Dataset):
    """Lazy dataset over :class:`Source` objects; the common engine of every reader.

    Parameters
    ----------
    sources
        One per image, in sample order.
    per_object
        ``True``: one sample per target object (each source's annotation is read once here to
        index its objects). ``False``: one sample per image whose mask is the whole foreground
        (``labels != 0``); nothing is decoded here.
    min_area
        Objects with fewer pixels are skipped (``per_object`` only).
    origin
        Where the data comes from (a root folder) for messages.
    unmatched
        Files that were found but had no counterpart (already reported by the caller).
    cache_images
        How many decoded images (and their annotations) to keep.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        per_object: bool,
        min_area: int,
        origin: str,
        unmatched: Sequence[Any] = (),
        cache_images: int = 2,
    ) -> None:
        self._sources = tuple(sources)
        self.per_object = bool(per_object)
        self.min_area = check_min_area(min_area)
        self.origin = str(origin)
        self.unmatched = tuple(unmatched)
        #: human-readable notes on what was left out (small objects, images without objects)
        self.skipped: list[str] = []
        self._cache = _LRU(2 * max(1, int(cache_images)))
        self._objects: list[_ObjectRef] = self._index_objects() if self.per_object else []
        if len(self) == 0:
            raise DatasetError(f"no usable samples in {self.origin}: {self._why_empty()}")

    # -- indexing --------------------------------------------------------------------------
    def _index_objects(self) -> list[_ObjectRef]:
        refs: list[_ObjectRef] = []
        for i, src in enumerate(self._sources):
            scan = scan_objects(src.load_annotation(), self.min_area)
            if scan.n_small:
                self.skipped.append(
                    f"{src.name}: {scan.n_small} object(s) smaller than {self.min_area} px"
                )
            if not scan.objects and not scan.n_small:
                self.skipped.append(f"{src.name}: no objects")
            refs.extend(
                _ObjectRef(i, label, meta[0], meta[1], bound) for label, meta, bound in scan.objects
            )
        return refs

    def _why_empty(self) -> str:
        if not self._sources:
            msg = "found no image with a matching annotation"
            if self.unmatched:
                msg += f" ({len(self.unmatched)} unmatched file(s), e.g. {self.unmatched[0]})"
            return msg
        return (
            f"none of the {len(self._sources)} image(s) has a target object of at least "
            f"{self.min_area} px ({'; '.join(self.skipped[:5])}"
            + ("; ..." if len(self.skipped) > 5 else "") + ")"
        )

    # -- access ----------------------------------------------------------------------------
    @property
    def sources(self) -> tuple[Source, ...]:
        """The per-image sources, in order (read-only)."""
        return self._sources

    @property
    def num_images(self) -> int:
        return len(self._sources)

    def __len__(self) -> int:
        return len(self._objects) if self.per_object else len(self._sources)

    def image_key(self, index: int) -> str:
        i = _normalise_index(index, len(self))
        src = self._objects[i].source if self.per_object else i
        return self._sources[src].name

    def _pixels(self, src_index: int) -> tuple[np.ndarray, Annotation]:
        src = self._sources[src_index]
        ann = self._cache.get((src_index, "annotation"), src.load_annotation)
        image = self._cache.get((src_index, "image"), src.load_image)
        if image.shape[:2] != ann.labels.shape:
            raise DatasetError(
                f"image {src.image_desc} is {image.shape[0]}x{image.shape[1]} but its "
                f"annotation {ann.path} is {ann.labels.shape[0]}x{ann.labels.shape[1]}; "
                "they must have the same height and width"
            )
        return image, ann

    def _load(self, index: int) -> Sample:
        if self.per_object:
            ref = self._objects[index]
            image, ann = self._pixels(ref.source)
            mask = np.zeros(ann.labels.shape, dtype=bool)
            mask[ref.bounds] = ann.labels[ref.bounds] == ref.label
            return Sample(
                image=image.copy(),
                mask=mask,
                box=Box.from_mask(mask),
                name=f"{self._sources[ref.source].name}#{ref.instance_id}",
                class_name=ref.class_name,
                instance_id=ref.instance_id,
            )
        image, ann = self._pixels(index)
        mask = ann.labels != 0
        return Sample(
            image=image.copy(),
            mask=mask,
            box=Box.from_mask(mask) if mask.any() else None,
            name=self._sources[index].name,
        )

    # -- housekeeping ----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # do not ship decoded pixels to worker processes
        state = self.__dict__.copy()
        state["_cache"] = _LRU(self._cache.size)
        return state

    def __repr__(self) -> str:
        unit = "objects" if self.per_object else "images"
        return (f"{type(self).__name__}({len(self)} {unit} from {self.num_images} image(s) "
                f"in {self.origin})")
