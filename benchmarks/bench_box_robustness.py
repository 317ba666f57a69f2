"""Box robustness of the bundled model: IoU and predicted/true area against crop margin and box jitter.

Issue 11's own proxy for real annotation: synthetic prompts of every style family (including
the families held out of training), boxes from tight to half again as large, centred or drawn
sloppily, scored on the image's own pixels through the public path (``prompt_crop`` ->
``Segmenter.segment_batch`` -> ``paste_back``) by :mod:`segdiff_core.evaluation.runner`.
Rows: each SegDiff model file given, the Otsu-in-box baseline and, if given, a plain U-Net.

    python benchmarks/bench_box_robustness.py                         # v1 (git) vs the bundled model
    python benchmarks/bench_box_robustness.py --model v1=git:68b05b8:segdiff_core/models/nuclei-cpu.pt \\
        --model v2=segdiff_core/models/nuclei-cpu.pt --unet runs/unet-box/unet.pt
    python benchmarks/bench_box_robustness.py --smoke                 # a few prompts, to /tmp

Writes ``docs/box-robustness.json`` (every number, with per-prompt records), the markdown page
``docs/box-robustness.md`` and the plot ``docs/images/box-robustness.png``.

Box jitter ``j`` draws the drawn box from the tight box with the training protocol's jitter:
centre shifted by ``U(-j, j)`` of the box size per axis, height and width scaled by
``U(1 - j, 1 + 2 j)`` (seeded per prompt, identical for every method). The crop margin then
enlarges the drawn box (0 = tight, 0.15 = the default, 0.5 = loose).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report.common import clustered_se, judge, paired_difference, save_figure, tile_of, write_outputs  # noqa: E402
from segdiff_core.bundled import bundled_model_path  # noqa: E402
from segdiff_core.data.crops import CropProtocol  # noqa: E402
from segdiff_core.data.synthetic import HELDOUT_STYLES, STYLES  # noqa: E402
from segdiff_core.evaluation.baselines import otsu_method  # noqa: E402
from segdiff_core.evaluation.runner import (  # noqa: E402
    EvalProtocol, Method, prepare_items, run_method, segdiff_method, synthetic_items,
)
from segdiff_core.segmenter import Segmenter  # noqa: E402

V1_MODEL = "git:68b05b8:segdiff_core/models/nuclei-cpu.pt"
"""Version 1 of the bundled model (4000 steps, generator v1, no box channel), from git history."""
EVAL_SEED = 20261130


def resolve_model(spec: str, tmp: Path) -> Path:
    """``path`` or ``git:<rev>:<path>`` (extracted to ``tmp``) -> a model file path."""
    if not spec.startswith("git:"):
        return Path(spec)
    _, rev, path = spec.split(":", 2)
    out = tmp / f"{rev}-{Path(path).name}"
    out.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True,
                                   capture_output=True).stdout)
    return out


def _rel(where: str) -> str:
    """A model path as written in the docs: relative to the repository when inside it."""
    try:
        return str(Path(where).resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return where


def jitter_items(items: Sequence[Any], jitter: float, seed: int) -> list[Any]:
    """The items with their tight boxes replaced by sloppily drawn ones (see the module doc)."""
    if jitter <= 0:
        return list(items)
    proto = CropProtocol(margin=0.0, shift=jitter, scale_range=(1.0 - jitter, 1.0 + 2.0 * jitter))
    out = []
    for k, it in enumerate(items):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))
        out.append(dataclasses.replace(it, box=proto.crop_box(it.box, rng=rng, image_shape=it.image.shape[:2])))
    return out


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean IoU with spread, and the predicted/true area ratio (median and mean over prompts).
    ``iou_sem``: the standard error of the mean IoU, clustered by tile (:func:`benchmarks.report.common.tile_of`)."""
    iou = np.array([r["iou"] for r in records], dtype=float)
    ratio = np.array([r["pred_pixels"] / max(r["true_pixels"], 1) for r in records], dtype=float)
    n = len(records)
    sem = clustered_se(iou, [tile_of(r["name"]) for r in records]) if n > 1 else None
    return {
        "n": n,
        "tiles": len({tile_of(r["name"]) for r in records}),
        "iou": float(iou.mean()),
        "iou_std": float(iou.std()),
        "iou_sem": float("nan") if sem is None else sem,
        "area_ratio_median": float(np.median(ratio)),
        "area_ratio_mean": float(ratio.mean()),
        "area_ratio_pooled": float(sum(r["pred_pixels"] for r in records) / max(sum(r["true_pixels"] for r in records), 1)),
    }


def build_methods(args: argparse.Namespace, tmp: Path) -> tuple[list[Method], dict[str, Any]]:
    methods: list[Method] = []
    info: dict[str, Any] = {}
    for spec in args.model:
        name, _, where = spec.partition("=")
        path = resolve_model(where, tmp)
        seg = Segmenter.from_checkpoint(path, device="cpu")
        inf = seg.inference
        gens = args.generations or inf.generations
        steps = min(args.steps or inf.steps, seg.config.diffusion.num_timesteps)
        m = segdiff_method(seg, gens, steps, seed=args.seed)
        methods.append(dataclasses.replace(m, name=name))
        info[name] = {"model": _rel(where), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "box_channel": seg.config.model.box_channel, "noise_shift": seg.config.diffusion.noise_shift, "generations": gens,
                      "steps": steps, "sampler": inf.sampler, "threshold": inf.threshold,
                      "trained_on": seg.metadata.get("trained_on"), "train_steps": seg.metadata.get("steps")}
    if args.unet:
        from segdiff_core.baselines.unet import UNetSegmenter, unet_method

        unet = UNetSegmenter.from_checkpoint(args.unet, device="cpu")
        methods.append(unet_method(unet, name="unet"))
        train = unet.metadata.get("train") or {}
        info["unet"] = {"model": Path(args.unet).name, "sha256": hashlib.sha256(Path(args.unet).read_bytes()).hexdigest(),
                        "parameters": unet.model.num_parameters(), "box_channel": False,
                        "trained_on": ", ".join((unet.metadata.get("data") or {}).get("styles", [])),
                        "train_steps": unet.metadata.get("steps"), "batch_size": train.get("batch_size"),
                        "lr": train.get("lr"), "loss": unet.metadata.get("loss"),
                        "recipe": f"python benchmarks/train_unet_box.py --steps {unet.metadata.get('steps')} --out unet.pt"}
    if not args.no_otsu:
        methods.append(otsu_method(prompt=True))
        info["otsu"] = {"baseline": "Otsu threshold inside the crop, component at the centre"}
    return methods, info


def evaluate(args: argparse.Namespace, methods: list[Method]) -> list[dict[str, Any]]:
    base = synthetic_items(args.styles, args.n_per_style, tile_size=256, eval_seed=args.eval_seed,
                           objects_per_tile=args.objects_per_tile)
    rows: list[dict[str, Any]] = []
    for jitter in args.jitters:
        items = jitter_items(base, jitter, args.eval_seed + 1)
        for margin in args.margins:
            prepared = prepare_items(items, EvalProtocol("expansion", margin=margin), 48)
            for method in methods:
                t0 = time.perf_counter()
                res = run_method(prepared, method, chunk_size=16)
                by_style: dict[str, list[dict[str, Any]]] = {}
                for r in res.per_sample:
                    by_style.setdefault(r["group"], []).append(r)
                row = {"method": method.name, "margin": margin, "jitter": jitter, "seconds": time.perf_counter() - t0,
                       "all": summarise(res.per_sample), "styles": {s: summarise(v) for s, v in by_style.items()},
                       "per_prompt": [{"name": r["name"], "style": r["group"], "iou": r["iou"],
                                       "pred_pixels": r["pred_pixels"], "true_pixels": r["true_pixels"]} for r in res.per_sample]}
                rows.append(row)
                print(f"jitter {jitter:.2f} margin {margin:.2f} {method.name:8s} IoU {row['all']['iou']:.3f} "
                      f"area {row['all']['area_ratio_median']:.2f} ({row['seconds']:.0f} s)", flush=True)
    return rows


def _cell(s: dict[str, Any]) -> str:
    return f"{100 * s['iou']:.1f} ± {100 * s['iou_sem']:.1f}"


def _row(rows: list[dict[str, Any]], method: str, margin: float, jitter: float) -> dict[str, Any]:
    return next(x for x in rows if x["method"] == method and x["margin"] == margin and x["jitter"] == jitter)


def paired(result: dict[str, Any], a: str, b: str, margin: float, jitter: float, styles: Sequence[str] | None = None) -> dict[str, Any]:
    """IoU of method ``a`` minus method ``b`` on the same prompts (matched by name), in IoU points:
    mean, its standard error (clustered by tile) and n over the prompts of ``styles`` (None: all),
    and the verdict 'better' / 'worse' beyond twice the standard error, else 'no different'."""
    ra, rb = (_row(result["rows"], m, margin, jitter)["per_prompt"] for m in (a, b))
    iou_b = {r["name"]: r["iou"] for r in rb}
    keep = [r for r in ra if styles is None or r["style"] in styles]
    d = paired_difference([100 * r["iou"] for r in keep], [100 * iou_b[r["name"]] for r in keep],
                          groups=[tile_of(r["name"]) for r in keep])
    word = {"agrees": "better", "disagrees": "worse"}.get(judge(d["mean"], d["se"], +1), "no different")
    return {**d, "verdict": word}


def _tiles(result: dict[str, Any], styles: Sequence[str]) -> int:
    """How many tiles the prompts of ``styles`` come from (in the first row's records)."""
    return len({tile_of(r["name"]) for r in result["rows"][0]["per_prompt"] if r["style"] in styles})


def render_paired(result: dict[str, Any]) -> list[str]:
    """The candidate model against every other method, per jitter and margin: all families and the
    held-out family (paired differences of IoU points, ± standard error)."""
    cand = result.get("candidate")
    if not cand:
        return []
    others = [m for m in dict.fromkeys(r["method"] for r in result["rows"]) if m != cand]
    lines = ["", f"## Paired differences: `{cand}` minus each other method", "",
             f"IoU points of `{cand}` minus the other method on the same prompts (mean ± standard error of the "
             "per-prompt differences, clustered by tile); *better* / *worse*: beyond twice the standard error, "
             "else *no different*.",
             f"n = {len(result['styles']) * result['n_per_style']} prompts (all families) or "
             f"{len(result['heldout']) * result['n_per_style']} (held out) per cell, from "
             f"{_tiles(result, result['styles'])} and {_tiles(result, result['heldout'])} tiles."]
    for jitter in result["jitters"]:
        lines += ["", f"### Box jitter {jitter:g}", "",
                  "| other method | prompts | " + " | ".join(f"margin {m:g}" for m in result["margins"]) + " |",
                  "|---|---|" + "---|" * len(result["margins"])]
        for other in others:
            for tag, styles in (("all families", None), ("held out", result["heldout"])):
                if styles is not None and not styles:
                    continue
                cells = [paired(result, cand, other, m, jitter, styles) for m in result["margins"]]
                lines.append(f"| {other} | {tag} | " + " | ".join(
                    f"{c['mean']:+.1f} ± {'n/a' if c['se'] is None else format(c['se'], '.1f')} ({c['verdict']})"
                    for c in cells) + " |")
    return lines


def render(result: dict[str, Any]) -> str:
    rows, styles = result["rows"], result["styles"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [
        "# Box robustness (issue 11 benchmark)",
        "",
        "Written by `benchmarks/bench_box_robustness.py`; do not edit by hand. Synthetic prompts of the",
        f"families {', '.join(styles)} ({result['n_per_style']} per family, at most {result.get('objects_per_tile', 6)} per tile, "
        f"evaluation seed {result['eval_seed']}; held out of",
        f"training: {', '.join(result['heldout']) or 'none of these'}), scored on the image's own pixels through `prompt_crop` ->",
        "`Segmenter.segment_batch` -> `paste_back` at each model's own threshold (listed under Methods). Cells: mean IoU ×100",
        "± its standard error, clustered by tile (prompts cut from one tile share its optics and stain, so",
        "the error counts tiles, not prompts); area: median over prompts of predicted / true area.",
        "Box jitter j: centre shifted by U(-j, j) of the box size, sides scaled by U(1 - j, 1 + 2 j).",
        f"Torch threads {result['threads']}; load average at the end of the run "
        f"{' / '.join(f'{x:.1f}' for x in result.get('load_average', []))} (1/5/15 min; quality only, no timing claims).",
        "",
        "Methods:",
        "",
    ]
    for name, info in result["methods"].items():
        lines.append(f"- `{name}`: " + ", ".join(f"{k} {_rel(v) if k == 'model' else v}" for k, v in info.items()))
    if "unet" in result["methods"]:
        lines += ["", "The `unet` row is the plain one-pass U-Net of `segdiff_core.baselines.unet` (no diffusion, no",
                  "prompt-box channel; width chosen to match the SegDiff model's parameter count), trained on the same",
                  "data stream and box-robust crops as the bundled model by `benchmarks/train_unet_box.py`",
                  "(binary cross-entropy + soft Dice, from scratch). The file is not in the repository (it ships one",
                  "model file); its SHA-256 above identifies the file measured, and the recipe command rebuilds it."]
    for jitter in result["jitters"]:
        lines += ["", f"## Box jitter {jitter:g}", "", "### All families", ""]
        head = "| method | " + " | ".join(f"margin {m:g} IoU | area" for m in result["margins"]) + " |"
        lines += [head, "|---|" + "---|---|" * len(result["margins"])]
        for meth in methods:
            cells = []
            for m in result["margins"]:
                r = _row(rows, meth, m, jitter)
                cells += [_cell(r["all"]), f"{r['all']['area_ratio_median']:.2f}"]
            lines.append(f"| {meth} | " + " | ".join(cells) + " |")
        lines += ["", "### Per family (IoU; area)", ""]
        lines += ["| family | method | " + " | ".join(f"margin {m:g}" for m in result["margins"]) + " |",
                  "|---|---|" + "---|" * len(result["margins"])]
        for st in styles:
            tag = f"{st} (held out)" if st in result["heldout"] else st
            for meth in methods:
                cells = []
                for m in result["margins"]:
                    s = _row(rows, meth, m, jitter)["styles"][st]
                    cells.append(f"{_cell(s)}; {s['area_ratio_median']:.2f}")
                lines.append(f"| {tag} | {meth} | " + " | ".join(cells) + " |")
    lines += render_paired(result)
    lines += ["", "![IoU and area ratio against crop margin](images/box-robustness.png)", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    held = [s for s in result["heldout"] if s in result["styles"]]
    panels = [("all families", lambda r: r["all"])] + [(f"{s}, held out", lambda r, s=s: r["styles"][s]) for s in held]
    n_rows = len(panels) + 1
    fig, axes = plt.subplots(n_rows, len(result["jitters"]), figsize=(5.2 * len(result["jitters"]), 3.5 * n_rows),
                             squeeze=False)
    for c, jitter in enumerate(result["jitters"]):
        for meth in methods:
            sel = [next(x for x in rows if x["method"] == meth and x["margin"] == m and x["jitter"] == jitter)
                   for m in result["margins"]]
            for k, (_, part) in enumerate(panels):
                axes[k, c].errorbar(result["margins"], [part(r)["iou"] for r in sel],
                                    yerr=[part(r)["iou_sem"] for r in sel], marker="o", capsize=3, label=meth)
            axes[-1, c].plot(result["margins"], [r["all"]["area_ratio_median"] for r in sel], marker="o", label=meth)
        axes[0, c].set_title(f"box jitter {jitter:g}")
        for k, (name, _) in enumerate(panels):
            axes[k, c].set_ylabel(f"mean IoU ({name})")
        axes[-1, c].set_ylabel("predicted / true area (median, all)")
        axes[-1, c].axhspan(0.95, 1.10, color="0.9", zorder=0)
        axes[-1, c].set_xlabel("crop margin around the box")
        axes[0, c].legend(fontsize=8)
    save_figure(fig, path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="NAME=PATH or NAME=git:REV:PATH (repeatable)")
    ap.add_argument("--unet", help="a plain U-Net model file (segdiff_core.baselines.unet)")
    ap.add_argument("--styles", nargs="*", default=list(STYLES))
    ap.add_argument("--n-per-style", type=int, default=48)
    ap.add_argument("--objects-per-tile", type=int, default=2,
                    help="at most this many prompts per tile (fewer: more tiles, errors closer to the truth)")
    ap.add_argument("--margins", type=float, nargs="*", default=[0.0, 0.15, 0.3, 0.5])
    ap.add_argument("--jitters", type=float, nargs="*", default=[0.0, 0.15])
    ap.add_argument("--generations", type=int, help="default: each model's own")
    ap.add_argument("--steps", type=int, help="default: each model's own")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-seed", type=int, default=EVAL_SEED,
                    help="seed of the prompts; another value gives a tuning set apart from the published one")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--no-otsu", action="store_true", help="leave out the Otsu rows (e.g. with --update)")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="add the rows of another run's box-robustness.json (same prompts) for methods not run now")
    ap.add_argument("--candidate", help="a method name: add its paired differences against every other method")
    ap.add_argument("--smoke", action="store_true", help="2 prompts per family, 2 margins, output to a temp folder")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.model = [] if args.model == ["none"] else (args.model or [f"v1={V1_MODEL}", f"bundled={bundled_model_path()}"])
    if args.smoke:
        args.n_per_style, args.margins, args.jitters = 2, [0.0, 0.5], [0.0, 0.15]
        args.out = Path(tempfile.mkdtemp(prefix="box-robustness-"))
    with tempfile.TemporaryDirectory() as tmp:
        methods, info = build_methods(args, Path(tmp))
        rows = evaluate(args, methods) if methods else []
    result = {"eval_seed": args.eval_seed, "n_per_style": args.n_per_style, "styles": args.styles,
              "heldout": [s for s in args.styles if s in HELDOUT_STYLES], "margins": args.margins,
              "jitters": args.jitters, "methods": info, "threads": args.threads,
              "load_average": list(os.getloadavg()), "rows": rows, "candidate": args.candidate,
              "objects_per_tile": args.objects_per_tile}
    for other_path in args.merge:
        other = json.loads(other_path.read_text())
        if any(other.get(k, 6 if k == "objects_per_tile" else None) != result[k]
               for k in ("eval_seed", "n_per_style", "styles", "margins", "jitters", "objects_per_tile")):
            raise SystemExit(f"--merge {other_path}: other prompts or margins; rerun all methods together")
        mine = {r["method"] for r in result["rows"]}
        result["rows"] = [r for r in other["rows"] if r["method"] not in mine] + result["rows"]
        result["methods"] = {**{k: v for k, v in other["methods"].items() if k not in mine}, **result["methods"]}
        if not rows:  # nothing run now (--model none): the merged run's load average, not this moment's
            result["load_average"] = other.get("load_average", result["load_average"])
    if args.candidate:  # the candidate's rows first, the others in their order
        result["rows"].sort(key=lambda r: r["method"] != args.candidate)
        result["methods"] = dict(sorted(result["methods"].items(), key=lambda kv: kv[0] != args.candidate))
    write_outputs(args.out, "box-robustness", result, render, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
