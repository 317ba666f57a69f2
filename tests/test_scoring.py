"""Per-object quality scores (segdiff_core.scoring) and re-thresholding from stored
probabilities (segdiff_core.rethreshold), with real ensembles from a real (tiny) model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from segdiff_core.bundled import bundled_model_path
from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import CropProtocol, prompt_crop
from segdiff_core.ensemble import summarize
from segdiff_core.rethreshold import (
    ProbabilityStore,
    RethresholdError,
    StoredObject,
    plan_rethreshold,
    threshold_mask,
)
from segdiff_core.scoring import (
    FEATURES,
    ScoreCalibration,
    ScoreError,
    calibration_for,
    calibration_path,
    file_sha256,
    object_features,
    prompt_box_in_model,
    score_object,
)
from segdiff_core.segmenter import Segmenter
from tests.helpers import random_model


def _disc(shape: tuple[int, int], centre: tuple[float, float], r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


# --------------------------------------------------------------------------------------------
# features and score
# --------------------------------------------------------------------------------------------


def test_identical_generations_score_full_agreement_and_zero_spread() -> None:
    g = np.repeat(_disc((32, 32), (16, 16), 8)[None].astype(np.float32), 5, axis=0)
    f = object_features(g, 0.5, box=(8, 8, 25, 25))
    assert f["agreement"] == 1.0 and f["mean_std"] == 0.0 and f["boundary_std"] == 0.0
    assert f["box_fit"] == pytest.approx(1.0)
    s = score_object(g)
    assert s.kind == "agreement" and s.score == 1.0 and s.uncertainty == 0.0


def test_disagreeing_generations_score_lower_than_agreeing_ones() -> None:
    rng = np.random.default_rng(0)
    base = _disc((40, 40), (20, 20), 10)
    calm = np.stack([_disc((40, 40), (20 + d, 20), 10) for d in (0, 0.5, -0.5, 0)]).astype(np.float32)
    wild = np.stack([_disc((40, 40), (20 + rng.uniform(-6, 6), 20 + rng.uniform(-6, 6)), rng.uniform(5, 14))
                     for _ in range(4)]).astype(np.float32)
    assert base.any()
    f_calm, f_wild = object_features(calm), object_features(wild)
    assert f_wild["agreement"] < f_calm["agreement"]
    assert f_wild["mean_std"] > f_calm["mean_std"]
    assert f_wild["boundary_std"] > f_calm["boundary_std"]


def test_empty_consensus_is_maximally_uncertain_and_box_fit_needs_a_box() -> None:
    g = np.zeros((3, 16, 16), np.float32)
    g[0, 4:8, 4:8] = 1.0  # one generation of three: the mean stays below 0.5
    f = object_features(g)
    assert f["agreement"] == 0.0 and f["mean_std"] == 0.5 and math.isnan(f["box_fit"])
    assert object_features(g, box=(0, 0, 16, 16))["box_fit"] == 0.0


def test_a_mask_that_does_not_fill_its_box_has_a_poor_box_fit() -> None:
    g = _disc((48, 48), (24, 24), 5)[None].astype(np.float32)
    assert object_features(g, box=(4, 4, 44, 44))["box_fit"] < 0.1
    assert object_features(g, box=(19, 19, 30, 30))["box_fit"] == pytest.approx(1.0)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ScoreError, match="keep_generations"):
        object_features(summarize(torch.zeros(2, 8, 8)))
    with pytest.raises(ScoreError, match=r"\(G, H, W\)"):
        object_features(np.zeros((8, 8)))
    with pytest.raises(ScoreError, match="NaN"):
        object_features(np.full((2, 4, 4), np.nan, np.float32))


def test_prompt_box_maps_into_the_model_grid_of_an_expanded_crop() -> None:
    image = np.zeros((100, 100), np.float32)
    box = Box(20, 30, 60, 50)
    _, geom = prompt_crop(image, box, 48, CropProtocol.expansion(0.5))
    y0, x0, y1, x1 = prompt_box_in_model(geom, box)
    # the box is the middle 1/1.5 of the crop along each axis
    assert (y1 - y0) == pytest.approx(48 / 1.5) and (x1 - x0) == pytest.approx(48 / 1.5)
    assert y0 == pytest.approx(8.0) and x0 == pytest.approx(8.0)


def test_score_of_a_real_ensemble_from_a_real_model() -> None:
    model, config = random_model()
    seg = Segmenter(model, config, device="cpu")
    patch = np.random.default_rng(1).random((config.model.image_size,) * 2).astype(np.float32)
    inf = seg.inference.replace(generations=3, steps=2)
    res = seg.segment(patch, inf, seed=0, keep_generations=True)
    s = score_object(res)
    assert set(s.features) == set(FEATURES)
    assert 0.0 <= s.score <= 1.0
    assert s.score == pytest.approx(object_features(res)["agreement"])


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


def _synthetic_calibration_data(n: int = 200) -> tuple[list[dict[str, float]], list[float]]:
    rng = np.random.default_rng(3)
    feats, ious = [], []
    for _ in range(n):
        agreement = rng.uniform(0.3, 1.0)
        feats.append({"agreement": agreement, "mean_std": rng.uniform(0, 0.3), "boundary_std": rng.uniform(0, 0.3),
                      "box_fit": rng.uniform(0.5, 1.0)})
        ious.append(float(np.clip(agreement - 0.1 + rng.normal(0, 0.03), 0, 1)))
    return feats, ious


def test_calibration_fit_predicts_the_iou_it_was_fitted_on_and_round_trips(tmp_path) -> None:
    feats, ious = _synthetic_calibration_data()
    cal = ScoreCalibration.fit(feats, ious, ("agreement", "mean_std"), model_sha256="", fitted_on="unit test")
    pred = np.array([cal.predict(f) for f in feats])
    assert np.abs(pred - np.array(ious)).mean() < 0.05
    assert cal.weights[0] > 0  # more agreement -> higher predicted IoU
    path = cal.save(tmp_path / "m.score.json")
    again = ScoreCalibration.load(path)
    assert again == cal
    assert again.predict(feats[0]) == pytest.approx(cal.predict(feats[0]))


def test_calibration_is_used_only_for_the_model_file_it_was_fitted_for(tmp_path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights v1")
    feats, ious = _synthetic_calibration_data(50)
    assert calibration_for(model)[0] is None
    ScoreCalibration.fit(feats, ious, ("agreement",), model_sha256=file_sha256(model)).save(calibration_path(model))
    cal, msg = calibration_for(model)
    assert cal is not None and "predicted IoU" in msg
    assert score_object(np.ones((2, 8, 8), np.float32), calibration=cal).kind == "predicted_iou"
    model.write_bytes(b"weights v2 (retrained)")
    cal, msg = calibration_for(model)
    assert cal is None and "another model" in msg
    calibration_path(model).write_text("{not json")
    cal, msg = calibration_for(model)
    assert cal is None and "cannot read" in msg
    calibration_path(model).write_text(json.dumps({"kind": "segdiff-score-calibration", "features": ["x"]}))
    assert calibration_for(model)[0] is None


def test_the_bundled_model_ships_a_valid_calibration() -> None:
    """(A retrained bundled model needs ``python -m benchmarks.report --parts review`` to refit
    it; until then calibration_for falls back to the agreement, tested above.)"""
    cal = ScoreCalibration.load(calibration_path(bundled_model_path()))
    assert set(cal.features) <= set(FEATURES) and "synthetic" in cal.fitted_on


# --------------------------------------------------------------------------------------------
# re-threshold
# --------------------------------------------------------------------------------------------


def _commit(labels: np.ndarray, label: int, region: tuple[slice, slice], prob: np.ndarray, t: float,
            plane: tuple[int, ...] = ()) -> StoredObject:
    target = labels[plane] if plane else labels
    cur = target[region]
    written = threshold_mask(prob, t) & (cur == 0)
    cur[written] = label
    return StoredObject.from_commit(label, plane, region, prob, written, t)


def _blob_probability(shape: tuple[int, int], centre: tuple[float, float], r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
    return np.clip(1.0 - d / (2 * r), 0, 1).astype(np.float32)


def test_rethreshold_equals_a_fresh_threshold_and_never_paints_over_neighbours() -> None:
    labels = np.zeros((60, 60), np.int32)
    store = ProbabilityStore()
    pa = _blob_probability((30, 30), (15, 15), 8)
    pb = _blob_probability((30, 30), (15, 15), 8)
    store.add(_commit(labels, 1, (slice(5, 35), slice(5, 35)), pa, 0.5))
    store.add(_commit(labels, 2, (slice(5, 35), slice(25, 55)), pb, 0.5))
    plan = plan_rethreshold(store, labels, 0.2)
    assert {c.status for c in plan.changes} == {"changed"}
    before = labels.copy()
    plan.apply(labels)
    plan.commit(store)
    grown_a = threshold_mask(store.get((), 1).probability.astype(np.float32), 0.2)
    region_a = labels[5:35, 5:35]
    # object 1 is the fresh threshold wherever object 2 did not already sit
    assert np.array_equal(region_a == 1, grown_a & (before[5:35, 5:35] != 2))
    assert np.array_equal(before == 2, (before == 2) & (labels == 2))  # 2 kept all its pixels
    # back to 0.5: the original labels again
    plan_back = plan_rethreshold(store, labels, 0.5)
    plan_back.apply(labels)
    plan_back.commit(store)
    assert np.array_equal(labels, before)


def test_hand_edited_objects_are_left_alone_with_a_message_and_undo_states_are_recognised() -> None:
    labels = np.zeros((2, 40, 40), np.int32)
    store = ProbabilityStore()
    p = _blob_probability((20, 20), (10, 10), 6)
    store.add(_commit(labels, 1, (slice(0, 20), slice(0, 20)), p, 0.5, plane=(0,)))
    store.add(_commit(labels, 2, (slice(10, 30), slice(10, 30)), p, 0.5, plane=(1,)))
    labels[1, 20, 20] = 0  # a hand edit of object 2 on slice 1
    snapshot = labels.copy()
    plan = plan_rethreshold(store, labels, 0.3)
    assert [c.status for c in plan.changes] == ["changed", "edited"]
    assert "2 (slice 1)" in plan.messages[0] and "edited by hand" in plan.messages[0]
    plan.apply(labels)
    plan.commit(store)
    assert np.array_equal(labels[1], snapshot[1])  # the edited object is untouched
    # an undo puts the 0.5 mask back: recognised as an earlier commit, not a hand edit
    labels[0] = snapshot[0]
    assert plan_rethreshold([store.get((0,), 1)], labels, 0.3).changes[0].status == "changed"


def test_probability_store_respects_its_memory_budget() -> None:
    labels = np.zeros((100, 100), np.int32)
    p = _blob_probability((40, 40), (20, 20), 10)
    one = _commit(labels.copy(), 1, (slice(0, 40), slice(0, 40)), p, 0.5)
    store = ProbabilityStore(max_bytes=int(one.nbytes * 2.5))
    for k in range(1, 5):
        store.add(_commit(labels, k, (slice(0, 40), slice(0, 40)), p, 0.5))
    assert len(store) == 2 and store.dropped == 2 and store.nbytes <= store.max_bytes
    assert store.get((), 1) is None and store.get((), 4) is not None


def test_rethreshold_bad_inputs() -> None:
    labels = np.zeros((20, 20), np.int32)
    p = _blob_probability((10, 10), (5, 5), 3)
    obj = _commit(labels, 1, (slice(0, 10), slice(0, 10)), p, 0.5)
    with pytest.raises(RethresholdError, match="between 0 and 1"):
        plan_rethreshold([obj], labels, 1.5)
    with pytest.raises(RethresholdError, match="plane"):
        plan_rethreshold([obj], np.zeros((2, 20, 20), np.int32), 0.4)
    with pytest.raises(RethresholdError, match="must match the region"):
        StoredObject.from_commit(1, (), (slice(0, 5), slice(0, 5)), p, p > 0.5, 0.5)
