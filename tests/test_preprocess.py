"""Tests for segdiff_core.data.preprocess against hand-computed values."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from skimage.color import rgb2gray

from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import prompt_crop
from segdiff_core.data.preprocess import (
    ChannelMismatchError,
    ImageLayoutError,
    PreprocessConfig,
    PreprocessError,
    adapt_channels,
    normalize,
    to_channels_last,
    to_model_array,
)

MINMAX = dict(normalization="minmax")


# ------------------------------------------------------------------------------------------
# PreprocessConfig
# ------------------------------------------------------------------------------------------


class TestConfig:
    def test_defaults(self) -> None:
        cfg = PreprocessConfig()
        assert (cfg.in_channels, cfg.input_size, cfg.normalization) == (3, 256, "percentile")
        assert (cfg.p_low, cfg.p_high) == (1.0, 99.8)
        assert cfg.per_channel and not cfg.clip and cfg.rgb_to_gray == "luminance"

    def test_json_roundtrip_with_numpy_values(self) -> None:
        cfg = PreprocessConfig(
            in_channels=np.int64(1), input_size=np.int32(128), p_low=np.float32(2), p_high=98,
            normalization="zscore", per_channel=np.bool_(False), clip=True, rgb_to_gray="mean",
        )
        data = json.loads(json.dumps(cfg.to_dict()))
        assert data == {
            "in_channels": 1, "input_size": 128, "normalization": "zscore", "p_low": 2.0,
            "p_high": 98.0, "per_channel": False, "clip": True, "rgb_to_gray": "mean",
        }
        assert PreprocessConfig.from_dict(data) == cfg

    def test_from_dict_unknown_and_missing_keys(self) -> None:
        with pytest.raises(PreprocessError, match=r"unknown preprocessing config key\(s\) \['chanels'\]"):
            PreprocessConfig.from_dict({"in_channels": 1, "chanels": 3})
        assert PreprocessConfig.from_dict({"in_channels": 1}) == PreprocessConfig(in_channels=1)
        with pytest.raises(PreprocessError, match="mapping"):
            PreprocessConfig.from_dict([("in_channels", 1)])  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"in_channels": 0}, "in_channels"),
            ({"in_channels": True}, "in_channels"),
            ({"in_channels": 3.0}, "in_channels"),
            ({"input_size": -1}, "input_size"),
            ({"normalization": "max"}, "normalization"),
            ({"p_low": 50, "p_high": 50}, "p_low < p_high"),
            ({"p_high": 101}, "p_high"),
            ({"p_low": -1}, "p_low"),
            ({"p_low": "1"}, "numbers"),
            ({"per_channel": "yes"}, "per_channel"),
            ({"clip": 1}, "clip"),
            ({"rgb_to_gray": "red"}, "rgb_to_gray"),
        ],
    )
    def test_invalid_values(self, kwargs: dict, match: str) -> None:
        with pytest.raises(PreprocessError, match=match):
            PreprocessConfig(**kwargs)


# ------------------------------------------------------------------------------------------
# to_channels_last
# ------------------------------------------------------------------------------------------


class TestToChannelsLast:
    @pytest.mark.parametrize(
        "dtype, values",
        [
            (np.uint8, [[0, 1], [128, 255]]),
            (np.uint16, [[0, 1000], [40000, 65535]]),
            (np.int32, [[-5, 0], [7, 100000]]),
            (np.int8, [[-128, 0], [1, 127]]),
            (np.float16, [[0.5, -1.25], [2.0, 1024.0]]),
            (np.float64, [[0.1, 1e-30], [-3.5, 1e30]]),
        ],
    )
    def test_dtypes_convert_values_unscaled(self, dtype: type, values: list) -> None:
        arr = np.array(values, dtype=dtype)
        out = to_channels_last(arr)
        assert out.dtype == np.float32 and out.shape == (2, 2, 1)
        np.testing.assert_array_equal(out[:, :, 0], np.array(values, dtype=dtype).astype(np.float32))

    def test_bool(self) -> None:
        out = to_channels_last(np.array([[True, False]]))
        np.testing.assert_array_equal(out[:, :, 0], [[1.0, 0.0]])

    def test_float64_beyond_float32_range_is_clipped(self) -> None:
        out = to_channels_last(np.array([[1e300, -1e300, 1.0]]))
        big = np.finfo(np.float32).max
        np.testing.assert_array_equal(out[0, :, 0], [big, -big, 1.0])

    def test_non_finite_replaced_by_channel_median(self) -> None:
        chan0 = np.array([[1.0, 2.0, np.nan], [np.inf, 4.0, -np.inf]])  # finite median of 1,2,4 = 2
        chan1 = np.array([[10.0, 20.0, 30.0], [40.0, np.nan, 60.0]])  # median of 10..60 w/o 50 = 30
        chan2 = np.full((2, 3), np.nan)  # nothing finite -> 0
        out = to_channels_last(np.stack([chan0, chan1, chan2], axis=-1), rgb=True)
        np.testing.assert_array_equal(out[:, :, 0], [[1, 2, 2], [2, 4, 2]])
        np.testing.assert_array_equal(out[:, :, 1], [[10, 20, 30], [40, 30, 60]])
        np.testing.assert_array_equal(out[:, :, 2], np.zeros((2, 3)))
        assert np.all(np.isfinite(out))

    def test_layout_guess(self) -> None:
        rng = np.random.default_rng(0)
        hwc = rng.random((20, 30, 3))
        np.testing.assert_allclose(to_channels_last(hwc), hwc, rtol=1e-6)
        chw = np.moveaxis(hwc, -1, 0)  # (3, 20, 30)
        np.testing.assert_allclose(to_channels_last(chw), hwc, rtol=1e-6)
        assert to_channels_last(np.zeros((2, 40, 50))).shape == (40, 50, 2)
        assert to_channels_last(np.zeros((40, 50, 16))).shape == (40, 50, 16)
        assert to_channels_last(np.zeros((5, 6, 4))).shape == (5, 6, 4)  # tie-ish: last wins
        assert to_channels_last(np.zeros((4, 4, 4))).shape == (4, 4, 4)
        assert to_channels_last(np.zeros((1, 1, 8, 9))).shape == (8, 9, 1)
        assert to_channels_last(np.zeros((1, 8, 9))).shape == (8, 9, 1)

    def test_explicit_rgb_flag(self) -> None:
        arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
        np.testing.assert_array_equal(to_channels_last(arr, rgb=True), arr.astype(np.float32))
        # rgb=False: the first axis (2) is the channel axis
        np.testing.assert_array_equal(
            to_channels_last(arr, rgb=False), np.moveaxis(arr, 0, -1).astype(np.float32)
        )
        with pytest.raises(ImageLayoutError, match=r"\(H, W, 3\)"):
            to_channels_last(np.zeros((10, 10, 5)), rgb=True)
        assert to_channels_last(np.zeros((32, 32, 32)), rgb=False).shape == (32, 32, 32)

    @pytest.mark.parametrize(
        "arr, exc, match",
        [
            (np.zeros((32, 40, 48)), ImageLayoutError, "volume"),
            (np.zeros((2, 3, 8, 9)), ImageLayoutError, "2D plane"),
            (np.zeros((7,)), ImageLayoutError, "2D image"),
            (np.zeros((0, 5)), ImageLayoutError, "empty"),
            (np.zeros((4, 4), dtype=complex), PreprocessError, "complex"),
            (np.array([["a", "b"]]), PreprocessError, "dtype"),
            (np.array([[None, 1]], dtype=object), PreprocessError, "dtype"),
        ],
    )
    def test_errors(self, arr: np.ndarray, exc: type, match: str) -> None:
        with pytest.raises(exc, match=match):
            to_channels_last(arr)


# ------------------------------------------------------------------------------------------
# adapt_channels
# ------------------------------------------------------------------------------------------


class TestAdaptChannels:
    def test_gray_to_three_replicates(self) -> None:
        gray = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
        out = adapt_channels(gray, PreprocessConfig(in_channels=3))
        assert out.shape == (2, 3, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], gray[:, :, 0])

    def test_rgb_to_gray_luminance_hand_computed(self) -> None:
        rgb = np.array([[[100.0, 50.0, 200.0], [0.0, 0.0, 0.0]]], dtype=np.float32)
        out = adapt_channels(rgb, PreprocessConfig(in_channels=1))
        assert out.shape == (1, 2, 1)
        assert out[0, 0, 0] == pytest.approx(0.2125 * 100 + 0.7154 * 50 + 0.0721 * 200)  # 71.44
        assert out[0, 0, 0] == pytest.approx(71.44, abs=1e-4)
        mean = adapt_channels(rgb, PreprocessConfig(in_channels=1, rgb_to_gray="mean"))
        assert mean[0, 0, 0] == pytest.approx(350 / 3)

    def test_luminance_matches_skimage(self) -> None:
        rgb = np.random.default_rng(1).random((8, 9, 3)).astype(np.float32)
        out = adapt_channels(rgb, PreprocessConfig(in_channels=1))
        np.testing.assert_allclose(out[:, :, 0], rgb2gray(rgb), atol=1e-6)

    def test_rgba(self) -> None:
        rgba = np.random.default_rng(2).random((4, 5, 4)).astype(np.float32)
        np.testing.assert_array_equal(
            adapt_channels(rgba, PreprocessConfig(in_channels=3)), rgba[:, :, :3]
        )
        np.testing.assert_allclose(
            adapt_channels(rgba, PreprocessConfig(in_channels=1))[:, :, 0],
            rgb2gray(rgba[:, :, :3]),
            atol=1e-6,
        )
        np.testing.assert_array_equal(adapt_channels(rgba, PreprocessConfig(in_channels=4)), rgba)

    def test_matching_counts_unchanged(self) -> None:
        five = np.random.default_rng(3).random((3, 3, 5)).astype(np.float32)
        np.testing.assert_array_equal(adapt_channels(five, PreprocessConfig(in_channels=5)), five)

    @pytest.mark.parametrize("k, n", [(2, 3), (3, 2), (5, 3), (1, 2), (2, 1), (3, 4)])
    def test_mismatch_errors(self, k: int, n: int) -> None:
        with pytest.raises(ChannelMismatchError) as info:
            adapt_channels(np.zeros((4, 4, k)), PreprocessConfig(in_channels=n))
        assert f"has {k} channel(s) but the model expects {n}" in str(info.value)
        assert isinstance(info.value, ValueError)

    def test_requires_hwc(self) -> None:
        with pytest.raises(ImageLayoutError, match="to_channels_last"):
            adapt_channels(np.zeros((4, 4)), PreprocessConfig(in_channels=1))


# ------------------------------------------------------------------------------------------
# normalize
# ------------------------------------------------------------------------------------------


def column(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=float).reshape(1, -1, 1)


class TestNormalize:
    def test_percentile_hand_computed(self) -> None:
        x = column(np.arange(101))  # percentiles: p1 = 1.0, p99.8 = 99.8
        out = normalize(x, PreprocessConfig(in_channels=1))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out.ravel(), (np.arange(101) - 1.0) / 98.8, rtol=1e-6)
        clipped = normalize(x, PreprocessConfig(in_channels=1, clip=True)).ravel()
        assert clipped[0] == 0.0 and clipped[-1] == 1.0 and clipped[50] == pytest.approx(49 / 98.8)
        custom = normalize(x, PreprocessConfig(in_channels=1, p_low=10, p_high=90)).ravel()
        np.testing.assert_allclose(custom, (np.arange(101) - 10) / 80, rtol=1e-6)

    def test_minmax_zscore_none(self) -> None:
        x = column([2.0, 4.0, 6.0, 12.0])
        np.testing.assert_allclose(
            normalize(x, PreprocessConfig(in_channels=1, **MINMAX)).ravel(), [0, 0.2, 0.4, 1.0]
        )
        # mean 6, std sqrt((16 + 4 + 0 + 36) / 4) = sqrt(14)
        np.testing.assert_allclose(
            normalize(x, PreprocessConfig(in_channels=1, normalization="zscore")).ravel(),
            np.array([-4.0, -2.0, 0.0, 6.0]) / np.sqrt(14),
            rtol=1e-6,
        )
        np.testing.assert_array_equal(
            normalize(x, PreprocessConfig(in_channels=1, normalization="none")).ravel(),
            [2, 4, 6, 12],
        )

    @pytest.mark.parametrize("mode", ["percentile", "minmax", "zscore"])
    @pytest.mark.parametrize("value", [0.0, 7.0, -3.5, 65535.0, 1e-20])
    def test_constant_image_gives_zeros(self, mode: str, value: float) -> None:
        x = np.full((6, 7, 2), value)
        with np.errstate(all="raise"):  # nothing divides by zero
            out = normalize(x, PreprocessConfig(in_channels=2, normalization=mode))
        np.testing.assert_array_equal(out, np.zeros((6, 7, 2), np.float32))

    def test_float_noise_counts_as_constant(self) -> None:
        x = column(np.float32(1.0) + np.array([0.0, 1e-9, -1e-9, 0.0]))
        np.testing.assert_array_equal(normalize(x, PreprocessConfig(in_channels=1)), 0.0)
        tiny = column([0.0, 1e-10, 2e-10])  # real structure at a tiny scale is kept
        np.testing.assert_allclose(
            normalize(tiny, PreprocessConfig(in_channels=1, **MINMAX)).ravel(), [0, 0.5, 1]
        )

    def test_percentile_falls_back_to_minmax_for_sparse_bright_pixels(self) -> None:
        x = np.zeros(1000)
        x[0] = 10.0  # p1 == p99.8 == 0
        out = normalize(column(x), PreprocessConfig(in_channels=1)).ravel()
        assert out[0] == pytest.approx(1.0) and np.all(out[1:] == 0)

    def test_per_channel_vs_joint(self) -> None:
        x = np.stack([np.linspace(0, 1, 11), np.linspace(0, 100, 11)], axis=-1)[None]
        per = normalize(x, PreprocessConfig(in_channels=2, **MINMAX))
        np.testing.assert_allclose(per[0, :, 0], np.linspace(0, 1, 11), atol=1e-7)
        np.testing.assert_allclose(per[0, :, 1], np.linspace(0, 1, 11), atol=1e-7)
        joint = normalize(x, PreprocessConfig(in_channels=2, per_channel=False, **MINMAX))
        np.testing.assert_allclose(joint[0, :, 0], np.linspace(0, 0.01, 11), atol=1e-7)
        np.testing.assert_allclose(joint[0, :, 1], np.linspace(0, 1, 11), atol=1e-7)

    def test_rejects_non_finite(self) -> None:
        with pytest.raises(PreprocessError, match="to_channels_last"):
            normalize(column([1.0, np.nan]), PreprocessConfig(in_channels=1))


# ------------------------------------------------------------------------------------------
# prepare
# ------------------------------------------------------------------------------------------


class TestToModelArray:
    def test_uint8_rgb_to_gray_model(self) -> None:
        rgb = np.zeros((4, 4, 3), dtype=np.uint8)
        rgb[..., 0] = 200  # luminance 0.2125 * 200 = 42.5
        rgb[2:, :, 1] = 100  # lower half: 42.5 + 71.54 = 114.04
        out = to_model_array(rgb, PreprocessConfig(in_channels=1, input_size=4, **MINMAX))
        assert out.shape == (1, 4, 4) and out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_allclose(out[0, :2], 0.0)
        np.testing.assert_allclose(out[0, 2:], 1.0)

    def test_gray_uint16_to_rgb_model_channels_first(self) -> None:
        gray = np.array([[0, 100], [300, 500]], dtype=np.uint16)
        out = to_model_array(gray, PreprocessConfig(in_channels=3, input_size=2, **MINMAX))
        assert out.shape == (3, 2, 2)
        for c in range(3):
            np.testing.assert_allclose(out[c], [[0, 0.2], [0.6, 1.0]])

    def test_chw_input_and_nan(self) -> None:
        chw = np.array([[[0.0, np.nan], [2.0, 4.0]]])  # (1, 2, 2): NaN -> median 2
        out = to_model_array(chw, PreprocessConfig(in_channels=1, input_size=2, **MINMAX))
        np.testing.assert_allclose(out, [[[0.0, 0.5], [0.5, 1.0]]])

    def test_size_check(self) -> None:
        cfg = PreprocessConfig(in_channels=1, input_size=8)
        with pytest.raises(PreprocessError, match="6x8 but the model input is 8x8"):
            to_model_array(np.zeros((6, 8)), cfg)
        assert to_model_array(np.zeros((6, 8)), cfg, check_size=False).shape == (1, 6, 8)

    def test_mismatch_surfaces_from_to_model_array(self) -> None:
        with pytest.raises(ChannelMismatchError, match="has 2 channel"):
            to_model_array(np.zeros((8, 8, 2)), PreprocessConfig(in_channels=3, input_size=8))

    def test_tiff_files_through_crop_and_to_model_array(self, tmp_path) -> None:
        rng = np.random.default_rng(4)
        rgb = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
        gray16 = (np.arange(60 * 80, dtype=np.uint16).reshape(60, 80) * 13) % 60000
        tifffile.imwrite(tmp_path / "he.tif", rgb, photometric="rgb")
        tifffile.imwrite(tmp_path / "fluo.tif", gray16)
        rgb_read = tifffile.imread(tmp_path / "he.tif")
        gray_read = tifffile.imread(tmp_path / "fluo.tif")
        np.testing.assert_array_equal(rgb_read, rgb)

        cfg3 = PreprocessConfig(in_channels=3, input_size=16)
        patch, _ = prompt_crop(to_channels_last(rgb_read, rgb=True), Box(10, 20, 40, 60), 16)
        x = to_model_array(patch, cfg3)
        assert x.shape == (3, 16, 16) and x.dtype == np.float32
        for c in range(3):  # per-channel percentile normalisation: 1% .. 99.8% -> 0 .. 1
            lo, hi = np.percentile(patch[..., c].astype(float), [1.0, 99.8])
            np.testing.assert_allclose(x[c], (patch[..., c] - lo) / (hi - lo), atol=1e-5)

        cfg1 = PreprocessConfig(in_channels=1, input_size=16, **MINMAX)
        patch_g, _ = prompt_crop(to_channels_last(gray_read), Box(5, 5, 25, 45), 16)
        y = to_model_array(patch_g, cfg1)
        assert y.shape == (1, 16, 16)
        assert y.min() == pytest.approx(0.0, abs=1e-6) and y.max() == pytest.approx(1.0, abs=1e-6)
