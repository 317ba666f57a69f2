"""End to end, the way a person uses the annotator: boxes dragged with the mouse on the canvas,
buttons and shortcuts pressed with qtbot, Ctrl+Z / Ctrl+Shift+Z, and the labels checked after
every step. Each test here reproduces a fault of issue 10 that tests adding shapes in code hid.
"""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from qtpy.QtCore import Qt

from segdiff_core.data.synthetic import generate_tile

from napari_segdiff._layers import DONE_EDGE, PROMPT_EDGE
from napari_segdiff._widget import AnnotatorWidget
from tests.conftest_napari import (  # noqa: F401 (fixtures)
    configure,
    messages,
    model_file,
    notes,
    wait_idle,
)
from tests.gui_helpers import draw_box_px, key, redo, undo

pytestmark = pytest.mark.gui


@pytest.fixture
def annotator(make_napari_viewer, model_file, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegDiff annotator")
    configure(widget, model_file)
    widget.threshold.value = 0.0  # the test model's mask is then the whole crop: predictable
    widget.largest_only.value = False
    return viewer, widget


def open_image(viewer, widget, qtbot, size=64, **kwargs):
    image = viewer.add_image(generate_tile("fluorescence", size, 3).image, name="cells", **kwargs)
    viewer.reset_view()
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
    return image, widget.controller.prompts_layer


def segment(qtbot, viewer, widget, scope="newest"):
    """Shift-S (or Shift-G) on the canvas, then wait for the run to end."""
    key(qtbot, viewer, "S" if scope == "newest" else "G", Qt.KeyboardModifier.ShiftModifier)
    wait_idle(qtbot, widget)


def present(labels) -> set[int]:
    return set(np.unique(labels.data).tolist()) - {0}


def test_second_box_keeps_the_first_object(qtbot, annotator):
    """Fault 1: box A, Segment, box B, Segment: A's object must stay; boxes drawn later are
    segmented too (napari's feature defaults once made them look done)."""
    viewer, widget = annotator
    image, boxes = open_image(viewer, widget, qtbot, scale=(0.5, 2.0), translate=(10.0, -5.0))
    draw_box_px(qtbot, viewer, boxes, image, 4, 4, 20, 20)
    segment(qtbot, viewer, widget)
    labels = widget.controller.labels_layer
    assert present(labels) == {1}
    first = labels.data == 1

    draw_box_px(qtbot, viewer, boxes, image, 36, 36, 54, 54)
    segment(qtbot, viewer, widget)
    assert present(labels) == {1, 2}
    assert np.array_equal(labels.data == 1, first)  # A untouched
    assert widget.controller.box_objects() == [[1], [2]]

    draw_box_px(qtbot, viewer, boxes, image, 4, 40, 20, 58)
    draw_box_px(qtbot, viewer, boxes, image, 40, 4, 58, 20)
    segment(qtbot, viewer, widget, "all")
    assert present(labels) == {1, 2, 3, 4}
    assert widget.controller.box_objects() == [[1], [2], [3], [4]]
    np.testing.assert_allclose(boxes.edge_color, np.tile(DONE_EDGE, (4, 1)))


def test_undo_and_redo_keep_boxes_in_step_and_never_erase_another_object(qtbot, annotator):
    """Fault 3: Segment A, Ctrl+Z, Segment B, select A, Segment: B's object must survive."""
    viewer, widget = annotator
    image, boxes = open_image(viewer, widget, qtbot)
    draw_box_px(qtbot, viewer, boxes, image, 4, 4, 20, 20)
    segment(qtbot, viewer, widget)
    labels = widget.controller.labels_layer
    assert present(labels) == {1}

    undo(qtbot, viewer, labels)
    assert present(labels) == set()
    assert widget.controller.box_objects() == [[]]  # A is open again (and yellow)
    np.testing.assert_allclose(boxes.edge_color[0], PROMPT_EDGE)

    draw_box_px(qtbot, viewer, boxes, image, 36, 36, 54, 54)
    segment(qtbot, viewer, widget)
    assert present(labels) == {2}  # a fresh id: 1 may come back with redo
    b_pixels = labels.data == 2

    boxes.mode = "select"
    boxes.selected_data = {0}
    segment(qtbot, viewer, widget)  # redo A explicitly
    assert present(labels) == {2, 3}
    assert np.array_equal(labels.data == 2, b_pixels)  # B survives
    assert widget.controller.box_objects() == [[3], [2]]

    undo(qtbot, viewer, labels)
    assert present(labels) == {2}
    redo(qtbot, viewer, labels)
    assert present(labels) == {2, 3}
    assert widget.controller.box_objects() == [[3], [2]]


def test_segment_all_after_undo_resegments_the_undone_box(qtbot, annotator):
    viewer, widget = annotator
    image, boxes = open_image(viewer, widget, qtbot)
    draw_box_px(qtbot, viewer, boxes, image, 4, 4, 20, 20)
    draw_box_px(qtbot, viewer, boxes, image, 36, 36, 54, 54)
    segment(qtbot, viewer, widget, "all")
    labels = widget.controller.labels_layer
    assert present(labels) == {1, 2}
    undo(qtbot, viewer, labels)  # removes box 2's object
    assert widget.controller.box_objects() == [[1], []]
    segment(qtbot, viewer, widget, "all")
    assert present(labels) == {1, 3}
    assert widget.controller.box_objects() == [[1], [3]]


def test_full_uint8_labels_are_refused_before_writing_and_the_widget_unlocks(qtbot, annotator, notes):
    """Fault 2: a uint8 labels layer that already uses 255."""
    viewer, widget = annotator
    image, boxes = open_image(viewer, widget, qtbot)
    full = np.zeros((64, 64), np.uint8)
    full[60:, 60:] = 255
    labels = viewer.add_labels(full.copy(), name="full")
    widget.labels_combo.value = labels
    draw_box_px(qtbot, viewer, boxes, image, 4, 4, 20, 20)
    segment(qtbot, viewer, widget)
    assert np.array_equal(labels.data, full)
    assert any("used up to 255" in m for m in messages(notes, "error")), notes
    assert widget.segment_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_dask_labels_layer_is_refused_with_a_message(qtbot, annotator, notes):
    """Fault 2: a dask-backed labels layer cannot be edited with undo."""
    viewer, widget = annotator
    image, boxes = open_image(viewer, widget, qtbot)
    labels = viewer.add_labels(da.zeros((64, 64), dtype=np.int32, chunks=32), name="lazy")
    widget.labels_combo.value = labels
    draw_box_px(qtbot, viewer, boxes, image, 4, 4, 20, 20)
    segment(qtbot, viewer, widget)
    assert any("lazy or read-only" in m for m in messages(notes, "error")), notes
    assert widget.segment_button.isEnabled() and widget.worker is None
    assert not np.asarray(labels.data).any()


def test_failure_while_committing_ends_the_run_and_unlocks(qtbot, annotator, notes, monkeypatch):
    """Fault 2: any exception while applying a result ends the run, removes the preview,
    unlocks the widget and says what happened (here the labels' undo machinery fails)."""
    viewer, widget = annotator
    image, boxes = open_image(viewer, widget, qtbot)
    draw_box_px(qtbot, viewer, boxes, image, 4, 4, 20, 20)
    segment(qtbot, viewer, widget)
    labels = widget.controller.labels_layer
    draw_box_px(qtbot, viewer, boxes, image, 36, 36, 54, 54)
    # a read-only labels array (e.g. a read-only memory-mapped file): the write raises in commit
    labels.data.setflags(write=False)
    segment(qtbot, viewer, widget)
    errors = messages(notes, "error")
    assert any("the run stopped" in m for m in errors), notes
    assert widget.segment_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.worker is None and not widget.controller.is_running
    assert not any("preview" in layer.name for layer in viewer.layers)
    assert present(labels) == {1}


def test_labels_layer_with_another_scale_is_refused(qtbot, annotator, notes):
    """Fault 6: same shape, other scale: objects would land in the wrong place."""
    viewer, widget = annotator
    image, boxes = open_image(viewer, widget, qtbot)
    labels = viewer.add_labels(np.zeros((64, 64), np.int32), scale=(2.0, 2.0), name="other scale")
    widget.labels_combo.value = labels
    draw_box_px(qtbot, viewer, boxes, image, 4, 4, 20, 20)
    segment(qtbot, viewer, widget)
    assert any("placed differently" in m for m in messages(notes, "error")), notes
    assert not labels.data.any()
