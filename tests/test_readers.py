"""Dataset readers on small fixture files written in the real formats (TIFF via tifffile, PNG/JPEG
via scikit-image, Aperio XML, Cityscapes JSON), checked against hand-computed masks and boxes."""
from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import io as skio

from segdiff_core.data.boxes import Box
from segdiff_core.data.readers import (
    CityscapesDataset,
    DatasetError,
    DatasetWarning,
    FolderDataset,
    InstancePromptDataset,
    LabelsWriteError,
    MoNuSegDataset,
    NoObjectError,
    Sample,
    Subset,
    VaihingenDataset,
    central_component,
    central_object,
    pick_objects,
    read_aperio_regions,
    split_dataset,
    split_indices,
    write_pair,
    write_tiff,
)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(path, arr, check_contrast=False)
    return path


def tif(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr)
    return path


def rect(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rows, cols] = True
    return m


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00this is not an image\xff" * 8)


# --------------------------------------------------------------------------------------------
# FolderDataset
# --------------------------------------------------------------------------------------------
@pytest.fixture
def binary_root(tmp_path: Path) -> Path:
    """a.png RGB + 0/255 PNG mask; b.tif uint16 + 0/1 TIFF mask (two blobs); c.png empty."""
    tmp_path = tmp_path / "binary"
    png(tmp_path / "images/a.png", rgb(12, 10))
    m = np.zeros((12, 10), np.uint8)
    m[2:6, 3:8] = 255
    png(tmp_path / "masks/a.png", m)
    tif(tmp_path / "images/b.tif", np.arange(120, dtype=np.uint16).reshape(12, 10) * 300)
    m = np.zeros((12, 10), np.uint8)
    m[0:2, 0:2] = 1
    m[8:12, 6:10] = 1
    tif(tmp_path / "masks/b.tif", m)
    png(tmp_path / "images/c.png", rgb(12, 10, seed=2)[..., 0])
    png(tmp_path / "masks/c.png", np.zeros((12, 10), np.uint8))
    return tmp_path


def test_folder_binary_masks_boxes_and_images(binary_root: Path) -> None:
    ds = FolderDataset(binary_root)
    assert ds.mode == "binary" and len(ds) == 3
    a, b, c = ds[0], ds[1], ds[2]
    assert [s.name for s in (a, b, c)] == ["a.png", "b.tif", "c.png"]
    np.testing.assert_array_equal(a.image, rgb(12, 10))
    assert a.image.dtype == np.uint8 and a.image.shape == (12, 10, 3)
    np.testing.assert_array_equal(a.mask, rect((12, 10), slice(2, 6), slice(3, 8)))
    assert a.box == Box(2, 3, 6, 8)
    assert b.image.dtype == np.uint16
    np.testing.assert_array_equal(b.image, np.arange(120, dtype=np.uint16).reshape(12, 10) * 300)
    assert b.mask.sum() == 4 + 16 and b.box == Box(0, 0, 12, 10)
    assert not c.mask.any() and c.box is None
    assert a.class_name is None and a.instance_id is None


@pytest.fixture
def instance_root(tmp_path: Path) -> Path:
    """cells.tif: labels 1 (20 px), 7 (20 px), 3 (4 px); more.png: labels 2 (16 px), 5 (15 px)."""
    tmp_path = tmp_path / "instances"
    tif(tmp_path / "images/cells.tif", np.full((20, 20), 9, np.uint8))
    lab = np.zeros((20, 20), np.int32)
    lab[1:5, 1:6] = 1
    lab[10:15, 10:14] = 7
    lab[18:20, 0:2] = 3
    tif(tmp_path / "masks/cells.tif", lab)
    png(tmp_path / "images/more.png", rgb(8, 9))
    lab = np.zeros((8, 9), np.uint16)
    lab[0:4, 0:4] = 2
    lab[5:8, 4:9] = 5
    png(tmp_path / "masks/more.png", lab)
    return tmp_path


def test_folder_instances_one_sample_per_object(instance_root: Path) -> None:
    ds = FolderDataset(instance_root, mode="instances")
    assert len(ds) == 3 and ds.num_images == 2
    got = [(s.name, s.instance_id, s.box) for s in ds]
    assert got == [
        ("cells.tif#1", 1, Box(1, 1, 5, 6)),
        ("cells.tif#7", 7, Box(10, 10, 15, 14)),
        ("more.png#2", 2, Box(0, 0, 4, 4)),
    ]
    np.testing.assert_array_equal(ds[1].mask, rect((20, 20), slice(10, 15), slice(10, 14)))
    np.testing.assert_array_equal(ds[2].mask, rect((8, 9), slice(0, 4), slice(0, 4)))
    assert ds[2].image.shape == (8, 9, 3)
    assert ds.skipped == ["cells.tif: 1 object(s) smaller than 16 px",
                          "more.png: 1 object(s) smaller than 16 px"]
    assert [ds.image_key(i) for i in range(3)] == ["cells.tif", "cells.tif", "more.png"]


def test_folder_min_area_and_binary_mode_on_labels(instance_root: Path) -> None:
    assert len(FolderDataset(instance_root, mode="instances", min_area=4)) == 5
    assert len(FolderDataset(instance_root, mode="instances", min_area=17)) == 2
    ds = FolderDataset(instance_root, mode="binary")
    assert len(ds) == 2 and ds[0].mask.sum() == 20 + 20 + 4 and ds[0].box == Box(1, 0, 20, 14)


def test_folder_auto_mode(binary_root: Path, instance_root: Path) -> None:
    assert FolderDataset(binary_root, mode="auto").mode == "binary"
    auto = FolderDataset(instance_root, mode="auto")
    assert auto.mode == "instances" and len(auto) == 3


def test_folder_palette_png_mask_gives_indices(tmp_path: Path) -> None:
    from PIL import Image

    lab = np.zeros((6, 7), np.uint8)
    lab[0:4, 0:4] = 1
    lab[2:6, 4:7] = 2
    im = Image.fromarray(lab).convert("P")
    im.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * 759)
    (tmp_path / "masks").mkdir()
    im.save(tmp_path / "masks/p.png")
    png(tmp_path / "images/p.png", rgb(6, 7))
    ds = FolderDataset(tmp_path, mode="instances", min_area=1)
    assert [s.instance_id for s in ds] == [1, 2]
    assert ds[1].box == Box(2, 4, 6, 7)


def test_folder_jpeg_mask_binary_only(tmp_path: Path) -> None:
    png(tmp_path / "images/j.png", rgb(24, 24))
    m = np.zeros((24, 24), np.uint8)
    m[8:16, 8:16] = 255
    png(tmp_path / "masks/j.jpg", m)
    ds = FolderDataset(tmp_path)
    np.testing.assert_array_equal(ds[0].mask, m > 0)
    with pytest.raises(DatasetError, match=r"j\.jpg.*lossy"):
        FolderDataset(tmp_path, mode="instances")


def test_folder_unmatched_files_reported(binary_root: Path) -> None:
    png(binary_root / "images/orphan.png", rgb(4, 4))
    tif(binary_root / "masks/stray.tif", np.ones((5, 5), np.uint8))
    (binary_root / "images/notes.txt").write_text("ignored, not an image")
    with pytest.warns(DatasetWarning, match=r"orphan\.png.*stray\.tif"):
        ds = FolderDataset(binary_root)
    assert len(ds) == 3
    assert sorted(p.name for p in ds.unmatched) == ["orphan.png", "stray.tif"]
    with pytest.raises(DatasetError, match=r"without a mask: orphan\.png"):
        FolderDataset(binary_root, strict=True)


def test_folder_duplicate_stem_is_an_error(binary_root: Path) -> None:
    png(binary_root / "images/a.tif", rgb(4, 4))
    with pytest.raises(DatasetError, match=r"share the name 'a'"):
        FolderDataset(binary_root)


def test_folder_size_mismatch_names_files(tmp_path: Path) -> None:
    png(tmp_path / "images/x.png", rgb(10, 10))
    png(tmp_path / "masks/x.png", np.ones((8, 10), np.uint8))
    ds = FolderDataset(tmp_path)
    with pytest.raises(DatasetError, match=r"images/x\.png is 10x10 .*masks/x\.png is 8x10"):
        ds[0]


def test_folder_corrupt_files_are_named(binary_root: Path, instance_root: Path) -> None:
    garbage(binary_root / "images/a.png")
    ds = FolderDataset(binary_root)
    with pytest.raises(DatasetError, match=str(binary_root / "images/a.png")):
        ds[0]
    assert ds[1].name == "b.tif"  # the rest stays usable
    # truncated TIFF label image: found while indexing objects
    path = instance_root / "masks/cells.tif"
    path.write_bytes(path.read_bytes()[:150])
    with pytest.raises(DatasetError, match=str(path)):
        FolderDataset(instance_root, mode="instances")


def test_folder_is_lazy_and_caches_last_image(instance_root: Path) -> None:
    ds = FolderDataset(instance_root, mode="instances")
    # corrupting an image after indexing only shows on access: nothing was decoded yet
    garbage(instance_root / "images/more.png")
    first = ds[0]
    with pytest.raises(DatasetError, match=r"more\.png"):
        ds[2]
    # cells.tif is cached: its second object still loads after the file is gone
    (instance_root / "images/cells.tif").unlink()
    second = ds[1]
    np.testing.assert_array_equal(second.image, first.image)
    # samples are private copies
    first.image[...] = 0
    assert ds[1].image.max() == 9


def test_folder_binary_mode_does_not_read_masks(binary_root: Path) -> None:
    garbage(binary_root / "masks/b.tif")
    ds = FolderDataset(binary_root)  # no error: masks are read on access
    with pytest.raises(DatasetError, match=r"masks/b\.tif"):
        ds[1]


def test_folder_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        FolderDataset(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"mask folder .*masks does not exist"):
        FolderDataset(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match=f"no usable samples in {tmp_path}"):
        FolderDataset(tmp_path)


def test_folder_all_objects_too_small_is_an_error(instance_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"no usable samples in .*smaller than 100 px"):
        FolderDataset(instance_root, mode="instances", min_area=100)


def test_folder_bad_arguments(binary_root: Path) -> None:
    with pytest.raises(ValueError, match="mode must be"):
        FolderDataset(binary_root, mode="semantic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_area"):
        FolderDataset(binary_root, mode="instances", min_area=0)


def test_indexing_iteration_and_pickling(instance_root: Path) -> None:
    ds = FolderDataset(instance_root, mode="instances")
    assert ds[-1].name == "more.png#2"
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(TypeError):
        ds["0"]  # type: ignore[index]
    assert [s.name for s in ds] == [ds[i].name for i in range(len(ds))]
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._cache._data == {}  # decoded pixels are not shipped
    assert clone[2].box == Box(0, 0, 4, 4)


# --------------------------------------------------------------------------------------------
# InstancePromptDataset
# --------------------------------------------------------------------------------------------
def test_instance_prompt_in_memory() -> None:
    lab = np.zeros((10, 12), np.int64)
    lab[0:4, 0:5] = 4
    lab[5:10, 6:12] = 9
    lab[9, 0] = 2  # 1 px: skipped
    img = np.linspace(0, 1, 120, dtype=np.float32).reshape(10, 12)
    ds = InstancePromptDataset([img], [lab])
    assert [(s.name, s.instance_id, s.box) for s in ds] == [
        ("image0#4", 4, Box(0, 0, 4, 5)),
        ("image0#9", 9, Box(5, 6, 10, 12)),
    ]
    assert ds[0].image.dtype == np.float32
    assert ds.skipped == ["image0: 1 object(s) smaller than 16 px"]
    assert len(InstancePromptDataset([img], [lab], min_area=1, names=["z"])) == 3


def test_instance_prompt_validates_inputs() -> None:
    img = np.zeros((4, 4))
    with pytest.raises(DatasetError, match="4x4 but its label image is 4x5"):
        InstancePromptDataset([img], [np.zeros((4, 5), int)])
    with pytest.raises(DatasetError, match="negative labels"):
        InstancePromptDataset([img], [np.full((4, 4), -1)])
    with pytest.raises(DatasetError, match="non-integer"):
        InstancePromptDataset([img], [np.full((4, 4), 0.5)])
    with pytest.raises(DatasetError, match="1 images but 2 label images"):
        InstancePromptDataset([img], [np.ones((4, 4), int)] * 2)
    with pytest.raises(DatasetError, match="unique; repeated: a"):
        InstancePromptDataset([img, img], [np.ones((4, 4), int)] * 2, names=["a", "a"], min_area=1)
    with pytest.raises(DatasetError, match="no usable samples in the 1 given label image"):
        InstancePromptDataset([img], [np.zeros((4, 4), int)])


def test_instance_prompt_from_synthetic_folder(tmp_path: Path) -> None:
    for i in range(2):
        lab = np.zeros((16, 16), np.uint16)
        lab[i:i + 5, 2:6] = 1
        lab[8:12, 8:16] = 2
        tif(tmp_path / f"images/syn_{i:03d}.tif", np.full((16, 16), i, np.float32))
        tif(tmp_path / f"masks/syn_{i:03d}.tif", lab)
    ds = InstancePromptDataset.from_folder(tmp_path)
    assert len(ds) == 4 and ds.root == tmp_path
    assert ds[2].name == "syn_001.tif#1" and ds[2].box == Box(1, 2, 6, 6)
    assert ds[3].image.dtype == np.float32 and ds[3].image[0, 0] == 1.0
    # paths can be mixed with arrays
    mixed = InstancePromptDataset([tmp_path / "images/syn_000.tif"], [np.asarray(
        tifffile.imread(tmp_path / "masks/syn_000.tif"))])
    assert mixed[0].name == "syn_000.tif#1"


def test_write_pair_round_trips_through_the_folder_reader(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    lab = np.zeros((20, 24), np.int64)
    lab[2:8, 3:9], lab[10:18, 12:20] = 7, 300
    img_path, mask_path = write_pair(tmp_path, "cell01", rgb, lab)
    assert (img_path, mask_path) == (tmp_path / "images/cell01.tif", tmp_path / "masks/cell01.tif")
    assert tifffile.imread(mask_path).dtype == np.uint16  # smallest type that holds 300
    with tifffile.TiffFile(img_path) as tf:
        assert tf.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    ds = InstancePromptDataset.from_folder(tmp_path)
    assert [s.name for s in ds] == ["cell01.tif#7", "cell01.tif#300"]
    assert np.array_equal(ds[0].image, rgb) and ds[1].box == Box(10, 12, 18, 20)
    for bad, match in (((rgb, lab[:, :5]), "differ in size"), ((rgb, lab[None]), "2D"),
                       ((rgb, -lab), ">= 0"), ((rgb, lab * 0.5), "integers")):
        with pytest.raises(LabelsWriteError, match=match):
            write_pair(tmp_path, "cell02", *bad)
    with pytest.raises(LabelsWriteError, match="invalid file name"):
        write_pair(tmp_path, "../up", rgb, lab)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["cell01.tif", "cell01.tif"]


def test_failed_writes_keep_the_earlier_file_whole(tmp_path: Path) -> None:
    """A write that fails (labels refused, or the encoder raising) leaves the file it would have
    replaced byte for byte, and no temporary file behind."""
    lab = np.zeros((16, 16), np.uint8)
    lab[4:9, 4:9] = 1
    _, mask_path = write_pair(tmp_path, "a", np.ones((16, 16), np.float32), lab)
    before = mask_path.read_bytes()
    with pytest.raises(LabelsWriteError):
        write_pair(tmp_path, "a", np.ones((16, 16), np.float32), lab.astype(np.int8) - 2)
    with pytest.raises(ValueError):
        write_tiff(mask_path, lab, photometric="rgb")  # a 2D array cannot be RGB
    assert mask_path.read_bytes() == before
    assert sorted(p.name for p in mask_path.parent.iterdir()) == ["a.tif"]


def test_pick_objects_respects_min_area_and_draws_distinct_ids() -> None:
    labels = np.zeros((20, 20), np.int32)
    labels[0:5, 0:5] = 1  # 25 px
    labels[10:12, 10:12] = 2  # 4 px: too small
    labels[6:10, 0:8] = 3  # 32 px
    for seed in range(5):
        picked = pick_objects(labels, 5, np.random.default_rng(seed), min_area=16)
        assert sorted(picked.tolist()) == [1, 3]
    assert pick_objects(labels, 1, np.random.default_rng(0), min_area=16).size == 1
    assert pick_objects(labels, 3, np.random.default_rng(0), min_area=100).size == 0


# --------------------------------------------------------------------------------------------
# MoNuSeg
# --------------------------------------------------------------------------------------------
def aperio_xml(regions: list[list[tuple[float, float]]], header: str = "") -> str:
    """Aperio ImageScope XML; each region a list of (X, Y) vertices."""
    parts = [f'<?xml version="1.0"?>{header}<Annotations MicronsPerPixel="0.25">'
             '<Annotation Id="1" Type="4"><Attributes/><Regions>'
             '<RegionAttributeHeaders/>']
    for k, verts in enumerate(regions, start=1):
        vs = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in verts)
        parts.append(f'<Region Id="{k}" Type="0"><Attributes/><Vertices>{vs}</Vertices></Region>')
    parts.append("</Regions><Plots/></Annotation></Annotations>")
    return "".join(parts)


def box_poly(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


MONUSEG_REGIONS = [
    box_poly(2, 3, 8, 7),      # rows 3..7, cols 2..8: 35 px, loses 9 to region 2
    box_poly(6, 5, 12, 10),    # rows 5..10, cols 6..12: 42 px
    box_poly(16, 1, 17, 2),    # 4 px: below min_area
    box_poly(15, 14, 25, 19),  # clipped to rows 14..19, cols 15..19: 30 px
]


def expected_monuseg_labels() -> np.ndarray:
    lab = np.zeros((20, 20), np.int32)
    lab[3:8, 2:9] = 1
    lab[5:11, 6:13] = 2
    lab[1:3, 16:18] = 3
    lab[14:20, 15:20] = 4
    return lab


def write_monuseg(root: Path, img_dir: str, ann_dir: str, stems=("TCGA-A",)) -> None:
    for i, stem in enumerate(stems):
        tif(root / img_dir / f"{stem}.tif", rgb(20, 20, seed=i))
        (root / ann_dir).mkdir(parents=True, exist_ok=True)
        (root / ann_dir / f"{stem}.xml").write_text(aperio_xml(MONUSEG_REGIONS))


@pytest.mark.parametrize("img_dir,ann_dir", [("Tissue Images", "Annotations"),
                                             ("images", "annotations"), (".", ".")])
def test_monuseg_instances(tmp_path: Path, img_dir: str, ann_dir: str) -> None:
    write_monuseg(tmp_path, img_dir, ann_dir)
    ds = MoNuSegDataset(tmp_path)
    np.testing.assert_array_equal(ds.instance_labels(0), expected_monuseg_labels())
    assert [(s.instance_id, s.box, int(s.mask.sum())) for s in ds] == [
        (1, Box(3, 2, 8, 9), 26),
        (2, Box(5, 6, 11, 13), 42),
        (4, Box(14, 15, 20, 20), 30),
    ]
    s = ds[0]
    assert s.name == "TCGA-A.tif#1" and s.class_name == "nucleus"
    np.testing.assert_array_equal(s.mask, expected_monuseg_labels() == 1)
    np.testing.assert_array_equal(s.image, rgb(20, 20, seed=0))
    assert ds.skipped == ["TCGA-A.tif: 1 object(s) smaller than 16 px"]


def test_monuseg_binary_mode_and_lazy_images(tmp_path: Path) -> None:
    write_monuseg(tmp_path, "Tissue Images", "Annotations", stems=("a", "b"))
    ds = MoNuSegDataset(tmp_path, mode="binary")
    assert len(ds) == 2
    np.testing.assert_array_equal(ds[1].mask, expected_monuseg_labels() > 0)
    assert ds[1].box == Box(1, 2, 20, 20) and ds[1].name == "b.tif"
    inst = MoNuSegDataset(tmp_path)
    garbage(tmp_path / "Tissue Images/b.tif")  # after indexing: only fails on access
    assert inst[0].instance_id == 1
    with pytest.raises(DatasetError, match=r"Tissue Images/b\.tif"):
        inst[3]


def test_read_aperio_regions_vertex_order(tmp_path: Path) -> None:
    p = tmp_path / "r.xml"
    p.write_text(aperio_xml([[(1.5, 2.25), (3, 4), (5, 0)], []]))
    polys = read_aperio_regions(p)
    np.testing.assert_array_equal(polys[0], [[2.25, 1.5], [4, 3], [0, 5]])  # (row=Y, col=X)
    assert polys[1].shape == (0, 2)


@pytest.mark.parametrize("content,match", [
    (aperio_xml(MONUSEG_REGIONS, header='<!DOCTYPE lolz [<!ENTITY lol "lol">]>'),
     "DOCTYPE/ENTITY"),
    ("<Annotations><Annotation><Regions><Region>", "cannot parse XML"),
    (aperio_xml([[("abc", 1), (2, 2), (3, 3)]]), "region 1 .* numeric X and Y"),
    ("<?xml version='1.0'?><Root/>", "not an Aperio annotation file"),
])
def test_monuseg_bad_xml_names_file(tmp_path: Path, content: str, match: str) -> None:
    write_monuseg(tmp_path, "images", "annotations")
    xml = tmp_path / "annotations/TCGA-A.xml"
    xml.write_text(content)
    with pytest.raises(DatasetError, match=match) as err:
        MoNuSegDataset(tmp_path)
    assert str(xml) in str(err.value)


def test_monuseg_layout_errors_and_unmatched(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        MoNuSegDataset(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="does not look like a MoNuSeg folder"):
        MoNuSegDataset(tmp_path)
    write_monuseg(tmp_path, "images", "annotations", stems=("a", "b"))
    (tmp_path / "annotations/b.xml").unlink()
    with pytest.warns(DatasetWarning, match=r"1 image\(s\) without a XML annotation: b\.tif"):
        ds = MoNuSegDataset(tmp_path)
    assert ds.num_images == 1
    (tmp_path / "annotations/a.xml").write_text(aperio_xml([]))
    with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match="no usable samples"):
        MoNuSegDataset(tmp_path)


# --------------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------------
def cs_rect(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


CS_OBJECTS = [
    {"label": "road", "polygon": cs_rect(0, 0, 29, 19)},
    {"label": "car", "polygon": cs_rect(2, 3, 11, 10)},          # 80 px, 26000
    {"label": "person", "polygon": cs_rect(8, 6, 14, 15)},       # 70 px, 24000, hides 20 of car
    {"label": "cargroup", "polygon": cs_rect(0, 0, 3, 4)},       # crowd, hides 4 px of car
    {"label": "car", "polygon": cs_rect(2, 3, 11, 10), "deleted": 1},  # ignored entirely
    {"label": "license plate", "polygon": cs_rect(5, 9, 6, 10)},  # not drawn
    {"label": "car", "polygon": cs_rect(20, 15, 21, 16)},        # 4 px: too small, 26001
    {"label": "bicycle", "polygon": cs_rect(20, 1, 27, 8)},      # 64 px, 33000
    {"label": "truck", "polygon": cs_rect(0, 17, 5, 19)},        # 18 px, 27000
    {"label": "mystery thing", "polygon": cs_rect(26, 1, 29, 2)},  # unknown: hides 4 of bicycle
]


def write_cityscapes(root: Path, stem: str = "aachen_000000_000019", objects=CS_OBJECTS,
                     split: str = "val", size: tuple[int, int] = (20, 30)) -> None:
    city = stem.split("_")[0]
    png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rgb(20, 30))
    gt = root / "gtFine" / split / city
    gt.mkdir(parents=True, exist_ok=True)
    (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps(
        {"imgHeight": size[0], "imgWidth": size[1], "objects": objects}))


def test_cityscapes_polygons_occlusion_and_ids(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    ds = CityscapesDataset(tmp_path, classes=("car", "person", "bicycle"))
    got = [(s.class_name, s.instance_id, s.box, int(s.mask.sum())) for s in ds]
    assert got == [
        ("car", 26000, Box(3, 2, 11, 12), 56),
        ("person", 24000, Box(6, 8, 16, 15), 70),
        ("bicycle", 33000, Box(1, 20, 9, 28), 60),
    ]
    car = rect((20, 30), slice(3, 11), slice(2, 12))
    car &= ~rect((20, 30), slice(6, 16), slice(8, 15))  # person drawn later
    car &= ~rect((20, 30), slice(0, 5), slice(0, 4))    # car group drawn later
    np.testing.assert_array_equal(ds[0].mask, car)
    assert ds[0].name == "aachen_000000_000019#26000"
    np.testing.assert_array_equal(ds[0].image, rgb(20, 30))
    assert ds.skipped == ["aachen_000000_000019: 1 object(s) smaller than 16 px"]
    # default: the paper's 8 classes, adds the truck
    assert [s.instance_id for s in CityscapesDataset(tmp_path)] == [26000, 24000, 33000, 27000]


def test_cityscapes_instance_ids_png(tmp_path: Path) -> None:
    ids = np.full((10, 12), 7, np.uint16)  # road
    ids[1:5, 1:6] = 26000
    ids[6:9, 0:3] = 26001   # 9 px: too small
    ids[5:10, 6:12] = 24002
    ids[0:1, 8:12] = 26     # car group: no instance
    ids[0:4, 7:12] = 27000  # truck (after the group: overwrites most of it)
    city = tmp_path / "leftImg8bit/train/bonn"
    png(city / "bonn_000001_000002_leftImg8bit.png", rgb(10, 12))
    png(tmp_path / "gtFine/train/bonn/bonn_000001_000002_gtFine_instanceIds.png", ids)
    ds = CityscapesDataset(tmp_path, split="train", classes=("car", "person"))
    assert [(s.class_name, s.instance_id, s.box) for s in ds] == [
        ("person", 24002, Box(5, 6, 10, 12)),
        ("car", 26000, Box(1, 1, 5, 6)),
    ]
    np.testing.assert_array_equal(ds[1].mask, ids == 26000)
    with pytest.raises(DatasetError, match="found no image with a matching annotation"), \
            pytest.warns(DatasetWarning):
        CityscapesDataset(tmp_path, split="train", annotation="polygons")


def test_cityscapes_errors_name_files(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, size=(21, 30))  # JSON disagrees with the 20x30 image
    ds = CityscapesDataset(tmp_path)
    with pytest.raises(DatasetError, match=r"aachen_000000_000019_leftImg8bit\.png is 20x30"):
        ds[0]
    js = tmp_path / "gtFine/val/aachen/aachen_000000_000019_gtFine_polygons.json"
    js.write_text('{"imgHeight": 20, "imgWidth": ')
    with pytest.raises(DatasetError, match=f"{js}: not valid JSON"):
        CityscapesDataset(tmp_path)
    js.write_text(json.dumps({"imgHeight": 20, "imgWidth": 30,
                              "objects": [{"label": "car", "polygon": [[1, 2, 3]]}]}))
    with pytest.raises(DatasetError, match=r"object 0 \('car'\) polygon"):
        CityscapesDataset(tmp_path)
    with pytest.raises(ValueError, match="unknown or non-instance Cityscapes class"):
        CityscapesDataset(tmp_path, classes=("road",))
    with pytest.raises(DatasetError, match="Cityscapes image folder .* does not exist"):
        CityscapesDataset(tmp_path, split="test")


def test_cityscapes_unmatched_and_lazy(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    write_cityscapes(tmp_path, stem="bremen_000000_000019")
    png(tmp_path / "leftImg8bit/val/bremen/bremen_000001_000019_leftImg8bit.png", rgb(4, 4))
    with pytest.warns(DatasetWarning, match=r"bremen_000001_000019_leftImg8bit\.png"):
        ds = CityscapesDataset(tmp_path, classes=("car",))
    assert len(ds) == 2 and [ds.image_key(i) for i in range(2)] == [
        "aachen_000000_000019", "bremen_000000_000019"]
    garbage(tmp_path / "leftImg8bit/val/bremen/bremen_000000_000019_leftImg8bit.png")
    assert ds[0].class_name == "car"
    with pytest.raises(DatasetError, match=r"bremen_000000_000019_leftImg8bit\.png"):
        ds[1]


# --------------------------------------------------------------------------------------------
# Vaihingen
# --------------------------------------------------------------------------------------------
def test_vaihingen_central_building(tmp_path: Path) -> None:
    m1 = np.zeros((21, 21), np.uint8)
    m1[8:13, 8:13] = 255    # covers the centre (10, 10)
    m1[0:6, 0:6] = 255      # bigger, but off-centre
    m2 = np.zeros((21, 21), np.uint8)
    m2[0:5, 14:21] = 255    # nearest pixel (4, 14): d^2 = 52
    m2[15:21, 8:12] = 255   # nearest pixel (15, 10): d^2 = 25 -> chosen
    m2[10, 11] = 255        # 1-px speck next to the centre: ignored (min_area)
    for name, m in (("v1", m1), ("v2", m2), ("v3", np.zeros((21, 21), np.uint8))):
        tif(tmp_path / f"images/{name}.tif", rgb(21, 21))
        png(tmp_path / f"masks/{name}.png", m)
    ds = VaihingenDataset(tmp_path)
    assert len(ds) == 2 and ds.skipped == ["v3.tif: no objects"]
    a, b = ds
    np.testing.assert_array_equal(a.mask, rect((21, 21), slice(8, 13), slice(8, 13)))
    np.testing.assert_array_equal(b.mask, rect((21, 21), slice(15, 21), slice(8, 12)))
    assert (a.box, b.box) == (Box(8, 8, 13, 13), Box(15, 8, 21, 12))
    assert (a.name, a.class_name, a.instance_id) == ("v1.tif#1", "building", 1)
    # with min_area=1 the speck touching the centre wins
    assert VaihingenDataset(tmp_path, min_area=1)[1].box == Box(10, 11, 11, 12)


def test_vaihingen_dsac_layout_whole_mask_and_reference_split(tmp_path: Path) -> None:
    numbers = range(1, 104)  # 103 buildings; text order: 1, 10, 100, 101, 102, 103, 11, ...
    for n in numbers:
        m = np.zeros((12, 12), np.uint8)
        m[2:5, 2:5] = 255
        m[7:11, 6 + n % 2:10] = 255  # a second piece: the building is the whole mask
        tif(tmp_path / f"building_{n}.tif", rgb(12, 12, seed=n))
        tif(tmp_path / f"building_mask_{n}.tif", m)
        tif(tmp_path / f"all_buildings_mask_{n}.tif", np.full((12, 12), 255, np.uint8))  # ignored
    ds = VaihingenDataset(tmp_path, min_area=1)
    assert (ds.layout, len(ds)) == ("dsac", 103)
    first = ds[0]
    assert first.name == "building_1.tif#1" and first.class_name == "building"
    assert first.mask.sum() == 9 + 4 * 3  # both pieces (n = 1: columns 7..9)
    np.testing.assert_array_equal(first.image, rgb(12, 12, seed=1))
    train = VaihingenDataset(tmp_path, split="train", min_area=1)
    test = VaihingenDataset(tmp_path, split="test", min_area=1)
    names = lambda d: [d[i].name.split("#")[0] for i in range(len(d))]
    expected = sorted(f"building_{n}.tif" for n in numbers)  # the reference code's order
    assert names(train) == expected[:100] and names(test) == expected[100:]
    assert names(test) == ["building_97.tif", "building_98.tif", "building_99.tif"]
    assert not set(names(train)) & set(names(test))


def test_vaihingen_dsac_layout_problems(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no building_<n> images"):
        VaihingenDataset(tmp_path)  # empty folder, no images/ either
    tif(tmp_path / "building_1.tif", rgb(8, 8))
    tif(tmp_path / "building_mask_1.tif", rect((8, 8), slice(2, 6), slice(2, 6)).astype(np.uint8) * 255)
    tif(tmp_path / "building_2.tif", rgb(8, 8))  # no mask
    with pytest.warns(DatasetWarning, match="building_2.tif"):
        ds = VaihingenDataset(tmp_path, min_area=1)
    assert len(ds) == 1 and [p.name for p in ds.unmatched] == ["building_2.tif"]
    with pytest.raises(DatasetError, match="building_2.tif"):
        VaihingenDataset(tmp_path, strict=True)
    with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match="test split .* is empty"):
        VaihingenDataset(tmp_path, split="test")
    with pytest.raises(ValueError, match="split must be"):
        VaihingenDataset(tmp_path, split="val")
    folders = tmp_path / "folders"
    tif(folders / "images/a.tif", rgb(8, 8))
    tif(folders / "masks/a.tif", rect((8, 8), slice(2, 6), slice(2, 6)).astype(np.uint8) * 255)
    assert VaihingenDataset(folders, split="train", min_area=1).layout == "folders"
    with pytest.raises(DatasetError, match="no predefined test split"):
        VaihingenDataset(folders, split="test")


def test_central_component_rules() -> None:
    m = np.zeros((4, 4), bool)
    m[0, 0] = m[3, 3] = True  # equidistant from the centre (1.5, 1.5): first in row order
    assert central_component(m)[0, 0] and not central_component(m)[3, 3]
    diag = np.eye(5, dtype=bool)  # 8-connected: one component
    assert central_component(diag).sum() == 5
    assert central_component(np.zeros((3, 3), bool)) is None
    assert central_component(diag, min_area=6) is None


def test_vaihingen_no_building_anywhere(tmp_path: Path) -> None:
    tif(tmp_path / "images/v.tif", rgb(8, 8))
    tif(tmp_path / "masks/v.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"no usable samples in .*v\.tif: no objects"):
        VaihingenDataset(tmp_path)


# --------------------------------------------------------------------------------------------
# Sample
# --------------------------------------------------------------------------------------------
def test_sample_validates_shapes() -> None:
    with pytest.raises(ValueError, match="mask must be bool"):
        Sample(np.zeros((4, 4)), np.zeros((4, 4), np.uint8), None, "x")
    with pytest.raises(ValueError, match="mask must be bool of shape"):
        Sample(np.zeros((4, 4, 3)), np.zeros((4, 5), bool), None, "x")
    with pytest.raises(ValueError, match="image must be"):
        Sample(np.zeros(4), np.zeros(4, bool), None, "x")


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------
def test_split_indices_basic() -> None:
    train, val = split_indices(10, 0.25, 3)
    assert len(val) == 3 and len(train) == 7  # 2.5 rounds up
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(10))
    again = split_indices(10, 0.25, np.random.default_rng(3))
    np.testing.assert_array_equal(again[1], val)
    assert split_indices(5, 0.0, 1)[1].size == 0
    with pytest.raises(ValueError, match="keep a training set"):
        split_indices(3, 0.5, 0, groups=["a", "a", "a"])
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        split_indices(3, 1.0, 0)
    with pytest.raises(ValueError, match="2 group keys for 3 items"):
        split_indices(3, 0.5, 0, groups=["a", "b"])


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.integers(0, 6), max_size=40), frac=st.floats(0.0, 0.95),
       seed=st.integers(0, 2**32 - 1))
def test_split_indices_groups_property(groups: list[int], frac: float, seed: int) -> None:
    n_groups = len(set(groups))
    expected_val = 0 if frac == 0 else max(1, int(np.floor(frac * n_groups + 0.5)))
    if expected_val and expected_val >= n_groups:
        with pytest.raises(ValueError):
            split_indices(len(groups), frac, seed, groups=groups)
        return
    train, val = split_indices(len(groups), frac, seed, groups=groups)
    assert np.intersect1d(train, val).size == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(groups)))
    val_groups = {groups[i] for i in val}
    assert len(val_groups) == expected_val
    assert not val_groups & {groups[i] for i in train}
    np.testing.assert_array_equal(split_indices(len(groups), frac, seed, groups=groups)[1], val)


def test_split_dataset_by_image(instance_root: Path) -> None:
    lab = np.zeros((20, 20), np.int32)
    lab[0:5, 0:5], lab[6:12, 6:12], lab[14:20, 14:20] = 1, 2, 3
    ds = InstancePromptDataset([np.zeros((20, 20))] * 4, [lab] * 4)
    assert len(ds) == 12
    train, val = split_dataset(ds, 0.25, seed=7)
    assert isinstance(train, Subset) and len(train) == 9 and len(val) == 3
    val_images = {val.image_key(i) for i in range(len(val))}
    assert len(val_images) == 1
    assert not val_images & {train.image_key(i) for i in range(len(train))}
    assert val[-1].name == ds[int(val.indices[-1])].name
    flat_train, flat_val = split_dataset(ds, 0.25, seed=7, group_by_image=False)
    assert len(flat_val) == 3
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 12\)"):
        Subset(ds, [12])


# --------------------------------------------------------------------------------------------
# TIFF layouts
# --------------------------------------------------------------------------------------------
def test_tiff_planar_rgb_and_stacks(tmp_path: Path) -> None:
    planar = np.ascontiguousarray(rgb(20, 20).transpose(2, 0, 1))  # (3, H, W)
    tifffile.imwrite(tmp_path / "p.tif", planar, photometric="rgb", planarconfig="separate")
    (tmp_path / "p.xml").write_text(aperio_xml(MONUSEG_REGIONS))
    ds = MoNuSegDataset(tmp_path)  # flat layout; the label shape comes from the TIFF header
    np.testing.assert_array_equal(ds[0].image, rgb(20, 20))
    np.testing.assert_array_equal(ds.instance_labels(0), expected_monuseg_labels())
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((3, 20, 20), np.uint8), imagej=True,
                     metadata={"axes": "ZYX"})
    (tmp_path / "z.xml").write_text(aperio_xml(MONUSEG_REGIONS))
    with pytest.raises(DatasetError, match=r"z\.tif holds an array of shape \(3, 20, 20\) "
                                           r"\(axes ZYX\).*not a stack"):
        MoNuSegDataset(tmp_path)


def test_unmatched_warning_points_at_caller(binary_root: Path) -> None:
    png(binary_root / "images/orphan.png", rgb(4, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FolderDataset(binary_root)
    assert [Path(w.filename).name for w in caught] == ["test_readers.py"]


# --------------------------------------------------------------------------------------------
# central object (Vaihingen protocol)
# --------------------------------------------------------------------------------------------
def test_central_object_binary_mask_component_under_centre() -> None:
    lab = np.zeros((20, 20), dtype=np.uint8)
    lab[8:12, 8:13] = 255  # covers the centre (10, 10)
    lab[0:5, 0:5] = 255  # bigger distractor in the corner
    lab[0:3, 15:20] = 255
    out = central_object(lab)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, (lab == 255) & (np.arange(20)[:, None] >= 8))

def test_central_object_closest_component_when_centre_is_background() -> None:
    lab = np.zeros((21, 21), dtype=bool)
    lab[0:4, 0:4] = True  # nearest pixel centre (3.5, 3.5): distance^2 = 2 * 7^2
    lab[14:18, 12:14] = True  # nearest pixel centre (14.5, 12.5): 4^2 + 2^2
    out = central_object(lab)
    expected = np.zeros_like(lab)
    expected[14:18, 12:14] = True
    np.testing.assert_array_equal(out, expected)

def test_central_object_instance_labels_and_ties() -> None:
    lab = np.zeros((10, 10), dtype=np.int32)
    lab[0:5, :] = 3  # touching instances meeting at the centre row 5
    lab[5:7, :] = 7
    # both instances have a pixel centre at distance 0.5 from (5, 5): the larger (3) wins
    np.testing.assert_array_equal(central_object(lab), lab == 3)
    # forcing binary reading merges the touching instances into one component
    np.testing.assert_array_equal(central_object(lab, instances=False), lab > 0)

def test_central_object_diagonal_connectivity() -> None:
    lab = np.zeros((6, 6), dtype=np.uint8)
    lab[2, 2] = lab[3, 3] = 1
    assert central_object(lab, connectivity=1).sum() == 1
    assert central_object(lab, connectivity=2).sum() == 2

def test_central_object_errors() -> None:
    with pytest.raises(NoObjectError):
        central_object(np.zeros((5, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="integer labels"):
        central_object(np.full((5, 5), 0.5))
    with pytest.raises(ValueError, match="2D"):
        central_object(np.zeros((2, 5, 5), dtype=np.uint8))
    # float arrays holding integers are accepted (diagonal pixels are separate 4-components;
    # the one at (2, 2) holds the centre (2.5, 2.5))
    out = central_object(np.eye(5) * 2.0)
    assert out.sum() == 1 and out[2, 2]
