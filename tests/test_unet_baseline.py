"""The plain U-Net baseline (segdiff_core.baselines.unet): network, loss, model files, training
through the SegDiff Trainer, prediction."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.report.common import PROTOCOL
from segdiff_core.baselines.unet import (
    UNET_FORMAT,
    UNet,
    UNetConfig,
    UNetConfigError,
    UNetSegmenter,
    bce_dice_loss,
    config_matching_parameters,
    count_parameters,
    load_unet,
    save_unet,
    train_unet,
    unet_method,
)
from segdiff_core.checkpoint import CheckpointError, load_model, save_model
from segdiff_core.evaluation.runner import crop_items, run_method, synthetic_items
from segdiff_core.training.config import merge_run_config
from segdiff_core.training.sources import build_sources
from segdiff_core.training.trainer import Trainer
from tests.helpers import random_model


@pytest.fixture(scope="module")
def segdiff_file(tmp_path_factory) -> Path:
    model, config = random_model()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, model, config, {"steps": 0, "trained_on": "random weights (test)"})
    return path


def test_unet_shapes_and_validation() -> None:
    cfg = UNetConfig(image_size=32, in_channels=3, base_channels=8, channel_mult=(1, 2, 2))
    net = UNet(cfg)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.zeros(1, 3, 30, 30))
    with pytest.raises(UNetConfigError, match="divisible"):
        UNetConfig(image_size=36, channel_mult=(1, 1, 1, 1))
    with pytest.raises(UNetConfigError):
        UNetConfig(base_channels=0)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UNetConfigError, match="unknown keys"):
        UNetConfig.from_dict({"width": 3})


def test_unet_parameter_count_by_hand() -> None:
    # one level, one conv block: conv 3->4 (3*4*9 + 4) + GroupNorm (4 + 4) + head 4->1 (4 + 1)
    net = UNet(UNetConfig(image_size=8, in_channels=3, base_channels=4, channel_mult=(1,), convs_per_level=1))
    assert count_parameters(net) == 3 * 4 * 9 + 4 + 8 + 5 == 125


def test_config_matching_parameters_picks_the_closest_width() -> None:
    base = UNetConfig(image_size=32, channel_mult=(1, 1, 2, 2, 2, 2))
    target = 571_873
    cfg, n = config_matching_parameters(target, base)
    assert n == count_parameters(UNet(cfg))
    assert abs(n / target - 1) < 0.2
    for w in (cfg.base_channels - 1, cfg.base_channels + 1):
        other = count_parameters(UNet(base.replace(base_channels=w)))
        assert abs(math.log(other / target)) >= abs(math.log(n / target))
    with pytest.raises(UNetConfigError):
        config_matching_parameters(0, base)


def test_bce_dice_loss_hand_value() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.ones(1, 1, 2, 2)
    # BCE = ln 2; Dice = (2 * 2 + 1) / (2 + 4 + 1) = 5/7
    assert float(bce_dice_loss(logits, target)) == pytest.approx(math.log(2) + 2 / 7, rel=1e-6)
    confident = torch.full((1, 1, 2, 2), 30.0)
    assert float(bce_dice_loss(confident, target)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        bce_dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))


def test_unet_file_round_trip_and_refusals(tmp_path: Path, segdiff_file: Path) -> None:
    run = merge_run_config("test", None, {})
    cfg = UNetConfig(image_size=32, in_channels=3, base_channels=4, channel_mult=(1, 2))
    net = UNet(cfg)
    path = save_unet(tmp_path / "u.pt", net, run.segdiff.preprocess, {"note": "x"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == UNET_FORMAT and raw["config"]["network"] == cfg.to_dict()
    loaded, pp, meta = load_unet(path)
    assert pp == run.segdiff.preprocess and meta == {"note": "x"}
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    with pytest.raises(CheckpointError, match="not a U-Net"):
        load_unet(segdiff_file)
    with pytest.raises(CheckpointError, match="not a segdiff model"):
        load_model(path)  # and a U-Net file is no SegDiff model
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(print))
    with pytest.raises(CheckpointError):
        load_unet(evil)
    with pytest.raises(UNetConfigError, match="does not match"):
        save_unet(tmp_path / "bad.pt", UNet(cfg.replace(image_size=64)), run.segdiff.preprocess)


def test_version_1_unet_files_still_load(tmp_path: Path) -> None:
    run = merge_run_config("test", None, {})
    net = UNet(UNetConfig(image_size=32, in_channels=3, base_channels=4, channel_mult=(1, 2)))
    old = {  # the layout train_unet wrote before the U-Net shared the model-file code
        "format": UNET_FORMAT, "version": 1, "config": net.config.to_dict(),
        "preprocess": run.segdiff.preprocess.to_dict(), "metadata": {"steps": 3},
        "state_dict": {k: v.clone() for k, v in net.state_dict().items()},
    }
    torch.save(old, tmp_path / "v1.pt")
    loaded, pp, meta = load_unet(tmp_path / "v1.pt")
    assert pp == run.segdiff.preprocess and meta == {"steps": 3} and loaded.config == net.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in net.state_dict().items())


class _Recorder:
    """A sample source that records what it hands out."""

    def __init__(self, source) -> None:
        self.source, self.images = source, []

    def draw(self, rng, n):
        out = self.source.draw(rng, n)
        self.images += [im for im, _, _ in out]
        return out


def test_train_unet_sees_exactly_the_segdiff_trainer_batches(tmp_path: Path) -> None:
    run = merge_run_config("test", None, {
        "train.steps": 2, "train.batch_size": 2, "train.warmup_steps": 1, "train.val_every": 0, "train.checkpoint_every": 2,
        "train.log_every": 1, "data.tile_size": 64, "data.objects_per_tile": 2,
    })
    seg_rec = _Recorder(build_sources(run.data)[0])
    Trainer(run, tmp_path / "segdiff", seg_rec, None, progress=False, log=lambda m: None).fit()
    unet_rec = _Recorder(build_sources(run.data)[0])
    cfg = UNetConfig(image_size=32, in_channels=3, base_channels=4, channel_mult=(1, 2))
    init = [p.detach().clone() for p in UNet(cfg).parameters()]
    result = train_unet(run, cfg, unet_rec, tmp_path / "unet.pt")
    assert len(unet_rec.images) == len(seg_rec.images) > 0
    for a, b in zip(unet_rec.images, seg_rec.images):
        np.testing.assert_array_equal(a, b)
    assert result.steps == 2 and [s for s, _ in result.losses] == [1, 2]
    assert all(math.isfinite(v) for _, v in result.losses)
    seg = UNetSegmenter.from_checkpoint(result.model_path, device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(init, seg.model.parameters()))  # it was trained
    assert seg.metadata["train"]["steps"] == 2
    items = crop_items(synthetic_items(("he",), 2, tile_size=96), PROTOCOL, 32)
    probs = seg.predict_batch([it.model_inputs[0] for it in items], batch_images=1)
    assert all(p.shape == (32, 32) and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1 for p in probs)
    res = run_method(items, unet_method(seg))
    assert res.n == 2 and res.settings["parameters"] == count_parameters(seg.model)
    with pytest.raises(UNetConfigError, match="match"):
        train_unet(run, cfg.replace(image_size=64), unet_rec, tmp_path / "bad.pt")


def test_unet_training_resumes_exactly_through_the_trainer(tmp_path: Path) -> None:
    from segdiff_core.baselines.unet import UNetModelConfig, UNetObjective
    from segdiff_core.checkpoint import safe_load

    def run(steps: int):
        return merge_run_config("test", None, {
            "train.steps": steps, "train.batch_size": 2, "train.warmup_steps": 1, "train.val_every": 0,
            "train.checkpoint_every": 2, "train.lr_decay": "constant", "data.tile_size": 64,
            "data.objects_per_tile": 2,
        })

    cfg = UNetConfig(image_size=32, in_channels=3, base_channels=4, channel_mult=(1, 2))

    def trainer(steps: int, out: Path, resume: bool = False) -> Trainer:
        r = run(steps)
        objective = UNetObjective(UNetModelConfig(cfg, r.segdiff.preprocess))
        return Trainer(r, out, build_sources(r.data)[0], None, resume=resume, progress=False,
                       log=lambda _m: None, objective=objective)

    trainer(4, tmp_path / "straight").fit()
    trainer(2, tmp_path / "split").fit()
    resumed = trainer(4, tmp_path / "split", resume=True)
    assert resumed.step == 2
    resumed.fit()
    a, b = (safe_load(tmp_path / d / "state.pt")["model"] for d in ("straight", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    model, config, _ = load_model(tmp_path / "split" / "last.pt", kind=UNET_FORMAT)
    assert isinstance(model, UNet) and config.network == cfg
