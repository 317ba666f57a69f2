"""Cityscapes per-object samples (the interactive-annotation setting of the SegDiff paper).

Layout::

    root/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
    root/gtFine/<split>/<city>/<stem>_gtFine_polygons.json      (annotation="polygons")
    root/gtFine/<split>/<city>/<stem>_gtFine_instanceIds.png    (annotation="instanceIds")

Polygons
    ``{"imgHeight": H, "imgWidth": W, "objects": [{"label": ..., "polygon": [[x, y], ...],
    ["deleted": 0|1]}, ...]}``. Objects are drawn in file order, later ones on top, exactly as
    the official ``json2instanceImg`` does, so an object's *visible* mask is its polygon minus
    every later polygon. Following the official tool: deleted objects are ignored (they neither
    count nor occlude); a label unknown to Cityscapes that ends in ``group`` (``cargroup``) is a
    crowd of that class, drawn but not an instance; ``license plate`` (label id -1) is not drawn,
    so it does not cut holes in cars. Labels unknown to Cityscapes are drawn as occluders but
    never targets. Polygons are filled and outlined (like PIL ``ImageDraw.polygon(fill,
    outline)``); the interior test may differ from PIL by a pixel on slanted edges.
    Instance ids follow the official encoding: ``label_id * 1000 + n``, ``n`` counting the
    non-group objects of that class in file order from 0.
InstanceIds
    uint16/int32 PNG; value ``v >= 1000`` is instance ``v % 1000`` of label id ``v // 1000``;
    values below 1000 are stuff or crowds (no instance).

Every visible object of a selected class with at least ``min_area`` pixels is one sample with
``class_name`` the Cityscapes class, ``instance_id`` the full Cityscapes id (e.g. 26003) and
name ``"<stem>#<instance_id>"``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from segdiff_core.data.readers._base import (
    Annotation,
    DatasetError,
    IndexedDataset,
    ObjectMeta,
    Source,
)
from segdiff_core.data.readers._io import (
    as_label_image,
    list_files,
    read_bytes,
    read_image,
    read_mask,
    report_unmatched,
    require_dir,
)
from segdiff_core.data.readers._raster import polygon_pixels

#: Cityscapes label name -> label id (cityscapesscripts ``labels.py``)
CITYSCAPES_LABEL_IDS: dict[str, int] = {
    "unlabeled": 0, "ego vehicle": 1, "rectification border": 2, "out of roi": 3, "static": 4,
    "dynamic": 5, "ground": 6, "road": 7, "sidewalk": 8, "parking": 9, "rail track": 10,
    "building": 11, "wall": 12, "fence": 13, "guard rail": 14, "bridge": 15, "tunnel": 16,
    "pole": 17, "polegroup": 18, "traffic light": 19, "traffic sign": 20, "vegetation": 21,
    "terrain": 22, "sky": 23, "person": 24, "rider": 25, "car": 26, "truck": 27, "bus": 28,
    "caravan": 29, "trailer": 30, "train": 31, "motorcycle": 32, "bicycle": 33,
    "license plate": -1,
}
#: classes with instances (``hasInstances`` in cityscapesscripts)
CITYSCAPES_INSTANCE_CLASSES: frozenset[str] = frozenset({
    "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle",
    "bicycle", "license plate",
})
#: the 8 classes of the interactive-annotation benchmark used by SegDiff
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "bicycle", "bus", "person", "train", "truck", "motorcycle", "car", "rider",
)
_IMAGE_SUFFIX = "_leftImg8bit.png"
_POLYGON_SUFFIX = "_gtFine_polygons.json"
_INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
_ID_TO_NAME = {v: k for k, v in CITYSCAPES_LABEL_IDS.items()}


def _check_classes(classes: Sequence[str]) -> frozenset[str]:
    if isinstance(classes, str):
        classes = (classes,)
    chosen = frozenset(classes)
    allowed = CITYSCAPES_INSTANCE_CLASSES - {"license plate"}
    bad = sorted(chosen - allowed)
    if bad or not chosen:
        raise ValueError(
            f"unknown or non-instance Cityscapes class(es) {bad or '(none given)'}; choose from "
            f"{sorted(allowed)}"
        )
    return chosen


def _json_error(path: Path, what: str) -> DatasetError:
    return DatasetError(f"Cityscapes polygon file {path}: {what}")


class _PolygonTargets:
    """label value (1-based object index) -> (class, instance id), picklable."""

    def __init__(self, table: dict[int, ObjectMeta]) -> None:
        self.table = table

    def __call__(self, label: int) -> ObjectMeta | None:
        return self.table.get(int(label))


class _InstanceIdTargets:
    def __init__(self, label_ids: frozenset[int]) -> None:
        self.label_ids = label_ids

    def __call__(self, value: int) -> ObjectMeta | None:
        if value < 1000 or value // 1000 not in self.label_ids:
            return None
        return (_ID_TO_NAME[value // 1000], int(value))


def _parse_polygon_file(path: Path) -> tuple[tuple[int, int], list[dict]]:
    try:
        doc = json.loads(read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _json_error(path, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise _json_error(path, "expected a JSON object with imgHeight, imgWidth and objects")
    try:
        h, w = int(doc["imgHeight"]), int(doc["imgWidth"])
        objects = doc["objects"]
    except (KeyError, TypeError, ValueError) as exc:
        raise _json_error(path, f"missing or invalid imgHeight/imgWidth/objects ({exc!r})") from exc
    if h <= 0 or w <= 0 or not isinstance(objects, list):
        raise _json_error(path, f"invalid image size {h}x{w} or objects list")
    return (h, w), objects


def _polygon_array(obj: dict, index: int, path: Path) -> np.ndarray:
    """(N, 2) float (x, y) vertices of object ``index`` (0-based)."""
    try:
        pts = np.asarray(obj["polygon"], dtype=float)
    except (KeyError, TypeError, ValueError) as exc:
        raise _json_error(path, f"object {index} ({obj.get('label')!r}) has no valid polygon "
                                f"({exc!r})") from exc
    if pts.size == 0:
        return pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
        raise _json_error(path, f"object {index} ({obj.get('label')!r}) polygon must be a list "
                                f"of [x, y] pairs, got shape {pts.shape}")
    return pts


def rasterise_cityscapes_polygons(
    path: str | Path, classes: Sequence[str] = CITYSCAPES_CLASSES
) -> tuple[np.ndarray, dict[int, ObjectMeta]]:
    """Draw a ``*_gtFine_polygons.json`` file into an object-index label image.

    Returns
    -------
    labels
        int32 (imgHeight, imgWidth); pixel value ``k`` means object ``k - 1`` of the file's
        ``objects`` list is visible there (0 = nothing drawn).
    targets
        ``k -> (class_name, cityscapes_instance_id)`` for objects of ``classes`` that are
        instances (not groups, not deleted).
    """
    p = Path(path)
    wanted = _check_classes(classes)
    shape, objects = _parse_polygon_file(p)
    labels = np.zeros(shape, dtype=np.int32)
    targets: dict[int, ObjectMeta] = {}
    counters: dict[str, int] = {}
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("label"), str):
            raise _json_error(p, f"object {index} has no string 'label'")
        if obj.get("deleted", 0):
            continue
        label, is_group = obj["label"], False
        if label not in CITYSCAPES_LABEL_IDS and label.endswith("group"):
            label, is_group = label[: -len("group")], True
        label_id = CITYSCAPES_LABEL_IDS.get(label)
        if label_id is not None and label_id < 0:
            continue  # license plate: not drawn by the official tools
        pts = _polygon_array(obj, index, p)
        if label in CITYSCAPES_INSTANCE_CLASSES and label_id is not None and not is_group:
            instance_id = label_id * 1000 + counters.get(label, 0)
            counters[label] = counters.get(label, 0) + 1
            if label in wanted:
                targets[index + 1] = (label, instance_id)
        rr, cc = polygon_pixels(pts[:, 1], pts[:, 0], shape, outline=True)
        labels[rr, cc] = index + 1
    return labels, targets


class CityscapesPolygonSource(Source):
    def __init__(self, stem: str, image_path: Path, json_path: Path, classes: frozenset[str]):
        self.name = stem
        self.image_desc = str(image_path)
        self.image_path, self.json_path, self.classes = image_path, json_path, classes

    def load_image(self) -> np.ndarray:
        return read_image(self.image_path)

    def load_annotation(self) -> Annotation:
        labels, targets = rasterise_cityscapes_polygons(self.json_path, tuple(self.classes))
        return Annotation(labels, str(self.json_path), target=_PolygonTargets(targets))


class CityscapesInstanceIdSource(Source):
    def __init__(self, stem: str, image_path: Path, png_path: Path, classes: frozenset[str]):
        self.name = stem
        self.image_desc = str(image_path)
        self.image_path, self.png_path = image_path, png_path
        self._target = _InstanceIdTargets(frozenset(CITYSCAPES_LABEL_IDS[c] for c in classes))

    def load_image(self) -> np.ndarray:
        return read_image(self.image_path)

    def load_annotation(self) -> Annotation:
        labels = as_label_image(read_mask(self.png_path), self.png_path)
        return Annotation(labels, str(self.png_path), target=self._target)


class CityscapesDataset(IndexedDataset):
    """Per-object samples of the Cityscapes instance classes.

    Parameters
    ----------
    root
        Folder holding ``leftImg8bit/`` and ``gtFine/``.
    split
        ``"train"``, ``"val"`` or ``"test"`` (any subfolder name of ``leftImg8bit``).
    classes
        Target classes (default: the paper's 8: bicycle, bus, person, train, truck,
        motorcycle, car, rider). Other objects still occlude.
    annotation
        ``"polygons"``, ``"instanceIds"`` or ``"auto"`` (per image: the polygon JSON if present,
        else the instanceIds PNG).
    min_area
        Objects whose *visible* area is smaller are skipped (``self.skipped``).
    strict
        Raise instead of warn on images without annotation or annotations without image.
    cache_images
        How many decoded images to keep.

    Annotations are read once here to index the objects; images are decoded on access.
    See the module docstring for the drawing and id rules.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        classes: Sequence[str] = CITYSCAPES_CLASSES,
        *,
        annotation: Literal["polygons", "instanceIds", "auto"] = "auto",
        min_area: int = 16,
        strict: bool = False,
        cache_images: int = 2,
    ) -> None:
        if annotation not in ("polygons", "instanceIds", "auto"):
            raise ValueError(
                f"annotation must be 'polygons', 'instanceIds' or 'auto', got {annotation!r}"
            )
        chosen = _check_classes(classes)
        root_p = require_dir(root, "Cityscapes root")
        img_split = require_dir(root_p / "leftImg8bit" / split, "Cityscapes image folder")
        gt_split = require_dir(root_p / "gtFine" / split, "Cityscapes annotation folder")
        sources: list[Source] = []
        lonely_images: list[Path] = []
        lonely_annotations: list[Path] = []
        for city_dir in sorted(p for p in img_split.iterdir() if p.is_dir()):
            gt_city = gt_split / city_dir.name
            images = {p.name[: -len(_IMAGE_SUFFIX)]: p
                      for p in list_files(city_dir, {".png"}) if p.name.endswith(_IMAGE_SUFFIX)}
            polys = _by_stem(gt_city, _POLYGON_SUFFIX)
            insts = _by_stem(gt_city, _INSTANCE_SUFFIX)
            for stem in sorted(images):
                src = _make_source(stem, images[stem], polys.get(stem), insts.get(stem),
                                   annotation, chosen)
                if src is None:
                    lonely_images.append(images[stem])
                else:
                    sources.append(src)
            used = {"polygons": polys, "instanceIds": insts, "auto": {**insts, **polys}}[annotation]
            lonely_annotations += [used[s] for s in sorted(used) if s not in images]
        unmatched = report_unmatched(img_split, lonely_images, lonely_annotations,
                                     annotation_word="annotation", strict=strict)
        self.root = root_p
        self.split = split
        self.classes = tuple(c for c in CITYSCAPES_CLASSES if c in chosen) + tuple(
            sorted(chosen - set(CITYSCAPES_CLASSES)))
        super().__init__(sources, per_object=True, min_area=min_area,
                         origin=f"{root_p} (split {split!r})", unmatched=unmatched,
                         cache_images=cache_images)


def _by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    ext = Path(suffix).suffix
    return {p.name[: -len(suffix)]: p for p in list_files(folder, {ext}) if p.name.endswith(suffix)}


def _make_source(stem: str, image: Path, poly: Path | None, inst: Path | None,
                 annotation: str, classes: frozenset[str]) -> Source | None:
    if annotation in ("polygons", "auto") and poly is not None:
        return CityscapesPolygonSource(stem, image, poly, classes)
    if annotation in ("instanceIds", "auto") and inst is not None:
        return CityscapesInstanceIdSource(stem, image, inst, classes)
    return None
