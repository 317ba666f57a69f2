"""Seconds per box prompt, and time to the first live preview, for a model file.

Measures what a user waits for in the plugin: one prompt, cropped and segmented with all
generations of the ensemble (no batching across prompts), median of several prompts; and the
time from starting :meth:`Segmenter.segment_progressive` to its first step (crop, preprocessing,
image encoding and one denoising step: the first preview the plugin can draw). The model's
default settings are measured next to reference settings in the same process, so the ratios
hold even when absolute times move with the load of the shared machine.

    python benchmarks/bench_prompt.py                       # the bundled model
    python benchmarks/bench_prompt.py runs/x/best.pt --generations 8 --steps 10
    python benchmarks/bench_prompt.py --markdown docs/benchmarks.md   # (re)write its section there

``--tuning`` also measures, at the model's defaults and interleaved in rounds so the machine's
load hits every variant alike: channels_last weights, ``torch.no_grad`` against
``torch.inference_mode`` (what the sampler uses), 1 against 2 torch threads, and
``torch.compile`` (its compile time too). The whole prompt is timed where the variant can go
through the public path; the inference-mode and compile variants time the network's work for
one prompt (``encode_image`` + ``denoise`` of all generations, per step).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segdiff_core.bundled import bundled_model_path  # noqa: E402
from segdiff_core.config import InferenceConfig  # noqa: E402
from segdiff_core.data.boxes import Box  # noqa: E402
from segdiff_core.data.crops import CropProtocol, prompt_crop  # noqa: E402
from segdiff_core.data.prompt import box_in_crop  # noqa: E402
from segdiff_core.data.synthetic import generate_tile  # noqa: E402
from segdiff_core.segmenter import Segmenter  # noqa: E402

from segdiff_core.checkpoint import atomic_write  # noqa: E402

BEGIN, END = "<!-- bench_prompt: begin -->", "<!-- bench_prompt: end -->"


def prompts(n: int) -> tuple[np.ndarray, list[Box]]:
    tile = generate_tile("fluorescence", 256, 0)
    ids = [i for i in np.unique(tile.labels) if i and (tile.labels == i).sum() >= 30][:n]
    return tile.image, [Box.from_mask(tile.labels == i) for i in ids]


def time_prompt(seg: Segmenter, image: np.ndarray, box: Box, inf: InferenceConfig) -> tuple[float, float]:
    """(seconds for the whole prompt, seconds to the first step) for one prompt."""
    t0 = time.perf_counter()
    patch, geom = prompt_crop(image, box, seg.input_size, CropProtocol.expansion())
    run = seg.segment_progressive(patch, inf, seed=0, box=box_in_crop(geom, box))
    next(run)
    first = time.perf_counter() - t0
    for _ in run:
        pass
    return time.perf_counter() - t0, first


def measure(seg: Segmenter, inf: InferenceConfig, image: np.ndarray, boxes: list[Box]) -> dict[str, float]:
    time_prompt(seg, image, boxes[0], inf)  # warm-up
    total, first = zip(*(time_prompt(seg, image, b, inf) for b in boxes))
    return {"generations": inf.generations, "steps": inf.steps, "sampler": inf.sampler,
            "median_s": statistics.median(total), "min_s": min(total), "max_s": max(total),
            "first_preview_median_s": statistics.median(first), "n": len(boxes)}


def markdown(model: str, threads: int, rows: list[dict[str, float]], default: InferenceConfig,
             tuned: list[dict[str, Any]] | None = None, rounds: int = 0) -> str:
    ref = next(r for r in rows if r["generations"] == 8 and r["steps"] == 10)
    lines = ["## Seconds per box prompt (issue 11, item 6)", "",
             f"Written by `python benchmarks/bench_prompt.py --markdown docs/benchmarks.md`. Model `{model}`,",
             f"{rows[0]['n']} prompts of a fluorescence tile, one prompt at a time (crop, sampling with the box channel,",
             f"no paste-back), {threads} torch thread(s), {platform.machine()}, torch {torch.__version__}, machine load",
             f"average {os.getloadavg()[0]:.1f} at the end of the run (2 cores, shared with other work: absolute",
             "times move with it; the ratio column compares settings measured in the same run).", "",
             "| settings | median s / prompt | min | max | first preview (median s) | time vs 8 x 10 DDIM |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        tag = " (**model default**)" if (r["generations"], r["steps"], r["sampler"]) == (default.generations, default.steps, default.sampler) else ""
        lines.append(f"| {r['generations']} x {r['steps']} {r['sampler']}{tag} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
                     f"{r['max_s']:.3f} | {r['first_preview_median_s']:.3f} | {r['median_s'] / ref['median_s']:.2f} |")
    d = next(r for r in rows if (r["generations"], r["steps"], r["sampler"]) == (default.generations, default.steps, default.sampler))
    lines += ["", f"Targets (issue 11) at the default: median {d['median_s']:.3f} s per prompt (target <= 0.3 s: "
              f"{'met' if d['median_s'] <= 0.3 else 'NOT met'} in this run), first preview {d['first_preview_median_s']:.3f} s "
              f"(target <= 0.1 s: {'met' if d['first_preview_median_s'] <= 0.1 else 'NOT met'} in this run)."]
    if tuned:
        lines += tuning_markdown(tuned, default, rounds)
    return "\n".join(lines)


def write_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the ``begin`` ... ``end`` section of ``path`` with ``text`` (which starts with
    ``begin`` and ends with ``end``; appended if absent). The one writer of the benchmark
    sections of docs/benchmarks.md: each benchmark owns its section, so running one never drops
    another's. The write is atomic."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _m: text, old) if pattern.search(old) else old.rstrip() + "\n\n" + text + "\n"
    atomic_write(path, new)


def network_work(seg: Segmenter, model: torch.nn.Module, inf: InferenceConfig, image: torch.Tensor,
                 mode: Any) -> Callable[[], None]:
    """One prompt's network calls (encode once, ``inf.steps`` denoising calls of all generations)
    under the grad mode ``mode`` (a context manager factory)."""
    x = torch.randn(inf.generations, 1, seg.input_size, seg.input_size)
    ts = [torch.full((inf.generations,), int(t)) for t in seg.scheduler.sampling_schedule(inf.steps, inf.sampler).timesteps]

    def run() -> None:
        with mode():
            cond = model.encode_image(image)
            for t in ts:
                model.denoise(x, t, cond)
    return run


def tuning(seg: Segmenter, inf: InferenceConfig, image: np.ndarray, boxes: list[Box], rounds: int) -> list[dict[str, Any]]:
    """Median seconds of each speed-up candidate against the default, interleaved over ``rounds``."""
    plain_seg = Segmenter(copy.deepcopy(seg.model), seg.config, seg.device, seg.metadata)
    plain_seg.model = plain_seg.model.to(memory_format=torch.contiguous_format)  # what Segmenter did before
    patch, geom = prompt_crop(image, boxes[0], seg.input_size, CropProtocol.expansion())
    x = seg.model_input(patch, box_in_crop(geom, boxes[0]))
    threads = torch.get_num_threads()

    def with_threads(n: int) -> Callable[[], float]:
        def run() -> float:
            torch.set_num_threads(n)
            try:
                return statistics.median(time_prompt(seg, image, b, inf)[0] for b in boxes)
            finally:
                torch.set_num_threads(threads)
        return run

    compiled = copy.deepcopy(seg.model)
    compiled.encode_image = torch.compile(compiled.encode_image)  # type: ignore[method-assign]
    compiled.denoise = torch.compile(compiled.denoise)  # type: ignore[method-assign]
    t0 = time.perf_counter()
    network_work(seg, compiled, inf, x, torch.inference_mode)()  # compiles
    compile_s = time.perf_counter() - t0
    cases: dict[str, Callable[[], Any]] = {
        "prompt: contiguous weights (baseline)": lambda: statistics.median(time_prompt(plain_seg, image, b, inf)[0] for b in boxes),
        "prompt: channels_last weights (Segmenter's CPU default)": lambda: statistics.median(time_prompt(seg, image, b, inf)[0] for b in boxes),
        f"prompt: {threads} torch thread(s) (this run's setting)": with_threads(threads),
        f"prompt: {2 if threads == 1 else 1} torch thread(s)": with_threads(2 if threads == 1 else 1),
        "network: torch.inference_mode (baseline: the sampler's mode)": network_work(seg, seg.model, inf, x, torch.inference_mode),
        "network: torch.no_grad": network_work(seg, seg.model, inf, x, torch.no_grad),
        "network: torch.compile (inductor)": network_work(seg, compiled, inf, x, torch.inference_mode),
    }
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    order = np.random.default_rng(0)
    for _ in range(rounds):  # a fresh order every round: no case always follows the 2-thread one
        for name in order.permutation(list(cases)).tolist():
            fn = cases[name]
            t0 = time.perf_counter()
            out = fn()
            times[name].append(out if isinstance(out, float) else time.perf_counter() - t0)
    rows = [{"case": k, "median_s": statistics.median(v), "min_s": min(v), "n": len(v), "rounds_s": v} for k, v in times.items()]
    rows.append({"case": "torch.compile: compile time (first call)", "median_s": compile_s, "min_s": compile_s, "n": 1})
    return rows


def tuning_markdown(rows: list[dict[str, Any]], inf: InferenceConfig, rounds: int) -> list[str]:
    """The candidates' table: per-round ratio to the default of the same kind (same round), and
    whether the candidate was faster in every round."""
    ref = {r["case"].split(":")[0]: r for r in rows if "(baseline" in r["case"]}
    lines = ["", f"### Speed-up candidates at the default ({inf.generations} x {inf.steps} {inf.sampler})", "",
             f"Interleaved over {rounds} rounds, the order of the cases shuffled every round (*prompt* rows: median",
             "over the prompts per round, whole prompt through `Segmenter.segment_progressive`; *network* rows: the",
             "network calls of one prompt; `torch.compile`'s compile time depends on torch's on-disk cache, which an",
             "earlier run may have filled). Ratio: to the baseline of the same kind in the same round, median and",
             "range over the rounds. Prompt rows use channels_last weights unless marked contiguous.", "",
             "| case | median s | min s | ratio to baseline (median, range) | faster in every round |", "|---|---|---|---|---|"]
    faster = []
    for r in rows:
        base = ref.get(r["case"].split(":")[0])
        if base is None or base is r or "rounds_s" not in r:
            lines.append(f"| {r['case']} | {r['median_s']:.3f} | {r['min_s']:.3f} | — | — |")
            continue
        ratios = [a / b for a, b in zip(r["rounds_s"], base["rounds_s"])]
        every = max(ratios) < 1.0
        if every:
            faster.append(r["case"])
        lines.append(f"| {r['case']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {statistics.median(ratios):.2f} "
                     f"({min(ratios):.2f}-{max(ratios):.2f}) | {'yes' if every else 'no'} |")
    lines += ["", "Faster than the baseline in every round: " + (", ".join(f"*{c}*" for c in faster) or "none") + "."]
    kept = any("channels_last" in c for c in faster)
    compiled = "faster in every round here, but not kept" if any("compile" in c for c in faster) else "no gain beyond the noise here"
    lines += ["", "What the code does: `Segmenter` puts the weights in channels_last on the CPU (this run: "
              + ("faster in every round, kept" if kept else "**not** faster in every round; revisit") + "); the sampler"
              " keeps `torch.inference_mode`, one torch thread per run in the plugin (`gui_torch_threads`: cores - 1)"
              f" and no `torch.compile` (a compile per process, a graph break at the time-step check; {compiled})."]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model file (default: the bundled model)")
    ap.add_argument("--generations", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--sampler", choices=("ddim", "ddpm"))
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--markdown", type=Path, help="write the table into this file's bench_prompt section")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON")
    ap.add_argument("--tuning", action="store_true", help="also measure channels_last, no_grad, threads, torch.compile")
    ap.add_argument("--rounds", type=int, default=7, help="rounds of the --tuning comparison")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.model or str(bundled_model_path())
    seg = Segmenter.from_checkpoint(path, device="cpu")
    changes = {k: v for k, v in (("generations", args.generations), ("steps", args.steps), ("sampler", args.sampler)) if v is not None}
    default = seg.inference.replace(**changes)
    image, boxes = prompts(args.prompts)
    settings = [default] + [seg.inference.replace(generations=g, steps=s, sampler="ddim")
                            for g, s in ((8, 1), (8, 2), (8, 3), (8, 10)) if (g, s) != (default.generations, default.steps)]
    rows = [measure(seg, inf, image, boxes) for inf in settings]
    for r in rows:
        print(f"{r['generations']} x {r['steps']} {r['sampler']}: median {r['median_s']:.3f} s per prompt "
              f"(min {r['min_s']:.3f}, max {r['max_s']:.3f}); first preview {r['first_preview_median_s']:.3f} s")
    tuned = tuning(seg, default, image, boxes[:3], args.rounds) if args.tuning else None
    for r in tuned or []:
        print(f"{r['case']}: median {r['median_s']:.4f} s (min {r['min_s']:.4f}, n {r['n']})")
    if args.json:
        atomic_write(args.json, json.dumps({"model": path, "threads": args.threads, "rows": rows, "tuning": tuned,
                                            "load_average": list(os.getloadavg())}, indent=1))
    if args.markdown:
        text = markdown(Path(path).name, args.threads, rows, default, tuned, args.rounds)
        write_section(args.markdown, f"{BEGIN}\n\n{text}\n\n{END}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
