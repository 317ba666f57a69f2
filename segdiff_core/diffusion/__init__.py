"""Diffusion: the noise scheduler (maths only) and the sampling loop (generator)."""
from segdiff_core.diffusion.scheduler import DDPMScheduler, SamplingSchedule, StepOutput
from segdiff_core.diffusion.sampler import SamplerStep, sample, sample_progressive

__all__ = ["DDPMScheduler", "SamplingSchedule", "StepOutput", "SamplerStep", "sample", "sample_progressive"]
