"""MoNuSeg: H&E tissue images with Aperio ImageScope XML nucleus outlines.

Annotation format::

    <Annotations MicronsPerPixel="...">
      <Annotation Id="1" ...>
        <Regions>
          <Region Id="1" ...>
            <Vertices>
              <Vertex X="col" Y="row" [Z="0"]/>
              ...

Each ``Region`` is one nucleus; ``X`` is the column and ``Y`` the row, in pixels. Regions are
rasterised with :func:`skimage.draw.polygon` (pixel centres at integer coordinates, as the
common MoNuSeg conversion scripts do) in file order into an instance label image; where two
regions overlap, the **later region overwrites the earlier one**, so the earlier nucleus loses
the shared pixels. Region ``k`` (1-based, in file order over all ``Annotation`` elements) gets
label and ``instance_id`` ``k``.

XML is parsed with :mod:`xml.etree.ElementTree`, which does not resolve external entities; files
with a DOCTYPE or ENTITY declaration are refused outright (entity-expansion bombs).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import numpy as np

from segdiff_core.data.readers._base import (
    Annotation,
    DatasetError,
    IndexedDataset,
    ObjectMeta,
    Source,
)
from segdiff_core.data.readers._io import (
    check_xml_bytes,
    image_shape,
    index_by_stem,
    list_files,
    pair_by_stem,
    read_bytes,
    read_image,
    report_unmatched,
    require_dir,
)
from segdiff_core.data.readers._raster import rasterise_polygons

MONUSEG_IMAGE_EXTENSIONS = frozenset({".tif", ".tiff", ".png"})

#: (image folder, annotation folder) layouts tried in order; "." is the root itself
MONUSEG_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("Tissue Images", "Annotations"),
    ("images", "annotations"),
    (".", "."),
)


def read_aperio_regions(path: str | Path) -> list[np.ndarray]:
    """Polygons of an Aperio ImageScope XML annotation file.

    Returns
    -------
    One float64 (N, 2) array of (row, col) = (Y, X) vertices per ``Region``, in file order.
    A region without vertices gives an empty (0, 2) array.

    Raises
    ------
    DatasetError
        Naming the file: unreadable, not well-formed XML, a DOCTYPE/ENTITY declaration, a root
        element other than ``Annotations``, or a vertex without numeric ``X``/``Y``.
    """
    p = Path(path)
    data = read_bytes(p)
    check_xml_bytes(data, p)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DatasetError(f"cannot parse XML annotation file {p}: {exc}") from exc
    if root.tag != "Annotations":
        raise DatasetError(
            f"{p} is not an Aperio annotation file: root element is <{root.tag}>, expected "
            "<Annotations>"
        )
    polygons: list[np.ndarray] = []
    for k, region in enumerate(root.iterfind("./Annotation/Regions/Region"), start=1):
        vertices = region.findall("./Vertices/Vertex")
        try:
            pts = np.array([(float(v.attrib["Y"]), float(v.attrib["X"])) for v in vertices],
                           dtype=float).reshape(-1, 2)
        except (KeyError, ValueError) as exc:
            raise DatasetError(
                f"{p}: region {k} (Id={region.get('Id')!r}) has a vertex without numeric X and "
                f"Y attributes ({type(exc).__name__}: {exc})"
            ) from exc
        if not np.all(np.isfinite(pts)):
            raise DatasetError(f"{p}: region {k} (Id={region.get('Id')!r}) has non-finite vertices")
        polygons.append(pts)
    return polygons


def _nucleus_target(label: int) -> ObjectMeta:
    return ("nucleus", int(label))


class MoNuSegSource(Source):
    """A MoNuSeg tissue image and its XML annotation."""

    def __init__(self, image_path: Path, xml_path: Path) -> None:
        self.image_path = image_path
        self.xml_path = xml_path
        self.name = image_path.name
        self.image_desc = str(image_path)

    def load_image(self) -> np.ndarray:
        return read_image(self.image_path)

    def load_annotation(self) -> Annotation:
        shape = image_shape(self.image_path)  # header only
        labels = rasterise_polygons(read_aperio_regions(self.xml_path), shape)
        return Annotation(labels, str(self.xml_path), target=_nucleus_target)


def _find_layout(root: Path) -> tuple[Path, Path]:
    for img_sub, ann_sub in MONUSEG_LAYOUTS:
        img_dir, ann_dir = root / img_sub, root / ann_sub
        if not (img_dir.is_dir() and ann_dir.is_dir()):
            continue
        if img_sub == "." and not list_files(root, {".xml"}):
            continue
        return img_dir.resolve() if img_sub == "." else img_dir, ann_dir
    raise DatasetError(
        f"{root} does not look like a MoNuSeg folder; expected 'Tissue Images/' + "
        "'Annotations/', or 'images/' + 'annotations/', or .tif and .xml files directly in it "
        "(or pass images=... and annotations=...)"
    )


class MoNuSegDataset(IndexedDataset):
    """MoNuSeg nuclei from tissue images + Aperio XML annotations.

    Parameters
    ----------
    root
        Dataset folder. Layouts tried in order: ``Tissue Images/`` + ``Annotations/`` (the
        training release), ``images/`` + ``annotations/``, and .tif + .xml side by side in
        ``root`` (the test release). Images and XML files are paired by stem.
    mode
        ``"instances"`` (default): one box-prompt sample per nucleus (``class_name="nucleus"``,
        ``instance_id`` = region number, name ``"<image file>#<k>"``); the XML files are parsed
        once here to index the nuclei. ``"binary"``: one sample per image whose mask is the
        union of all nuclei; nothing is read until accessed.
    min_area
        Instance mode: nuclei whose visible area is smaller are skipped (``self.skipped``).
    images, annotations
        Explicit subfolder names (relative to ``root``), overriding the layout search.
    strict
        Raise instead of warn on images without XML or XML without image.
    cache_images
        How many decoded images to keep.

    Instance label images are available via :meth:`instance_labels`.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        mode: Literal["instances", "binary"] = "instances",
        min_area: int = 16,
        images: str | None = None,
        annotations: str | None = None,
        strict: bool = False,
        cache_images: int = 2,
    ) -> None:
        if mode not in ("instances", "binary"):
            raise ValueError(f"mode must be 'instances' or 'binary', got {mode!r}")
        if (images is None) != (annotations is None):
            raise ValueError("pass both images= and annotations= folder names, or neither")
        root_p = require_dir(root, "MoNuSeg root")
        if images is None:
            img_dir, ann_dir = _find_layout(root_p)
        else:
            img_dir = require_dir(root_p / images, "image folder")
            ann_dir = require_dir(root_p / str(annotations), "annotation folder")
        pairs, lonely_images, lonely_xml = pair_by_stem(
            index_by_stem(list_files(img_dir, MONUSEG_IMAGE_EXTENSIONS)),
            index_by_stem(list_files(ann_dir, {".xml"})),
        )
        unmatched = report_unmatched(root_p, lonely_images, lonely_xml,
                                     annotation_word="XML annotation", strict=strict)
        self.root = root_p
        self.mode = mode
        sources = [MoNuSegSource(img, xml) for _, img, xml in pairs]
        super().__init__(sources, per_object=(mode == "instances"), min_area=min_area,
                         origin=str(root_p), unmatched=unmatched, cache_images=cache_images)

    def instance_labels(self, image_index: int) -> np.ndarray:
        """int32 (H, W) instance label image of image ``image_index`` (0 = background,
        region ``k`` = label ``k``), rasterised fresh from its XML."""
        if not 0 <= image_index < self.num_images:
            raise IndexError(f"image index {image_index} out of range for {self.num_images} images")
        return self.sources[image_index].load_annotation().labels
