"""segdiff-train: exact resume (also after SIGKILL), non-finite loss, fine-tuning, DDP, CLI config."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segdiff_core.checkpoint import load_model, safe_load
from segdiff_core.config import ConfigError
from segdiff_core.data.synthetic import make_dataset
from segdiff_core.evaluation import cli as eval_cli
from segdiff_core.training import cli
from segdiff_core.training.config import merge_run_config
from segdiff_core.training.sources import build_sources
from segdiff_core.training.trainer import Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[1]
FAST = {
    "train.batch_size": 2,
    "train.warmup_steps": 2,
    "train.log_every": 1,
    "train.val_every": 0,
    "data.tile_size": 64,
    "data.objects_per_tile": 2,
}


def _run(steps: int, **flags):
    return merge_run_config("test", None, {**FAST, "train.steps": steps, **flags})


def _trainer(run, out, **kw) -> Trainer:
    train_src, val_src, desc = build_sources(run.data)
    return Trainer(run, out, train_src, val_src, progress=False, describe_data=desc, log=lambda _m: None, **kw)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return safe_load(path)["model"]


def test_resume_continues_exactly(tmp_path):
    flags = {"train.lr_decay": "constant", "train.checkpoint_every": 3}
    _trainer(_run(6, **flags), tmp_path / "straight").fit()
    _trainer(_run(3, **flags), tmp_path / "split").fit()
    t = _trainer(_run(6, **flags), tmp_path / "split", resume=True)
    assert t.step == 3
    t.fit()
    a, b = _weights(tmp_path / "straight" / "state.pt"), _weights(tmp_path / "split" / "state.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = safe_load(tmp_path / "split" / "state.pt")
    assert state["step"] == 6 and state["optimizer"]["state"]
    steps = [json.loads(l)["step"] for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "split" / "training.png").stat().st_size > 1000
    model, cfg, meta = load_model(tmp_path / "split" / "last.pt")
    assert meta["steps"] == 6 and "synthetic" in meta["trained_on"]


@pytest.mark.slow
def test_validation_iou_is_what_segdiff_eval_reports_for_the_saved_model(tmp_path):
    val = {"train.val_every": 2, "train.val_samples": 4, "train.val_generations": 2, "train.val_steps": 3}
    run = _run(2, **val)
    result = _trainer(run, tmp_path / "run").fit()
    _, cfg, meta = load_model(result.best_model)
    report = tmp_path / "eval.json"
    code = eval_cli.main([
        str(result.best_model), "--data.styles", ",".join(run.data.styles), "--n", "2",
        "--eval-seed", str(run.data.val_seed), "--generations", "2", "--steps", "3",
        "--seed", str(run.train.seed), "--device", "cpu", "--no-progress", "--json", str(report),
    ])
    assert code == 0
    segdiff = json.loads(report.read_text())["results"][0]
    assert segdiff["n"] == 4 and segdiff["settings"]["sampler"] == cfg.inference.sampler
    for key in ("iou", "f1", "calibration"):
        assert segdiff["metrics"][key] == pytest.approx(meta["metrics"][key], rel=1e-9, abs=1e-12)
    assert result.best_iou == pytest.approx(segdiff["metrics"]["iou"], rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_sigkill_then_resume_loses_at_most_the_steps_since_the_checkpoint(tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "segdiff_core.training.cli", "--preset", "test", "--out", str(out), "--no-progress", "--resume",
            "--train.steps", "24", "--train.checkpoint_every", "4", "--train.val_every", "0", "--train.batch_size", "2",
            "--train.warmup_steps", "2", "--data.tile_size", "64", "--data.objects_per_tile", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = out / "state.pt"
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            step = safe_load(state)["step"]
            if step >= 8:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    # the signal, not a finished (or crashed) run, ended the process
    assert proc.wait() == -signal.SIGKILL, proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    saved = safe_load(state)["step"]
    assert 8 <= saved < 24 and saved % 4 == 0
    resumed = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {state} at step {saved}" in resumed.stdout
    assert safe_load(state)["step"] == 24
    # identical to a run that was never interrupted (same thread count as the subprocess)
    torch.set_num_threads(1)
    _trainer(merge_run_config("test", None, {**FAST, "train.steps": 24, "train.checkpoint_every": 4, "train.log_every": 25}), tmp_path / "whole").fit()
    a, b = _weights(state), _weights(tmp_path / "whole" / "state.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_non_finite_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    t = _trainer(_run(10, **{"train.checkpoint_every": 2}), tmp_path)
    real_loss = t.scheduler.loss

    def loss(eps, noise):
        value = real_loss(eps, noise)
        return value * float("nan") if t.step >= 5 else value

    monkeypatch.setattr(t.scheduler, "loss", loss)
    with pytest.raises(TrainingError, match=r"non-finite.*step 6.*last good checkpoint"):
        t.fit()
    state = safe_load(tmp_path / "state.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_fine_tune_from_a_model_file_on_exported_annotations(tmp_path, capsys, monkeypatch):
    from segdiff_core import checkpoint

    _trainer(_run(2), tmp_path / "base").fit()
    make_dataset(tmp_path / "exported", n_per_style=2, styles=("fluorescence",), size=64, seed=3)
    reads: list[Path] = []
    real_safe_load = checkpoint.safe_load

    def counting_safe_load(path, what="checkpoint"):  # the real loader, with a tally
        reads.append(Path(path))
        return real_safe_load(path, what)

    monkeypatch.setattr(checkpoint, "safe_load", counting_safe_load)
    code = cli.main(["--init-from", str(tmp_path / "base" / "last.pt"), "--out", str(tmp_path / "ft"), "--no-progress",
                     "--data.source", "instances", "--data.root", str(tmp_path / "exported"), "--data.val_fraction", "0.5",
                     "--train.steps", "2", "--train.batch_size", "2", "--train.val_every", "2", "--train.val_samples", "2",
                     "--train.val_generations", "2", "--train.val_steps", "2"])
    assert code == 0
    assert reads.count(tmp_path / "base" / "last.pt") == 1  # --init-from reads the file once
    out = capsys.readouterr().out
    assert "instances dataset" in out and "best validation IoU" in out
    _, cfg, meta = load_model(tmp_path / "ft" / "best.pt")
    assert cfg.model.image_size == 32 and "instances" in meta["trained_on"] and "iou" in meta["metrics"]
    # the network of the checkpoint is kept: overriding it is refused with a clear message
    code = cli.main(["--init-from", str(tmp_path / "base" / "last.pt"), "--out", str(tmp_path / "bad"), "--model.model_channels", "8"])
    assert code == 2 and "keeps the checkpoint's network" in capsys.readouterr().err


def test_config_file_and_flags_share_one_source_of_truth(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('preset = "test"\n[train]\nsteps = 7\nlr = 0.001\n[model]\nmodel_channels = 8\n')
    assert cli.main(["--out", str(tmp_path), "--config", str(cfg), "--train.lr", "0.005", "--data.styles", "he", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["steps"] == 7 and printed["train"]["lr"] == 0.005
    assert printed["model"]["model_channels"] == 8 and printed["model"]["image_size"] == 32
    assert printed["data"]["styles"] == ["he"]
    cfg.write_text("[train]\nstepz = 3\n")
    assert cli.main(["--out", str(tmp_path), "--config", str(cfg), "--print-config"]) == 2
    assert "stepz" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="data.root"):
        merge_run_config("test", None, {"data.source": "folder"})


@pytest.mark.parametrize("toml, key", [
    ('[train]\nsteps = "abc"\n', "steps"), ("[train]\nsteps = 5.5\n", "steps"), ('[train]\nlr = "fast"\n', "lr"),
    ('[data]\nstyles = ["he", 3]\n', "styles"), ('[model]\nimage_size = "big"\n', "image_size"),
    ('[inference]\nthreshold = "x"\n', "threshold"), ("[train]\namp = 1\n", "amp"),
    ("[train]\nval_every = -1\n", "val_every"),  # was accepted and validated at every step
    ("[train]\nseed = -1\n", "seed"), ("[data]\nval_seed = -2\n", "val_seed"),  # failed after start-up, unnamed
])
def test_a_config_file_value_of_the_wrong_type_is_named_not_a_traceback(tmp_path, capsys, toml, key):
    # these used to end in "TypeError: '<' not supported between instances of 'str' and 'int'"
    cfg = tmp_path / "run.toml"
    cfg.write_text(toml)
    assert cli.main(["--out", str(tmp_path / "o"), "--config", str(cfg), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert key in err and ("expected" in err or ">= 0" in err) and "Traceback" not in err
    assert not (tmp_path / "o").exists()


CLI_FAST = ["--preset", "test", "--no-progress", "--train.batch_size", "2", "--train.warmup_steps", "2",
            "--train.val_every", "0", "--data.tile_size", "64", "--data.objects_per_tile", "2",
            "--train.lr_decay", "constant", "--train.lr", "0.0005", "--train.seed", "3"]


def test_resume_with_a_flag_keeps_the_runs_other_settings_and_is_exact(tmp_path, capsys):
    # `--resume --train.steps 6` used to rebuild the settings from the default preset and the
    # flags alone: the run's lr, seed, batch size, tile size (and here its preset) were lost.
    assert cli.main(["--out", str(tmp_path / "whole"), *CLI_FAST, "--train.steps", "6"]) == 0
    assert cli.main(["--out", str(tmp_path / "split"), *CLI_FAST, "--train.steps", "4"]) == 0
    assert cli.main(["--out", str(tmp_path / "split"), "--resume", "--no-progress", "--train.steps", "6"]) == 0
    assert "resumed from" in capsys.readouterr().out
    saved = json.loads((tmp_path / "split" / "run.json").read_text())
    assert saved == json.loads((tmp_path / "whole" / "run.json").read_text())
    assert saved["train"]["lr"] == 0.0005 and saved["train"]["seed"] == 3 and saved["data"]["tile_size"] == 64
    a, b = _weights(tmp_path / "whole" / "state.pt"), _weights(tmp_path / "split" / "state.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert cli.main(["--out", str(tmp_path / "split"), "--resume", "--preset", "cpu-small", "--print-config"]) == 2
    assert "preset" in capsys.readouterr().err


def test_a_missing_device_or_an_output_path_that_is_a_file_is_a_message(tmp_path, capsys):
    # both used to end in tracebacks (ValueError from the device choice, FileExistsError mid-run)
    missing = "gpu" if torch.cuda.is_available() else "cuda"
    for device in ("gpu", missing):
        with pytest.raises(SystemExit) as exc:
            cli.main(["--out", str(tmp_path / "o"), *CLI_FAST, "--train.steps", "2", "--device", device])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--device" in err and "Traceback" not in err
    blocker = tmp_path / "a file"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "sub"):
        assert cli.main(["--out", str(out), *CLI_FAST, "--train.steps", "2"]) == 2
        err = capsys.readouterr().err
        assert "not writable" in err and "Traceback" not in err
    assert blocker.read_text() == "keep me"


@pytest.mark.slow
def test_a_second_run_into_a_folder_a_live_run_writes_is_refused(tmp_path, capsys):
    # two runs (say a forgotten one and a --resume) used to write state.pt, last.pt and
    # metrics.jsonl in turn; now the folder is locked while a run lives, and a killed run's
    # lock does not block the resume
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "segdiff_core.training.cli", "--out", str(out), *CLI_FAST,
                             "--train.steps", "100000", "--train.log_every", "1", "--train.checkpoint_every", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not (out / "state.pt").exists():
            time.sleep(0.05)
        assert proc.poll() is None and (out / "state.pt").exists()
        assert cli.main(["--out", str(out), "--resume", "--no-progress", "--train.steps", "4"]) == 2
        err = capsys.readouterr().err
        assert f"process {proc.pid}" in err and "another segdiff-train" in err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = safe_load(out / "state.pt")["step"]
    assert cli.main(["--out", str(out), "--resume", "--no-progress", "--train.steps", str(step + 2)]) == 0
    assert safe_load(out / "state.pt")["step"] == step + 2
    assert not (out / cli.RUN_LOCK).exists()


def test_resume_after_a_kill_that_tore_the_last_log_line(tmp_path, capsys):
    # metrics.jsonl is appended to; a kill mid-append leaves half a line, which used to stop
    # every later --resume with "Unterminated string starting at: line 1 column 13"
    out = tmp_path / "run"
    assert cli.main(["--out", str(out), *CLI_FAST, "--train.steps", "4", "--train.log_every", "1"]) == 0
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 5, "lo')
    assert cli.main(["--out", str(out), "--resume", "--no-progress", "--train.steps", "6"]) == 0, capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_new_run_into_a_finished_runs_folder_is_refused(tmp_path, capsys):
    # without --resume the second run used to overwrite last.pt/state.pt and empty metrics.jsonl
    out = tmp_path / "run"
    assert cli.main(["--out", str(out), *CLI_FAST, "--train.steps", "3"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert cli.main(["--out", str(out), *CLI_FAST, "--train.steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "state.pt" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_ctrl_c_stops_with_a_checkpoint_of_the_current_step_and_resume_is_exact(tmp_path):
    # Ctrl-C used to end in a KeyboardInterrupt traceback and lose the steps since the last
    # checkpoint; now it saves the current step, says how to continue, and the resume is exact.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "segdiff_core.training.cli", *CLI_FAST, "--train.steps", "80",
           "--train.checkpoint_every", "1000", "--train.log_every", "1"]
    out = tmp_path / "stopped"
    proc = subprocess.Popen([*cmd, "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = out / "metrics.jsonl", time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (log.exists() and len(log.read_text().splitlines()) >= 5):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    stopped = safe_load(out / "state.pt")["step"]
    assert 5 <= stopped < 80  # saved at the step it stopped, not at a checkpoint_every multiple
    assert f"stopped at step {stopped}" in stderr
    assert subprocess.run([*cmd, "--out", str(out), "--resume"], cwd=ROOT, env=env, capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "--out", str(tmp_path / "whole")], cwd=ROOT, env=env, capture_output=True).returncode == 0
    a, b = _weights(out / "state.pt"), _weights(tmp_path / "whole" / "state.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dataset_with_no_usable_sample_is_an_error(tmp_path, capsys):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    code = cli.main(["--out", str(tmp_path / "o"), "--preset", "test", "--no-progress", "--data.source", "instances", "--data.root", str(tmp_path / "empty")])
    assert code == 1 and "empty" in capsys.readouterr().err


def test_a_validation_split_without_objects_stops_the_run_before_training(tmp_path, capsys):
    # it used to train val_every steps (hours on a real run), then fail at the first
    # validation with no checkpoint written
    import numpy as np
    import tifffile

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(6):
        tifffile.imwrite(root / "images" / f"i{k}.tif", np.random.default_rng(k).integers(0, 255, (64, 64), dtype=np.uint8))
        tifffile.imwrite(root / "masks" / f"i{k}.tif", np.zeros((64, 64), np.uint8))
    out = tmp_path / "run"
    code = cli.main(["--out", str(out), "--preset", "test", "--no-progress", "--data.source", "folder", "--data.root", str(root),
                     "--data.tile_size", "64", "--train.batch_size", "2", "--train.steps", "40", "--train.val_every", "20",
                     "--train.log_every", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "all masks are empty" in err and "Traceback" not in err
    assert not (out / "metrics.jsonl").exists()  # not a single step was spent


@pytest.mark.slow
def test_two_process_ddp_on_cpu_keeps_replicas_identical(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "segdiff_core.training.cli", "--preset", "test",
           "--out", str(out), "--no-progress", "--train.steps", "4", "--train.batch_size", "2", "--train.val_every", "0",
           "--train.checkpoint_every", "2", "--data.tile_size", "64"]
    res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    info = json.loads((out / "distributed.json").read_text())
    assert info == {"world_size": 2, "replicas_identical": True, "step": 4}
    assert res.stdout.count("segdiff-train: done at step 4") == 1  # only rank 0 reports and writes
    assert safe_load(out / "state.pt")["step"] == 4
