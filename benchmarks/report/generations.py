"""Claim 1 (paper Sec. 4.1, Fig. 5 and 6): more generations raise IoU and improve calibration.

For each sampling seed, one ensemble of ``max(generations)`` samples is drawn per prompt with
the model's default sampler and steps; the ensemble of ``g`` generations is its first ``g``
samples. IoU, F1 and the paper's calibration score (10 bins, unweighted mean of squared gaps,
pooled over all pixels of a split) are reported per split as mean ± std over the seeds.
"""
from __future__ import annotations

from typing import Any

from benchmarks.report.common import (
    SPLITS,
    Claim,
    RenderContext,
    ReportContext,
    Section,
    evaluate_splits,
    judge,
    md_table,
    pm,
    pyplot,
    save_figure,
    seed_stats,
    standard_error,
)

NAME = "generations"
TITLE = "More generations: IoU and calibration (paper Fig. 5, 6)"
METRICS = ("iou", "f1", "calibration")


def run(ctx: ReportContext) -> dict[str, Any]:
    seg = ctx.segmenter()
    sz = ctx.sizes
    items = ctx.prepared(sz.gen_n_per_style, seg.input_size)
    steps, sampler = seg.inference.steps, seg.inference.sampler
    gmax = max(sz.generations)
    per_seed = []
    for seed in sz.seeds:
        bank = ctx.bank("model", seg, items, gmax, steps, sampler, seed)
        ctx.log(f"  seed {seed}: {bank.n_prompts} prompts x {gmax} generations sampled in {bank.seconds:.1f} s")
        per_seed.append({
            "seed": seed,
            "sampling_seconds": bank.seconds,
            "by_generations": {str(g): evaluate_splits(items, bank.method(g)) for g in sz.generations},
        })
    return {
        "settings": {
            "generations": list(sz.generations), "seeds": list(sz.seeds), "steps": steps, "sampler": sampler,
            "prompts_per_style": sz.gen_n_per_style, "n_prompts": len(items), "protocol": "expansion",
        },
        "per_seed": per_seed,
        "aggregate": aggregate(per_seed, sz.generations),
    }


def aggregate(per_seed: list[dict[str, Any]], generations: tuple[int, ...] | list[int]) -> dict[str, Any]:
    """``{split: {g: {metric: seed_stats, 'n': prompts}}}`` and the change from the smallest to
    the largest ensemble, computed per seed (paired) then summarised over seeds."""
    out: dict[str, Any] = {}
    g_lo, g_hi = str(min(generations)), str(max(generations))
    for split, _ in SPLITS:
        if split not in per_seed[0]["by_generations"][g_lo]:
            continue
        rows = {}
        for g in generations:
            res = [s["by_generations"][str(g)][split] for s in per_seed]
            rows[str(g)] = {m: seed_stats(r[m] for r in res) for m in METRICS}
            rows[str(g)]["n"] = res[0]["n"]
        change = {
            m: seed_stats(
                s["by_generations"][g_hi][split][m] - s["by_generations"][g_lo][split][m]
                for s in per_seed
                if s["by_generations"][g_hi][split][m] is not None and s["by_generations"][g_lo][split][m] is not None
            )
            for m in METRICS
        }
        out[split] = {"by_generations": rows, "change": change, "from": int(g_lo), "to": int(g_hi)}
    return out


def _claims(data: dict[str, Any]) -> list[Claim]:
    agg = data["aggregate"]
    claims = []
    n_seeds = len(data["settings"]["seeds"])
    for split, a in agg.items():
        d_iou, d_cal = a["change"]["iou"], a["change"]["calibration"]
        # Noise of a mean over seeds: std / sqrt(n seeds).
        se_iou = standard_error(d_iou["std"], d_iou["n"])
        se_cal = standard_error(d_cal["std"], d_cal["n"])
        claims.append(Claim(
            f"1. more generations raise IoU ({split})",
            "more generated instances tend to increase mIoU (Fig. 5)",
            f"{pm(d_iou['mean'], d_iou['std'], '+.1f', 100)} IoU points from G={a['from']} to G={a['to']} "
            f"(std over {n_seeds} seeds, n={a['by_generations'][str(a['to'])]['n']} prompts)",
            judge(d_iou["mean"], se_iou, +1),
        ))
        claims.append(Claim(
            f"1. more generations improve calibration ({split})",
            "more instances improve the calibration score, mostly from a single one (Fig. 6)",
            f"calibration score {pm(d_cal['mean'], d_cal['std'], '+.4f')} from G={a['from']} to G={a['to']} (lower is better; std over seeds)",
            judge(d_cal["mean"], se_cal, -1),
        ))
    return claims


def _plot(data: dict[str, Any], rc: RenderContext) -> str:
    plt = pyplot()
    agg = data["aggregate"]
    gens = data["settings"]["generations"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for split, a in agg.items():
        rows = a["by_generations"]
        for ax, m, scale in ((axes[0], "iou", 100.0), (axes[1], "calibration", 1.0)):
            mean = [(rows[str(g)][m]["mean"] or float("nan")) * scale for g in gens]
            std = [(rows[str(g)][m]["std"] or 0.0) * scale for g in gens]
            ax.errorbar(gens, mean, yerr=std, marker="o", capsize=3, label=f"{split} (n={rows[str(gens[0])]['n']})")
    axes[0].set(xlabel="generations G", ylabel="IoU (%)", title="IoU vs generations")
    axes[1].set(xlabel="generations G", ylabel="calibration score (lower is better)", title="calibration vs generations")
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_xticks(gens)
        ax.set_xticklabels([str(g) for g in gens])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    first = data["per_seed"][0]
    ax = axes[2]
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
    for g in (min(gens), max(gens)):
        res = first["by_generations"][str(g)].get("in-distribution")
        if res is None:
            continue
        rel = res["reliability"]
        pts = [(p, f) for p, f in zip(rel["mean_prob"], rel["frac_positive"]) if p is not None and f is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"G={g}")
    ax.set(xlabel="mean predicted probability (bin)", ylabel="fraction of foreground pixels",
           title=f"reliability, in-distribution, seed {first['seed']}", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = save_figure(fig, rc.image("generations.png"))
    return rc.link(path, "IoU, calibration and reliability against the number of generations")


def render(data: dict[str, Any], rc: RenderContext) -> Section:
    st = data["settings"]
    lines = [
        f"Evaluated model, {st['steps']} {st['sampler'].upper()} steps, expansion protocol, {st['prompts_per_style']} prompts per style "
        f"({st['n_prompts']} in all), sampling seeds {', '.join(map(str, st['seeds']))}. For each seed one ensemble of "
        f"{max(st['generations'])} generations is drawn per prompt; the ensemble of G generations is its first G samples, so the "
        "curve compares the same prompts and the same noise. Values are mean ± std over the seeds; the calibration score is pooled "
        "over all pixels of the split (lower is better).",
        "",
    ]
    for split, a in data["aggregate"].items():
        rows = a["by_generations"]
        lines.append(f"**{split}**")
        lines.append("")
        lines.append(md_table(
            ["G", "IoU (%)", "F1 (%)", "calibration", "n prompts"],
            [[g, pm(r["iou"]["mean"], r["iou"]["std"], ".1f", 100), pm(r["f1"]["mean"], r["f1"]["std"], ".1f", 100),
              pm(r["calibration"]["mean"], r["calibration"]["std"], ".4f"), r["n"]] for g, r in rows.items()],
        ))
        lines.append("")
    lines.append(_plot(data, rc))
    return Section("\n".join(lines), _claims(data))
