"""Fine-tuning core: the recipe, the bad-input messages, the model registry, the worker process."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from segdiff_core.checkpoint import load_model
from segdiff_core.segmenter import Segmenter
from segdiff_core.checkpoint import file_sha256
from segdiff_core.training.finetune import (
    MIN_OBJECTS,
    FinetuneError,
    FinetuneRequest,
    TrainingImage,
    accepted_ids,
    collect_objects,
    finetuned_name,
    finetuned_path,
    list_finetuned,
    models_dir,
    recipe_run,
    run_finetune,
)
from segdiff_core.training.finetune_process import FinetuneBusyError, FinetuneProcess
from tests.finetune_helpers import FAST, annotated_tile, tiny_base_model


@pytest.fixture
def base(tmp_path):
    return tiny_base_model(tmp_path)


def _request(base, tmp_path, image=None, labels=None, **kw):
    if image is None:
        image, labels = annotated_tile()
    return FinetuneRequest(str(base), (TrainingImage(image, labels, "tile0"),), overrides=kw.pop("overrides", FAST),
                           out_root=str(tmp_path / "data"), **kw)


def test_recipe_keeps_the_base_network_and_crop_protocol(base):
    _, cfg, meta = load_model(base)
    run = recipe_run(cfg, {**meta, "data": {**meta["data"], "crop_margin": [0.3, 0.4]}}, {"train": {"steps": 7}})
    assert run.segdiff.model == cfg.model and run.segdiff.preprocess == cfg.preprocess
    assert run.data.crop_margin == (0.3, 0.4)  # from the base model's training run
    assert run.train.steps == 7 and run.train.lr_decay == "cosine" and run.train.patience > 0


def test_finetune_saves_a_loadable_model_that_predicts_differently(base, tmp_path):
    events = []
    result = run_finetune(_request(base, tmp_path), events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and "log" in kinds and kinds.count("val") == 2
    assert result.model_path.parent == models_dir(tmp_path / "data") and result.model_path.is_file()
    info = result.metadata
    assert info["base_model"] == str(base) and info["images"] == ["tile0"] and info["steps"] == 6
    assert info["n_objects"] == info["n_train"] + info["n_val"] >= MIN_OBJECTS
    assert isinstance(info["val_iou_before"], float) and isinstance(info["val_iou_after"], float)
    assert (info["val_iou_after"] > info["val_iou_before"]) == result.improved
    assert info["best_step"] in (3, 6)  # the best validated fine-tuned weights
    seg_new, seg_old = Segmenter.from_checkpoint(result.model_path, "cpu"), Segmenter.from_checkpoint(base, "cpu")
    assert seg_new.metadata["finetune"]["date"] == info["date"]
    patch = annotated_tile(5)[0][:40, :40]
    a = seg_new.segment(patch, seed=0).probability
    b = seg_old.segment(patch, seed=0).probability
    assert np.abs(a - b).max() > 1e-3
    listed = list_finetuned(tmp_path / "data")
    assert [m.path for m in listed] == [result.model_path] and "objects" in listed[0].describe()


def test_registry_lists_newest_first_and_skips_broken_files(base, tmp_path):
    first = run_finetune(_request(base, tmp_path, name="first", overrides={"train": {**FAST["train"], "steps": 3}}))
    second = run_finetune(_request(base, tmp_path, name="second", overrides={"train": {**FAST["train"], "steps": 3}}))
    (models_dir(tmp_path / "data") / "broken.pt").write_bytes(b"not a model")
    assert [m.path for m in list_finetuned(tmp_path / "data")] == [second.model_path, first.model_path]


def test_time_budget_counts_from_the_click_and_ends_the_cosine(base, tmp_path):
    """The budget covers the whole fine-tune from ``started_at``, and the recipe's cosine reaches
    its low end when the budget does, however few steps fit."""
    from segdiff_core.training.trainer import lr_at

    _, cfg, meta = load_model(base)
    run = recipe_run(cfg, meta)
    assert lr_at(50, run, time_spent=0.0) > 0.8 * run.train.lr  # by steps: early in the cosine
    assert lr_at(50, run, time_spent=1.0) == pytest.approx(0.1 * run.train.lr)  # budget spent: the end
    train = {**FAST["train"], "steps": 50, "max_minutes": 1.0}
    events = []
    result = run_finetune(_request(base, tmp_path, overrides={"train": train}, started_at=time.time() - 3600),
                          events.append)
    assert result.stop_reason == "time budget" and result.metadata["steps"] == 1  # asked an hour ago
    assert result.model_path.is_file()


def test_registry_names_resolve_to_model_files(base, tmp_path):
    root = tmp_path / "data"
    result = run_finetune(_request(base, tmp_path, name="mine", overrides={"train": {**FAST["train"], "steps": 2}}))
    assert finetuned_path("mine", root) == result.model_path
    assert finetuned_name(result.model_path, root) == "mine"
    assert finetuned_name(base, root) is None  # a model elsewhere is a plain checkpoint file
    for bad, message in (("", "no fine-tuned model chosen"), ("../mine", "no fine-tuned model chosen"),
                         ("gone", "no longer in")):
        with pytest.raises(FinetuneError, match=message):
            finetuned_path(bad, root)


def test_annotator_settings_name_a_fine_tuned_model():
    from napari_segdiff._settings import AnnotatorSettings, SettingsError

    s = AnnotatorSettings(model_source="finetuned", finetuned_model="finetuned-20260101-tile")
    restored, problems = AnnotatorSettings.from_dict(s.to_dict())
    assert restored == s and not problems
    with pytest.raises(SettingsError, match="must be text"):
        AnnotatorSettings(finetuned_model=3)


def test_cancel_keeps_the_best_model_so_far(base, tmp_path):
    events = []

    def stop_after_first_validation():
        return any(e["event"] == "val" for e in events)

    result = run_finetune(_request(base, tmp_path, overrides={"train": {**FAST["train"], "steps": 50}}),
                          events.append, should_stop=stop_after_first_validation)
    assert result.stop_reason == "cancelled" and result.metadata["steps"] < 50
    load_model(result.model_path)  # a usable model file


@pytest.mark.parametrize("labels, message", [
    (np.zeros((128, 128), np.int32), "at least 5 annotated objects"),
    ("single", "found 1"),
    (np.zeros((100, 128), np.int32), "differ in size"),
])
def test_too_few_objects_or_wrong_shape_is_refused(base, tmp_path, labels, message):
    image, full = annotated_tile()
    if isinstance(labels, str):
        labels = np.where(full == full.max(), 1, 0).astype(np.int32)
    with pytest.raises(FinetuneError, match=message):
        run_finetune(_request(base, tmp_path, image, labels))
    assert not models_dir(tmp_path / "data").exists()


def test_channel_mismatch_is_refused_gray_is_replicated(base, tmp_path):
    image, labels = annotated_tile()
    two = np.stack([image, image], -1) if image.ndim == 2 else image[..., :2]
    with pytest.raises(FinetuneError, match="channel"):
        collect_objects([TrainingImage(two, labels, "two")], in_channels=3)
    gray = image if image.ndim == 2 else image.mean(-1)
    assert len(collect_objects([TrainingImage(gray, labels, "gray")], in_channels=3)) >= MIN_OBJECTS


def test_accepted_only_uses_the_features_column(base):
    image, labels = annotated_tile()
    ids = np.unique(labels[labels > 0])
    features = {"index": np.r_[0, ids], "accepted": np.r_[False, [i % 2 == 0 for i in ids]]}
    keep = accepted_ids(features)
    assert keep == tuple(int(i) for i in ids if i % 2 == 0)
    assert accepted_ids({"index": [1]}) is None
    assert accepted_ids({"index": [1, 2, 3], "status": ["accepted", "rejected", "accepted"]}) == (1, 3)
    n = len(collect_objects([TrainingImage(image, labels, "t", keep)], in_channels=3))
    assert 0 < n < len(collect_objects([TrainingImage(image, labels, "t")], in_channels=3))


def test_exported_folder_adds_objects(base, tmp_path):
    from segdiff_core.data.readers import write_pair

    image, labels = annotated_tile(2)
    write_pair(tmp_path / "export", "slice0", image, labels)
    only_folder = collect_objects([], [tmp_path / "export"], in_channels=3)
    both = collect_objects([TrainingImage(*annotated_tile(0), "t")], [tmp_path / "export"], in_channels=3)
    assert len(only_folder) >= MIN_OBJECTS and len(both) > len(only_folder)


def test_changed_or_broken_base_model_is_refused(base, tmp_path):
    digest = file_sha256(base)
    model, cfg, meta = load_model(base)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    from segdiff_core.checkpoint import save_model

    save_model(base, model, cfg, meta)
    with pytest.raises(FinetuneError, match="changed on disk"):
        run_finetune(_request(base, tmp_path, base_digest=digest))
    base.write_bytes(b"garbage")
    with pytest.raises(FinetuneError, match="base model cannot be used"):
        run_finetune(_request(base, tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_data_folder_is_refused(base, tmp_path):
    ro = tmp_path / "data"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(FinetuneError, match="cannot write"):
            run_finetune(_request(base, tmp_path))
    finally:
        ro.chmod(0o700)


def test_data_folder_that_is_a_file_is_refused(base, tmp_path):
    (tmp_path / "data").write_text("a file where the folder should be")
    with pytest.raises(FinetuneError, match="cannot write to the data folder"):
        run_finetune(_request(base, tmp_path))


# ------------------------------------------------------------------ the worker process
def _drain(job, timeout=240.0):
    events, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        events += job.poll()
        if not job.running:
            return events
        time.sleep(0.2)
    raise AssertionError(f"the worker did not finish in {timeout} s: {events}")


@pytest.mark.slow
def test_worker_process_streams_events_and_refuses_a_second_run(base, tmp_path):
    job = FinetuneProcess(_request(base, tmp_path), threads=1)
    job.start()
    second = FinetuneProcess(_request(base, tmp_path), threads=1)
    with pytest.raises(FinetuneBusyError, match="already running"):
        second.start()
    events = _drain(job)
    assert events[0]["event"] == "started" and events[-1]["event"] == "done"
    load_model(events[-1]["model_path"])
    assert not job.lock_path.exists()


@pytest.mark.slow
def test_killed_worker_is_reported_and_stop_leaves_no_process(base, tmp_path):
    import signal

    job = FinetuneProcess(_request(base, tmp_path, overrides={"train": {**FAST["train"], "steps": 10_000}}), threads=1)
    job.start()
    t0 = time.monotonic()
    while not any(e["event"] == "log" for e in job.poll()) and time.monotonic() - t0 < 120:
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)
    events = _drain(job, 30)
    assert events[-1]["event"] == "error" and "SIGKILL" in events[-1]["message"]
    assert not models_dir(tmp_path / "data").exists() or not list(models_dir(tmp_path / "data").glob("*.pt"))
    again = FinetuneProcess(_request(base, tmp_path, overrides={"train": {**FAST["train"], "steps": 10_000}}), threads=1)
    again.start()  # the dead run's lock does not block a new one
    pid = again.pid
    again.stop(timeout=20)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB file system (tmpfs), or skip where mounting is not allowed."""
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_is_refused_before_training(base, tmp_path, tiny_disk):
    request = FinetuneRequest(str(base), (TrainingImage(*annotated_tile(), "tile0"),), overrides=FAST,
                              out_root=str(tiny_disk))
    with pytest.raises(FinetuneError, match="MB free"):
        run_finetune(request)
    assert not list(tiny_disk.rglob("*.pt"))


def test_segdiff_train_runs_the_same_recipe_file(base, tmp_path):
    """configs/finetune.toml is the recipe the panel reads, and segdiff-train takes it as is."""
    from pathlib import Path

    from segdiff_core.data.readers import write_pair
    from segdiff_core.training.cli import main
    from segdiff_core.training.finetune import RECIPE_PATH

    config = Path(__file__).resolve().parents[1] / "configs" / "finetune.toml"
    assert config.resolve() == RECIPE_PATH.resolve()
    write_pair(tmp_path / "export", "tile0", *annotated_tile())
    code = main(["--config", str(config), "--init-from", str(base), "--data.source", "instances",
                 "--data.root", str(tmp_path / "export"), "--data.val_fraction", "0", "--out", str(tmp_path / "run"),
                 "--train.steps", "4", "--train.val_every", "2", "--train.val_samples", "3", "--train.batch_size", "2",
                 "--train.val_generations", "1", "--train.val_steps", "2", "--no-progress"])
    assert code == 0
    _, cfg, meta = load_model(tmp_path / "run" / "best.pt")
    assert meta["train"]["lr_decay"] == "cosine" and meta["train"]["patience"] > 0
