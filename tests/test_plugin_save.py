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
