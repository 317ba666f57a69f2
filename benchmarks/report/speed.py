"""Speed of the evaluated model on this machine: seconds per box prompt over a grid of
generations x steps, time to the first preview, and peak memory.

* Seconds per prompt: :meth:`Segmenter.segment` on one held-out prompt (what the plugin does
  for one box), best of ``speed_repeats`` calls per cell (3 in the full report; one
  slow call caused by the machine would otherwise bend the fit), after one warm-up.
* Time to first preview: from calling :meth:`Segmenter.segment_progressive` to receiving its
  first step (preprocessing, G(I), one denoising step), median over repeats.
* Memory: each ensemble size in a fresh process (``ru_maxrss`` only grows): the process peak
  and what sampling added on top of the loaded model.
"""
from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from typing import Any

import numpy as np

from benchmarks.report.common import (
    Claim,
    RenderContext,
    ReportContext,
    Section,
    fmt,
    md_table,
    pyplot,
    save_figure,
)
from benchmarks.report.steps import linear_fit

NAME = "speed"
TITLE = "Speed: seconds per prompt, first preview, memory"


def _memory_worker(model_path: str, generations: int, steps: int, threads: int, queue: Any) -> None:
    import resource

    import torch

    torch.set_num_threads(threads)
    from segdiff_core.segmenter import Segmenter

    seg = Segmenter.from_checkpoint(model_path, device="cpu")
    s = seg.input_size
    patch = np.random.default_rng(0).random((s, s, seg.in_channels)).astype(np.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seg.segment(patch, seg.inference.replace(generations=generations, steps=steps), seed=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(((peak - base) / 1024.0, peak / 1024.0))  # ru_maxrss is KiB on Linux


def measure_memory(model_path: str, generations: int, steps: int, threads: int, timeout: float = 900.0) -> dict[str, float]:
    """``{"added_mib", "peak_mib"}`` of one ``segment`` call with ``generations``, in a fresh
    (spawned) process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_worker, args=(model_path, generations, steps, threads, queue))
    proc.start()
    try:
        added, peak = queue.get(timeout=timeout)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()
    return {"added_mib": added, "peak_mib": peak}


def run(ctx: ReportContext) -> dict[str, Any]:
    import torch

    from benchmarks.bench_sampler import timed

    seg = ctx.segmenter()
    sz = ctx.sizes
    T = seg.config.diffusion.num_timesteps
    patch = ctx.prepared(1, seg.input_size)[0].model_inputs[0]
    inf = seg.inference
    seg.segment(patch, inf.replace(generations=1, steps=min(2, T)), seed=0)  # warm-up
    grid = []
    for steps in [s for s in sz.speed_steps if s <= T]:
        for g in sz.speed_generations:
            cfg = inf.replace(generations=g, steps=steps)
            seconds = timed(lambda: seg.segment(patch, cfg, seed=0), sz.speed_repeats, warmup=False)
            grid.append({"generations": g, "steps": steps, "seconds": seconds})
        ctx.log(f"  {steps} steps: " + ", ".join(f"G={r['generations']} {r['seconds']:.2f}s" for r in grid[-len(sz.speed_generations):]))
    preview = []
    for g in sz.preview_generations:
        times = []
        for _ in range(sz.preview_repeats):
            t0 = time.perf_counter()
            gen = seg.segment_progressive(patch, inf.replace(generations=g), seed=0)
            next(gen)
            times.append(time.perf_counter() - t0)
            gen.close()
        full = timed(lambda: seg.segment(patch, inf.replace(generations=g), seed=0), 1, warmup=False)
        preview.append({"generations": g, "first_step_seconds": statistics.median(times), "full_seconds": full})
    memory = []
    for g in sz.memory_generations:
        m = measure_memory(str(ctx.model_path), g, inf.steps, ctx.threads)
        memory.append({"generations": g, **m})
        ctx.log(f"  memory G={g}: +{m['added_mib']:.0f} MiB (process peak {m['peak_mib']:.0f} MiB)")
    return {
        "settings": {
            "sampler": inf.sampler, "default_generations": inf.generations, "default_steps": inf.steps,
            "image_size": seg.input_size, "parameters": seg.model.num_parameters(), "threads": torch.get_num_threads(),
            "repeats": sz.speed_repeats, "preview_repeats": sz.preview_repeats,
        },
        "grid": grid,
        "fits": fits(grid),
        "preview": preview,
        "memory": memory,
    }


def fits(grid: list[dict[str, Any]]) -> dict[str, Any]:
    """Linear fits of seconds against steps (per G) and against G (per steps)."""
    by_g: dict[str, Any] = {}
    by_steps: dict[str, Any] = {}
    for g in sorted({r["generations"] for r in grid}):
        rs = [r for r in grid if r["generations"] == g]
        by_g[str(g)] = linear_fit([r["steps"] for r in rs], [r["seconds"] for r in rs])
    for s in sorted({r["steps"] for r in grid}):
        rs = [r for r in grid if r["steps"] == s]
        by_steps[str(s)] = linear_fit([r["generations"] for r in rs], [r["seconds"] for r in rs])
    return {"vs_steps": by_g, "vs_generations": by_steps}


def _plots(data: dict[str, Any], rc: RenderContext) -> str:
    plt = pyplot()
    grid = data["grid"]
    gens = sorted({r["generations"] for r in grid})
    steps = sorted({r["steps"] for r in grid})
    sec = {(r["generations"], r["steps"]): r["seconds"] for r in grid}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for s in steps:
        axes[0].plot(gens, [sec[(g, s)] for g in gens], marker="o", label=f"{s} steps")
    for g in gens:
        axes[1].plot(steps, [sec[(g, s)] for s in steps], marker="o", label=f"G={g}")
    axes[0].set(xlabel="generations G", ylabel="seconds per prompt", title=f"one prompt, {data['settings']['sampler'].upper()}")
    axes[1].set(xlabel="sampling steps", ylabel="seconds per prompt", title="time vs steps")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    p1 = save_figure(fig, rc.image("speed_grid.png"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    pv = data["preview"]
    axes[0].plot([p["generations"] for p in pv], [p["first_step_seconds"] for p in pv], marker="o", label="first preview")
    axes[0].plot([p["generations"] for p in pv], [p["full_seconds"] for p in pv], marker="s", label="whole run")
    axes[0].set(xlabel="generations G", ylabel="seconds", title=f"time to first preview ({data['settings']['default_steps']} steps)")
    mem = data["memory"]
    axes[1].plot([m["generations"] for m in mem], [m["peak_mib"] for m in mem], marker="o", label="process peak")
    axes[1].plot([m["generations"] for m in mem], [m["added_mib"] for m in mem], marker="s", label="added by sampling")
    axes[1].set(xlabel="generations G", ylabel="MiB", title="peak memory (fresh process per G)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    p2 = save_figure(fig, rc.image("speed_preview_memory.png"))
    return rc.link(p1, "seconds per prompt against generations and steps") + "\n\n" + rc.link(p2, "time to first preview and peak memory")


def render(data: dict[str, Any], rc: RenderContext) -> Section:
    st = data["settings"]
    grid = data["grid"]
    gens = sorted({r["generations"] for r in grid})
    steps = sorted({r["steps"] for r in grid})
    sec = {(r["generations"], r["steps"]): r["seconds"] for r in grid}
    lines = [
        f"Evaluated model: {st['parameters']:,} parameters, {st['image_size']} px input, {st['sampler'].upper()} sampler, "
        f"{st['threads']} torch thread(s), CPU. Seconds for one box prompt (all generations batched, G(I) computed once; "
        f"each cell the best of {st.get('repeats', 1)} calls); the "
        f"model's default is G = {st['default_generations']}, {st['default_steps']} steps.",
        "",
        md_table(["steps \\ G", *map(str, gens)], [[s, *(fmt(sec[(g, s)], ".2f") for g in gens)] for s in steps]),
        "",
    ]
    fv = data["fits"]["vs_steps"]
    lines.append("Linear fits of seconds against steps: " + "; ".join(
        f"G={g}: {fmt(f['slope'], '.4f')} s/step, R² {fmt(f['r2'], '.3f')}" for g, f in fv.items()) + ".")
    lines += ["", md_table(
        ["G", "first preview (s, median)", "whole run (s)", "peak MiB", "added by sampling MiB"],
        [[p["generations"], fmt(p["first_step_seconds"], ".3f"), fmt(p["full_seconds"], ".2f"),
          next((fmt(m["peak_mib"], ".0f") for m in data["memory"] if m["generations"] == p["generations"]), "—"),
          next((fmt(m["added_mib"], ".0f") for m in data["memory"] if m["generations"] == p["generations"]), "—")]
         for p in data["preview"]],
    )]
    missing = [m for m in data["memory"] if m["generations"] not in {p["generations"] for p in data["preview"]}]
    if missing:
        lines += ["", "Memory only: " + "; ".join(f"G={m['generations']}: peak {m['peak_mib']:.0f} MiB, +{m['added_mib']:.0f} MiB" for m in missing)]
    lines += ["", _plots(data, rc)]
    claims = []
    r2s = [f["r2"] for f in fv.values() if f["r2"] is not None]
    if r2s:
        claims.append(Claim(
            "speed: time is linear in steps (single prompt)",
            "generation time grows linearly with steps and generations (Sec. 5)",
            f"R² of seconds vs steps per G: {min(r2s):.3f} (worst) to {max(r2s):.3f}",
            "agrees" if min(r2s) >= 0.98 else "disagrees",
        ))
    fg = [f for f in data["fits"]["vs_generations"].values() if f["r2"] is not None]
    if fg:
        claims.append(Claim(
            "speed: time is linear in generations (single prompt)",
            "inference time increases linearly with the number of generated instances (Sec. 5)",
            f"R² of seconds vs G per step count: {min(f['r2'] for f in fg):.3f} (worst); batching makes small G cost less than linear",
            "agrees" if min(f["r2"] for f in fg) >= 0.98 else "disagrees",
        ))
    return Section("\n".join(lines), claims)
