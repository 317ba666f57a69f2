"""Fine-tuning benchmark: how much a few annotated objects of an unseen style buy, and how fast.

The bundled model never saw the synthetic "ihc" style family. A user annotates K objects of
one 256 px ihc tile (K = 5, 10, 25, 50) and fine-tunes with the panel's recipe
(``segdiff_core/training/finetune.toml``: time budget, early stopping, best validated weights);
the fine-tuned model is scored on objects of *other* ihc tiles (the evaluation runner's held-out
synthetic set, 15 % expansion crops). Also measured: IoU against minutes of fine-tuning (the
best-so-far model at each validation of the K = 25 run), a 300-step reference run at K = 25 (the
gain the recipe must reach 90 % of), and a few recipe choices (learning rate, frozen image
encoder) at K = 25.

    python benchmarks/bench_finetune.py --out docs/fine-tuning.json          # all parts
    python benchmarks/bench_finetune.py --parts base,k25,ref --eval-n 30     # a reduced run
    python benchmarks/bench_finetune.py --report docs/fine-tuning.json       # table + plot only

Results go to the JSON file after every part (a long run can be stopped and resumed: finished
parts are kept), and ``--report`` writes ``docs/fine-tuning.md``'s generated section and
``docs/images/fine-tuning.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from segdiff_core.bundled import bundled_model_path
from segdiff_core.evaluation.runner import EvalProtocol, prepare_items, run_method, segdiff_method, synthetic_items
from segdiff_core.segmenter import Segmenter
from segdiff_core.training.finetune import FinetuneRequest, TrainingImage, run_finetune

STYLE = "ihc"
KS = (5, 10, 25, 50)
PARTS = ("base", "k25", "ref", "k5", "k10", "k50", "no-image-encoder", "lr1e-3", "batch4", "lr2e-4", "decoder", "curve")
#: recipe choices compared at K = 25 (each overrides the recipe's [train] section)
CHOICES = {
    "lr2e-4": {"lr": 2e-4},
    "lr1e-3": {"lr": 1e-3},
    "no-image-encoder": {"trainable": "no-image-encoder"},
    "decoder": {"trainable": "decoder"},
    "batch4": {"batch_size": 4},
}
DOC = Path("docs/fine-tuning.md")
PLOT = Path("docs/images/fine-tuning.png")
BEGIN, END = "<!-- bench_finetune:begin -->", "<!-- bench_finetune:end -->"


def training_tile(k: int, seed: int = 7) -> TrainingImage:
    """K annotated objects (>= 16 px) of one ihc tile; the other objects are left unlabelled."""
    from segdiff_core.data.synthetic import generate_tile

    tile = generate_tile(STYLE, 256, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(99,))))
    ids, areas = np.unique(tile.labels[tile.labels > 0], return_counts=True)
    ids = ids[areas >= 16]
    if k > ids.size:
        raise SystemExit(f"the training tile has only {ids.size} objects; K = {k} is too many")
    keep = np.random.default_rng(seed).choice(ids, size=k, replace=False)
    return TrainingImage(tile.image, tile.labels.astype(np.int32), f"{STYLE}-tile", tuple(int(i) for i in keep))


class Scorer:
    """Held-out IoU of a model file on other ihc tiles (prepared once)."""

    def __init__(self, n: int, generations: int, steps: int) -> None:
        self.items = prepare_items(synthetic_items([STYLE], n), EvalProtocol("expansion"), 48)
        self.generations, self.steps = generations, steps

    def __call__(self, model: str | Path) -> dict[str, float]:
        seg = Segmenter.from_checkpoint(model, device="cpu")
        res = run_method(self.items, segdiff_method(seg, self.generations, self.steps, seed=0))
        ious = np.array([r["iou"] for r in res.per_sample], dtype=float)
        return {"iou": float(ious.mean()), "iou_std": float(ious.std()), "n": int(ious.size), "eval_s": res.seconds}


def finetune(k: int, train: dict[str, Any], work: Path, snapshots: bool = False) -> tuple[dict[str, Any], list[tuple[float, Path]]]:
    """One fine-tune; returns its record and, with ``snapshots``, (minutes, best-so-far model file)."""
    events: list[dict[str, Any]] = []
    snaps: list[tuple[float, Path]] = []
    t0 = time.perf_counter()
    name = f"k{k}-" + "-".join(f"{a}{b}" for a, b in sorted(train.items())).replace(".", "")

    pending: list[float] = []  # time of a validation whose best.pt is written after its event

    def on_event(event: dict[str, Any]) -> None:
        event = {**event, "t": time.perf_counter() - t0}
        events.append(event)
        best = work / "runs" / name / "best.pt"
        if snapshots and pending and best.exists():  # the best-so-far weights at that validation
            copy = work / f"snap-{len(snaps)}.pt"
            shutil.copy(best, copy)
            snaps.append((pending.pop() / 60.0, copy))
        if snapshots and event["event"] == "val":
            pending[:] = [event["t"]]

    load0 = os.getloadavg()[0]
    result = run_finetune(FinetuneRequest(str(bundled_model_path()), (training_tile(k),), overrides={"train": train},
                                          out_root=str(work), name=name), on_event)
    minutes = (time.perf_counter() - t0) / 60.0
    logs = [e for e in events if e["event"] == "log"]
    sec_per_step = float(np.median([1.0 / e["steps_per_s"] for e in logs])) if logs else float("nan")
    record = {"k": k, "train": train, "minutes": minutes, "sec_per_step": sec_per_step, "load_start": load0,
              "load_end": os.getloadavg()[0], "model": str(result.model_path), "improved": result.improved,
              **{key: result.metadata[key] for key in ("steps", "best_step", "val_iou_before", "val_iou_after",
                                                       "stop_reason", "n_train", "n_val")},
              "val_curve": [(e["t"] / 60.0, e["step"], e["val_iou"]) for e in events if e["event"] == "val"]}
    return record, snaps


def run_parts(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("meta", {}).update({
        "style": STYLE, "eval_n": args.eval_n, "eval_generations": args.generations, "eval_steps": args.steps,
        "cpu_cores": os.cpu_count(), "torch_threads": __import__("torch").get_num_threads(),
    })
    score = Scorer(args.eval_n, args.generations, args.steps)
    work = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    for part in args.parts:
        if part in results and not args.redo:
            continue
        t0 = time.perf_counter()
        if part == "base":
            results[part] = {"held_out": score(bundled_model_path())}
        else:
            k = int(part[1:]) if part.startswith("k") else 25
            train = {"steps": args.ref_steps, "patience": 0, "max_minutes": 0.0} if part == "ref" else dict(CHOICES.get(part, {}))
            if part == "curve":  # IoU against minutes: the recipe without early stopping, a longer budget
                train = {"steps": args.ref_steps, "patience": 0, "max_minutes": args.curve_minutes}
            if args.smoke:
                train.update(steps=4, val_every=2, val_samples=2, val_generations=1, val_steps=2, batch_size=2)
            record, snaps = finetune(k, train, work, snapshots=part in ("k25", "curve"))
            record["held_out"] = score(record["model"])
            record["held_out_vs_minutes"] = [(m, score(p)["iou"]) for m, p in snaps[: args.max_snapshots]]
            results[part] = record
        results[part]["wall_minutes"] = (time.perf_counter() - t0) / 60.0
        out.write_text(json.dumps(results, indent=2))
        print(f"{part}: {json.dumps(results[part].get('held_out'))} ({results[part]['wall_minutes']:.1f} min)", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return results


# ------------------------------------------------------------------------------------ report
def _fmt(x: Any, spec: str = ".3f") -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def report(results: dict[str, Any]) -> str:
    base = results.get("base", {}).get("held_out", {})
    b = base.get("iou")
    ref = results.get("ref", {})
    gain_ref = ref["held_out"]["iou"] - b if ref and b is not None else None
    rows = ["| run | K | trained | steps (kept) | stopped by | minutes | s/step | load | val IoU before → after | held-out IoU (± sd) | gain | share of 300-step gain |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows.append(f"| bundled model | – | – | – | – | – | – | – | – | {_fmt(b)} ± {_fmt(base.get('iou_std'))} | – | – |")
    for part in [p for p in PARTS if p in results and p != "base"]:
        r = results[part]
        h = r["held_out"]
        gain = h["iou"] - b if b is not None else None
        share = f"{100 * gain / gain_ref:.0f} %" if gain is not None and gain_ref else "–"
        after = r["val_curve"][-1][2] if not r["best_step"] and r["val_curve"] else r["val_iou_after"]  # of the kept weights
        what = {"ref": "300 steps, no budget", "curve": "recipe, no early stop, longer budget"}.get(
            part, "recipe" if part.startswith("k") else f"recipe, {part}")
        rows.append(
            f"| {part} | {r['k']} | {what} | {r['steps']} ({r['best_step'] or 'last'}) | {r['stop_reason'] or 'steps'} | "
            f"{r['minutes']:.1f} | {r['sec_per_step']:.1f} | "
            f"{r['load_start']:.0f}–{r['load_end']:.0f} | {_fmt(r['val_iou_before'])} → {_fmt(after)} | "
            f"{_fmt(h['iou'])} ± {_fmt(h['iou_std'])} | {_fmt(gain, '+.3f')} | {share} |"
        )
    curve = results.get("curve", {})
    if curve.get("held_out_vs_minutes") and b is not None:
        rows += ["", "IoU against minutes (the `curve` run: the best-so-far model at each validation):", "",
                 "| minutes | step | held-out IoU | share of 300-step gain |", "|---|---|---|---|"]
        steps = [v[1] for v in curve["val_curve"]]
        for i, (minutes, iou) in enumerate(curve["held_out_vs_minutes"]):
            share = f"{100 * (iou - b) / gain_ref:.0f} %" if gain_ref else "–"
            rows.append(f"| {minutes:.1f} | {steps[i] if i < len(steps) else '?'} | {iou:.3f} | {share} |")
    m = results.get("meta", {})
    note = (f"\nHeld-out: {base.get('n', '?')} objects of other {STYLE} tiles, 15 % expansion crops, "
            f"{m.get('eval_generations')} generations × {m.get('eval_steps')} DDIM steps; ± is the standard deviation "
            f"over objects. Steps (kept): the steps run and the step whose weights were kept ('last': no "
            f"validation beat the base model's and the last weights were kept, the earlier rule). Minutes: wall "
            f"time of the whole fine-tune, validations included. Load = the machine's 1-minute load average at the start and end of the run "
            f"({m.get('cpu_cores')} cores, {m.get('torch_threads')} torch threads).\n")
    return "\n".join(rows) + "\n" + note


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    b = results.get("base", {}).get("held_out", {}).get("iou")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ks = [k for k in KS if f"k{k}" in results]
    ax1.errorbar(ks, [results[f"k{k}"]["held_out"]["iou"] for k in ks],
                 yerr=[results[f"k{k}"]["held_out"]["iou_std"] / np.sqrt(results[f"k{k}"]["held_out"]["n"]) for k in ks],
                 marker="o", capsize=3, label="recipe (≤ 3 min budget)")
    for ax in (ax1, ax2):
        if b is not None:
            ax.axhline(b, color="gray", ls="--", label="bundled model")
        if "ref" in results:
            ax.axhline(results["ref"]["held_out"]["iou"], color="C2", ls=":", label="300-step run, K = 25")
    ax1.set(xscale="log", xlabel="annotated objects K", ylabel="held-out IoU (error bars: standard error)",
            title=f"IoU against K ({STYLE}, unseen style)")
    ax1.set_xticks(list(KS), [str(k) for k in KS])
    ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for part, label in (("curve", "K = 25, best so far at each validation"),):
        curve = results.get(part, {}).get("held_out_vs_minutes", [])
        if curve:
            ax2.plot([0.0] + [c[0] for c in curve], [b] + [c[1] for c in curve], marker="o", label=label)
    ax2.axvline(3.0, color="k", lw=0.8, alpha=0.5)
    ax2.set(xlabel="minutes of fine-tuning (this machine, under load)", ylabel="held-out IoU", title="IoU against time")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def write_doc(results: dict[str, Any]) -> None:
    plot(results, PLOT)
    text = DOC.read_text() if DOC.exists() else f"# Fine-tuning\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    block = f"{BEGIN}\n<!-- written by benchmarks/bench_finetune.py --report; do not edit -->\n{report(results)}\n![fine-tuning](images/{PLOT.name})\n{END}"
    DOC.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/fine-tuning.json", help="results JSON (kept between runs)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, in order; from {', '.join(PARTS)}")
    ap.add_argument("--eval-n", type=int, default=30, help="held-out objects")
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--ref-steps", type=int, default=300)
    ap.add_argument("--max-snapshots", type=int, default=6)
    ap.add_argument("--curve-minutes", type=float, default=6.0, help="budget of the IoU-against-minutes run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: what the panel's worker uses on 2 cores)")
    ap.add_argument("--redo", action="store_true", help="run parts already in the JSON again")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run of every part (checks the script)")
    ap.add_argument("--report", metavar="JSON", help="only write the docs from a results file")
    args = ap.parse_args(argv)
    if args.report:
        write_doc(json.loads(Path(args.report).read_text()))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    args.parts = [p for p in args.parts.split(",") if p]
    if args.smoke:
        args.eval_n, args.generations, args.steps = 2, 1, 2
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}")
    write_doc(run_parts(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
