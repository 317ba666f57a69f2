"""The annotator's settings: one immutable value object, free of Qt and napari.

Each setting is declared once, in :data:`SETTINGS` (label, type, range, choices, tooltip,
default): :class:`AnnotatorSettings` validates with it and the widget builds its controls from
it, so their ranges agree by construction.

The widget edits an :class:`AnnotatorSettings` (``settings.replace(field=value)``), the
controller reads it when a run starts, and :meth:`AnnotatorSettings.inference_for` turns it into
the :class:`~segdiff_core.config.InferenceConfig` of the loaded model (``0`` / ``"model"``
fields fall back to the defaults saved with the model, which are the fast ones).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from segdiff_core.config import InferenceConfig
from segdiff_core.data.crops import PAPER_MARGIN, CropProtocol
from segdiff_core.device import DEVICE_CHOICES
from segdiff_core.validation import check_choice, check_float, check_int

__all__ = [
    "SettingsError",
    "Setting",
    "SETTINGS",
    "MODEL_SOURCES",
    "PROTOCOLS",
    "SAMPLER_CHOICES",
    "PREVIEW_KINDS",
    "UNCERTAINTY_KINDS",
    "PAPER_STEPS",
    "MODEL_THRESHOLD",
    "AnnotatorSettings",
    "resolve_threshold",
]

PAPER_STEPS = 100
"""The paper samples with DDPM over all T = 100 steps."""

MODEL_THRESHOLD = 0.0
"""The *threshold* value that means "the threshold saved with the model" (like *steps* 0)."""


class SettingsError(ValueError):
    """A setting that cannot be used; the message says which and what to choose instead."""


@dataclass(frozen=True)
class Setting:
    """The one declaration of an annotator setting: validation and the widget both read it.

    Attributes
    ----------
    name : str
        The :class:`AnnotatorSettings` field.
    label : str
        Label of its control (the text of a check box).
    kind : type
        ``bool``, ``int``, ``float``, ``str`` (a choice, or free text) or ``Path``.
    default : object
        Default value.
    tooltip : str
        Tooltip of the control (ranges are added from ``lo``/``hi``).
    choices : tuple of (text, value), optional
        The allowed values of a choice, with the text the widget shows.
    lo, hi : float, optional
        Inclusive range of a number.
    step : float, optional
        Spin box step of a float.
    special : str, optional
        Text the widget shows for the value ``lo`` (e.g. ``"model default"`` for 0).
    free_text : bool
        A ``str`` that is not a fixed choice (e.g. the name of a fine-tuned model; the widget
        lists the values that exist at run time).
    """

    name: str
    label: str
    kind: type
    default: Any
    tooltip: str
    choices: tuple[tuple[str, Any], ...] | None = None
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    special: str | None = None
    free_text: bool = False

    @property
    def values(self) -> tuple[Any, ...]:
        return tuple(v for _, v in self.choices or ())

    def check(self, value: Any) -> Any:
        """``value`` validated (and normalised); :class:`SettingsError` if unusable."""
        what = self.label
        if self.kind is bool:
            if not isinstance(value, bool):
                raise SettingsError(f"{what} must be True or False, got {value!r}")
            return value
        if self.choices is not None:
            return check_choice(value, what, self.values, error=SettingsError)
        if self.free_text:
            if not isinstance(value, str):
                raise SettingsError(f"{what} must be text, got {value!r}")
            return value
        if self.kind is int:
            return check_int(value, what, self.lo, self.hi, error=SettingsError)
        if self.kind is float:
            return check_float(value, what, self.lo, self.hi, error=SettingsError)
        if self.kind is Path:
            if value is None:
                return None
            if not isinstance(value, (str, Path)):
                raise SettingsError(f"{what} must be a file path, got {value!r}")
            return Path(value)
        raise TypeError(f"setting {self.name} has an unsupported kind {self.kind!r}")

    def describe_range(self) -> str:
        """``" (0-1000; 0 = model default)"`` for numbers, ``""`` otherwise."""
        if self.lo is None or self.hi is None:
            return ""
        text = f" ({self.lo:g} to {self.hi:g}"
        return text + (f"; {self.lo:g} = {self.special})" if self.special else ")")


def resolve_threshold(threshold: float, defaults: InferenceConfig) -> float:
    """The threshold a mask is cut at: ``threshold``, or the model's own
    (``defaults.threshold``, saved in the model file) when it is :data:`MODEL_THRESHOLD`.

    The one place that resolves the plugin's *threshold* setting: runs
    (:meth:`AnnotatorSettings.inference_for`) and the review panel's re-threshold use it.
    """
    return float(defaults.threshold) if threshold == MODEL_THRESHOLD else float(threshold)


_MARGIN = f"{PAPER_MARGIN:.0%}"

SETTINGS: tuple[Setting, ...] = (
    Setting("model_source", "model", str, "bundled",
            "The nuclei model shipped with napari-segdiff, one you fine-tuned on your labels "
            "(Fine-tune panel), or a SegDiff checkpoint (.pt) you trained with segdiff-train",
            choices=(("bundled nuclei model", "bundled"), ("fine-tuned model", "finetuned"),
                     ("checkpoint file", "file"))),
    Setting("finetuned_model", "fine-tuned", str, "",
            "One of your fine-tuned models (in the data folder, newest first), used when the "
            "model is 'fine-tuned model'", free_text=True),
    Setting("model_path", "checkpoint", Path, None,
            "SegDiff model file (.pt); loaded once and reused until the file or device changes"),
    Setting("device", "device", str, "auto", "auto = CUDA GPU, else Apple MPS, else CPU",
            choices=tuple((d, d) for d in DEVICE_CHOICES)),
    Setting("protocol", "crop", str, "expansion",
            f"How a box becomes the model input. Expansion: a crop {_MARGIN} larger than the box "
            "(the paper's setting). Tight: the box itself. Custom: your margin. Whole-region "
            "windows: tile a large box with model-sized windows and label every object found",
            choices=((f"expansion {_MARGIN} (paper)", "expansion"), ("tight box", "tight"),
                     ("custom margin", "custom"), ("whole-region windows", "windows"))),
    Setting("margin", "margin", float, PAPER_MARGIN,
            f"Custom margin: the crop is (1 + margin) times the box ({PAPER_MARGIN:g} = {_MARGIN} larger)",
            lo=-0.9, hi=10.0, step=0.05),
    Setting("window_scale", "window scale", float, 1.0,
            "Whole-region windows: image pixels per model pixel (1 = native resolution; "
            "2 = windows cover twice the area at half the resolution)",
            lo=0.05, hi=64.0, step=0.25),
    Setting("window_overlap", "overlapping windows", bool, False,
            "Whole-region windows: half-window stride, overlaps averaged (slower, no seams)"),
    Setting("sampler", "sampler", str, "model",
            "Model default: the fast settings saved with the model. DDPM (paper): ancestral "
            f"sampling, {PAPER_STEPS} steps unless you set 'steps'",
            choices=(("model default (fast)", "model"), ("DDIM", "ddim"), ("DDPM (paper)", "ddpm"))),
    Setting("steps", "steps", int, 0,
            "Denoising steps; more than the model's T are capped at T. Time grows linearly with steps",
            lo=0, hi=1000, special="model default"),
    Setting("generations", "generations", int, 0,
            "Ensemble size: masks sampled and averaged. More generations = smoother probability "
            "and better uncertainty, linearly slower",
            lo=0, hi=1024, special="model default"),
    Setting("batch_boxes", "boxes per batch", int, 16,
            "Segment all / Find all: this many boxes go through the network together (much faster "
            "per box on a CPU); their objects are committed when the batch ends. 1 = one at a time. "
            "Whole-region windows always run one box at a time",
            lo=1, hi=256),
    Setting("threshold", "threshold", float, MODEL_THRESHOLD,
            "A pixel joins the object when its probability (mean over generations) exceeds this. "
            "Model default: the threshold saved with the model (chosen for it on a tuning set); "
            "1 could never be exceeded, so the range stops below it",
            lo=MODEL_THRESHOLD, hi=0.99, step=0.05, special="model default"),
    Setting("seed", "seed", int, 0,
            "Seed of the sampling noise: the same seed and settings reproduce a result",
            lo=-1, hi=2**31 - 1, special="random"),
    Setting("preview", "live preview", str, "pred_x0",
            "Shown over the crop while denoising (mean over generations, updated once a second)",
            choices=(("predicted mask (x0)", "pred_x0"), ("noisy state (x_t)", "x_t"))),
    Setting("uncertainty", "uncertainty", str, "std",
            "Uncertainty map: spread of the sampled masks, or binary entropy (bits) of their mean",
            choices=(("std across generations", "std"), ("entropy of the mean", "entropy"))),
    Setting("overwrite", "overwrite existing labels", bool, False,
            "Off: a new object only takes unlabelled pixels. On: it replaces other labels"),
    Setting("largest_object_only", "keep largest piece only", bool, True,
            "Box prompts: commit only the largest connected piece of the mask"),
    Setting("skip_empty", "skip boxes without an object", bool, True,
            "Warn instead of committing when the box holds no object (flat crop, mask that fills "
            "the crop, generations that disagree, a box over the whole image) or only slivers "
            "beside existing labels remain"),
)
"""Every annotator setting, in widget order."""

SCHEMA: dict[str, Setting] = {s.name: s for s in SETTINGS}

MODEL_SOURCES: tuple[str, ...] = SCHEMA["model_source"].values
PROTOCOLS: tuple[str, ...] = SCHEMA["protocol"].values
SAMPLER_CHOICES: tuple[str, ...] = SCHEMA["sampler"].values
PREVIEW_KINDS: tuple[str, ...] = SCHEMA["preview"].values
UNCERTAINTY_KINDS: tuple[str, ...] = SCHEMA["uncertainty"].values


def _default(name: str) -> Any:
    return dataclasses.field(default=SCHEMA[name].default)


@dataclass(frozen=True)
class AnnotatorSettings:
    """Everything the user can set in the annotator (validated on construction).

    Attributes
    ----------
    model_source: one of :data:`MODEL_SOURCES`.
    finetuned_model: name (file stem) of the fine-tuned model in the user's models folder
        (:func:`segdiff_core.training.finetune.models_dir`) used when
        ``model_source == "finetuned"``.
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
    batch_boxes: boxes sampled together in one network batch (``1`` = one at a time).
    threshold: probability above which a pixel belongs to the object, ``0`` = the model's
        own threshold (:func:`resolve_threshold`).
    seed: random seed of the sampling noise, ``-1`` = a fresh random seed for every run.
    preview: one of :data:`PREVIEW_KINDS`.
    uncertainty: one of :data:`UNCERTAINTY_KINDS`.
    overwrite: let a new object replace pixels that already carry another label.
    largest_object_only: in box mode keep only the largest connected piece of the mask.
    skip_empty: warn instead of committing when a box holds no object
        (:mod:`segdiff_core.objectness`) or only slivers beside existing labels remain.
    """

    model_source: str = _default("model_source")
    finetuned_model: str = _default("finetuned_model")
    model_path: Path | None = _default("model_path")
    device: str = _default("device")
    protocol: str = _default("protocol")
    margin: float = _default("margin")
    window_scale: float = _default("window_scale")
    window_overlap: bool = _default("window_overlap")
    sampler: str = _default("sampler")
    steps: int = _default("steps")
    generations: int = _default("generations")
    batch_boxes: int = _default("batch_boxes")
    threshold: float = _default("threshold")
    seed: int = _default("seed")
    preview: str = _default("preview")
    uncertainty: str = _default("uncertainty")
    overwrite: bool = _default("overwrite")
    largest_object_only: bool = _default("largest_object_only")
    skip_empty: bool = _default("skip_empty")

    def __post_init__(self) -> None:
        for setting in SETTINGS:  # one declaration per setting: see SETTINGS
            object.__setattr__(self, setting.name, setting.check(getattr(self, setting.name)))

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
        for setting in SETTINGS:
            if setting.name not in data:
                continue
            try:
                settings = settings.replace(**{setting.name: data[setting.name]})
            except (SettingsError, TypeError) as exc:
                problems.append(str(exc))
        return settings, problems

    # -- derived values -----------------------------------------------------------------------

    def crop_protocol(self) -> CropProtocol:
        """The box -> crop protocol (windows mode crops the box itself, tightly)."""
        if self.protocol == "custom":
            return CropProtocol.named("expansion", self.margin)
        return CropProtocol.named("tight" if self.protocol == "windows" else self.protocol)

    def inference_for(self, defaults: InferenceConfig, num_timesteps: int) -> InferenceConfig:
        """The sampling settings for a model whose saved defaults are ``defaults``.

        ``num_timesteps`` is the model's T: steps are capped at T, since no sampler can take
        more steps than the chain has.
        """
        changes: dict[str, Any] = {"threshold": resolve_threshold(self.threshold, defaults)}
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
