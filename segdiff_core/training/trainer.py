"""The training loop (paper Alg. 2): uniform t, eps-MSE loss, AdamW, EMA, checkpoints.

The loss and the network come from an :class:`Objective` (default :class:`DiffusionObjective`,
SegDiff; :class:`segdiff_core.baselines.unet.UNetObjective` trains the U-Net baseline with the
same loop).

Files in the output folder (only the main process writes):

- ``state.pt``   training state (weights, EMA, optimizer, step, run config), atomic; ``--resume``
                 continues from it exactly;
- ``last.pt``    model file (EMA weights + config + metadata) at the last checkpoint;
- ``best.pt``    model file with the best validation IoU so far;
- ``metrics.jsonl`` one JSON object per logged step / validation;
- ``training.png``  loss and validation curves, written at the end.

Randomness is derived per step from ``(seed, step, rank)`` (data, t, noise and dropout), so
a resumed run repeats exactly what the uninterrupted run would have done.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from segdiff_core import __version__
from segdiff_core.checkpoint import (CheckpointError, ModelFile, atomic_save, atomic_write, read_model_file, safe_load,
                                     save_model)
from segdiff_core.config import ConfigError, SegDiffConfig
from segdiff_core.data.readers import Subset
from segdiff_core.diffusion.scheduler import DDPMScheduler
from segdiff_core.evaluation.runner import (EvalItem, EvalProtocol, Method, PreparedItem, dataset_items,
                                            crop_items, run_method, segdiff_method, synthetic_items)
from segdiff_core.model import SegDiffModel
from segdiff_core.segmenter import Segmenter
from segdiff_core.training.config import RunConfig
from segdiff_core.training.data import DatasetSource, PairBatches, SampleSource, SyntheticSource
from segdiff_core.training.distributed import DistContext, all_reduce_mean, any_flag, barrier, replicas_identical
from segdiff_core.training.ema import EMA

STATE_FORMAT = "segdiff-train-state"
STATE_VERSION = 1
VAL_BATCH = 8
"""Validation prompts per network batch (``segdiff-eval --batch-images``' default)."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, a state file that does not fit the run)."""


@dataclass
class TrainResult:
    steps: int
    last_model: Path | None
    best_model: Path | None
    best_iou: float | None
    final_loss: float | None


def _seed_for(seed: int, step: int, rank: int, stream: int) -> int:
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(stream), int(rank), int(step)))
    return int(ss.generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)


def _seeded(build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """``build()`` with the weight init seeded by ``seed``, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class Objective(Protocol):
    """What :class:`Trainer` optimises: a network, its loss and how validation scores it."""

    config: Any
    """Saved beside the weights (:func:`segdiff_core.checkpoint.save_model`)."""

    def build(self) -> torch.nn.Module:
        """A freshly initialised network."""

    def network(self, config: Any = None) -> dict[str, Any]:
        """The settings a resumed run must share (of ``config``, default this objective's)."""

    def loss(self, net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator,
             device: torch.device, autocast: Callable[[], Any]) -> torch.Tensor:
        """Scalar loss of a batch: images (B, C, S, S), masks (B, 1, S, S) in {-1, 1} on the CPU;
        random draws come from ``gen``; ``autocast()`` wraps the forward pass."""

    def method(self, model: torch.nn.Module, device: torch.device, train: Any) -> Method:
        """The evaluation :class:`~segdiff_core.evaluation.runner.Method` of ``model``."""


class DiffusionObjective:
    """SegDiff's objective (paper Alg. 2): ``t ~ U{0..T-1}``, ``eps ~ N(0, I)`` and the
    diffusion loss of Eq. 18 on the scheduler's training target."""

    def __init__(self, config: SegDiffConfig) -> None:
        self.config = config
        self.scheduler = DDPMScheduler(config.diffusion)

    def build(self) -> SegDiffModel:
        return SegDiffModel(self.config.model)

    def network(self, config: SegDiffConfig | None = None) -> dict[str, Any]:
        d = (config or self.config).to_dict()
        return {"model": d["model"], "diffusion": d["diffusion"]}

    def loss(self, net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator,
             device: torch.device, autocast: Callable[[], Any]) -> torch.Tensor:
        b = images.shape[0]
        t = self.scheduler.sample_timesteps(b, gen)  # t ~ Uniform({0..T-1})
        noise = torch.randn(masks.shape, generator=gen)  # eps ~ N(0, I)
        self_cond = torch.rand(b, generator=gen) < 0.5 if self.config.model.self_condition else None
        images, masks, t, noise = (v.to(device, non_blocking=True) for v in (images, masks, t, noise))
        x_t = self.scheduler.add_noise(masks, noise, t)  # sqrt(abar) x0 + sqrt(1 - abar) eps
        with autocast():
            x0_self = None
            if self_cond is not None:  # Analog Bits: half the batch sees a first, gradient-free x_0
                x0_self = self._self_condition(net, x_t, t, images, self_cond.to(device))
            out = net(x_t, t, images, x0_self) if x0_self is not None else net(x_t, t, images)
        return self.scheduler.loss(out, self.scheduler.training_target(masks, noise, t))  # Eq. 18

    def _self_condition(self, net: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, images: torch.Tensor,
                        use: torch.Tensor) -> torch.Tensor:
        """x_0 estimates (B, 1, S, S) for self-conditioning: the network's own (no gradient,
        clipped to [-1, 1] as in sampling) where ``use`` (B,) bool, zeros elsewhere."""
        with torch.no_grad():
            first = net(x_t, t, images, torch.zeros_like(x_t))
            x0 = self.scheduler.predict_x0(x_t, first.float(), t).clamp(-1.0, 1.0)
        return torch.where(use[:, None, None, None], x0, torch.zeros_like(x0))

    def method(self, model: torch.nn.Module, device: torch.device, train: Any) -> Method:
        segmenter = Segmenter(model, self.config, device=device)  # type: ignore[arg-type]
        return segdiff_method(segmenter, train.val_generations, train.val_steps, seed=train.seed, batch_images=VAL_BATCH)


def set_trainable(model: SegDiffModel, which: str) -> list[torch.nn.Parameter]:
    """Freeze the weights ``which`` (:data:`~segdiff_core.training.config.TRAINABLE`) leaves out;
    returns the weights that still learn.

    ``"all"``: every weight; ``"no-image-encoder"``: all but the RRDB image encoder G (and its
    down-sampling to the injection level); ``"decoder"``: only the middle block, the output
    blocks and the output head.
    """
    frozen: tuple[str, ...] = ()
    if which == "no-image-encoder":
        frozen = ("image_encoder.", "cond_down.")
    elif which == "decoder":
        learn = ("middle_block.", "output_blocks.", "out.")
    for name, p in model.named_parameters():
        keep = name.startswith(learn) if which == "decoder" else not name.startswith(frozen)
        p.requires_grad_(keep)
    return [p for p in model.parameters() if p.requires_grad]


def lr_at(step: int, run: RunConfig, time_spent: float = 0.0) -> float:
    """Learning rate of ``step``: linear warm-up, then constant or cosine to 10 %.

    ``time_spent`` is the share of the time budget (``train.max_minutes``) already used; the
    cosine follows whichever of steps and time is further along, so a run cut by its budget
    still ends at the low learning rate.
    """
    tc = run.train
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_decay == "constant":
        return tc.lr
    progress = max((step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps), time_spent)
    return tc.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def amp_settings(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler)."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None, False
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, device.type == "cuda"


VAL_PROTOCOLS = {"prompt": "expansion", "semantic": "windows"}
"""The ``segdiff-eval`` protocol that validation uses for each training task."""


def validation_items(source: SampleSource, n: int, seed: int) -> list[EvalItem]:
    """The fixed validation items, chosen as ``segdiff-eval`` chooses its items.

    Parameters
    ----------
    source : SampleSource
        The validation source.
    n : int
        Number of items (synthetic data: spread over the styles, rounded up per style).
    seed : int
        ``data.val_seed``.

    Returns
    -------
    list of EvalItem
        Synthetic source: ``segdiff-eval``'s held-out set for ``--eval-seed seed`` and
        ``--n ceil(n / styles)``; dataset source (the held-out split): ``--split-only-val
        --n n --eval-seed seed``; any other source: ``n`` draws from a generator seeded with
        ``seed``.
    """
    if isinstance(source, SyntheticSource):
        styles = list(dict.fromkeys(source.styles))
        return synthetic_items(
            styles, math.ceil(n / len(styles)), tile_size=source.tile_size, min_area=source.min_area,
            objects_per_tile=source.objects_per_tile, task=source.task, eval_seed=seed,
        )
    if isinstance(source, DatasetSource):
        subset = Subset(source.dataset, np.asarray(source.indices, dtype=np.int64))
        return dataset_items(subset, n=n, seed=seed, require_box=source.task != "semantic")[0]
    draws = source.draw(np.random.default_rng(seed), n)
    return [EvalItem(image, np.asarray(mask) > 0, box, f"val{k}") for k, (image, mask, box) in enumerate(draws)]


class Trainer:
    """Runs Alg. 2 for ``run.train.steps`` steps, writing checkpoints to ``out_dir``."""

    def __init__(
        self,
        run: RunConfig,
        out_dir: str | Path,
        train_source: SampleSource,
        val_source: SampleSource | None,
        ctx: DistContext | None = None,
        resume: bool = False,
        init_from: str | Path | None = None,
        progress: bool = True,
        describe_data: str = "",
        log: Callable[[str], None] = print,
        objective: Objective | None = None,
    ) -> None:
        self.run = run
        self.objective = objective or DiffusionObjective(run.segdiff)
        self.out = Path(out_dir)
        self.ctx = ctx or DistContext()
        self.train_source, self.val_source = train_source, val_source
        self.progress = progress and self.ctx.is_main
        self.describe_data = describe_data
        self.log = log if self.ctx.is_main else (lambda _msg: None)
        self.device = self.ctx.device
        self.scheduler = getattr(self.objective, "scheduler", None)
        self.step = 0
        self.best_iou: float | None = None
        self.best_step: int | None = None
        self.stop_reason: str | None = None
        self._budget_start: float | None = None  # perf_counter time the time budget counts from
        self._callback: Callable[[dict[str, Any]], None] | None = None
        state = self._read_state() if resume else None
        if state is None and resume:
            self.log(f"no training state in {self.out}; starting a new run")
        self.model = _seeded(self.objective.build, run.train.seed)
        if init_from is not None and state is None:
            self._init_from(init_from)
        self.model.to(self.device)
        self.ema = EMA(self.model, run.train.ema_decay)
        trainable = set_trainable(self.model, run.train.trainable)
        self.opt = torch.optim.AdamW(trainable, lr=run.train.lr, weight_decay=run.train.weight_decay)
        self.amp_dtype, use_scaler = amp_settings(run.train.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        if state is not None:
            self._load_state(state)
        self.ddp = None
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._val_set: list[PreparedItem] | None = None

    # ------------------------------------------------------------------ state files
    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    def _read_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        state = safe_load(self.state_path, "training state")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{self.state_path} is not a segdiff training state")
        saved = state.get("network") or DiffusionObjective(RunConfig.from_dict(state["run"]).segdiff).network()
        if saved != self.objective.network():
            raise TrainingError(
                f"cannot resume: {self.state_path} was trained with a different model/diffusion config; "
                "use the same settings (or another output folder)"
            )
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_iou = state.get("best_iou")
        self.log(f"resumed from {self.state_path} at step {self.step}")

    def _init_from(self, source: str | Path | ModelFile) -> None:
        file = source if isinstance(source, ModelFile) else read_model_file(source)
        (model, cfg, meta), path = (file.build(), file.config, file.metadata), file.path
        mine = self.run.segdiff.model
        added = [k for k in ("box_channel", "self_condition") if getattr(mine, k) and not getattr(cfg.model, k)]
        if added and dataclasses.replace(cfg.model, **{k: True for k in added}) == mine:
            self.model.warm_start_from(model)  # the new input channels start at zero weight
            self.log(f"initialised weights from {path} ({meta.get('trained_on', 'unknown data')}); "
                     f"input channels added with zero weights: {', '.join(added)}")
            return
        if cfg.model != mine:
            raise ConfigError(
                f"--init-from {path}: its network config differs from this run's; fine-tuning keeps the "
                "network: drop the [model] overrides (the run takes the checkpoint's config automatically)"
            )
        self.model.load_state_dict(model.state_dict())
        self.log(f"initialised weights from {path} ({meta.get('trained_on', 'unknown data')})")

    def _metadata(self, metrics: dict[str, float] | None) -> dict[str, Any]:
        return {
            "trained_on": self.describe_data,
            "steps": self.step,
            "metrics": metrics or {},
            "train": self.run.to_dict()["train"],
            "data": self.run.to_dict()["data"],
            "preset": self.run.preset,
            "segdiff_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def save_checkpoint(self, metrics: dict[str, float] | None = None) -> None:
        if not self.ctx.is_main:
            return
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "run": self.run.to_dict(),
            "network": self.objective.network(),
            "step": self.step,
            "best_iou": self.best_iou,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        atomic_save(state, self.state_path)
        save_model(self.out / "last.pt", self.ema.model, self.objective.config, self._metadata(metrics))

    # ------------------------------------------------------------------ logging
    def _log_json(self, record: dict[str, Any]) -> None:
        if not self.ctx.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._callback is not None:
            self._callback(record)

    def _trim_log(self) -> None:
        """Drop log lines past the resumed step (written after the last checkpoint), and a
        line torn by a kill in the middle of an append (it would block every resume)."""
        path = self.out / "metrics.jsonl"
        if not self.ctx.is_main or not path.exists():
            return
        keep = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= self.step:
                keep.append(line)
        atomic_write(path, "".join(ln + "\n" for ln in keep))

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """IoU, F1 and calibration of the EMA model on the fixed validation items.

        Scored by :func:`segdiff_core.evaluation.runner.run_method` with the model's own
        sampler, ``train.val_generations`` and ``train.val_steps`` and sampling seed
        ``train.seed``: the numbers ``segdiff-eval`` reports for the saved model on the same
        items (see :func:`validation_items`) with ``--seed train.seed``.
        """
        method = self.objective.method(self.ema.model, self.device, self.run.train)
        summary = run_method(self._validation_set(), method, chunk_size=VAL_BATCH).summary
        return {k: float(summary[k]) for k in ("iou", "f1", "calibration") if k in summary}

    def _validation_set(self) -> list[PreparedItem]:
        """The fixed validation crops, made once (an unusable validation set fails here)."""
        if self._val_set is None:
            assert self.val_source is not None
            data = self.run.data
            protocol = EvalProtocol(VAL_PROTOCOLS[data.task], work_size=data.work_size or None)
            items = validation_items(self.val_source, self.run.train.val_samples, data.val_seed)
            self._val_set = crop_items(items, protocol, self.run.segdiff.preprocess.input_size)
        return self._val_set

    def _time_spent(self) -> float:
        """Share of the time budget used so far (0 without a budget or outside :meth:`fit`)."""
        budget, start = self.run.train.max_minutes, self._budget_start
        return 0.0 if budget <= 0 or start is None else (time.perf_counter() - start) / (60.0 * budget)

    def _stop_reason(self, should_stop: Callable[[], bool] | None, t_start: float) -> str | None:
        """'cancelled' or 'time budget' (the same answer on every process), else None."""
        cancelled = any_flag(should_stop is not None and bool(should_stop()), self.ctx)
        if cancelled:
            return "cancelled"
        budget = self.run.train.max_minutes
        spent = budget > 0 and time.perf_counter() - t_start >= 60.0 * budget
        return "time budget" if any_flag(spent, self.ctx) else None

    def _validate_and_keep_best(self, bar: Any) -> dict[str, float] | None:
        """Validate on the main process; a better IoU rewrites ``best.pt``."""
        metrics = None
        if self.ctx.is_main:
            metrics = self.validate()
            self._log_json({"step": self.step, **{f"val_{k}": v for k, v in metrics.items()}})
            iou = metrics.get("iou")
            if iou is not None and (self.best_iou is None or iou > self.best_iou):
                self.best_iou = iou
                self.best_step = self.step
                save_model(self.out / "best.pt", self.ema.model, self.objective.config, self._metadata(metrics))
            if bar is not None:
                bar.write(f"step {self.step}: val IoU {metrics.get('iou', float('nan')):.4f} F1 {metrics.get('f1', float('nan')):.4f}")
        barrier(self.ctx)
        return metrics

    def _early_stop(self) -> str | None:
        """'no better validation IoU' after ``train.patience`` validations without improvement."""
        patience, every = self.run.train.patience, self.run.train.val_every
        stale = self.best_step is not None and (self.step - self.best_step) >= patience * every
        return "no better validation IoU" if any_flag(patience > 0 and stale, self.ctx) else None


    # ------------------------------------------------------------------ the loop
    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def _train_step(self, images: torch.Tensor, masks: torch.Tensor) -> float:
        """One optimisation step on a batch: images (B, C, S, S), masks (B, 1, S, S) in {-1, 1}."""
        tc = self.run.train
        gen = torch.Generator().manual_seed(_seed_for(tc.seed, self.step, self.ctx.rank, stream=2))
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.run, self._time_spent())
        net = self.ddp if self.ddp is not None else self.model
        with torch.random.fork_rng(devices=[]):  # dropout draws from a per-step seed
            torch.manual_seed(_seed_for(tc.seed, self.step, self.ctx.rank, stream=3))
            loss = self.objective.loss(net, images, masks, gen, self.device, self._autocast)
        value = float(loss.detach())
        if any_flag(not math.isfinite(value), self.ctx):
            raise TrainingError(
                f"the loss became non-finite ({value}) at step {self.step + 1}; training stopped. The last good "
                f"checkpoint is kept in {self.state_path}. Lower --train.lr or use --train.amp off, then --resume"
            )
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.ema.update(self.model)
        self.step += 1
        return value

    def fit(
        self,
        callback: Callable[[dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        budget_start: float | None = None,
    ) -> TrainResult:
        """Train to ``run.train.steps`` (or an early stop).

        Parameters
        ----------
        callback : callable, optional
            Receives every record written to ``metrics.jsonl`` (``{"step", "loss", ...}`` or
            ``{"step", "val_iou", ...}``), on the main process.
        should_stop : callable, optional
            Polled once per step; True stops the run after a checkpoint (the best model so far
            stays in ``best.pt``), as do the ``train.patience`` and ``train.max_minutes`` limits.
        budget_start : float, optional
            ``time.perf_counter()`` value the ``train.max_minutes`` budget counts from (default:
            now); earlier when the budget also covers work around the loop (a fine-tune's
            setup, first validation and saving).

        Returns
        -------
        TrainResult
            The model files written.
        """
        tc = self.run.train
        if self.ctx.is_main and tc.val_every and self.val_source is not None:
            self._validation_set()  # a validation set without objects stops the run now, not at step val_every
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / "run.json", json.dumps(self.run.to_dict(), indent=2))
            self._trim_log()
        self._callback = callback
        loader, bar = self._loader(), self._progress_bar()
        self.model.train()
        self.stop_reason = None
        last_loss: float | None = None
        window: list[float] = []
        t_start = t_last = time.perf_counter()
        if budget_start is not None:
            t_start = budget_start
        self._budget_start = t_start
        steps_since = 0
        val_metrics: dict[str, float] | None = None
        try:
            for images, masks in loader:
                value = self._train_step(images, masks)
                window.append(value)
                steps_since += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.4f}", lr=f"{self.opt.param_groups[0]['lr']:.1e}", refresh=False)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    mean = all_reduce_mean(float(np.mean(window)), self.ctx)
                    now = time.perf_counter()
                    rate = steps_since / max(now - t_last, 1e-9)
                    last_loss = mean
                    self._log_json({"step": self.step, "loss": mean, "lr": self.opt.param_groups[0]["lr"], "steps_per_s": rate})
                    window, steps_since, t_last = [], 0, now
                self.stop_reason = self._stop_reason(should_stop, t_start)
                due = self.step % tc.val_every == 0 if tc.val_every else False
                if tc.val_every and self.val_source is not None and (due or self.step == tc.steps or self.stop_reason == "time budget"):
                    val_metrics = self._validate_and_keep_best(bar) or val_metrics
                    self.stop_reason = self.stop_reason or self._early_stop()
                if self.step % tc.checkpoint_every == 0 or self.step == tc.steps or self.stop_reason:
                    self.save_checkpoint(val_metrics)
                    barrier(self.ctx)
                if self.stop_reason:
                    self.log(f"stopped at step {self.step}: {self.stop_reason}")
                    break
        finally:
            if bar is not None:
                bar.close()
        self._finish()
        best = self.out / "best.pt"
        return TrainResult(self.step, self.out / "last.pt", best if best.exists() else None, self.best_iou, last_loss)

    def _loader(self) -> torch.utils.data.DataLoader:
        """The batches of the remaining steps (:class:`PairBatches`, one item per step)."""
        tc = self.run.train
        batches = PairBatches(
            self.train_source, self.run.segdiff.preprocess, self.run.data, tc.batch_size, tc.seed,
            rank=self.ctx.rank, start=self.step, stop=tc.steps, with_box=self.run.segdiff.model.box_channel,
        )
        return torch.utils.data.DataLoader(
            batches, batch_size=None, shuffle=False, num_workers=tc.num_workers,
            persistent_workers=False, prefetch_factor=2 if tc.num_workers else None,
        )

    def _progress_bar(self) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.run.train.steps, initial=self.step, desc="segdiff-train", unit="step",
                    dynamic_ncols=True, mininterval=1.0)

    def _finish(self) -> None:
        """Check that the replicas agree (DDP) and write the training plot."""
        if self.ctx.enabled:
            same = replicas_identical(self.model, self.ctx)
            if self.ctx.is_main:
                atomic_write(self.out / "distributed.json", json.dumps({"world_size": self.ctx.world_size, "replicas_identical": same, "step": self.step}))
            if not same:
                raise TrainingError("the model replicas of the processes differ at the end of training")
        if self.ctx.is_main:
            try:
                from segdiff_core.training.plots import plot_training

                plot_training(self.out / "metrics.jsonl", self.out / "training.png")
            except Exception as exc:  # a plot must never fail a finished run
                self.log(f"could not write the training plot: {exc}")
