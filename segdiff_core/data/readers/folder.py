"""Readers for image/mask folder pairs: :class:`FolderDataset`, :class:`InstancePromptDataset`
(also the synthetic generator's output) and :class:`VaihingenDataset` (one building per image).

Layout: ``root/<images>/<name>.<ext>`` and ``root/<masks>/<name>.<ext>``, paired by file stem
(``cell01.png`` pairs with ``cell01.tif``). Extensions: .tif/.tiff (tifffile), .png/.jpg/.jpeg
(imageio, scikit-image's backend), case-insensitive. Hidden files and other extensions are
ignored; files without a counterpart are reported (a :class:`DatasetWarning`, or an error with
``strict=True``) and listed in ``dataset.unmatched``. :func:`write_pair` writes one pair of this
layout (the plugin's training export and the synthetic generator's datasets).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from segdiff_core.data.readers._base import (
    Annotation,
    DatasetError,
    IndexedDataset,
    ObjectMeta,
    Source,
    check_min_area,
)
from segdiff_core.data.readers.objects import central_component
from segdiff_core.data.readers._io import (
    IMAGE_EXTENSIONS,
    LOSSY_EXTENSIONS,
    LabelsWriteError,
    as_label_image,
    binary_foreground,
    index_by_stem,
    list_files,
    pair_by_stem,
    read_image,
    read_mask,
    report_unmatched,
    require_dir,
    write_label_image,
    write_tiff,
)

FolderMode = Literal["binary", "instances", "auto"]


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------
class FileSource(Source):
    """An image and its mask, each a file or an in-memory array.

    ``binary=True``: the annotation is the mask's foreground (labels 0/1). ``binary=False``: the
    mask is an instance label image (0 = background, each other value one object).
    """

    def __init__(self, name: str, image: Path | np.ndarray, mask: Path | np.ndarray, *,
                 binary: bool) -> None:
        self.name = name
        self._image = image
        self._mask = mask
        self.binary = binary
        self.image_desc = str(image) if isinstance(image, Path) else f"{name!r} (in memory)"
        self.mask_desc = str(mask) if isinstance(mask, Path) else f"mask of {name!r} (in memory)"
        if not binary and isinstance(mask, Path) and mask.suffix.lower() in LOSSY_EXTENSIONS:
            raise DatasetError(
                f"mask {mask} is a JPEG; lossy compression corrupts instance labels, so "
                "instance masks must be PNG or TIFF (JPEG masks work only in binary mode)"
            )

    def load_image(self) -> np.ndarray:
        if isinstance(self._image, np.ndarray):
            return self._image
        return read_image(self._image)

    def load_raw_mask(self) -> np.ndarray:
        """The mask as stored, (H, W), no interpretation."""
        if isinstance(self._mask, np.ndarray):
            return self._mask
        return read_mask(self._mask)

    @property
    def mask_is_lossy(self) -> bool:
        return isinstance(self._mask, Path) and self._mask.suffix.lower() in LOSSY_EXTENSIONS

    def load_annotation(self) -> Annotation:
        raw = self.load_raw_mask()
        if self.binary:
            fg = binary_foreground(raw, self.mask_desc, lossy=self.mask_is_lossy)
            return Annotation(fg.astype(np.uint8), self.mask_desc)
        return Annotation(as_label_image(raw, self.mask_desc), self.mask_desc)


def _building_target(label: int) -> ObjectMeta:
    return ("building", 1)


class BuildingSource(Source):
    """Wraps a binary :class:`FileSource` as the one building of its image: with ``central``
    only the central component (:func:`central_component`), else the whole foreground."""

    def __init__(self, inner: FileSource, min_area: int, *, central: bool = True) -> None:
        self.inner = inner
        self.min_area = min_area
        self.central = central
        self.name = inner.name
        self.image_desc = inner.image_desc

    def load_image(self) -> np.ndarray:
        return self.inner.load_image()

    def load_annotation(self) -> Annotation:
        ann = self.inner.load_annotation()
        if not self.central:
            return Annotation((ann.labels != 0).astype(np.uint8), ann.path, target=_building_target)
        central = central_component(ann.labels != 0, min_area=self.min_area)
        labels = np.zeros(ann.labels.shape, np.uint8) if central is None else central.astype(np.uint8)
        return Annotation(labels, ann.path, target=_building_target)


# --------------------------------------------------------------------------------------------
# folder pairing
# --------------------------------------------------------------------------------------------
def _folder_pairs(
    root: str | Path, images: str, masks: str, *, strict: bool
) -> tuple[Path, list[tuple[str, Path, Path]], tuple[Path, ...]]:
    root_p = require_dir(root, "dataset root")
    img_dir = require_dir(root_p / images, "image folder")
    mask_dir = require_dir(root_p / masks, "mask folder")
    pairs, lonely_images, lonely_masks = pair_by_stem(
        index_by_stem(list_files(img_dir, IMAGE_EXTENSIONS)),
        index_by_stem(list_files(mask_dir, IMAGE_EXTENSIONS)),
    )
    unmatched = report_unmatched(root_p, lonely_images, lonely_masks,
                                 annotation_word="mask", strict=strict, stacklevel=3)
    return root_p, pairs, unmatched


def _looks_like_instances(source: FileSource) -> bool:
    """More than one distinct non-zero value in a lossless mask."""
    if source.mask_is_lossy:
        return False
    values = np.unique(source.load_raw_mask())
    return int(np.count_nonzero(values)) > 1


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------
class FolderDataset(IndexedDataset):
    """Image/mask folder pairs.

    Parameters
    ----------
    root
        Dataset folder holding the ``images`` and ``masks`` subfolders.
    images, masks
        Subfolder names.
    mode
        ``"binary"``: one sample per image, mask = foreground (every non-zero pixel; JPEG masks:
        ``value >= 128``), box = tight box of the whole foreground (``None`` if empty); masks
        are not read until accessed. ``"instances"``: masks are instance label images (0 =
        background); one sample per object with its own mask and tight box, ``instance_id`` =
        its label; masks are read once here to index objects. ``"auto"``: read every mask; if
        any holds more than one distinct non-zero value the dataset is ``"instances"``,
        otherwise ``"binary"`` (a label image with a single object per file is
        indistinguishable from a binary mask: pass ``mode="instances"`` for that). The
        resolved mode is in ``self.mode``.
    min_area
        Instance mode: objects with fewer pixels are skipped (listed in ``self.skipped``).
    strict
        Raise instead of warn on files without a counterpart.
    cache_images
        How many decoded images to keep (consecutive objects usually share an image).

    Sample names are ``"<image file name>"`` (binary) or ``"<image file name>#<label>"``.
    Mismatched image/mask sizes raise :class:`DatasetError` naming both files when accessed.
    """

    def __init__(
        self,
        root: str | Path,
        images: str = "images",
        masks: str = "masks",
        mode: FolderMode = "binary",
        *,
        min_area: int = 16,
        strict: bool = False,
        cache_images: int = 2,
    ) -> None:
        if mode not in ("binary", "instances", "auto"):
            raise ValueError(f"mode must be 'binary', 'instances' or 'auto', got {mode!r}")
        root_p, pairs, unmatched = _folder_pairs(root, images, masks, strict=strict)
        if mode == "auto":
            probes = [FileSource(img.name, img, m, binary=True) for _, img, m in pairs]
            mode = "instances" if any(_looks_like_instances(s) for s in probes) else "binary"
        self.root = root_p
        self.mode: Literal["binary", "instances"] = mode
        sources = [FileSource(img.name, img, m, binary=(mode == "binary")) for _, img, m in pairs]
        super().__init__(sources, per_object=(mode == "instances"), min_area=min_area,
                         origin=str(root_p), unmatched=unmatched, cache_images=cache_images)


class InstancePromptDataset(IndexedDataset):
    """One box-prompt sample per object of instance label images (in memory or on disk).

    Parameters
    ----------
    images
        Sequence of (H, W) / (H, W, C) arrays or image file paths.
    labels
        Sequence (same length) of integer (H, W) label images (0 = background) or their file
        paths (PNG/TIFF).
    names
        Unique image names for sample names and image keys; default: the file name for paths,
        ``"image<i>"`` for arrays.
    min_area
        Objects with fewer pixels are skipped (listed in ``self.skipped``).
    origin
        Where the data came from, for messages (default: a description of the inputs).

    Labels are read once here to index the objects; images are decoded on access. Use
    :meth:`from_folder` for ``root/images`` + ``root/masks`` folders (the synthetic
    generator's output).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray | str | Path],
        labels: Sequence[np.ndarray | str | Path],
        *,
        names: Sequence[str] | None = None,
        min_area: int = 16,
        origin: str | None = None,
        cache_images: int = 2,
    ) -> None:
        if len(images) != len(labels):
            raise DatasetError(
                f"got {len(images)} images but {len(labels)} label images; pass one label image "
                "per image"
            )
        if names is not None and len(names) != len(images):
            raise DatasetError(f"got {len(names)} names for {len(images)} images")
        items = [(_as_item(im, f"images[{i}]"), _as_item(lb, f"labels[{i}]"))
                 for i, (im, lb) in enumerate(zip(images, labels))]
        if names is None:
            names = [im.name if isinstance(im, Path) else f"image{i}"
                     for i, (im, _) in enumerate(items)]
        names = [str(n) for n in names]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DatasetError(f"image names must be unique; repeated: {', '.join(dupes)}")
        for name, (im, lb) in zip(names, items):
            _check_in_memory_pair(name, im, lb)
        sources = [FileSource(n, im, lb, binary=False) for n, (im, lb) in zip(names, items)]
        super().__init__(
            sources, per_object=True, min_area=min_area,
            origin=origin or f"the {len(sources)} given label image(s)",
            cache_images=cache_images,
        )

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        images: str = "images",
        masks: str = "masks",
        *,
        min_area: int = 16,
        strict: bool = False,
        cache_images: int = 2,
    ) -> "InstancePromptDataset":
        """``root/<images>/*`` + ``root/<masks>/*`` instance label images paired by stem."""
        root_p, pairs, unmatched = _folder_pairs(root, images, masks, strict=strict)
        try:
            ds = cls([img for _, img, _ in pairs], [m for _, _, m in pairs],
                     min_area=min_area, origin=str(root_p), cache_images=cache_images)
        except DatasetError as exc:
            if unmatched and "no usable samples" in str(exc):
                raise DatasetError(f"{exc}; {len(unmatched)} unmatched file(s) were ignored, "
                                   f"e.g. {unmatched[0]}") from exc
            raise
        ds.unmatched = unmatched
        ds.root = root_p
        return ds


def write_pair(root: str | Path, name: str, image: np.ndarray, labels: np.ndarray,
               images: str = "images", masks: str = "masks") -> tuple[Path, Path]:
    """Write one image/mask pair of the folder layout, each file atomically.

    Parameters
    ----------
    root : str or Path
        Dataset folder; ``root/<images>`` and ``root/<masks>`` are created when missing.
    name : str
        File stem: writes ``<images>/<name>.tif`` and ``<masks>/<name>.tif``, replacing files of
        that name.
    image : ndarray
        ``(H, W)`` or ``(H, W, C)``, dtype kept; uint8 with 3 or 4 channels is stored as RGB(A).
    labels : ndarray
        ``(H, W)`` instance labels (0 = background), stored in the smallest unsigned integer type.

    Returns
    -------
    (Path, Path)
        The image and mask paths.

    Raises
    ------
    LabelsWriteError
        Labels that are not 2D, not the image's size, negative or not integers, or a bad name.
    """
    img, lab = np.asarray(image), np.asarray(labels)
    if lab.ndim != 2:
        raise LabelsWriteError(f"training masks must be 2D (H, W), got shape {lab.shape}")
    if img.shape[:2] != lab.shape:
        raise LabelsWriteError(f"image {img.shape} and labels {lab.shape} differ in size")
    if not name or any(sep in name for sep in ("/", "\\")) or name in (".", ".."):
        raise LabelsWriteError(f"invalid file name {name!r}")
    root = Path(root)
    rgb = img.ndim == 3 and img.shape[2] in (3, 4) and img.dtype == np.uint8
    mask_path = write_label_image(root / masks / f"{name}.tif", lab)  # checks the labels first
    return write_tiff(root / images / f"{name}.tif", img, photometric="rgb" if rgb else "minisblack"), mask_path


def _as_item(item: np.ndarray | str | Path, what: str) -> np.ndarray | Path:
    if isinstance(item, np.ndarray):
        return item
    if isinstance(item, (str, Path)):
        return Path(item)
    raise DatasetError(f"{what} must be a numpy array or a file path, got {type(item).__name__}")


def _check_in_memory_pair(name: str, image: np.ndarray | Path, labels: np.ndarray | Path) -> None:
    if isinstance(image, np.ndarray) and image.ndim not in (2, 3):
        raise DatasetError(f"image {name!r} has shape {image.shape}; expected (H, W) or (H, W, C)")
    if isinstance(labels, np.ndarray):
        as_label_image(labels, f"of {name!r} (in memory)")
        if isinstance(image, np.ndarray) and image.shape[:2] != labels.shape:
            raise DatasetError(
                f"image {name!r} is {image.shape[0]}x{image.shape[1]} but its label image is "
                f"{labels.shape[0]}x{labels.shape[1]}"
            )


VaihingenLayout = Literal["auto", "folders", "dsac"]
VaihingenSplit = Literal["all", "train", "test"]

DSAC_TRAIN_SIZE = 100
"""The reference split of the DSAC building set: the first 100 images train, the rest (68) test."""

_DSAC_IMAGE = re.compile(r"^building_(\d+)$")
_DSAC_MASK = re.compile(r"^building_mask_(\d+)$")


def _dsac_pairs(root: Path, *, strict: bool) -> tuple[list[tuple[str, Path, Path]], tuple[Path, ...]]:
    """``building_<n>.<ext>`` paired with ``building_mask_<n>.<ext>`` in one folder, in the
    reference code's order (file names sorted as text: 1, 10, 100, 101, ..., 11, ...)."""
    files = list_files(root, IMAGE_EXTENSIONS)

    def number(pattern: re.Pattern) -> dict[str, Path]:
        matched = [f for f in files if pattern.match(f.stem)]
        return index_by_stem(matched, stem_of=lambda f: pattern.match(f.stem).group(1))

    images, masks = number(_DSAC_IMAGE), number(_DSAC_MASK)
    if not images:
        raise DatasetError(
            f"{root} holds no building_<n> images: expected the DSAC layout (building_1.tif + "
            "building_mask_1.tif, ... in one folder) or images/ and masks/ sub-folders"
        )
    pairs, lonely_images, lonely_masks = pair_by_stem(images, masks)
    pairs.sort(key=lambda p: p[1].name)
    unmatched = report_unmatched(root, lonely_images, lonely_masks, annotation_word="mask", strict=strict,
                                 stacklevel=3)
    return pairs, unmatched


class VaihingenDataset(IndexedDataset):
    """Vaihingen buildings (the paper's building protocol): one sample per image, one building.

    Two layouts (``layout="auto"`` picks the one present):

    * ``"dsac"``: the building set of the DSAC paper the SegDiff reference code reads, one
      folder with ``building_<n>.tif`` (image) and ``building_mask_<n>.tif`` (that image's
      building); other files (e.g. masks of all buildings) are ignored. The target is the
      whole mask. ``split`` selects the reference split: ``"train"`` = the first 100 images in
      the reference's order (file names sorted as text), ``"test"`` = the other 68, ``"all"``.
    * ``"folders"``: ``root/<images>/*`` + ``root/<masks>/*`` binary building masks paired by
      stem. The target is the 8-connected component of the mask at, or nearest to, the image
      centre (:func:`central_component`). This layout has no predefined split (``"train"``
      and ``"all"`` read everything; the training split comes from ``data.val_fraction``).

    Components smaller than ``min_area`` are ignored, and an image without a building is skipped
    (listed in ``self.skipped``). Samples have ``class_name="building"``, ``instance_id=1``
    and name ``"<image file name>#1"``. Masks are read once here to find the building; images
    are decoded on access.
    """

    def __init__(
        self,
        root: str | Path,
        images: str = "images",
        masks: str = "masks",
        *,
        layout: VaihingenLayout = "auto",
        split: VaihingenSplit = "all",
        min_area: int = 16,
        strict: bool = False,
        cache_images: int = 2,
    ) -> None:
        min_area = check_min_area(min_area)
        if layout not in ("auto", "folders", "dsac"):
            raise ValueError(f"layout must be 'auto', 'folders' or 'dsac', got {layout!r}")
        if split not in ("all", "train", "test"):
            raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
        root_p = require_dir(root, "dataset root")
        if layout == "auto":
            layout = "folders" if (root_p / images).is_dir() else "dsac"
        self.root = root_p
        self.layout = layout
        self.split = split
        if layout == "dsac":
            pairs, unmatched = _dsac_pairs(root_p, strict=strict)
            if split != "all":
                pairs = pairs[:DSAC_TRAIN_SIZE] if split == "train" else pairs[DSAC_TRAIN_SIZE:]
                if not pairs:
                    raise DatasetError(
                        f"the {split} split of {root_p} is empty: the reference split puts the first "
                        f"{DSAC_TRAIN_SIZE} buildings in train and the rest in test; use split='all'"
                    )
        else:
            if split == "test":
                raise DatasetError(
                    f"{root_p} uses the images/ + masks/ layout, which has no predefined test split; "
                    "use split='all' (and a validation fraction) or the DSAC layout"
                )
            root_p, pairs, unmatched = _folder_pairs(root_p, images, masks, strict=strict)
        sources = [BuildingSource(FileSource(img.name, img, m, binary=True), min_area, central=layout == "folders")
                   for _, img, m in pairs]
        super().__init__(sources, per_object=True, min_area=min_area, origin=str(root_p),
                         unmatched=unmatched, cache_images=cache_images)
