"""Tests of segdiff_core.evaluation: the protocol runner, the Otsu baseline and segdiff-eval."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

from segdiff_core.checkpoint import save_model
from segdiff_core.data.boxes import Box
from segdiff_core.data.synthetic import generate_tile
from segdiff_core.evaluation import baselines
from segdiff_core.evaluation.baselines import object_is_bright, otsu_foreground, otsu_in_box, otsu_method, to_grayscale
from segdiff_core.evaluation.cli import main
from segdiff_core.evaluation.runner import (
    EvalItem,
    EvalProtocol,
    EvaluationError,
    Method,
    Prediction,
    dataset_items,
    evaluate,
    format_table,
    crop_items,
    run_method,
    segdiff_method,
    synthetic_items,
)
from segdiff_core.segmenter import Segmenter
from segdiff_core.training.data import step_rng
from tests.helpers import random_model

S = 32  # the 'test' preset's model size


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny model runs fastest single-threaded, and the machine's cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disk_mask(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[disk(centre, radius, shape=shape)] = True
    return m


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model, cfg = random_model()
    return save_model(tmp_path_factory.mktemp("ckpt") / "model.pt", model, cfg)


@pytest.fixture(scope="module")
def segmenter(checkpoint) -> Segmenter:
    return Segmenter.from_checkpoint(checkpoint, device="cpu")


def mask_image_items() -> list[EvalItem]:
    """Objects whose image *is* their mask (0/255), some touching the image border."""
    shape = (90, 110)
    masks = [
        disk_mask(shape, (45, 55), 12),
        disk_mask(shape, (6, 8), 9),  # cut by the top-left corner: expansion crop leaves the image
        np.pad(np.ones((10, 30), bool), ((70, 10), (75, 5))),  # a bar, non-square box
    ]
    items = []
    for k, m in enumerate(masks):
        image = (m * 255).astype(np.uint8)
        items.append(EvalItem(image, m, Box.from_mask(m), f"obj{k}", group="a" if k else "b"))
    return items


def oracle(patches: list[np.ndarray]) -> list[np.ndarray]:
    """A perfect predictor for mask images: the normalised patch is the object's probability."""
    return [np.clip(np.asarray(p, dtype=np.float32) / 255.0, 0, 1) for p in patches]


# --------------------------------------------------------------------------------------------
# Otsu baseline
# --------------------------------------------------------------------------------------------


def test_grayscale_is_rec709_luminance_for_rgb_and_identity_for_2d():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (100, 0, 0)
    rgb[0, 1] = (0, 100, 0)
    rgb[1, 0] = (0, 0, 100)
    rgb[1, 1] = (200, 200, 200)
    np.testing.assert_allclose(to_grayscale(rgb), [[21.25, 71.54], [7.21, 200.0]])
    g = np.arange(6, dtype=np.uint16).reshape(2, 3)
    np.testing.assert_array_equal(to_grayscale(g), g.astype(float))
    np.testing.assert_array_equal(to_grayscale(g[:, :, None]), g.astype(float))
    with pytest.raises(baselines.BaselineError, match="shape"):
        to_grayscale(np.zeros((2, 2, 2, 2)))


def test_otsu_bright_disk_on_dark_background():
    m = disk_mask((41, 41), (20, 20), 11)
    rng = np.random.default_rng(0)
    image = np.where(m, 180, 40).astype(np.float64) + rng.normal(0, 8, m.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    assert object_is_bright(to_grayscale(image))
    np.testing.assert_array_equal(otsu_in_box(image), m)


def test_otsu_dark_disk_on_light_rgb_background():
    m = disk_mask((40, 50), (20, 25), 12)
    image = np.empty((40, 50, 3), np.uint8)
    image[:] = (235, 220, 240)  # pale stroma
    image[m] = (70, 50, 140)  # haematoxylin-blue nucleus
    assert not object_is_bright(to_grayscale(image))
    np.testing.assert_array_equal(otsu_in_box(image), m)


def test_otsu_keeps_the_centre_blob_of_two_nearly_touching_blobs():
    shape = (40, 60)
    centre = disk_mask(shape, (20, 30), 10)
    side = disk_mask(shape, (20, 52), 12)  # larger, one background column (40) between the two
    cols = (centre | side).any(axis=0)
    assert cols[39] and not cols[40] and cols[41] and side.sum() > centre.sum()
    image = ((centre | side) * 200 + 20).astype(np.uint8)
    out = otsu_in_box(image)
    np.testing.assert_array_equal(out, centre)


def test_otsu_fills_holes_of_a_ring():
    shape = (41, 41)
    outer = disk_mask(shape, (20, 20), 14)
    inner = disk_mask(shape, (20, 20), 6)
    image = np.where(outer & ~inner, 200, 30).astype(np.uint8)  # bright ring, dark inside
    np.testing.assert_array_equal(otsu_in_box(image), outer)


@pytest.mark.parametrize("crop", [np.full((12, 9), 7, np.uint8), np.full((5, 5, 3), 1000, np.uint16),
                                  np.zeros((1, 1))])
def test_otsu_constant_crop_gives_empty_mask(crop):
    out = otsu_in_box(crop)
    assert out.shape == crop.shape[:2] and out.dtype == bool and not out.any()
    assert not otsu_foreground(crop).any()


def test_otsu_foreground_takes_the_minority_class_whatever_the_polarity():
    shape = (60, 60)
    m = disk_mask(shape, (15, 15), 6) | disk_mask(shape, (40, 45), 8)
    bright = np.where(m, 220, 30).astype(np.uint8)
    np.testing.assert_array_equal(otsu_foreground(bright), m)
    np.testing.assert_array_equal(otsu_foreground(255 - bright), m)


# --------------------------------------------------------------------------------------------
# runner: paste-back region, oracle, windows
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tight", "expansion"])
def test_prepared_region_is_the_crop_footprint_with_the_whole_object(name):
    items = mask_image_items()
    prepared = crop_items(items, EvalProtocol(name), S)
    for it, p in zip(items, prepared):
        assert p.model_inputs.shape == (1, S, S) and p.model_inputs.dtype == np.float32
        rows, cols = p.geometry.footprint
        np.testing.assert_array_equal(p.target, it.mask[rows, cols])
        np.testing.assert_array_equal(p.native_input, it.image[rows, cols])
        assert p.target.sum() == it.mask.sum()  # the object lies entirely in its crop
        box = it.box
        if name == "tight":
            assert (rows.start, rows.stop, cols.start, cols.stop) == (box.y0, box.y1, box.x0, box.x1)
        else:  # 15 % larger, clipped to the image
            assert rows.stop - rows.start >= box.height and cols.stop - cols.start >= box.width
            assert p.geometry.crop_box.height == pytest.approx(1.15 * box.height)


def test_oracle_is_exact_when_the_crop_equals_the_model_grid():
    shape = (50, 50)
    m = np.zeros(shape, bool)
    m[10:42, 9:41] = disk_mask((32, 32), (15.5, 15.5), 16)  # tight box exactly 32 x 32 = S x S
    item = EvalItem((m * 255).astype(np.uint8), m, Box.from_mask(m), "exact")
    assert (item.box.height, item.box.width) == (S, S)
    res = run_method(crop_items([item], EvalProtocol("tight"), S), Method("oracle", oracle))
    assert res.summary["iou"] == 1.0 and res.summary["boundf"] == 1.0 and res.summary["f1"] == 1.0


@pytest.mark.parametrize("name", ["tight", "expansion"])
def test_oracle_predictor_scores_iou_one_after_paste_back(name):
    prepared = crop_items(mask_image_items(), EvalProtocol(name), S)
    res = run_method(prepared, Method("oracle", oracle))
    assert res.n == 3
    assert min(r["iou"] for r in res.per_sample) > 0.93
    assert res.summary["iou"] > 0.95
    assert math.isnan(res.summary["uncertainty_auroc"])  # no uncertainty given
    assert set(res.groups) == {"a", "b"} and res.groups["a"]["n"] == 2 and res.groups["b"]["n"] == 1

    # negative control: a map shifted by 6 model pixels (a misplaced paste-back) loses clearly
    def shifted(patches):
        out = []
        for o in oracle(patches):
            s = np.zeros_like(o)
            s[6:, 6:] = o[:-6, :-6]
            out.append(s)
        return out

    bad = run_method(prepared, Method("shifted", shifted))
    assert max(r["iou"] for r in bad.per_sample) < 0.75


def test_native_predictor_gets_the_original_resolution_crop():
    prepared = crop_items(mask_image_items(), EvalProtocol("expansion"), S)
    seen = []

    def native_oracle(crops):
        seen.extend(c.shape for c in crops)
        return [Prediction((c > 127).astype(np.float32), np.zeros(c.shape, np.float32)) for c in crops]

    res = run_method(prepared, Method("native", native_oracle, "native"))
    assert seen == [p.target.shape for p in prepared]
    assert res.summary["iou"] == 1.0


def test_predictor_returning_wrong_count_or_shape_is_reported():
    prepared = crop_items(mask_image_items(), EvalProtocol("tight"), S)
    with pytest.raises(EvaluationError, match="returned 2 maps for 3 inputs"):
        run_method(prepared, Method("short", lambda ps: oracle(ps)[:2]))
    with pytest.raises(EvaluationError, match="expected the model size"):
        run_method(prepared, Method("small", lambda ps: [np.zeros((8, 8))] * len(ps)))


def test_windows_protocol_on_a_small_image():
    shape = (70, 100)
    m = disk_mask(shape, (20, 20), 9) | disk_mask(shape, (50, 70), 12) | disk_mask(shape, (30, 95), 6)
    item = EvalItem((m * 255).astype(np.uint8), m, None, "img")
    protocol = EvalProtocol("windows", work_size=64)  # 64 x 64 working image -> 2 x 2 windows of 32
    (p,) = crop_items([item], protocol, S)
    assert p.model_inputs.shape == (4, S, S) and p.grid.origins == ((0, 0), (0, 32), (32, 0), (32, 32))
    assert p.target.shape == shape and p.native_input.shape == shape
    res = run_method([p], Method("oracle", oracle))
    assert res.summary["iou"] > 0.85  # 100 -> 64 px and back: boundaries blur a little
    np.testing.assert_array_equal(p.to_region(np.ones((4, S, S))), np.ones(shape, np.float32))
    # quadrant order matters: swapping windows ruins the stitched map
    swapped = run_method([p], Method("swap", lambda ws: oracle(ws)[::-1]))
    assert swapped.summary["iou"] < 0.5, swapped.summary["iou"]
    assert res.summary["iou"] > 0.9, res.summary["iou"]
    base = run_method([p], otsu_method(prompt=False))
    assert base.summary["iou"] == 1.0


def test_windows_protocol_with_the_real_model_and_overlapping_stride(segmenter):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    mask = image[..., 0] > 128
    protocol = EvalProtocol("windows", work_size=48, stride=16)
    prepared = crop_items([EvalItem(image, mask, None, "noise")], protocol, S)
    assert prepared[0].model_inputs.shape[0] == 4  # origins 0, 16 along each axis
    res = run_method(prepared, segdiff_method(segmenter, 2, 2))
    assert res.n == 1 and 0.0 <= res.summary["iou"] <= 1.0
    assert np.isfinite(res.summary["uncertainty_auroc"])


# --------------------------------------------------------------------------------------------
# synthetic set, real model, table
# --------------------------------------------------------------------------------------------


def test_synthetic_items_are_deterministic_and_not_training_tiles():
    a = synthetic_items(("he", "ihc"), 4, tile_size=64, min_area=16, objects_per_tile=2)
    b = synthetic_items(("ihc",), 4, tile_size=64, min_area=16, objects_per_tile=2)
    assert [it.group for it in a] == ["he"] * 4 + ["ihc"] * 4
    assert [it.name for it in a[4:]] == [it.name for it in b]  # a style's set ignores the others
    for x, y in zip(a[4:], b):
        np.testing.assert_array_equal(x.mask, y.mask)
        np.testing.assert_array_equal(x.image, y.image)
    for it in a:
        assert it.mask.sum() >= 16 and Box.from_mask(it.mask) == it.box
    assert sum(it.name.startswith("he/tile0000#") for it in a) <= 2  # objects_per_tile
    # the first training batch (seed 0, step 0, rank 0) draws other tiles
    train_tile = generate_tile("he", 64, step_rng(0, 0, 0))
    assert not np.array_equal(train_tile.image, a[0].image)
    semantic = synthetic_items(("fluorescence",), 2, tile_size=64, task="semantic")
    assert len(semantic) == 2 and semantic[0].box is None


def test_synthetic_items_bad_arguments():
    with pytest.raises(EvaluationError, match="unknown synthetic style"):
        synthetic_items(("phase",), 2)
    with pytest.raises(EvaluationError, match="found only 0 objects"):
        synthetic_items(("he",), 2, tile_size=32, min_area=10_000, max_tiles_per_style=3)


def test_runner_with_real_model_on_synthetic_set(segmenter):
    items = synthetic_items(("fluorescence", "ihc"), 3, tile_size=96, objects_per_tile=3)
    prepared = crop_items(items, EvalProtocol("expansion"), segmenter.input_size)
    methods = [segdiff_method(segmenter, 2, 2, seed=5), segdiff_method(segmenter, 1, 3, "ddpm"), otsu_method()]
    results = evaluate(prepared, methods, chunk_size=4)
    names = [r["name"] for r in results[0].per_sample]
    assert names == [it.name for it in items]
    for r in results:
        assert [s["name"] for s in r.per_sample] == names  # same samples for every method
        assert r.n == 6 and set(r.groups) == {"fluorescence", "ihc"}
        assert r.groups["ihc"]["n"] == 3 and 0.0 <= r.summary["iou"] <= 1.0
        assert r.summary["iou_std"] >= 0.0 and r.seconds > 0
    assert results[0].settings["generations"] == 2 and results[1].settings["sampler"] == "ddpm"
    assert results[0].label == "segdiff G=2 steps=2 ddim"
    assert math.isnan(results[2].summary["uncertainty_auroc"])
    # the sampling seed reproduces the scores exactly
    again = run_method(prepared, segdiff_method(segmenter, 2, 2, seed=5), chunk_size=4)
    assert [s["iou"] for s in again.per_sample] == [s["iou"] for s in results[0].per_sample]

    text = format_table(results, group_title="style")
    lines = text.splitlines()
    assert lines[0].split() == ["method", "G", "steps", "sampler", "IoU", "F1", "WCov", "BoundF",
                                "Calib", "U-AUROC", "ms/prompt", "n"]
    otsu_row = lines[4].split()
    assert otsu_row[:4] == ["otsu", "-", "-", "-"]
    assert otsu_row[4] == f"{100 * results[2].summary['iou']:.2f}"
    assert otsu_row[9] == "n/a" and otsu_row[-1] == "6"
    assert "IoU by style" in text and "fluorescence (n=3)" in text and "ihc (n=3)" in text
    seg_row = lines[2].split()
    assert seg_row[:4] == ["segdiff", "2", "2", "ddim"]
    assert seg_row[8] == f"{results[0].summary['calibration']:.4f}"


def test_dataset_items_subset_and_empty(tmp_path):
    from segdiff_core.data.readers import InstancePromptDataset

    labels = np.zeros((40, 40), np.int32)
    labels[disk_mask((40, 40), (10, 10), 5)] = 1
    labels[disk_mask((40, 40), (28, 28), 7)] = 2
    ds = InstancePromptDataset([np.full((40, 40), 9, np.uint8)] * 3, [labels] * 3)
    items, skipped = dataset_items(ds)
    assert len(items) == 6 and skipped == 0 and items[0].box == Box.from_mask(items[0].mask)
    sub, _ = dataset_items(ds, n=4, seed=1)
    assert len(sub) == 4 and [it.name for it in sub] == [it.name for it in dataset_items(ds, n=4, seed=1)[0]]
    with pytest.raises(EvaluationError, match="no samples"):
        dataset_items([])


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_table_and_json(checkpoint, tmp_path, capsys):
    out = tmp_path / "res" / "eval.json"
    code = main([str(checkpoint), "--n", "2", "--generations", "1,2", "--steps", "2", "--data.styles", "he,ihc",
                 "--data.tile_size", "96", "--json", str(out), "--no-progress", "--protocol", "tight",
                 "--device", "cpu", "--seed", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = captured.out
    assert "protocol: tight (crop = box)" in table and "held out from training: ihc" in table
    rows = [line.split() for line in table.splitlines()]
    assert ["segdiff", "1", "2", "ddim"] in [r[:4] for r in rows]
    assert ["segdiff", "2", "2", "ddim"] in [r[:4] for r in rows]
    assert ["otsu", "-", "-", "-"] in [r[:4] for r in rows]
    report = json.loads(out.read_text())
    assert report["protocol"]["name"] == "tight"
    assert report["data"]["n_samples"] == 4 and report["data"]["group_counts"] == {"he": 2, "ihc": 2}
    assert report["data"]["config"]["styles"] == ["he", "ihc"] and report["data"]["heldout_styles"] == ["ihc"]
    assert report["settings"]["generations"] == [1, 2] and report["settings"]["seed"] == 3
    assert [r["label"] for r in report["results"]] == ["segdiff G=1 steps=2 ddim", "segdiff G=2 steps=2 ddim", "otsu"]
    for r in report["results"]:
        assert r["n"] == 4 and set(r["groups"]) == {"he", "ihc"}
        assert {"iou", "iou_std", "f1_std", "calibration", "uncertainty_auroc", "per_class_iou"} <= set(r["metrics"])
        assert len(r["per_sample"]) == 4 and r["timing"]["seconds_per_prompt"] >= 0
        ious = [s["iou"] for s in r["per_sample"]]
        assert r["metrics"]["iou"] == pytest.approx(np.mean(ious))
        assert r["metrics"]["iou_std"] == pytest.approx(np.std(ious))
    assert report["results"][2]["metrics"]["uncertainty_auroc"] is None  # NaN -> null
    assert report["results"][0]["per_sample"][0]["name"] == report["results"][2]["per_sample"][0]["name"]


def disk_folder(root, n: int):
    """A folder dataset (``root/images`` + ``root/masks``) of ``n`` 50 x 60 images, one disk each."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(n):
        m = disk_mask((50, 60), (20 + k, 25 + 3 * k), 8 + k)
        tifffile.imwrite(root / "images" / f"im{k}.tif", (m * 200 + 20).astype(np.uint8))
        tifffile.imwrite(root / "masks" / f"im{k}.tif", m.astype(np.uint8))
    return root


def test_cli_windows_protocol_on_a_folder_dataset_with_validation_split(checkpoint, tmp_path, capsys):
    root = disk_folder(tmp_path / "data", 4)
    out = tmp_path / "w.json"
    code = main([str(checkpoint), "--protocol", "windows", "--data.source", "folder", "--data.root", str(root),
                 "--generations", "1", "--steps", "1", "--split-only-val", "--data.val_fraction", "0.5",
                 "--work-size", "40", "--json", str(out), "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    assert report["data"]["split"] == "validation" and report["data"]["n_samples"] == 2
    assert report["data"]["config"]["task"] == "semantic"
    assert [r["method"] for r in report["results"]] == ["segdiff", "otsu"]
    assert report["results"][1]["metrics"]["iou"] == 1.0  # a bright disk on a dark field


def test_cli_missing_and_corrupt_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert "nope.pt does not exist" in err and "Traceback" not in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a model file" * 10)
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and "segdiff-eval: error:" in err and "Traceback" not in err


def test_cli_unknown_protocol_and_bad_lists(checkpoint, capsys):
    assert main([str(checkpoint), "--protocol", "quadrants"]) == 2
    assert "invalid choice: 'quadrants'" in capsys.readouterr().err
    assert main([str(checkpoint), "--generations", "1,zero"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main([str(checkpoint), "--steps", "0"]) == 2
    assert "integers >= 1" in capsys.readouterr().err
    for flag in ("--seed", "--eval-seed"):  # was "error: expected non-negative integer", naming nothing
        assert main([str(checkpoint), flag, "-1"]) == 2
        assert f"argument {flag}" in capsys.readouterr().err
    assert main([str(checkpoint), "--protocol", "tight", "--data.task", "semantic"]) == 2
    assert "--protocol windows or --data.task prompt" in capsys.readouterr().err


def test_cli_dataset_without_samples(checkpoint, tmp_path, capsys):
    root = tmp_path / "empty"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    assert main([str(checkpoint), "--data.source", "folder", "--data.root", str(root), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no usable samples" in err and "Traceback" not in err
    # masks without any object: nothing to prompt
    tifffile.imwrite(root / "images" / "a.tif", np.full((20, 20), 5, np.uint8))
    tifffile.imwrite(root / "masks" / "a.tif", np.zeros((20, 20), np.uint8))
    assert main([str(checkpoint), "--data.source", "folder", "--data.root", str(root), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "segdiff-eval: error:" in err and "Traceback" not in err


def test_cli_unwritable_json_or_the_model_itself_is_refused_before_the_evaluation(checkpoint, tmp_path, capsys):
    # --json to a folder (or under a file) used to fail only after the whole evaluation had run
    for target, message in ((tmp_path, "is a folder"), (tmp_path / "file.txt" / "r.json", "not writable")):
        (tmp_path / "file.txt").write_text("x")
        assert main([str(checkpoint), "--n", "1", "--json", str(target), "--no-progress", "--device", "cpu"]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err
        assert "protocol:" not in captured.out  # stopped before it started evaluating
    model = tmp_path / "model.pt"
    model.write_bytes(checkpoint.read_bytes())
    assert main([str(model), "--n", "1", "--json", str(model), "--no-progress", "--device", "cpu"]) == 2
    assert "model file being evaluated" in capsys.readouterr().err
    assert model.read_bytes() == checkpoint.read_bytes()  # was replaced by the JSON report


@pytest.mark.parametrize("argv, flag", [
    (["--protocol", "tight", "--margin", "0.3"], "--margin"),
    (["--protocol", "windows", "--margin", "0.3"], "--margin"),
    (["--protocol", "expansion", "--work-size", "64"], "--work-size"),
    (["--stride", "16"], "--stride"),  # default protocol of a prompt model: expansion
])
def test_cli_an_option_of_another_protocol_is_refused_not_ignored(checkpoint, capsys, argv, flag):
    assert main([str(checkpoint), "--n", "1", "--no-progress", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert flag in err and "does not apply" in err and "Traceback" not in err


def test_cli_n_above_the_sample_count_is_not_called_a_random_subset(checkpoint, tmp_path, capsys):
    # "--n 50" on 3 samples evaluated all 3 but the header and the JSON said "random subset of 50"
    root = disk_folder(tmp_path / "data", 3)
    common = [str(checkpoint), "--protocol", "tight", "--data.source", "folder", "--data.root", str(root),
              "--generations", "1", "--steps", "1", "--baseline", "none", "--no-progress", "--device", "cpu"]
    assert main([*common, "--n", "50", "--json", str(tmp_path / "all.json")]) == 0
    assert "random subset" not in capsys.readouterr().out
    assert "random subset" not in json.loads((tmp_path / "all.json").read_text())["data"]["description"]
    assert main([*common, "--n", "2"]) == 0
    assert "random subset of 2" in capsys.readouterr().out
