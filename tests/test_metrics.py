"""Tests for segdiff_core.metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segdiff_core.metrics import (
    MetricError,
    SegmentationMetrics,
    area_ratio,
    boundary_f,
    boundary_precision_recall,
    boundf,
    calibration_score,
    dice,
    error_rate_by_uncertainty,
    expected_calibration_error,
    f1,
    image_miou,
    iou,
    miou,
    reliability_curve,
    uncertainty_auroc,
    wcov,
)


def _rows01() -> np.ndarray:
    m = np.zeros((4, 4), bool)
    m[:2, :] = True
    return m


def _cols01() -> np.ndarray:
    m = np.zeros((4, 4), bool)
    m[:, :2] = True
    return m


# ------------------------------------------------------------------ IoU / Dice / mIoU


def test_iou_and_dice_hand_computed():
    # rows 0-1 vs cols 0-1 of a 4x4: intersection 4, union 12, sizes 8 + 8
    assert iou(_rows01(), _cols01()) == pytest.approx(4 / 12)
    assert dice(_rows01(), _cols01()) == pytest.approx(2 * 4 / 16)
    assert f1(_rows01(), _cols01()) == dice(_rows01(), _cols01())


def test_iou_dice_accept_01_integer_and_float_masks():
    assert iou(_rows01().astype(np.uint8), _cols01().astype(np.float32)) == pytest.approx(1 / 3)


def test_iou_dice_edge_cases():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0
    assert iou(empty, _rows01()) == 0.0 and dice(_rows01(), empty) == 0.0
    assert iou(_rows01(), _rows01()) == 1.0 and dice(_rows01(), _rows01()) == 1.0
    assert iou(~_rows01(), _rows01()) == 0.0  # all wrong
    assert iou(full, _rows01()) == pytest.approx(0.5)


def test_overlap_metrics_reject_bad_input():
    with pytest.raises(MetricError, match="shape"):
        iou(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(MetricError, match="binary"):
        dice(np.full((4, 4), 0.7), _rows01())
    with pytest.raises(MetricError, match="empty"):
        iou(np.zeros((0, 4), bool), np.zeros((0, 4), bool))


def test_miou_is_mean_of_class_means():
    per_class = {"car": [1.0, 0.5], "bus": [0.2]}
    assert miou(per_class) == pytest.approx((0.75 + 0.2) / 2)  # not the object mean 1.7 / 3
    assert image_miou([0.5, 1.0]) == pytest.approx(0.75)
    with pytest.raises(MetricError):
        miou({})
    with pytest.raises(MetricError, match="bus"):
        miou({"car": [1.0], "bus": []})
    with pytest.raises(MetricError, match="NaN"):
        image_miou([0.5, float("nan")])


# ------------------------------------------------------------------ WCov


def test_wcov_binary_hand_computed():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True  # 4 fg, 12 bg
    pred = np.zeros((4, 4), bool)
    pred[0, :] = True  # 4 fg, 12 bg
    # fg: IoU(Gf,Pf) = 2/6, IoU(Gf,Pb) = 2/14 -> 1/3; bg: IoU(Gb,Pb) = 10/14, IoU(Gb,Pf) = 2/14
    expected = 4 / 16 * (1 / 3) + 12 / 16 * (10 / 14)
    assert wcov(pred, gt) == pytest.approx(expected)
    assert wcov(pred, gt) == pytest.approx(13 / 21)


def test_wcov_label_images_ignore_label_ids():
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    pred = np.array([[5, 5, 5, 7], [5, 5, 5, 7]])
    # region 1: best 4/6 (with 5); region 2: IoU with 5 = 2/8, with 7 = 2/4 -> 1/2
    assert wcov(pred, gt) == pytest.approx(0.5 * 2 / 3 + 0.5 * 1 / 2)
    assert wcov(gt * 10, gt) == pytest.approx(1.0)


def test_wcov_edge_cases_and_area_ratio():
    gt = np.zeros((4, 4), bool)
    gt[:1, :] = True  # 4 fg
    empty = np.zeros((4, 4), bool)
    # empty prediction = one region covering the image: 4/16 * 4/16 + 12/16 * 12/16
    assert wcov(empty, gt) == pytest.approx(10 / 16)
    assert wcov(gt, gt) == 1.0
    assert wcov(empty, empty) == 1.0
    # covering compares partitions, not class names: the inverted mask has the same two regions
    assert wcov(~gt, gt) == 1.0
    assert area_ratio(gt, _rows01()) == pytest.approx(0.5)
    assert area_ratio(empty, empty) == 1.0
    with pytest.raises(MetricError, match="shape"):
        wcov(gt, gt[:3])
    with pytest.raises(MetricError, match="whole-number"):
        wcov(np.full((4, 4), 0.5), gt)


# ------------------------------------------------------------------ boundary F


def test_boundary_f_shifted_square():
    gt = np.zeros((6, 6), bool)
    gt[1:4, 1:4] = True
    pred = np.zeros((6, 6), bool)
    pred[1:4, 2:5] = True
    # 4 of the 8 predicted boundary pixels lie on the gt boundary, the other 4 at distance 1
    f, p, r = boundary_precision_recall(pred, gt, 0)
    assert (f, p, r) == pytest.approx((0.5, 0.5, 0.5))
    assert boundary_f(pred, gt, 1) == pytest.approx(1.0)
    assert boundf(pred, gt, tolerances=(0, 1)) == pytest.approx(0.75)
    assert boundf(pred, gt) == pytest.approx(1.0)


def test_boundary_f_uses_euclidean_distance():
    gt = np.zeros((8, 8), bool)
    gt[1:4, 1:4] = True  # ring of 8 boundary pixels around (2, 2)
    pred = np.zeros((8, 8), bool)
    pred[2, 2] = True  # single pixel: its own boundary, at distance 1 from the ring
    # recall at 1 px: the 4 edge-middles (distance 1) but not the corners (sqrt 2)
    f, p, r = boundary_precision_recall(pred, gt, 1)
    assert (p, r) == pytest.approx((1.0, 0.5))
    assert f == pytest.approx(2 / 3)
    assert boundary_f(pred, gt, 1.5) == pytest.approx(1.0)
    assert boundary_f(pred, gt, 0) == 0.0
    assert boundf(pred, gt) == pytest.approx((2 / 3 + 4) / 5)


def test_boundary_f_edge_cases():
    empty = np.zeros((6, 6), bool)
    square = np.zeros((6, 6), bool)
    square[1:4, 1:4] = True
    assert boundary_f(empty, empty, 2) == 1.0
    assert boundary_precision_recall(empty, square, 2) == (0.0, 1.0, 0.0)
    assert boundary_precision_recall(square, empty, 2) == (0.0, 0.0, 1.0)
    assert boundf(square, square) == 1.0
    # the image frame is not a boundary: a full mask has no boundary pixels
    full = np.ones((6, 6), bool)
    assert boundary_f(full, full, 1) == 1.0
    assert boundary_f(full, square, 1) == 0.0


def test_boundary_f_rejects_bad_input():
    m = np.zeros((4, 4), bool)
    with pytest.raises(MetricError, match="tolerance"):
        boundary_f(m, m, -1)
    with pytest.raises(MetricError, match="2D"):
        boundary_f(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool), 1)
    with pytest.raises(MetricError, match="shape"):
        boundf(m, np.zeros((5, 4), bool))
    with pytest.raises(MetricError, match="tolerances"):
        boundf(m, m, tolerances=())


# ------------------------------------------------------------------ calibration


PROB = np.array([0.05, 0.05, 0.05, 0.05, 0.85, 0.85, 0.95, 0.95])
GT = np.array([0, 0, 0, 1, 1, 0, 1, 1], bool)


def test_calibration_score_is_unweighted_mean_of_squared_gaps():
    # bin 0: mean .05, frac .25 -> .04; bin 8: .85 vs .5 -> .1225; bin 9: .95 vs 1 -> .0025
    assert calibration_score(PROB, GT) == pytest.approx((0.04 + 0.1225 + 0.0025) / 3)
    # count-weighted mean would be 0.05125: make sure that is not what we compute
    assert calibration_score(PROB, GT) != pytest.approx(0.05125)


def test_expected_calibration_error_is_count_weighted_absolute_gap():
    expected = 4 / 8 * 0.2 + 2 / 8 * 0.35 + 2 / 8 * 0.05
    assert expected_calibration_error(PROB, GT) == pytest.approx(expected)


def test_reliability_curve_values():
    curve = reliability_curve(PROB.reshape(2, 4), GT.reshape(2, 4), n_bins=10)
    np.testing.assert_allclose(curve.bin_centres, np.arange(10) / 10 + 0.05)
    assert curve.counts.tolist() == [4, 0, 0, 0, 0, 0, 0, 0, 2, 2]
    np.testing.assert_allclose(curve.mean_prob[[0, 8, 9]], [0.05, 0.85, 0.95])
    np.testing.assert_allclose(curve.frac_positive[[0, 8, 9]], [0.25, 0.5, 1.0])
    assert np.isnan(curve.mean_prob[1]) and np.isnan(curve.frac_positive[5])
    centres, mean_prob, frac, counts = curve  # tuple unpacking works
    assert counts.sum() == 8


def test_calibration_bin_edges_and_perfect_calibration():
    prob = np.array([0.0, 1.0, 1.0, 0.5])
    curve = reliability_curve(prob, np.array([0, 1, 1, 1]), n_bins=4)
    assert curve.counts.tolist() == [1, 0, 1, 2]  # 0 -> first bin, 0.5 -> [0.5, 0.75), 1 -> last
    assert calibration_score(np.full(4, 0.25), np.array([1, 0, 0, 0])) == 0.0
    assert calibration_score(prob[:3], np.array([0, 1, 1])) == 0.0
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([0, 1])) == 1.0


def test_calibration_rejects_bad_input():
    with pytest.raises(MetricError, match=r"\[0, 1\]"):
        calibration_score(np.array([0.2, 1.2]), np.array([0, 1]))
    with pytest.raises(MetricError, match="NaN"):
        calibration_score(np.array([0.2, np.nan]), np.array([0, 1]))
    with pytest.raises(MetricError, match="shape"):
        expected_calibration_error(np.array([0.2, 0.3]), np.array([0, 1, 1]))
    with pytest.raises(MetricError, match="n_bins"):
        reliability_curve(np.array([0.2]), np.array([1]), n_bins=0)


# ------------------------------------------------------------------ uncertainty


def _brute_force_auroc(u: np.ndarray, wrong: np.ndarray) -> float:
    pos, neg = u[wrong], u[~wrong]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_uncertainty_auroc_hand_computed_with_tie():
    u = np.array([0.9, 0.1, 0.5, 0.5, 0.3, 0.7])
    wrong = np.array([1, 0, 1, 0, 0, 1], bool)
    gt = np.zeros(6, bool)
    # pairs won: 0.9 -> 3, 0.5 -> 2.5 (tie with a right 0.5), 0.7 -> 3
    assert uncertainty_auroc(u, wrong, gt) == pytest.approx(8.5 / 9)
    assert uncertainty_auroc(u, ~wrong, ~gt) == pytest.approx(8.5 / 9)  # only pred != gt matters


def test_uncertainty_auroc_extremes_and_undefined():
    gt = np.array([[0, 0], [1, 1]], bool)
    pred = np.array([[1, 0], [1, 0]], bool)  # wrong at (0, 0) and (1, 1)
    assert uncertainty_auroc(np.array([[1.0, 0.0], [0.0, 1.0]]), pred, gt) == 1.0
    assert uncertainty_auroc(np.array([[0.0, 1.0], [1.0, 0.0]]), pred, gt) == 0.0
    assert uncertainty_auroc(np.ones((2, 2)), pred, gt) == 0.5
    assert math.isnan(uncertainty_auroc(np.ones((2, 2)), gt, gt))  # all right
    assert math.isnan(uncertainty_auroc(np.ones((2, 2)), ~gt, gt))  # all wrong
    with pytest.raises(MetricError, match="shape"):
        uncertainty_auroc(np.ones((2, 3)), pred, gt)
    with pytest.raises(MetricError, match="NaN"):
        uncertainty_auroc(np.array([[np.nan, 0.0], [0.0, 1.0]]), pred, gt)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(0, 4), min_size=2, max_size=30),
    flags=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_uncertainty_auroc_equals_pairwise_count(values, flags):
    u = np.array(values, float) / 4  # few distinct values: many ties
    wrong = np.array(flags[: len(values)])
    result = uncertainty_auroc(u, wrong, np.zeros_like(wrong))
    if wrong.all() or not wrong.any():
        assert math.isnan(result)
    else:
        assert result == pytest.approx(_brute_force_auroc(u, wrong))


def test_error_rate_by_uncertainty():
    u = np.array([0.0, 0.1, 0.6, 0.9, 1.0])
    wrong = np.array([0, 1, 1, 1, 0], bool)
    curve = error_rate_by_uncertainty(u, wrong, np.zeros(5, bool), n_bins=2, value_range=(0, 1))
    np.testing.assert_allclose(curve.bin_edges, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(curve.bin_centres, [0.25, 0.75])
    assert curve.counts.tolist() == [2, 3]
    np.testing.assert_allclose(curve.error_rate, [0.5, 2 / 3])
    sparse = error_rate_by_uncertainty(u, wrong, np.zeros(5, bool), n_bins=4, value_range=(0, 1))
    assert sparse.counts.tolist() == [2, 0, 1, 2] and np.isnan(sparse.error_rate[1])


# ------------------------------------------------------------------ accumulator


def test_segmentation_metrics_accumulates_and_summarises():
    gt1 = _rows01()
    prob1 = np.where(_cols01(), 0.9, 0.1)  # thresholded: cols 0-1 -> IoU 1/3
    gt2 = _rows01()
    prob2 = np.where(_rows01(), 0.8, 0.0)
    prob2[3, 3] = 0.5  # exactly at the threshold: background (strictly greater is foreground)
    unc2 = np.where(_rows01(), 0.2, 0.1)

    m = SegmentationMetrics()
    rec1 = m.add(prob1, gt1, class_name="car")
    rec2 = m.add(prob2, gt2, uncertainty=unc2, class_name="bus")
    m.add(prob2, gt2, class_name="bus")

    assert rec1["iou"] == pytest.approx(1 / 3) and rec1["f1"] == pytest.approx(0.5)
    assert rec2["iou"] == 1.0 and rec2["wcov"] == 1.0 and rec2["boundf"] == 1.0
    assert math.isnan(rec1["uncertainty_auroc"])
    assert math.isnan(rec2["uncertainty_auroc"])  # perfect prediction: no wrong pixels
    assert len(m) == 3 and [r["index"] for r in m.per_sample] == [0, 1, 2]

    s = m.summary()
    ious = np.array([1 / 3, 1.0, 1.0])
    assert s["n"] == 3
    assert s["iou"] == pytest.approx(ious.mean())
    assert s["iou_std"] == pytest.approx(ious.std())
    assert s["miou_kind"] == "classes"
    assert s["miou"] == pytest.approx((1 / 3 + 1.0) / 2)
    assert s["per_class_iou"] == pytest.approx({"bus": 1.0, "car": 1 / 3})
    assert s["per_class_n"] == {"bus": 2, "car": 1}
    assert s["wcov"] == pytest.approx((wcov(_cols01(), gt1) + 2) / 3)

    pooled_prob = np.concatenate([prob1.ravel(), prob2.ravel(), prob2.ravel()])
    pooled_gt = np.concatenate([gt1.ravel(), gt2.ravel(), gt2.ravel()])
    assert s["calibration"] == pytest.approx(calibration_score(pooled_prob, pooled_gt))
    assert s["ece"] == pytest.approx(expected_calibration_error(pooled_prob, pooled_gt))
    assert s["calibration_mean"] == pytest.approx(
        np.mean([calibration_score(prob1, gt1)] + 2 * [calibration_score(prob2, gt2)])
    )
    assert s["reliability"].counts.sum() == 48
    assert s["n_uncertainty_auroc"] == 0 and math.isnan(s["uncertainty_auroc"])


def test_segmentation_metrics_auroc_and_image_miou():
    gt = _rows01()
    prob = np.where(_cols01(), 0.7, 0.2)  # wrong where rows01 xor cols01
    unc = (gt ^ _cols01()).astype(float)  # perfectly flags the errors
    m = SegmentationMetrics(boundary_tolerances=(1,))
    rec = m.add(prob, gt, uncertainty=unc)
    assert rec["uncertainty_auroc"] == 1.0
    s = m.summary()
    assert s["miou_kind"] == "images" and s["miou"] == pytest.approx(1 / 3)
    assert s["per_class_iou"] == {}
    assert s["n_uncertainty_auroc"] == 1 and s["uncertainty_auroc"] == 1.0 and s["iou_std"] == 0.0


def test_segmentation_metrics_errors():
    m = SegmentationMetrics()
    with pytest.raises(MetricError, match="no samples"):
        m.summary()
    with pytest.raises(MetricError, match="shape"):
        m.add(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(MetricError, match=r"\[0, 1\]"):
        m.add(np.full((4, 4), 2.0), np.zeros((4, 4), bool))
    with pytest.raises(MetricError, match="threshold"):
        m.add(np.zeros((4, 4)), np.zeros((4, 4), bool), threshold=1.5)
    assert len(m) == 0  # failed adds leave nothing behind
    with pytest.raises(MetricError, match="n_bins"):
        SegmentationMetrics(n_bins=0)
