"""The sampling loop: one encoding per image, batched generations, reproducible, cancellable."""
from __future__ import annotations

import torch

from segdiff_core.diffusion.sampler import sample, sample_progressive
from segdiff_core.diffusion.scheduler import DDPMScheduler
from tests.helpers import random_model


def _setup(steps=5, sampler="ddpm"):
    model, cfg = random_model()
    schedule = DDPMScheduler(cfg.diffusion).sampling_schedule(steps, sampler)
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    return model, schedule, image


def test_cached_encoding_gives_identical_samples_to_recomputing_it():
    model, schedule, image = _setup()
    a = sample(model, schedule, image, generations=4, generator=torch.Generator().manual_seed(0))
    b = sample(model, schedule, image, generations=4, generator=torch.Generator().manual_seed(0), reuse_encoding=False)
    assert torch.equal(a, b)


def test_image_encoder_runs_once_per_image(monkeypatch):
    model, schedule, image = _setup(steps=6)
    calls = []
    original = model.image_encoder.forward
    monkeypatch.setattr(model.image_encoder, "forward", lambda x: calls.append(x.shape) or original(x))
    sample(model, schedule, image, generations=5, chunk_size=2)
    assert calls == [torch.Size([1, 3, 32, 32])]


def test_seeded_runs_reproduce_and_seeds_differ():
    model, schedule, image = _setup()
    run = lambda seed: sample(model, schedule, image, generations=3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


def test_generations_differ_from_each_other():
    model, schedule, image = _setup()
    x = sample(model, schedule, image, generations=3, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(x[0], x[1])


def test_chunking_does_not_change_results():
    model, schedule, image = _setup()
    a = sample(model, schedule, image, generations=6, generator=torch.Generator().manual_seed(0), chunk_size=6)
    b = sample(model, schedule, image, generations=6, generator=torch.Generator().manual_seed(0), chunk_size=4)
    assert torch.allclose(a, b, atol=1e-5)


def test_progressive_yields_every_step_in_order():
    model, schedule, image = _setup(steps=7, sampler="ddim")
    steps = list(sample_progressive(model, schedule, image, generations=2))
    assert [s.index for s in steps] == list(range(7))
    assert [s.timestep for s in steps] == schedule.timesteps.tolist()
    assert all(s.x_t.shape == (2, 1, 32, 32) and s.pred_x0.shape == (2, 1, 32, 32) for s in steps)
    assert steps[-1].is_last and not steps[0].is_last
    assert steps[-1].pred_x0.abs().max() <= 1.0


def test_closing_the_generator_stops_between_steps():
    model, schedule, image = _setup(steps=10)
    calls = []
    original = model.denoise
    model.denoise = lambda *a: calls.append(1) or original(*a)
    run = sample_progressive(model, schedule, image, generations=2)
    next(run), next(run)
    run.close()
    assert len(calls) == 2


def test_grad_mode_is_not_leaked_to_the_caller_between_steps():
    model, schedule, image = _setup(steps=3)
    for _ in sample_progressive(model, schedule, image):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_several_images_in_one_batch_each_conditioned_on_its_own_image():
    model, schedule, _ = _setup(steps=4, sampler="ddim")
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    run = lambda imgs, **kw: sample(model, schedule, imgs, generations=2, generator=torch.Generator().manual_seed(0), **kw)
    a = run(images, chunk_size=4)
    assert a.shape == (6, 1, 32, 32)
    changed = images.clone()
    changed[2] = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(9))
    b = run(changed, chunk_size=4)
    assert torch.allclose(a[:4], b[:4], atol=1e-6)  # images 0 and 1 untouched
    assert not torch.allclose(a[4:], b[4:])  # image 2's generations follow image 2
    assert torch.equal(run(images), run(images, reuse_encoding=False))
