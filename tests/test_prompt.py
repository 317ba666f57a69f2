"""The prompt-box channel: rasterising, crop coordinates, training pairs and the model/segmenter."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from segdiff_core.config import ConfigError, ModelConfig, SegDiffConfig
from segdiff_core.data.augment import paper_augmentation
from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import CropProtocol, prompt_crop
from segdiff_core.data.preprocess import PreprocessConfig
from segdiff_core.data.prompt import NOMINAL_MARGIN, box_channel, box_in_crop, jittered_prompt, nominal_box
from segdiff_core.model import SegDiffModel
from segdiff_core.segmenter import Segmenter
from segdiff_core.training.data import make_pair

TINY = dict(image_size=16, in_channels=1, model_channels=8, channel_mult=(1, 2), attention_resolutions=(8,),
            num_heads=2, rrdb_blocks=1, rrdb_features=8, rrdb_growth=4, norm_groups=4, num_timesteps=10)


def tiny_config(box: bool) -> SegDiffConfig:
    from segdiff_core.config import DiffusionConfig, InferenceConfig

    return SegDiffConfig(
        model=ModelConfig(**TINY, box_channel=box),
        diffusion=DiffusionConfig(num_timesteps=10, beta_end=0.2, scale_betas=False, prediction="x0"),
        inference=InferenceConfig(generations=2, steps=2),
    )


def test_box_channel_area_equals_box_area_and_border_pixels_are_fractional():
    ch = box_channel(Box(2.5, 3.0, 10.0, 12.25), (16, 16))
    assert ch.dtype == np.float32 and ch.shape == (16, 16)
    assert ch.sum() == pytest.approx(7.5 * 9.25)
    assert ch[5, 5] == 1.0 and ch[0, 0] == 0.0
    assert ch[2, 5] == pytest.approx(0.5) and ch[5, 12] == pytest.approx(0.25)


def test_box_channel_clips_a_box_larger_than_the_crop():
    assert box_channel(Box(-4.0, -4.0, 40.0, 40.0), (16, 16)).min() == 1.0


def test_nominal_box_is_the_default_expansion_box():
    box = Box(10.0, 20.0, 30.0, 36.0)
    _, geom = prompt_crop(np.zeros((64, 64), np.float32), box, 16)
    drawn = box_in_crop(geom, box)
    nominal = nominal_box((16, 16))
    assert np.allclose(drawn.as_tuple(), nominal.as_tuple())
    assert np.allclose(box_channel(None, (16, 16)), box_channel(drawn, (16, 16)))
    assert NOMINAL_MARGIN == CropProtocol.expansion().margin


def test_jittered_prompt_draws_like_the_protocol_and_contains_the_drawn_box():
    protocol = CropProtocol.training(jitter_margin=(0.0, 0.6), shift=0.15, scale_range=(0.85, 1.3))
    box = Box(20.0, 30.0, 44.0, 50.0)
    for seed in range(10):
        drawn, crop = jittered_prompt(box, protocol, np.random.default_rng(seed))
        assert np.allclose(crop.as_tuple(), protocol.crop_box(box, rng=np.random.default_rng(seed)).as_tuple())
        assert crop.y0 <= drawn.y0 and crop.x0 <= drawn.x0 and drawn.y1 <= crop.y1 and drawn.x1 <= crop.x1
        assert drawn.center == pytest.approx(crop.center)


def test_training_pair_box_channel_moves_with_the_mask_under_augmentation():
    rng = np.random.default_rng(0)
    image = rng.random((64, 64)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[20:30, 24:44] = True  # wide object: a 90-degree rotation changes its orientation
    protocol = CropProtocol.training(jitter_margin=(0.3, 0.3))
    pp = PreprocessConfig(in_channels=1, input_size=16)
    aug = paper_augmentation("nuclei-box")
    for seed in range(8):
        x, y = make_pair(image, mask, Box.from_mask(mask), pp, protocol, aug, np.random.default_rng(seed), with_box=True)
        assert x.shape == (2, 16, 16) and y.shape == (1, 16, 16)
        obj = y[0] > 0
        inside = x[1] > 0
        assert obj.sum() > 0
        assert inside[obj].all()  # the box covers the object in every orientation
        rows, cols = np.flatnonzero(obj.any(1)), np.flatnonzero(obj.any(0))
        box_rows, box_cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        assert (rows.size > cols.size) == (box_rows.size > box_cols.size)
    x, _ = make_pair(image, mask, Box.from_mask(mask), pp, protocol, aug, np.random.default_rng(0), with_box=False)
    assert x.shape == (1, 16, 16)


def test_warm_start_adds_a_zero_weight_channel_and_keeps_the_output():
    old = SegDiffModel(tiny_config(False).model).eval()
    new = SegDiffModel(tiny_config(True).model).eval()
    new.warm_start_from(old)
    x, t, img = torch.randn(2, 1, 16, 16), torch.tensor([1, 7]), torch.randn(2, 1, 16, 16)
    box = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(old(x, t, img), new(x, t, torch.cat([img, box], 1)), atol=1e-6)
    assert new.image_encoder.conv_first.weight[:, 1].abs().max() == 0
    with pytest.raises(ValueError, match="prompt-box channel"):
        new(x, t, img)


def test_config_rejects_a_non_bool_box_channel_and_old_files_load_without_it():
    with pytest.raises(ConfigError, match="box_channel"):
        ModelConfig(**TINY, box_channel="yes")  # type: ignore[arg-type]
    d = tiny_config(False).to_dict()
    del d["model"]["box_channel"]
    assert SegDiffConfig.from_dict(d).model.box_channel is False


def test_segmenter_reads_the_box_only_when_the_model_has_a_box_channel():
    torch.manual_seed(0)
    cfg = tiny_config(True)
    model = SegDiffModel(cfg.model)
    with torch.no_grad():
        model.image_encoder.conv_first.weight[:, 1] += 0.5  # make the box channel matter
        for param in model.out.parameters():  # the output conv starts at zero
            param.add_(0.1 * torch.randn_like(param))
    seg = Segmenter(model, cfg, "cpu")
    patch = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    # the box is given in patch pixels and scaled to the model grid
    x = seg.prepare(patch, Box(8.0, 8.0, 24.0, 16.0))
    assert x.shape == (1, 2, 16, 16) and x[0, 1].sum() == pytest.approx(8 * 4)
    assert torch.equal(seg.prepare(patch)[0, 1], torch.from_numpy(box_channel(None, (16, 16))))
    tight = seg.segment(patch, seed=0, box=Box(0.0, 0.0, 32.0, 32.0)).probability
    small = seg.segment(patch, seed=0, box=Box(12.0, 12.0, 20.0, 20.0)).probability
    assert not np.allclose(tight, small)
    batch = seg.segment_batch([patch, patch], seed=0, boxes=[Box(0.0, 0.0, 32.0, 32.0), None])
    assert len(batch) == 2
    with pytest.raises(ValueError, match="boxes"):
        seg.segment_batch([patch], boxes=[None, None])

    plain_cfg = tiny_config(False)
    plain = Segmenter(SegDiffModel(plain_cfg.model), plain_cfg, "cpu")
    a = plain.segment(patch, seed=0, box=Box(0.0, 0.0, 32.0, 32.0)).probability
    b = plain.segment(patch, seed=0).probability
    assert np.array_equal(a, b)
    assert dataclasses.replace(cfg.model, box_channel=False) == plain_cfg.model


def test_init_from_adds_the_box_channel_to_an_old_model_file(tmp_path):
    from segdiff_core.checkpoint import save_model
    from segdiff_core.training.cli import build_parser, resolve_run
    from segdiff_core.training.data import SyntheticSource
    from segdiff_core.training.trainer import Trainer

    old_cfg = tiny_config(False)
    old = SegDiffModel(old_cfg.model)
    save_model(tmp_path / "old.pt", old, old_cfg, {"trained_on": "test"})
    args = build_parser().parse_args(
        ["--out", str(tmp_path / "run"), "--init-from", str(tmp_path / "old.pt"), "--model.box_channel", "true"]
    )
    run = resolve_run(args)
    assert run.segdiff.model == dataclasses.replace(old_cfg.model, box_channel=True)
    trainer = Trainer(run, tmp_path / "run", SyntheticSource(("fluorescence",), 64), None, init_from=args.init_from,
                      progress=False, log=lambda _m: None)
    w_new = trainer.model.image_encoder.conv_first.weight.detach()
    w_old = old.image_encoder.conv_first.weight.detach()
    assert torch.equal(w_new[:, :1], w_old) and w_new[:, 1].abs().max() == 0
    with pytest.raises(ConfigError, match="keeps the checkpoint's network"):
        resolve_run(build_parser().parse_args(
            ["--out", str(tmp_path / "r2"), "--init-from", str(tmp_path / "old.pt"), "--model.model_channels", "16"]
        ))
