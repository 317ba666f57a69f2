"""Memory one box costs in the annotator, on lazy (dask) images of two or more sizes.

Each size runs in its own process: a headless napari viewer model (no Qt: the controller, engine
and layers are the plugin's real ones), a dask uint8 image of ``size x size`` built lazily from a
synthetic fluorescence tile (never materialised by the benchmark), an empty labels layer made by
the annotator itself (the one-time cost of annotating an image: 4 bytes per pixel), then ONE box
segmented with the bundled model through ``AnnotatorController`` exactly as the widget drives it.
A sampling thread reads the process's resident memory (``/proc/self/statm``) every 2 ms; the
cost of the box is its peak minus the memory before the box.

    python benchmarks/bench_annotator_memory.py --sizes 2000 8000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class Peak:
    """Samples the resident memory in a thread while active."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __enter__(self) -> "Peak":
        self.peak = rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def _tile():
    from segdiff_core.data.synthetic import generate_tile

    return generate_tile("fluorescence", 512, 3)


TILE = _tile()


def lazy_image(size: int):
    """A ``size x size`` uint8 dask array tiled with one synthetic fluorescence tile."""
    import dask.array as da

    tile = TILE.image.astype(np.uint8)
    chunk = 1024

    def block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        rr = np.arange(r0, r1) % 512
        cc = np.arange(c0, c1) % 512
        return tile[np.ix_(rr, cc)]

    return da.map_blocks(block, dtype=np.uint8, chunks=((chunk,) * (size // chunk) + ((size % chunk,) if size % chunk else ()),) * 2)


def one_size(size: int) -> dict:
    """Run in a child process: the memory of one box on a ``size`` image."""
    import torch
    from napari.components import ViewerModel

    from napari_segdiff._controller import AnnotatorController
    from napari_segdiff._engine import run_segmentation

    torch.set_num_threads(1)
    viewer = ViewerModel()
    image = viewer.add_image(lazy_image(size), name="big", contrast_limits=(0, 255))
    c = AnnotatorController(viewer)
    c.set_image_layer(image)
    c.update_settings(device="cpu", seed=0, skip_empty=False)  # measure a committed object
    prompts = c.ensure_prompts_layer()
    from scipy import ndimage

    base = (size // 2 // 512) * 512  # the same nucleus of the tile at every size
    areas = np.bincount(TILE.labels.ravel())[1:]
    label = int(np.argsort(areas)[len(areas) * 3 // 4])  # a typical, well visible nucleus
    rows, cols = ndimage.find_objects(TILE.labels)[label]
    y0, x0, y1, x1 = base + rows.start - 1, base + cols.start - 1, base + rows.stop, base + cols.stop
    prompts.add_rectangles(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float))
    before_labels = rss()
    c._labels_for(image)  # noqa: SLF001 (the labels layer the first Segment makes)
    labels_cost = rss() - before_labels
    # load the model once before measuring (a model costs the same for every image size)
    c.cache.get(c.model_path(), "cpu")
    before = rss()
    t0 = time.perf_counter()
    with Peak() as peak:
        request = c.prepare_run("newest")
        assert request is not None
        run = run_segmentation(request, c.cache)
        while True:
            try:
                c.handle_event(next(run))
            except StopIteration as stop:
                c.finish(stop.value)
                break
    seconds = time.perf_counter() - t0
    objects = int(np.max(c.labels_layer.data))
    return {
        "size": size,
        "box_peak_mb": (peak.peak - before) / 2**20,
        "labels_layer_mb": labels_cost / 2**20,
        "rss_before_box_mb": before / 2**20,
        "seconds": seconds,
        "objects": objects,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one_size(args.child)))
        return 0
    rows = []
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size)], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'image':>12} {'box peak MB':>12} {'labels layer MB':>16} {'s/box':>7} {'objects':>8}")
    for r in rows:
        print(f"{r['size']:>7} px^2 {r['box_peak_mb']:>12.1f} {r['labels_layer_mb']:>16.1f} {r['seconds']:>7.2f} {r['objects']:>8}")
    small, large = rows[0], rows[-1]
    area = (large["size"] / small["size"]) ** 2
    ratio = large["box_peak_mb"] / max(small["box_peak_mb"], 1e-9)
    print(f"box peak {large['size']} vs {small['size']}: x{ratio:.2f} for x{area:.0f} the pixels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
