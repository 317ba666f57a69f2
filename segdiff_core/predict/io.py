"""Reading images lazily and writing outputs atomically for ``segdiff-predict``.

Inputs
------
:func:`find_inputs` expands files, glob patterns and folders into a sorted list of image
paths (TIFF/OME-TIFF, PNG, JPEG, zarr). :func:`open_image` returns an :class:`ImageSource`
that reads regions on demand: TIFF through tifffile's zarr store (only the strips/tiles under
a region are decoded), zarr arrays directly, PNG/JPEG (which cannot be read partially) in
full. Images are (H, W) or channels-last (H, W, C); a leading singleton axis (OME-TIFF's
``(1, H, W)``, a ``(1, C, H, W)`` stack) is dropped, and channels-first (C, H, W) with C <= 4
is moved last.

Outputs
-------
Every file is written to a temporary name beside its destination and renamed into place:
TIFF (:func:`segdiff_core.data.readers.write_tiff`), CSV and JSON through
:func:`segdiff_core.checkpoint.atomic_write`, zarr folders by
renaming a finished temporary folder. A killed run leaves no half-written output under a
final name, so a restarted run sees only complete outputs.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from segdiff_core.checkpoint import atomic_write
from segdiff_core.data.readers import write_tiff

__all__ = [
    "IMAGE_SUFFIXES",
    "InputError",
    "OutputError",
    "ImageSource",
    "find_inputs",
    "open_image",
    "write_tiff",
    "write_csv",
    "write_json",
    "ZarrOutput",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".png", ".jpg", ".jpeg", ".zarr")
"""File name endings read as images."""


class InputError(ValueError):
    """An input that cannot be used: missing, unreadable, truncated or of the wrong layout."""


class OutputError(OSError):
    """An output location that cannot be written."""


def _is_image_path(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def find_inputs(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files, globs and folders into image paths (sorted per spec; a file named twice,
    by any path, is kept once).

    A folder contributes its image files (not recursive; ``*.zarr`` folders count as images).
    Raises :class:`InputError` if a spec matches nothing.
    """
    out: list[Path] = []
    seen: set[Path] = set()  # resolved: "img.tif", "./img.tif" and "/abs/img.tif" are one image
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if path.is_dir() and not _is_image_path(path):
            found = sorted(p for p in path.iterdir() if _is_image_path(p))
            if not found:
                raise InputError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.exists():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(text) if _is_image_path(Path(p)))
            if not found:
                raise InputError(f"{text}: no such file, folder or matching images")
        for p in found:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                out.append(p)
    return out


@dataclass
class ImageSource:
    """A 2D image read region by region.

    Attributes
    ----------
    path
        where it came from.
    array
        a lazily indexed array (zarr / numpy) holding the image.
    layout
        ``"yx"``, ``"yxc"`` or ``"cyx"`` (channels first, moved last on read).
    """

    path: Path
    array: Any
    layout: str

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        s = tuple(self.array.shape)
        return (s[1], s[2]) if self.layout == "cyx" else (s[0], s[1])

    @property
    def channels(self) -> int:
        if self.layout == "yx":
            return 1
        return int(self.array.shape[0] if self.layout == "cyx" else self.array.shape[2])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def read(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """The region ``[rows, cols]`` as an (h, w) or (h, w, C) numpy array."""
        try:
            if self.layout == "cyx":
                return np.moveaxis(np.asarray(self.array[:, rows, cols]), 0, -1)
            return np.asarray(self.array[rows, cols])
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise InputError(
                f"{self.path}: cannot read pixels {rows.start}:{rows.stop}, {cols.start}:{cols.stop} "
                f"({type(exc).__name__}: {exc}); the file may be truncated or corrupt"
            ) from exc


def _squeeze_layout(array: Any, path: Path) -> tuple[Any, str]:
    """Drop leading singleton axes and name the layout of what is left."""
    while array.ndim > 2 and array.shape[0] == 1 and not (array.ndim == 3 and array.shape[-1] <= 4):
        array = array[0] if not hasattr(array, "oindex") else _ZarrPlane(array)
    shape = tuple(array.shape)
    if len(shape) == 2:
        return array, "yx"
    if len(shape) == 3 and shape[-1] <= 4:
        return array, "yxc"
    if len(shape) == 3 and shape[0] <= 4:
        return array, "cyx"
    raise InputError(
        f"{path}: image of shape {shape} is not 2D (H, W) or (H, W, C) with at most 4 channels; "
        "segdiff-predict works on single 2D planes"
    )


class _ZarrPlane:
    """Lazy view of ``array[0]`` for arrays whose basic indexing would load everything."""

    def __init__(self, array: Any) -> None:
        self._a = array
        self.shape = tuple(array.shape[1:])
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        return self._a[(0, *key)]


def _open_tiff(path: Path) -> Any:
    import tifffile
    import zarr

    try:
        return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as exc:
        raise InputError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc


def _open_zarr(path: Path) -> Any:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises many types for a bad store; keep the traceback
        raise InputError(f"{path}: not a readable zarr array ({type(exc).__name__}: {exc})") from exc
    if hasattr(node, "shape"):
        return node
    # an OME-Zarr group: the full-resolution level named by its multiscales metadata, or "0"
    ms = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
    name = ms[0]["datasets"][0]["path"] if ms else "0"
    try:
        return node[name]
    except KeyError as exc:
        raise InputError(f"{path}: zarr group without an image array {name!r}") from exc


def _open_flat(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(path))
    except Exception as exc:  # Pillow raises OSError/SyntaxError/ValueError for truncated files
        raise InputError(f"{path}: not a readable image ({type(exc).__name__}: {exc}); the file may be truncated") from exc


def open_image(path: str | os.PathLike) -> ImageSource:
    """Open ``path`` for region reads (see the module docstring). Raises :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    name = path.name.lower()
    if name.endswith(".zarr"):
        array = _open_zarr(path)
    elif name.endswith((".tif", ".tiff")):
        array = _open_tiff(path)
    elif name.endswith((".png", ".jpg", ".jpeg")):
        array = _open_flat(path)
    else:
        raise InputError(f"{path}: unsupported image type; use one of {', '.join(IMAGE_SUFFIXES)}")
    if array.ndim < 2 or 0 in tuple(array.shape):
        raise InputError(f"{path}: image of shape {tuple(array.shape)} has no 2D plane")
    array, layout = _squeeze_layout(array, path)
    source = ImageSource(path, array, layout)
    _probe(source)
    return source


def _probe(source: ImageSource) -> None:
    """Read the last row so that a truncated file fails now, with its name, not mid-run."""
    h, w = source.shape
    source.read(slice(h - 1, h), slice(0, w))


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Atomic CSV write with a header row."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return atomic_write(path, text.getvalue())


def write_json(path: Path, data: Any) -> Path:
    """Atomic, indented JSON write."""
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=True))


class ZarrOutput:
    """One OME-Zarr image (a group with the full-resolution array ``"0"``), written chunk by
    chunk into a temporary folder and renamed onto its final name by :meth:`commit`."""

    def __init__(self, final: Path, shape: tuple[int, int], dtype: Any, chunk: int = 1024) -> None:
        import zarr

        self.final = Path(final)
        self.tmp = self.final.with_name(f".{self.final.name}.tmp-{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.root = zarr.open_group(str(self.tmp), mode="w", zarr_format=2)
        c = (min(chunk, shape[0]), min(chunk, shape[1]))
        self.array = self.root.create_array("0", shape=shape, chunks=c, dtype=dtype, fill_value=0)

    def commit(self) -> Path:
        """Write the OME multiscales metadata, rename the temporary folder onto the final name."""
        self.root.attrs["multiscales"] = [{
            "version": "0.4",
            "name": self.final.name,
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}],
        }]
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        """Remove the temporary folder."""
        shutil.rmtree(self.tmp, ignore_errors=True)
