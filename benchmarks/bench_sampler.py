"""Sampler speed and memory benchmark (issue: segdiff_core foundation).

Times, in one run and on this machine, for a small CPU preset at 64x64 and a paper-size
preset (the Cityscapes configuration, C = 128, at a reduced input size so it runs on a CPU):

  (a) G(I) recomputed every step vs computed once (cached)
  (b) generations one after another vs batched
  (c) DDPM with all T = 100 steps vs respaced DDPM / DDIM with 25 and 10 steps
  (d) bare network forward vs time per sampler step (the sampler's overhead)
  (e) peak memory for 1, 8 and 30 generations (each in a fresh process)

and prints a table of seconds, ratios and MiB; ``--markdown FILE`` also writes it as Markdown, into
its own marked section of FILE (``bench_sampler``; other benchmarks' sections are kept).

    python benchmarks/bench_sampler.py                 # full run (a few minutes on 2 cores)
    python benchmarks/bench_sampler.py --quick         # smaller repeat counts
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_prompt import write_section  # noqa: E402 (the one writer of benchmark doc sections)
from segdiff_core.checkpoint import atomic_write  # noqa: E402
from segdiff_core.config import SegDiffConfig  # noqa: E402
from segdiff_core.diffusion.sampler import sample, sample_progressive  # noqa: E402
from segdiff_core.diffusion.scheduler import DDPMScheduler  # noqa: E402
from segdiff_core.model import SegDiffModel  # noqa: E402
from segdiff_core.presets import get_preset  # noqa: E402


def paper_size_config(image_size: int) -> SegDiffConfig:
    """The paper's Cityscapes network (C=128, 15 RRDBs, 3 res blocks/level) at ``image_size``."""
    return get_preset("cityscapes").with_model(image_size=image_size)


def build(cfg: SegDiffConfig, seed: int = 0) -> SegDiffModel:
    gen = torch.Generator().manual_seed(seed)
    model = SegDiffModel(cfg.model).eval()
    with torch.no_grad():  # non-zero output layers so the work is the real work
        for p in model.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model


def timed(fn, repeats: int, warmup: bool = True) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call unless ``warmup`` is False), seconds."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_speed(cfg: SegDiffConfig, generations: int, steps: int, repeats: int) -> dict[str, float]:
    model = build(cfg)
    sched = DDPMScheduler(cfg.diffusion)
    s = cfg.model.image_size
    image = torch.randn(1, cfg.model.in_channels, s, s, generator=torch.Generator().manual_seed(1))
    schedule = sched.sampling_schedule(steps, "ddpm")
    gen = lambda: torch.Generator().manual_seed(0)
    run = lambda g, reuse: sample(model, schedule, image, generations=g, generator=gen(), reuse_encoding=reuse)

    def sequential(reuse: bool) -> None:
        for _ in range(generations):
            run(1, reuse)

    r: dict[str, float] = {}
    r["seq_recompute"] = timed(lambda: sequential(False), repeats)
    r["seq_cached"] = timed(lambda: sequential(True), repeats)
    r["batched_recompute"] = timed(lambda: run(generations, False), repeats)
    r["batched_cached"] = timed(lambda: run(generations, True), repeats)

    # (d) bare forward passes (same batch, same cached encoding) vs the sampler's steps
    x = torch.randn(generations, 1, s, s)
    t = torch.full((generations,), 50, dtype=torch.long)
    with torch.inference_mode():
        cond = model.encode_image(image)
        r["encode"] = timed(lambda: model.encode_image(image), repeats)

        def bare() -> None:
            for _ in range(steps):
                model.denoise(x, t, cond)

        r["bare_forward_per_step"] = timed(bare, repeats) / steps
    r["sampler_per_step"] = (r["batched_cached"] - r["encode"]) / steps
    return r


def bench_steps(cfg: SegDiffConfig, generations: int, repeats: int, full_steps: int) -> dict[str, float]:
    model = build(cfg)
    sched = DDPMScheduler(cfg.diffusion)
    s = cfg.model.image_size
    image = torch.randn(1, cfg.model.in_channels, s, s)
    out = {}
    for sampler, steps in [("ddpm", full_steps), ("ddpm", 25), ("ddim", 25), ("ddim", 10)]:
        schedule = sched.sampling_schedule(steps, sampler)
        out[f"{sampler}{steps}"] = timed(
            lambda: sample(model, schedule, image, generations=generations, generator=torch.Generator().manual_seed(0)), repeats
        )
    return out


def _rss_mib(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (Linux /proc; VmHWM is the peak since the last reset)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _peak_worker(cfg_dict: dict, generations: int, steps: int, queue: mp.Queue) -> None:
    torch.set_num_threads(2)
    cfg = SegDiffConfig.from_dict(cfg_dict)
    model = build(cfg)
    s = cfg.model.image_size
    image = torch.randn(1, cfg.model.in_channels, s, s)
    schedule = DDPMScheduler(cfg.diffusion).sampling_schedule(steps, "ddim")
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
        fh.write("5")
    base = _rss_mib("VmRSS")
    for _ in sample_progressive(model, schedule, image, generations=generations, generator=torch.Generator().manual_seed(0)):
        pass
    peak = _rss_mib("VmHWM")
    queue.put((peak - base, peak))


def bench_memory(cfg: SegDiffConfig, generations: int, steps: int = 2) -> tuple[float, float]:
    """(MiB added by sampling over the loaded model, process peak MiB), in a fresh process.

    On CUDA the same numbers would come from torch.cuda.max_memory_allocated; here the CPU
    process's resident set is measured (peak reset after the model is built).
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_worker, args=(cfg.to_dict(), generations, steps, q))
    p.start()
    res = q.get(timeout=1800)
    p.join()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a smaller paper-size run")
    ap.add_argument("--markdown", type=Path, help="also write the tables as Markdown to this file")
    ap.add_argument("--json", type=Path, help="also write the raw numbers as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    repeats = 1 if args.quick else 3
    cases = [
        ("cpu-small @64", get_preset("cpu-small"), 8, 10),
        ("paper (cityscapes C=128) @32", paper_size_config(32), 4 if args.quick else 8, 3),
    ]
    lines = [f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}", ""]
    lines += ["| model | G x steps | seq + recompute G(I) | seq + cached | batched + recompute | batched + cached | speed-up (cached+batched vs seq+recompute) | bare forward / step | sampler / step | overhead |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    raw: dict = {"speed": {}, "steps": {}, "memory": {}}
    for name, cfg, g, steps in cases:
        r = bench_speed(cfg, g, steps, repeats)
        raw["speed"][name] = r
        over = r["sampler_per_step"] / r["bare_forward_per_step"] - 1.0
        lines.append(
            f"| {name} | {g} x {steps} | {r['seq_recompute']:.3f} s | {r['seq_cached']:.3f} s | {r['batched_recompute']:.3f} s | "
            f"{r['batched_cached']:.3f} s | **{r['seq_recompute'] / r['batched_cached']:.2f}x** | {r['bare_forward_per_step'] * 1e3:.1f} ms | "
            f"{r['sampler_per_step'] * 1e3:.1f} ms | {over * 100:+.1f}% |"
        )
        print(lines[-1], flush=True)
    lines += ["", "| model | G | DDPM 100 | DDPM 25 | DDIM 25 | DDIM 10 | DDPM100 / DDIM10 |", "|---|---|---|---|---|---|---|"]
    for name, cfg, g, _ in cases[:1] + ([] if args.quick else [(cases[1][0], cases[1][1], 2, 0)]):
        st = bench_steps(cfg, g, 1, 100)
        raw["steps"][name] = st
        lines.append(f"| {name} | {g} | {st['ddpm100']:.2f} s | {st['ddpm25']:.2f} s | {st['ddim25']:.2f} s | {st['ddim10']:.2f} s | {st['ddpm100'] / st['ddim10']:.1f}x |")
        print(lines[-1], flush=True)
    lines += ["", "| model | generations | peak added by sampling | process peak |", "|---|---|---|---|"]
    for name, cfg, _, _ in cases:
        for g in (1, 8, 30):
            added, peak = bench_memory(cfg, g)
            raw["memory"][f"{name} G={g}"] = {"added_mib": added, "peak_mib": peak}
            lines.append(f"| {name} | {g} | {added:.0f} MiB | {peak:.0f} MiB |")
            print(lines[-1], flush=True)
    small = raw["speed"][cases[0][0]]
    speedup = small["seq_recompute"] / small["batched_cached"]
    overhead = small["sampler_per_step"] / small["bare_forward_per_step"] - 1.0
    verdict = [
        "",
        "Targets for the small preset, 8 generations, 64x64:",
        f"- caching G(I) + batching generations vs recomputing G(I) with sequential generations: "
        f"**{speedup:.2f}x** (target >= 2.5x: {'met' if speedup >= 2.5 else 'NOT met'})",
        f"- sampler overhead over the bare network forward passes: **{overhead * 100:+.1f}%** "
        f"(target <= 10%: {'met' if overhead <= 0.10 else 'NOT met'})",
    ]
    lines += verdict
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        header = [
            "## Sampler benchmarks",
            "",
            "Written by `python benchmarks/bench_sampler.py --markdown docs/benchmarks.md` (numbers are",
            "not edited by hand). Times are the best of several runs; ratios compare runs made in the same",
            "process on the same machine. Peak memory is measured in a fresh process per row (`/proc`",
            "VmHWM, reset after the model is built), as the growth over the loaded model and as the",
            "whole process.",
            "",
            "Columns: *seq* runs the generations one after another, *batched* runs them as one batch;",
            "*recompute* calls G(I) at every step (as the reference code does), *cached* computes it once.",
            "*bare forward / step* is the network alone on the same batch; *sampler / step* is the",
            "sampling loop's time per step (scheduler maths, noise, bookkeeping included).",
            "",
            "",
        ]
        begin, end = "<!-- bench_sampler: begin -->", "<!-- bench_sampler: end -->"
        write_section(args.markdown, f"{begin}\n\n" + "\n".join(header) + text + f"\n\n{end}", begin, end)
    if args.json:
        atomic_write(args.json, json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
