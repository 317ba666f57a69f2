"""Claim 2 (paper Sec. 5, Fig. 9): fewer diffusion steps cost little, and time is linear in
the number of steps.

The paper trains one model per number of diffusion steps T. We keep the one T = 100 model and
shorten its reverse chain at sampling time (respacing: the chain visits an evenly spaced
subset of the training steps), for the paper's DDPM sampler and for DDIM, which is what a user
of the plugin can change. Quality (IoU, calibration) is mean ± std over sampling seeds;
seconds per prompt are wall times of batched sampling (``batch_images`` prompts per network
batch), i.e. throughput, and the line is a least-squares fit against the number of steps.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.report.common import (
    Claim,
    EnsembleBank,
    RenderContext,
    ReportContext,
    Section,
    evaluate_splits,
    fmt,
    md_table,
    pm,
    pyplot,
    save_figure,
    seed_stats,
    standard_error,
)

NAME = "steps"
TITLE = "Fewer diffusion steps, DDPM vs DDIM (paper Fig. 9)"
PAPER_MAX_LOSS = 0.02  # "a degradation of only up to 2 mIoU" at 25 steps (Vaihingen; 1 on Cityscapes Bus)
LINEAR_R2 = 0.98


def run(ctx: ReportContext) -> dict[str, Any]:
    seg = ctx.segmenter()
    sz = ctx.sizes
    T = seg.config.diffusion.num_timesteps
    steps_list = [s for s in sz.steps_list if s <= T]
    if not steps_list:
        raise ValueError(f"none of the step counts {sz.steps_list} fits the model's T = {T}")
    items = ctx.prepared(sz.steps_n_per_style, seg.input_size)
    g = sz.steps_generations
    seg.segment(items[0].model_inputs[0], seg.inference.replace(generations=1, steps=1), seed=0)  # warm-up: timings below are steady-state
    runs = []
    for sampler in sz.samplers:
        for steps in steps_list:
            for seed in sz.seeds:
                bank = EnsembleBank(seg, items, g, steps, sampler, seed, sz.steps_batch_images)
                runs.append({
                    "sampler": sampler, "steps": steps, "seed": seed,
                    "seconds_per_prompt": bank.seconds_per_prompt,
                    "splits": evaluate_splits(items, bank.method(g)),
                })
            ctx.log(f"  {sampler} {steps} steps: {runs[-1]['seconds_per_prompt']:.3f} s/prompt (last seed)")
    return {
        "settings": {
            "steps": steps_list, "samplers": list(sz.samplers), "seeds": list(sz.seeds), "generations": g,
            "prompts_per_style": sz.steps_n_per_style, "n_prompts": len(items), "batch_images": sz.steps_batch_images,
            "T": T, "protocol": "expansion",
        },
        "runs": runs,
        "aggregate": aggregate(runs),
    }


def linear_fit(x: list[float], y: list[float]) -> dict[str, float | None]:
    """Least-squares ``y = intercept + slope * x`` and its R^2. Slope and intercept need two
    distinct x values, R^2 three (two points always lie on a line); None otherwise."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    distinct = len(set(xa.tolist()))
    if distinct < 2:
        return {"slope": None, "intercept": None, "r2": None}
    slope, intercept = np.polyfit(xa, ya, 1)
    pred = intercept + slope * xa
    ss_tot = float(((ya - ya.mean()) ** 2).sum())
    r2 = (1.0 - float(((ya - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0) if distinct >= 3 else None
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per sampler: per steps, the seed statistics of IoU, F1, calibration per split and of
    seconds per prompt; the paired (per seed) IoU change against the longest chain; and the
    linear fit of seconds against steps."""
    out: dict[str, Any] = {}
    for sampler in dict.fromkeys(r["sampler"] for r in runs):
        rs = [r for r in runs if r["sampler"] == sampler]
        steps_list = sorted({r["steps"] for r in rs})
        longest = max(steps_list)
        per_steps: dict[str, Any] = {}
        for steps in steps_list:
            cur = [r for r in rs if r["steps"] == steps]
            ref = {r["seed"]: r for r in rs if r["steps"] == longest}
            entry: dict[str, Any] = {"seconds_per_prompt": seed_stats(r["seconds_per_prompt"] for r in cur), "splits": {}}
            for split in cur[0]["splits"]:
                entry["splits"][split] = {
                    **{m: seed_stats(r["splits"][split][m] for r in cur) for m in ("iou", "f1", "calibration")},
                    "n": cur[0]["splits"][split]["n"],
                    "iou_change_vs_longest": seed_stats(
                        r["splits"][split]["iou"] - ref[r["seed"]]["splits"][split]["iou"] for r in cur if r["seed"] in ref
                    ),
                }
            per_steps[str(steps)] = entry
        times = [r["seconds_per_prompt"] for r in rs]
        out[sampler] = {
            "by_steps": per_steps,
            "longest": longest,
            "time_fit": linear_fit([r["steps"] for r in rs], times),
        }
    return out


def _fast_steps(agg_sampler: dict[str, Any]) -> int:
    steps = sorted(int(s) for s in agg_sampler["by_steps"])
    return 25 if 25 in steps else steps[0]


def _claims(data: dict[str, Any]) -> list[Claim]:
    claims: list[Claim] = []
    agg = data["aggregate"]
    n_seeds = len(data["settings"]["seeds"])
    for sampler in ("ddpm", "ddim"):
        if sampler not in agg:
            continue
        a = agg[sampler]
        fast, longest = _fast_steps(a), a["longest"]
        for split, e in a["by_steps"][str(fast)]["splits"].items():
            ch = e["iou_change_vs_longest"]
            if ch["mean"] is None:
                verdict = "n/a"
            else:
                se = standard_error(ch["std"], ch["n"]) or 0.0
                # agrees: the loss is at most the paper's 2 points (allowing for seed noise)
                verdict = "agrees" if ch["mean"] >= -PAPER_MAX_LOSS - 2 * se else "disagrees"
            claims.append(Claim(
                f"2. {fast} steps cost little vs {longest} ({sampler.upper()}, {split})",
                "25 steps instead of 100 lose at most ~2 mIoU (Fig. 9a; a model trained per T)",
                f"{pm(ch['mean'], ch['std'], '+.1f', 100)} IoU points at {fast} vs {longest} respaced steps "
                f"(n={e['n']} prompts, {n_seeds} seeds)",
                verdict,
            ))
        fit = a["time_fit"]
        verdict = "n/a" if fit["r2"] is None else ("agrees" if fit["r2"] >= LINEAR_R2 else "disagrees")
        claims.append(Claim(
            f"2. time is linear in steps ({sampler.upper()})",
            "generation time grows linearly with the number of steps (Fig. 9b)",
            f"{fmt(fit['slope'], '.4f')} s per step per prompt + {fmt(fit['intercept'], '.3f')} s, R² = {fmt(fit['r2'], '.4f')}",
            verdict,
        ))
    if "ddpm" in agg and "ddim" in agg:
        lo = min(int(s) for s in agg["ddim"]["by_steps"])
        iou = {s: agg[s]["by_steps"][str(lo)]["splits"].get("in-distribution", {}).get("iou", {}) for s in ("ddpm", "ddim")}
        if iou["ddpm"].get("mean") is not None and iou["ddim"].get("mean") is not None:
            diff = iou["ddim"]["mean"] - iou["ddpm"]["mean"]
            claims.append(Claim(
                f"2. DDIM vs DDPM at {lo} steps (in-distribution)",
                "(not in the paper, which samples with DDPM only)",
                f"DDIM {fmt(diff, '+.1f', 100)} IoU points vs DDPM, both at {lo} respaced steps",
                "n/a",
            ))
    return claims


def _plot(data: dict[str, Any], rc: RenderContext) -> str:
    plt = pyplot()
    agg = data["aggregate"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for sampler, a in agg.items():
        steps = sorted(int(s) for s in a["by_steps"])
        for split in a["by_steps"][str(steps[0])]["splits"]:
            mean = [(a["by_steps"][str(s)]["splits"][split]["iou"]["mean"] or float("nan")) * 100 for s in steps]
            std = [(a["by_steps"][str(s)]["splits"][split]["iou"]["std"] or 0.0) * 100 for s in steps]
            axes[0].errorbar(steps, mean, yerr=std, marker="o", capsize=3, ls="-" if split == "in-distribution" else ":",
                             label=f"{sampler.upper()}, {split}")
        t = [a["by_steps"][str(s)]["seconds_per_prompt"]["mean"] for s in steps]
        axes[1].plot(steps, t, "o", label=f"{sampler.upper()} (measured)")
        fit = a["time_fit"]
        if fit["slope"] is not None:
            xs = np.linspace(0, max(steps), 50)
            axes[1].plot(xs, fit["intercept"] + fit["slope"] * xs, lw=1, label=f"{sampler.upper()} fit, R²={fmt(fit['r2'], '.3f')}")
    axes[0].set(xlabel="sampling steps", ylabel="IoU (%)", title=f"quality vs steps (G={data['settings']['generations']})")
    axes[1].set(xlabel="sampling steps", ylabel="seconds per prompt", title="time vs steps (Fig. 9b)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    path = save_figure(fig, rc.image("steps.png"))
    return rc.link(path, "IoU and seconds per prompt against the number of sampling steps")


def render(data: dict[str, Any], rc: RenderContext) -> Section:
    st = data["settings"]
    lines = [
        f"Evaluated model (trained with T = {st['T']}), chains respaced to {', '.join(map(str, st['steps']))} steps, "
        f"{st['generations']} generations per prompt, {st['prompts_per_style']} prompts per style ({st['n_prompts']} in all), "
        f"seeds {', '.join(map(str, st['seeds']))}. Unlike the paper, which trains one model per T, the one model's chain is "
        f"shortened at sampling time. Seconds per prompt: wall time of sampling up to {st['batch_images']} prompts together "
        "(single-prompt latency is in the speed section). IoU: mean ± std over seeds; change: paired per seed against the longest chain.",
        "",
    ]
    agg = data["aggregate"]
    rows = []
    for sampler, a in agg.items():
        for s in sorted(int(k) for k in a["by_steps"]):
            e = a["by_steps"][str(s)]
            for split, v in e["splits"].items():
                rows.append([
                    sampler.upper(), s, split, pm(v["iou"]["mean"], v["iou"]["std"], ".1f", 100),
                    fmt(v["iou_change_vs_longest"]["mean"], "+.1f", 100), pm(v["calibration"]["mean"], v["calibration"]["std"], ".4f"),
                    pm(e["seconds_per_prompt"]["mean"], e["seconds_per_prompt"]["std"], ".3f"), v["n"],
                ])
    lines.append(md_table(
        ["sampler", "steps", "split", "IoU (%)", "ΔIoU vs longest", "calibration", "s / prompt", "n prompts"], rows, "llllrrrr"
    ))
    lines += ["", _plot(data, rc)]
    return Section("\n".join(lines), _claims(data))
