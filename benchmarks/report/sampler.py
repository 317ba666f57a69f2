"""The paper's way of sampling against ours, on the paper's network and on the evaluated one.

The reference code samples one generation after another and recomputes G(I) at every step
(``segdiff_core.diffusion.sampler.sample(..., reuse_encoding=False)`` called once per
generation); our sampler computes G(I) once and runs all generations as one batch. Both are
timed in one run by :func:`benchmarks.bench_sampler.bench_speed` (random weights: speed does
not depend on their values) for

* the paper's Cityscapes network (C = 128, 15 RRDBs, 3 res blocks per level, ~156 M
  parameters) at a reduced input size so it runs on this CPU, and
* the evaluated (by default the bundled) model's architecture.
"""
from __future__ import annotations

from typing import Any

from benchmarks.report.common import Claim, RenderContext, ReportContext, Section, fmt, md_table, pyplot, save_figure

NAME = "sampler"
TITLE = "Reference-style sampling vs our cached, batched sampler"
MODES = (
    ("seq_recompute", "one generation at a time, G(I) every step (reference)"),
    ("seq_cached", "one generation at a time, G(I) once"),
    ("batched_recompute", "all generations batched, G(I) every step"),
    ("batched_cached", "all generations batched, G(I) once (ours)"),
)


def paper_config(image_size: int, reduced: bool) -> Any:
    """The paper's Cityscapes config at ``image_size`` (``reduced``: tiny widths, smoke only)."""
    from benchmarks.bench_sampler import paper_size_config

    cfg = paper_size_config(image_size)
    if reduced:
        cfg = cfg.with_model(model_channels=16, num_res_blocks=1, rrdb_blocks=1, rrdb_features=16, rrdb_growth=8)
    return cfg


def _parameters(cfg: Any) -> int:
    import torch

    from segdiff_core.model import SegDiffModel

    with torch.device("meta"):
        return int(sum(p.numel() for p in SegDiffModel(cfg.model).parameters()))


def run(ctx: ReportContext) -> dict[str, Any]:
    import torch

    from benchmarks.bench_sampler import bench_speed

    sz = ctx.sizes
    g, steps, repeats = sz.paper_generations, sz.paper_steps, sz.paper_repeats
    cases = {
        "paper": (f"paper Cityscapes network{' (reduced for the smoke run)' if sz.paper_reduced else ''} at {sz.paper_image_size} px",
                  paper_config(sz.paper_image_size, sz.paper_reduced)),
        "evaluated": (f"evaluated model's architecture at {ctx.segmenter().input_size} px", ctx.segmenter().config),
    }
    out: dict[str, Any] = {}
    for key, (label, cfg) in cases.items():
        r = bench_speed(cfg, g, steps, repeats)
        out[key] = {"label": label, "parameters": _parameters(cfg), "image_size": cfg.model.image_size, "times": r,
                    "ratio": r["seq_recompute"] / r["batched_cached"]}
        ctx.log(f"  {label}: reference-style {r['seq_recompute']:.2f} s, ours {r['batched_cached']:.2f} s "
                f"-> {out[key]['ratio']:.1f}x")
    return {
        "settings": {"generations": g, "steps": steps, "repeats": repeats, "sampler": "ddpm", "threads": torch.get_num_threads()},
        "cases": out,
    }


def _plot(data: dict[str, Any], rc: RenderContext) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(data["cases"]), figsize=(5.5 * len(data["cases"]), 3.6), squeeze=False)
    for ax, (key, c) in zip(axes[0], data["cases"].items()):
        vals = [c["times"][m] for m, _ in MODES]
        ax.barh(range(len(MODES)), vals, color=["0.6", "0.6", "0.6", "tab:blue"])
        ax.set_yticks(range(len(MODES)))
        ax.set_yticklabels([m for m, _ in MODES], fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel="seconds", title=f"{key}: {c['ratio']:.1f}x faster")
        ax.grid(alpha=0.3, axis="x")
    path = save_figure(fig, rc.image("sampler.png"))
    return rc.link(path, "reference-style sampling against our sampler")


def render(data: dict[str, Any], rc: RenderContext) -> Section:
    st = data["settings"]
    g, steps = st["generations"], st["steps"]
    lines = [
        f"{g} generations x {steps} DDPM steps for one image, best of {st['repeats']} after a warm-up, {st['threads']} torch "
        "thread(s). Random weights (timing does not depend on them).",
        "",
    ]
    header = ["sampling", *[f"{c['label']} ({c['parameters'] / 1e6:.1f} M params)" for c in data["cases"].values()]]
    rows = [[desc, *(fmt(c["times"][m], ".2f") + " s" for c in data["cases"].values())] for m, desc in MODES]
    rows.append(["**speed-up, reference / ours**", *(f"**{c['ratio']:.1f}x**" for c in data["cases"].values())])
    rows.append(["bare network forward per step", *(fmt(c["times"]["bare_forward_per_step"], ".3f", 1.0) + " s" for c in data["cases"].values())])
    rows.append(["sampler time per step (ours)", *(fmt(c["times"]["sampler_per_step"], ".3f") + " s" for c in data["cases"].values())])
    lines.append(md_table(header, rows, "l" + "r" * len(data["cases"])))
    paper = data["cases"].get("paper")
    if paper is not None:
        per = paper["times"]["seq_recompute"] / (g * steps)
        lines += ["", f"Linear extrapolation: the paper's protocol (30 generations x 100 steps, reference-style) on this network "
                      f"at {paper['image_size']} px would take about {fmt(per * 3000 / 60, '.1f')} minutes per prompt on this machine "
                      f"({fmt(per, '.3f')} s per generation-step)."]
    lines += ["", _plot(data, rc)]
    claims = [
        Claim(f"speed: our sampler vs the reference's ({key})", "(reference code: one generation at a time, G(I) every step)",
              f"{c['ratio']:.1f}x faster for {g} generations x {steps} steps", "n/a")
        for key, c in data["cases"].items()
    ]
    return Section("\n".join(lines), claims)
