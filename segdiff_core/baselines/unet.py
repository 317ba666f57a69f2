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
* :class:`UNetObjective` / :func:`train_unet`: training by
  :class:`segdiff_core.training.trainer.Trainer` with this network and loss (binary
  cross-entropy plus soft Dice on the masks mapped from {-1, 1} to {0, 1}), so the U-Net sees
  *the same batches* as SegDiff with the same :class:`~segdiff_core.training.config.RunConfig`
  and shares its optimiser, learning-rate schedule, clipping, EMA, AMP, DDP and ``--resume``.
* :class:`UNetModelConfig` / :data:`UNET_KIND`: the config saved beside the weights; model
  files are written and read by :func:`segdiff_core.checkpoint.save_model` /
  :func:`~segdiff_core.checkpoint.load_model` (:func:`save_unet` / :func:`load_unet` are
  shorthands). Version 1 files (preprocessing beside the config) still load.
* :class:`UNetSegmenter` and :func:`unet_method`: prediction on box-prompt crops with the
  same preprocessing as SegDiff, as a :class:`segdiff_core.evaluation.runner.Method`.
"""
from __future__ import annotations

import dataclasses
import json
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

from segdiff_core.checkpoint import ModelKind, load_model, save_model
from segdiff_core.data.preprocess import PreprocessConfig, to_model_array
from segdiff_core.device import resolve_device
from segdiff_core.nn.unet import group_norm
from segdiff_core.validation import check_int

__all__ = [
    "UNET_FORMAT",
    "UNET_VERSION",
    "UNetConfigError",
    "UNetConfig",
    "UNet",
    "count_parameters",
    "config_matching_parameters",
    "bce_dice_loss",
    "UNetModelConfig",
    "UNET_KIND",
    "UNetObjective",
    "UNetTrainResult",
    "train_unet",
    "save_unet",
    "load_unet",
    "UNetSegmenter",
    "unet_method",
]

UNET_FORMAT = "segdiff-unet-baseline"
UNET_VERSION = 2


class UNetConfigError(ValueError):
    """An inconsistent U-Net configuration (sizes, widths) or one that does not fit the data."""


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the plain U-Net.

    Attributes
    ----------
    image_size
        side of the square input (pixels); divisible by ``2 ** (levels - 1)``.
    in_channels
        image channels.
    base_channels
        width of the first level.
    channel_mult
        width multiplier per level (one level per entry; a 2x2 max-pool between
        consecutive levels).
    convs_per_level
        (conv, GroupNorm, SiLU) blocks per level on each side (classic: 2).
    norm_groups
        GroupNorm groups (reduced to a divisor of the channel count when needed).
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
            check_int(getattr(self, name), f"U-Net {name}", 1, error=UNetConfigError)
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

    Raises
    ------
    UNetConfigError
        ``target`` is not positive or ``widths`` is empty.
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

    Parameters
    ----------
    logits
        (B, 1, H, W) raw network outputs.
    target
        (B, 1, H, W) masks in {0, 1} (float).
    eps
        smoothing of the Dice ratio, ``(2 sum(p t) + eps) / (sum p + sum t + eps)`` per
        sample, so an empty target with an empty prediction has Dice 1.

    Returns
    -------
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


@dataclass(frozen=True)
class UNetModelConfig:
    """What a U-Net model file stores beside the weights: the network and its preprocessing.

    Attributes
    ----------
    network : UNetConfig
    preprocess : PreprocessConfig
        Its input size and channels must match the network's.
    """

    network: UNetConfig
    preprocess: PreprocessConfig

    def __post_init__(self) -> None:
        net, pp = self.network, self.preprocess
        if pp.input_size != net.image_size or pp.in_channels != net.in_channels:
            raise UNetConfigError(
                f"preprocessing (size {pp.input_size}, channels {pp.in_channels}) does not match "
                f"the U-Net (size {net.image_size}, channels {net.in_channels}); set the U-Net's "
                "image_size/in_channels to match the run's data"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network.to_dict(), "preprocess": self.preprocess.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UNetModelConfig":
        try:
            return cls(UNetConfig.from_dict(data["network"]), PreprocessConfig.from_dict(data["preprocess"]))
        except (KeyError, TypeError) as exc:
            raise UNetConfigError(f"U-Net model config needs 'network' and 'preprocess' sections ({exc})") from exc


def _upgrade_v1(payload: dict[str, Any]) -> None:
    """Version 1 files kept the preprocessing beside the network config, not inside it."""
    if payload.get("version") == 1 and isinstance(payload.get("preprocess"), dict):
        payload["config"] = {"network": payload.get("config"), "preprocess": payload.pop("preprocess")}
        payload["version"] = UNET_VERSION


UNET_KIND = ModelKind(UNET_FORMAT, "U-Net baseline model", UNetModelConfig, lambda c: UNet(c.network),
                      UNET_VERSION, _upgrade_v1)
"""The U-Net's model files (read and written by :func:`segdiff_core.checkpoint.load_model` /
:func:`~segdiff_core.checkpoint.save_model`)."""


def save_unet(
    path: str | os.PathLike, model: UNet, preprocess: PreprocessConfig, metadata: Mapping[str, Any] | None = None
) -> Path:
    """:func:`segdiff_core.checkpoint.save_model` of a U-Net with its preprocessing."""
    return save_model(path, model, UNetModelConfig(model.config, preprocess), metadata)


def load_unet(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, PreprocessConfig, dict[str, Any]]:
    """:func:`segdiff_core.checkpoint.load_model` of a U-Net file: (model, preprocessing, metadata)."""
    model, config, metadata = load_model(path, device, kind=UNET_FORMAT)
    return model, config.preprocess, metadata


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


class UNetObjective:
    """The U-Net's objective for :class:`segdiff_core.training.trainer.Trainer`: binary
    cross-entropy plus soft Dice on the masks mapped from {-1, 1} to {0, 1}."""

    def __init__(self, config: UNetModelConfig) -> None:
        self.config = config

    def build(self) -> UNet:
        return UNet(self.config.network)

    def network(self, config: UNetModelConfig | None = None) -> dict[str, Any]:
        return {"network": (config or self.config).network.to_dict()}

    def loss(self, net: nn.Module, images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator,
             device: torch.device, autocast: Callable[[], Any]) -> torch.Tensor:
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        with autocast():
            logits = net(images)
        return bce_dice_loss(logits, (masks + 1.0) / 2.0)

    def method(self, model: nn.Module, device: torch.device, train: Any) -> Any:
        return unet_method(UNetSegmenter(model, self.config.preprocess, device))


@dataclass
class UNetTrainResult:
    """Outcome of :func:`train_unet`.

    Attributes
    ----------
    steps : int
        Optimisation steps done.
    model_path : Path
        The written model file (EMA weights).
    final_loss : float
        Mean loss over the last ``log_every`` steps.
    seconds : float
        Wall time of the training.
    num_parameters : int
    losses : list of (int, float)
        ``(step, mean loss)`` every ``log_every`` steps.
    """

    steps: int
    model_path: Path
    final_loss: float
    seconds: float
    num_parameters: int
    losses: list[tuple[int, float]] = field(default_factory=list)


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

    The :class:`~segdiff_core.training.trainer.Trainer` runs it with :class:`UNetObjective`, so
    the U-Net sees the same batches as SegDiff with the same run and shares its optimiser, LR
    schedule, clipping, EMA, AMP, DDP and resumable state (kept in ``<out_path stem>-run/``).

    Parameters
    ----------
    run : RunConfig
        ``run.train``, ``run.data`` and ``run.segdiff.preprocess`` are used.
    config : UNetConfig
        Its ``image_size`` and ``in_channels`` must match the preprocessing.
    source : SampleSource
        E.g. the first value of :func:`segdiff_core.training.sources.build_sources`.
    out_path : path-like
        The model file to write (EMA weights).
    device : str or torch.device
    log : callable, optional
        Receives the trainer's messages.

    Returns
    -------
    UNetTrainResult

    Raises
    ------
    UNetConfigError
        The network does not fit the preprocessing.
    segdiff_core.training.trainer.TrainingError
        The loss became non-finite.
    """
    from segdiff_core.training.distributed import DistContext
    from segdiff_core.training.trainer import Trainer

    objective = UNetObjective(UNetModelConfig(config, run.segdiff.preprocess))
    out_path = Path(out_path)
    trainer = Trainer(
        run, out_path.with_name(out_path.stem + "-run"), source, None,
        ctx=DistContext(device=resolve_device(device)), progress=False,
        describe_data="same PairBatches stream as the SegDiff run", log=log or (lambda _m: None),
        objective=objective,
    )
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    records = [json.loads(line) for line in (trainer.out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [(int(r["step"]), float(r["loss"])) for r in records if "loss" in r]
    metadata = {**trainer._metadata(None), "loss": "bce+dice", "seconds": seconds, "final_loss": losses[-1][1]}
    path = save_model(out_path, trainer.ema.model, objective.config, metadata)
    return UNetTrainResult(trainer.step, path, losses[-1][1], seconds, count_parameters(trainer.model), losses)


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

    def predict_batch(self, patches: list[np.ndarray], batch_images: int = 32) -> list[np.ndarray]:
        """Foreground probabilities, one (S, S) float32 map in [0, 1] per patch."""
        if batch_images < 1:
            raise ValueError(f"batch_images must be >= 1, got {batch_images}")
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for s in range(0, len(patches), batch_images):
                chunk = [to_model_array(np.asarray(p), self.preprocess, resize=True) for p in patches[s : s + batch_images]]
                x = torch.from_numpy(np.stack(chunk)).to(self.device)
                prob = torch.sigmoid(self.model(x))[:, 0].float().cpu().numpy()
                out.extend(np.ascontiguousarray(p, dtype=np.float32) for p in prob)
        return out


def unet_method(segmenter: UNetSegmenter, *, batch_images: int = 32, name: str = "unet") -> Any:
    """The U-Net as a ``'model'``-resolution :class:`segdiff_core.evaluation.runner.Method`
    (probability maps, threshold 0.5, no uncertainty)."""
    from segdiff_core.evaluation.runner import Method

    settings = {"baseline": "plain U-Net", "parameters": segmenter.model.num_parameters()}
    return Method(name, lambda patches: segmenter.predict_batch(patches, batch_images), "model", settings)
