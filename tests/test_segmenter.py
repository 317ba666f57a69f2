"""Segmenter: load a model file, segment patches (one, progressive, batched), seeded results."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segdiff_core.segmenter import Segmenter


def test_segmenter_from_checkpoint_segments_a_patch(saved):
    path, _, cfg = saved
    seg = Segmenter.from_checkpoint(path, device="cpu")
    patch = (torch.rand(40, 50, 3, generator=torch.Generator().manual_seed(0)).numpy() * 255).astype("uint8")
    res = seg.segment(patch, inference=cfg.inference.replace(generations=3, steps=4), seed=1, keep_generations=True)
    assert res.probability.shape == (32, 32) and res.generations.shape == (3, 32, 32)
    assert res.num_generations == 3 and res.mask.dtype == bool
    assert 0 <= res.probability.min() and res.probability.max() <= 1
    again = seg.segment(patch, inference=cfg.inference.replace(generations=3, steps=4), seed=1)
    assert (again.probability == res.probability).all()
    run = seg.segment_progressive(patch, inference=cfg.inference.replace(generations=2, steps=3), seed=0)
    steps = []
    try:
        while True:
            steps.append(next(run))
    except StopIteration as stop:
        result = stop.value
    assert len(steps) == 3 and result.probability.shape == (32, 32)


def test_unavailable_device_is_a_clear_error(saved):
    path, _, _ = saved
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            Segmenter.from_checkpoint(path, device="cuda")


def test_segment_batch_matches_shapes_and_is_seeded(saved):
    path, _, cfg = saved
    seg = Segmenter.from_checkpoint(path, device="cpu")
    gen = torch.Generator().manual_seed(0)
    patches = [(torch.rand(32, 32, 3, generator=gen).numpy() * 255).astype("uint8") for _ in range(5)]
    inf = cfg.inference.replace(generations=2, steps=3)
    a = seg.segment_batch(patches, inf, seed=4, batch_images=2)
    b = seg.segment_batch(patches, inf, seed=4, batch_images=2)
    assert len(a) == 5 and all(r.probability.shape == (32, 32) and r.num_generations == 2 for r in a)
    assert all((x.probability == y.probability).all() for x, y in zip(a, b))
    assert not (a[0].probability == a[1].probability).all()


def test_a_patch_of_another_size_goes_through_the_crop_resampler(saved):
    path, _, cfg = saved
    seg = Segmenter.from_checkpoint(path, device="cpu")
    rng = np.random.default_rng(0)
    big = rng.random((64, 64, 3)).astype(np.float32)
    x = seg.model_input(big)
    assert x.shape == (1, cfg.model.in_channels, 32, 32) and x.dtype == torch.float32
    # the 2x shrink equals cropping the whole patch to the model size first
    from segdiff_core.data.crops import crop_whole_image

    small, _ = crop_whole_image(big, 32)
    np.testing.assert_allclose(x[0].numpy(), seg.model_input(small)[0].numpy(), atol=1e-6)
