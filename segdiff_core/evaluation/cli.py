"""``segdiff-eval``: score a SegDiff checkpoint (and a classical baseline) with the paper's protocols.

    segdiff-eval model.pt                                     # synthetic held-out set, expansion crops
    segdiff-eval model.pt --protocol tight --generations 1,4,8 --steps 10,25 --json eval.json
    segdiff-eval model.pt --data.source monuseg --data.root MoNuSeg/test --protocol windows
    segdiff-eval runs/mine/best.pt --split-only-val --n 200   # the run's own held-out split

Protocols (paper section 5)
  tight      the prompt is the tight box of each ground-truth object and the crop is that box
  expansion  the crop is 15 % larger than the box (--margin)
  windows    the whole image is resized to --work-size (default twice the model size), cut into
             model-size windows (--stride), stitched, and compared with the full foreground
             mask (for 'semantic' models; the data are read with --data.task semantic)
  Crops are resampled to the model size; predictions are pasted back bilinearly onto the
  crop's pixels in the original image and scored there against the ground truth.
  The default protocol is 'windows' for models trained on the semantic task, else 'expansion'.

Data (--data.* flags, shared with segdiff-train)
  Defaults come from the checkpoint's training data settings, then the flags. The synthetic
  source evaluates a fixed held-out set drawn from its own seed stream (--eval-seed), --n
  prompts per style family, every family (including the held-out 'ihc') unless --data.styles
  is given; results are broken down by style. Dataset sources evaluate every sample (or a
  fixed random subset of --n), broken down by class; --split-only-val restricts them to the
  validation split that training held out (--data.val_fraction, --data.val_seed).

Output
  One table row per (generations, steps) combination and one for the baseline, on the same
  samples: IoU, F1, WCov, BoundF (percent), calibration score (lower is better), uncertainty
  AUROC (std over generations vs. wrong pixels) and milliseconds per prompt. --json writes
  everything: settings, sample counts, per-style/per-class results, std across samples,
  per-sample scores and timing.

Exit codes: 0 success; 1 data or evaluation problem (no samples, unreadable dataset);
2 bad command line, configuration or checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segdiff_core import __version__
from segdiff_core.checkpoint import CheckpointError, atomic_write, check_writable
from segdiff_core.config import SAMPLERS, ConfigError
from segdiff_core.data.crops import PAPER_MARGIN
from segdiff_core.evaluation.baselines import BASELINES, otsu_method
from segdiff_core.evaluation.runner import (
    DEFAULT_EVAL_SEED,
    PROTOCOLS,
    EvalItem,
    EvalProtocol,
    EvaluationError,
    Method,
    MethodResult,
    dataset_items,
    evaluate,
    format_table,
    crop_items,
    segdiff_method,
    synthetic_items,
    to_jsonable,
)
from segdiff_core.training.config import DataConfig, add_config_flags
from segdiff_core.validation import int_at_least

PROG = "segdiff-eval"
DEFAULT_SYNTHETIC_N = 32
"""Prompts (or tiles, windows protocol) per style family of the synthetic set."""


def _int_list(text: str) -> tuple[int, ...]:
    """argparse type: ``"1,4,8"`` -> (1, 4, 8), every value >= 1."""
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return tuple(dict.fromkeys(values))


_seed = int_at_least(0)
"""argparse type: a seed (numpy takes integers >= 0)."""


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog=PROG,
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="model file (.pt), or 'bundled' for the model shipped with the package")
    p.add_argument("--protocol", choices=PROTOCOLS, help="tight, expansion or windows (default: from the model's task)")
    p.add_argument("--generations", type=_int_list, help="comma-separated ensemble sizes (default: the model's setting)")
    p.add_argument("--steps", type=_int_list, help="comma-separated denoising step counts (default: the model's setting)")
    p.add_argument("--sampler", choices=SAMPLERS, help="ddim or ddpm (default: the model's setting)")
    p.add_argument("--n", type=int_at_least(1), help=f"synthetic: prompts per style (default {DEFAULT_SYNTHETIC_N}); datasets: a fixed random subset of N samples (default all)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write every result and setting to this JSON file")
    p.add_argument("--baseline", choices=BASELINES, default="otsu", help="classical baseline scored on the same samples (default otsu)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    p.add_argument("--seed", type=_seed, default=0, help="sampling seed (default 0)")
    p.add_argument("--eval-seed", type=_seed, default=DEFAULT_EVAL_SEED, help=f"seed of the synthetic held-out set and of --n subsets (default {DEFAULT_EVAL_SEED})")
    p.add_argument("--split-only-val", action="store_true", help="datasets: evaluate only the validation split held out by training (no effect on synthetic data, which is always held out)")
    p.add_argument("--margin", type=float, help=f"expansion protocol: crop margin (default {PAPER_MARGIN:g})")
    p.add_argument("--work-size", type=int_at_least(1), help="windows protocol: working resolution (default twice the model size)")
    p.add_argument("--stride", type=int_at_least(1), help="windows protocol: window stride (default the window size)")
    p.add_argument("--batch-images", type=int_at_least(1), default=8, help="prompts per network batch (default 8)")
    p.add_argument("--threads", type=int_at_least(1), help="CPU threads for torch (default: torch's choice; use 1 on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(p, sections=("data",))
    return p


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


def _data_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("data.")}


def _checkpoint_data(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The DataConfig fields recorded by segdiff-train in the model file (may be empty)."""
    data = metadata.get("data")
    if not isinstance(data, Mapping):
        return {}
    known = {f.name for f in dataclasses.fields(DataConfig)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}


def resolve_protocol(args: argparse.Namespace, trained_task: str | None, flag_task: str | None) -> EvalProtocol:
    """--protocol, or 'windows' for semantic models/data and 'expansion' otherwise."""
    name = args.protocol
    if name is None:
        name = "windows" if (flag_task or trained_task) == "semantic" else "expansion"
    # an option of another protocol would be ignored without a word
    unused = [flag for flag, value, owner in (
        ("--margin", args.margin, "expansion"), ("--work-size", args.work_size, "windows"), ("--stride", args.stride, "windows"),
    ) if value is not None and name != owner]
    if unused:
        raise ConfigError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to the {name} protocol"
                          + ("" if args.protocol else " (chosen from the model's task; set --protocol)"))
    margin = PAPER_MARGIN if args.margin is None else args.margin
    return EvalProtocol(name, margin=margin, work_size=args.work_size, stride=args.stride)


def resolve_data(
    flags: Mapping[str, Any], checkpoint_data: Mapping[str, Any], protocol: EvalProtocol
) -> DataConfig:
    """Checkpoint's data settings < flags; the task follows the protocol; synthetic data
    covers every style family unless --data.styles is given."""
    from segdiff_core.data.synthetic import STYLES

    task = "prompt" if protocol.is_prompt else "semantic"
    if "task" in flags and flags["task"] != task:
        raise ConfigError(
            f"--protocol {protocol.name} evaluates the {task!r} task but --data.task is "
            f"{flags['task']!r}; use --protocol {'windows' if flags['task'] == 'semantic' else 'expansion'} "
            f"or --data.task {task}"
        )
    values: dict[str, Any] = {**checkpoint_data, **flags, "task": task}
    if values.get("source", "synthetic") == "synthetic":
        values.pop("root", None)
        if "styles" not in flags:
            values["styles"] = STYLES
    return DataConfig(**values)


def _heldout_styles(styles: Sequence[str], checkpoint_data: Mapping[str, Any]) -> list[str]:
    from segdiff_core.data.synthetic import HELDOUT_STYLES

    trained = checkpoint_data.get("styles") if checkpoint_data.get("source", "synthetic") == "synthetic" else None
    if trained:
        return [s for s in styles if s not in trained]
    return [s for s in styles if s in HELDOUT_STYLES]


def load_items(
    data: DataConfig, protocol: EvalProtocol, n: int | None, eval_seed: int, split_only_val: bool
) -> tuple[list[EvalItem], str, int]:
    """(items, description, number of skipped samples) for the data settings."""
    if data.source == "synthetic":
        per_style = n or DEFAULT_SYNTHETIC_N
        items = synthetic_items(
            data.styles, per_style, tile_size=data.tile_size, min_area=data.min_area,
            objects_per_tile=data.objects_per_tile, task=data.task, eval_seed=eval_seed,
        )
        unit = "prompts" if protocol.is_prompt else "tiles"
        desc = (
            f"synthetic held-out set (eval seed {eval_seed}): {per_style} {unit} per style "
            f"({', '.join(dict.fromkeys(data.styles))}), {data.tile_size}px tiles"
        )
        return items, desc, 0

    from segdiff_core.data.readers import split_dataset
    from segdiff_core.training.sources import open_dataset

    dataset = open_dataset(data)
    desc = f"{data.source} dataset at {data.root} ({data.task})"
    if split_only_val:
        if data.val_fraction == 0:
            raise EvaluationError("--split-only-val needs --data.val_fraction > 0 (the share training held out)")
        _, dataset = split_dataset(dataset, data.val_fraction, data.val_seed, group_by_image=True)
        desc += f", validation split (fraction {data.val_fraction:g}, seed {data.val_seed})"
    items, skipped = dataset_items(dataset, n=n, seed=eval_seed, require_box=protocol.is_prompt)
    if n is not None and n < len(dataset):  # --n at or above the sample count takes every sample
        desc += f", random subset of {n} (seed {eval_seed})"
    return items, desc, skipped


def build_methods(
    segmenter: Any, args: argparse.Namespace, protocol: EvalProtocol
) -> list[Method]:
    """SegDiff for every (generations, steps) pair, then the baseline."""
    gens = args.generations or (segmenter.inference.generations,)
    steps = args.steps or (segmenter.inference.steps,)
    methods = [
        segdiff_method(segmenter, g, s, args.sampler, seed=args.seed, batch_images=args.batch_images)
        for g, s in itertools.product(gens, steps)
    ]
    if args.baseline == "otsu":
        methods.append(otsu_method(prompt=protocol.is_prompt))
    return methods


def build_report(
    results: Sequence[MethodResult],
    *,
    args: argparse.Namespace,
    segmenter: Any,
    protocol: EvalProtocol,
    data: DataConfig,
    data_desc: str,
    n_items: int,
    n_skipped: int,
    heldout: Sequence[str],
    prepare_seconds: float,
    total_seconds: float,
) -> dict[str, Any]:
    """Everything about a run as a JSON-safe dict."""
    meta = segmenter.metadata
    group_counts: dict[str, int] = {}
    for rec in results[0].per_sample if results else []:
        if rec["group"] is not None:
            group_counts[rec["group"]] = group_counts.get(rec["group"], 0) + 1
    report = {
        "tool": PROG,
        "version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": {
            "path": str(segmenter.source),
            "input_size": segmenter.input_size,
            "in_channels": segmenter.in_channels,
            "trained_on": meta.get("trained_on"),
            "training_steps": meta.get("steps"),
            "inference": segmenter.inference.to_dict(),
        },
        "device": str(segmenter.device),
        "protocol": {**protocol.to_dict(), "description": protocol.describe()},
        "data": {
            "config": dataclasses.asdict(data),
            "description": data_desc,
            "split": "validation" if args.split_only_val and data.source != "synthetic" else "all",
            "n_samples": n_items,
            "n_skipped_empty": n_skipped,
            "group_counts": group_counts,
            "heldout_styles": list(heldout) if data.source == "synthetic" else [],
        },
        "settings": {
            "generations": list(args.generations or (segmenter.inference.generations,)),
            "steps": list(args.steps or (segmenter.inference.steps,)),
            "sampler": args.sampler or segmenter.inference.sampler,
            "seed": args.seed,
            "eval_seed": args.eval_seed,
            "n": args.n,
            "baseline": args.baseline,
            "batch_images": args.batch_images,
        },
        "timing": {"prepare_seconds": prepare_seconds, "total_seconds": total_seconds},
        "results": [r.to_dict() for r in results],
    }
    return to_jsonable(report)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def _check_json_target(path: Path, checkpoint: str) -> None:
    """ConfigError unless a file can be created at ``path`` (its folder is created if needed)
    without replacing the model file being evaluated."""
    if path.is_dir():
        raise ConfigError(f"--json {path} is a folder; give a file name")
    if path.exists() and Path(checkpoint).exists() and path.resolve() == Path(checkpoint).resolve():
        raise ConfigError(f"--json {path} is the model file being evaluated; give another file name")
    try:
        check_writable(path.parent)
    except OSError as exc:
        raise ConfigError(f"--json {path}: {exc}") from exc


def _fail(message: object, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _print_header(segmenter: Any, protocol: EvalProtocol, data_line: str, heldout: Sequence[str]) -> None:
    trained = segmenter.metadata.get("trained_on")
    print(f"{PROG}: model {segmenter.source} ({segmenter.input_size}px input"
          f"{', trained on ' + str(trained) if trained else ''}) on {segmenter.device}")
    print(f"data: {data_line}")
    if heldout:
        print(f"held out from training: {', '.join(heldout)}")
    print(f"protocol: {protocol.describe()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``segdiff-eval``; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the problem (or --help)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    progress = not args.no_progress
    started = time.perf_counter()

    import torch

    from segdiff_core.segmenter import Segmenter

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    flags = _data_flags(args)
    try:
        if args.json is not None:  # found out now, not after an evaluation of an hour
            _check_json_target(args.json, args.checkpoint)
        path: Any = args.checkpoint
        if path == "bundled":
            from segdiff_core.bundled import bundled_model_path

            path = bundled_model_path()
        segmenter = Segmenter.from_checkpoint(path, device=args.device)
        ckpt_data = _checkpoint_data(segmenter.metadata)
        protocol = resolve_protocol(args, ckpt_data.get("task"), flags.get("task"))
        data = resolve_data(flags, ckpt_data, protocol)
        methods = build_methods(segmenter, args, protocol)
    except (CheckpointError, ConfigError, EvaluationError, FileNotFoundError, ValueError) as exc:
        return _fail(exc, 2)

    trained_task = ckpt_data.get("task")
    wanted_task = "prompt" if protocol.is_prompt else "semantic"
    if trained_task is not None and trained_task != wanted_task:
        print(f"{PROG}: note: this model was trained for the {trained_task!r} task; the {protocol.name} "
              f"protocol evaluates the {wanted_task!r} task", file=sys.stderr)

    try:
        items, data_desc, n_skipped = load_items(data, protocol, args.n, args.eval_seed, args.split_only_val)
        t0 = time.perf_counter()
        prepared = crop_items(items, protocol, segmenter.input_size, progress=progress)
        prepare_seconds = time.perf_counter() - t0
    except (EvaluationError, ValueError, OSError) as exc:  # DatasetError is a ValueError
        return _fail(exc, 1)
    heldout = _heldout_styles(data.styles, ckpt_data) if data.source == "synthetic" else []

    _print_header(segmenter, protocol, f"{data_desc}; {len(prepared)} {'prompts' if protocol.is_prompt else 'images'}"
                  + (f" ({n_skipped} samples without an object skipped)" if n_skipped else ""), heldout)

    try:
        results = evaluate(prepared, methods, chunk_size=args.batch_images, progress=progress)
    except EvaluationError as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130

    group_title = "style" if data.source == "synthetic" else "class"
    print()
    print(format_table(results, group_title=group_title, unit="prompt" if protocol.is_prompt else "image"))
    print("\nIoU, F1, WCov, BoundF in percent; Calib = the paper's calibration score (lower is better); "
          "U-AUROC = std over generations as a detector of wrong pixels.")

    if args.json is not None:
        report = build_report(
            results, args=args, segmenter=segmenter, protocol=protocol, data=data, data_desc=data_desc,
            n_items=len(prepared), n_skipped=n_skipped, heldout=heldout,
            prepare_seconds=prepare_seconds, total_seconds=time.perf_counter() - started,
        )
        try:
            atomic_write(args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            return _fail(f"cannot write {args.json}: {exc}", 1)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
