"""The annotator's *threshold* "model default" (0): runs and re-threshold use the threshold saved
in the model file, resolved in one place (``napari_segdiff._settings.resolve_threshold``).

A real (tiny, random-weight) model file whose config threshold is 0.7, a real napari viewer, the
threshold spin boxes set with the keyboard and boxes drawn with the mouse.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from qtpy.QtCore import Qt

from segdiff_core.checkpoint import save_model
from segdiff_core.config import InferenceConfig
from segdiff_core.data.synthetic import generate_tile
from segdiff_core.rethreshold import threshold_mask

from napari_segdiff._layers import role_of
from napari_segdiff._review_model import probability_store
from napari_segdiff._settings import MODEL_THRESHOLD, AnnotatorSettings, resolve_threshold
from napari_segdiff._store import FORMAT, SettingsStore
from napari_segdiff._widget import AnnotatorWidget
from tests.conftest_napari import configure, full_map, messages, notes, wait_idle  # noqa: F401 (fixtures)
from tests.gui_helpers import draw_box_px, key
from tests.helpers import random_model

MODEL_THR = 0.7


@pytest.fixture(scope="module")
def model_07(tmp_path_factory: pytest.TempPathFactory):
    """A 'test' preset model file whose saved default threshold is 0.7 (not 0.5)."""
    model, cfg = random_model()
    cfg = cfg.replace(inference=cfg.inference.replace(threshold=MODEL_THR))
    return save_model(tmp_path_factory.mktemp("thr") / "thr07.pt", model, cfg)


# ------------------------------------------------------------------------------------------
# settings (no Qt)
# ------------------------------------------------------------------------------------------


def test_model_default_is_the_default_and_resolves_to_the_models_threshold():
    s = AnnotatorSettings()
    assert s.threshold == MODEL_THRESHOLD == 0.0
    model = InferenceConfig(threshold=0.45)
    assert resolve_threshold(s.threshold, model) == 0.45
    assert s.inference_for(model, 100).threshold == 0.45
    assert s.replace(threshold=0.6).inference_for(model, 100).threshold == 0.6  # an explicit value wins


def test_settings_round_trip_keeps_model_default_and_an_old_explicit_half(tmp_path):
    store = SettingsStore(tmp_path)
    assert store.save(AnnotatorSettings()) is None
    assert json.loads(store.path.read_text())["settings"]["threshold"] == MODEL_THRESHOLD
    back, problems = store.load()
    assert back == AnnotatorSettings() and problems == []
    # a file written by an older version, whose default threshold was an explicit 0.5
    old = {"format": FORMAT, "version": 1, "settings": {"threshold": 0.5, "steps": 0, "generations": 0}}
    store.path.write_text(json.dumps(old))
    back, problems = store.load()
    assert problems == [] and back.threshold == 0.5
    assert back.inference_for(InferenceConfig(threshold=0.45), 100).threshold == 0.5


# ------------------------------------------------------------------------------------------
# the widget and the review panel, driven with keyboard and mouse
# ------------------------------------------------------------------------------------------


def _type_into(qtbot, control, text: str) -> None:
    """Click into a spin box, select all, type ``text``, press Enter (as a person would)."""
    spin = control.native
    spin.setFocus()
    qtbot.keyClick(spin, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(spin, text)
    qtbot.keyClick(spin, Qt.Key.Key_Return)


def _to_minimum(qtbot, control) -> None:
    """Page Down until the spin box sits at its minimum (its special value text)."""
    spin = control.native
    spin.setFocus()
    while spin.value() > spin.minimum():
        qtbot.keyClick(spin, Qt.Key.Key_PageDown)


def _segment_box(qtbot, viewer, widget, image, corners) -> np.ndarray:
    """Draw a box with the mouse, Shift-S, wait; returns the probability map on the image grid."""
    draw_box_px(qtbot, viewer, widget.controller.prompts_layer, image, *corners)
    key(qtbot, viewer, "S", Qt.KeyboardModifier.ShiftModifier)
    wait_idle(qtbot, widget)
    prob = [lay for lay in viewer.layers if (role_of(lay) or {}).get("role") == "probability"][-1]
    return full_map(prob, image.data.shape)


def test_model_default_threshold_in_runs_and_rethreshold(qtbot, make_napari_viewer, model_07, notes):
    viewer = make_napari_viewer(show=True)
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegDiff annotator")
    configure(widget, model_07)
    widget.largest_only.value = False
    assert widget.threshold.native.specialValueText().startswith("model default")
    assert widget.controller.settings.threshold == MODEL_THRESHOLD  # the default
    image = viewer.add_image(generate_tile("fluorescence", 96, 3).image, name="cells")
    viewer.reset_view()
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)

    # an explicit threshold typed by hand: object 1 is prob > 0.3
    _type_into(qtbot, widget.threshold, "0.3")
    assert widget.controller.settings.threshold == pytest.approx(0.3)
    prob = _segment_box(qtbot, viewer, widget, image, (8, 8, 30, 30))
    labels = widget.controller.labels_layer
    near = np.zeros(prob.shape, bool)
    near[:48, :48] = True
    assert np.array_equal(labels.data == 1, (prob > 0.3) & near)
    assert (prob[near] > 0.3).sum() > (prob[near] > MODEL_THR).sum() > 0  # the two thresholds differ here

    # back to "model default" (Page Down to the spin box's minimum): object 2 is prob > 0.7
    _to_minimum(qtbot, widget.threshold)
    assert widget.controller.settings.threshold == MODEL_THRESHOLD
    assert widget.threshold.native.text() == f"model default ({MODEL_THR:g})"  # shown once the model is loaded
    before = labels.data.copy()
    prob = _segment_box(qtbot, viewer, widget, image, (56, 56, 84, 84))
    far = np.zeros(prob.shape, bool)
    far[48:, 48:] = True
    committed = labels.data == 2
    assert committed.any() and np.array_equal(committed, (prob > MODEL_THR) & far & (before == 0))
    assert ((prob > 0.5) & far & ~committed).any()  # 0.5 would have given a different mask
    assert not messages(notes, "warning")

    # the Review panel's re-threshold: typed 0.3, then "model default" = the model's 0.7
    _, review = viewer.window.add_plugin_dock_widget("napari-segdiff", "SegDiff review")
    review.labels_combo.value = labels
    review.refresh()
    assert review.threshold.value == MODEL_THRESHOLD  # the same declaration as the annotator's
    settings = labels.features.set_index("index")["settings"]  # provenance: the threshold actually used
    assert [json.loads(settings[i])["threshold"] for i in (1, 2)] == [pytest.approx(0.3), MODEL_THR]
    store = probability_store(labels)
    assert len(store) == 2
    for value, expected_thr in (("0.3", 0.3), (None, MODEL_THR)):
        if value is None:
            _to_minimum(qtbot, review.threshold)
            assert review.threshold.value == MODEL_THRESHOLD
        else:
            _type_into(qtbot, review.threshold, value)
        review.rethreshold_all_btn.click()
        for obj in store:
            fresh = threshold_mask(obj.probability.astype(np.float32), expected_thr, obj.largest_only)
            region = labels.data[obj.region]
            others = (region != 0) & (region != obj.label)
            assert np.array_equal(region == obj.label, fresh & ~others), (value, obj.label)
    assert not messages(notes, "warning")


def test_switching_models_never_shows_the_previous_models_defaults(qtbot, make_napari_viewer, model_07, notes):
    """Run with one model, then choose another model file: the threshold field and the model
    line must not go on announcing the first model's threshold (the next run uses the new
    model's); after a run they show the new model's values."""
    model, cfg = random_model()
    cfg = cfg.replace(inference=cfg.inference.replace(threshold=0.3))
    model_03 = save_model(model_07.parent / "thr03.pt", model, cfg)
    viewer = make_napari_viewer(show=True)
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegDiff annotator")
    configure(widget, model_03)
    image = viewer.add_image(generate_tile("fluorescence", 96, 3).image, name="cells")
    viewer.reset_view()
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
    _segment_box(qtbot, viewer, widget, image, (8, 8, 30, 30))
    assert widget.threshold.native.text() == "model default (0.3)"
    assert widget.model_label.text().startswith("thr03")

    widget.model_file.value = model_07  # the file picker
    assert "0.3" not in widget.threshold.native.text()
    assert "0.3" not in widget.threshold.tooltip and "thr03" not in widget.model_label.text()
    _segment_box(qtbot, viewer, widget, image, (56, 56, 84, 84))
    assert widget.threshold.native.text() == f"model default ({MODEL_THR:g})"
    assert widget.model_label.text().startswith("thr07")

    widget.previous_button.click()  # back to the first model
    assert widget.controller.model_path() == model_03
    assert str(MODEL_THR) not in widget.threshold.native.text() and "thr07" not in widget.model_label.text()
