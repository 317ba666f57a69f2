"""Saving and reopening annotations the way a person does: boxes dragged on the canvas,
Shift-S, napari's File > Save Selected Layers with the *SegDiff instance labels (TIFF)* writer
(or the annotator's Export labels), then File > Open with the plugin's reader, and annotating
on."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt

from segdiff_core.data.synthetic import generate_tile

from napari_segdiff._objects import ObjectTable
from tests.conftest_napari import docked_annotator, messages, model_file, notes, wait_idle  # noqa: F401 (fixtures)
from tests.gui_helpers import draw_box_px, key

pytestmark = pytest.mark.gui

PLUGIN = "napari-segdiff"
SCALE = (0.4, 1.6)  # anisotropic pixels
TRANSLATE = (12.0, -7.0)  # an offset image


@pytest.fixture
def annotated(make_napari_viewer, model_file, qtbot):  # noqa: F811
    """An anisotropic, offset image with one box dragged and segmented (Shift-S)."""
    viewer, widget = docked_annotator(make_napari_viewer, model_file)
    image = viewer.add_image(generate_tile("fluorescence", 64, 3).image, name="cells", scale=SCALE,
                             translate=TRANSLATE)
    viewer.reset_view()
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
    boxes = widget.controller.prompts_layer
    draw_box_px(qtbot, viewer, boxes, image, 8, 8, 26, 26)
    key(qtbot, viewer, "S", Qt.KeyboardModifier.ShiftModifier)
    wait_idle(qtbot, widget)
    labels = widget.controller.labels_layer
    assert set(np.unique(labels.data)) == {0, 1}
    return viewer, widget, image, boxes, labels


def _save(viewer, labels, path) -> list[str]:
    """File > Save Selected Layers, choosing the plugin's writer."""
    viewer.layers.selection = {labels}
    return viewer.layers.save(str(path), selected=True, plugin=PLUGIN)


def test_saved_labels_keep_their_scores_without_opening_the_review_panel(qtbot, annotated, tmp_path):
    viewer, widget, image, boxes, labels = annotated
    score = ObjectTable.of(labels).get(1).score
    assert score is not None

    written = _save(viewer, labels, tmp_path / "cells_labels.tif")
    assert str(tmp_path / "cells_labels.objects.csv") in written
    saved = pd.read_csv(tmp_path / "cells_labels.objects.csv")
    assert list(saved["id"]) == [1] and saved["score"][0] == pytest.approx(score, abs=1e-5)
    assert saved["status"][0] == "pending" and saved["source"][0] == "box"

    # the annotator's own Export labels writes the same table beside the TIFF
    widget.labels_file.value = tmp_path / "exported.tif"
    widget.export_labels_button.click()
    exported = pd.read_csv(tmp_path / "exported.objects.csv")
    assert list(exported["id"]) == [1] and exported["score"][0] == pytest.approx(score, abs=1e-5)


def test_reopened_labels_lie_over_the_anisotropic_image_and_annotation_goes_on(qtbot, annotated, tmp_path, notes):  # noqa: F811
    viewer, widget, image, boxes, labels = annotated
    _save(viewer, labels, tmp_path / "cells_labels.tif")
    reopened = viewer.open(str(tmp_path / "cells_labels.tif"), plugin=PLUGIN)[0]
    assert np.array_equal(reopened.data, labels.data)
    np.testing.assert_allclose(reopened.scale, SCALE)
    np.testing.assert_allclose(reopened.translate, TRANSLATE)
    corner = np.asarray(image.data_to_world((63, 63)))
    np.testing.assert_allclose(reopened.data_to_world((63, 63)), corner)

    # the reopened layer is usable as the annotator's labels: the next box lands in it
    widget.labels_combo.value = reopened
    draw_box_px(qtbot, viewer, boxes, image, 36, 36, 56, 56)
    key(qtbot, viewer, "S", Qt.KeyboardModifier.ShiftModifier)
    wait_idle(qtbot, widget)
    assert not messages(notes, "error")
    assert set(np.unique(reopened.data)) == {0, 1, 2}


def test_reopened_boxes_are_linked_to_their_saved_objects(make_napari_viewer, model_file, qtbot, tmp_path, notes):  # noqa: F811
    import tifffile

    from napari_segdiff._layers import PROMPT_EDGE

    tifffile.imwrite(tmp_path / "cells.tif", generate_tile("fluorescence", 64, 3).image)
    viewer, widget = docked_annotator(make_napari_viewer, model_file)
    image = viewer.open(str(tmp_path / "cells.tif"), plugin="napari")[0]
    viewer.reset_view()
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
    boxes = widget.controller.prompts_layer
    draw_box_px(qtbot, viewer, boxes, image, 6, 6, 24, 24)
    draw_box_px(qtbot, viewer, boxes, image, 34, 30, 56, 52)
    widget.segment_all_button.click()
    wait_idle(qtbot, widget)
    labels = widget.controller.labels_layer
    assert set(np.unique(labels.data)) == {0, 1, 2}
    ObjectTable.of(labels).update(2, status="accepted")  # a review decision, kept through the files
    scores = {i: ObjectTable.of(labels).get(i).score for i in (1, 2)}
    _save(viewer, labels, tmp_path / "cells_labels.tif")
    viewer.layers.selection = {boxes}
    viewer.layers.save(str(tmp_path / "boxes.csv"), selected=True, plugin="napari")  # napari's Shapes CSV
    saved = pd.read_csv(tmp_path / "cells_labels.objects.csv")
    assert saved[["box_y0", "box_x0", "box_y1", "box_x1"]].notna().all().all()

    # next day: the layers are closed (napari's delete), then File > Open of the image, the labels
    # and the boxes; the user picks them in the annotator
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    image2 = viewer.open(str(tmp_path / "cells.tif"), plugin="napari")[0]
    labels2 = viewer.open(str(tmp_path / "cells_labels.tif"), plugin=PLUGIN)[0]
    boxes2 = viewer.open(str(tmp_path / "boxes.csv"), plugin="napari")[0]
    assert len(boxes2.data) == 2 and len(labels2.features) == 2
    assert ObjectTable.of(labels2).get(1) is None  # nothing carried over in memory
    viewer.reset_view()
    widget2, viewer2 = widget, viewer
    widget2.image_combo.value = image2
    widget2.boxes_combo.value = boxes2
    widget2.labels_combo.value = labels2
    c = widget2.controller
    assert c.box_objects() == [[1], [2]]
    edges = np.asarray(boxes2.edge_color)
    assert not np.allclose(edges[0], PROMPT_EDGE) and not np.allclose(edges[1], PROMPT_EDGE)  # drawn as done
    table = ObjectTable.of(labels2)
    assert table.get(1).status == "pending" and table.get(2).status == "accepted"
    assert table.get(1).score == pytest.approx(scores[1], abs=1e-5)

    before = labels2.data.copy()
    n_notes = len(notes)
    widget2.segment_all_button.click()  # nothing to sample: every box has its object
    wait_idle(qtbot, widget2)
    assert np.array_equal(labels2.data, before)
    assert not [m for m in messages(notes[n_notes:], "warning") if "threshold" in m]

    # a third box drawn now is segmented, beside the linked ones
    draw_box_px(qtbot, viewer2, boxes2, image2, 40, 4, 60, 24)
    widget2.segment_all_button.click()
    wait_idle(qtbot, widget2)
    assert not messages(notes, "error")
    assert set(np.unique(labels2.data)) == {0, 1, 2, 3}
    assert np.array_equal(labels2.data[before > 0], before[before > 0])
    assert c.box_objects() == [[1], [2], [3]]


def test_an_objects_csv_without_box_columns_still_opens_unlinked(make_napari_viewer, model_file, qtbot, annotated, tmp_path):  # noqa: F811
    viewer, widget, image, boxes, labels = annotated
    _save(viewer, labels, tmp_path / "cells_labels.tif")
    old = pd.read_csv(tmp_path / "cells_labels.objects.csv")
    old.drop(columns=["box_y0", "box_x0", "box_y1", "box_x1"]).to_csv(tmp_path / "cells_labels.objects.csv", index=False)

    reopened = viewer.open(str(tmp_path / "cells_labels.tif"), plugin=PLUGIN)[0]
    assert list(reopened.features["index"]) == [1] and reopened.features["status"][0] == "pending"
    assert reopened.features["score"][0] == pytest.approx(old["score"][0], abs=1e-5)
    widget.labels_combo.value = reopened
    assert widget.controller.box_objects() == [[]]  # nothing linked, as before the box columns
    assert len(ObjectTable.of(reopened)) == 0
