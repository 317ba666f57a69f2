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


def _segmenter_and_patches(saved, n, seed):
    """The saved tiny model, ``n`` random (32, 32, 3) uint8 patches and a 2 x 3-step sampler."""
    path, _, cfg = saved
    gen = torch.Generator().manual_seed(seed)
    patches = [(torch.rand(32, 32, 3, generator=gen).numpy() * 255).astype("uint8") for _ in range(n)]
    return Segmenter.from_checkpoint(path, device="cpu"), patches, cfg.inference.replace(generations=2, steps=3)


def test_segment_batch_matches_shapes_and_is_seeded(saved):
    seg, patches, inf = _segmenter_and_patches(saved, n=5, seed=0)
    a = seg.segment_batch(patches, inf, seed=4, batch_images=2)
    b = seg.segment_batch(patches, inf, seed=4, batch_images=2)
    assert len(a) == 5 and all(r.probability.shape == (32, 32) and r.num_generations == 2 for r in a)
    assert all((x.probability == y.probability).all() for x, y in zip(a, b))
    assert not (a[0].probability == a[1].probability).all()


def test_batch_progressive_yields_every_step_for_the_whole_batch(saved):
    seg, patches, inf = _segmenter_and_patches(saved, n=3, seed=1)
    run = seg.segment_batch_progressive(patches, inf, seed=7)
    steps = []
    with pytest.raises(StopIteration) as stop:
        while True:
            steps.append(next(run))
    results = stop.value.value
    assert [s.index for s in steps] == [0, 1, 2] and steps[-1].is_last
    assert all(s.x_t.shape == (3 * 2, 1, 32, 32) and s.pred_x0.shape == (6, 1, 32, 32) for s in steps)
    # the same draws as segment_batch with the whole batch at once, and the same split into images
    same = seg.segment_batch(patches, inf, seed=7, batch_images=3)
    assert all(np.array_equal(a.probability, b.probability) for a, b in zip(results, same))
    from segdiff_core.ensemble import to_probability

    mean0 = to_probability(steps[-1].x_t[0:2]).mean(dim=0)[0].numpy()  # rows 0, 1 = patch 0
    np.testing.assert_allclose(mean0, results[0].probability, atol=1e-6)
    # one patch: segment_progressive is the batch of one
    single = seg.segment(patches[0], inf, seed=7)
    first = seg.segment_batch([patches[0]], inf, seed=7, batch_images=1)[0]
    assert np.array_equal(single.probability, first.probability)
    with pytest.raises(ValueError, match="no patches"):
        next(seg.segment_batch_progressive([], inf))


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


def test_cpu_segmenter_uses_channels_last_weights_with_the_same_results(saved):
    from segdiff_core.checkpoint import load_model
    from segdiff_core.diffusion.sampler import sample

    path, _, cfg = saved
    seg = Segmenter.from_checkpoint(path, device="cpu")
    convs = [p for p in seg.model.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    plain, _, _ = load_model(path, device="cpu")  # contiguous weights, the same values
    assert all(p.is_contiguous() for p in plain.parameters())
    patch = (torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(2)).numpy() * 255).astype("uint8")
    inf = cfg.inference.replace(generations=2, steps=3)
    res = seg.segment(patch, inference=inf, seed=5, keep_generations=True)
    schedule = seg.scheduler.sampling_schedule(inf.steps, inf.sampler, inf.eta)
    x0 = sample(plain.eval(), schedule, seg.model_input(patch)[0], generations=2, generator=torch.Generator().manual_seed(5))
    ref = ((x0[:, 0] + 1) / 2).clamp(0, 1).numpy()
    np.testing.assert_allclose(res.generations, ref, atol=1e-3)  # rounding, through 3 steps
