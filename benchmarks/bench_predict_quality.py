"""Automatic-mode quality on held-out synthetic tiles vs the classical baseline.

Every family of the synthetic generator (the held-out ``ihc`` included) is drawn from a seed
stream the bundled model never trained on. Methods:

* ``classical``: Otsu foreground + distance-transform watershed (h-maxima markers);
* ``segdiff (otsu foreground)``: Otsu foreground -> same split -> SegDiff per box, proposals
  the objectness rule rejects dropped (the automatic mode's default for a box-prompt model);
* ``segdiff (segdiff foreground)``: SegDiff windows foreground (MoNuSeg protocol) -> same
  split -> SegDiff per box.

Metrics: instance F1 at IoU 0.5 (pooled over the tiles of a family: TP, FP, FN summed), the
per-tile F1 mean +- std, and the mean IoU of matched objects (+- std over objects). Writes
``docs/predict-quality.md`` and ``docs/predict-quality.json``.

    python benchmarks/bench_predict_quality.py --n 3 --generations 4 --steps 5
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from segdiff_core.bundled import bundled_model_path
from segdiff_core.data.synthetic import HELDOUT_STYLES, STYLES, iter_tiles
from segdiff_core.proposals import ProposalSettings, classical_instances, find_objects, match_instances
from segdiff_core.segmenter import Segmenter

SEED = 20261130  # a stream training never used (training draws from segdiff_core.training.data.step_rng)
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _iou_list(pred: np.ndarray, gt: np.ndarray) -> list[float]:
    """IoUs of the matched pairs (recomputed per pair so that a spread can be reported)."""
    from segdiff_core.proposals import _relabel

    p, g = _relabel(pred, 1), _relabel(gt, 1)
    out = []
    for lab in range(1, int(p.max(initial=0)) + 1):
        m = p == lab
        ids, counts = np.unique(g[m], return_counts=True)
        for gi, c in zip(ids, counts):
            if gi == 0:
                continue
            iou = c / np.count_nonzero(m | (g == gi))
            if iou > 0.5:
                out.append(float(iou))
    return out


def evaluate(methods, tiles_by_style, on_row=None):
    """One row per (method, family); methods outermost so the cheap ones finish first."""
    rows = []
    for name, fn in methods.items():
        for style, tiles in tiles_by_style.items():
            tp = fp = fn_ = 0
            f1s, ious, secs = [], [], 0.0
            for tile in tiles:
                t0 = time.perf_counter()
                pred = fn(tile.image)
                secs += time.perf_counter() - t0
                m = match_instances(pred, tile.labels)
                tp, fp, fn_ = tp + m["tp"], fp + m["fp"], fn_ + m["fn"]
                f1s.append(m["f1"])
                ious += _iou_list(pred, tile.labels)
            row = {
                "style": style, "method": name, "tiles": len(tiles), "gt_objects": tp + fn_,
                "pred_objects": tp + fp, "tp": tp, "fp": fp, "fn": fn_,
                "f1": 2 * tp / max(1, 2 * tp + fp + fn_), "f1_tile_mean": float(np.mean(f1s)),
                "f1_tile_std": float(np.std(f1s)), "mean_iou": float(np.mean(ious)) if ious else float("nan"),
                "iou_std": float(np.std(ious)) if ious else float("nan"), "seconds": round(secs, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if on_row is not None:
                on_row(rows)
    return rows


def write_docs(rows, args, settings) -> None:
    lines = [
        "# Automatic mode: quality on held-out synthetic tiles",
        "",
        "Written by `benchmarks/bench_predict_quality.py` "
        f"(`--n {args.n} --size {args.size} --generations {args.generations} --steps {args.steps}`, seed {SEED}).",
        f"{args.n} tiles of {args.size}x{args.size} px per family; `{'`, `'.join(HELDOUT_STYLES)}` is held out from "
        "training. F1 = instance F1 at IoU > 0.5 pooled over the tiles (TP/FP/FN summed); "
        "per-tile F1 as mean +- std; mIoU = mean IoU of matched objects +- std over objects.",
        "",
        "| family | method | GT objects | predicted | F1 | per-tile F1 | mIoU (matched) | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['style']} | {r['method']} | {r['gt_objects']} | {r['pred_objects']} | {r['f1']:.3f} | "
            f"{r['f1_tile_mean']:.3f} +- {r['f1_tile_std']:.3f} | {r['mean_iou']:.3f} +- {r['iou_std']:.3f} | {r['seconds']} |"
        )
    lines += ["", "Settings of the SegDiff rows: `" + json.dumps(settings) + "`", ""]
    lines += verdict(rows)
    (DOCS / "predict-quality.md").write_text("\n".join(lines))
    (DOCS / "predict-quality.json").write_text(json.dumps({"seed": SEED, "args": vars(args), "settings": settings, "rows": rows}, indent=2))


def verdict(rows) -> list[str]:
    """Plain sentences: does each SegDiff method beat the baseline on every family?"""
    base = {r["style"]: r for r in rows if r["method"].startswith("classical")}
    out = ["## Verdict (generated)", ""]
    for method in dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("classical")):
        for r in (r for r in rows if r["method"] == method):
            b = base.get(r["style"])
            if b is None:
                continue
            f1 = "beats" if r["f1"] > b["f1"] else "does NOT beat"
            iou = "higher" if r["mean_iou"] > b["mean_iou"] else "NOT higher"
            out.append(
                f"- {method}, {r['style']}: F1 {r['f1']:.3f} vs {b['f1']:.3f} ({f1} the baseline); "
                f"mIoU {r['mean_iou']:.3f} vs {b['mean_iou']:.3f} ({iou})."
            )
    return out + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3, help="tiles per family")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--foregrounds", default="otsu,segdiff")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args(argv)
    seg = Segmenter.from_checkpoint(bundled_model_path(), device="cpu")
    inf = seg.inference.replace(generations=args.generations, steps=args.steps)
    base = ProposalSettings(window_overlap=False, window_steps=3)
    methods = {"classical (Otsu + watershed)": classical_instances}
    for fg in args.foregrounds.split(","):
        s = base.replace(foreground=fg)
        methods[f"segdiff ({fg} foreground)"] = lambda im, s=s: find_objects(seg, im, s, inf).labels
    tiles = {st: list(iter_tiles(st, n=args.n, size=args.size, seed=SEED)) for st in STYLES}
    record = {"proposals": base.to_dict(), "inference": inf.to_dict(), "threads": torch.get_num_threads()}
    evaluate(methods, tiles, None if args.no_docs else (lambda rows: write_docs(rows, args, record)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
