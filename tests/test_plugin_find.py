"""'Find all objects' in the annotator, driven like a person: area chosen in the combo box, the
button clicked, a search box dragged on the canvas; the proposals become ordinary boxes that
Segment all segments, and finding again does not duplicate objects."""
from __future__ import annotations

import numpy as np
import pytest

from segdiff_core.data.synthetic import generate_tile
from segdiff_core.proposals import ProposalSettings, propose_boxes

from napari_segdiff._geometry import current_plane, shape_box
from napari_segdiff._widget import AnnotatorWidget
from tests.conftest_napari import configure, docked_annotator, model_file, wait_idle  # noqa: F401 (fixtures)
from tests.gui_helpers import click, draw_box_px

pytestmark = pytest.mark.gui


@pytest.fixture
def annotator(make_napari_viewer, model_file, qtbot):
    viewer, widget = docked_annotator(make_napari_viewer, model_file)
    tile = generate_tile("fluorescence", 96, rng=3, n_nuclei=6, radius_range=(6, 9))
    image = viewer.add_image(tile.image, name="cells", scale=(0.5, 2.0), translate=(10.0, -5.0))
    viewer.reset_view()
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
    return viewer, widget, image, tile


def boxes_of(viewer, widget, image):
    prompts = widget.controller.prompts_layer
    plane = current_plane(viewer, image)
    return [shape_box(prompts, i, image, plane)[0] for i in range(len(prompts.data))]


def test_find_all_in_whole_image_adds_boxes_and_segments_them(qtbot, annotator):
    viewer, widget, image, tile = annotator
    expected = propose_boxes(None, tile.image, ProposalSettings(foreground="stain"))
    assert len(expected) >= 3
    widget.find_area.value = "whole image"
    widget.find_button.click()
    wait_idle(qtbot, widget)
    got = boxes_of(viewer, widget, image)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):  # placed exactly through scale/translate
        np.testing.assert_allclose(g.as_tuple(), e.as_tuple(), atol=1e-6)
    owners = widget.controller.box_objects()
    assert all(ids for ids in owners), owners  # every proposed box got its object
    labels = widget.controller.labels_layer
    assert len(set(np.unique(labels.data)) - {0}) == len(expected)
    # finding again proposes nothing new: every object already has a label
    widget.find_button.click()
    wait_idle(qtbot, widget)
    assert len(widget.controller.prompts_layer.data) == len(expected)


def test_find_all_in_a_drawn_box_searches_only_there(qtbot, annotator):
    viewer, widget, image, tile = annotator
    prompts = widget.controller.prompts_layer
    draw_box_px(qtbot, viewer, prompts, image, 36, 36, 95, 95)
    prompts.mode = "select"
    click(qtbot, viewer, np.asarray(image.data_to_world((66, 66)))[-2:])
    assert prompts.selected_data == {0}
    widget.find_area.value = "selected box"
    widget.find_button.click()
    wait_idle(qtbot, widget)
    got = boxes_of(viewer, widget, image)
    assert got, "no proposal inside the drawn box"
    # the search box itself is gone; every proposal's centre lies inside it
    for b in got:
        assert 36 <= b.center[0] <= 96 and 36 <= b.center[1] <= 96
        assert not (b.height > 55 and b.width > 55)
    whole = propose_boxes(None, tile.image, ProposalSettings(foreground="stain"))
    assert len(got) <= len(whole)
    assert len(widget.controller.labels_layer.data[widget.controller.labels_layer.data > 0]) > 0


def test_searching_in_the_box_of_an_object_keeps_the_box_and_its_object(qtbot, annotator):
    """A box that already made an object, used as the search area of 'selected box', stays: it
    is the object's prompt (it was deleted, leaving the object without its box). A search box
    without an object is still removed."""
    from qtpy.QtCore import Qt
    from scipy import ndimage

    from tests.gui_helpers import key

    viewer, widget, image, tile = annotator
    prompts = widget.controller.prompts_layer
    rows, cols = ndimage.find_objects(tile.labels)[0]
    draw_box_px(qtbot, viewer, prompts, image, rows.start - 2, cols.start - 2, rows.stop + 2, cols.stop + 2)
    key(qtbot, viewer, "S", Qt.KeyboardModifier.ShiftModifier)  # Segment the newest box
    wait_idle(qtbot, widget)
    assert widget.controller.box_objects() == [[1]]
    before = boxes_of(viewer, widget, image)[0]
    prompts.mode = "select"
    click(qtbot, viewer, np.asarray(image.data_to_world(((rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2)))[-2:])
    assert prompts.selected_data == {0}
    widget.find_area.value = "selected box"
    widget.find_button.click()
    wait_idle(qtbot, widget)
    owners = widget.controller.box_objects()
    assert owners[0] == [1], owners  # the searched box is still the prompt of object 1
    np.testing.assert_allclose(boxes_of(viewer, widget, image)[0].as_tuple(), before.as_tuple())


def test_find_all_in_visible_area_follows_the_camera(qtbot, annotator):
    viewer, widget, image, tile = annotator
    # zoom onto the bottom-right quarter of the image
    centre = np.asarray(image.data_to_world((72, 72)))[-2:]
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = tuple(centre)
    camera.zoom = camera.zoom * 3
    widget.find_area.value = "visible area"
    widget.find_button.click()
    wait_idle(qtbot, widget)
    got = boxes_of(viewer, widget, image)
    whole = propose_boxes(None, tile.image, ProposalSettings(foreground="stain"))
    assert 0 < len(got) < len(whole)
    assert all(b.center[0] > 40 and b.center[1] > 40 for b in got)


def test_find_all_on_a_dask_multiscale_image(make_napari_viewer, model_file, qtbot):
    import dask.array as da

    viewer = make_napari_viewer(show=True)
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegDiff annotator")
    configure(widget, model_file, steps=1, generations=1)
    tile = generate_tile("fluorescence", 96, rng=3, n_nuclei=6, radius_range=(6, 9))
    levels = [da.from_array(tile.image, chunks=32), da.from_array(tile.image[::2, ::2], chunks=32)]
    image = viewer.add_image(levels, multiscale=True, name="cells")
    viewer.reset_view()
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
    widget.find_area.value = "whole image"
    widget.find_button.click()
    wait_idle(qtbot, widget)
    expected = propose_boxes(None, tile.image, ProposalSettings(foreground="stain"))
    got = boxes_of(viewer, widget, image)
    assert [g.as_tuple() for g in got] == [e.as_tuple() for e in expected]  # full resolution, level 0


def test_finding_again_after_cancel_adds_no_second_box_on_an_object(qtbot, annotator):
    """Find all objects, Cancel (Shift-C) while the proposals are segmented, Find all objects
    again: the boxes still waiting are segmented, and no second box is stacked on any object
    (each open box was proposed again, so every one of them was sampled twice)."""
    from qtpy.QtCore import Qt

    from tests.gui_helpers import key

    viewer, widget, image, tile = annotator
    widget.steps.value = 100
    widget.controls["batch_boxes"].value = 1
    widget.find_area.value = "whole image"
    widget.find_button.click()
    found = len(widget.controller.prompts_layer.data)
    assert found >= 3
    labels = lambda: widget.controller.labels_layer  # noqa: E731
    qtbot.waitUntil(lambda: labels() is not None and labels().data.any(), timeout=30_000)
    key(qtbot, viewer, "C", Qt.KeyboardModifier.ShiftModifier)
    wait_idle(qtbot, widget)
    assert [] in widget.controller.box_objects()  # some proposals are still open

    widget.steps.value = 3
    widget.find_button.click()
    wait_idle(qtbot, widget)
    assert len(widget.controller.prompts_layer.data) == found
    owners = widget.controller.box_objects()
    assert all(len(ids) == 1 for ids in owners) and len({ids[0] for ids in owners}) == found


def test_find_all_on_a_float_image_with_missing_pixels(qtbot, make_napari_viewer, model_file):  # noqa: F811
    """A float image with a band of NaN (missing data, e.g. a stitching gap): Find all objects
    must still find the objects elsewhere (it found none, silently)."""
    viewer, widget = docked_annotator(make_napari_viewer, model_file)
    tile = generate_tile("fluorescence", 96, rng=3, n_nuclei=6, radius_range=(6, 9))
    clean = propose_boxes(None, tile.image, ProposalSettings(foreground="stain"))
    image = tile.image.astype(np.float32)
    image[:, :6] = np.nan
    image[90:, :] = np.inf
    layer = viewer.add_image(image, name="cells")
    viewer.reset_view()
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
    widget.find_area.value = "whole image"
    widget.find_button.click()
    wait_idle(qtbot, widget)
    got = boxes_of(viewer, widget, layer)
    away = [b for b in clean if b.x0 > 12 and b.y1 < 84]  # objects clear of the missing pixels
    assert len(away) >= 2
    for e in away:
        assert any(np.allclose(g.as_tuple(), e.as_tuple(), atol=1.0) for g in got), e
    assert all(ids for ids in widget.controller.box_objects())
