"""Choose the automatic mode's proposal settings on tuning tiles of the training families.

The evaluation (``benchmarks/bench_predict_quality.py``) uses its own seed and the held-out
``ihc`` family; this script draws tiles from another seed (``--seed``, default 777) of the
*training* families only and refuses the held-out ones, so that the settings are never
chosen on evaluation tiles. Each variant is a JSON object of :class:`ProposalSettings`
fields; for every family it prints the instance F1 at IoU 0.5 and the matched mean IoU of
the classical split of the same proposals (``C``) and of the automatic mode (``S``).

    python benchmarks/tune_predict_proposals.py --n 4 \\
        '{"foreground": "stain", "h": 0.5}' '{"foreground": "stain", "h": 0.5, "box_scale": 1.15}'
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from segdiff_core.bundled import bundled_model_path
from segdiff_core.data.synthetic import HELDOUT_STYLES, TRAIN_STYLES, iter_tiles
from segdiff_core.proposals import ProposalSettings, find_objects, foreground_mask, match_instances, split_instances
from segdiff_core.segmenter import Segmenter


def pooled(matches: list[dict]) -> str:
    """``F1/mIoU`` pooled over tiles (TP, FP, FN summed; mIoU averaged over tiles with a match)."""
    tp, fp, fn = (sum(m[k] for m in matches) for k in ("tp", "fp", "fn"))
    ious = [m["mean_iou"] for m in matches if m["tp"]]
    return f"{2 * tp / max(1, 2 * tp + fp + fn):.3f}/{np.mean(ious) if ious else float('nan'):.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="JSON objects of ProposalSettings fields")
    ap.add_argument("--n", type=int, default=4, help="tiles per family")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--styles", default=",".join(TRAIN_STYLES))
    args = ap.parse_args(argv)
    styles = args.styles.split(",")
    if set(styles) & set(HELDOUT_STYLES):
        ap.error(f"{', '.join(HELDOUT_STYLES)} is held out: never tune on it")
    seg = Segmenter.from_checkpoint(bundled_model_path(), device="cpu")
    tiles = {st: list(iter_tiles(st, n=args.n, size=256, seed=args.seed)) for st in styles}
    for text in args.variants:
        s = ProposalSettings(**json.loads(text))
        out, t0 = [], time.perf_counter()
        for st, ts in tiles.items():
            classical = [match_instances(split_instances(foreground_mask(seg, t.image, s), s.h, s.smooth, s.min_area), t.labels) for t in ts]
            auto = [match_instances(find_objects(seg, t.image, s).labels, t.labels) for t in ts]
            out.append(f"{st} C {pooled(classical)} S {pooled(auto)}")
        print(text, " | ".join(out), f"{time.perf_counter() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
