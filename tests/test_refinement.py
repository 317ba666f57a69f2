"""Refinement options of issue 11 item 5: self-conditioning, v-prediction, a shifted noise schedule."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from segdiff_core.checkpoint import load_model, save_model
from segdiff_core.config import ConfigError, DiffusionConfig, InferenceConfig, ModelConfig, SegDiffConfig
from segdiff_core.diffusion.sampler import sample_progressive
from segdiff_core.diffusion.scheduler import DDPMScheduler
from segdiff_core.model import SegDiffModel
from segdiff_core.segmenter import Segmenter

TINY = dict(image_size=16, in_channels=1, model_channels=8, channel_mult=(1, 2), attention_resolutions=(8,),
            num_heads=2, rrdb_blocks=1, rrdb_features=8, rrdb_growth=4, norm_groups=4, num_timesteps=10)


def config(self_condition: bool = False, prediction: str = "x0", noise_shift: float = 1.0) -> SegDiffConfig:
    return SegDiffConfig(
        model=ModelConfig(**TINY, box_channel=True, self_condition=self_condition),
        diffusion=DiffusionConfig(num_timesteps=10, beta_end=0.2, scale_betas=False, prediction=prediction,
                                  noise_shift=noise_shift),
        inference=InferenceConfig(generations=2, steps=3),
    )


def live(model: SegDiffModel, seed: int = 0) -> SegDiffModel:
    """Give the zero-initialised output layer weights, so the outputs depend on the inputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.out.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
        model.mask_encoder.weight.add_(0.3 * torch.randn(model.mask_encoder.weight.shape, generator=gen))
    return model.eval()


def test_self_conditioning_warm_start_computes_what_the_old_model_computes():
    old = live(SegDiffModel(config().model))
    new = SegDiffModel(config(self_condition=True).model).eval()
    new.warm_start_from(old)
    assert new.mask_encoder.weight.shape[1] == 2 and new.mask_encoder.weight[:, 1].abs().max() == 0
    x, t, img = torch.randn(3, 1, 16, 16), torch.tensor([0, 4, 9]), torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        ref = old(x, t, img)
        assert torch.allclose(ref, new(x, t, img), atol=1e-6)  # x0_self None = zeros
        assert torch.allclose(ref, new(x, t, img, torch.rand(3, 1, 16, 16)), atol=1e-6)
    with pytest.raises(ValueError, match="self_condition"):
        old(x, t, img, torch.zeros_like(x))
    with pytest.raises(ValueError, match="x0_self"):
        new(x, t, img, torch.zeros(3, 1, 8, 8))


def test_sampler_feeds_each_step_the_previous_x0_estimate():
    cfg = config(self_condition=True)
    model = live(SegDiffModel(cfg.model), seed=1)
    with torch.no_grad():
        model.mask_encoder.weight[:, 1].add_(0.5)  # the x0 channel matters
    sched = DDPMScheduler(cfg.diffusion).sampling_schedule(3, "ddim")
    image = torch.randn(2, 16, 16)
    steps = list(sample_progressive(model, sched, image, generations=2, generator=torch.Generator().manual_seed(3)))
    # the same chain by hand: x_T from the same generator, x0_self = previous pred_x0 (zeros first)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        cond = model.encode_image(image[None])
        x = torch.randn((2, 1, 16, 16), generator=gen)
        x0 = None
        for i, t in enumerate(sched.timesteps.tolist()):
            out = sched.step(model.denoise(x, torch.full((2,), t), cond, x0), i, x, generator=gen)
            assert torch.allclose(out.pred_x0, steps[i].pred_x0, atol=1e-6)
            x, x0 = out.prev_sample, out.pred_x0
        # without self-conditioning the second step differs
        blind = sched.step(model.denoise(steps[0].x_t, torch.full((2,), int(sched.timesteps[1])), cond), 1, steps[0].x_t)
    assert not torch.allclose(blind.pred_x0, steps[1].pred_x0)


def test_v_prediction_target_and_x0_recovery_are_exact():
    sched = DDPMScheduler(config(prediction="v").diffusion)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    noise = torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 3, 6, 9])
    x_t = sched.add_noise(x0, noise, t)
    v = sched.training_target(x0, noise, t)
    assert torch.allclose(sched.predict_x0(x_t, v, t), x0, atol=1e-5)
    with pytest.raises(ValueError, match="time steps"):
        sched.training_target(x0, noise)
    # one DDIM step with the exact v gives the same state as with the exact x0
    x0_sched = DDPMScheduler(config(prediction="x0").diffusion)
    xt9 = sched.add_noise(x0, noise, torch.full((4,), 9))
    v9 = sched.training_target(x0, noise, torch.full((4,), 9))
    a = sched.sampling_schedule(3, "ddim").step(v9, 0, xt9, clip_denoised=False)
    b = x0_sched.sampling_schedule(3, "ddim").step(x0, 0, xt9, clip_denoised=False)
    assert torch.allclose(a.prev_sample, b.prev_sample, atol=1e-5)


def test_noise_shift_divides_every_snr_by_its_square():
    plain = DDPMScheduler(config().diffusion)
    shifted = DDPMScheduler(config(noise_shift=2.0).diffusion)
    snr = lambda s: s.alphas_cumprod / (1 - s.alphas_cumprod)  # noqa: E731
    assert np.allclose(snr(shifted), snr(plain) / 4.0)
    assert ((shifted.betas > 0) & (shifted.betas < 1)).all()
    assert np.allclose(np.cumprod(shifted.alphas), shifted.alphas_cumprod)
    with pytest.raises(ConfigError, match="noise_shift"):
        DiffusionConfig(noise_shift=0.5)
    with pytest.raises(ConfigError, match="prediction"):
        DiffusionConfig(prediction="score")


def test_options_travel_in_the_model_file_and_old_files_load_without_them(tmp_path):
    cfg = config(self_condition=True, prediction="v", noise_shift=3.0)
    model = live(SegDiffModel(cfg.model))
    save_model(tmp_path / "m.pt", model, cfg, {"trained_on": "test"})
    loaded, cfg2, _ = load_model(tmp_path / "m.pt")
    assert cfg2 == cfg
    seg = Segmenter(loaded, cfg2, "cpu")
    assert seg.scheduler.prediction == "v" and seg.model.config.self_condition
    patch = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    res = seg.segment(patch, seed=0)
    assert res.probability.shape == (16, 16) and np.isfinite(res.probability).all()
    d = config().to_dict()
    del d["model"]["self_condition"], d["diffusion"]["noise_shift"]
    old = SegDiffConfig.from_dict(d)
    assert old.model.self_condition is False and old.diffusion.noise_shift == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["self_condition", "v", "shift"])
def test_training_warm_starts_each_variant_from_a_model_file_and_learns(tmp_path, variant):
    from segdiff_core.training.cli import build_parser, resolve_run
    from segdiff_core.training.data import SyntheticSource
    from segdiff_core.training.trainer import Trainer

    base = config()
    save_model(tmp_path / "base.pt", live(SegDiffModel(base.model)), base, {"trained_on": "test"})
    flag = {"self_condition": ["--model.self_condition", "true"], "v": ["--diffusion.prediction", "v"],
            "shift": ["--diffusion.noise_shift", "2.5"]}[variant]
    args = build_parser().parse_args(["--out", str(tmp_path / "run"), "--init-from", str(tmp_path / "base.pt"),
                                      "--train.steps", "2", "--train.batch_size", "2", "--train.val_every", "0",
                                      "--data.tile_size", "64", *flag])
    run = resolve_run(args)
    expected = {"self_condition": dataclasses.replace(base, model=dataclasses.replace(base.model, self_condition=True)),
                "v": base.replace(diffusion=dataclasses.replace(base.diffusion, prediction="v")),
                "shift": base.replace(diffusion=dataclasses.replace(base.diffusion, noise_shift=2.5))}[variant]
    assert run.segdiff.model == expected.model and run.segdiff.diffusion == expected.diffusion
    trainer = Trainer(run, tmp_path / "run", SyntheticSource(("fluorescence",), 64), None, init_from=args.init_from,
                      progress=False, log=lambda _m: None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if variant == "self_condition":  # the new channel's weights left zero: the x0 estimate was fed
        assert after["mask_encoder.weight"][:, 1].abs().max() > 0
    loaded, cfg, _ = load_model(tmp_path / "run" / "last.pt")
    assert cfg.model == expected.model and cfg.diffusion == expected.diffusion
