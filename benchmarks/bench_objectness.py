"""How the no-object rule (segdiff_core.objectness) splits nucleus boxes from background boxes.

Boxes around the first ``--nuclei`` nuclei (their label's bounding box) and ``--background``
20 px boxes at least 20 px from every nucleus of a synthetic fluorescence tile are segmented with
the bundled model (default settings, seed 0) and judged by ``assess_object``; prints the mask /
surroundings contrast d' of each box and how many of each kind were refused.

    python benchmarks/bench_objectness.py --nuclei 16 --background 8
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nuclei", type=int, default=16)
    ap.add_argument("--background", type=int, default=8)
    ap.add_argument("--seed", type=int, default=3, help="seed of the synthetic tile")
    args = ap.parse_args(argv)

    import torch
    from scipy import ndimage

    from segdiff_core.bundled import bundled_model_path
    from segdiff_core.data.boxes import Box
    from segdiff_core.data.crops import CropProtocol, prompt_crop
    from segdiff_core.data.synthetic import generate_tile
    from segdiff_core.objectness import DEFAULT_RULE, assess_object, separation
    from segdiff_core.segmenter import Segmenter

    torch.set_num_threads(1)
    seg = Segmenter.from_checkpoint(bundled_model_path(), device="cpu")
    tile = generate_tile("fluorescence", 256, args.seed)
    slices = [s for s in ndimage.find_objects(tile.labels) if s is not None][: args.nuclei]
    boxes = [("nucleus", Box(r.start, c.start, r.stop, c.stop)) for r, c in slices]
    far = np.argwhere(ndimage.distance_transform_edt(tile.labels == 0) > 20)
    rng = np.random.default_rng(0)
    for y, x in far[rng.choice(len(far), args.background, replace=False)]:
        boxes.append(("background", Box(y - 10, x - 10, y + 10, x + 10)))
    refused = {"nucleus": [], "background": []}
    for kind, box in boxes:
        patch, _ = prompt_crop(tile.image, box, seg.input_size, CropProtocol.expansion())
        res = seg.segment(patch, seed=0)
        reason = assess_object(patch, res.probability, res.std, res.threshold)
        refused[kind].append(reason is not None)
        spread = float(res.std[res.mask].mean()) if res.mask.any() else 0.0
        print(f"{kind:10s} d'={separation(patch, res.mask):5.2f} spread={spread:4.2f} {'refused: ' + reason if reason else 'kept'}")
    for kind, flags in refused.items():
        print(f"{kind}: {sum(flags)} of {len(flags)} refused ({DEFAULT_RULE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
