"""segdiff-predict end to end on real files with the bundled model: outputs, resume, tiles and
seams, OME-Zarr, and every kind of bad input (clear message, no half-written output)."""
from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segdiff_core.data.synthetic import generate_tile
from segdiff_core.predict.cli import main
from segdiff_core.predict.io import open_image
from segdiff_core.proposals import match_instances

FAST = ["--generations", "2", "--steps", "2", "--no-progress"]
REPO = Path(__file__).resolve().parents[1]


def make_image(folder: Path, name: str = "img", seed: int = 1, size: int = 96, n: int = 5):
    # sharp, in-focus optics: these tests are about the CLI, not about deep defocus or halo
    tile = generate_tile("fluorescence", size, rng=seed, n_nuclei=n, radius_range=(6, 9), psf_sigma=1.0,
                         halo_fraction=0.0, defocus_fraction=0.0)
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / f"{name}.tif", tile.image)
    tifffile.imwrite(folder / f"{name}_gt.tiff", tile.labels)
    return folder / f"{name}.tif", folder / f"{name}_gt.tiff", tile


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_label_prompts_write_all_outputs_and_resume_skips(tmp_path):
    img, gt, tile = make_image(tmp_path / "in")
    out = tmp_path / "out"
    assert main([str(img), "-o", str(out), "--prompts-labels", str(gt), *FAST]) == 0
    labels = tifffile.imread(out / "img_labels.tif")
    prob = tifffile.imread(out / "img_probability.tif")
    unc = tifffile.imread(out / "img_uncertainty.tif")
    assert labels.shape == prob.shape == unc.shape == tile.labels.shape
    assert labels.dtype == np.int32 and prob.dtype == np.float32
    rows = read_rows(out / "img_objects.csv")
    assert len(rows) == tile.n_objects == labels.max()
    assert {"label", "y0", "x0", "y1", "x1", "area", "score", "uncertainty"} <= set(rows[0])
    assert match_instances(labels, tile.labels)["f1"] >= 0.6
    settings = json.loads((out / "img_settings.json").read_text())
    assert settings["seed"] == 0 and settings["prompts"] == "labels" and settings["inference"]["steps"] == 2
    stamp = (out / "img_labels.tif").stat().st_mtime_ns
    assert main([str(img), "-o", str(out), "--prompts-labels", str(gt), *FAST]) == 0
    assert (out / "img_labels.tif").stat().st_mtime_ns == stamp  # skipped, not redone
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_same_seed_same_output_and_csv_prompts(tmp_path):
    img, gt, tile = make_image(tmp_path / "in", seed=2)
    # a napari Shapes CSV (pixel centres on integers) with the GT boxes
    from skimage.measure import regionprops

    csv_path = tmp_path / "boxes.csv"
    lines = ["index,shape-type,vertex-index,axis-0,axis-1"]
    for i, r in enumerate(regionprops(tile.labels)):
        y0, x0, y1, x1 = r.bbox
        for v, (y, x) in enumerate([(y0, x0), (y0, x1), (y1, x1), (y1, x0)]):
            lines.append(f"{i},rectangle,{v},{y - 0.5},{x - 0.5}")
    csv_path.write_text("\n".join(lines) + "\n")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([str(img), "-o", str(a), "--prompts-csv", str(csv_path), "--seed", "3", *FAST]) == 0
    assert main([str(img), "-o", str(b), "--prompts-labels", str(gt), "--seed", "3", *FAST]) == 0
    np.testing.assert_array_equal(tifffile.imread(a / "img_labels.tif"), tifffile.imread(b / "img_labels.tif"))
    np.testing.assert_array_equal(tifffile.imread(a / "img_probability.tif"), tifffile.imread(b / "img_probability.tif"))


def test_a_prompt_that_gives_no_object_keeps_a_row_in_the_objects_csv(tmp_path, caplog):
    # such a prompt used to vanish without a word: the CSV had one row fewer than the prompts
    img, gt, tile = make_image(tmp_path / "in", seed=3)
    from skimage.measure import regionprops

    y0, x0, y1, x1 = regionprops(tile.labels)[0].bbox
    csv_path = tmp_path / "boxes.csv"
    lines = ["index,shape-type,vertex-index,axis-0,axis-1",
             f"0,rectangle,0,{y0 - 0.5},{x0 - 0.5}", f"0,rectangle,1,{y1 - 0.5},{x1 - 0.5}",
             "1,rectangle,0,60.5,60.5", "1,rectangle,1,63.5,63.5"]  # 3 x 3 px: below --min-area 16
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main([str(img), "-o", str(out), "--prompts-csv", str(csv_path), *FAST]) == 0
    rows = read_rows(out / "img_objects.csv")
    assert [(r["label"], r["flag"]) for r in rows] == [("1", rows[0]["flag"]), ("", "no object")]
    assert rows[1]["area"] == "0" and float(rows[1]["y0"]) == 61.0 and float(rows[1]["x1"]) == 64.0
    assert tifffile.imread(out / "img_labels.tif").max() == 1
    assert json.loads((out / "img_settings.json").read_text())["prompts_without_object"] == 1
    assert "1 of 2 prompts gave no object" in caplog.text


def test_a_prompt_csv_saved_by_a_spreadsheet_with_a_bom_and_crlf_is_read(tmp_path):
    # "CSV UTF-8" from a spreadsheet starts with a byte-order mark: its first column used to be
    # read as "\ufeffindex" and the image was skipped for "lacking the column index"
    img, gt, tile = make_image(tmp_path / "in", seed=3)
    from skimage.measure import regionprops

    y0, x0, y1, x1 = regionprops(tile.labels)[0].bbox
    csv_path = tmp_path / "boxes.csv"
    text = f"index,shape-type,vertex-index,axis-0,axis-1\r\n0,rectangle,0,{y0 - 0.5},{x0 - 0.5}\r\n0,rectangle,1,{y1 - 0.5},{x1 - 0.5}\r\n"
    csv_path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    out = tmp_path / "out"
    assert main([str(img), "-o", str(out), "--prompts-csv", str(csv_path), *FAST]) == 0
    assert [r["label"] for r in read_rows(out / "img_objects.csv")] == ["1"]


def test_tiles_neither_cut_nor_duplicate_objects_on_seams(tmp_path):
    img, gt, tile = make_image(tmp_path / "in", seed=4, size=128, n=10)
    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    assert main([str(img), "-o", str(whole), "--prompts-labels", str(gt), *FAST]) == 0
    assert main([str(img), "-o", str(tiled), "--prompts-labels", str(gt), "--tile", "40", "--halo", "24", "--format", "zarr", *FAST]) == 0
    lab_t = open_image(tiled / "img_labels.ome.zarr").read()
    lab_w = tifffile.imread(whole / "img_labels.tif")
    # every GT object (many cross the 40-px seams) is one output object, none duplicated
    assert lab_t.max() == tile.n_objects == len(read_rows(tiled / "img_objects.csv"))
    m = match_instances(lab_t, lab_w)
    assert m["tp"] >= tile.n_objects - 1 and m["mean_iou"] > 0.85, m
    settings = json.loads((tiled / "img_settings.json").read_text())
    assert settings["n_tiles"] > 4 and settings["objects_cut_by_halo"] == 0


def test_automatic_mode_and_folder_input(tmp_path):
    make_image(tmp_path / "in", "a", seed=5)
    make_image(tmp_path / "in", "b", seed=6)
    for p in (tmp_path / "in").glob("*_gt.tiff"):
        p.unlink()
    out = tmp_path / "out"
    assert main([str(tmp_path / "in"), "-o", str(out), "--foreground", "otsu", *FAST]) == 0
    for stem in ("a", "b"):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        assert labels.max() >= 1 and labels.max() == len(read_rows(out / f"{stem}_objects.csv"))
        assert json.loads((out / f"{stem}_settings.json").read_text())["prompts"] == "auto"


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_truncated_tiff_and_png_get_a_clear_message_and_no_output(tmp_path, caplog):
    img, gt, _ = make_image(tmp_path / "in")
    data = img.read_bytes()
    bad = tmp_path / "in" / "cut.tif"
    bad.write_bytes(data[: len(data) // 2])
    from PIL import Image

    png = tmp_path / "in" / "short.png"  # not cut.png: cut.tif and cut.png would share cut_* outputs
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[:200])
    garbage = tmp_path / "in" / "garbage.tif"
    garbage.write_bytes(b"not a tiff at all")
    out = tmp_path / "out"
    code = main([str(bad), str(png), str(garbage), str(img), "-o", str(out), "--foreground", "otsu", *FAST])
    assert code == 1
    text = caplog.text
    assert "cut.tif" in text and "truncated" in text
    assert "short.png" in text and "garbage.tif" in text
    names = outputs(out)
    assert not [n for n in names if n.startswith(("cut", "short", "garbage", "."))]
    assert "img_labels.tif" in names  # the good image is still done


@pytest.mark.parametrize(
    "content, message",
    [
        ("index,axis-0\n0,1\n", "lacks the column"),
        ("index,shape-type,vertex-index,axis-0,axis-1\n0,rectangle,0,abc,3\n", "non-numeric"),
        ("index,shape-type,vertex-index,axis-0,axis-1\n0,rectangle,0,500,500\n0,rectangle,1,520,520\n", "outside the image"),
        ("index,shape-type,vertex-index,axis-0,axis-1\n0,rectangle,0,5,5\n0,rectangle,1,5,5\n", "zero or negative area"),
        ("", "empty"),
    ],
)
def test_bad_csv_prompts(tmp_path, caplog, content, message):
    img, _, _ = make_image(tmp_path / "in")
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(content)
    out = tmp_path / "out"
    assert main([str(img), "-o", str(out), "--prompts-csv", str(csv_path), *FAST]) == 1
    assert message in caplog.text and "p.csv" in caplog.text
    assert outputs(out) == []


def test_label_image_of_wrong_shape(tmp_path, caplog):
    img, _, _ = make_image(tmp_path / "in")
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.ones((50, 60), np.int32))
    out = tmp_path / "out"
    assert main([str(img), "-o", str(out), "--prompts-labels", str(wrong), *FAST]) == 1
    assert "does not match the image shape" in caplog.text and "(50, 60)" in caplog.text
    assert outputs(out) == []


def test_unwritable_output_folder(tmp_path, caplog):
    img, _, _ = make_image(tmp_path / "in")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main([str(img), "-o", str(blocker / "out"), *FAST]) == 2
    assert "not writable" in caplog.text


def test_missing_input_and_bad_model(tmp_path, caplog):
    assert main([str(tmp_path / "nothing*.tif"), "-o", str(tmp_path / "o"), *FAST]) == 2
    assert "no such file" in caplog.text
    img, _, _ = make_image(tmp_path / "in")
    bad_model = tmp_path / "m.pt"
    bad_model.write_bytes(b"\x00" * 10)
    assert main([str(img), "-o", str(tmp_path / "o"), "--model", str(bad_model), *FAST]) == 2
    assert "m.pt" in caplog.text and outputs(tmp_path / "o") == []


def test_images_whose_outputs_would_share_a_name_are_refused_before_any_work(tmp_path, caplog):
    # a/img.tif and b/img.tif both write img_*: the second used to be skipped as "done" (exit 0)
    a, _, _ = make_image(tmp_path / "a", "img", seed=1)
    b, _, _ = make_image(tmp_path / "b", "img", seed=2)
    out = tmp_path / "out"
    assert main([str(a), str(b), "-o", str(out), "--foreground", "otsu", *FAST]) == 2
    assert str(a) in caplog.text and str(b) in caplog.text and "img_*" in caplog.text
    assert [p for p in outputs(out) if not p.startswith(".")] == []


def test_one_file_named_by_two_paths_is_predicted_once(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="segdiff.predict")
    img, _, _ = make_image(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["in/img.tif", str(img), "./in/../in/img.tif", "-o", str(out), "--foreground", "otsu", *FAST]) == 0
    assert "skipped" not in caplog.text
    assert json.loads((out / "img_settings.json").read_text())["image"] == "in/img.tif"


def test_a_folder_with_outputs_of_another_run_is_neither_mixed_nor_overwritten(tmp_path, caplog):
    # Resume used to skip any image whose outputs existed: a rerun with another seed, other
    # steps, other prompts, a retrained model file or an edited image silently kept the old
    # results beside new ones (or --overwrite was the only way to know).
    import shutil

    from segdiff_core.bundled import bundled_model_path
    from segdiff_core.checkpoint import save_model
    from tests.helpers import random_model

    img, gt, _ = make_image(tmp_path / "in")
    model = tmp_path / "my model.pt"  # a copy of the bundled model: same content, other path
    shutil.copy(bundled_model_path(), model)
    out = tmp_path / "out"
    base = [str(img), "-o", str(out), "--model", str(model), "--prompts-labels", str(gt), *FAST]
    assert main(base) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    shutil.copy(model, tmp_path / "moved.pt")
    assert main([*base[:4], str(tmp_path / "moved.pt"), *base[5:]]) == 0  # same content: skipped
    for extra, what in ((["--seed", "7"], "config.proposals.seed"), (["--steps", "3"], "config.inference.steps")):
        caplog.clear()
        assert main([*base, *extra]) == 2
        assert "another run" in caplog.text and what in caplog.text and "--overwrite" in caplog.text
    caplog.clear()
    assert main([str(img), "-o", str(out), "--model", str(model), "--foreground", "otsu", *FAST]) == 2
    assert "prompts" in caplog.text
    save_model(model, random_model()[0], random_model()[1])  # the model file was retrained
    caplog.clear()
    assert main(base) == 2 and "model_sha256" in caplog.text
    shutil.copy(bundled_model_path(), model)
    tifffile.imwrite(img, tifffile.imread(img)[::-1].copy())  # the image was edited
    caplog.clear()
    assert main(base) == 2 and "image.mtime_ns" in caplog.text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing lost or mixed
    assert main([*base, "--overwrite"]) == 0  # redone for the edited image; resumable again
    caplog.clear()
    assert main(base) == 0 and "another run" not in caplog.text


def test_rerun_into_the_input_folder_does_not_predict_its_own_outputs(tmp_path):
    # `segdiff-predict in/ -o in/` twice used to take img_labels.tif, img_probability.tif and
    # img_uncertainty.tif for new images and write img_labels_labels.tif & co. beside them
    folder = tmp_path / "in"
    make_image(folder)
    (folder / "img_gt.tiff").unlink()
    args = [str(folder), "-o", str(folder), "--foreground", "otsu", *FAST]
    assert main(args) == 0
    first = sorted(p.name for p in folder.iterdir())
    assert "img_labels.tif" in first
    stamp = (folder / "img_labels.tif").stat().st_mtime_ns
    assert main(args) == 0
    assert sorted(p.name for p in folder.iterdir()) == first
    assert (folder / "img_labels.tif").stat().st_mtime_ns == stamp


def test_a_model_file_replaced_between_runs_of_one_process_is_reloaded(tmp_path):
    # the per-process model cache was keyed by the path only: a long-lived process (a dask
    # worker of --scheduler, a notebook calling main) kept a retrained file's old weights
    import shutil

    from segdiff_core.bundled import bundled_model_path
    from segdiff_core.checkpoint import save_model
    from tests.helpers import random_model

    img, gt, _ = make_image(tmp_path / "in")
    model = tmp_path / "model.pt"
    shutil.copy(bundled_model_path(), model)
    args = [str(img), "--model", str(model), "--prompts-labels", str(gt), *FAST]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    net, cfg = random_model()
    save_model(model, net, cfg, {"trained_on": "retrained"})
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    settings = json.loads((tmp_path / "b" / "img_settings.json").read_text())
    assert settings["model_metadata"]["trained_on"] == "retrained"
    assert not np.array_equal(tifffile.imread(tmp_path / "a" / "img_probability.tif"),
                              tifffile.imread(tmp_path / "b" / "img_probability.tif"))


@pytest.mark.parametrize("flag, value", [("--h", "0.8"), ("--foreground", "otsu"), ("--box-scale", "1.2"), ("--window-scale", "2")])
def test_automatic_mode_options_with_prompts_are_refused_not_ignored(tmp_path, caplog, flag, value):
    img, gt, _ = make_image(tmp_path / "in")
    out = tmp_path / "out"
    assert main([str(img), "-o", str(out), "--prompts-labels", str(gt), flag, value, *FAST]) == 2
    assert flag in caplog.text and "automatic mode only" in caplog.text
    assert [p for p in outputs(out) if not p.startswith(".")] == []


@pytest.mark.parametrize("flag, value", [
    ("--tile", "0"), ("--halo", "-1"), ("--generations", "0"), ("--steps", "0"),
    ("--batch-size", "0"), ("--workers", "-1"), ("--tile", "x"),
    ("--scheduler", "tcp://127.0.0.1:1 --workers 2"),  # --workers would be ignored
    ("--device", "gpu"),  # was a ValueError traceback from the model loader
])
def test_out_of_range_numbers_and_conflicting_options_are_refused_by_the_command_line(tmp_path, capsys, flag, value):
    # --tile 0 used to end in a traceback mid-run, --halo -1 silently read less than the tile
    img, _, _ = make_image(tmp_path / "in")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([str(img), "-o", str(out), "--foreground", "otsu", *FAST, flag, *value.split()])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert outputs(out) == []


@pytest.mark.slow
def test_killed_run_leaves_no_half_outputs_and_restart_completes(tmp_path):
    for k in range(3):
        make_image(tmp_path / "in", f"im{k}", seed=10 + k, size=128, n=10)
        (tmp_path / "in" / f"im{k}_gt.tiff").unlink()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "segdiff_core.predict.cli", str(tmp_path / "in"), "-o", str(out), "--foreground", "otsu", *FAST]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "im0_settings.json").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "im0_settings.json").exists()
    finished = {p.name.split("_")[0] for p in out.glob("*_settings.json")}
    assert "im2" not in finished  # killed mid-run
    for p in out.iterdir():  # every file under a final name is complete and readable
        if p.name.endswith(".tif"):
            tifffile.imread(p)
    stamp = (out / "im0_labels.tif").stat().st_mtime_ns
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert (out / "im0_labels.tif").stat().st_mtime_ns == stamp
    for k in range(3):
        assert tifffile.imread(out / f"im{k}_labels.tif").max() >= 1
        assert (out / f"im{k}_objects.csv").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # stale temporaries removed


def test_an_image_a_live_run_is_predicting_into_the_folder_is_left_to_it(tmp_path, caplog):
    # a second run into the same folder used to delete the first run's temporary outputs of
    # the image it was writing (as "stale") and predict the image again beside it
    img, _, _ = make_image(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # the live run
    try:
        (out / ".img.segdiff-predict.lock").write_text(str(other.pid))
        busy = out / f".img_labels.ome.zarr.tmp-{other.pid}"
        busy.mkdir()
        assert main([str(img), "-o", str(out), "--foreground", "otsu", *FAST]) == 1
        assert f"process {other.pid} is predicting it" in caplog.text
        assert busy.is_dir() and not (out / "img_labels.tif").exists()
    finally:
        other.kill()
        other.wait()
    assert main([str(img), "-o", str(out), "--foreground", "otsu", *FAST]) == 0  # its lock is stale now
    assert (out / "img_settings.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path):
    img, gt, _ = make_image(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".img_labels.tif.abc123.tmp").write_bytes(b"half")
    (out / ".img_labels.ome.zarr.tmp-999").mkdir()
    (out / ".other_file.tmp").write_bytes(b"not ours")
    assert main([str(img), "-o", str(out), "--prompts-labels", str(gt), *FAST]) == 0
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == [".other_file.tmp"]
