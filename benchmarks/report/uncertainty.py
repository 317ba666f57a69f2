"""Claim 5: the uncertainty map (std of the generations) is useful: it is high where the mask
is wrong.

Scored on claim 1's prompts with the largest ensemble of seed 0 (reused when claim 1 ran in
the same invocation). Two views:

* per prompt: AUROC of the uncertainty for separating wrong from right pixels
  (:func:`segdiff_core.metrics.uncertainty_auroc`), mean ± std over prompts;
* pooled over all pixels of a split: AUROC, the error rate in bins of uncertainty
  (:func:`segdiff_core.metrics.error_rate_by_uncertainty`), its rank correlation with the
  uncertainty, and the share of all errors found among the 10 % most uncertain pixels.

The std map and the binary entropy of the mean probability are both reported.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from benchmarks.report.common import (
    SPLITS,
    Claim,
    RenderContext,
    ReportContext,
    Section,
    evaluate_splits,
    fmt,
    judge,
    md_table,
    pyplot,
    save_figure,
    split_of,
    standard_error,
)

NAME = "uncertainty"
TITLE = "Is the uncertainty map useful?"
TOP_FRACTION = 0.10
MIN_BIN_PIXELS = 20
RANGES = {"std": (0.0, 0.5), "entropy": (0.0, 1.0)}


def _pooled(uncertainty: np.ndarray, pred: np.ndarray, gt: np.ndarray, kind: str) -> dict[str, Any]:
    from segdiff_core.metrics import error_rate_by_uncertainty, uncertainty_auroc

    curve = error_rate_by_uncertainty(uncertainty, pred, gt, n_bins=10, value_range=RANGES[kind])
    ok = (curve.counts >= MIN_BIN_PIXELS) & np.isfinite(curve.error_rate)
    rho = None
    if ok.sum() >= 3:
        r = float(spearmanr(curve.bin_centres[ok], curve.error_rate[ok])[0])
        rho = None if not math.isfinite(r) else float(r)
    wrong = pred != gt
    k = max(1, int(math.ceil(TOP_FRACTION * uncertainty.size)))
    top = np.argsort(-uncertainty, kind="stable")[:k]
    n_wrong = int(wrong.sum())
    return {
        "auroc": uncertainty_auroc(uncertainty, pred, gt),
        "curve": {"centres": curve.bin_centres, "error_rate": curve.error_rate, "counts": curve.counts},
        "spearman": rho,
        "pixels": int(uncertainty.size),
        "errors": n_wrong,
        "error_rate": n_wrong / max(uncertainty.size, 1),
        "top_error_rate": float(wrong[top].mean()),
        "top_error_share": float(wrong[top].sum() / n_wrong) if n_wrong else None,
    }


def _example(item: Any, prob: np.ndarray, std: np.ndarray, iou: float) -> dict[str, Any]:
    img = np.asarray(item.native_input, dtype=np.float64)
    lo, hi = np.percentile(img, [1, 99.8])
    img = np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1)
    r = lambda a: np.round(np.asarray(a, dtype=np.float64), 3)  # noqa: E731 - compact JSON
    return {"name": item.name, "iou": iou, "image": r(img), "target": item.target.astype(int), "probability": r(prob), "std": r(std)}


def run(ctx: ReportContext) -> dict[str, Any]:
    from segdiff_core.ensemble import binary_entropy
    from segdiff_core.metrics import iou as iou_metric

    seg = ctx.segmenter()
    sz = ctx.sizes
    items = ctx.prepared(sz.gen_n_per_style, seg.input_size)
    g = sz.uncertainty_generations
    reused = ctx.has_bank("model", items, g, seg.inference.steps, seg.inference.sampler, 0)
    bank = ctx.bank("model", seg, items, g, seg.inference.steps, seg.inference.sampler, 0)
    per_prompt = evaluate_splits(items, bank.method(g))
    pooled: dict[str, Any] = {}
    examples: dict[str, Any] = {}
    for split, _ in SPLITS:
        subset = [it for it in items if split_of(it) == split]
        if not subset:
            continue
        maps: dict[str, list[np.ndarray]] = {"std": [], "entropy": [], "pred": [], "gt": []}
        worst: tuple[float, Any] | None = None
        for it in subset:
            p = bank.prediction(it.model_inputs[0], g)
            prob = np.clip(it.to_region(p.probability[None]), 0.0, 1.0)
            std = it.to_region(p.uncertainty[None])
            pred = prob > p.threshold
            maps["std"].append(std.ravel())
            maps["entropy"].append(binary_entropy(prob).ravel())
            maps["pred"].append(pred.ravel())
            maps["gt"].append(it.target.ravel())
            score = iou_metric(pred, it.target)
            if worst is None or score < worst[0]:
                worst = (score, (it, prob, std))
        pred_all, gt_all = np.concatenate(maps["pred"]), np.concatenate(maps["gt"])
        pooled[split] = {kind: _pooled(np.concatenate(maps[kind]), pred_all, gt_all, kind) for kind in ("std", "entropy")}
        assert worst is not None
        examples[split] = _example(*worst[1], iou=worst[0])
    return {
        "settings": {
            "generations": g, "steps": seg.inference.steps, "sampler": seg.inference.sampler, "seed": 0,
            "prompts_per_style": sz.gen_n_per_style, "n_prompts": len(items), "top_fraction": TOP_FRACTION,
            "protocol": "expansion", "samples_reused": reused, "sampling_seconds": bank.seconds,
        },
        "per_prompt": {s: {k: v[k] for k in ("n", "uncertainty_auroc", "uncertainty_auroc_std", "n_uncertainty_auroc", "iou")}
                       for s, v in per_prompt.items()},
        "pooled": pooled,
        "examples": examples,
    }


def _claims(data: dict[str, Any]) -> list[Claim]:
    claims = []
    for split, pp in data["per_prompt"].items():
        n = pp["n_uncertainty_auroc"] or 0
        mean, std = pp["uncertainty_auroc"], pp["uncertainty_auroc_std"]
        se = standard_error(std, n)
        pooled = data["pooled"][split]["std"]
        claims.append(Claim(
            f"5. uncertainty marks the errors ({split})",
            "the spread of the generations shows where the model is unsure (Sec. 4.1, Fig. 2; not quantified)",
            f"AUROC wrong-vs-right pixels {fmt(mean, '.3f')} ± {fmt(std, '.3f')} per prompt (n={n}); pooled {fmt(pooled['auroc'], '.3f')}; "
            f"the {data['settings']['top_fraction']:.0%} most uncertain pixels hold {fmt(pooled['top_error_share'], '.0%')} of the errors",
            judge(None if mean is None else mean - 0.5, se, +1),
        ))
    return claims


def _plot_curves(data: dict[str, Any], rc: RenderContext) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, kind in zip(axes, ("std", "entropy")):
        for split, p in data["pooled"].items():
            c = p[kind]["curve"]
            pts = [(x, y * 100) for x, y, n in zip(c["centres"], c["error_rate"], c["counts"]) if y is not None and n >= MIN_BIN_PIXELS]
            if not pts:
                continue
            (line,) = ax.plot(*zip(*pts), marker="o", label=f"{split} (AUROC {fmt(p[kind]['auroc'], '.3f')})")
            ax.axhline(p[kind]["error_rate"] * 100, lw=0.8, ls=":", color=line.get_color())
        ax.set(xlabel=f"uncertainty ({'std over generations' if kind == 'std' else 'entropy of the mean, bits'})",
               ylabel="wrong pixels (%)", title=f"error rate vs uncertainty ({kind})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = save_figure(fig, rc.image("uncertainty.png"))
    return rc.link(path, "error rate against uncertainty; dotted: overall error rate")


def _plot_examples(data: dict[str, Any], rc: RenderContext) -> str:
    plt = pyplot()
    ex = data["examples"]
    fig, axes = plt.subplots(len(ex), 4, figsize=(10, 2.7 * len(ex)), squeeze=False)
    for row, (split, e) in zip(axes, ex.items()):
        img = np.asarray(e["image"], dtype=float)
        panels = [(img if img.ndim == 2 or img.shape[-1] in (3, 4) else img[..., 0], f"{split}: {e['name']}", None),
                  (np.asarray(e["target"], float), "ground truth", "gray"),
                  (np.asarray(e["probability"], float), f"mean of G (IoU {e['iou'] * 100:.0f}%)", "gray"),
                  (np.asarray(e["std"], float), "std over G", "magma")]
        for ax, (arr, title, cmap) in zip(row, panels):
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=None if cmap == "magma" else 1, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    path = save_figure(fig, rc.image("uncertainty_examples.png"))
    return rc.link(path, "worst prompt of each split: image, ground truth, probability, uncertainty")


def render(data: dict[str, Any], rc: RenderContext) -> Section:
    st = data["settings"]
    lines = [
        f"Evaluated model, {st['generations']} generations, {st['steps']} {st['sampler'].upper()} steps, seed {st['seed']}, "
        f"{st['prompts_per_style']} prompts per style. A pixel is wrong when the thresholded mean disagrees with the ground truth. "
        "AUROC 0.5 = the uncertainty carries no information about errors, 1 = every wrong pixel is more uncertain than every "
        "right one. Per-prompt AUROC is undefined (left out) for prompts without any wrong pixel.",
        "",
    ]
    rows = []
    for split, pp in data["per_prompt"].items():
        for kind in ("std", "entropy"):
            p = data["pooled"][split][kind]
            rows.append([
                split, kind,
                f"{fmt(pp['uncertainty_auroc'], '.3f')} ± {fmt(pp['uncertainty_auroc_std'], '.3f')} (n={pp['n_uncertainty_auroc']} of {pp['n']})"
                if kind == "std" else "—",
                fmt(p["auroc"], ".3f"), fmt(p["spearman"], "+.2f"), f"{p['error_rate'] * 100:.1f}",
                fmt(p["top_error_rate"], ".1f", 100), fmt(p["top_error_share"], ".0%"), f"{p['pixels']:,}",
            ])
    lines.append(md_table(
        ["split", "uncertainty", "AUROC per prompt", "AUROC pooled", "Spearman(bin, error rate)", "error rate %",
         f"error rate % in top {st['top_fraction']:.0%}", f"share of errors in top {st['top_fraction']:.0%}", "pixels"],
        rows, "llrrrrrrr",
    ))
    lines += ["", _plot_curves(data, rc), "", _plot_examples(data, rc)]
    return Section("\n".join(lines), _claims(data))
