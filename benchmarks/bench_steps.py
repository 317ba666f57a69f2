"""Does iterative refinement earn its steps? IoU against DDIM steps and generations, and time.

For one model file: synthetic prompts of every style family at two crop margins, sampled once
with the largest number of generations for each number of DDIM steps; the ensemble of the first
``g`` generations gives the curve over ``g`` (nested ensembles, a paired comparison). IoU is
measured on the image's own pixels (paste-back of the mean map, the model's threshold), seconds
are wall time per prompt of the sampling (batched, 1 torch thread unless ``--threads``).

    python benchmarks/bench_steps.py                                  # the bundled model
    python benchmarks/bench_steps.py runs/x/last.pt --n-per-style 4 --out /tmp/steps

Writes ``<out>/steps-generations.json``, ``<out>/steps-generations.md`` and
``<out>/images/steps-generations.png`` (default ``<out>`` = docs/).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report.common import write_outputs  # noqa: E402
from segdiff_core.bundled import bundled_model_path  # noqa: E402
from segdiff_core.data.synthetic import HELDOUT_STYLES, STYLES  # noqa: E402
from segdiff_core.evaluation.runner import EvalProtocol, prepare_items, synthetic_items  # noqa: E402
from segdiff_core.metrics import iou  # noqa: E402
from segdiff_core.segmenter import Segmenter  # noqa: E402

EVAL_SEED = 20261201


def sweep(seg: Segmenter, prepared: list[Any], steps: list[int], generations: list[int], seed: int) -> dict[str, Any]:
    """IoU per (steps, g) for every prompt, and seconds per prompt per steps value."""
    g_max = max(generations)
    patches = [it.model_inputs[0] for it in prepared]
    boxes = [it.prompt_box for it in prepared]
    out: dict[str, Any] = {}
    for n_steps in steps:
        inf = seg.inference.replace(generations=g_max, steps=n_steps, sampler="ddim")
        t0 = time.perf_counter()
        res = seg.segment_batch(patches, inf, seed=seed, keep_generations=True, boxes=boxes)
        seconds = (time.perf_counter() - t0) / len(patches)
        per_g: dict[str, list[float]] = {}
        for g in generations:
            vals = []
            for it, r in zip(prepared, res):
                prob = it.to_region(r.generations[:g].mean(0)[None])
                vals.append(float(iou(prob > inf.threshold, it.target)))
            per_g[str(g)] = vals
        out[str(n_steps)] = {"seconds_per_prompt_at_max_g": seconds, "iou": per_g}
        print(f"steps {n_steps:3d}: " + " ".join(f"G{g} {np.mean(v):.3f}" for g, v in per_g.items())
              + f"  ({seconds:.2f} s/prompt at G={g_max})", flush=True)
    return out


def render(result: dict[str, Any]) -> str:
    lines = [
        "# IoU against DDIM steps and generations",
        "",
        "Written by `benchmarks/bench_steps.py`; do not edit by hand.",
        f"Model: `{result['model']}` ({result['train_steps']} training steps). {result['n_prompts']} prompts per margin",
        f"({result['n_per_style']} per family of {', '.join(result['styles'])}; held out of training:",
        f"{', '.join(result['heldout'])}), evaluation seed {result['eval_seed']}. Cells: mean IoU ×100 ± standard error",
        "over prompts; nested ensembles (the first g of the same samples). Time: seconds per prompt of",
        f"batched sampling with {result['threads']} torch thread(s) on a shared 2-core machine, scaled to g generations",
        "(time is linear in g x steps); absolute times move with the machine's load.",
    ]
    for margin, data in result["margins"].items():
        lines += ["", f"## Crop margin {margin}", "", "| DDIM steps | " + " | ".join(f"G={g}" for g in result["generations"]) + " | s/prompt at G=8 |",
                  "|---|" + "---|" * (len(result["generations"]) + 1)]
        for n_steps, d in data.items():
            cells = []
            for g in result["generations"]:
                v = np.array(d["iou"][str(g)])
                cells.append(f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1) / np.sqrt(len(v)):.1f}")
            s8 = d["seconds_per_prompt_at_max_g"] * 8 / max(result["generations"])
            lines.append(f"| {n_steps} | " + " | ".join(cells) + f" | {s8:.2f} |")
    lines += ["", "## Does iterative refinement earn its steps?", "", verdict(result), "",
              "![IoU against steps and generations](images/steps-generations.png)", ""]
    return "\n".join(lines)


def verdict(result: dict[str, Any]) -> str:
    """Paired IoU change of every steps value against 1 step, at the largest ensemble, in words."""
    g = str(max(result["generations"]))
    out = []
    for margin, data in result["margins"].items():
        one = np.array(data[min(data, key=int)]["iou"][g])
        parts = []
        for n_steps, d in data.items():
            if int(n_steps) == 1:
                continue
            diff = np.array(d["iou"][g]) - one
            se = diff.std(ddof=1) / np.sqrt(diff.size)
            word = "better" if diff.mean() > 2 * se else ("worse" if diff.mean() < -2 * se else "no different (within 2 SE)")
            parts.append(f"{n_steps} steps {100 * diff.mean():+.1f} ± {100 * se:.1f} IoU points ({word})")
        out.append(f"- margin {margin}, G={g}, against 1 step on the same prompts: " + "; ".join(parts) + ".")
    text = "\n".join(out)
    if "(better)" in text:
        head = "**Yes, in some settings: more steps are better beyond twice the noise; see below.**"
    elif "(worse)" in text:
        head = ("**No: more than one DDIM step does not improve the ensemble on these prompts, and in some "
                "settings it is worse; one step is the best quality for the time.**")
    else:
        head = ("**No measurable gain: more DDIM steps are within the noise of one step on these prompts and "
                "cost time in proportion; one step is the best quality for the time.**")
    return head + "\n\n" + text


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    margins = list(result["margins"])
    fig, axes = plt.subplots(1, len(margins), figsize=(5.5 * len(margins), 4), squeeze=False)
    g_max = max(result["generations"])
    for ax, margin in zip(axes[0], margins):
        data = result["margins"][margin]
        for g in result["generations"]:
            xs, ys = [], []
            for n_steps, d in data.items():
                xs.append(d["seconds_per_prompt_at_max_g"] * g / g_max)
                ys.append(np.mean(d["iou"][str(g)]))
            ax.plot(xs, ys, marker="o", label=f"G={g}")
            for x, y, n_steps in zip(xs, ys, data):
                ax.annotate(n_steps, (x, y), fontsize=7, textcoords="offset points", xytext=(2, 2))
        ax.set_xscale("log")
        ax.set_xlabel("seconds per prompt (labels: DDIM steps)")
        ax.set_ylabel("mean IoU")
        ax.set_title(f"crop margin {margin}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model file (default: the bundled model)")
    ap.add_argument("--styles", nargs="*", default=list(STYLES))
    ap.add_argument("--n-per-style", type=int, default=8)
    ap.add_argument("--margins", type=float, nargs="*", default=[0.15, 0.5])
    ap.add_argument("--steps", type=int, nargs="*", default=[1, 2, 3, 5, 10, 25])
    ap.add_argument("--generations", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.model or str(bundled_model_path())
    seg = Segmenter.from_checkpoint(path, device="cpu")
    items = synthetic_items(args.styles, args.n_per_style, tile_size=256, eval_seed=EVAL_SEED)
    result: dict[str, Any] = {
        "model": path, "train_steps": seg.metadata.get("steps"), "styles": args.styles,
        "heldout": [s for s in args.styles if s in HELDOUT_STYLES], "n_per_style": args.n_per_style,
        "n_prompts": len(items), "eval_seed": EVAL_SEED, "generations": args.generations, "threads": args.threads,
        "margins": {},
    }
    for margin in args.margins:
        print(f"margin {margin}", flush=True)
        prepared = prepare_items(items, EvalProtocol("expansion", margin=margin), seg.input_size)
        result["margins"][f"{margin:g}"] = sweep(seg, prepared, args.steps, args.generations, args.seed)
    write_outputs(args.out, "steps-generations", result, render, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
