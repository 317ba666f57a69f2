"""A plain U-Net that predicts the mask in one forward pass: the non-diffusion baseline.

The evaluation report (``python -m benchmarks.report``, claim 4) compares SegDiff with a
conventional segmentation network of about the same size, trained on exactly the same data
stream for the same budget. This module holds that network, its training loop and its
predictor:

* :class:`UNetConfig` / :class:`UNet`: Ronneberger-style encoder-decoder. Each level has
  ``convs_per_level`` blocks of (3x3 conv, GroupNorm, SiLU); 2x2 max-pooling between encoder
  levels; the decoder upsamples with a stride-2 transposed conv, concatenates the encoder skip
  of that level and applies the same conv blocks; a 1x1 conv gives one logit per pixel.
  ``channel_mult`` has the same meaning as in :class:`segdiff_core.config.ModelConfig`.
* :func:`config_matching_parameters`: the base width whose parameter count is closest to a
  target (e.g. a SegDiff model's), so the comparison is between networks of similar size.
* :func:`train_unet`: the training loop. It draws its batches from
  :class:`segdiff_core.training.data.PairBatches` with the run's seed, batch size and data
  settings, so it sees *the same batches* as :class:`segdiff_core.training.trainer.Trainer`
  with the same :class:`~segdiff_core.training.config.RunConfig`; it also shares the
  optimiser (AdamW), learning-rate schedule (:func:`~segdiff_core.training.trainer.lr_at`),
  gradient clipping and weight EMA of that trainer. The loss is binary cross-entropy plus
  soft Dice on the masks mapped from {-1, 1} to {0, 1}.
* :func:`save_unet` / :func:`load_unet`: a model file of plain tensors and values
  (``torch.load(weights_only=True)``; it can never run code), written atomically.
* :class:`UNetSegmenter` and :func:`unet_method`: prediction on box-prompt crops with the
  same preprocessing as SegDiff, as a :class:`segdiff_core.evaluation.runner.Method`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segdiff_core.checkpoint import CheckpointError, atomic_save, safe_load
from segdiff_core.data.preprocess import PreprocessConfig, PreprocessError, prepare
from segdiff_core.device import resolve_device
from segdiff_core.nn.unet import group_norm

__all__ = [
    "UNET_FORMAT",
    "UNET_VERSION",
    "UNetConfigError",
    "UNetConfig",
    "UNet",
    "count_parameters",
    "config_matching_parameters",
    "bce_dice_loss",
    "UNetTrainResult",
    "train_unet",
    "save_unet",
    "load_unet",
    "UNetSegmenter",
    "unet_method",
]

UNET_FORMAT = "segdiff-unet-baseline"
UNET_VERSION = 1


class UNetConfigError(ValueError):
    """An inconsistent U-Net configuration (sizes, widths) or one that does not fit the data."""


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the plain U-Net.

    Attributes:
        image_size: side of the square input (pixels); divisible by ``2 ** (levels - 1)``.
        in_channels: image channels.
        base_channels: width of the first level.
        channel_mult: width multiplier per level (one level per entry; a 2x2 max-pool between
            consecutive levels).
        convs_per_level: (conv, GroupNorm, SiLU) blocks per level on each side (classic: 2).
        norm_groups: GroupNorm groups (reduced to a divisor of the channel count when needed).
    """

    image_size: int = 32
    in_channels: int = 3
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 2)
    convs_per_level: int = 2
    norm_groups: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        for name in ("image_size", "in_channels", "base_channels", "convs_per_level", "norm_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UNetConfigError(f"U-Net {name} must be a positive integer, got {value!r}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise UNetConfigError(f"channel_mult must be non-empty positive ints, got {self.channel_mult}")
        n_down = len(self.channel_mult) - 1
        if self.image_size % (2**n_down):
            raise UNetConfigError(
                f"image_size {self.image_size} is not divisible by 2**{n_down} "
                f"(one halving per level of channel_mult={self.channel_mult})"
            )

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level, ``base_channels * mult``."""
        return tuple(self.base_channels * m for m in self.channel_mult)

    def replace(self, **changes: Any) -> "UNetConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UNetConfig":
        if not isinstance(data, Mapping):
            raise UNetConfigError(f"U-Net config: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UNetConfigError(f"U-Net config: unknown keys {unknown}; valid keys are {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class _ConvBlocks(nn.Sequential):
    """``n`` x (3x3 conv, GroupNorm, SiLU): (B, in_ch, H, W) -> (B, out_ch, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, n: int, groups: int) -> None:
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1), group_norm(out_ch, groups), nn.SiLU()]
        super().__init__(*layers)


class UNet(nn.Module):
    """Plain U-Net: image (B, in_channels, S, S) float -> mask logits (B, 1, S, S)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        n, groups = config.convs_per_level, config.norm_groups
        self.encoder = nn.ModuleList()
        prev = config.in_channels
        for w in widths:
            self.encoder.append(_ConvBlocks(prev, w, n, groups))
            prev = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(len(widths) - 2, -1, -1):
            self.up.append(nn.ConvTranspose2d(prev, widths[level], 2, stride=2))
            self.decoder.append(_ConvBlocks(2 * widths[level], widths[level], n, groups))
            prev = widths[level]
        self.head = nn.Conv2d(prev, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if image.ndim != 4 or image.shape[1] != cfg.in_channels:
            raise ValueError(f"image must have shape (B, {cfg.in_channels}, H, W), got {tuple(image.shape)}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if image.shape[-1] % factor or image.shape[-2] % factor:
            raise ValueError(f"image sides {tuple(image.shape[-2:])} must be multiples of {factor}")
        skips = []
        h = image
        for i, block in enumerate(self.encoder):
            if i:
                h = self.pool(h)
            h = block(h)
            skips.append(h)
        skips.pop()  # the deepest level feeds the decoder directly
        for up, block in zip(self.up, self.decoder):
            h = block(torch.cat([up(h), skips.pop()], dim=1))
        return self.head(h)

    def num_parameters(self) -> int:
        return count_parameters(self)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters()))


def _parameters_of(config: UNetConfig) -> int:
    with torch.device("meta"):  # shapes only: no memory is allocated
        return count_parameters(UNet(config))


def config_matching_parameters(
    target: int, base: UNetConfig, widths: range = range(2, 257)
) -> tuple[UNetConfig, int]:
    """The ``base`` config with the ``base_channels`` in ``widths`` whose parameter count is
    closest (in ratio) to ``target``. Returns ``(config, its parameter count)``.

    Raises:
        UNetConfigError: ``target`` is not positive or ``widths`` is empty.
    """
    if target < 1:
        raise UNetConfigError(f"the target parameter count must be positive, got {target}")
    if len(widths) == 0:
        raise UNetConfigError("no candidate widths given")
    best: tuple[float, UNetConfig, int] | None = None
    for w in widths:
        cfg = base.replace(base_channels=int(w))
        n = _parameters_of(cfg)
        score = abs(math.log(n / target))
        if best is None or score < best[0]:
            best = (score, cfg, n)
    assert best is not None
    return best[1], best[2]


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice loss (a scalar).

    Args:
        logits: (B, 1, H, W) raw network outputs.
        target: (B, 1, H, W) masks in {0, 1} (float).
        eps: smoothing of the Dice ratio, ``(2 sum(p t) + eps) / (sum p + sum t + eps)`` per
            sample, so an empty target with an empty prediction has Dice 1.

    Returns:
        ``mean BCE + mean over samples of (1 - Dice)``.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    dice = (2.0 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    return bce + (1.0 - dice).mean()


# --------------------------------------------------------------------------------------------
# model files
# --------------------------------------------------------------------------------------------


def save_unet(
    path: str | os.PathLike,
    model: UNet,
    preprocess: PreprocessConfig,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a U-Net model file atomically: ``{"format", "version", "config", "preprocess",
    "metadata", "state_dict"}`` of plain values and CPU tensors. Returns the path."""
    cfg = model.config
    if preprocess.input_size != cfg.image_size or preprocess.in_channels != cfg.in_channels:
        raise UNetConfigError(
            f"preprocessing (size {preprocess.input_size}, channels {preprocess.in_channels}) does not match "
            f"the U-Net (size {cfg.image_size}, channels {cfg.in_channels})"
        )
    payload = {
        "format": UNET_FORMAT,
        "version": UNET_VERSION,
        "config": cfg.to_dict(),
        "preprocess": preprocess.to_dict(),
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    return atomic_save(payload, path)


def load_unet(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, PreprocessConfig, dict[str, Any]]:
    """Read a file written by :func:`save_unet` (``weights_only``: never runs code).

    Returns:
        (model in eval mode on ``device``, preprocessing, metadata).

    Raises:
        CheckpointError: unreadable, foreign, or inconsistent file.
    """
    path = Path(path)
    payload = safe_load(path, "U-Net model file")
    if not isinstance(payload, dict) or payload.get("format") != UNET_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a U-Net baseline model file (format: {found!r})")
    if payload.get("version") != UNET_VERSION:
        raise CheckpointError(f"U-Net model file {path} has version {payload.get('version')!r}; expected {UNET_VERSION}")
    try:
        config = UNetConfig.from_dict(payload["config"])
        preprocess = PreprocessConfig.from_dict(payload["preprocess"])
    except (KeyError, TypeError, UNetConfigError, PreprocessError) as exc:
        raise CheckpointError(f"U-Net model file {path} has an invalid config: {exc}") from exc
    model = UNet(config)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"U-Net model file {path} has no valid 'state_dict' section")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"U-Net model file {path}: the weights do not match its config ({exc})") from exc
    return model.to(device).eval(), preprocess, dict(payload.get("metadata") or {})


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


@dataclass
class UNetTrainResult:
    """Outcome of :func:`train_unet`.

    Attributes:
        steps: optimisation steps done.
        model_path: the written model file (EMA weights).
        final_loss: mean loss over the last ``log_every`` steps.
        seconds: wall time of the loop.
        num_parameters: parameters of the network.
        losses: ``(step, mean loss)`` every ``log_every`` steps.
    """

    steps: int
    model_path: Path
    final_loss: float
    seconds: float
    num_parameters: int
    losses: list[tuple[int, float]] = field(default_factory=list)


def _seeded_unet(config: UNetConfig, seed: int) -> UNet:
    with torch.random.fork_rng(devices=[]):  # initialise without touching the global RNG
        torch.manual_seed(int(seed))
        return UNet(config)


def train_unet(
    run: Any,
    config: UNetConfig,
    source: Any,
    out_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> UNetTrainResult:
    """Train a :class:`UNet` with the budget and data of a SegDiff run, write it to ``out_path``.

    Args:
        run: a :class:`segdiff_core.training.config.RunConfig`. Used: ``run.train`` (steps,
            batch_size, lr, weight_decay, warmup_steps, lr_decay, grad_clip, ema_decay, seed,
            log_every), ``run.data`` (crop jitter, augmentation) and
            ``run.segdiff.preprocess`` (saved with the model and used at prediction time).
        config: the network; its ``image_size`` and ``in_channels`` must match the
            preprocessing.
        source: a :class:`segdiff_core.training.data.SampleSource` (e.g. the first value of
            :func:`segdiff_core.training.sources.build_sources`).
        out_path: the model file to write (EMA weights).
        device: torch device name.
        log: called with a progress line every ``run.train.log_every`` steps, or None.

    Returns:
        :class:`UNetTrainResult`.

    Raises:
        UNetConfigError: the network does not fit the preprocessing.
        segdiff_core.training.trainer.TrainingError: the loss became non-finite.
    """
    from segdiff_core.training.data import PairBatches
    from segdiff_core.training.ema import EMA
    from segdiff_core.training.trainer import TrainingError, lr_at

    preprocess: PreprocessConfig = run.segdiff.preprocess
    if preprocess.input_size != config.image_size or preprocess.in_channels != config.in_channels:
        raise UNetConfigError(
            f"the U-Net takes {config.in_channels}-channel {config.image_size}px inputs but the run's data are "
            f"{preprocess.in_channels}-channel {preprocess.input_size}px; set image_size/in_channels to match"
        )
    tc = run.train
    dev = resolve_device(device)
    model = _seeded_unet(config, tc.seed).to(dev).train()
    ema = EMA(model, tc.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    # The same stream as Trainer.fit: PairBatches(source, preprocess, data, batch, seed), rank 0.
    batches = PairBatches(source, preprocess, run.data, tc.batch_size, tc.seed, rank=0, start=0, stop=tc.steps)
    losses: list[tuple[int, float]] = []
    window: list[float] = []
    t0 = time.perf_counter()
    for step in range(tc.steps):
        images, masks = batches[step]
        images = images.to(dev)
        target = (masks.to(dev) + 1.0) / 2.0  # {-1, 1} -> {0, 1}
        for group in opt.param_groups:
            group["lr"] = lr_at(step, run)
        loss = bce_dice_loss(model(images), target)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"the U-Net loss became non-finite ({value}) at step {step + 1}; lower train.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        ema.update(model)
        window.append(value)
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
            mean = float(np.mean(window))
            losses.append((step + 1, mean))
            window = []
            if log is not None:
                log(f"unet step {step + 1}/{tc.steps}: loss {mean:.4f}")
    seconds = time.perf_counter() - t0
    metadata = {
        "trained_on": "same PairBatches stream as the SegDiff run",
        "steps": tc.steps,
        "train": run.to_dict()["train"],
        "data": run.to_dict()["data"],
        "loss": "bce+dice",
        "seconds": seconds,
        "final_loss": losses[-1][1],
    }
    path = save_unet(out_path, ema.model, preprocess, metadata)
    return UNetTrainResult(tc.steps, path, losses[-1][1], seconds, count_parameters(model), losses)


# --------------------------------------------------------------------------------------------
# prediction
# --------------------------------------------------------------------------------------------


class UNetSegmenter:
    """A trained U-Net ready for inference on box-prompt crops."""

    def __init__(
        self,
        model: UNet,
        preprocess: PreprocessConfig,
        device: str | torch.device | None = "auto",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.metadata = dict(metadata or {})

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = "auto") -> "UNetSegmenter":
        dev = resolve_device(device)
        model, preprocess, metadata = load_unet(path, dev)
        return cls(model, preprocess, dev, metadata)

    @property
    def input_size(self) -> int:
        return self.model.config.image_size

    def prepare(self, patch: np.ndarray) -> torch.Tensor:
        """Patch (H, W[, C]) any dtype -> normalised input (1, in_channels, S, S) on the device
        (resized to the model size if needed, as :meth:`segdiff_core.segmenter.Segmenter.prepare`)."""
        arr = prepare(np.asarray(patch), self.preprocess, check_size=False)
        x = torch.from_numpy(np.ascontiguousarray(arr))[None]
        s = self.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x.to(self.device)

    def predict_batch(self, patches: list[np.ndarray], batch_images: int = 32) -> list[np.ndarray]:
        """Foreground probabilities, one (S, S) float32 map in [0, 1] per patch."""
        if batch_images < 1:
            raise ValueError(f"batch_images must be >= 1, got {batch_images}")
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for s in range(0, len(patches), batch_images):
                x = torch.cat([self.prepare(p) for p in patches[s : s + batch_images]])
                prob = torch.sigmoid(self.model(x))[:, 0].float().cpu().numpy()
                out.extend(np.ascontiguousarray(p, dtype=np.float32) for p in prob)
        return out


def unet_method(segmenter: UNetSegmenter, *, batch_images: int = 32, name: str = "unet") -> Any:
    """The U-Net as a ``'model'``-resolution :class:`segdiff_core.evaluation.runner.Method`
    (probability maps, threshold 0.5, no uncertainty)."""
    from segdiff_core.evaluation.runner import Method

    settings = {"baseline": "plain U-Net", "parameters": segmenter.model.num_parameters()}
    return Method(name, lambda patches: segmenter.predict_batch(patches, batch_images), "model", settings)
