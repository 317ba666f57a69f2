"""Train the plain U-Net baseline of ``bench_box_robustness.py`` (issue 11, item 3).

The same data stream and crops as the bundled model (``configs/nuclei-cpu.toml``: synthetic
widefield fluorescence, H&E and confocal families, IHC held out; box-robust crops with margins
0 .. 0.6, shifted and rescaled boxes), no prompt-box channel, a width chosen so the parameter
count matches the bundled SegDiff model's, binary cross-entropy plus soft Dice
(:func:`segdiff_core.baselines.unet.train_unet`).

    python benchmarks/train_unet_box.py --out runs/unet-box/unet.pt   # 600 steps, ~1 h on 2 shared cores

The file is not committed (the repository ships one model file, the bundled one);
``bench_box_robustness.py --unet PATH`` records the SHA-256 of the file it measured.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segdiff_core.baselines.unet import UNetConfig, config_matching_parameters, train_unet  # noqa: E402
from segdiff_core.bundled import bundled_model_path  # noqa: E402
from segdiff_core.checkpoint import read_model_file  # noqa: E402
from segdiff_core.training.config import load_config_file, merge_run_config  # noqa: E402
from segdiff_core.training.sources import build_sources  # noqa: E402

RECIPE = {"steps": 600, "lr": 5e-4, "warmup_steps": 50, "ema_decay": 0.995}
"""What differs from ``configs/nuclei-cpu.toml``'s ``[train]`` (a from-scratch run, not a warm start)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="model file to write (run state beside it, <stem>-run/)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "nuclei-cpu.toml")
    ap.add_argument("--steps", type=int, default=RECIPE["steps"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = merge_run_config("cpu-small", load_config_file(args.config), {})
    train = dataclasses.replace(run.train, **(RECIPE | {"steps": args.steps}), val_every=0)
    run = dataclasses.replace(run, segdiff=run.segdiff.with_model(box_channel=False), train=train)
    target = read_model_file(bundled_model_path()).build().num_parameters()
    m = run.segdiff.model
    cfg, n = config_matching_parameters(
        target, UNetConfig(image_size=m.image_size, in_channels=m.in_channels, channel_mult=m.channel_mult))
    print(f"U-Net with {n} parameters (bundled SegDiff model: {target})", flush=True)
    source, _, _ = build_sources(run.data)
    res = train_unet(run, cfg, source, args.out, log=print)
    print(f"done: {res.steps} steps, final loss {res.final_loss:.4f}, {res.seconds:.0f} s -> {res.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
