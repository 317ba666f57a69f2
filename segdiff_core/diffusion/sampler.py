"""The sampling loop: a generator that yields every reverse step (improved-diffusion's
``p_sample_loop_progressive``), so a GUI can preview x_t and cancel between steps.

The loop knows only two contracts: the network's ``encode_image`` / ``denoise`` and the
schedule's ``step``. All generations of one image run as one batch (in chunks of at most
``chunk_size`` through the network), and G(I) is computed once and reused for every step and
every generation, since it depends on neither x_t nor t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from segdiff_core.diffusion.scheduler import SamplingSchedule
from segdiff_core.model import SegDiffModel


@dataclass(frozen=True)
class SamplerStep:
    """One reverse step of an ensemble run.

    Attributes
    ----------
    index
        0-based position of the step in this run.
    num_steps
        how many steps the run has.
    timestep
        training-chain step t that was denoised in this step.
    x_t
        the state after the step, (N * G, 1, H, W) for N images and G generations
        (x_0 after the last).
    pred_x0
        the model's estimate of x_0 at this step, same shape, in [-1, 1] if clipped.
    """

    index: int
    num_steps: int
    timestep: int
    x_t: torch.Tensor
    pred_x0: torch.Tensor

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] < 1:
        raise ValueError(f"image must be (C, H, W) or (N, C, H, W), got {tuple(image.shape)}")
    return image


def sample_progressive(
    model: SegDiffModel,
    schedule: SamplingSchedule,
    image: torch.Tensor,
    generations: int = 1,
    generator: torch.Generator | None = None,
    chunk_size: int = 32,
    clip_denoised: bool = True,
    reuse_encoding: bool = True,
) -> Iterator[SamplerStep]:
    """Yield each step of ``generations`` reverse chains per image (Alg. 1).

    Parameters
    ----------
    model
        the denoiser, already on the right device and in eval mode.
    schedule
        from :meth:`DDPMScheduler.sampling_schedule`.
    image
        preprocessed conditioning image (C, H, W), or N images (N, C, H, W), on the
        model's device. With N images the states are (N * G, 1, H, W), image-major
        (rows n*G .. n*G+G-1 belong to image n).
    generations
        number of independent samples per image (the paper averages 30).
    generator
        CPU generator for all noise; the same seed gives the same samples,
        whatever ``chunk_size`` and device.
    chunk_size
        at most this many generations go through the network at once.
    clip_denoised
        clamp predicted x_0 to [-1, 1] (masks live there).
    reuse_encoding
        compute G(I) once (default). False recomputes it at every step for
        every chunk, as the reference code does; kept for benchmarks and the equality test.
    """
    if generations < 1:
        raise ValueError(f"generations must be >= 1, got {generations}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    image = _as_batch(image)
    device = image.device
    n_images, _, h, w = image.shape
    total = n_images * generations
    with torch.inference_mode():
        cond = model.encode_image(image) if reuse_encoding else None
        x = torch.randn((total, 1, h, w), generator=generator, dtype=torch.float32).to(device)
        # Row r of the batch belongs to image r // generations.
        owner = torch.arange(total, device=device) // generations

    def conditioning(s: int, e: int) -> torch.Tensor:
        if n_images == 1:  # one image: its encoding broadcasts over the generations
            return cond if cond is not None else model.encode_image(image)
        if cond is not None:
            return cond[owner[s:e]]
        return model.encode_image(image[owner[s:e]])

    n = len(schedule)
    # Self-conditioning (config.self_condition): each step reads the previous step's x_0 estimate.
    x0_prev = None
    self_cond = bool(getattr(model.config, "self_condition", False))
    for i, t in enumerate(schedule.timesteps.tolist()):
        # Grad mode is thread-local: enter inference mode per step, never across a yield.
        with torch.inference_mode():
            chunks = []  # the network's output: eps, x_0 or v (the scheduler's prediction)
            for s in range(0, total, chunk_size):
                xs = x[s : s + chunk_size]
                ts = torch.full((xs.shape[0],), t, dtype=torch.long, device=device)
                x0s = x0_prev[s : s + chunk_size] if x0_prev is not None else None
                chunks.append(model.denoise(xs, ts, conditioning(s, s + xs.shape[0]), x0s))
            model_output = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
            out = schedule.step(model_output, i, x, generator=generator, clip_denoised=clip_denoised)
            x = out.prev_sample
            x0_prev = out.pred_x0 if self_cond else None
        yield SamplerStep(index=i, num_steps=n, timestep=t, x_t=x, pred_x0=out.pred_x0)


def sample(*args, **kwargs) -> torch.Tensor:
    """Run :func:`sample_progressive` to the end; return x_0 of every generation (N * G, 1, H, W)."""
    last = None
    for last in sample_progressive(*args, **kwargs):
        pass
    assert last is not None
    return last.x_t
