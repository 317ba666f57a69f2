"""File-level helpers shared by the dataset readers: decoding, header peeks, folder pairing, and
the one atomic TIFF writer (predictions, label images, training pairs).

Every function that touches a file wraps any failure in :class:`DatasetError` whose message names
the file, so one corrupt file in a dataset of thousands can be found and fixed.
"""
from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from segdiff_core.data.readers._base import DatasetError, DatasetWarning

TIFF_EXTENSIONS: frozenset[str] = frozenset({".tif", ".tiff"})
PIL_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
LOSSY_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg"})
IMAGE_EXTENSIONS: frozenset[str] = TIFF_EXTENSIONS | PIL_EXTENSIONS

_MAX_LISTED = 10


# --------------------------------------------------------------------------------------------
# folders
# --------------------------------------------------------------------------------------------
def require_dir(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`Path`, or :class:`DatasetError` if it is not an existing folder."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{what} {p} does not exist; check the path")
    if not p.is_dir():
        raise DatasetError(f"{what} {p} is not a folder")
    return p


def list_files(folder: Path, extensions: Iterable[str]) -> list[Path]:
    """Regular, non-hidden files in ``folder`` whose suffix (case-insensitive) is in
    ``extensions``, sorted by name."""
    exts = {e.lower() for e in extensions}
    return sorted(
        (p for p in folder.iterdir()
         if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts),
        key=lambda p: p.name,
    )


def index_by_stem(files: Sequence[Path], stem_of=lambda p: p.stem) -> dict[str, Path]:
    """Map ``stem_of(file) -> file``; two files with one stem (``a.png`` + ``a.tif``) is an error."""
    out: dict[str, Path] = {}
    for f in files:
        stem = stem_of(f)
        if stem in out:
            raise DatasetError(
                f"two files share the name {stem!r}: {out[stem]} and {f}; keep only one of them"
            )
        out[stem] = f
    return out


def pair_by_stem(
    images: dict[str, Path], annotations: dict[str, Path]
) -> tuple[list[tuple[str, Path, Path]], list[Path], list[Path]]:
    """Pair two ``stem -> file`` maps.

    Returns ``(pairs, images_without_annotation, annotations_without_image)`` with ``pairs`` a
    list of ``(stem, image_file, annotation_file)`` sorted by stem.
    """
    pairs = [(s, images[s], annotations[s]) for s in sorted(images) if s in annotations]
    lonely_images = [images[s] for s in sorted(images) if s not in annotations]
    lonely_annotations = [annotations[s] for s in sorted(annotations) if s not in images]
    return pairs, lonely_images, lonely_annotations


def _short_list(paths: Sequence[Path]) -> str:
    names = [p.name for p in paths[:_MAX_LISTED]]
    more = len(paths) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def report_unmatched(
    origin: str | Path,
    lonely_images: Sequence[Path],
    lonely_annotations: Sequence[Path],
    *,
    annotation_word: str,
    strict: bool,
    stacklevel: int = 2,
) -> tuple[Path, ...]:
    """Warn (or, if ``strict``, raise :class:`DatasetError`) about files without a counterpart.

    Returns all unmatched files (to be stored on the dataset as ``unmatched``). ``stacklevel``
    is counted from the caller of this function (1 = that caller, 2 = its caller, ...), so the
    warning points at user code.
    """
    unmatched = tuple(lonely_images) + tuple(lonely_annotations)
    if not unmatched:
        return unmatched
    parts = []
    if lonely_images:
        parts.append(f"{len(lonely_images)} image(s) without a {annotation_word}: "
                     f"{_short_list(lonely_images)}")
    if lonely_annotations:
        parts.append(f"{len(lonely_annotations)} {annotation_word}(s) without an image: "
                     f"{_short_list(lonely_annotations)}")
    msg = f"unmatched files in {origin} (files are paired by name): " + "; ".join(parts)
    if strict:
        raise DatasetError(msg)
    warnings.warn(msg + "; these files are ignored", DatasetWarning, stacklevel=stacklevel + 1)
    return unmatched


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------
def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read file {path}: {exc}") from exc


def _layout(shape: tuple[int, ...], axes: str, path: Path) -> tuple[tuple[int, ...], bool]:
    """How to bring an array of ``shape`` to (H, W) or (H, W, C).

    ``axes`` are tifffile's axis codes (``"YXS"``, ``"QYX"``, ...) or ``""`` when unknown.
    Returns ``(squeezed_shape, channels_first)``:

    * singleton axes other than Y/X are dropped (only when ``axes`` are known);
    * a 3-D array is channels-last if its last axis is a sample/channel axis (``S``/``C``),
      channels-first if its first one is; if the first axis is unknown (``Q``/``I``: pages of
      a TIFF written without photometric info, or no metadata at all) it is channels-first when
      it has at most 4 entries and the last axis more than 4, else channels-last;
    * a 3-D array whose extra axis is depth/time (``Z``, ``T``, ...) or anything with more
      than 3 axes is a stack, not an image: :class:`DatasetError`.
    """
    if len(axes) == len(shape):
        keep = [i for i, (n, a) in enumerate(zip(shape, axes)) if n != 1 or a in "YX"]
        shape = tuple(shape[i] for i in keep)
        axes = "".join(axes[i] for i in keep)
    else:
        axes = ""
    if len(shape) == 2:
        return tuple(shape), False
    if len(shape) == 3:
        first, last = axes[:1], axes[-1:]
        if last in ("S", "C"):
            return tuple(shape), False
        if first in ("S", "C"):
            return tuple(shape), True
        if first in ("", "Q", "I"):
            return tuple(shape), shape[0] <= 4 < shape[-1]
    raise DatasetError(
        f"{path} holds an array of shape {tuple(shape)}"
        + (f" (axes {axes})" if axes else "")
        + "; expected a single 2-D image (H, W) or (H, W, C), not a stack"
    )


def _squeeze_to_image(arr: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Bring a decoded array to (H, W) or (H, W, C) (see :func:`_layout`)."""
    squeezed, channels_first = _layout(arr.shape, axes, path)
    arr = arr.reshape(squeezed)
    return np.moveaxis(arr, 0, -1) if channels_first else arr


def _decode_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            arr = series.asarray()
            axes = series.axes
    except Exception as exc:  # any decoder failure means the file is unusable
        raise DatasetError(f"cannot decode TIFF file {path}: {exc}") from exc
    return _squeeze_to_image(np.asarray(arr), axes, path)


def _decode_pil_format(path: Path, *, keep_palette: bool) -> np.ndarray:
    """PNG/JPEG through imageio (scikit-image's I/O backend).

    With ``keep_palette`` a palette ('P' mode) PNG returns its palette indices, as label masks
    saved with a colour palette must; otherwise palette images are expanded to RGB(A).
    """
    import imageio.v3 as iio

    data = read_bytes(path)
    try:
        with iio.imopen(data, "r", extension=path.suffix.lower(), plugin="pillow") as f:
            mode = None
            if keep_palette:
                meta = f.metadata()
                mode = "P" if meta.get("mode") == "P" else None
            arr = f.read(mode=mode) if mode else f.read()
    except Exception as exc:
        raise DatasetError(f"cannot decode image file {path}: {exc}") from exc
    return _squeeze_to_image(np.asarray(arr), "", path)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to (H, W) or (H, W, C) in its stored dtype.

    TIFF goes through tifffile, PNG/JPEG through imageio. Raises :class:`DatasetError` naming
    the file if it is missing, truncated or not a decodable image.
    """
    suffix = path.suffix.lower()
    if suffix in TIFF_EXTENSIONS:
        return _decode_tiff(path)
    if suffix in PIL_EXTENSIONS:
        return _decode_pil_format(path, keep_palette=False)
    raise DatasetError(
        f"{path}: unsupported image format {suffix!r}; use one of {sorted(IMAGE_EXTENSIONS)}"
    )


def read_mask(path: Path) -> np.ndarray:
    """Decode a mask / label image file to a 2-D (H, W) array in its stored dtype.

    Palette PNGs give palette indices. A multi-channel file whose channels are all equal (a
    grey mask saved as RGB) gives its first channel; an alpha channel is ignored for that check.
    Any other multi-channel mask is a :class:`DatasetError`.
    """
    suffix = path.suffix.lower()
    if suffix in TIFF_EXTENSIONS:
        arr = _decode_tiff(path)
    elif suffix in PIL_EXTENSIONS:
        arr = _decode_pil_format(path, keep_palette=True)
    else:
        raise DatasetError(
            f"{path}: unsupported mask format {suffix!r}; use one of {sorted(IMAGE_EXTENSIONS)}"
        )
    if arr.ndim == 3:
        colour = arr[..., :3] if arr.shape[-1] == 4 else arr
        if not all(np.array_equal(colour[..., 0], colour[..., c]) for c in range(colour.shape[-1])):
            raise DatasetError(
                f"mask {path} has {arr.shape[-1]} channels with different values; a mask must "
                "be a single-channel image (binary foreground or integer instance labels)"
            )
        arr = colour[..., 0]
    return arr


def image_shape(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header, without decoding the pixels."""
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_EXTENSIONS:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, axes = tuple(series.shape), series.axes
        elif suffix in PIL_EXTENSIONS:
            import imageio.v3 as iio

            shape, axes = tuple(iio.improps(read_bytes(path), extension=suffix, plugin="pillow").shape), ""
        else:
            raise DatasetError(f"{path}: unsupported image format {suffix!r}")
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"cannot read the header of image file {path}: {exc}") from exc
    squeezed, channels_first = _layout(shape, axes, path)
    hw = squeezed[1:3] if channels_first else squeezed[:2]
    return int(hw[0]), int(hw[1])


def as_label_image(arr: np.ndarray, path: Path | str) -> np.ndarray:
    """Validate an instance label image: 2-D, non-negative integers (0 = background).

    Booleans become uint8; floats holding whole numbers become int64. Returns an unsigned or
    signed integer array of shape (H, W).
    """
    if arr.ndim != 2:
        raise DatasetError(f"label image {path} has shape {arr.shape}; expected (H, W)")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise DatasetError(
                f"label image {path} holds non-integer values (dtype {arr.dtype}); instance "
                "labels must be whole numbers, 0 = background"
            )
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"label image {path} has unsupported dtype {arr.dtype}")
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise DatasetError(
            f"label image {path} holds negative labels (min {arr.min()}); labels must be >= 0"
        )
    return arr


def binary_foreground(arr: np.ndarray, path: Path | str, *, lossy: bool) -> np.ndarray:
    """Foreground of a binary mask as bool (H, W).

    Lossless masks: every non-zero pixel is foreground (0/1, 0/255, bool all work). Lossy
    (JPEG) masks: compression smears the edges, so foreground is ``value >= half the dtype
    range`` (128 for uint8).
    """
    if arr.ndim != 2:
        raise DatasetError(f"mask {path} has shape {arr.shape}; expected (H, W)")
    if arr.dtype == bool:
        return arr.copy()
    if lossy and np.issubdtype(arr.dtype, np.integer):
        return arr >= (np.iinfo(arr.dtype).max // 2 + 1)
    return arr != 0


def check_xml_bytes(data: bytes, path: Path) -> None:
    """Reject XML with a DOCTYPE or ENTITY declaration (entity-expansion attacks).

    :mod:`xml.etree.ElementTree` does not fetch external entities, but it does expand internal
    ones, so a small file can expand to gigabytes ("billion laughs"). Annotation files never need
    a DTD, so any declaration is refused.
    """
    probe = data
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        probe = data.decode("utf-16", errors="replace").encode("utf-8")
    if re.search(rb"<!\s*(DOCTYPE|ENTITY)", probe, flags=re.IGNORECASE):
        raise DatasetError(
            f"XML file {path} contains a DOCTYPE/ENTITY declaration, which is refused for "
            "safety (entity expansion); annotation files do not need one, remove it"
        )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
class LabelsWriteError(ValueError):
    """Labels that cannot be stored as an instance label image (negative or not integers)."""


def labels_dtype(labels: np.ndarray) -> np.dtype:
    """The smallest unsigned integer dtype that holds every label of ``labels`` (any shape).

    Raises
    ------
    LabelsWriteError
        Negative or non-integer labels.
    """
    arr = np.asarray(labels)
    if arr.dtype == bool or arr.size == 0:
        return np.dtype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise LabelsWriteError(f"labels must be integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise LabelsWriteError(f"labels must be >= 0 (0 = background), found {lo}")
    return next(np.dtype(dt) for dt in (np.uint8, np.uint16, np.uint32, np.uint64) if hi <= np.iinfo(dt).max)


def write_tiff(path: str | Path, array: np.ndarray, **kwargs: Any) -> Path:
    """Write ``array`` as a zlib-compressed TIFF atomically: the file is encoded in memory, written
    to a temporary name beside ``path`` and renamed over it, so an interrupted or failed write
    leaves any earlier file of that name untouched. ``kwargs`` go to :func:`tifffile.imwrite`."""
    import tifffile

    from segdiff_core.checkpoint import atomic_write

    buf = io.BytesIO()
    tifffile.imwrite(buf, array, compression="zlib", **kwargs)
    return atomic_write(path, buf.getvalue())


def write_label_image(path: str | Path, labels: np.ndarray, **kwargs: Any) -> Path:
    """Write instance labels (any shape, 0 = background) atomically as a TIFF of the smallest
    unsigned integer type that holds them (:func:`labels_dtype`)."""
    arr = np.asarray(labels)
    return write_tiff(path, arr.astype(labels_dtype(arr), copy=False), photometric="minisblack", **kwargs)
