"""``segdiff-train``: train SegDiff on your data or the synthetic nuclei generator.

    segdiff-train --preset cpu-small --out runs/nuclei                   # synthetic nuclei
    segdiff-train --config my.toml --out runs/mine --train.steps 20000   # file + overrides
    segdiff-train --out runs/nuclei --resume                             # continue a run
    segdiff-train --init-from model.pt --data.source instances --data.root exported/ --out runs/ft
    torchrun --nproc_per_node 2 -m segdiff_core.training.cli --out runs/ddp   # several processes

Every ``--section.key`` flag is also a key of the TOML/JSON config file (``[train]`` ``steps = 5000``).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from segdiff_core.checkpoint import CheckpointError, ModelFile, read_model_file
from segdiff_core.config import ConfigError
from segdiff_core.device import device_arg
from segdiff_core.presets import PRESETS
from segdiff_core.training.config import RunConfig, add_config_flags, load_config_file, merge_run_config


DEFAULT_PRESET = "cpu-small"
RUN_LOCK = "train.lock"
"""Lock file in ``--out`` while a run writes there (holds the main process's id)."""

#: What a run started with ``--init-from`` may change in the checkpoint's config (flag or file).
WARM_START_KEYS = ("model.box_channel", "model.self_condition", "diffusion.prediction", "diffusion.noise_shift")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="segdiff-train",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, logs, plot)")
    p.add_argument("--preset", choices=sorted(PRESETS), help=f"starting configuration (default {DEFAULT_PRESET}; --resume: the run's)")
    p.add_argument("--config", type=Path, help="TOML or JSON file with [model], [train], [data], ... sections")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt (exactly where it stopped) with the settings in OUT/run.json; a config file or flags change only what they name. Without --resume, an OUT holding a run is refused")
    p.add_argument("--init-from", type=Path, help="fine-tune: start from this model file's weights and config")
    p.add_argument("--device", type=device_arg, default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to OUT/metrics.jsonl)")
    p.add_argument("--print-config", action="store_true", help="print the merged configuration as JSON and exit")
    add_config_flags(p)
    return p


def resolve_run(args: argparse.Namespace, init: ModelFile | None = None) -> RunConfig:
    """The run's settings: preset < config file < flags; with ``init`` (the ``--init-from``
    file, read once by the caller) its network, diffusion and preprocessing."""
    flags = {k: v for k, v in vars(args).items() if "." in k}
    file_values = load_config_file(args.config) if args.config else None
    saved = args.out / "run.json"
    if args.resume and saved.exists():
        # the run's own settings, changed only where the file or the flags say so
        import json

        run = json.loads(saved.read_text())
        return merge_run_config(args.preset or run.get("preset"), file_values, flags, saved=run)
    if args.init_from is not None:
        # Fine-tuning keeps the checkpoint's network, diffusion and preprocessing ...
        base = (init or read_model_file(args.init_from)).config.to_dict()
        conflicts = [k for k in flags if k.split(".")[0] in ("model", "diffusion") and k not in WARM_START_KEYS]
        if conflicts:
            raise ConfigError(f"--init-from keeps the checkpoint's network; remove {conflicts}")
        merged = merge_run_config(args.preset or DEFAULT_PRESET, file_values, flags)
        d = merged.to_dict()
        for section in ("model", "diffusion", "preprocess"):
            d[section] = base[section]
        # ... except for the settings a warm start can change (new input channels start at zero
        # weight; the prediction target and noise schedule change no weight's shape).
        for key in WARM_START_KEYS:
            section, name = key.split(".")
            wanted = flags.get(key, ((file_values or {}).get(section) or {}).get(name))
            if wanted is not None:
                d[section] = d[section] | {name: wanted}
        d["inference"] = base["inference"] | {k.split(".")[1]: v for k, v in flags.items() if k.startswith("inference.")}
        return RunConfig.from_dict(d)
    return merge_run_config(args.preset or DEFAULT_PRESET, file_values, flags)


class _CtrlC:
    """SIGINT during training: the first stops the run after the current step with a
    checkpoint (``Trainer.fit``'s ``should_stop``), a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_CtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("segdiff-train: interrupted; stopping after this step with a checkpoint (Ctrl-C again: stop now)",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        init = read_model_file(args.init_from) if args.init_from is not None else None
        run = resolve_run(args, init)
    except (ConfigError, CheckpointError, ValueError) as exc:
        print(f"segdiff-train: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        import json

        print(json.dumps(run.to_dict(), indent=2))
        return 0

    try:
        lock = _claim_out(args)
    except (ConfigError, OSError) as exc:
        print(f"segdiff-train: {exc}", file=sys.stderr)
        return 2
    try:
        return _train(args, run, init)
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)


def _claim_out(args: argparse.Namespace) -> Path | None:
    """Check ``--out`` before any work and lock it (on the main process) for this run; returns
    the lock file. A finished run is not overwritten, and two runs never write one folder."""
    import os

    from segdiff_core.checkpoint import LockHeldError, check_writable, take_pid_lock

    kept = [n for n in ("state.pt", "last.pt", "best.pt") if (args.out / n).exists()]
    if kept and not args.resume:  # a new run would overwrite them and drop the run's log
        raise ConfigError(f"{args.out} holds a training run ({', '.join(kept)}); --resume continues it, "
                          "or choose another --out to start a new one")
    check_writable(args.out)  # a file in the way, or no permission: say so now, not mid-run
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    try:
        return take_pid_lock(args.out / RUN_LOCK)
    except LockHeldError as exc:
        raise ConfigError(
            f"another segdiff-train (process {exc.pid or 'starting'}) is writing to {args.out}; wait for it or "
            f"choose another --out (delete {exc.path} if no such run exists)"
        ) from None


def _train(args: argparse.Namespace, run: RunConfig, init: ModelFile | None) -> int:
    from segdiff_core.training.distributed import init_distributed, shutdown
    from segdiff_core.training.sources import build_sources
    from segdiff_core.training.trainer import Trainer, TrainingError

    ctx = init_distributed(args.device)
    code = 1  # until the run has finished: an unexpected exception skips the barrier too
    try:
        train_src, val_src, desc = build_sources(run.data)
        trainer = Trainer(
            run, args.out, train_src, val_src, ctx=ctx, resume=args.resume, init_from=init,
            progress=not args.no_progress, describe_data=desc,
        )
        if ctx.is_main:
            n = sum(p.numel() for p in trainer.model.parameters())
            print(f"segdiff-train: {n / 1e6:.2f}M parameters on {ctx.device} x{ctx.world_size}; data: {desc}", flush=True)
        with _CtrlC() as ctrl_c:
            result = trainer.fit(should_stop=lambda: ctrl_c.requested)
        if trainer.stop_reason == "cancelled":
            if ctx.is_main:
                print(f"segdiff-train: stopped at step {result.steps}, saved in {trainer.state_path}; "
                      f"--out {args.out} --resume continues exactly", file=sys.stderr, flush=True)
            return 130  # the finally below still shuts the process group down
        if ctx.is_main:
            best = f", best validation IoU {result.best_iou:.4f} ({result.best_model})" if result.best_iou is not None else ""
            print(f"segdiff-train: done at step {result.steps}; model {result.last_model}{best}", flush=True)
        code = 0
    except (ConfigError, CheckpointError, TrainingError, ValueError, FileNotFoundError) as exc:
        print(f"segdiff-train: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"segdiff-train: stopped at once; {args.out / 'state.pt'} holds the last checkpoint, "
              "--resume continues from it", file=sys.stderr)
        code = 130
    finally:
        shutdown(ctx, barrier=code == 0)  # after a failure other ranks may never reach a barrier
    return code


if __name__ == "__main__":
    sys.exit(main())
