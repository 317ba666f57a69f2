"""Re-thresholding N committed objects from their stored probability in a napari Labels layer.

Lays out N synthetic nuclei (shapes from the synthetic generator, probabilities = their masks
blurred, as a SegDiff ensemble mean looks) on a grid, commits them at threshold 0.5 through
``Labels.data_setitem`` and stores each probability crop (:mod:`segdiff_core.rethreshold`).
Then times what the plugin does when the threshold changes: plan the new masks
(:func:`plan_rethreshold`) and write them in one ``block_history`` (one undo step). Checks that
the result equals a fresh threshold of the stored probabilities and that one undo restores
the labels.

    python benchmarks/bench_rethreshold.py                 # 200 objects, median of 5
    python benchmarks/bench_rethreshold.py --objects 500
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np
from scipy import ndimage

CROP = 48


def _nuclei_probabilities(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` (CROP, CROP) float32 probabilities of synthetic nuclei, centred."""
    from segdiff_core.data.synthetic import generate_tile

    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < n:
        labels = generate_tile("fluorescence", 256, rng).labels
        for obj in ndimage.find_objects(labels):
            if obj is None or len(out) >= n:
                continue
            mask = labels[obj] > 0
            if mask.sum() < 40 or max(mask.shape) >= CROP - 8:
                continue
            canvas = np.zeros((CROP, CROP), np.float32)
            r0, c0 = (CROP - mask.shape[0]) // 2, (CROP - mask.shape[1]) // 2
            canvas[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]] = mask
            out.append(np.clip(ndimage.gaussian_filter(canvas, 2.0) * 1.1, 0, 1))
    return out


def _setup(n: int) -> tuple[Any, Any]:
    from napari.layers import Labels

    from segdiff_core.rethreshold import ProbabilityStore, StoredObject, threshold_mask

    probs = _nuclei_probabilities(n)
    side = int(np.ceil(np.sqrt(n)))
    step = CROP - 6  # neighbouring crops overlap by a few pixels, as touching nuclei do
    layer = Labels(np.zeros((side * step + CROP, side * step + CROP), np.int32))
    store = ProbabilityStore()
    with layer.block_history():
        for k, prob in enumerate(probs):
            r, c = (k // side) * step, (k % side) * step
            region = (slice(r, r + CROP), slice(c, c + CROP))
            written = threshold_mask(prob, 0.5) & (layer.data[region] == 0)
            rr, cc = np.nonzero(written)
            layer.data_setitem((rr + r, cc + c), k + 1, refresh=False)
            store.add(StoredObject.from_commit(k + 1, (), region, prob, written, 0.5))
    layer.refresh()
    return layer, store


def _once(n: int, new: float) -> dict[str, Any]:
    from segdiff_core.rethreshold import plan_rethreshold

    layer, store = _setup(n)
    before = np.array(layer.data, copy=True)
    t0 = time.perf_counter()
    plan = plan_rethreshold(store, layer.data, new)
    t1 = time.perf_counter()
    with layer.block_history():
        for index, value in plan.writes():
            layer.data_setitem(index, value, refresh=False)
    layer.refresh()
    plan.commit(store)
    t2 = time.perf_counter()
    fresh = all(np.array_equal(layer.data[o.region] == o.label, c.new_mask) for o, c in zip(store, plan.changes))
    changed = not np.array_equal(before, layer.data)
    layer.undo()
    return {"plan": t1 - t0, "write": t2 - t1, "fresh": fresh and changed, "undo": np.array_equal(before, layer.data),
            "bytes": store.nbytes, "area": float(np.mean([(before == o.label).sum() for o in store])), "shape": before.shape,
            "changed": len(plan.changed)}


def bench_rethreshold(objects: int = 200, repeats: int = 5, old: float = 0.5, new: float = 0.3) -> dict[str, Any]:
    """Median time to re-threshold ``objects`` committed objects, plus the checks."""
    runs = [_once(objects, new) for _ in range(repeats)]
    total = [r["plan"] + r["write"] for r in runs]
    med = int(np.argsort(total)[len(total) // 2])
    return {
        "objects": objects, "repeats": repeats, "from": old, "to": new, "crop": CROP, "shape": list(runs[0]["shape"]),
        "seconds": statistics.median(total), "seconds_min": min(total), "seconds_max": max(total),
        "plan_seconds": runs[med]["plan"], "write_seconds": runs[med]["write"], "changed": runs[0]["changed"],
        "equals_fresh_threshold": all(r["fresh"] for r in runs), "undo_restores": all(r["undo"] for r in runs),
        "store_bytes": runs[0]["bytes"], "mean_area": runs[0]["area"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    r = bench_rethreshold(args.objects, args.repeats)
    print(f"{r['objects']} objects ({r['changed']} changed), {r['from']} -> {r['to']}: median {r['seconds'] * 1000:.0f} ms "
          f"(plan {r['plan_seconds'] * 1000:.0f} ms + write {r['write_seconds'] * 1000:.0f} ms; min {r['seconds_min'] * 1000:.0f}, "
          f"max {r['seconds_max'] * 1000:.0f} ms over {r['repeats']}); equals a fresh threshold: {r['equals_fresh_threshold']}; "
          f"one undo restores: {r['undo_restores']}; store {r['store_bytes'] / 2**20:.2f} MiB")
    return 0 if r["equals_fresh_threshold"] and r["undo_restores"] else 1


if __name__ == "__main__":
    sys.exit(main())
