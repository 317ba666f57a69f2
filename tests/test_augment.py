"""Tests for segdiff_core.data.augment: reproducibility, image/mask alignment, exactness."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.color import rgb2hsv
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from segdiff_core.data.augment import (
    PRESET_NAMES,
    AugmentError,
    ColorJitter,
    Compose,
    GaussianBlur,
    GaussianNoise,
    RandomAffine,
    RandomCrop,
    RandomGamma,
    RandomHFlip,
    RandomRot90,
    RandomVFlip,
    paper_augmentation,
)


def _blobs(shape=(64, 64)) -> np.ndarray:
    """Binary mask with three disks of different sizes (asymmetric, so flips are visible)."""
    mask = np.zeros(shape, bool)
    for centre, radius in (((18, 20), 9), ((44, 40), 12), ((12, 50), 5)):
        mask[disk(centre, radius, shape=shape)] = True
    return mask


def _labels(shape=(64, 64)) -> np.ndarray:
    labels, _ = ndimage.label(_blobs(shape))
    return np.array([0, 3, 7, 250], np.uint8)[labels]  # the three disks get labels 3, 7, 250


def _rgb(shape=(64, 64), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, size=shape + (3,)).astype(np.float32)


def _assert_aligned(image: np.ndarray, mask: np.ndarray) -> None:
    """``image`` started as ``mask`` as float: thresholded it must equal the mask except at
    pixels next to a mask boundary (bilinear vs nearest sampling)."""
    mismatch = (image > 0.5) != mask
    near_edge = ndimage.binary_dilation(find_boundaries(mask, mode="thick"), np.ones((3, 3), bool))
    assert not np.any(mismatch & ~near_edge), "image and mask disagree away from the boundary"
    assert mismatch.sum() <= 0.25 * near_edge.sum()


# ------------------------------------------------------------------ reproducibility


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_are_reproducible_and_seed_dependent(name):
    image, mask = _rgb((272, 272)), _blobs((272, 272))
    aug = paper_augmentation(name)
    a_img, a_mask = aug(image, mask, np.random.default_rng(7))
    b_img, b_mask = aug(image, mask, np.random.default_rng(7))
    c_img, _ = aug(image, mask, np.random.default_rng(8))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert a_img.dtype == np.float32 and a_mask.dtype == bool
    assert a_img.shape[:2] == a_mask.shape
    assert a_img.min() >= 0.0 and a_img.max() <= 1.0
    if name == "monuseg":
        assert a_mask.shape == (256, 256)
    else:
        assert a_mask.shape == mask.shape


def test_int_seed_equals_generator_seed():
    image, mask = _rgb(), _blobs()
    aug = paper_augmentation("vaihingen")
    a = aug(image, mask, 3)
    b = aug(image, mask, np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])


def test_compose_gives_each_piece_an_independent_stream():
    image = np.arange(400, dtype=np.float32).reshape(20, 20) / 400
    mask = np.zeros((20, 20), bool)
    crop = RandomCrop(8)
    skipped = Compose([GaussianNoise(std=(0.0, 0.0), p=0.0), crop])
    applied = Compose([GaussianNoise(std=(0.0, 0.0), p=1.0), crop])  # draws more numbers
    for seed in range(5):
        a, _ = skipped(image, mask, seed)
        b, _ = applied(image, mask, seed)
        np.testing.assert_array_equal(a, b)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(AugmentError) as err:
        paper_augmentation("kitti")
    for name in PRESET_NAMES:
        assert name in str(err.value)
    assert isinstance(paper_augmentation(" Nuclei "), Compose)


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_affine_keeps_image_and_mask_aligned(pad_mode, seed):
    mask = _blobs()
    aug = RandomAffine(degrees=(0, 360), scale=(0.75, 1.25), translate=0.1, pad_mode=pad_mode)
    image, out_mask = aug(mask.astype(np.float32), mask, np.random.default_rng(seed))
    assert out_mask.dtype == bool
    assert not np.array_equal(out_mask, mask)
    _assert_aligned(image, out_mask)


@pytest.mark.parametrize("name", ["cityscapes", "nuclei"])
def test_preset_geometry_keeps_grey_image_aligned(name):
    # colour jitter / gamma / noise change intensities monotonically or slightly; the geometric
    # part must still move image and mask together. Check with the pure geometric prefix.
    geometric = [t for t in paper_augmentation(name).transforms
                 if isinstance(t, (RandomAffine, RandomHFlip, RandomVFlip, RandomCrop))]
    mask = _blobs()
    image, out_mask = Compose(geometric)(mask.astype(np.float32), mask, 11)
    _assert_aligned(image, out_mask)


def test_affine_keeps_label_values_and_dtype():
    labels = _labels()
    for dtype in (np.uint8, np.int32, np.int64):
        lab = labels.astype(dtype)
        _, out = RandomAffine(degrees=30, scale=(0.8, 1.2))(np.zeros((64, 64), np.float32), lab, 5)
        assert out.dtype == dtype
        assert set(np.unique(out)) <= {0, 3, 7, 250}
        assert len(np.unique(out)) == 4


def test_affine_90_degrees_matches_rot90():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 2)).astype(np.float32)
    mask = _labels((32, 32))
    out_img, out_mask = RandomAffine(degrees=(90, 90), pad_mode="constant")(image, mask, 0)
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(out_img[inner], np.rot90(image)[inner], atol=1e-5)
    np.testing.assert_array_equal(out_mask[inner], np.rot90(mask)[inner])


def test_affine_identity_and_zoom_about_centre():
    image = np.random.default_rng(1).random((9, 9)).astype(np.float32)
    mask = image > 0.5
    out_img, out_mask = RandomAffine()(image, mask, 0)
    np.testing.assert_allclose(out_img, image, atol=1e-6)
    np.testing.assert_array_equal(out_mask, mask)
    # zoom 2 about the centre pixel (4, 4): output (4 + 2k) samples input (4 + k)
    out_img, _ = RandomAffine(scale=(2.0, 2.0))(image, mask, 0)
    np.testing.assert_allclose(out_img[::2, ::2][1:4, 1:4], image[3:6, 3:6], atol=1e-6)
    np.testing.assert_allclose(out_img[4, 5], (image[4, 4] + image[4, 5]) / 2, atol=1e-6)


def test_flips_are_exact():
    image, mask = _rgb(), _labels()
    img, m = RandomHFlip(1.0)(image, mask, 0)
    np.testing.assert_array_equal(img, image[:, ::-1])
    np.testing.assert_array_equal(m, mask[:, ::-1])
    img, m = RandomVFlip(1.0)(image, mask, 0)
    np.testing.assert_array_equal(img, image[::-1])
    np.testing.assert_array_equal(m, mask[::-1])
    img, m = RandomHFlip(0.0)(image, mask, 0)
    np.testing.assert_array_equal(img, image)
    flipped = [not np.array_equal(RandomHFlip(0.5)(image, mask, s)[1], mask) for s in range(40)]
    assert 8 < sum(flipped) < 32


def test_rot90_rotates_image_and_mask_by_the_same_k():
    image = np.random.default_rng(2).random((6, 10)).astype(np.float32)
    mask = image > 0.5
    seen = set()
    for seed in range(30):
        img, m = RandomRot90()(image, mask, seed)
        k = next(k for k in range(4) if np.rot90(image, k).shape == img.shape
                 and np.array_equal(np.rot90(image, k), img))
        np.testing.assert_array_equal(m, np.rot90(mask, k))
        seen.add(k)
    assert seen == {0, 1, 2, 3}


def test_random_crop_same_window_and_errors():
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    mask = np.arange(100).reshape(10, 10)
    img, m = RandomCrop((4, 6))(image, mask, 3)
    assert img.shape == (4, 6)
    np.testing.assert_array_equal(img.astype(int), m)
    with pytest.raises(AugmentError, match="pad_if_needed"):
        RandomCrop(12)(image, mask, 0)
    img, m = RandomCrop(12, pad_if_needed=True)(image, mask, 0)
    assert img.shape == (12, 12) and m.shape == (12, 12)
    assert m[10:].sum() == 0 and img[:, 10:].sum() == 0
    with pytest.raises(AugmentError, match="size"):
        RandomCrop(0)


# ------------------------------------------------------------------ photometric


def test_brightness_factor_range():
    image = np.full((8, 8), 0.5, np.float32)
    mask = _blobs((8, 8))
    values = []
    for seed in range(60):
        out, m = ColorJitter(brightness=0.6)(image, mask, seed)
        assert m is mask
        assert np.ptp(out) == 0
        values.append(out[0, 0])
    values = np.array(values)
    assert values.min() >= 0.5 * 0.4 - 1e-6 and values.max() <= 0.5 * 1.6 + 1e-6
    assert values.min() < 0.3 and values.max() > 0.7


def test_contrast_keeps_mean_and_scales_spread():
    image = np.random.default_rng(3).uniform(0.4, 0.6, (16, 16)).astype(np.float32)
    for seed in range(10):
        out, _ = ColorJitter(contrast=0.5)(image, image > 0.5, seed)
        assert out.mean() == pytest.approx(image.mean(), abs=1e-5)
        ratio = (out - out.mean()).std() / (image - image.mean()).std()
        assert 0.5 - 1e-4 <= ratio <= 1.5 + 1e-4


def test_saturation_and_hue_skip_grey_images():
    mask = np.zeros((8, 8), bool)
    for shape in ((8, 8), (8, 8, 1), (8, 8, 2)):
        image = np.random.default_rng(4).random(shape).astype(np.float32)
        out, _ = ColorJitter(saturation=0.9, hue=0.5)(image, mask, 0)
        np.testing.assert_array_equal(out, image)


def test_saturation_preserves_luma_and_hue_shift_is_bounded():
    image = np.random.default_rng(5).uniform(0.4, 0.6, (8, 8, 3)).astype(np.float32)
    luma = image @ np.array([0.299, 0.587, 0.114], np.float32)
    out, _ = ColorJitter(saturation=0.4)(image, np.zeros((8, 8), bool), 1)
    assert not np.allclose(out, image)
    np.testing.assert_allclose(out @ np.array([0.299, 0.587, 0.114], np.float32), luma, atol=1e-5)

    red = np.zeros((4, 4, 3), np.float32)
    red[..., 0] = 0.8
    shifts = []
    for seed in range(20):
        out, _ = ColorJitter(hue=0.025)(red, np.zeros((4, 4), bool), seed)
        h = rgb2hsv(out)[..., 0]
        shifts.append(float(((h[0, 0] + 0.5) % 1.0) - 0.5))  # signed distance from hue 0
        np.testing.assert_allclose(rgb2hsv(out)[..., 2], 0.8, atol=1e-5)  # value kept
    assert max(abs(s) for s in shifts) <= 0.025 + 1e-5
    assert min(shifts) < 0 < max(shifts)


def test_blur_noise_gamma():
    image = np.random.default_rng(6).random((32, 32)).astype(np.float32)
    mask = image > 0.5
    out, m = GaussianBlur(sigma=(1.0, 1.0), p=1.0)(image, mask, 0)
    np.testing.assert_allclose(out, ndimage.gaussian_filter(image, 1.0, mode="reflect"), atol=1e-6)
    assert m is mask
    two = np.stack([np.zeros((32, 32)), np.ones((32, 32))], -1).astype(np.float32)
    out, _ = GaussianBlur(sigma=(2.0, 2.0), p=1.0)(two, mask, 0)
    np.testing.assert_allclose(out, two, atol=1e-6)  # no mixing across channels
    np.testing.assert_array_equal(GaussianBlur(p=0.0)(image, mask, 0)[0], image)

    flat = np.full((128, 128), 0.5, np.float32)
    out, _ = GaussianNoise(std=(0.1, 0.1), p=1.0)(flat, np.zeros((128, 128), bool), 0)
    assert (out - 0.5).std() == pytest.approx(0.1, rel=0.05)
    out, _ = GaussianNoise(std=(0.5, 0.5), p=1.0)(flat, np.zeros((128, 128), bool), 0)
    assert out.min() >= 0.0 and out.max() <= 1.0

    out, _ = RandomGamma(gamma=(2.0, 2.0), p=1.0)(image, mask, 0)
    np.testing.assert_allclose(out, image**2, rtol=1e-6)


# ------------------------------------------------------------------ validation


def test_bad_inputs_and_parameters_raise():
    image, mask = np.zeros((8, 8), np.float32), np.zeros((8, 8), bool)
    with pytest.raises(AugmentError, match="float"):
        RandomHFlip()(np.zeros((8, 8), np.uint8), mask, 0)
    with pytest.raises(AugmentError, match="bool or integer"):
        RandomHFlip()(image, np.zeros((8, 8), np.float32), 0)
    with pytest.raises(AugmentError, match="height/width"):
        RandomHFlip()(image, np.zeros((8, 9), bool), 0)
    with pytest.raises(AugmentError, match="rng"):
        RandomHFlip()(image, mask, 0.5)
    with pytest.raises(AugmentError, match="probability"):
        RandomVFlip(p=1.5)
    with pytest.raises(AugmentError, match="scale"):
        RandomAffine(scale=(0.0, 1.0))
    with pytest.raises(AugmentError, match="pad_mode"):
        RandomAffine(pad_mode="edge")
    with pytest.raises(AugmentError, match="hue"):
        ColorJitter(hue=0.7)
    with pytest.raises(AugmentError, match="brightness"):
        ColorJitter(brightness=-0.1)
    with pytest.raises(AugmentError, match="callable"):
        Compose([RandomHFlip(), 3])
