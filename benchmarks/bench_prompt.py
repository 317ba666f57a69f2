"""Seconds per box prompt for a model file with its default inference settings.

Measures what a user waits for in the plugin: one prompt, cropped and segmented with all
generations of the ensemble (no batching across prompts), median of several prompts.

    python benchmarks/bench_prompt.py                       # the bundled model
    python benchmarks/bench_prompt.py runs/x/best.pt --generations 8 --steps 10
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from segdiff_core.bundled import bundled_model_path
from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import CropProtocol, prompt_crop
from segdiff_core.data.synthetic import generate_tile
from segdiff_core.segmenter import Segmenter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model file (default: the bundled model)")
    ap.add_argument("--generations", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--sampler", choices=("ddim", "ddpm"))
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seg = Segmenter.from_checkpoint(args.model or bundled_model_path(), device="cpu")
    changes = {k: v for k, v in (("generations", args.generations), ("steps", args.steps), ("sampler", args.sampler)) if v is not None}
    inf = seg.inference.replace(**changes)
    tile = generate_tile("he", 256, 0)
    ids = [i for i in np.unique(tile.labels) if i and (tile.labels == i).sum() >= 30][: args.prompts]
    seg.segment(prompt_crop(tile.image, Box.from_mask(tile.labels == ids[0]), seg.input_size)[0], inf, seed=0)  # warm-up
    times = []
    for i in ids:
        t0 = time.perf_counter()
        patch, _ = prompt_crop(tile.image, Box.from_mask(tile.labels == i), seg.input_size, CropProtocol.expansion())
        seg.segment(patch, inf, seed=0)
        times.append(time.perf_counter() - t0)
    print(
        f"{len(times)} prompts, {inf.generations} generations x {inf.steps} {inf.sampler} steps, "
        f"{seg.input_size}px, {args.threads} threads: median {statistics.median(times):.3f} s, "
        f"min {min(times):.3f} s, max {max(times):.3f} s per prompt"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
