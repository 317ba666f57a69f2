#!/usr/bin/env python
"""Write the measured part of docs/bundled-model.md from a training run and the shipped file.

Reads ``<run>/metrics.jsonl`` and the model file's metadata, plots the training curves to
``docs/images/bundled-model/training-v<version>.png`` and replaces the section between the
``bundled_model_card`` markers of ``docs/bundled-model.md``. Nothing in that section is typed
by hand.

    python scripts/bundled_model_card.py /work/runs/nuclei-box/out segdiff_core/models/nuclei-cpu.pt
    python scripts/bundled_model_card.py RUN MODEL --ship RUN/last.pt --generations 8 --steps 1
    python scripts/bundled_model_card.py /work/runs/v3/out segdiff_core/models/nuclei-cpu.pt --version 3
    python scripts/bundled_model_card.py /work/runs/v3b/out segdiff_core/models/nuclei-cpu.pt --version 4 \
        --earlier "version 3 (from version 2)=docs/bundled-model/training-v3-metrics.jsonl"

``--earlier LABEL=METRICS`` (repeatable) adds a row for an earlier training stage of the same
weights from its kept log, next to the run's own stage.

``--ship`` first copies a run's model file to MODEL with the default inference settings chosen
from the measured quality-against-time curve (docs/steps-generations.md) saved in its config.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segdiff_core.checkpoint import load_model  # noqa: E402
from segdiff_core.training.plots import plot_training, read_log  # noqa: E402

BEGIN, END = "<!-- bundled_model_card: begin -->", "<!-- bundled_model_card: end -->"


def log_stats(metrics: Path) -> dict[str, float]:
    """Steps, loss (mean of the first and last 4 log intervals), peak lr and speed of one run's log."""
    rows = read_log(metrics)
    loss = [r["loss"] for r in rows if "loss" in r]
    rate = np.array([r["steps_per_s"] for r in rows if "steps_per_s" in r])
    lr = [r["lr"] for r in rows if "lr" in r]
    return {"steps": max(r["step"] for r in rows), "first": float(np.mean(loss[:4])), "last": float(np.mean(loss[-4:])),
            "lr": max(lr) if lr else float("nan"), "rate": float(np.median(rate)), "rate_min": float(rate.min()),
            "rate_max": float(rate.max()), "n": int(rate.size)}


def _stage_row(label: str, metrics: Path) -> str:
    st = log_stats(metrics)
    return (f"| earlier stage: {label} | {st['steps']} steps, peak logged lr {st['lr']:.1e}, loss {st['first']:.4f} -> "
            f"{st['last']:.4f}, median {st['rate']:.2f} steps/s (log: `{metrics.name}`) |")


def card(run_dir: Path, model_path: Path, version: int = 2, earlier: list[tuple[str, Path]] | None = None,
         threads: int = 1) -> str:
    st = log_stats(run_dir / "metrics.jsonl")
    model, config, meta = load_model(model_path)
    size_mb = model_path.stat().st_size / 1e6
    train = meta.get("train", {})
    return "\n".join([
        BEGIN,
        "",
        "Measured by `scripts/bundled_model_card.py` from the run's `metrics.jsonl` and the shipped file:",
        "",
        "| | |",
        "|---|---|",
        *[_stage_row(label, path) for label, path in earlier or []],
        f"| training steps of this version | {meta.get('steps')} (warm start from version {version - 1}), "
        f"lr {train.get('lr')}, {train.get('warmup_steps')} warm-up steps, seed {train.get('seed')} |",
        f"| training speed | median {st['rate']:.2f} steps/s (min {st['rate_min']:.2f}, max {st['rate_max']:.2f}) over "
        f"{st['n']} log intervals, batch {train.get('batch_size')}, {threads} torch thread{'s' if threads > 1 else ''}, "
        "shared 2-core machine |",
        f"| training loss ({config.diffusion.prediction} MSE) | {st['first']:.4f} (first 4 log intervals) -> {st['last']:.4f} (last 4) |",
        f"| parameters, file size | {model.num_parameters() / 1e6:.2f} M, {size_mb:.1f} MB |",
        f"| box channel | {config.model.box_channel} |",
        f"| diffusion | T = {config.diffusion.num_timesteps}, {config.diffusion.prediction}-prediction, "
        f"noise shift {config.diffusion.noise_shift:g}, self-conditioning {config.model.self_condition} |",
        f"| default inference | {config.inference.generations} generations x {config.inference.steps} "
        f"{config.inference.sampler.upper()} steps, threshold {config.inference.threshold} |",
        f"| trained on | {meta.get('trained_on')} |",
        "",
        f"![training curves](images/bundled-model/training-v{version}.png)",
        "",
        END,
    ])


def ship(source: Path, dest: Path, generations: int, steps: int, threshold: float | None = None) -> None:
    """Write ``source``'s model to ``dest`` with new default generations/steps and, if given,
    threshold (atomic)."""
    from segdiff_core.checkpoint import save_model

    model, config, meta = load_model(source)
    inference = config.inference.replace(generations=generations, steps=steps)
    meta = {**meta, "inference_chosen_by": "benchmarks/bench_steps.py (docs/steps-generations.md)"}
    if threshold is not None:
        inference = inference.replace(threshold=threshold)
        meta["threshold_chosen_by"] = ("benchmarks/bench_box_robustness.py --eval-seed 777 on the training "
                                       "families (a tuning set apart from the published prompts)")
    save_model(dest, model, config.replace(inference=inference), meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the training run's output folder")
    ap.add_argument("model", type=Path, help="the shipped model file")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "bundled-model.md")
    ap.add_argument("--ship", type=Path, help="copy this model file to MODEL first, with the settings below")
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--threshold", type=float, help="with --ship: the default threshold (default: the source's)")
    ap.add_argument("--version", type=int, default=2, help="the bundled model's version number (names the curves)")
    ap.add_argument("--earlier", action="append", default=[],
                    help="LABEL=METRICS.jsonl of an earlier training stage of the same weights (repeatable)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads the run trained with (for the card)")
    args = ap.parse_args(argv)
    earlier = [(label, Path(path)) for label, _, path in (e.partition("=") for e in args.earlier)]
    if args.ship:
        ship(args.ship, args.model, args.generations, args.steps, args.threshold)
    plot_training(args.run / "metrics.jsonl", ROOT / "docs" / "images" / "bundled-model" / f"training-v{args.version}.png")
    text = card(args.run, args.model, args.version, earlier, args.threads)
    doc = args.doc.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{args.doc} has no {BEGIN} ... {END} section")
    args.doc.write_text(pattern.sub(lambda _m: text, doc))
    (ROOT / "docs" / "bundled-model" ).mkdir(exist_ok=True)
    (ROOT / "docs" / "bundled-model" / f"training-v{args.version}-metrics.jsonl").write_text((args.run / "metrics.jsonl").read_text())
    print(json.dumps({"wrote": str(args.doc)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
