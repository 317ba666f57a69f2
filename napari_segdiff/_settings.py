"""The annotator's settings: one immutable value object, free of Qt and napari.

The widget edits an :class:`AnnotatorSettings` (``settings.replace(field=value)``), the
controller reads it when a run starts, and :meth:`AnnotatorSettings.inference_for` turns it into
the :class:`~segdiff_core.config.InferenceConfig` of the loaded model (``0`` / ``"model"``
fields fall back to the defaults saved with the model, which are the fast ones).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from segdiff_core.config import InferenceConfig
from segdiff_core.data.crops import CropProtocol
from segdiff_core.device import DEVICE_CHOICES

__all__ = [
    "SettingsError",
    "MODEL_SOURCES",
    "PROTOCOLS",
    "SAMPLER_CHOICES",
    "PREVIEW_KINDS",
    "UNCERTAINTY_KINDS",
    "PAPER_STEPS",
    "AnnotatorSettings",
]

MODEL_SOURCES: tuple[str, ...] = ("bundled", "file")
"""``bundled``: the nuclei model shipped with the package; ``file``: :attr:`model_path`."""

PROTOCOLS: tuple[str, ...] = ("expansion", "tight", "custom", "windows")
"""Crop protocols: 15 % expansion (paper), tight box, custom margin, whole-region windows."""

SAMPLER_CHOICES: tuple[str, ...] = ("model", "ddim", "ddpm")
"""``model``: the sampler saved with the model (its fast default); ``ddpm``: the paper's."""

PREVIEW_KINDS: tuple[str, ...] = ("pred_x0", "x_t")
"""Live preview: the model's current estimate of the final mask, or the noisy state x_t."""

UNCERTAINTY_KINDS: tuple[str, ...] = ("std", "entropy")
"""Uncertainty map: spread of the generations (std) or binary entropy of their mean (bits)."""

PAPER_STEPS = 100
"""The paper samples with DDPM over all T = 100 steps."""

EXPANSION_MARGIN = 0.15


class SettingsError(ValueError):
    """A setting that cannot be used; the message says which and what to choose instead."""


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise SettingsError(f"{name} must be {bound}, got {value}")
    return value


def _check_float(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        rng = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise SettingsError(f"{name} must lie in {rng}, got {value!r}")
    return v


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


@dataclass(frozen=True)
class AnnotatorSettings:
    """Everything the user can set in the annotator (validated on construction).

    Attributes
    ----------
    model_source: one of :data:`MODEL_SOURCES`.
    model_path: the checkpoint file used when ``model_source == "file"``.
    device: one of :data:`segdiff_core.device.DEVICE_CHOICES` (``auto`` picks CUDA, MPS, CPU).
    protocol: one of :data:`PROTOCOLS`.
    margin: crop enlargement for ``protocol == "custom"`` (``0.15`` = 15 % larger), ``> -0.9``.
    window_scale: ``protocol == "windows"``: image pixels per model pixel (1 = native).
    window_overlap: ``protocol == "windows"``: half-window stride (overlapping windows are
        averaged) instead of edge-to-edge windows.
    sampler: one of :data:`SAMPLER_CHOICES`.
    steps: denoising steps, ``0`` = the model's default.
    generations: ensemble size, ``0`` = the model's default.
    threshold: probability above which a pixel belongs to the object.
    seed: random seed of the sampling noise, ``-1`` = a fresh random seed for every run.
    preview: one of :data:`PREVIEW_KINDS`.
    uncertainty: one of :data:`UNCERTAINTY_KINDS`.
    overwrite: let a new object replace pixels that already carry another label.
    largest_object_only: in box mode keep only the largest connected piece of the mask.
    skip_empty: warn instead of committing when a box holds no object
        (:mod:`segdiff_core.objectness`) or only slivers beside existing labels remain.
    """

    model_source: str = "bundled"
    model_path: Path | None = None
    device: str = "auto"
    protocol: str = "expansion"
    margin: float = EXPANSION_MARGIN
    window_scale: float = 1.0
    window_overlap: bool = False
    sampler: str = "model"
    steps: int = 0
    generations: int = 0
    threshold: float = 0.5
    seed: int = 0
    preview: str = "pred_x0"
    uncertainty: str = "std"
    overwrite: bool = False
    largest_object_only: bool = True
    skip_empty: bool = True

    def __post_init__(self) -> None:
        _check_choice("model source", self.model_source, MODEL_SOURCES)
        if self.model_path is not None and not isinstance(self.model_path, Path):
            object.__setattr__(self, "model_path", Path(self.model_path))
        _check_choice("device", self.device, DEVICE_CHOICES)
        _check_choice("crop protocol", self.protocol, PROTOCOLS)
        object.__setattr__(self, "margin", _check_float("margin", self.margin, -0.9, 10.0))
        object.__setattr__(
            self, "window_scale", _check_float("window scale", self.window_scale, 0.0, 64.0, lo_open=True)
        )
        _check_choice("sampler", self.sampler, SAMPLER_CHOICES)
        _check_int("steps", self.steps, 0, 1000)
        _check_int("generations", self.generations, 0, 1024)
        object.__setattr__(self, "threshold", _check_float("threshold", self.threshold, 0.0, 1.0))
        _check_int("seed", self.seed, -1, 2**63 - 1)
        _check_choice("preview", self.preview, PREVIEW_KINDS)
        _check_choice("uncertainty", self.uncertainty, UNCERTAINTY_KINDS)
        for name in ("window_overlap", "overwrite", "largest_object_only", "skip_empty"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> "AnnotatorSettings":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    # -- saving -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-safe values (``model_path`` as a string or None)."""
        out = dataclasses.asdict(self)
        out["model_path"] = None if self.model_path is None else str(self.model_path)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> tuple["AnnotatorSettings", list[str]]:
        """Settings read back from :meth:`to_dict` output, field by field, and the problems.

        A value that does not validate keeps its default and adds a message to the problems;
        unknown keys (from a newer or older version) are ignored. Never raises.
        """
        settings = cls()
        if not isinstance(data, Mapping):
            return settings, [f"saved settings are a {type(data).__name__}, not a table of values"]
        problems = []
        for field in dataclasses.fields(cls):
            if field.name not in data:
                continue
            value = data[field.name]
            if field.name == "model_path" and value is not None:
                if not isinstance(value, str):
                    problems.append(f"model_path must be a file path, got {value!r}")
                    continue
                value = Path(value)
            try:
                settings = settings.replace(**{field.name: value})
            except (SettingsError, TypeError) as exc:
                problems.append(str(exc))
        return settings, problems

    # -- derived values -----------------------------------------------------------------------

    def crop_protocol(self) -> CropProtocol:
        """The box -> crop protocol (windows mode crops the box itself, tightly)."""
        if self.protocol == "expansion":
            return CropProtocol.expansion(EXPANSION_MARGIN)
        if self.protocol == "custom":
            return CropProtocol.expansion(self.margin)
        return CropProtocol.tight()

    def inference_for(self, defaults: InferenceConfig, num_timesteps: int) -> InferenceConfig:
        """The sampling settings for a model whose saved defaults are ``defaults``.

        ``num_timesteps`` is the model's T: steps are capped at T, since no sampler can take
        more steps than the chain has.
        """
        changes: dict[str, Any] = {"threshold": self.threshold}
        if self.sampler != "model":
            changes["sampler"] = self.sampler
        steps = self.steps
        if steps == 0 and self.sampler == "ddpm" and defaults.sampler != "ddpm":
            steps = PAPER_STEPS  # "DDPM (paper)" without an explicit count: the paper's 100
        if steps:
            changes["steps"] = min(steps, num_timesteps)
        elif defaults.steps > num_timesteps:
            changes["steps"] = num_timesteps
        if self.generations:
            changes["generations"] = self.generations
        return defaults.replace(**changes)

    def run_seed(self, fresh: int) -> int:
        """The seed of one run: :attr:`seed`, or ``fresh`` when the seed is ``-1`` (random)."""
        return fresh if self.seed < 0 else self.seed
