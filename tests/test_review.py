"""The Review panel with a real viewer and the real bundled model: queue order, camera
navigation, accept / reject / undo, re-threshold from the stored probability (one undo step),
hand-painted and hand-edited objects, CSV export and napari's own save/reopen round trip."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt

from segdiff_core.bundled import bundled_model_path
from segdiff_core.data.synthetic import generate_tile
from segdiff_core.rethreshold import threshold_mask

from napari_segdiff._review_model import CSV_COLUMNS, probability_store, score_colour
from napari_segdiff._widget import AnnotatorWidget
from tests.conftest_napari import configure, messages, notes, press  # noqa: F401 (fixtures)
from tests.gui_helpers import canvas_widget, drag, draw_box_px

pytestmark = pytest.mark.gui

SIZE = 160


def _tile_with_objects(size: int, n: int) -> tuple[object, list[tuple[int, int, int, int]]]:
    """The first synthetic fluorescence tile (seed 0, 1, ...) with ``n`` usable objects."""
    for seed in range(40):
        tile = generate_tile("fluorescence", size, seed)
        boxes = _objects(tile.labels, n)
        if len(boxes) == n:
            return tile, boxes
    raise AssertionError(f"no synthetic tile of {size} px with {n} separated objects")


def _objects(labels: np.ndarray, n: int) -> list[tuple[int, int, int, int]]:
    """Tight boxes (pixel-centre corners) of up to ``n`` well separated, mid-sized objects."""
    from scipy import ndimage

    boxes, taken = [], np.zeros(labels.shape, bool)
    for sl in ndimage.find_objects(labels):
        if sl is None or len(boxes) == n:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if not (8 <= h <= 30 and 8 <= w <= 30) or sl[0].start < 12 or sl[1].start < 12 \
                or sl[0].stop > labels.shape[0] - 12 or sl[1].stop > labels.shape[1] - 12:
            continue
        grown = (slice(sl[0].start - 10, sl[0].stop + 10), slice(sl[1].start - 10, sl[1].stop + 10))
        if taken[grown].any():
            continue
        taken[grown] = True
        boxes.append((sl[0].start - 1, sl[1].start - 1, sl[0].stop, sl[1].stop))
    return boxes


@pytest.fixture
def annotated(qtbot, make_napari_viewer):
    """A viewer with a synthetic fluorescence tile, three boxes drawn with the mouse and
    segmented by the bundled model, and the Review panel opened from the plugin menu."""
    viewer = make_napari_viewer()
    annotator = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(annotator, name="SegDiff annotator")
    configure(annotator, bundled_model_path(), steps=4, generations=4)
    tile, prompts = _tile_with_objects(SIZE, 3)
    image = viewer.add_image(tile.image, name="cells")
    annotator.draw_button.click()
    boxes = annotator.controller.prompts_layer
    for y0, x0, y1, x1 in prompts:
        draw_box_px(qtbot, viewer, boxes, image, y0, x0, y1, x1)
    press(qtbot, annotator, annotator.segment_all_button)
    labels = annotator.controller.labels_layer
    assert sorted(np.unique(labels.data))[1:] == [1, 2, 3]
    _, review = viewer.window.add_plugin_dock_widget("napari-segdiff", "SegDiff review")
    review.labels_combo.value = labels
    review.refresh()
    return viewer, annotator, review, labels, boxes


def _click_row(qtbot, review, row: int) -> None:
    rect = review.table.visualItemRect(review.table.item(row, 0))
    qtbot.mouseClick(review.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_queue_sorted_by_score_click_moves_camera_and_review_actions(qtbot, annotated, notes):
    viewer, annotator, review, labels, boxes = annotated
    rows = review._rows
    scores = [r.score for r in rows]
    assert len(rows) == 3 and all(r.has_score and 0.0 <= r.score <= 1.0 for r in rows)
    assert scores == sorted(scores)  # least certain first
    assert [review.table.item(i, 0).text() for i in range(3)] == [str(r.label_id) for r in rows]
    # features on the labels layer: one row per object with provenance and status
    feats = labels.features.set_index("index")
    assert list(feats.index) == [1, 2, 3]
    assert set(feats["status"]) == {"pending"} and set(feats["model"]) == {bundled_model_path().name}
    assert feats["seed"].notna().all() and all('"generations": 4' in s for s in feats["settings"])
    assert set(feats["score_kind"]) <= {"predicted_iou", "agreement"}
    # each box's edge colour is its object's score
    table_scores = {r.label_id: r.score for r in rows}
    for i, ids in enumerate(annotator.controller.box_objects(boxes)):
        np.testing.assert_allclose(boxes.edge_color[i], score_colour(table_scores[ids[0]]), atol=1e-6)

    # clicking the second row centres and zooms the camera on that object
    zoom_before = viewer.scene.camera.zoom
    _click_row(qtbot, review, 1)
    target = rows[1]
    assert review.selected_id() == target.label_id
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], target.centre, atol=1e-6)
    assert viewer.scene.camera.zoom != zoom_before

    # A accepts (keyboard, panel focused) and moves on to the next pending object
    review.table.setFocus()
    qtbot.keyClick(review.table, Qt.Key.Key_A)
    assert review.session.row(target.label_id).status == "accepted"
    assert review.selected_id() == rows[2].label_id
    assert review.counts_label.text().startswith("1 accepted, 2 pending")

    # R rejects: an undoable delete
    rejected = review.selected_id()
    qtbot.keyClick(review.table, Qt.Key.Key_R)
    assert not (labels.data == rejected).any()
    assert review.session.row(rejected).status == "rejected"
    labels.undo()
    review.refresh()
    assert (labels.data == rejected).any() and review.session.row(rejected).status == "pending"

    # N jumps to the least certain pending object
    _click_row(qtbot, review, 2)
    qtbot.keyClick(review.table, Qt.Key.Key_N)
    pending = [r.label_id for r in review._rows if r.status == "pending"]
    assert review.selected_id() == pending[0]


def test_rethreshold_equals_fresh_threshold_one_undo_restores_and_hand_edits_are_left_alone(
        qtbot, annotated, notes):
    viewer, annotator, review, labels, boxes = annotated
    store = probability_store(labels)
    assert len(store) == 3
    before = labels.data.copy()
    review.threshold.value = 0.3
    review.rethreshold_all_btn.click()
    changed = 0
    for obj in store:
        region = labels.data[obj.region]
        fresh = threshold_mask(obj.probability.astype(np.float32), 0.3, obj.largest_only)
        free = (before[obj.region] == 0) | (before[obj.region] == obj.label)
        assert np.array_equal(region == obj.label, fresh & free)
        changed += not np.array_equal(region == obj.label, before[obj.region] == obj.label)
    assert changed >= 1
    labels.undo()  # one undo step restores every object
    assert np.array_equal(labels.data, before)

    # a hand edit (eraser drag through object 2) makes its stored probability stale
    target = next(o for o in store if o.label == 2)
    rows, cols = np.nonzero(labels.data == 2)
    cy, cx = int(rows[len(rows) // 2]), int(cols[len(rows) // 2])  # a pixel of object 2
    viewer.layers.selection.active = labels
    labels.mode = "erase"
    labels.brush_size = 2
    drag(qtbot, viewer, labels.data_to_world((cy, cx)), labels.data_to_world((cy, cx + 1)))
    edited = labels.data.copy()
    assert (edited == 2).sum() < (before == 2).sum()
    # and a hand-painted object has no score
    labels.mode = "paint"
    labels.selected_label = 50
    drag(qtbot, viewer, labels.data_to_world((3, 3)), labels.data_to_world((3, 12)))
    painted = labels.data == 50
    assert painted.any()
    review.refresh()
    hand = review.session.row(50)
    assert hand is not None and not hand.has_score and review._rows[-1].label_id == 50
    assert review.table.item(len(review._rows) - 1, 2).text() == "no score"

    review.rethreshold_all_btn.click()
    warnings = messages(notes, "warning")
    assert any("edited by hand" in m and "2" in m for m in warnings)
    assert np.array_equal(labels.data[target.region] == 2, edited[target.region] == 2)
    assert np.array_equal(labels.data == 50, painted)  # the hand-painted object is untouched


def test_csv_export_and_napari_save_reopen_keep_scores_and_statuses(qtbot, annotated, tmp_path):
    viewer, annotator, review, labels, boxes = annotated
    first = review._rows[0].label_id
    _click_row(qtbot, review, 0)
    review.accept_btn.click()
    labels.data_setitem((np.array([2, 2]), np.array([2, 3])), 77)  # a stroke of a hand-painted object
    review.refresh()

    csv = pd.read_csv(review.session.export_csv(tmp_path / "objects.csv"))
    assert list(csv.columns) == list(CSV_COLUMNS)
    assert sorted(csv["id"]) == [1, 2, 3, 77]
    row77 = csv[csv["id"] == 77].iloc[0]
    assert np.isnan(row77["score"]) and row77["area"] == 2 and row77["status"] == "pending"
    assert csv[csv["id"] == first].iloc[0]["status"] == "accepted"
    assert (csv["y1"] > csv["y0"]).all() and (csv["area"] > 0).all()

    # napari's own save (our writer) and reopen (our reader) keep the per-object table
    viewer.layers.selection.active = labels
    viewer.layers.selection = {labels}
    written = viewer.layers.save(str(tmp_path / "cells_labels.tif"), selected=True, plugin="napari-segdiff")
    assert any(p.endswith("cells_labels.objects.csv") for p in written)
    reopened = viewer.open(str(tmp_path / "cells_labels.tif"), plugin="napari-segdiff")[0]
    assert reopened.__class__.__name__ == "Labels" and np.array_equal(reopened.data, labels.data)
    a = labels.features.set_index("index").sort_index()
    b = reopened.features.set_index("index").sort_index()
    np.testing.assert_allclose(a["score"].to_numpy(float), b["score"].to_numpy(float), atol=1e-5, equal_nan=True)
    assert list(a["status"]) == list(b["status"]) and list(a["model"]) == list(b["model"])

    # the review panel on the reopened layer shows the saved scores and decisions
    review.labels_combo.value = reopened
    review.refresh()
    got = {r.label_id: (r.status, r.has_score) for r in review._rows}
    assert got[first] == ("accepted", True) and got[77] == ("pending", False)


def test_clicking_an_object_on_another_slice_moves_the_sliders(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    annotator = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(annotator, name="SegDiff annotator")
    configure(annotator, bundled_model_path(), steps=3, generations=3)
    tile, prompts = _tile_with_objects(96, 1)
    stack = np.stack([generate_tile("fluorescence", 96, s).image for s in (101, 102)] + [tile.image])
    image = viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    annotator.draw_button.click()
    boxes = annotator.controller.prompts_layer
    y0, x0, y1, x1 = prompts[0]
    draw_box_px(qtbot, viewer, boxes, image, y0, x0, y1, x1)
    press(qtbot, annotator, annotator.segment_button)
    labels = annotator.controller.labels_layer
    assert labels.data[2].any() and not labels.data[0].any()
    _, review = viewer.window.add_plugin_dock_widget("napari-segdiff", "SegDiff review")
    review.labels_combo.value = labels
    review.refresh()
    assert review._rows[0].slice == (2,)
    viewer.dims.set_current_step(0, 0)
    _click_row(qtbot, review, 0)
    assert viewer.dims.current_step[0] == 2
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], review._rows[0].centre, atol=1e-6)


def test_redo_resamples_the_box_with_more_generations_and_keeps_the_annotator_settings(qtbot, annotated, notes):
    from tests.conftest_napari import wait_idle

    viewer, annotator, review, labels, boxes = annotated
    old = review._rows[0]
    _click_row(qtbot, review, 0)
    review.table.setFocus()
    qtbot.keyClick(review.table, Qt.Key.Key_G)
    wait_idle(qtbot, annotator)
    review.refresh()
    assert not (labels.data == old.label_id).any()  # replaced, in one undo step
    new = [r for r in review._rows if r.label_id > 3]
    assert len(new) == 1 and new[0].settings["generations"] == 8 and new[0].status == "pending"
    assert annotator.controller.settings.generations == 4 and annotator.generations.value == 4
    labels.undo()
    assert (labels.data == old.label_id).any() and not (labels.data == new[0].label_id).any()


def test_a_damaged_sidecar_opens_the_labels_without_scores(qtbot, make_napari_viewer, tmp_path, notes):
    from napari_segdiff._writer import write_labels_tiff

    data = np.zeros((20, 20), np.uint8)
    data[2:6, 2:6] = 1
    feats = pd.DataFrame({"index": [1], "score": [0.4], "status": ["accepted"]})
    written = write_labels_tiff(str(tmp_path / "l.tif"), data, {"features": feats})
    assert written[1].endswith("l.objects.csv")
    (tmp_path / "l.objects.csv").write_text("\x00\x01 not a table")
    viewer = make_napari_viewer()
    layer = viewer.open(str(tmp_path / "l.tif"), plugin="napari-segdiff")[0]
    assert np.array_equal(layer.data, data) and len(layer.features) == 0
    assert any("opened without their scores" in m for m in messages(notes, "warning"))


def test_a_rejected_object_stays_rejected_through_the_next_segment_all(qtbot, annotated, notes):
    """Reject (R), draw one more box, Shift-G: only the new box is segmented; the rejected
    object does not come back as a new pending object. Selecting its box and Shift-S samples
    it again on purpose."""
    from napari_segdiff._review_model import REJECTED_EDGE
    from tests.gui_helpers import click, key

    viewer, annotator, review, labels, boxes = annotated
    before = {r.label_id: r.box for r in review._rows}
    _click_row(qtbot, review, 0)
    rejected = review.selected_id()
    review.table.setFocus()
    qtbot.keyClick(review.table, Qt.Key.Key_R)
    assert not (labels.data == rejected).any()
    index = annotator.controller.box_objects(boxes).index([])  # the rejected object's box
    np.testing.assert_allclose(boxes.edge_color[index], REJECTED_EDGE)

    image = annotator.controller.image_layer
    free = np.argwhere(labels.data[4:-20, 4:-20] == 0)[0] + 4  # room for a new box
    draw_box_px(qtbot, viewer, boxes, image, free[0], free[1], free[0] + 12, free[1] + 12)
    key(qtbot, viewer, "G", Qt.KeyboardModifier.ShiftModifier)
    from tests.conftest_napari import wait_idle

    wait_idle(qtbot, annotator)
    review.refresh()
    rows = {r.label_id: r for r in review._rows}
    assert rows[rejected].status == "rejected" and rows[rejected].area == 0
    new = [i for i in rows if i not in before]
    assert all(rows[i].box[0] >= free[0] - 2 for i in new)  # only the new box gave objects
    assert annotator.controller.box_objects(boxes)[index] == []
    np.testing.assert_allclose(boxes.edge_color[index], REJECTED_EDGE)

    # on purpose: select the rejected box and press Segment (Shift-S)
    viewer.layers.selection.active = boxes
    boxes.mode = "select"
    y0, x0, y1, x1 = before[rejected]
    click(qtbot, viewer, image.data_to_world(((y0 + y1) / 2, x0 + 0.5)))
    assert boxes.selected_data == {index}
    key(qtbot, viewer, "S", Qt.KeyboardModifier.ShiftModifier)
    wait_idle(qtbot, annotator)
    assert annotator.controller.box_objects(boxes)[index] != []


def test_redoing_a_box_after_a_lower_rethreshold_leaves_nothing_of_its_old_object(qtbot, annotated, notes):
    """Re-threshold lower (the object grows), then select its box and press Segment: the old
    object must give way entirely (a ring of it stayed beside the new object, which was cut
    around it)."""
    from napari_segdiff._objects import ObjectTable
    from tests.conftest_napari import wait_idle
    from tests.gui_helpers import click, key

    viewer, annotator, review, labels, boxes = annotated
    table = ObjectTable.of(labels)
    first = {i: table.get(i).region for i in (1, 2, 3)}  # where each object was written
    review.threshold.value = 0.02
    review.rethreshold_all_btn.click()
    grown = []
    for label_id in (1, 2, 3):
        rows, cols = first[label_id]
        inside = (labels.data[rows, cols] == label_id).sum()
        grown.append((labels.data == label_id).sum() > inside)
    target = 1 + grown.index(True)  # an object that now reaches beyond where it was first written
    index = annotator.controller.box_objects(boxes).index([target])

    viewer.layers.selection.active = boxes
    key(qtbot, viewer, "S")  # select tool
    corner = boxes.data[index][0]
    click(qtbot, viewer, boxes.data_to_world(corner + np.array([0.0, 3.0])))  # on its top edge
    assert boxes.selected_data == {index}
    key(qtbot, viewer, "S", Qt.KeyboardModifier.ShiftModifier)
    wait_idle(qtbot, annotator)
    assert not (labels.data == target).any()
    (new,) = annotator.controller.box_objects(boxes)[index]
    labels.undo()  # one undo step brings the grown object back whole
    assert (labels.data == target).sum() > 0 and not (labels.data == new).any()
    assert annotator.controller.box_objects(boxes)[index] == [target]


def test_painting_a_stroke_with_the_panel_open_reads_the_objects_once(qtbot, annotated):
    """A brush stroke changes the labels at every mouse move; the panel re-read every object
    each time (painting lagged with many objects). It now follows once the stroke ends, and
    the painted object is then listed."""
    from tests.gui_helpers import drag

    viewer, annotator, review, labels, boxes = annotated
    reads = []
    rows = review.session.rows
    review.session.rows = lambda: (reads.append(1), rows())[1]  # counts the real reads
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    labels.brush_size = 3
    labels.selected_label = 60
    drag(qtbot, viewer, labels.data_to_world((4, 4)), labels.data_to_world((4, 40)), steps=12)
    assert len(reads) <= 1
    qtbot.waitUntil(lambda: any(r.label_id == 60 for r in review._rows), timeout=3000)
    assert len(reads) <= 2
