"""Training pairs: crop, normalise, augment and map the mask to [-1, 1], consistently."""
from __future__ import annotations

import numpy as np

from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import CropProtocol
from segdiff_core.data.preprocess import PreprocessConfig
from segdiff_core.training.config import DataConfig
from segdiff_core.training.data import PairBatches, SyntheticSource, make_pair, window_box

PP = PreprocessConfig(in_channels=3, input_size=32)


def _disk_image(h=100, w=120, cy=40, cx=70, r=12):
    yy, xx = np.mgrid[:h, :w]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    image = np.where(mask, 200, 30).astype(np.uint8)
    return image, mask


def test_pair_target_matches_the_object_in_the_crop():
    image, mask = _disk_image()
    x, y = make_pair(image, mask, Box.from_mask(mask), PP, CropProtocol.tight(), None, np.random.default_rng(0))
    assert x.shape == (3, 32, 32) and x.dtype == np.float32 and y.shape == (1, 32, 32)
    assert set(np.unique(y)) == {-1.0, 1.0}
    bright = x[0] > 0.5
    assert ((y[0] > 0) == bright).mean() > 0.97  # the target sits exactly on the bright disk
    assert y[0, 16, 16] == 1.0 and y[0, 0, 0] == -1.0  # tight crop: disk centred, corners outside


def test_pair_with_jitter_and_augmentation_stays_aligned_and_reproducible():
    image, mask = _disk_image()
    data = DataConfig()
    batches = PairBatches(SyntheticSource(("fluorescence",), 64, 2), PP, data, batch_size=3, seed=5, stop=2)
    a, b = batches[1], batches[1]
    assert np.array_equal(a[0].numpy(), b[0].numpy()) and np.array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(batches[0][0].numpy(), a[0].numpy())
    from segdiff_core.data.augment import paper_augmentation

    x, y = make_pair(image, mask, Box.from_mask(mask), PP, CropProtocol.training(shift=0.1, scale_range=(0.9, 1.1)),
                     paper_augmentation("nuclei"), np.random.default_rng(3))
    agree = ((y[0] > 0) == (x.mean(0) > 0.5)).mean()
    assert agree > 0.9


def test_semantic_windows_follow_the_working_scale():
    box = window_box((1000, 1000), 256, 512, None)
    assert (box.height, box.width) == (500.0, 500.0) and box.center == (500.0, 500.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        b = window_box((300, 200), 32, 64, rng)
        assert b.y0 >= 0 and b.x0 >= 0 and b.y1 <= 300 and b.x1 <= 200
        assert np.isclose(b.height, 150) and np.isclose(b.width, 100)
    image, mask = _disk_image(64, 64, 32, 32, 20)
    x, y = make_pair(image, mask, None, PP, None, None, np.random.default_rng(1))
    assert x.shape == (3, 32, 32) and (y > 0).any()


def test_vaihingen_source_follows_data_split(tmp_path):
    import tifffile

    from segdiff_core.training.sources import open_dataset

    for n in range(1, 102):  # 101 buildings: reference split 100 train / 1 test
        tifffile.imwrite(tmp_path / f"building_{n}.tif", np.full((8, 8, 3), n, np.uint8))
        mask = np.zeros((8, 8), np.uint8)
        mask[2:6, 2:6] = 255
        tifffile.imwrite(tmp_path / f"building_mask_{n}.tif", mask)
    data = DataConfig(source="vaihingen", root=str(tmp_path), min_area=1)
    assert len(open_dataset(data)) == 100  # data.split defaults to "train"
    (test,) = open_dataset(DataConfig(source="vaihingen", root=str(tmp_path), split="test", min_area=1))
    assert test.name == "building_99.tif#1" and int(test.image[0, 0, 0]) == 99
    assert len(open_dataset(DataConfig(source="vaihingen", root=str(tmp_path), split="all", min_area=1))) == 101
