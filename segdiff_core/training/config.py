"""Run configuration for training and evaluation, and the CLI built from it.

One source of truth: every field of the dataclasses below is at once a key of the TOML/JSON
config file (``[train] steps = 5000``) and a command-line flag (``--train.steps 5000``);
the flags are generated from the fields, with the field's type and documented default.
Precedence: preset < config file < command-line flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from segdiff_core.config import ConfigError, DiffusionConfig, InferenceConfig, ModelConfig, SegDiffConfig
from segdiff_core.data.preprocess import PreprocessConfig
from segdiff_core.presets import get_preset

SOURCES = ("synthetic", "folder", "instances", "monuseg", "cityscapes", "vaihingen")
TASKS = ("prompt", "semantic")
#: ``train.trainable``: every weight; all but the RRDB image encoder G; only the decoder half of
#: the U-Net (middle block, output blocks, output head)
TRAINABLE = ("all", "no-image-encoder", "decoder")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper Alg. 2 with AdamW and an EMA of the weights)."""

    steps: int = 5000  # total optimisation steps
    batch_size: int = 16  # per process
    lr: float = 2e-4  # AdamW learning rate (paper 1e-4; 2e-5 was stable for fp16 users)
    weight_decay: float = 0.0
    warmup_steps: int = 200  # linear learning-rate warm-up
    lr_decay: str = "cosine"  # 'cosine' to 10% at the end, or 'constant'
    ema_decay: float = 0.999  # EMA of weights (reference 0.9999 suits 10^5+ steps)
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    amp: str = "auto"  # 'auto' (bf16/fp16 on CUDA, off on CPU), 'off', 'bf16', 'fp16'
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 250  # training state + last model, atomically
    val_every: int = 500  # 0 disables validation
    val_samples: int = 48
    val_generations: int = 4
    val_steps: int = 10
    num_workers: int = 0  # data-loading processes (0: in the training process)
    trainable: str = "all"  # which weights learn: one of TRAINABLE (fine-tuning may freeze the image encoder)
    patience: int = 0  # early stopping: stop after this many validations without a better IoU (0: off)
    max_minutes: float = 0.0  # time budget: validate and stop once it is spent (0: no budget)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"train.amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"train.trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.patience < 0 or self.max_minutes < 0:
            raise ConfigError("train.patience and train.max_minutes must be >= 0")
        if self.seed < 0:  # numpy's generators take seeds >= 0; it failed after start-up
            raise ConfigError(f"train.seed must be >= 0, got {self.seed}")
        for name in ("val_every", "num_workers"):  # val_every -1 validated at every step
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0 (0: {'no validation' if name == 'val_every' else 'load in this process'}), got {getattr(self, name)}")
        if self.lr_decay not in ("cosine", "constant"):
            raise ConfigError(f"train.lr_decay must be 'cosine' or 'constant', got {self.lr_decay!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where samples come from and how a sample becomes a training pair."""

    source: str = "synthetic"  # one of SOURCES
    root: str = ""  # dataset folder (not used by 'synthetic')
    task: str = "prompt"  # 'prompt': box-prompt crops per object; 'semantic': windows, all foreground
    styles: tuple[str, ...] = ("fluorescence", "he")  # synthetic style families
    tile_size: int = 256  # synthetic tile side
    split: str = "train"  # Cityscapes split; Vaihingen DSAC reference split: train (first 100), test, all
    val_fraction: float = 0.1  # held-out share of a dataset (grouped by image)
    val_seed: int = 12345  # synthetic validation stream / split seed
    augmentation: str = "nuclei"  # augment.paper_augmentation name, or 'none'
    crop_margin: tuple[float, float] = (0.10, 0.20)  # training crops 10-20 % larger than the box
    box_shift: float = 0.10  # random box-centre shift, fraction of box size (sloppy boxes)
    box_scale: tuple[float, float] = (0.85, 1.15)  # random box size factor
    min_area: int = 16  # objects smaller than this (pixels) are skipped
    objects_per_tile: int = 6  # synthetic: objects drawn from one tile per batch
    work_size: int = 0  # semantic task: image resized to this before cutting model-size windows (0: 2x the model input, the paper's 512/256)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"data.source must be one of {SOURCES}, got {self.source!r}")
        if self.task not in TASKS:
            raise ConfigError(f"data.task must be one of {TASKS}, got {self.task!r}")
        if self.source != "synthetic" and not self.root:
            raise ConfigError(f"data.source {self.source!r} needs data.root (the dataset folder)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_seed < 0:
            raise ConfigError(f"data.val_seed must be >= 0, got {self.val_seed}")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "preprocess": PreprocessConfig,
    "inference": InferenceConfig,
    "train": TrainConfig,
    "data": DataConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """A whole run: the model's SegDiffConfig plus training and data settings."""

    segdiff: SegDiffConfig = field(default_factory=lambda: get_preset("cpu-small"))
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preset: str = "cpu-small"

    def to_dict(self) -> dict[str, Any]:
        d = self.segdiff.to_dict()
        d["train"] = _plain(dataclasses.asdict(self.train))
        d["data"] = _plain(dataclasses.asdict(self.data))
        d["preset"] = self.preset
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        d = dict(data)
        preset = d.pop("preset", "cpu-small")
        train = _build(TrainConfig, d.pop("train", {}), "train")
        dat = _build(DataConfig, d.pop("data", {}), "data")
        return cls(SegDiffConfig.from_dict(d), train, dat, preset)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _build(cls: type, values: Mapping[str, Any], section: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"[{section}] unknown keys {unknown}; valid keys: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _fits(value: Any, annotation: Any) -> bool:
    """True if a config-file value (TOML/JSON types) fits a dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_fits(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple:
        item = (typing.get_args(annotation) or (Any,))[0]
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    return True


def _check_file_types(file_values: Mapping[str, Any]) -> None:
    """ConfigError naming the key for a config-file value of the wrong type (the flags are
    typed by argparse; a file's ``steps = "abc"`` used to fail deep inside as a TypeError)."""
    for section, values in file_values.items():
        if section not in SECTIONS or not isinstance(values, Mapping):
            continue  # reported by merge_run_config
        hints = typing.get_type_hints(SECTIONS[section])
        for key, value in values.items():
            if key in hints and not _fits(value, hints[key]):
                raise ConfigError(f"[{section}] {key} = {value!r}: expected {_type_name(hints[key])}")


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is None and isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


# ----------------------------------------------------------------------------- CLI flags
def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(annotation: Any):
    """argparse type for a dataclass field annotation (int, float, str, bool, tuples)."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return _parse_bool
    if annotation in (int, float, str):
        return annotation
    if origin is tuple:
        args = typing.get_args(annotation)
        item = args[0] if args else str

        def parse(text: str):
            parts = [p for p in text.split(",") if p.strip()]
            return tuple(item(p.strip()) for p in parts)

        return parse
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _converter(inner[0]) if inner else str
    return str


#: Fields that follow another setting and get no flag of their own.
DERIVED = {("model", "num_timesteps"), ("preprocess", "in_channels"), ("preprocess", "input_size")}


def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] = tuple(SECTIONS)) -> None:
    """Add one ``--section.field`` flag per config field (defaults come from the config)."""
    for section in sections:
        cls = SECTIONS[section]
        hints = typing.get_type_hints(cls)
        group = parser.add_argument_group(f"[{section}] settings ({cls.__name__})")
        for f in fields(cls):
            if (section, f.name) in DERIVED:
                continue  # follows another setting
            default = f.default if f.default is not dataclasses.MISSING else None
            group.add_argument(
                f"--{section}.{f.name}",
                dest=f"{section}.{f.name}",
                type=_converter(hints[f.name]),
                default=argparse.SUPPRESS,
                metavar=hints[f.name].__name__.upper() if isinstance(hints[f.name], type) else "VALUE",
                help=f"(default {default!r}; comma-separated for lists)" if default is not None else None,
            )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (.toml) or JSON (.json) config file into nested sections."""
    path = Path(path)
    try:
        text = path.read_bytes()
        data = tomllib.loads(text.decode()) if path.suffix.lower() == ".toml" else json.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold sections like [train], [model]")
    return data


def merge_run_config(
    preset: str, file_values: Mapping[str, Any] | None, flags: Mapping[str, Any], saved: Mapping[str, Any] | None = None,
) -> RunConfig:
    """preset < config file < flags (``{'train.steps': 10, ...}``) -> a validated RunConfig.

    ``saved`` (a resumed run's ``run.json``) replaces the preset as the base: a resumed run
    keeps every setting it was started with except those the file or the flags change.
    """
    if saved is not None:
        base = json.loads(json.dumps(saved))
        given = (file_values or {}).get("preset", preset)
        if given != base.get("preset"):
            raise ConfigError(f"the run was started from preset {base.get('preset')!r}; resuming cannot change it to {given!r}")
        file_values = {k: v for k, v in (file_values or {}).items() if k != "preset"}
    else:
        base = RunConfig(segdiff=get_preset(preset), preset=preset).to_dict()
    layers: list[Mapping[str, Any]] = []
    if file_values:
        _check_file_types(file_values)
        file_values = dict(file_values)
        if "preset" in file_values and file_values["preset"] != preset:
            base = RunConfig(segdiff=get_preset(file_values["preset"]), preset=file_values["preset"]).to_dict()
        layers.append(file_values)
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flags.items():
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = value
    layers.append(nested)
    for layer in layers:
        for section, values in layer.items():
            if section == "preset":
                continue
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section [{section}]; valid: {sorted(SECTIONS)}")
            if not isinstance(values, Mapping):
                raise ConfigError(f"config section [{section}] must be a table of keys")
            base[section].update({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})
    # keep the derived fields consistent
    base["model"]["num_timesteps"] = base["diffusion"]["num_timesteps"]
    base["preprocess"]["in_channels"] = base["model"]["in_channels"]
    base["preprocess"]["input_size"] = base["model"]["image_size"]
    return RunConfig.from_dict(base)
