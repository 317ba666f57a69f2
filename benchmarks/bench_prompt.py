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
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

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


def markdown(model: str, threads: int, rows: list[dict[str, float]], default: InferenceConfig) -> str:
    ref = next(r for r in rows if r["generations"] == 8 and r["steps"] == 10)
    lines = [BEGIN, "", "## Seconds per box prompt (issue 11, item 6)", "",
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
    lines += ["", END]
    return "\n".join(lines)


def write_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the ``begin`` ... ``end`` section of ``path`` with ``text`` (appended if absent)."""
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _m: text, old) if pattern.search(old) else old.rstrip() + "\n\n" + text + "\n"
    path.write_text(new)


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
    if args.json:
        args.json.write_text(json.dumps({"model": path, "threads": args.threads, "rows": rows}, indent=1))
    if args.markdown:
        write_section(args.markdown, markdown(Path(path).name, args.threads, rows, default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
