"""Configuration objects: every hyper-parameter of a SegDiff model lives here.

One :class:`SegDiffConfig` (network + diffusion + preprocessing + default inference settings)
is saved inside every checkpoint, so that a model file alone says how to rebuild, feed and
sample the network (the stardist idea: the config travels with the weights).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypeVar

from segdiff_core.data.preprocess import PreprocessConfig

T = TypeVar("T")

#: Conditioning variants of the paper's ablation (Sec. 5, Table 4).
#: ``sum``: F(x_t) + G(I) (the paper's method); ``concat``: [F(x_t), G(I)] (variant 1);
#: ``raw_concat``: the raw image concatenated to x_t, no encoder (variant 3);
#: ``deepN``: G(I) added after the N-th downsample block (variants 4-6 are deep1/deep3/deep5).
CONDITIONING_RE = re.compile(r"^(sum|concat|raw_concat|deep[1-9])$")
TIME_EMBEDDINGS = ("learned", "sinusoidal")


class ConfigError(ValueError):
    """An inconsistent or unknown configuration value."""


def _from_dict(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{what}: unknown keys {unknown}; valid keys are {sorted(known)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    return cls(**kwargs)


def _to_dict(obj: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(obj).items()}


@dataclass(frozen=True)
class ModelConfig:
    """The denoiser eps_theta(x_t, I, t) = D(E(F(x_t) + G(I), t), t) (paper Eq. 17).

    Attributes
    ----------
    image_size
        side of the square model input (pixels).
    in_channels
        channels of the conditioning image I (1 gray, 3 RGB, any n).
    model_channels
        C, the width of F, G's output and the U-Net's first level.
    channel_mult
        U-Net width multiplier per resolution level (one level per entry;
        a stride-2 downsample between consecutive levels).
    num_res_blocks
        residual blocks per level in the encoder (the decoder has one more).
    attention_resolutions
        feature-map sides (pixels) at which self-attention is used
        (paper: 16 and 8).
    num_heads
        attention heads.
    dropout
        dropout inside residual blocks.
    rrdb_blocks
        number of RRDBs in the image encoder G.
    rrdb_features
        G's internal width (reference: 64).
    rrdb_growth
        growth channels of G's dense blocks (reference: 32).
    time_embedding
        ``learned`` (paper: a shared learned look-up table) or ``sinusoidal``
        (reference code).
    conditioning
        see :data:`CONDITIONING_RE`.
    norm_groups
        GroupNorm groups (reduced to a divisor of the channel count when needed).
    num_timesteps
        size of the learned time table; set from the diffusion config.
    box_channel
        feed the drawn prompt box as one extra input channel after the image
        channels (see :mod:`segdiff_core.data.prompt`). Model files without the field
        load with ``False`` (the old behaviour).
    self_condition
        self-conditioning on the previous x_0 estimate (Chen et al., "Analog Bits",
        Sec. 3): F reads the model's own x_0 estimate of the previous reverse step as one
        extra channel after x_t (zeros at the first step, and in half of the training
        batches; the other half feed a first, gradient-free estimate). Model files without
        the field load with ``False``.
    """

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    dropout: float = 0.0
    rrdb_blocks: int = 2
    rrdb_features: int = 32
    rrdb_growth: int = 16
    time_embedding: str = "learned"
    conditioning: str = "sum"
    norm_groups: int = 32
    num_timesteps: int = 100
    box_channel: bool = False
    self_condition: bool = False

    def __post_init__(self) -> None:
        for name in ("box_channel", "self_condition"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8, got {self.image_size}")
        if self.in_channels < 1 or self.model_channels < 1:
            raise ConfigError("in_channels and model_channels must be positive")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ConfigError(f"channel_mult must be non-empty positive ints, got {self.channel_mult}")
        n_down = len(self.channel_mult) - 1
        if self.image_size % (2**n_down) != 0:
            raise ConfigError(
                f"image_size {self.image_size} is not divisible by 2**{n_down} "
                f"(one halving per level of channel_mult={self.channel_mult})"
            )
        if self.num_res_blocks < 1:
            raise ConfigError("num_res_blocks must be >= 1")
        if self.rrdb_blocks < 0:
            raise ConfigError("rrdb_blocks must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.time_embedding not in TIME_EMBEDDINGS:
            raise ConfigError(f"time_embedding must be one of {TIME_EMBEDDINGS}, got {self.time_embedding!r}")
        if not CONDITIONING_RE.match(self.conditioning):
            raise ConfigError(
                f"conditioning must be 'sum', 'concat', 'raw_concat' or 'deepN' (N = 1..9), "
                f"got {self.conditioning!r}"
            )
        if self.inject_level is not None and self.inject_level > n_down:
            raise ConfigError(
                f"conditioning {self.conditioning!r} adds G(I) after downsample block "
                f"{self.inject_level}, but channel_mult={self.channel_mult} has only {n_down}"
            )
        if self.num_timesteps < 1:
            raise ConfigError("num_timesteps must be >= 1")

    @property
    def input_channels(self) -> int:
        """Channels the network reads: the image's plus the prompt-box channel if enabled."""
        return self.in_channels + int(self.box_channel)

    @property
    def inject_level(self) -> int | None:
        """For ``deepN`` conditioning: N, the downsample block after which G(I) is added."""
        return int(self.conditioning[4:]) if self.conditioning.startswith("deep") else None

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        return _from_dict(cls, data, "model config")


PREDICTIONS = ("eps", "x0", "v")


@dataclass(frozen=True)
class DiffusionConfig:
    """DDPM forward process (paper Eq. 1-5): linear betas, scaled by 1000/T like the reference.

    ``prediction`` is what the network outputs: ``eps`` (the paper, Eq. 18: the noise) or
    ``x0`` (the clean mask; the loss is then the MSE on x_0) or ``v`` (Salimans & Ho 2022:
    v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0). All feed the same samplers.

    ``noise_shift`` s >= 1 shifts the whole noise schedule toward high noise: the signal-to-
    noise ratio of every step is divided by s**2, abar'_t = abar_t / (abar_t + s**2 (1 - abar_t))
    (Hoogeboom et al. 2023, "simple diffusion"; Chen 2023, "On the importance of noise
    scheduling"). 1 is the plain linear schedule.
    """

    num_timesteps: int = 100
    beta_start: float = 1e-4
    beta_end: float = 0.02
    scale_betas: bool = True
    prediction: str = "eps"
    noise_shift: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.noise_shift, (int, float)) and self.noise_shift >= 1.0):
            raise ConfigError(f"noise_shift must be a number >= 1, got {self.noise_shift!r}")
        if self.prediction not in PREDICTIONS:
            raise ConfigError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.num_timesteps < 1:
            raise ConfigError("num_timesteps must be >= 1")
        scale = 1000.0 / self.num_timesteps if self.scale_betas else 1.0
        if not 0.0 < self.beta_start * scale <= self.beta_end * scale < 1.0:
            raise ConfigError(
                f"T={self.num_timesteps} with betas {self.beta_start}..{self.beta_end}"
                f"{' scaled by 1000/T' if self.scale_betas else ''} gives beta_T = "
                f"{self.beta_end * scale:g}; betas must lie in (0, 1). Use more steps "
                f"(T >= {int(1000 * self.beta_end) + 1} with the default scaling)."
            )

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DiffusionConfig":
        return _from_dict(cls, data, "diffusion config")


SAMPLERS = ("ddim", "ddpm")


@dataclass(frozen=True)
class InferenceConfig:
    """How to sample an ensemble: generations, steps, sampler, threshold.

    ``steps`` is the number of denoising steps actually run; it may be smaller than T
    (respacing, improved-diffusion Sec. 4) for both samplers. ``eta`` is DDIM's noise scale.
    ``chunk_size`` bounds how many generations go through the network at once (memory).
    """

    generations: int = 8
    steps: int = 10
    sampler: str = "ddim"
    eta: float = 0.0
    threshold: float = 0.5
    clip_denoised: bool = True
    chunk_size: int = 32

    def __post_init__(self) -> None:
        if self.generations < 1:
            raise ConfigError(f"generations must be >= 1, got {self.generations}")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.eta < 0:
            raise ConfigError("eta must be >= 0")
        if self.chunk_size < 1:
            raise ConfigError("chunk_size must be >= 1")

    def replace(self, **changes: Any) -> "InferenceConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InferenceConfig":
        return _from_dict(cls, data, "inference config")


@dataclass(frozen=True)
class SegDiffConfig:
    """Everything needed to rebuild, feed and sample a SegDiff model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    preprocess: PreprocessConfig | None = None
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        if self.model.num_timesteps != self.diffusion.num_timesteps:
            raise ConfigError(
                f"model.num_timesteps ({self.model.num_timesteps}) must equal "
                f"diffusion.num_timesteps ({self.diffusion.num_timesteps})"
            )
        if self.preprocess is None:
            object.__setattr__(
                self,
                "preprocess",
                PreprocessConfig(in_channels=self.model.in_channels, input_size=self.model.image_size),
            )
        pp = self.preprocess
        assert pp is not None
        if pp.in_channels != self.model.in_channels or pp.input_size != self.model.image_size:
            raise ConfigError(
                f"preprocess (channels {pp.in_channels}, size {pp.input_size}) does not match "
                f"the model (channels {self.model.in_channels}, size {self.model.image_size})"
            )
        if self.inference.steps > self.diffusion.num_timesteps:
            raise ConfigError(
                f"inference.steps ({self.inference.steps}) cannot exceed T "
                f"({self.diffusion.num_timesteps})"
            )

    def replace(self, **changes: Any) -> "SegDiffConfig":
        return dataclasses.replace(self, **changes)

    def with_model(self, **changes: Any) -> "SegDiffConfig":
        """A copy with model fields changed; the preprocessing follows the new input size/channels."""
        model = dataclasses.replace(self.model, **changes)
        assert self.preprocess is not None
        pp = dataclasses.replace(self.preprocess, in_channels=model.in_channels, input_size=model.image_size)
        return dataclasses.replace(self, model=model, preprocess=pp)

    def to_dict(self) -> dict[str, Any]:
        assert self.preprocess is not None
        return {
            "model": self.model.to_dict(),
            "diffusion": self.diffusion.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "inference": self.inference.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SegDiffConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {"model", "diffusion", "preprocess", "inference"})
        if unknown:
            raise ConfigError(f"config: unknown sections {unknown}")
        return cls(
            model=ModelConfig.from_dict(data.get("model", {})),
            diffusion=DiffusionConfig.from_dict(data.get("diffusion", {})),
            preprocess=PreprocessConfig.from_dict(data["preprocess"]) if "preprocess" in data else None,
            inference=InferenceConfig.from_dict(data.get("inference", {})),
        )
