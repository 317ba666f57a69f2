"""The no-object rule (segdiff_core.objectness) on the bundled nuclei model and synthetic tiles."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from segdiff_core.bundled import bundled_model_path
from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import CropProtocol, prompt_crop
from segdiff_core.data.synthetic import generate_tile
from segdiff_core.objectness import assess_object, assess_remnant, box_covers_image
from segdiff_core.segmenter import Segmenter


@pytest.fixture(scope="module")
def seg():
    torch.set_num_threads(1)
    return Segmenter.from_checkpoint(bundled_model_path(), device="cpu")


def _tile():
    tile = generate_tile("fluorescence", 256, 3)
    return tile.image, tile.labels


def _verdict(seg, image, box):
    patch, _ = prompt_crop(image, box, seg.input_size, CropProtocol.expansion())
    res = seg.segment(patch, seed=0)
    return assess_object(patch, res.probability, res.std, res.threshold)


@pytest.mark.slow
def test_nuclei_pass_and_background_and_flat_images_are_refused(seg):
    image, labels = _tile()
    objs = ndimage.find_objects(labels)
    nuclei = [Box(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in objs[:8] if s is not None]
    verdicts = [_verdict(seg, image, b) for b in nuclei]
    assert sum(v is None for v in verdicts) >= 7, verdicts  # (one may be a hard case)

    far = np.argwhere(ndimage.distance_transform_edt(labels == 0) > 20)
    rng = np.random.default_rng(0)
    refused = 0
    for y, x in far[rng.choice(len(far), 6, replace=False)]:
        v = _verdict(seg, image, Box(y - 10, x - 10, y + 10, x + 10))
        refused += v is not None
    assert refused >= 3  # a heuristic: benchmarks/bench_objectness.py gives the rates

    flat = np.full_like(image, 120)
    assert "does not stand out" in _verdict(seg, flat, Box(100, 100, 130, 130))


def test_whole_image_box_and_slivers():
    assert "whole image" in box_covers_image((256, 250), (256, 256))
    assert box_covers_image((100, 250), (256, 256)) is None
    assert "sliver" in assess_remnant(200, 30)
    assert "sliver" in assess_remnant(200, 0)
    assert assess_remnant(200, 150) is None and assess_remnant(0, 0) is None


def test_mask_filling_the_crop_is_refused():
    patch = np.random.default_rng(0).random((32, 32))
    prob = np.full((32, 32), 0.9, np.float32)
    assert "fills" in assess_object(patch, prob, np.zeros_like(prob), 0.5)
    prob[:] = 0.0
    assert assess_object(patch, prob, np.zeros_like(prob), 0.5) is None  # nothing to judge
