"""The Fine-tune panel in a real viewer: a real fine-tune in a worker process on a tiny model,
driven through the panel's buttons, and every bad input of issue 12."""
from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest
from qtpy.QtCore import Qt

from segdiff_core.segmenter import Segmenter
from segdiff_core.training.finetune import FinetuneRequest, TrainingImage, list_finetuned, run_finetune

from tests.conftest_napari import configure, messages, notes  # noqa: F401 (fixtures)
from tests.finetune_helpers import FAST, annotated_tile, tiny_base_model
from tests.gui_helpers import draw_box_px

pytestmark = [pytest.mark.gui, pytest.mark.slow]

RUN_MS = 240_000


@pytest.fixture
def session(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    base = tiny_base_model(tmp_path)
    _, annotator = viewer.window.add_plugin_dock_widget("napari-segdiff", "SegDiff annotator")
    configure(annotator, base)
    annotator.threshold.value = 0.01  # the tiny model's mask is then the whole crop
    annotator.largest_only.value = False
    image, labels = annotated_tile(0)
    img = viewer.add_image(image, name="cells", rgb=True)
    lab = viewer.add_labels(labels, name="nuclei")
    _, panel = viewer.window.add_plugin_dock_widget("napari-segdiff", "SegDiff fine-tune")
    panel.image_combo.value = img
    panel.labels_combo.value = lab
    panel.steps.value = 6
    return viewer, annotator, panel, img, lab, base


def click(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _gone(pid: int) -> bool:
    if any(p.pid == pid for p in mp.active_children()):  # also reaps a finished child
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_fine_tune_in_the_viewer_makes_the_new_model_active(qtbot, session, notes):  # noqa: F811
    viewer, annotator, panel, img, lab, base = session
    before_labels = lab.data.copy()
    click(qtbot, panel.start_button)
    job = panel.job
    assert job is not None and job.pid != os.getpid()  # a separate process
    qtbot.waitUntil(lambda: panel._pbar is not None, timeout=RUN_MS)  # napari's activity dock
    qtbot.waitUntil(lambda: not panel.running, timeout=RUN_MS)
    assert not messages(notes, "error"), notes
    assert panel.plot.loss and panel.plot.iou  # the live plot got the curves
    models = list_finetuned()
    assert len(models) == 1 and models[0].info["base_model"] == str(base)
    new = models[0].path
    assert panel.models.value == new
    np.testing.assert_array_equal(lab.data, before_labels)  # labels untouched
    patch = img.data[10:50, 10:50]
    p_new = Segmenter.from_checkpoint(new, "cpu").segment(patch, seed=0).probability
    p_old = Segmenter.from_checkpoint(base, "cpu").segment(patch, seed=0).probability
    assert np.abs(p_new - p_old).max() > 1e-3
    assert annotator.active_model() == new  # became the active model, in the annotator's own choice
    assert annotator.model_source.value == "finetuned" and annotator.finetuned_combo.value == new.stem
    assert "is now the active model" in panel.status.text()
    click(qtbot, panel.previous_button)
    assert annotator.active_model() == base
    click(qtbot, panel.use_button)
    assert annotator.active_model() == new
    assert _gone(job.pid)

    # one click re-segments the boxes that have no label yet, with the new model
    prompts = annotator.controller.prompts_layer
    loaded = []
    annotator.controller.model_loaded.connect(loaded.append)
    draw_box_px(qtbot, viewer, prompts, img, 20, 20, 44, 44)
    click(qtbot, panel.resegment_button)
    qtbot.waitUntil(lambda: annotator.worker is None and not annotator.controller.is_running, timeout=RUN_MS)
    assert loaded and loaded[-1].path == str(new)
    assert annotator.controller.labels_layer.data.max() > 0


def test_cancel_mid_run_keeps_a_usable_model(qtbot, session):
    viewer, annotator, panel, img, lab, base = session
    panel.steps.value = 100_000
    panel.minutes.value = 0.0
    click(qtbot, panel.start_button)
    qtbot.waitUntil(lambda: panel.progress_bar.value() >= 2, timeout=RUN_MS)
    click(qtbot, panel.cancel_button)
    qtbot.waitUntil(lambda: not panel.running, timeout=RUN_MS)
    models = list_finetuned()
    assert len(models) == 1 and models[0].info["stop_reason"] == "cancelled"
    assert models[0].info["steps"] < 100_000
    Segmenter.from_checkpoint(models[0].path, "cpu").segment(img.data[:40, :40], seed=0)
    assert "cancelled" in panel.status.text()


def test_closing_the_viewer_stops_the_worker(qtbot, session):
    viewer, annotator, panel, img, lab, base = session
    panel.steps.value = 100_000
    panel.minutes.value = 0.0
    click(qtbot, panel.start_button)
    pid = panel.job.pid
    qtbot.waitUntil(lambda: panel.progress_bar.value() >= 1, timeout=RUN_MS)
    viewer.close()
    qtbot.waitUntil(lambda: _gone(pid), timeout=30_000)
    assert not [p for p in mp.active_children() if p.name == "segdiff-finetune"]


def test_second_run_is_refused(qtbot, session, notes):  # noqa: F811
    viewer, annotator, panel, img, lab, base = session
    panel.steps.value = 100_000
    click(qtbot, panel.start_button)
    first = panel.job
    click(qtbot, panel.start_button)
    assert panel.job is first
    from napari_segdiff._finetune import FinetuneWidget

    other = FinetuneWidget(viewer)  # a second panel (or window) is refused too
    viewer.window.add_dock_widget(other, name="second fine-tune")
    other.image_combo.value, other.labels_combo.value = img, lab
    click(qtbot, other.start_button)
    assert other.job is None and any("already running" in m for m in messages(notes, "error"))
    click(qtbot, panel.cancel_button)
    qtbot.waitUntil(lambda: not panel.running, timeout=RUN_MS)


@pytest.mark.parametrize("case, expected", [
    ("empty", "at least 5 annotated objects"),
    ("single", "found 1"),
    ("shape", "has shape (100, 128) but the image"),
    ("no review", "no review status"),
    ("unwritable", "cannot write to the data folder"),
])
def test_bad_input_changes_nothing(qtbot, session, notes, case, expected, tmp_path, monkeypatch):  # noqa: F811
    viewer, annotator, panel, img, lab, base = session
    data = {"empty": np.zeros_like(lab.data), "single": (lab.data == lab.data.max()).astype(np.int32),
            "shape": np.zeros((100, 128), np.int32)}.get(case, lab.data)
    bad = viewer.add_labels(data.copy(), name="bad")
    panel.labels_combo.value = bad
    if case == "no review":
        panel.objects.value = "accepted"
    if case == "unwritable":
        (tmp_path / "not-a-folder").write_text("x")
        monkeypatch.setenv("NAPARI_SEGDIFF_DATA_DIR", str(tmp_path / "not-a-folder"))
    click(qtbot, panel.start_button)
    assert panel.job is None
    assert any(expected in m for m in messages(notes, "error")), notes
    assert annotator.active_model() == base
    np.testing.assert_array_equal(bad.data, data)


def test_accepted_only_trains_on_reviewed_objects(qtbot, session):
    viewer, annotator, panel, img, lab, base = session
    import pandas as pd

    ids = np.unique(lab.data[lab.data > 0])
    lab.features = pd.DataFrame({"index": ids, "status": ["accepted" if i % 2 else "pending" for i in ids]})
    panel.objects.value = "accepted"
    request = panel.request()
    assert request.images[0].keep == tuple(int(i) for i in ids if i % 2)


def test_damaged_fine_tuned_model_is_not_activated(qtbot, session, notes):  # noqa: F811
    viewer, annotator, panel, img, lab, base = session
    result = run_finetune(FinetuneRequest(str(base), (TrainingImage(img.data, lab.data, "cells"),), overrides=FAST))
    panel.refresh_models()
    assert panel.models.value == result.model_path
    result.model_path.write_bytes(b"changed on disk")
    click(qtbot, panel.use_button)
    assert any(result.model_path.name in m and "unchanged" in m for m in messages(notes, "error")), notes
    assert annotator.active_model() == base


def _choose(combo, text: str) -> None:
    """Pick an entry of a magicgui combo box by its shown text, as a user does in the list."""
    index = combo.native.findText(text)
    assert index >= 0, [combo.native.itemText(i) for i in range(combo.native.count())]
    combo.native.setCurrentIndex(index)


def test_fine_tuned_models_are_offered_in_the_annotators_model_choice(qtbot, make_napari_viewer, tmp_path, notes):  # noqa: F811
    """A model saved by the real fine-tune path is listed in the annotator's own model choice in
    every later session, is used by a run once chosen there, and the previous model is one
    click away; a model deleted from the data folder is reported, not silently replaced."""
    base = tiny_base_model(tmp_path)
    image, labels = annotated_tile(0)
    saved = run_finetune(FinetuneRequest(str(base), (TrainingImage(image, labels, "tile0"),), overrides=FAST,
                                         name="my-cells")).model_path
    viewer = make_napari_viewer(show=True)
    _, annotator = viewer.window.add_plugin_dock_widget("napari-segdiff", "SegDiff annotator")
    configure(annotator, base)
    annotator.threshold.value = 0.01
    assert not annotator.finetuned_combo.enabled  # only used with 'fine-tuned model'
    _choose(annotator.model_source, "fine-tuned model")
    assert annotator.finetuned_combo.enabled
    assert [v for v in annotator.finetuned_combo.choices if v] == ["my-cells"]
    assert annotator.active_model() == saved
    assert annotator.previous_button.isEnabled()

    # a run uses it
    img = viewer.add_image(image, name="cells", rgb=True)
    annotator.image_combo.value = img
    loaded = []
    annotator.controller.model_loaded.connect(loaded.append)
    annotator.draw_button.click()
    draw_box_px(qtbot, viewer, annotator.controller.prompts_layer, img, 20, 20, 44, 44)
    click(qtbot, annotator.segment_button)
    qtbot.waitUntil(lambda: annotator.worker is None and not annotator.controller.is_running, timeout=RUN_MS)
    assert loaded and loaded[-1].path == str(saved)

    # previous model: one click each way
    click(qtbot, annotator.previous_button)
    assert annotator.model_source.value == "file" and annotator.active_model() == base
    click(qtbot, annotator.previous_button)
    assert annotator.model_source.value == "finetuned" and annotator.active_model() == saved

    # the next session offers it again and starts with it (settings are remembered)
    viewer2 = make_napari_viewer(show=True)
    _, annotator2 = viewer2.window.add_plugin_dock_widget("napari-segdiff", "SegDiff annotator")
    assert annotator2.model_source.value == "finetuned" and annotator2.active_model() == saved
    assert annotator2.previous_model is None
    assert not messages(notes, "warning"), notes

    # deleted from the data folder: the next session says so; a run asks for another model
    saved.unlink()
    viewer3 = make_napari_viewer(show=True)
    _, annotator3 = viewer3.window.add_plugin_dock_widget("napari-segdiff", "SegDiff annotator")
    assert any("'my-cells' is no longer in the data folder" in m for m in messages(notes, "warning")), notes
    with pytest.raises(Exception, match="no longer in|no fine-tuned model chosen"):
        annotator3.controller.model_path()
