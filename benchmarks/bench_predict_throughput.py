"""Objects per second on a 2048 x 2048 tile: one prompt at a time vs batched prompts.

The same 100 boxes (ground-truth boxes of a synthetic H&E tile) are segmented

* one at a time, as the plugin's per-box loop does: crop, ``Segmenter.segment``, paste back;
* batched: :func:`segdiff_core.proposals.segment_boxes` with ``--batch`` prompts per network
  batch (each prompt carries its G generations, so a batch holds ``batch x G`` images, split
  into chunks of the model's ``chunk_size`` through the network).

The machine is shared, so its load drifts during a run: the boxes are taken in groups of
``--group``, and each group is timed in every mode back to back (one at a time, then each
batch size); a mode's time is the sum over the groups, so both modes see the same load.
Writes ``docs/predict-throughput.md`` and ``.json``.

    python benchmarks/bench_predict_throughput.py --boxes 100 --generations 8 --steps 2
"""
from __future__ import annotations

import argparse
import os
import json
import platform
import sys
import time
from pathlib import Path

import torch

from segdiff_core.checkpoint import atomic_write  # noqa: E402
from segdiff_core.bundled import bundled_model_path
from segdiff_core.data.crops import CropProtocol, paste_back, prompt_crop
from segdiff_core.data.prompt import box_in_crop
from segdiff_core.data.synthetic import generate_tile
from segdiff_core.diffusion.sampler import sample_progressive
from segdiff_core.proposals import instance_boxes, segment_boxes
from segdiff_core.segmenter import Segmenter

DOCS = Path(__file__).resolve().parents[1] / "docs"


def one_at_a_time(seg, image, boxes, inf, seed) -> float:
    t0 = time.perf_counter()
    for k, box in enumerate(boxes):
        patch, geom = prompt_crop(image, box, seg.input_size, CropProtocol.expansion())
        res = seg.segment(patch, inf, seed=seed + k)
        paste_back(res.probability, geom)
        paste_back(res.std, geom)
    return time.perf_counter() - t0


def network_alone(seg, image, boxes, inf, seed, batch) -> float:
    """Seconds of the sampler alone (G(I) and the denoiser), ``batch`` prompts per call.

    The crops and model inputs are made before the clock starts and nothing is summarised or
    pasted back, so this is the least time any batching of these prompts could take: the
    ceiling of a batched mode's speed-up is one-at-a-time time / this time.
    """
    inputs = []
    for box in boxes:
        patch, geom = prompt_crop(image, box, seg.input_size, CropProtocol.expansion())
        inputs.append(seg.model_input(patch, box_in_crop(geom, box)))
    schedule = seg.scheduler.sampling_schedule(inf.steps, inf.sampler, inf.eta)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for s in range(0, len(inputs), batch):
        for _ in sample_progressive(seg.model, schedule, torch.cat(inputs[s : s + batch]), inf.generations,
                                    generator=gen, chunk_size=inf.chunk_size, clip_denoised=inf.clip_denoised):
            pass
    return time.perf_counter() - t0


def batched(seg, image, boxes, inf, seed, batch) -> float:
    t0 = time.perf_counter()
    segment_boxes(seg, image, boxes, inf, seed=seed, batch_size=batch)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=100)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batches", default="8,32", help="batch sizes to measure")
    ap.add_argument("--group", type=int, default=20, help="boxes per interleaved group")
    ap.add_argument("--chunk-size", type=int, help="images per network call (default: the model's)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--out", default="predict-throughput", help="docs/<out>.md and .json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seg = Segmenter.from_checkpoint(bundled_model_path(), device="cpu")
    inf = seg.inference.replace(generations=args.generations, steps=args.steps)
    if args.chunk_size:
        inf = inf.replace(chunk_size=args.chunk_size)
    tile = generate_tile("he", 2048, rng=7)
    boxes = [b for b in instance_boxes(tile.labels) if b.height * b.width >= 64][: args.boxes]
    sizes = [int(b) for b in args.batches.split(",")]
    best: dict[str, float] = {}
    for g in range(0, len(boxes), args.group):
        group = boxes[g : g + args.group]
        runs = {"one at a time": lambda: one_at_a_time(seg, tile.image, group, inf, g)}
        runs.update({f"batched {b}": (lambda b=b: batched(seg, tile.image, group, inf, g, b)) for b in sizes})
        runs.update({f"sampler alone, {b} per call": (lambda b=b: network_alone(seg, tile.image, group, inf, g, b))
                     for b in [1, *sizes]})
        for name, fn in runs.items():
            t = fn()
            best[name] = best.get(name, 0.0) + t
            print(f"boxes {g}-{g + len(group)}: {name}: {t:.1f} s", flush=True)
    base = best["one at a time"]
    rows = [{"mode": k, "seconds": round(v, 2), "objects_per_s": round(len(boxes) / v, 3), "speedup": round(base / v, 2)} for k, v in best.items()]
    if not args.no_docs:
        write_docs(rows, args, len(boxes), seg, inf)
    return 0


def write_docs(rows, args, n, seg, inf) -> None:
    lines = [
        "# Batched prompts: throughput",
        "",
        f"Written by `benchmarks/bench_predict_throughput.py --boxes {args.boxes} --generations {args.generations} "
        f"--steps {args.steps} --batches {args.batches} --group {args.group} --out {args.out}"
        + (f" --chunk-size {args.chunk_size}" if args.chunk_size else "") + "`.",
        f"{n} boxes on a 2048 x 2048 synthetic H&E tile, bundled model ({seg.input_size} px input), "
        f"G = {inf.generations} generations, {inf.steps} DDIM steps, chunk size {inf.chunk_size}, "
        f"{args.threads} torch threads, {platform.machine()}, torch {torch.__version__}. Groups of "
        f"{args.group} boxes are timed in every mode back to back and summed, so drifting load from "
        "other work on the 2 cores hits all modes alike; compare the ratios, not the absolute "
        f"times. Load average {os.getloadavg()[0]:.1f} when the table was written. Batches share "
        "only per-call overheads: the image encoder G(I) runs once per prompt and the denoiser once "
        "per generation and step in every mode, so on a CPU that the network keeps busy batches "
        "gain little.",
        "",
        "| mode | seconds | objects/s | speed-up vs one at a time |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['mode']} | {r['seconds']} | {r['objects_per_s']} | {r['speedup']}x |" for r in rows]
    best = max(r["speedup"] for r in rows if not r["mode"].startswith("sampler alone"))
    ceiling = max(r["speedup"] for r in rows if r["mode"].startswith("sampler alone"))
    share = 1 / min(r["speedup"] for r in rows if r["mode"].startswith("sampler alone, 1 "))
    verdict = "reached" if best >= 3 else "NOT reached"
    lines += [
        "",
        "The *sampler alone* rows time only the network's work for the same prompts (G(I) and the "
        "denoiser through the model's own sampler, inputs made before the clock starts, no "
        "summary or paste-back): no batched mode can be faster than its best row. "
        f"The sampler is {share:.0%} of one-at-a-time time with one prompt per call, and the "
        f"ceiling of any batching here is **{ceiling}x**.",
        "",
        f"The 3x target (set for 100 boxes; {n} boxes here) is **{verdict}** on this CPU (best {best}x).",
    ]
    if best < 3:
        lines += [
            "On a CPU one prompt already sends its G generations through the network as one batch, "
            "and the image encoder G(I) runs once per prompt either way; batching prompts only "
            "enlarges the network batch (up to the chunk size), which a 2-core CPU turns into little "
            "extra throughput. Batching pays on a GPU, where a batch of 8 images leaves most of the "
            "device idle.",
        ]
    atomic_write(DOCS / f"{args.out}.md", "\n".join(lines) + "\n")
    atomic_write(DOCS / f"{args.out}.json", json.dumps({"args": vars(args), "boxes": n, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
