"""The noise scheduler's maths against hand-computed values and the step-by-step chain."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segdiff_core.config import ConfigError, DiffusionConfig
from segdiff_core.diffusion.scheduler import DDPMScheduler

HAND = DiffusionConfig(num_timesteps=4, beta_start=0.1, beta_end=0.4, scale_betas=False)


def test_linear_betas_scaled_by_1000_over_T():
    s = DDPMScheduler(DiffusionConfig(num_timesteps=100))
    assert s.betas[0] == pytest.approx(0.001)
    assert s.betas[-1] == pytest.approx(0.2)
    assert np.allclose(np.diff(s.betas), (0.2 - 0.001) / 99)


@pytest.mark.parametrize("T", [20, 10, 1])
def test_T_that_makes_beta_exceed_one_is_rejected(T):
    with pytest.raises(ConfigError, match="betas must lie in"):
        DiffusionConfig(num_timesteps=T)


def test_hand_computed_alphas_cumprod_and_forward_sample():
    s = DDPMScheduler(HAND)
    assert np.allclose(s.betas, [0.1, 0.2, 0.3, 0.4])
    assert np.allclose(s.alphas_cumprod, [0.9, 0.72, 0.504, 0.3024])
    x0 = torch.tensor([[1.0, -1.0]])
    noise = torch.tensor([[0.5, 2.0]])
    xt = s.add_noise(x0, noise, torch.tensor([2]))
    expected = [np.sqrt(0.504) * 1 + np.sqrt(0.496) * 0.5, -np.sqrt(0.504) + np.sqrt(0.496) * 2]
    assert torch.allclose(xt, torch.tensor([expected], dtype=torch.float32), atol=1e-6)


def test_closed_form_matches_step_by_step_chain_coefficients():
    """Iterating Eq. 2 gives mean coefficient sqrt(abar_t) and variance 1 - abar_t (Eq. 4)."""
    s = DDPMScheduler(DiffusionConfig(num_timesteps=100))
    coef, var = 1.0, 0.0
    for t in range(100):
        coef *= np.sqrt(s.alphas[t])
        var = s.alphas[t] * var + s.betas[t]
        assert coef == pytest.approx(np.sqrt(s.alphas_cumprod[t]), rel=1e-10)
        assert var == pytest.approx(1 - s.alphas_cumprod[t], rel=1e-10)


def test_closed_form_matches_step_by_step_chain_monte_carlo():
    s = DDPMScheduler(DiffusionConfig(num_timesteps=50))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((1_000_000,), 0.7, dtype=torch.float64)
    x = x0.clone()
    for t in range(30):
        x = s.q_step(x, torch.randn(x.shape, generator=gen, dtype=torch.float64), t)
    direct = s.add_noise(x0.float(), torch.randn(x.shape, generator=gen), torch.full((x.shape[0],), 29))
    ac = s.alphas_cumprod[29]
    assert x.mean().item() == pytest.approx(0.7 * np.sqrt(ac), abs=5e-3)
    assert x.var().item() == pytest.approx(1 - ac, abs=5e-3)
    assert direct.double().mean().item() == pytest.approx(x.mean().item(), abs=6e-3)
    assert direct.double().var().item() == pytest.approx(x.var().item(), abs=6e-3)


def test_full_schedule_visits_every_step_with_original_betas():
    s = DDPMScheduler(DiffusionConfig(num_timesteps=100))
    sched = s.sampling_schedule()
    assert sched.timesteps.tolist() == list(range(99, -1, -1))
    assert np.allclose([sched.beta(i) for i in range(100)], s.betas[::-1])


def test_respaced_schedule_keeps_alpha_bar_at_visited_steps():
    s = DDPMScheduler(DiffusionConfig(num_timesteps=100))
    sched = s.sampling_schedule(10, "ddpm")
    assert len(sched) == 10 and sched.timesteps[0] == 99 and sched.timesteps[-1] == 0
    assert np.all(np.diff(sched.timesteps) < 0)
    # prod of respaced alphas from the end equals abar at each visited step
    prod = np.cumprod([1 - sched.beta(i) for i in range(9, -1, -1)])[::-1]
    assert np.allclose(prod, s.alphas_cumprod[sched.timesteps])


def test_ddpm_step_equals_algorithm_1():
    """Unclipped posterior-mean form == x_{t-1} = (x_t - beta/sqrt(1-abar) eps)/sqrt(alpha) + sqrt(beta) z."""
    s = DDPMScheduler(HAND)
    sched = s.sampling_schedule(4, "ddpm")
    gen = torch.Generator().manual_seed(1)
    x_t, eps, z = (torch.randn(3, 1, 4, 4, generator=gen) for _ in range(3))
    out = sched.step(eps, 1, x_t, clip_denoised=False, noise=z)  # t = 2
    beta, ac = 0.3, 0.504
    expected = (x_t - beta / np.sqrt(1 - ac) * eps) / np.sqrt(1 - beta) + np.sqrt(beta) * z
    assert torch.allclose(out.prev_sample, expected, atol=1e-5)
    assert torch.allclose(out.pred_x0, (x_t - np.sqrt(1 - ac) * eps) / np.sqrt(ac), atol=1e-5)


def test_last_step_adds_no_noise():
    s = DDPMScheduler(HAND)
    sched = s.sampling_schedule(4, "ddpm")
    x_t, eps = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    a = sched.step(eps, 3, x_t, clip_denoised=False, noise=torch.randn(2, 1, 3, 3))
    b = sched.step(eps, 3, x_t, clip_denoised=False, noise=torch.zeros(2, 1, 3, 3))
    assert torch.equal(a.prev_sample, b.prev_sample)
    assert torch.allclose(a.prev_sample, a.pred_x0)


def test_clipping_bounds_predicted_x0():
    s = DDPMScheduler(HAND)
    sched = s.sampling_schedule(4, "ddim")
    out = sched.step(torch.full((1, 1, 2, 2), -50.0), 0, torch.zeros(1, 1, 2, 2), clip_denoised=True)
    assert out.pred_x0.max() <= 1.0 and out.pred_x0.min() >= -1.0


@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddpm", 25), ("ddim", 10), ("ddim", 1)])
def test_oracle_noise_recovers_the_mask(sampler, steps):
    """With the true eps the reverse chain must land on x_0: catches broken samplers."""
    s = DDPMScheduler(DiffusionConfig(num_timesteps=100))
    sched = s.sampling_schedule(steps, sampler)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.where(torch.rand(4, 1, 8, 8, generator=gen) > 0.5, 1.0, -1.0)
    x = torch.randn(x0.shape, generator=gen)
    for i, t in enumerate(sched.timesteps):
        ac = s.alphas_cumprod[t]
        eps = (x - np.sqrt(ac) * x0) / np.sqrt(1 - ac)
        x = sched.step(eps, i, x, generator=gen).prev_sample
    assert torch.allclose(x, x0, atol=1e-4)


def test_training_loss_is_mse():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 0.0])
    assert DDPMScheduler.loss(a, b).item() == pytest.approx((0 + 4 + 9) / 3)
    with pytest.raises(ValueError, match="shape"):
        DDPMScheduler.loss(a, b[:2])


def test_bad_step_counts_and_sampler_names():
    s = DDPMScheduler()
    with pytest.raises(ValueError, match="steps"):
        s.sampling_schedule(0)
    with pytest.raises(ValueError, match="steps"):
        s.sampling_schedule(101)
    with pytest.raises(ValueError, match="sampler"):
        s.sampling_schedule(10, "euler")


@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddim", 10)])
def test_x0_prediction_oracle_recovers_the_mask(sampler, steps):
    s = DDPMScheduler(DiffusionConfig(num_timesteps=100, prediction="x0"))
    sched = s.sampling_schedule(steps, sampler)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.where(torch.rand(2, 1, 8, 8, generator=gen) > 0.5, 1.0, -1.0)
    x = torch.randn(x0.shape, generator=gen)
    for i in range(len(sched)):
        x = sched.step(x0, i, x, generator=gen).prev_sample
    assert torch.allclose(x, x0, atol=1e-4)


def test_training_target_follows_the_prediction_type():
    x0, noise = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert torch.equal(DDPMScheduler(DiffusionConfig()).training_target(x0, noise), noise)
    assert torch.equal(DDPMScheduler(DiffusionConfig(prediction="x0")).training_target(x0, noise), x0)
    s = DDPMScheduler(DiffusionConfig(prediction="x0"))
    assert torch.equal(s.predict_x0(torch.randn(2, 1, 4, 4), x0, 5), x0)
    with pytest.raises(ConfigError, match="prediction"):
        DiffusionConfig(prediction="score")
