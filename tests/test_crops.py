"""Tests for segdiff_core.data.crops: protocols, crop -> model -> paste-back, Vaihingen, MoNuSeg.

The Vaihingen central-object rule is tested with the readers (tests/test_readers.py)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segdiff_core.data.boxes import Box, BoxError
from segdiff_core.data.crops import (
    PAD_MODES,
    CropError,
    CropGeometry,
    CropProtocol,
    WindowGrid,
    crop_like,
    crop_to_model,
    crop_whole_image,
    paste_back,
    prompt_crop,
    stitch,
)

SCIPY_MODE = {
    "reflect": "reflect",
    "mirror": "mirror",
    "nearest": "nearest",
    "wrap": "grid-wrap",
    "constant": "grid-constant",
}


def ramp(shape: tuple[int, int], a: float = 0.7, c: float = -0.3) -> np.ndarray:
    """Linear image a*y + c*x evaluated at pixel centres (continuous box coordinates)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    return a * yy + c * xx


def box_close(b: Box, expected: tuple[float, float, float, float]) -> None:
    np.testing.assert_allclose(b.as_tuple(), expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------
# CropProtocol
# ------------------------------------------------------------------------------------------


class TestCropProtocol:
    def test_tight_is_the_box(self) -> None:
        box = Box(10.5, 20.25, 30.0, 60.0)
        assert CropProtocol.tight().crop_box(box) == box

    def test_expansion_15_percent_hand_computed(self) -> None:
        # h = 20 -> 23, w = 40 -> 46, centre (20, 40)
        crop = CropProtocol.expansion().crop_box(Box(10, 20, 30, 60))
        box_close(crop, (8.5, 17.0, 31.5, 63.0))
        assert crop.height == pytest.approx(1.15 * 20)
        assert crop.width == pytest.approx(1.15 * 40)

    def test_default_protocol_is_expansion(self) -> None:
        assert CropProtocol() == CropProtocol.expansion(0.15)

    def test_custom_margin(self) -> None:
        box_close(CropProtocol(margin=0.5).crop_box((0, 0, 10, 20)), (-2.5, -5.0, 12.5, 25.0))
        box_close(CropProtocol(margin=-0.5).crop_box((0, 0, 10, 20)), (2.5, 5.0, 7.5, 15.0))

    def test_square_grows_shorter_side(self) -> None:
        # expansion -> 11.5 x 46, square -> 46 x 46 around centre (5, 20)
        crop = CropProtocol.expansion(square=True).crop_box(Box(0, 0, 10, 40))
        box_close(crop, (-18.0, -3.0, 28.0, 43.0))
        crop = CropProtocol.tight(square=True).crop_box(Box(0, 0, 30, 10))
        box_close(crop, (0.0, -10.0, 30.0, 20.0))

    def test_random_protocol_needs_generator(self) -> None:
        proto = CropProtocol.training()
        assert proto.is_random
        assert not CropProtocol.expansion().is_random
        with pytest.raises(CropError, match="rng"):
            proto.crop_box(Box(0, 0, 10, 10))
        with pytest.raises(CropError, match="rng"):
            proto.crop_box(Box(0, 0, 10, 10), rng=42)  # type: ignore[arg-type]

    def test_training_margin_range_and_centring(self) -> None:
        rng = np.random.default_rng(0)
        box = Box(5, 7, 25, 47)
        proto = CropProtocol.training()
        ratios_h, ratios_w = [], []
        for _ in range(400):
            crop = proto.crop_box(box, rng=rng)
            assert crop.center == pytest.approx(box.center)
            ratios_h.append(crop.height / box.height)
            ratios_w.append(crop.width / box.width)
        rh = np.array(ratios_h)
        np.testing.assert_allclose(rh, ratios_w)  # one margin for both axes
        assert rh.min() >= 1.10 and rh.max() <= 1.20
        assert rh.min() < 1.11 and rh.max() > 1.19  # uniform over the whole range
        assert 1.14 < rh.mean() < 1.16

    def test_training_draw_order_hand_computed(self) -> None:
        box = Box(10, 20, 30, 60)  # h 20, w 40, centre (20, 40)
        proto = CropProtocol.training((0.1, 0.2), shift=0.1, scale_range=(0.8, 1.25))
        crop = proto.crop_box(box, rng=np.random.default_rng(123))
        ref = np.random.default_rng(123)
        sh, sw = ref.uniform(0.8, 1.25), ref.uniform(0.8, 1.25)
        dy, dx = ref.uniform(-0.1, 0.1) * 20, ref.uniform(-0.1, 0.1) * 40
        m = ref.uniform(0.1, 0.2)
        h, w = 20 * sh * (1 + m), 40 * sw * (1 + m)
        cy, cx = 20 + dy, 40 + dx
        box_close(crop, (cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2))

    def test_training_same_seed_same_crop(self) -> None:
        proto = CropProtocol.training(shift=0.2, scale_range=(0.9, 1.1))
        a = [proto.crop_box((0, 0, 10, 10), rng=np.random.default_rng(7)) for _ in range(2)]
        assert a[0] == a[1]

    def test_training_shift_and_scale_bounds(self) -> None:
        rng = np.random.default_rng(1)
        box = Box(0, 0, 40, 20)
        proto = CropProtocol.training((0.1, 0.2), shift=0.25, scale_range=(0.5, 2.0))
        shifts_y = []
        for _ in range(300):
            crop = proto.crop_box(box, rng=rng)
            cy, cx = crop.center
            assert abs(cy - 20) <= 0.25 * 40 + 1e-9
            assert abs(cx - 10) <= 0.25 * 20 + 1e-9
            assert 0.5 * 1.1 * 40 - 1e-9 <= crop.height <= 2.0 * 1.2 * 40 + 1e-9
            assert 0.5 * 1.1 * 20 - 1e-9 <= crop.width <= 2.0 * 1.2 * 20 + 1e-9
            shifts_y.append(cy - 20)
        assert min(shifts_y) < -8 and max(shifts_y) > 8

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"margin": -1.0},
            {"margin": float("nan")},
            {"shift": -0.1},
            {"jitter_margin": (0.2, 0.1)},
            {"jitter_margin": (-1.0, 0.1)},
            {"jitter_margin": (0.1,)},
            {"scale_range": (0.0, 1.0)},
            {"scale_range": (1.0, float("inf"))},
            {"square": "yes"},
        ],
    )
    def test_invalid_parameters(self, kwargs: dict) -> None:
        with pytest.raises(CropError):
            CropProtocol(**kwargs)

    def test_dict_roundtrip_through_json(self) -> None:
        proto = CropProtocol.training((0.1, 0.2), shift=0.05, scale_range=(0.9, 1.1), square=True)
        data = json.loads(json.dumps(proto.to_dict()))
        assert CropProtocol.from_dict(data) == proto
        assert CropProtocol.from_dict(CropProtocol.tight().to_dict()) == CropProtocol.tight()
        with pytest.raises(CropError, match="unknown crop protocol key"):
            CropProtocol.from_dict({"margin": 0.1, "marign": 0.2})

    @pytest.mark.parametrize(
        "bad",
        [(5, 5, 5, 10), (5, 5, 3, 10), (float("nan"), 0, 4, 4), (0, 0, float("inf"), 3)],
    )
    def test_bad_boxes_raise_box_error(self, bad: tuple) -> None:
        with pytest.raises(BoxError):
            CropProtocol.expansion().crop_box(bad)

    def test_box_outside_image_raises(self) -> None:
        with pytest.raises(BoxError, match="outside the image"):
            CropProtocol.expansion().crop_box(Box(50, 50, 60, 60), image_shape=(40, 40))
        with pytest.raises(BoxError, match="outside the image"):
            prompt_crop(np.zeros((40, 40)), Box(-20, 0, -1, 10), 8)


# ------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------


class TestGeometry:
    def test_model_pixel_centres_map_linearly_onto_the_crop(self) -> None:
        geom = CropGeometry(Box(-3.5, 2.25, 20.5, 50.25), (30, 40), (8, 16))
        assert geom.scale == pytest.approx((3.0, 3.0))
        cy, cx = geom.sample_coords()
        # model pixel v is centred at image y0 + (v + 0.5) * 3; index coordinates are 0.5 less
        np.testing.assert_allclose(cy, -3.5 + (np.arange(8) + 0.5) * 3 - 0.5)
        np.testing.assert_allclose(cx, 2.25 + (np.arange(16) + 0.5) * 3 - 0.5)

    def test_footprint_rules(self) -> None:
        def fp(y0: float, y1: float, n: int = 10) -> tuple[int, int]:
            g = CropGeometry(Box(y0, 0, y1, 5), (n, 5), (4, 4))
            rows = g.footprint[0]
            return rows.start, rows.stop

        assert fp(2.5, 7.5) == (2, 7)  # centres 2.5 .. 6.5; 7.5 excluded
        assert fp(2.6, 7.4) == (3, 7)
        assert fp(-5.0, 3.0) == (0, 3)
        assert fp(8.2, 30.0) == (8, 10)
        assert fp(0.6, 0.9) == (0, 1)  # no centre covered -> pixel under the middle
        assert fp(-5.0, 0.3) == (0, 1)
        assert fp(9.8, 15.0) == (9, 10)

    def test_geometry_validation_and_dict(self) -> None:
        with pytest.raises(BoxError):
            CropGeometry(Box(20, 20, 30, 30), (10, 10), (4, 4))
        with pytest.raises(CropError, match="padding mode"):
            CropGeometry(Box(0, 0, 3, 3), (10, 10), (4, 4), pad_mode="edge")
        with pytest.raises(CropError, match="model size"):
            CropGeometry(Box(0, 0, 3, 3), (10, 10), (0, 4))
        geom = CropGeometry(Box(0.5, -1, 3, 3), (10, 12), (4, 4), "constant", 2.0)
        assert CropGeometry.from_dict(json.loads(json.dumps(geom.to_dict()))) == geom


# ------------------------------------------------------------------------------------------
# crop_to_model
# ------------------------------------------------------------------------------------------


class TestCropToModel:
    def test_identity_crop_is_exact_slice(self) -> None:
        img = np.arange(100, dtype=np.uint16).reshape(10, 10)
        patch, geom = crop_to_model(img, Box(2, 3, 6, 8), (4, 5))
        assert patch.dtype == np.float32 and patch.shape == (4, 5)
        np.testing.assert_array_equal(patch, img[2:6, 3:8].astype(np.float32))
        labels, _ = crop_to_model(img, Box(2, 3, 6, 8), (4, 5), order=0)
        assert labels.dtype == np.uint16
        np.testing.assert_array_equal(labels, img[2:6, 3:8])
        assert geom.footprint == (slice(2, 6), slice(3, 8))

    def test_upsampling_hand_computed(self) -> None:
        img = np.array([[0.0, 10.0], [20.0, 30.0]])
        patch, _ = crop_to_model(img, Box(0, 0, 2, 2), 4)
        # sample coords -0.25, 0.25, 0.75, 1.25 -> reflect padding clamps the outer half pixel
        r = np.array([0.0, 0.25, 0.75, 1.0])
        np.testing.assert_allclose(patch, 20 * r[:, None] + 10 * r[None, :], atol=1e-6)
        patch_c, _ = crop_to_model(img, Box(0, 0, 2, 2), 4, mode="constant", cval=100.0)
        # y = -0.25: 0.25 * cval + 0.75 * row 0; x = 0.75: 0.25 * col 0 + 0.75 * col 1
        assert patch_c[0, 2] == pytest.approx(0.25 * 100 + 0.75 * 7.5, abs=1e-4)
        # corner: only the in-image weight 0.75 * 0.75 falls on pixel (0, 0) = 0
        assert patch_c[0, 0] == pytest.approx(100 * (1 - 0.75**2), abs=1e-4)
        np.testing.assert_allclose(patch_c[1:3, 1:3], patch[1:3, 1:3], atol=1e-5)

    @pytest.mark.parametrize("mode", PAD_MODES)
    def test_matches_scipy_map_coordinates(self, mode: str) -> None:
        rng = np.random.default_rng(3)
        img = rng.random((23, 31, 2))
        for box in (Box(3.2, 5.7, 20.1, 30.3), Box(-10.5, -4.2, 12.3, 40.1), Box(20, 25, 41, 50)):
            patch, geom = crop_to_model(img, box, (9, 13), mode=mode, cval=0.4, antialias=False)
            cy, cx = geom.sample_coords()
            yy, xx = np.meshgrid(cy, cx, indexing="ij")
            for c in range(2):
                for order in (0, 1):
                    ref = ndimage.map_coordinates(
                        img[:, :, c], [yy, xx], order=order, mode=SCIPY_MODE[mode], cval=0.4
                    )
                    got = (
                        patch[:, :, c]
                        if order == 1
                        else crop_to_model(img, box, (9, 13), order=0, mode=mode, cval=0.4)[0][
                            :, :, c
                        ]
                    )
                    np.testing.assert_allclose(got, ref, atol=1e-6)

    def test_antialias_equals_gaussian_then_bilinear(self) -> None:
        rng = np.random.default_rng(4)
        img = rng.random((97, 83))
        box = Box(-12.2, -7.7, 110.1, 95.3)
        patch, geom = crop_to_model(img, box, (12, 16))
        sy, sx = geom.scale
        smooth = ndimage.gaussian_filter(img, ((sy - 1) / 2, (sx - 1) / 2), mode="reflect")
        cy, cx = geom.sample_coords()
        yy, xx = np.meshgrid(cy, cx, indexing="ij")
        ref = ndimage.map_coordinates(smooth, [yy, xx], order=1, mode="reflect")
        np.testing.assert_allclose(patch, ref, atol=1e-6)
        plain, _ = crop_to_model(img, box, (12, 16), antialias=False)
        assert plain.std() > 2 * patch.std()  # the filter really smooths the noise

    def test_masks_default_to_constant_zero_padding(self) -> None:
        mask = np.ones((10, 10), dtype=bool)
        patch, geom = crop_to_model(mask, Box(-5, -5, 5, 5), 10, order=0)
        assert patch.dtype == bool and geom.pad_mode == "constant"
        expected = np.zeros((10, 10), dtype=bool)
        expected[5:, 5:] = True
        np.testing.assert_array_equal(patch, expected)
        img_patch, img_geom = crop_to_model(mask.astype(np.uint8), Box(-5, -5, 5, 5), 10)
        assert img_geom.pad_mode == "reflect"
        np.testing.assert_array_equal(img_patch, np.ones((10, 10), np.float32))

    def test_rgb_patch_shape_and_crop_like(self) -> None:
        rng = np.random.default_rng(5)
        img = rng.integers(0, 255, size=(40, 50, 3), dtype=np.uint8)
        mask = np.zeros((40, 50), dtype=np.uint8)
        mask[10:20, 15:30] = 1
        patch, geom = prompt_crop(img, Box.from_mask(mask), 16, rng=None)
        assert patch.shape == (16, 16, 3) and patch.dtype == np.float32
        target = crop_like(mask, dataclasses.replace(geom, pad_mode="constant"), order=0)
        assert target.shape == (16, 16) and target.dtype == np.uint8
        # expansion: the box spans model pixels [16 * 0.075 / 1.15 ...] -> border rows are empty
        assert target[0].sum() == 0 and target[-1].sum() == 0 and target[8, 8] == 1
        assert target.sum() == pytest.approx(16 * 16 / 1.15**2, rel=0.15)
        with pytest.raises(CropError, match="does not match"):
            crop_like(mask[:30], geom)

    def test_huge_crop_of_tiny_image(self) -> None:
        img = np.arange(25, dtype=float).reshape(5, 5)
        patch, _ = crop_to_model(img, Box(-5000, -3000, 5000, 7000), 8)
        assert patch.shape == (8, 8) and np.all(np.isfinite(patch))
        assert img.min() - 1e-6 <= patch.min() and patch.max() <= img.max() + 1e-6

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"size": 0}, "positive"),
            ({"size": (4, 4, 4)}, "pair"),
            ({"size": 4.0}, "int"),
            ({"order": 3}, "order"),
            ({"order": True}, "order"),
            ({"mode": "edge"}, "padding mode"),
        ],
    )
    def test_parameter_errors(self, kwargs: dict, match: str) -> None:
        args = {"size": 4, **kwargs}
        size = args.pop("size")
        with pytest.raises(CropError, match=match):
            crop_to_model(np.zeros((10, 10)), Box(0, 0, 5, 5), size, **args)

    def test_array_errors(self) -> None:
        with pytest.raises(CropError, match="2D"):
            crop_to_model(np.zeros((2, 10, 10, 3)), Box(0, 0, 5, 5), 4)
        with pytest.raises(CropError, match="dtype"):
            crop_to_model(np.zeros((10, 10), complex), Box(0, 0, 5, 5), 4)
        with pytest.raises(BoxError):
            crop_to_model(np.zeros((10, 10)), Box(10, 10, 12, 12), 4)


# ------------------------------------------------------------------------------------------
# paste_back
# ------------------------------------------------------------------------------------------


class TestPasteBack:
    def test_identity_geometry_returns_map(self) -> None:
        geom = CropGeometry(Box(2, 3, 6, 8), (10, 10), (4, 5))
        m = np.arange(20, dtype=np.float32).reshape(4, 5)
        region, pasted = paste_back(m, geom)
        assert region == (slice(2, 6), slice(3, 8))
        np.testing.assert_array_equal(pasted, m)

    def test_downsampling_hand_computed(self) -> None:
        # a 2x2 crop seen at 4x4: image pixel r maps to model coordinate 2r + 0.5
        geom = CropGeometry(Box(0, 0, 2, 2), (2, 2), (4, 4))
        m = np.arange(16, dtype=float).reshape(4, 4)
        region, pasted = paste_back(m, geom, antialias=False)
        assert region == (slice(0, 2), slice(0, 2))
        expected = np.array(
            [[m[0:2, 0:2].mean(), m[0:2, 2:4].mean()], [m[2:4, 0:2].mean(), m[2:4, 2:4].mean()]]
        )
        np.testing.assert_allclose(pasted, expected, atol=1e-5)

    def test_labels_keep_dtype_nearest(self) -> None:
        geom = CropGeometry(Box(0, 0, 8, 8), (8, 8), (4, 4))
        labels = np.array([[1, 1, 2, 2]] * 2 + [[3, 3, 4, 4]] * 2, dtype=np.int32)
        _, pasted = paste_back(labels, geom, order=0)
        assert pasted.dtype == np.int32
        np.testing.assert_array_equal(pasted, np.kron(labels, np.ones((2, 2), np.int32)))

    def test_padding_part_is_dropped(self) -> None:
        geom = CropGeometry(Box(-4, -4, 4, 4), (10, 10), (8, 8))
        region, pasted = paste_back(np.ones((8, 8)), geom)
        assert region == (slice(0, 4), slice(0, 4)) and pasted.shape == (4, 4)

    def test_map_of_the_wrong_shape(self) -> None:
        geom = CropGeometry(Box(2, 4, 6, 10), (12, 12), (4, 6))
        with pytest.raises(CropError, match="model shape"):
            paste_back(np.zeros((5, 5)), geom)

    def test_ramp_interior_exact_for_expansion_prompt(self) -> None:
        img = ramp((120, 100))
        patch, geom = prompt_crop(img, Box(30.3, 20.6, 95.1, 70.2), 32)
        region, pasted = paste_back(patch, geom)
        err = np.abs(pasted - img[region])
        assert err[8:-8, 8:-8].max() < 1e-4  # linear ramps survive the round trip exactly
        assert err.max() < 1.5  # within ~one model pixel of ramp at the crop edge


# ------------------------------------------------------------------------------------------
# Property test: crop -> paste back lands where the box was
# ------------------------------------------------------------------------------------------


def expected_footprint(box: Box, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Independent implementation: pixels whose centre is in the crop, else the middle pixel."""
    out = []
    for lo, hi, n in ((box.y0, box.y1, shape[0]), (box.x0, box.x1, shape[1])):
        centres = np.arange(n) + 0.5
        idx = np.flatnonzero((centres >= lo) & (centres < hi))
        if idx.size:
            out.append(slice(int(idx[0]), int(idx[-1]) + 1))
        else:
            a, b = max(lo, 0.0), min(hi, float(n))
            mid = min(int(math.floor((a + b) / 2)), n - 1)
            out.append(slice(mid, mid + 1))
    return out[0], out[1]


@st.composite
def image_and_box(draw: st.DrawFn) -> tuple[tuple[int, int], Box, int]:
    h = draw(st.integers(1, 64))
    w = draw(st.integers(1, 64))
    bh = draw(st.floats(0.05, 150.0))
    bw = draw(st.floats(0.05, 150.0))
    y0 = draw(st.floats(-bh - 4, h + 4))
    x0 = draw(st.floats(-bw - 4, w + 4))
    size = draw(st.sampled_from([4, 7, 16, 32]))
    box = Box(y0, x0, y0 + bh, x0 + bw)
    assume(box.intersects((h, w)))
    return (h, w), box, size


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)
@given(case=image_and_box(), square=st.booleans(), margin=st.sampled_from([0.0, 0.15, 0.4]))
def test_crop_paste_back_lands_on_the_box(
    case: tuple[tuple[int, int], Box, int], square: bool, margin: float
) -> None:
    shape, box, size = case
    crop = CropProtocol(margin=margin, square=square).crop_box(box)
    assume(crop.intersects(shape))

    # 1) geometry: the pasted region is exactly the clipped crop's pixel footprint
    img = ramp(shape)
    patch, geom = crop_to_model(img, crop, size)
    assert patch.shape == (size, size)
    region, pasted = paste_back(patch, geom)
    assert region == expected_footprint(crop, shape)
    assert pasted.shape == (region[0].stop - region[0].start, region[1].stop - region[1].start)

    # 2) values: a linear ramp comes back where it was (error at most ~one model pixel of ramp
    #    near borders, exact in the interior away from image and crop borders)
    sy, sx = geom.scale
    s = max(sy, sx, 1.0)
    err = np.abs(pasted - img[region])
    assert err.max() <= (0.7 + 0.3) * s + 1e-3
    yy, xx = np.mgrid[region] + 0.5
    m = 2 * s + 2
    inner = (
        (yy > m) & (yy < shape[0] - m) & (xx > m) & (xx < shape[1] - m)
        & (yy > crop.y0 + m) & (yy < crop.y1 - m) & (xx > crop.x0 + m) & (xx < crop.x1 - m)
    )
    if inner.any():
        assert err[inner].max() < 1e-3

    # 3) a disk mask: nearest-neighbour round trip differs only along the disk's boundary
    cy, cx = box.center
    radius = max(min(box.height, box.width) / 2, 0.5)
    gy, gx = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    dist = np.hypot(gy - cy, gx - cx)
    mask = dist < radius
    mpatch, mgeom = crop_to_model(mask, crop, size, order=0, mode="nearest")
    assert mpatch.dtype == bool
    mregion, mpasted = paste_back(mpatch, mgeom, order=0)
    assert mregion == region
    wrong = mpasted != mask[region]
    band = (max(sy, sx) / 2 + 1.0) * math.sqrt(2) + 1e-6
    assert np.all(np.abs(dist[region][wrong] - radius) <= band)


# ------------------------------------------------------------------------------------------
# Vaihingen: whole image
# ------------------------------------------------------------------------------------------


class TestVaihingen:
    def test_crop_whole_image_and_back(self) -> None:
        img = ramp((60, 90))
        patch, geom = crop_whole_image(img, 32)
        assert patch.shape == (32, 32)
        assert geom.crop_box == Box(0, 0, 60, 90) and geom.footprint == (slice(0, 60), slice(0, 90))
        region, full = paste_back(patch, geom)
        assert full.shape == (60, 90)
        assert np.abs(full - img)[10:-10, 10:-10].max() < 1e-3


# ------------------------------------------------------------------------------------------
# MoNuSeg: windows and stitching
# ------------------------------------------------------------------------------------------


class TestWindows:
    def test_paper_quadrants(self) -> None:
        grid = WindowGrid.create((1000, 1000, 3), window=256, stride=256, work_size=512)
        assert grid.work_shape == (512, 512) and grid.n_windows == 4
        assert grid.origins == ((0, 0), (0, 256), (256, 0), (256, 256))

    def test_origins_overlap_and_snap(self) -> None:
        grid = WindowGrid.create((600, 512), window=256, stride=200, work_size=None)
        ys = sorted({o[0] for o in grid.origins})
        xs = sorted({o[1] for o in grid.origins})
        assert ys == [0, 200, 344] and xs == [0, 200, 256]
        assert WindowGrid.create((100, 100), 256, work_size=None).origins == ((0, 0),)
        assert WindowGrid.create((100, 100), 256).work_shape == (512, 512)

    def test_cut_and_stitch_identity(self) -> None:
        rng = np.random.default_rng(6)
        img = rng.random((50, 70)).astype(np.float32)
        grid = WindowGrid.create(img.shape, window=32, stride=16, work_size=None)
        wins = grid.cut(img)
        assert wins.shape == (grid.n_windows, 32, 32)
        for k, (oy, ox) in enumerate(grid.origins):
            np.testing.assert_allclose(wins[k], img[oy : oy + 32, ox : ox + 32], atol=1e-6)
        np.testing.assert_allclose(stitch(wins, grid), img, atol=1e-6)

    def test_stitch_averages_overlaps_with_weights(self) -> None:
        grid = WindowGrid.create((8, 12), window=8, stride=4, work_size=None)
        assert grid.origins == ((0, 0), (0, 4))
        maps = np.stack([np.full((8, 8), 1.0), np.full((8, 8), 3.0)])
        out = stitch(maps, grid)
        np.testing.assert_allclose(out[:, :4], 1.0)
        np.testing.assert_allclose(out[:, 4:8], 2.0)
        np.testing.assert_allclose(out[:, 8:], 3.0)
        weights = np.ones((8, 8))
        weights[:, 4:] = 3.0  # trust the right half of each window 3x more
        out_w = grid.stitch(maps, weights=weights)
        # overlap columns 4..7: window 0 right half (w 3, value 1), window 1 left half (w 1, value 3)
        np.testing.assert_allclose(out_w[:, 4:8], (3 * 1 + 1 * 3) / 4)

    def test_resize_roundtrip_and_small_image_padding(self) -> None:
        img = ramp((100, 100))
        grid = WindowGrid.create(img.shape, window=32, stride=32, work_size=64)
        wins = grid.cut(img)
        assert wins.shape == (4, 32, 32)
        full = stitch(wins, grid)
        assert full.shape == (100, 100) and full.dtype == np.float32
        assert np.abs(full - img)[6:-6, 6:-6].max() < 1e-3
        small = WindowGrid.create((20, 30, 3), window=32, work_size=None)
        rgb = np.random.default_rng(0).random((20, 30, 3))
        wins = small.cut(rgb, mode="constant", cval=-1.0)
        assert wins.shape == (1, 32, 32, 3)
        np.testing.assert_allclose(wins[0, :20, :30], rgb, atol=1e-6)
        assert np.all(wins[0, 20:] == -1.0) and np.all(wins[0, :, 30:] == -1.0)
        np.testing.assert_allclose(stitch(wins, small), rgb, atol=1e-6)

    def test_errors(self) -> None:
        with pytest.raises(CropError, match="stride"):
            WindowGrid.create((64, 64), window=32, stride=40)
        with pytest.raises(CropError, match="stride"):
            WindowGrid.create((64, 64), window=32, stride=0)
        with pytest.raises(CropError, match="window"):
            WindowGrid.create((64, 64), window=0)
        grid = WindowGrid.create((64, 64), window=32, work_size=None)
        with pytest.raises(CropError, match="window maps"):
            stitch(np.zeros((3, 32, 32)), grid)
        with pytest.raises(CropError, match="weights"):
            stitch(np.zeros((4, 32, 32)), grid, weights=np.zeros((32, 32)))
        with pytest.raises(CropError, match="does not match"):
            grid.cut(np.zeros((60, 64)))
