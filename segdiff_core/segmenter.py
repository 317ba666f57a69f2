"""The one public entry point downstream code uses: load a model, segment a cropped patch.

>>> seg = Segmenter.from_checkpoint("model.pt")            # doctest: +SKIP
>>> result = seg.segment(patch, seed=0)                    # EnsembleResult at model size
>>> run = seg.segment_progressive(patch, seed=0)           # generator of SamplerStep ...
>>> for step in run: preview(step.pred_x0.mean(0))         # ... whose return value is the result
>>> run = seg.segment_batch_progressive(patches, seed=0)    # many prompts through the network at once

``patch`` is an image already cropped around the object (see :mod:`segdiff_core.data.crops`),
(H, W) or (H, W, C) in any dtype; it is normalised with the checkpoint's preprocessing and
resized to the model's input size if it is not already that size. Results are (S, S) maps at
the model's resolution; ``crops.paste_back`` maps them onto the image.

``box`` is the drawn prompt box in the patch's pixel coordinates (a :class:`Box`, pixel-edge
units); :func:`segdiff_core.data.prompt.box_in_crop` computes it from the crop geometry. Models
with a prompt-box input channel (``config.model.box_channel``) read it; without a box they get
the nominal box of the default 15 % expansion crop (:func:`segdiff_core.data.prompt.nominal_box`).
Other models ignore it.
"""
from __future__ import annotations

import os
from typing import Any, Generator, Sequence

import numpy as np
import torch

from segdiff_core.checkpoint import load_model
from segdiff_core.config import InferenceConfig, SegDiffConfig
from segdiff_core.data.preprocess import to_model_array
from segdiff_core.data.boxes import Box
from segdiff_core.data.prompt import box_channel
from segdiff_core.device import resolve_device
from segdiff_core.diffusion.sampler import SamplerStep, sample_progressive
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
    """A SegDiff model ready for inference on one device.

    On the CPU the model's weights are moved to the ``channels_last`` memory format (in place:
    the module passed in is converted): measured faster per prompt in every round of
    ``benchmarks/bench_prompt.py --tuning`` (docs/benchmarks.md); results are the same up to
    floating-point rounding.
    """

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
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
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

    def model_input(self, patch: np.ndarray, box: Box | None = None) -> torch.Tensor:
        """Patch (H, W[, C]) any dtype -> model input (1, input_channels, S, S) on the device.

        The image channels are normalised and resized to S x S; a model with a prompt-box
        channel gets ``box`` (patch pixel coordinates; None: the nominal box) rasterised after them.
        """
        patch = np.asarray(patch)
        arr = to_model_array(patch, self.config.preprocess, resize=True)  # (C, S, S)
        x = torch.from_numpy(arr)[None]
        if self.config.model.box_channel:
            s = self.input_size
            if box is not None:
                fy, fx = s / patch.shape[0], s / patch.shape[1]
                box = Box(box.y0 * fy, box.x0 * fx, box.y1 * fy, box.x1 * fx)
            x = torch.cat([x, torch.from_numpy(box_channel(box, (s, s)))[None, None]], dim=1)
        return x.to(self.device)

    prepare = model_input  # former name

    def segment_progressive(
        self,
        patch: np.ndarray,
        inference: InferenceConfig | None = None,
        seed: int | None = None,
        keep_generations: bool = False,
        box: Box | None = None,
    ) -> Generator[SamplerStep, None, EnsembleResult]:
        """Yield every denoising step; the generator's return value is the EnsembleResult.

        Closing the generator (or simply not resuming it) cancels the run between steps.
        """
        results = yield from self.segment_batch_progressive([patch], inference, seed, keep_generations, [box])
        return results[0]

    def segment_batch_progressive(
        self,
        patches: Sequence[np.ndarray],
        inference: InferenceConfig | None = None,
        seed: int | None = None,
        keep_generations: bool = False,
        boxes: Sequence[Box | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> Generator[SamplerStep, None, list[EnsembleResult]]:
        """All ``patches`` through the network together, yielding every denoising step.

        Each :class:`SamplerStep` holds the states of the whole batch, image-major: rows
        ``n * G .. n * G + G - 1`` of ``x_t`` / ``pred_x0`` (``(N * G, 1, S, S)``) belong to
        ``patches[n]``. The return value is one EnsembleResult per patch. ``generator`` (a
        CPU generator) replaces ``seed`` when a caller draws several batches from one stream.
        Closing the generator cancels the whole batch between steps.
        """
        if len(patches) == 0:
            raise ValueError("no patches to segment")
        if boxes is not None and len(boxes) != len(patches):
            raise ValueError(f"got {len(boxes)} boxes for {len(patches)} patches")
        inf = inference or self.config.inference
        box_list = list(boxes) if boxes is not None else [None] * len(patches)
        images = torch.cat([self.model_input(p, b) for p, b in zip(patches, box_list)])
        schedule = self.scheduler.sampling_schedule(inf.steps, inf.sampler, inf.eta)
        last: SamplerStep | None = None
        for last in sample_progressive(
            self.model,
            schedule,
            images,
            generations=inf.generations,
            generator=generator if generator is not None else make_generator(seed),
            chunk_size=inf.chunk_size,
            clip_denoised=inf.clip_denoised,
        ):
            yield last
        assert last is not None
        x0 = last.x_t.reshape(len(patches), inf.generations, *last.x_t.shape[1:])
        return [summarize(rows, inf.threshold, keep_generations) for rows in x0]

    def segment(
        self,
        patch: np.ndarray,
        inference: InferenceConfig | None = None,
        seed: int | None = None,
        keep_generations: bool = False,
        box: Box | None = None,
    ) -> EnsembleResult:
        """Run all steps and return the EnsembleResult ((S, S) maps)."""
        return _run_to_end(self.segment_progressive(patch, inference, seed, keep_generations, box))

    def segment_batch(
        self,
        patches: list[np.ndarray],
        inference: InferenceConfig | None = None,
        seed: int | None = None,
        keep_generations: bool = False,
        batch_images: int = 8,
        boxes: list[Box | None] | None = None,
    ) -> list[EnsembleResult]:
        """Segment several patches, ``batch_images`` at a time through the network.

        ``boxes``: one prompt box (or None) per patch, as ``box`` of :meth:`segment`.

        Same results as calling :meth:`segment` on each (up to the random draws: one
        generator serves the whole call, so a seed reproduces the whole list).
        """
        if boxes is not None and len(boxes) != len(patches):
            raise ValueError(f"got {len(boxes)} boxes for {len(patches)} patches")
        box_list = list(boxes) if boxes is not None else [None] * len(patches)
        gen = make_generator(seed)
        out: list[EnsembleResult] = []
        for s in range(0, len(patches), batch_images):
            run = self.segment_batch_progressive(
                patches[s : s + batch_images], inference, keep_generations=keep_generations,
                boxes=box_list[s : s + batch_images], generator=gen,
            )
            out.extend(_run_to_end(run))
        return out


def _run_to_end(run: Generator[Any, None, Any]) -> Any:
    """Exhaust a progressive generator; its return value."""
    while True:
        try:
            next(run)
        except StopIteration as stop:
            return stop.value
