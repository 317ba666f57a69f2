"""The one public entry point downstream code uses: load a model, segment a cropped patch.

>>> seg = Segmenter.from_checkpoint("model.pt")            # doctest: +SKIP
>>> result = seg.segment(patch, seed=0)                    # EnsembleResult at model size
>>> run = seg.segment_progressive(patch, seed=0)           # generator of SamplerStep ...
>>> for step in run: preview(step.pred_x0.mean(0))         # ... whose return value is the result

``patch`` is an image already cropped around the object (see :mod:`segdiff_core.data.crops`),
(H, W) or (H, W, C) in any dtype; it is normalised with the checkpoint's preprocessing and
resized to the model's input size if it is not already that size. Results are (S, S) maps at
the model's resolution; ``crops.paste_back`` maps them onto the image.
"""
from __future__ import annotations

import os
from typing import Any, Generator

import numpy as np
import torch

from segdiff_core.checkpoint import load_model
from segdiff_core.config import InferenceConfig, SegDiffConfig
from segdiff_core.data.preprocess import to_model_array
from segdiff_core.device import resolve_device
from segdiff_core.diffusion.sampler import SamplerStep, sample, sample_progressive
from segdiff_core.diffusion.scheduler import DDPMScheduler
from segdiff_core.ensemble import EnsembleResult, summarize
from segdiff_core.model import SegDiffModel


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or from fresh entropy when ``seed`` is None."""
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


class Segmenter:
    """A SegDiff model ready for inference on one device."""

    def __init__(
        self,
        model: SegDiffModel,
        config: SegDiffConfig,
        device: str | torch.device | None = "auto",
        metadata: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.metadata = dict(metadata or {})
        self.source = source
        self.scheduler = DDPMScheduler(config.diffusion)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = "auto") -> "Segmenter":
        """Load a model file (never executes code; raises CheckpointError on a bad file)."""
        dev = resolve_device(device)
        model, config, metadata = load_model(path, device=dev)
        return cls(model, config, dev, metadata, source=str(path))

    @property
    def input_size(self) -> int:
        return self.config.model.image_size

    @property
    def in_channels(self) -> int:
        return self.config.model.in_channels

    @property
    def inference(self) -> InferenceConfig:
        """The model's default inference settings (saved with the checkpoint)."""
        return self.config.inference

    def prepare(self, patch: np.ndarray) -> torch.Tensor:
        """Patch (H, W[, C]) any dtype -> normalised model input (1, in_channels, S, S) on the device."""
        arr = to_model_array(np.asarray(patch), self.config.preprocess, resize=True)  # (C, S, S)
        x = torch.from_numpy(arr)[None]
        return x.to(self.device)

    def segment_progressive(
        self,
        patch: np.ndarray,
        inference: InferenceConfig | None = None,
        seed: int | None = None,
        keep_generations: bool = False,
    ) -> Generator[SamplerStep, None, EnsembleResult]:
        """Yield every denoising step; the generator's return value is the EnsembleResult.

        Closing the generator (or simply not resuming it) cancels the run between steps.
        """
        inf = inference or self.config.inference
        image = self.prepare(patch)
        schedule = self.scheduler.sampling_schedule(inf.steps, inf.sampler, inf.eta)
        last: SamplerStep | None = None
        for last in sample_progressive(
            self.model,
            schedule,
            image,
            generations=inf.generations,
            generator=make_generator(seed),
            chunk_size=inf.chunk_size,
            clip_denoised=inf.clip_denoised,
        ):
            yield last
        assert last is not None
        return summarize(last.x_t, inf.threshold, keep_generations)

    def segment(
        self,
        patch: np.ndarray,
        inference: InferenceConfig | None = None,
        seed: int | None = None,
        keep_generations: bool = False,
    ) -> EnsembleResult:
        """Run all steps and return the EnsembleResult ((S, S) maps)."""
        run = self.segment_progressive(patch, inference, seed, keep_generations)
        while True:
            try:
                next(run)
            except StopIteration as stop:
                return stop.value

    def segment_batch(
        self,
        patches: list[np.ndarray],
        inference: InferenceConfig | None = None,
        seed: int | None = None,
        keep_generations: bool = False,
        batch_images: int = 8,
    ) -> list[EnsembleResult]:
        """Segment several patches, ``batch_images`` at a time through the network.

        Same results as calling :meth:`segment` on each (up to the random draws: one
        generator serves the whole call, so a seed reproduces the whole list).
        """
        inf = inference or self.config.inference
        schedule = self.scheduler.sampling_schedule(inf.steps, inf.sampler, inf.eta)
        gen = make_generator(seed)
        out: list[EnsembleResult] = []
        for s in range(0, len(patches), batch_images):
            images = torch.cat([self.prepare(p) for p in patches[s : s + batch_images]])
            x0 = sample(
                self.model, schedule, images, generations=inf.generations, generator=gen,
                chunk_size=inf.chunk_size, clip_denoised=inf.clip_denoised,
            )
            for rows in x0.reshape(images.shape[0], inf.generations, *x0.shape[1:]):
                out.append(summarize(rows, inf.threshold, keep_generations))
        return out
