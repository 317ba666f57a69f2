"""Shapes and structure of the SegDiff network for every preset and conditioning variant."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from segdiff_core.config import ConfigError, ModelConfig
from segdiff_core.model import SegDiffModel
from segdiff_core.nn.unet import AttentionBlock
from segdiff_core.presets import PRESETS, get_preset


def _forward(model: SegDiffModel, batch: int = 2, size: int | None = None) -> torch.Tensor:
    cfg = model.config
    s = size or cfg.image_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, s, s, generator=gen)
    img = torch.randn(batch, cfg.in_channels, s, s, generator=gen)
    t = torch.randint(0, cfg.num_timesteps, (batch,), generator=gen)
    with torch.no_grad():
        return model(x, t, img)


@pytest.mark.parametrize("name", ["cpu-small", "cpu-base", "test"])
def test_cpu_presets_forward_shape(name):
    cfg = get_preset(name)
    model = SegDiffModel(cfg.model)
    out = _forward(model)
    assert out.shape == (2, 1, cfg.model.image_size, cfg.model.image_size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,params_millions", [("monuseg", (100, 250)), ("vaihingen", (100, 250)), ("cityscapes", (80, 250))])
def test_paper_presets_build_at_paper_size_and_run(name, params_millions):
    """Full-size paper models (~1e8 parameters) build; a forward runs at a reduced input size."""
    cfg = get_preset(name)
    model = SegDiffModel(cfg.model)
    lo, hi = params_millions
    assert lo <= model.num_parameters() / 1e6 <= hi
    levels = len(cfg.model.channel_mult)
    small = dataclasses.replace(cfg.model, image_size=2 ** (levels - 1) * 2, model_channels=16, rrdb_blocks=1, rrdb_features=8, rrdb_growth=4, num_res_blocks=1)
    out = _forward(SegDiffModel(small), batch=1)
    assert out.shape == (1, 1, small.image_size, small.image_size)


def test_paper_attention_sits_at_16_and_8():
    cfg = dataclasses.replace(get_preset("cityscapes").model, model_channels=8, rrdb_blocks=1, rrdb_features=8, rrdb_growth=4)
    model = SegDiffModel(cfg)
    sizes = []

    def hook(mod, inp, out):
        sizes.append(inp[0].shape[-1])

    for m in model.modules():
        if isinstance(m, AttentionBlock):
            m.register_forward_hook(hook)
    _forward(model, batch=1)
    assert set(sizes) == {16, 8, 4}  # 4 = the bottleneck's attention (res-attn-res)


CONDITIONINGS = ["sum", "concat", "raw_concat", "deep1", "deep3", "deep5"]


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("time_embedding", ["learned", "sinusoidal"])
def test_every_conditioning_variant_and_time_embedding(conditioning, time_embedding):
    cfg = ModelConfig(
        image_size=64, in_channels=3, model_channels=8, channel_mult=(1, 1, 2, 2, 2, 2), num_res_blocks=1,
        rrdb_blocks=1, rrdb_features=8, rrdb_growth=4, conditioning=conditioning, time_embedding=time_embedding,
    )
    model = SegDiffModel(cfg)
    out = _forward(model)
    assert out.shape == (2, 1, 64, 64)
    if conditioning == "raw_concat":
        assert model.image_encoder is None and model.mask_encoder.in_channels == 4
    else:
        assert model.image_encoder is not None and model.mask_encoder.in_channels == 1


def test_deep_conditioning_needs_enough_levels():
    with pytest.raises(ConfigError, match="downsample block 5"):
        ModelConfig(channel_mult=(1, 2, 2), conditioning="deep5")


def test_image_encoder_output_changes_eps():
    """G(I) really conditions the output (zero-init output layers are trained away here)."""
    cfg = get_preset("test").model
    model = SegDiffModel(cfg)
    for p in model.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    for m in model.modules():
        if hasattr(m, "out_layers"):
            torch.nn.init.normal_(m.out_layers[-1].weight, std=0.1)
    x = torch.randn(1, 1, 32, 32)
    t = torch.tensor([5])
    with torch.no_grad():
        a = model(x, t, torch.zeros(1, 3, 32, 32))
        b = model(x, t, torch.ones(1, 3, 32, 32))
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("in_channels", [1, 2, 3, 5])
def test_any_number_of_image_channels(in_channels):
    cfg = dataclasses.replace(get_preset("test").model, in_channels=in_channels)
    assert _forward(SegDiffModel(cfg)).shape == (2, 1, 32, 32)


def test_learned_time_table_rejects_out_of_range_steps():
    model = SegDiffModel(get_preset("test").model)
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        model(torch.zeros(1, 1, 32, 32), torch.tensor([100]), torch.zeros(1, 3, 32, 32))


def test_bad_input_shapes_are_reported():
    model = SegDiffModel(get_preset("test").model)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode_image(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model.denoise(torch.zeros(1, 2, 32, 32), torch.tensor([0]), torch.zeros(1, 16, 32, 32))


def test_encode_then_denoise_equals_forward_and_broadcasts_over_generations():
    model = SegDiffModel(get_preset("test").model).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    img = torch.randn(1, 3, 32, 32)
    x = torch.randn(4, 1, 32, 32)
    t = torch.tensor([3, 3, 3, 3])
    with torch.no_grad():
        cached = model.denoise(x, t, model.encode_image(img))
        full = model(x, t, img.expand(4, -1, -1, -1))
    assert torch.allclose(cached, full, atol=1e-5)


def test_presets_listed_and_unknown_rejected():
    assert {"monuseg", "vaihingen", "cityscapes", "cpu-small", "test"} <= set(PRESETS)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")
