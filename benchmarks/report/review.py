"""Part 8 (issue 13): per-object quality scores for a review queue, and re-thresholding speed.

For every held-out synthetic prompt (both the paper's expansion crop, the plugin's default,
and the tight box), the bundled model draws its default ensemble once (cached in the work
folder by model hash, prompts and settings). From the generations, :mod:`segdiff_core.scoring`
computes the per-object features; each candidate score is a logistic calibration over a
subset of them (a single feature's calibration is monotone, so it ranks like the raw feature).

* **In-distribution** objects get cross-fitted predictions: ``folds`` folds by tile, each
  predicted by the calibration fitted on the other folds (both protocols pooled).
* **Held-out family** objects are predicted by the calibration fitted on all in-distribution
  objects: the held-out style never takes part in a fit.

The score is chosen as the candidate with the best mean cross-fitted in-distribution AUROC over
the protocols; its calibration, fitted on all in-distribution objects, is written beside the
model (``<model>.score.json``), where the plugin finds it. Reported per split and protocol:
AUROC for the worst 20 % of objects by IoU, and the share of objects with IoU < 0.7 found in
the 20 % most uncertain, each with a clustered bootstrap spread: whole tiles are resampled, since
the several prompts cut from one tile are correlated (each object's tile is kept in the
results). The re-threshold timing of ``benchmarks/bench_rethreshold.py`` is run and reported
here too, with the load average at the time.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report.common import (
    MIN_VERDICT_TILES,
    SPLITS,
    Claim,
    cluster_resamples,
    RenderContext,
    ReportContext,
    Section,
    fmt,
    md_table,
    pyplot,
    save_figure,
    split_of,
    tile_of,
)

NAME = "review"
TITLE = "Per-object quality scores: does the uncertainty find the objects to review?"
WORST_FRACTION = 0.2
BAD_IOU = 0.7
TARGET_AUROC = 0.85
SEED = 0
BATCH = 16
CANDIDATES: dict[str, tuple[str, ...]] = {
    "mean std inside": ("mean_std",),
    "agreement": ("agreement",),
    "boundary std": ("boundary_std",),
    "box fit": ("box_fit",),
    "agreement + box fit": ("agreement", "box_fit"),
    "all four": ("mean_std", "agreement", "boundary_std", "box_fit"),
}
"""Candidate scores: name -> features of its logistic calibration."""


def cache_path(work: Path, sha: str, protocol: str, prepared: list[Any], inference: dict[str, Any]) -> Path:
    """Cache file of the samples of ``prepared`` (keyed by model, model inputs, inference
    settings, seed and batching, so a stale cache is never used)."""
    from benchmarks.report.common import input_key

    key = json.dumps({"model": sha, "protocol": protocol, "inputs": [input_key(p.model_inputs[0]) for p in prepared],
                      "inference": inference, "seed": SEED, "batch": BATCH}, sort_keys=True)
    return work / "review" / f"{protocol}-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}.npz"


def _inference(ctx: ReportContext, seg: Any) -> Any:
    changes = {"generations": ctx.sizes.review_generations, "steps": ctx.sizes.review_steps}
    return seg.inference.replace(**{k: v for k, v in changes.items() if v is not None})


def _generations(ctx: ReportContext, seg: Any, sha: str, protocol: str, prepared: list[Any]) -> tuple[np.ndarray, bool]:
    """(N, G, S, S) float16 sampled probabilities of every prompt; cached in the work folder."""
    inf = _inference(ctx, seg)
    path = cache_path(ctx.paths.work, sha, protocol, prepared, inf.to_dict())
    if path.is_file():
        with np.load(path) as f:
            return f["generations"], True
    res = seg.segment_batch([p.model_inputs[0] for p in prepared], inf, seed=SEED, keep_generations=True,
                            batch_images=BATCH, boxes=[p.input_boxes[0] for p in prepared])
    gens = np.stack([r.generations for r in res]).astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, generations=gens)
    tmp.replace(path)
    return gens, False


def _objects(ctx: ReportContext, seg: Any, sha: str, protocol: str, raw: list[Any]) -> tuple[list[dict[str, Any]], bool]:
    """One record per prompt: split, tile, IoU of the consensus mask, features."""
    from segdiff_core.evaluation.runner import EvalProtocol, prepare_items
    from segdiff_core.metrics import iou
    from segdiff_core.scoring import object_features, prompt_box_in_model

    prepared = prepare_items(raw, EvalProtocol(protocol), seg.input_size)
    gens, cached = _generations(ctx, seg, sha, protocol, prepared)
    thr = float(seg.inference.threshold)
    out = []
    for it, p, g16 in zip(raw, prepared, gens):
        g = g16.astype(np.float32)
        prob = np.clip(p.to_region(g.mean(axis=0)[None]), 0.0, 1.0)
        feats = object_features(g, thr, box=prompt_box_in_model(p.geometry, it.box))
        out.append({"name": p.name, "tile": tile_of(p.name), "style": p.group, "split": split_of(p),
                    "protocol": protocol, "iou": iou(prob > thr, p.target), **feats})
    return out, cached


def _cross_fit(records: list[dict[str, Any]], features: tuple[str, ...], folds: int, seed: int = 0) -> np.ndarray:
    """Predicted IoU per record: in-distribution records by fold (grouped by tile), held-out
    records by the fit on all in-distribution records."""
    from segdiff_core.scoring import ScoreCalibration

    ind = [i for i, r in enumerate(records) if r["split"] == "in-distribution"]
    tiles = sorted({records[i]["tile"] for i in ind})
    fold_of = dict(zip(tiles, np.random.default_rng(seed).permutation(len(tiles)) % folds))
    pred = np.full(len(records), np.nan)
    fit = lambda idx: ScoreCalibration.fit([records[i] for i in idx], [records[i]["iou"] for i in idx], features)  # noqa: E731
    for k in range(folds):
        test = [i for i in ind if fold_of[records[i]["tile"]] == k]
        train = [i for i in ind if fold_of[records[i]["tile"]] != k]
        if test and len(train) > len(features) + 2:
            cal = fit(train)
            pred[test] = [cal.predict(records[i]) for i in test]
    full = fit(ind)
    rest = [i for i, r in enumerate(records) if r["split"] != "in-distribution"]
    pred[rest] = [full.predict(records[i]) for i in rest]
    return pred


def _quality(unc: np.ndarray, iou: np.ndarray, tiles: Any, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Ranking quality and its clustered bootstrap spread: whole tiles are resampled with
    replacement (:func:`~benchmarks.report.common.cluster_resamples`), since the prompts of one
    tile are correlated; ``n_tiles`` is the number of tiles."""
    from segdiff_core.scoring import ranking_quality

    q = ranking_quality(unc, iou, WORST_FRACTION, BAD_IOU)
    q["n_tiles"] = len(set(map(str, tiles)))
    boots: dict[str, list[float]] = {"auroc_worst": [], "top_bad_share": []}
    for idx in cluster_resamples(tiles, n_boot, seed):
        b = ranking_quality(unc[idx], iou[idx], WORST_FRACTION, BAD_IOU)
        for key in boots:
            if math.isfinite(b[key]):
                boots[key].append(b[key])
    for key, vals in boots.items():
        q[f"{key}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        q[f"{key}_ci"] = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if vals else None
    return q


def run(ctx: ReportContext) -> dict[str, Any]:
    from benchmarks.bench_rethreshold import bench_rethreshold
    from segdiff_core.evaluation.runner import synthetic_items
    from segdiff_core.scoring import ScoreCalibration, calibration_path, file_sha256

    sz = ctx.sizes
    seg = ctx.segmenter()
    sha = file_sha256(ctx.model_path)
    raw = synthetic_items(sz.styles, sz.review_n_per_style, tile_size=sz.eval_tile_size)
    records: list[dict[str, Any]] = []
    cached = []
    for protocol in sz.review_protocols:
        recs, hit = _objects(ctx, seg, sha, protocol, raw)
        records += recs
        cached.append(hit)
        ctx.log(f"  {protocol}: {len(recs)} objects ({'cached samples' if hit else 'sampled'})")
    iou = np.array([r["iou"] for r in records])
    tiles = np.array([r["tile"] for r in records])
    results: dict[str, Any] = {}
    for name, feats in CANDIDATES.items():
        pred = _cross_fit(records, feats, sz.review_folds)
        for r, p in zip(records, pred):
            r.setdefault("predicted", {})[name] = float(p)
        results[name] = {}
        for protocol in sz.review_protocols:
            for split, _ in SPLITS:
                idx = np.array([i for i, r in enumerate(records)
                                if r["protocol"] == protocol and r["split"] == split and math.isfinite(pred[i])])
                if idx.size >= 2:
                    results[name][f"{split}/{protocol}"] = _quality(1.0 - pred[idx], iou[idx], tiles[idx], sz.review_bootstrap)
    ind_keys = [f"in-distribution/{p}" for p in sz.review_protocols]
    def mean_auroc(name: str) -> float:
        vals = [results[name][k]["auroc_worst"] for k in ind_keys if k in results[name]]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        return float(np.mean(vals)) if vals else -math.inf

    chosen = max(CANDIDATES, key=mean_auroc)
    ind = [r for r in records if r["split"] == "in-distribution"]
    counts = {s: sum(r["split"] == s for r in records) // len(sz.review_protocols) for s, _ in SPLITS}
    inf = _inference(ctx, seg)
    fitted_on = (f"held-out synthetic nuclei (evaluation seed 2024; styles {', '.join(sorted({r['style'] for r in ind}))}), "
                 f"{len(ind)} objects over protocols {', '.join(sz.review_protocols)}; {inf.generations} generations, "
                 f"{inf.steps} {inf.sampler} steps; benchmarks/report/review.py")
    cal = ScoreCalibration.fit(ind, [r["iou"] for r in ind], CANDIDATES[chosen], model_sha256=sha, fitted_on=fitted_on)
    # the published run writes beside the model (where the plugin looks); a smoke run never does
    target = calibration_path(ctx.model_path) if sz.name == "full" else ctx.paths.work / "review" / calibration_path(ctx.model_path).name
    cal_file = cal.save(target)
    ctx.log(f"  chose '{chosen}'; calibration written to {cal_file}")
    return {
        "settings": {"n_per_style": sz.review_n_per_style, "objects_per_split": counts, "protocols": list(sz.review_protocols),
                     "generations": inf.generations, "steps": inf.steps, "sampler": inf.sampler,
                     "seed": SEED, "folds": sz.review_folds, "bootstrap": sz.review_bootstrap, "worst_fraction": WORST_FRACTION,
                     "bad_iou": BAD_IOU, "samples_cached": all(cached)},
        "candidates": {n: list(f) for n, f in CANDIDATES.items()},
        "results": results,
        "chosen": chosen,
        "calibration": cal.to_dict(),
        "calibration_file": str(cal_file.name),
        "objects": [_stored(r) for r in records],
        "rethreshold": {**bench_rethreshold(sz.rethreshold_objects, sz.rethreshold_repeats),
                        "load_average": list(os.getloadavg())},
    }


def _stored(record: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """A record as kept in the results: floats rounded to ``digits`` decimals (the statistics
    are computed from the full values first; the rounded ones only draw the plot)."""
    def rnd(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: rnd(x) for k, x in v.items()}
        return round(v, digits) if isinstance(v, float) and math.isfinite(v) else v

    return rnd(record)


def _row_label(key: str) -> tuple[str, str]:
    split, protocol = key.split("/")
    return split, protocol


def _spread_label(q: dict[str, Any]) -> str:
    """How a row's spread was measured: over tiles (clustered) or, in results recorded before
    tiles were kept, over objects."""
    if q.get("n_tiles") is None:
        return f"bootstrap over objects, n={q['n']}"
    return f"bootstrap over {q['n_tiles']} tiles, n={q['n']} objects"


def _verdict(q: dict[str, Any]) -> str:
    """'agrees' when the whole 95 % interval of the AUROC is at or above the target, 'disagrees'
    when it is below, else 'inconclusive'; 'inconclusive' too over fewer than
    :data:`~benchmarks.report.common.MIN_VERDICT_TILES` tiles (too few for a spread)."""
    ci = q.get("auroc_worst_ci")
    if ci is None or (q.get("n_tiles") is not None and q["n_tiles"] < MIN_VERDICT_TILES):
        return "inconclusive"
    if ci[0] >= TARGET_AUROC:
        return "agrees"
    return "disagrees" if ci[1] < TARGET_AUROC else "inconclusive"


def _claims(data: dict[str, Any]) -> list[Claim]:
    out = []
    chosen = data["chosen"]
    for key, q in data["results"][chosen].items():
        split, protocol = _row_label(key)
        ci = q.get("auroc_worst_ci") or [None, None]
        out.append(Claim(
            f"8. score ranks the worst 20 % ({split}, {protocol})",
            f"issue 13 target: AUROC >= {TARGET_AUROC} (not a paper claim)",
            f"AUROC {fmt(q['auroc_worst'], '.3f')} ± {fmt(q['auroc_worst_std'], '.3f')} "
            f"(95 % CI {fmt(ci[0], '.3f')}–{fmt(ci[1], '.3f')}; {_spread_label(q)}); "
            f"top 20 % hold {fmt(q['top_bad_share'], '.0%')} of the {q['n_bad']} objects with IoU < {BAD_IOU}",
            _verdict(q),
        ))
    return out


def _plot(data: dict[str, Any], rc: RenderContext) -> str:
    plt = pyplot()
    res, names = data["results"], list(data["results"])
    keys = list(dict.fromkeys(k for per in res.values() for k in per))
    empty = {"auroc_worst": None, "auroc_worst_std": None}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    width = 0.8 / max(len(keys), 1)
    for k, key in enumerate(keys):
        vals = [res[n].get(key, empty) for n in names]
        ax.bar([i + (k - (len(keys) - 1) / 2) * width for i in range(len(names))], [v["auroc_worst"] or 0 for v in vals], width,
               yerr=[v["auroc_worst_std"] or 0 for v in vals], capsize=2, label=key)
    ax.axhline(TARGET_AUROC, ls="--", color="k", lw=0.8)
    ax.axhline(0.5, ls=":", color="gray", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8, rotation=15)
    ax.set(ylabel="AUROC (worst 20 %)", ylim=(0.4, 1.0), title="candidate scores (± bootstrap std); dashed: target")
    ax.legend(fontsize=7)
    chosen = data["chosen"]
    for key in keys:
        split, protocol = _row_label(key)
        objs = [o for o in data["objects"] if o["split"] == split and o["protocol"] == protocol]
        ax2.scatter([o["predicted"][chosen] for o in objs], [o["iou"] for o in objs], s=9, alpha=0.6, label=key)
    ax2.plot([0, 1], [0, 1], color="gray", lw=0.8)
    ax2.axhline(BAD_IOU, ls=":", color="k", lw=0.8)
    ax2.set(xlabel=f"score: predicted IoU ({chosen})", ylabel="measured IoU", xlim=(0, 1), ylim=(0, 1),
            title="score against IoU")
    ax2.legend(fontsize=7)
    path = save_figure(fig, rc.image("review_scores.png"))
    return rc.link(path, "AUROC of each candidate score, and the chosen score against the measured IoU")


def _results_table(data: dict[str, Any]) -> str:
    rows = []
    for name, per in data["results"].items():
        for key, q in per.items():
            split, protocol = _row_label(key)
            ci = q.get("auroc_worst_ci") or [None, None]
            rows.append([f"**{name}**" if name == data["chosen"] else name, split, protocol, str(q["n"]), str(q.get("n_tiles", "?")),
                         f"{fmt(q['auroc_worst'], '.3f')} ± {fmt(q['auroc_worst_std'], '.3f')}",
                         f"{fmt(ci[0], '.2f')}–{fmt(ci[1], '.2f')}",
                         f"{fmt(q['top_bad_share'], '.0%')} ± {fmt(q['top_bad_share_std'], '.0%')} of {q['n_bad']}",
                         fmt(q["spearman"], "+.2f")])
    return md_table(["score", "split", "protocol", "objects", "tiles", "AUROC worst 20 %", "95 % CI",
                     f"IoU < {BAD_IOU} found in top 20 %", "Spearman(unc, IoU)"], rows, "lllrrrrrr")


def _rethreshold_lines(rt: dict[str, Any]) -> list[str]:
    load = rt.get("load_average")
    where = (f" Measured with load average {load[0]:.1f} (1 min) on 2 cores shared with other work: absolute times "
             "move with the load." if load else "")
    return [
        f"**Re-threshold without re-running** (`benchmarks/bench_rethreshold.py`): {rt['objects']} committed objects "
        f"(~{rt['mean_area']:.0f} px each, {rt['crop']} px probability crops) in a {rt['shape'][0]}x{rt['shape'][1]} napari "
        f"`Labels` layer, threshold {rt['from']} -> {rt['to']}: planning {rt['plan_seconds'] * 1000:.0f} ms + writing "
        f"{rt['write_seconds'] * 1000:.0f} ms (`data_setitem` in one `block_history`) = **{rt['seconds'] * 1000:.0f} ms** "
        f"(median of {rt['repeats']}; min {rt['seconds_min'] * 1000:.0f} ms, max {rt['seconds_max'] * 1000:.0f} ms; target "
        f"< 500 ms); one undo restores the labels: {'yes' if rt['undo_restores'] else '**no**'}; the stored probabilities "
        f"take {rt['store_bytes'] / 2**20:.2f} MiB.{where}",
    ]


def _spread_sentence(data: dict[str, Any]) -> str:
    st = data["settings"]
    if any("n_tiles" in q for per in data["results"].values() for q in per.values()):
        return (f"± = clustered bootstrap std ({st['bootstrap']} resamples of whole tiles: the several prompts cut from one tile "
                "are correlated, so the tiles, not the objects, are the independent units), CI = its percentile interval.")
    return f"± = bootstrap std over objects ({st['bootstrap']} resamples), CI = bootstrap percentile interval."


def render(data: dict[str, Any], rc: RenderContext) -> Section:
    st, chosen = data["settings"], data["chosen"]
    cal = data["calibration"]
    counts = ", ".join(f"{s}: {n} objects" for s, n in st["objects_per_split"].items())
    weights = ", ".join(f"{f} {w:+.2f}" for f, w in zip(cal["features"], cal["weights"]))
    env = data.get("environment", {})
    lines = [
        f"Measured at commit `{env.get('commit', '?')}` ({env.get('date', '?')}; the synthetic generator of that commit, "
        f"the model file with SHA-256 `{cal.get('model_sha256', '?')[:16]}…`). "
        f"Evaluated model, {st['generations']} generations, {st['steps']} {st['sampler'].upper()} steps, seed {st['seed']}; "
        f"{st['n_per_style']} held-out prompts per style ({counts}), each with the expansion crop and the tight box. "
        f"Positives of the AUROC: the {st['worst_fraction']:.0%} of objects with the lowest IoU in each row; "
        f"\"IoU < {st['bad_iou']} found in top 20 %\": the share of the objects with IoU < {st['bad_iou']} that are among "
        f"the {st['worst_fraction']:.0%} most uncertain (target: at least half). In-distribution predictions are "
        f"cross-fitted ({st['folds']} folds by tile); held-out-family objects never take part in a fit. " + _spread_sentence(data),
        "",
        _results_table(data),
        "",
        f"**Chosen score: {chosen}** (best mean cross-fitted in-distribution AUROC over the protocols; the choice was made "
        "on in-distribution objects only, so the held-out rows are a fair test of it). Its calibration (standardised "
        f"weights {weights}, intercept {cal['intercept']:+.2f}) is written to `{data.get('calibration_file', '')}` beside the model, "
        "fitted on all in-distribution objects and used by the plugin for this model file only (matched by SHA-256); "
        "for any other model the score falls back to the generations' agreement.",
        "",
        _plot(data, rc),
        "",
        *_rethreshold_lines(data["rethreshold"]),
    ]
    return Section("\n".join(lines), _claims(data))
