"""The annotator widget driven as a user would: layers, boxes, buttons, the worker, undo, cancel.

Runs under Xvfb (pytest-xvfb). Models are real 'test' preset checkpoints with random weights,
so results are checked against the library (same seed -> same ensemble) and hand-computed crop
geometry, not against a notion of a correct mask.
"""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.utils.key_bindings import coerce_keybinding
from qtpy.QtCore import QTimer

from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import CropProtocol, paste_back, prompt_crop
from segdiff_core.data.readers.folder import InstancePromptDataset
from segdiff_core.data.synthetic import generate_tile
from segdiff_core.segmenter import Segmenter

from segdiff_core.device import available_devices

from napari_segdiff._layers import map_origin, role_of
from napari_segdiff._settings import AnnotatorSettings
from napari_segdiff._store import SettingsStore
from napari_segdiff._widget import SHORTCUTS, AnnotatorWidget
from tests.conftest_napari import (  # noqa: F401 (fixtures)
    configure,
    full_map,
    messages,
    model_file,
    notes,
    press,
    rect,
    two_channel_model_file,
    wait_idle,
)

pytestmark = pytest.mark.gui

SCALE = (0.5, 2.0)
TRANSLATE = (10.0, -5.0)


@pytest.fixture
def viewer_widget(make_napari_viewer, model_file):
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegDiff annotator")
    configure(widget, model_file)
    return viewer, widget


def fluo_image(size: int = 64, seed: int = 3) -> np.ndarray:
    return generate_tile("fluorescence", size, seed).image


def preview_shown(viewer) -> bool:
    prev = layer_with_role(viewer, "preview")
    return prev is not None and prev.visible


def layer_with_role(viewer, role: str):
    found = [layer for layer in viewer.layers if (role_of(layer) or {}).get("role") == role]
    return found[-1] if found else None


def expected_maps(model_path, image, box: Box, steps: int, generations: int, seed: int = 0):
    """What the library gives for this box: the plugin must show exactly this."""
    seg = Segmenter.from_checkpoint(model_path, device="cpu")
    patch, geom = prompt_crop(image, box, seg.input_size, CropProtocol.expansion(0.15))
    res = seg.segment(patch, seg.inference.replace(steps=steps, generations=generations), seed=seed)
    region, prob = paste_back(res.probability, geom, order=1)
    _, std = paste_back(res.std, geom, order=1)
    _, entropy = paste_back(res.entropy, geom, order=1)
    return region, prob, std, entropy


# ------------------------------------------------------------------------------------------
# one box, exact placement, undo
# ------------------------------------------------------------------------------------------


def _segment_one_box(qtbot, viewer, widget):
    """Open an image with scale/translate, draw one box, segment it; returns the layers."""
    image = fluo_image(64)
    img = viewer.add_image(image, scale=SCALE, translate=TRANSLATE, name="cells")
    assert widget.image_combo.value is img
    widget.draw_button.click()
    boxes = widget.controller.prompts_layer
    assert boxes is not None and boxes.mode == "add_rectangle"
    assert viewer.layers.selection.active is boxes
    # the boxes layer shares the image's transform: its data coordinates are image pixels
    boxes.add_rectangles(rect(20, 30, 40, 50))
    press(qtbot, widget, widget.segment_button)
    prob_layer = layer_with_role(viewer, "probability")
    unc_layer = layer_with_role(viewer, "uncertainty")
    labels = widget.controller.labels_layer
    assert prob_layer is not None and unc_layer is not None and labels is not None
    assert not preview_shown(viewer)  # the live preview is hidden
    return image, prob_layer, unc_layer, labels


def _check_model_defaults_are_shown(widget, model_file) -> None:
    defaults = Segmenter.from_checkpoint(model_file, device="cpu").inference
    assert widget.model_label.text().endswith(
        f"{defaults.steps} steps x {defaults.generations} generations, threshold {defaults.threshold:g} "
        "(used where steps, generations or threshold are 0)")
    assert f"(0 = the model's default, {defaults.generations})" in widget.generations.tooltip
    assert widget.threshold.native.specialValueText() == f"model default ({defaults.threshold:g})"


def _check_maps_equal_the_library_on_the_crop(image, prob_layer, unc_layer, model_file):
    # napari corners 20..40 (pixel centres) = pixel edges 20.5..40.5; 15 % larger crop
    # = 23 px centred on 30.5 -> [19, 42) -> pixels whose centre lies inside: rows 19..41
    region, prob, std, _ = expected_maps(model_file, image, Box(20.5, 30.5, 40.5, 50.5), 3, 2)
    assert region == (slice(19, 42), slice(29, 52))
    prob_map, unc_map = full_map(prob_layer, image.shape), full_map(unc_layer, image.shape)
    np.testing.assert_allclose(prob_map[region], prob, atol=1e-4)
    np.testing.assert_allclose(unc_map[region], std, atol=1e-4)
    outside = np.ones(image.shape, bool)
    outside[region] = False
    assert not prob_map[outside].any() and not unc_map[outside].any()
    # the maps hold the crop rounded out to MAP_BLOCK blocks, within the image (64 x 64 here)
    assert prob_layer.data.shape == (64, 64) and map_origin(prob_layer) == (0, 0)
    return prob_map, outside


def _check_world_extent_is_the_expanded_box(prob_layer, unc_layer, labels) -> None:
    r0, c0 = map_origin(prob_layer)  # the crop is image pixels 19..41 x 29..51
    top_left = np.asarray(prob_layer.data_to_world((19 - r0 - 0.5, 29 - c0 - 0.5)))
    bottom_right = np.asarray(prob_layer.data_to_world((42 - r0 - 0.5, 52 - c0 - 0.5)))
    world_box = np.array([[20 * 0.5 + 10, 30 * 2 - 5], [40 * 0.5 + 10, 50 * 2 - 5]])  # (20, 55)-(30, 95)
    centre, half = world_box.mean(0), (world_box[1] - world_box[0]) * 1.15 / 2
    np.testing.assert_allclose(top_left, centre - half, atol=1e-9)
    np.testing.assert_allclose(bottom_right, centre + half, atol=1e-9)
    for layer in (prob_layer, unc_layer, labels):
        np.testing.assert_allclose(layer.scale, SCALE)
    np.testing.assert_allclose(labels.translate, TRANSLATE)


def _check_label_1_is_the_thresholded_crop(widget, labels, prob_map, outside, notes) -> np.ndarray:
    committed = labels.data == 1
    assert committed.any() and set(np.unique(labels.data)) == {0, 1}
    assert np.all(prob_map[committed] > 0.5)
    assert not committed[outside].any()
    assert widget.controller.box_objects() == [[1]]
    assert "new label(s) 1" in widget.status.text()  # one box: said on the status line
    assert not any("new label" in m for m in messages(notes, "info"))  # no toast over the canvas
    return committed


def _check_undo_and_redo(labels, committed) -> None:
    labels.undo()
    assert not labels.data.any()
    labels.redo()
    assert np.array_equal(labels.data == 1, committed)


def test_segment_box_places_maps_in_world_and_commits_undoable_label(qtbot, viewer_widget, model_file, notes):
    # one segmentation run (the expensive part), then one named check per behaviour, so a
    # failure's traceback says which behaviour broke
    viewer, widget = viewer_widget
    image, prob_layer, unc_layer, labels = _segment_one_box(qtbot, viewer, widget)
    _check_model_defaults_are_shown(widget, model_file)
    prob_map, outside = _check_maps_equal_the_library_on_the_crop(image, prob_layer, unc_layer, model_file)
    _check_world_extent_is_the_expanded_box(prob_layer, unc_layer, labels)
    committed = _check_label_1_is_the_thresholded_crop(widget, labels, prob_map, outside, notes)
    _check_undo_and_redo(labels, committed)


def test_box_in_another_shapes_layer_is_mapped_through_world(qtbot, viewer_widget, model_file):
    viewer, widget = viewer_widget
    image = fluo_image(64)
    viewer.add_image(image, scale=SCALE, translate=TRANSLATE)
    # a Shapes layer with identity transform: its coordinates are world coordinates
    world = viewer.add_shapes(rect(20, 55, 30, 95), shape_type="rectangle", name="my boxes")
    widget.boxes_combo.value = world
    assert widget.controller.prompts_layer is world
    widget.uncertainty.value = "entropy"
    press(qtbot, widget, widget.segment_button)
    prob_layer = layer_with_role(viewer, "probability")
    unc_layer = layer_with_role(viewer, "uncertainty")
    assert role_of(unc_layer)["kind"] == "entropy" and tuple(unc_layer.contrast_limits) == (0.0, 1.0)
    region, prob, _, entropy = expected_maps(model_file, image, Box(20.5, 30.5, 40.5, 50.5), 3, 2)
    np.testing.assert_allclose(full_map(prob_layer, image.shape)[region], prob, atol=1e-4)
    np.testing.assert_allclose(full_map(unc_layer, image.shape)[region], entropy, atol=1e-3)
    assert widget.controller.box_objects(world) == [[1]]


def test_switching_images_switches_their_boxes_and_labels(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    a = viewer.add_image(fluo_image(48, seed=1), name="a")
    b = viewer.add_image(fluo_image(48, seed=2), name="b")
    widget.image_combo.value = a
    widget.draw_button.click()
    boxes_a = widget.controller.prompts_layer
    boxes_a.add_rectangles(rect(10, 10, 30, 30))
    press(qtbot, widget, widget.segment_button)
    labels_a = widget.controller.labels_layer
    snapshot = labels_a.data.copy()

    widget.image_combo.value = b
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
    boxes_b = widget.controller.prompts_layer
    assert boxes_b is not boxes_a and widget.controller.labels_layer is None
    assert widget.boxes_combo.value is boxes_b and widget.labels_combo.value is None
    boxes_b.add_rectangles(rect(20, 20, 40, 40))
    press(qtbot, widget, widget.segment_button)
    labels_b = widget.controller.labels_layer
    assert labels_b is not labels_a and labels_b.data.max() == 1
    assert np.array_equal(labels_a.data, snapshot)

    widget.image_combo.value = a  # back to a: its own layers are adopted again
    assert widget.controller.prompts_layer is boxes_a and widget.controller.labels_layer is labels_a


# ------------------------------------------------------------------------------------------
# several boxes, overwrite, redo a box
# ------------------------------------------------------------------------------------------


def test_segment_all_gives_each_box_a_new_id_and_respects_existing_labels(qtbot, viewer_widget, notes):
    viewer, widget = viewer_widget
    viewer.add_image(fluo_image(64))
    widget.draw_button.click()
    boxes = widget.controller.prompts_layer
    boxes.add_rectangles([rect(4, 4, 20, 20), rect(30, 30, 50, 50), rect(40, 6, 58, 24)])
    widget.threshold.value = 0.01  # every pixel of the crop is "object": predictable masks
    widget.largest_only.value = False

    # an existing annotation inside the second box must survive (overwrite is off)
    widget.segment_button.click()  # newest box only (the third)
    wait_idle(qtbot, widget)
    labels = widget.controller.labels_layer
    assert set(np.unique(labels.data)) == {0, 1}
    assert widget.controller.box_objects() == [[], [], [1]]
    labels.data[35:38, 35:38] = 77
    before = labels.data.copy()

    press(qtbot, widget, widget.segment_all_button)
    assert widget.controller.box_objects() == [[78], [79], [1]]
    assert any("2 of 2 box(es) gave objects" in m for m in messages(notes, "info"))  # several boxes: a toast
    assert np.all(labels.data[35:38, 35:38] == 77)  # not overwritten
    assert np.all(labels.data[before == 1] == 1)  # the first object is untouched
    # box 2: corners 30..50 -> crop rows/cols 29..51; every pixel above the threshold that
    # was free is now object 79
    prob = full_map(layer_with_role(viewer, "probability"), (64, 64))
    crop = (slice(29, 52), slice(29, 52))
    expect = (prob[crop] > 0.01) & (before[crop] == 0)
    assert expect.sum() > 100
    assert np.array_equal(labels.data[crop] == 79, expect)

    # Ctrl+Z removes the objects one box at a time, newest first
    labels.undo()
    assert not np.any(labels.data == 79)
    assert np.any(labels.data == 78)

    # nothing left to do: a message, no run
    labels.redo()
    widget.segment_all_button.click()
    assert widget.worker is None
    assert any("already has a label" in m for m in messages(notes, "info"))


def test_overwrite_and_redoing_a_selected_box(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(fluo_image(64))
    widget.draw_button.click()
    boxes = widget.controller.prompts_layer
    boxes.add_rectangles([rect(10, 10, 30, 30), rect(34, 34, 54, 54)])
    widget.threshold.value = 0.01
    widget.largest_only.value = False
    labels_data = None
    press(qtbot, widget, widget.segment_all_button)
    labels = widget.controller.labels_layer
    labels_data = labels.data.copy()
    assert set(np.unique(labels_data)) == {0, 1, 2}

    # redo the first box with overwrite on: its old object gives way to a new id
    widget.overwrite.value = True
    boxes.selected_data = {0}
    press(qtbot, widget, widget.segment_button)
    assert widget.controller.box_objects() == [[3], [2]]
    assert not np.any(labels.data == 1)
    assert np.any(labels.data == 3)
    labels.undo()  # one undo step restores the old object
    assert np.array_equal(labels.data, labels_data)


# ------------------------------------------------------------------------------------------
# worker: responsiveness, preview, cancel, shortcuts
# ------------------------------------------------------------------------------------------


def test_gui_stays_responsive_and_preview_shows_during_run(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(fluo_image(64))
    widget.steps.value = 40
    widget.generations.value = 4
    widget.preview.value = "x_t"  # the noisy state itself
    widget.draw_button.click()
    widget.controller.prompts_layer.add_rectangles(rect(20, 20, 40, 44))

    ticks_while_running: list[int] = []
    preview_seen: list[float] = []

    def tick() -> None:
        if widget.worker is not None:
            ticks_while_running.append(1)
            prev = layer_with_role(viewer, "preview")
            if prev is not None and prev.visible:
                preview_seen.append(float(prev.data.max()))

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    try:
        press(qtbot, widget, widget.segment_button)
    finally:
        timer.stop()
    assert len(ticks_while_running) >= 5  # the event loop ran while the model was denoising
    assert preview_seen and max(preview_seen) > 0  # the preview layer showed the crop
    assert not preview_shown(viewer)
    # the bar stays full after a finished run (not 0 %)
    assert widget.progress_bar.value() == widget.progress_bar.maximum() > 0 and widget.segment_button.isEnabled()


def test_cancel_stops_within_a_step_and_writes_nothing(qtbot, viewer_widget, notes):
    viewer, widget = viewer_widget
    viewer.add_image(fluo_image(64))
    widget.steps.value = 100
    widget.generations.value = 4
    widget.draw_button.click()
    widget.controller.prompts_layer.add_rectangles(rect(20, 20, 40, 44))
    seen: list[tuple[int, int]] = []
    state = {"cancel_at": None}

    def on_progress(done: int, total: int, _text: str) -> None:
        seen.append((done, total))
        if done >= 3 and state["cancel_at"] is None:
            state["cancel_at"] = done
            widget.cancel_button.click()

    widget.controller.progress_changed.connect(on_progress)
    press(qtbot, widget, widget.segment_button)
    widget.controller.progress_changed.disconnect(on_progress)

    assert state["cancel_at"] is not None
    done_max = max(d for d, t in seen)
    total = max(t for d, t in seen)
    # stopped within a step or two (plus steps already queued for the busy GUI thread)
    assert total == 100 and done_max <= state["cancel_at"] + 3
    labels = widget.controller.labels_layer
    assert not labels.data.any()
    assert widget.controller.box_objects() == [[]]
    assert not preview_shown(viewer)
    assert any("cancelled" in m for m in messages(notes, "info"))
    assert labels.undo() is None and not labels.data.any()


def test_keyboard_shortcuts_run_and_are_removed_with_the_widget(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(fluo_image(48))
    widget.draw_button.click()
    widget.controller.prompts_layer.add_rectangles([rect(5, 5, 20, 20), rect(25, 25, 40, 40)])
    for key in SHORTCUTS.values():
        assert key in widget.segment_button.toolTip() + widget.segment_all_button.toolTip() + widget.cancel_button.toolTip()

    viewer.keymap[coerce_keybinding(SHORTCUTS["segment_all"])](viewer)
    assert widget.worker is not None
    wait_idle(qtbot, widget)
    assert sorted(sum(widget.controller.box_objects(), [])) == [1, 2]

    viewer.window.remove_dock_widget(widget)
    for key in SHORTCUTS.values():
        assert coerce_keybinding(key) not in viewer.keymap


# ------------------------------------------------------------------------------------------
# stacks and RGB
# ------------------------------------------------------------------------------------------


def test_3d_stack_segments_and_writes_only_the_current_slice(qtbot, viewer_widget, model_file):
    viewer, widget = viewer_widget
    stack = np.stack([fluo_image(48, seed=s) for s in range(3)])
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 1)
    widget.draw_button.click()
    boxes = widget.controller.prompts_layer
    assert boxes.ndim == 3
    boxes.add_rectangles(rect(10, 10, 30, 30, z=1))
    widget.threshold.value = 0.01
    press(qtbot, widget, widget.segment_button)

    labels = widget.controller.labels_layer
    assert labels.data.shape == stack.shape
    assert labels.data[1].any() and not labels.data[0].any() and not labels.data[2].any()
    prob = full_map(layer_with_role(viewer, "probability"), stack.shape)
    region, expected, _, _ = expected_maps(model_file, stack[1], Box(10.5, 10.5, 30.5, 30.5), 3, 2)
    np.testing.assert_allclose(prob[1][region], expected, atol=1e-4)
    assert not prob[0].any() and not prob[2].any()


def test_rgb_image(qtbot, viewer_widget, model_file):
    viewer, widget = viewer_widget
    tile = generate_tile("he", 64, 5)
    img = viewer.add_image(tile.image, rgb=True)
    assert img.rgb
    # picking an image makes a boxes layer with the rectangle tool ready, without a click
    qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
    boxes = widget.controller.prompts_layer
    assert boxes.mode == "add_rectangle" and viewer.layers.selection.active is boxes
    assert widget.boxes_combo.value is boxes
    assert boxes.ndim == 2
    boxes.add_rectangles(rect(16, 16, 40, 44))
    press(qtbot, widget, widget.segment_button)
    labels = widget.controller.labels_layer
    assert labels.data.shape == (64, 64)
    prob = full_map(layer_with_role(viewer, "probability"), (64, 64))
    region, expected, _, _ = expected_maps(model_file, tile.image, Box(16.5, 16.5, 40.5, 44.5), 3, 2)
    np.testing.assert_allclose(prob[region], expected, atol=1e-4)


def test_whole_region_windows_label_every_component(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(fluo_image(96))
    widget.protocol.value = "windows"
    widget.threshold.value = 0.6
    widget.draw_button.click()
    boxes = widget.controller.prompts_layer
    boxes.add_rectangles(rect(0, 0, 79, 63))
    steps_seen: list[int] = []
    widget.controller.progress_changed.connect(lambda d, t, _x: steps_seen.append(t))
    press(qtbot, widget, widget.segment_button)
    # pixels whose centres lie in the box: rows 0..78, cols 0..62 -> 3 x 2 windows of 32 px
    assert max(steps_seen) == 6 * 3  # 6 windows x 3 steps
    labels = widget.controller.labels_layer.data
    prob = full_map(layer_with_role(viewer, "probability"), (96, 96))
    assert prob[:79, :63].any() and not prob[79:].any() and not prob[:, 63:].any()
    from scipy import ndimage

    n = ndimage.label(prob[:79, :63] > 0.6)[1]
    assert len(np.unique(labels)) - 1 == n >= 1
    assert len(widget.controller.box_objects()[0]) == n


# ------------------------------------------------------------------------------------------
# bad input: a notification, never a traceback, nothing lost
# ------------------------------------------------------------------------------------------


def _annotated_viewer(viewer, widget, image):
    """Image + an existing annotation to protect; returns the labels layer and a copy."""
    img = viewer.add_image(image)
    widget.draw_button.click()
    labels = viewer.add_labels(np.zeros(image.shape[:2], np.int32), name="mine")
    labels.data[2:6, 2:6] = 5
    widget.labels_combo.value = labels
    widget.controller.activate_prompts()
    return img, labels, labels.data.copy()


def test_no_image_layer(qtbot, viewer_widget, notes):
    viewer, widget = viewer_widget
    widget.segment_button.click()
    assert widget.worker is None
    assert any("no image layer" in m for m in messages(notes, "error"))
    assert len(viewer.layers) == 0


@pytest.mark.parametrize(
    "shape, expected",
    [
        ("ellipse", "needs rectangles"),
        ("outside", "outside the image"),
        ("zero", "zero or negative area"),
    ],
)
def test_bad_box(qtbot, viewer_widget, notes, shape, expected):
    viewer, widget = viewer_widget
    _img, labels, before = _annotated_viewer(viewer, widget, fluo_image(48))
    boxes = widget.controller.prompts_layer
    boxes.add_rectangles(rect(10, 10, 20, 20))
    if shape == "ellipse":
        boxes.add_ellipses(np.array([[30, 30], [5, 5]]))
    elif shape == "outside":
        boxes.add_rectangles(rect(-40, -40, -10, -10))
    else:
        boxes.add_rectangles(rect(10, 10, 10, 30))
    widget.segment_button.click()
    assert widget.worker is None
    assert any(expected in m for m in messages(notes, "error")), notes
    assert np.array_equal(labels.data, before)

    # Segment all skips the bad shape with a warning and still segments the good box
    press(qtbot, widget, widget.segment_all_button)
    assert any(expected in m for m in messages(notes, "warning"))
    assert widget.controller.box_objects()[0] == [6]
    assert np.all(labels.data[2:6, 2:6] == 5)


def test_corrupt_checkpoint(qtbot, viewer_widget, notes, tmp_path):
    viewer, widget = viewer_widget
    _img, labels, before = _annotated_viewer(viewer, widget, fluo_image(48))
    widget.controller.prompts_layer.add_rectangles(rect(10, 10, 30, 30))
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a model")
    widget.model_file.value = bad
    press(qtbot, widget, widget.segment_button)
    errors = messages(notes, "error")
    assert any("broken.pt" in m and "Choose another model file" in m for m in errors), errors
    assert np.array_equal(labels.data, before)
    assert not preview_shown(viewer)
    assert "loading model" not in widget.status.text() and "broken.pt" in widget.status.text()

    # random bytes: "not a model file", never "would run code", never torch's weights_only advice
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    widget.model_file.value = noise
    press(qtbot, widget, widget.segment_button)
    (msg,) = [m for m in messages(notes, "error") if "noise.pt" in m]
    assert "not a segdiff model file" in msg
    assert "run code" not in msg and "weights_only" not in msg and "False" not in msg

    widget.model_file.value = tmp_path / "missing.pt"
    widget.segment_button.click()
    assert widget.worker is None
    assert any("does not exist" in m for m in messages(notes, "error"))


def test_model_channels_do_not_fit_the_image(qtbot, viewer_widget, notes, two_channel_model_file):
    viewer, widget = viewer_widget
    _img, labels, before = _annotated_viewer(viewer, widget, generate_tile("he", 48, 2).image)
    widget.controller.prompts_layer.add_rectangles(rect(10, 10, 30, 30))
    widget.model_file.value = two_channel_model_file
    press(qtbot, widget, widget.segment_button)
    errors = messages(notes, "error")
    assert any("channel" in m and "expects 2" in m for m in errors), errors
    assert np.array_equal(labels.data, before)


def test_labels_layer_of_another_shape(qtbot, viewer_widget, notes):
    viewer, widget = viewer_widget
    viewer.add_image(fluo_image(48))
    widget.draw_button.click()
    widget.controller.prompts_layer.add_rectangles(rect(10, 10, 30, 30))
    other = viewer.add_labels(np.zeros((20, 20), np.int32))
    widget.labels_combo.value = other
    widget.segment_button.click()
    assert widget.worker is None
    assert any("has shape (20, 20)" in m for m in messages(notes, "error"))
    assert not other.data.any()


# ------------------------------------------------------------------------------------------
# export: labels TIFF and training pairs for segdiff-train
# ------------------------------------------------------------------------------------------


def test_export_labels_and_training_pair(qtbot, viewer_widget, tmp_path, notes):
    viewer, widget = viewer_widget
    image = fluo_image(64)
    viewer.add_image(image, name="my cells")
    widget.draw_button.click()
    widget.controller.prompts_layer.add_rectangles([rect(6, 6, 26, 26), rect(34, 34, 56, 56)])
    widget.threshold.value = 0.01
    press(qtbot, widget, widget.segment_all_button)
    labels = widget.controller.labels_layer.data

    widget.labels_file.value = tmp_path / "labels"
    widget.export_labels_button.click()
    saved = tifffile.imread(tmp_path / "labels.tif")
    assert saved.dtype == np.uint8 and np.array_equal(saved, labels)

    widget.training_dir.value = tmp_path / "train"
    widget.export_pair_button.click()
    img_out = tifffile.imread(tmp_path / "train" / "images" / "my_cells.tif")
    mask_out = tifffile.imread(tmp_path / "train" / "masks" / "my_cells.tif")
    assert np.array_equal(img_out, image) and img_out.dtype == image.dtype
    assert np.array_equal(mask_out, labels)
    ds = InstancePromptDataset.from_folder(tmp_path / "train", min_area=1)
    assert len(ds) == 2  # one box prompt per object, as segdiff-train will see them


def test_training_pair_export_keeps_only_accepted_objects(qtbot, viewer_widget, tmp_path, notes):
    from napari_segdiff._review_model import ReviewSession

    viewer, widget = viewer_widget
    viewer.add_image(fluo_image(64), name="cells")
    widget.draw_button.click()
    widget.controller.prompts_layer.add_rectangles([rect(6, 6, 26, 26), rect(34, 34, 56, 56)])
    widget.threshold.value = 0.01
    press(qtbot, widget, widget.segment_all_button)
    labels_layer = widget.controller.labels_layer
    ids = [int(i) for i in np.unique(labels_layer.data) if i]
    assert len(ids) == 2
    widget.training_dir.value = tmp_path / "train"
    widget.export_accepted_only.value = True

    widget.export_pair_button.click()  # nothing reviewed yet: refused, nothing written
    assert any("review" in m for m in messages(notes, "error"))
    assert not (tmp_path / "train" / "masks" / "cells.tif").exists()

    session = ReviewSession(viewer)
    session.labels = labels_layer
    session.accept(ids[1])
    widget.export_pair_button.click()
    mask_out = tifffile.imread(tmp_path / "train" / "masks" / "cells.tif")
    assert np.array_equal(mask_out, np.where(labels_layer.data == ids[1], ids[1], 0))
    assert np.count_nonzero(labels_layer.data == ids[0]) > 0  # the labels layer itself is untouched


def test_export_without_labels_explains(qtbot, viewer_widget, tmp_path, notes):
    viewer, widget = viewer_widget
    viewer.add_image(fluo_image(32))
    widget.training_dir.value = tmp_path
    widget.export_pair_button.click()
    widget.labels_file.value = tmp_path / "x.tif"
    widget.export_labels_button.click()
    errors = messages(notes, "error")
    assert sum("segment" in m for m in errors) == 2
    assert not any(tmp_path.iterdir())


def test_settings_are_remembered_for_the_next_widget_and_can_be_reset(qtbot, make_napari_viewer, model_file, notes):
    viewer = make_napari_viewer()
    first = AnnotatorWidget(viewer)
    configure(first, model_file, steps=7, generations=5, seed=-1)
    first.protocol.value = "custom"
    first.margin.value = 0.35
    first.uncertainty.value = "entropy"
    first.close_annotator()

    second = AnnotatorWidget(viewer)  # a new napari session reads the same file
    s = second.controller.settings
    assert (s.model_source, s.model_path, s.steps, s.generations, s.seed) == ("file", model_file, 7, 5, -1)
    assert (s.protocol, s.margin, s.uncertainty) == ("custom", pytest.approx(0.35), "entropy")
    assert (second.steps.value, second.margin.value, second.model_file.value) == (7, pytest.approx(0.35), model_file)
    assert second.margin.enabled  # the enabled state follows the restored protocol

    second.reset_settings_button.click()
    assert second.controller.settings == AnnotatorSettings() and second.steps.value == 0
    second.close_annotator()
    assert AnnotatorWidget(viewer).controller.settings == AnnotatorSettings()
    assert not messages(notes, "warning")


def test_unusable_saved_settings_warn_and_start_from_defaults(qtbot, make_napari_viewer, notes):
    store = SettingsStore()
    saved = AnnotatorSettings(device="cuda" if "cuda" not in available_devices() else "mps", steps=12)
    assert store.save(saved) is None
    text = store.path.read_text().replace('"steps": 12', '"steps": "twelve"')
    store.path.write_text(text)
    widget = AnnotatorWidget(make_napari_viewer())
    assert widget.controller.settings.device == "auto" and widget.controller.settings.steps == 0
    (warning,) = [m for m in messages(notes, "warning") if "SegDiff" in m]
    assert "steps must be an int" in warning and "device" in warning
    widget.close_annotator()

    store.path.write_text("{ not json")
    widget = AnnotatorWidget(make_napari_viewer())
    assert widget.controller.settings == AnnotatorSettings()
    assert any("unreadable" in m for m in messages(notes, "warning"))
    assert store.path.with_name("annotator.json.bad").read_text() == "{ not json"  # kept, not lost
    widget.close_annotator()


def test_every_setting_control_has_the_validators_range(viewer_widget):
    """One declaration per setting: the widget's ranges and choices are the validator's."""
    from napari_segdiff._settings import SETTINGS, SettingsError

    _viewer, widget = viewer_widget
    assert set(widget.controls) == {st.name for st in SETTINGS}
    for st in SETTINGS:
        control = widget.controls[st.name]
        ok = AnnotatorSettings()
        if st.kind in (int, float):
            assert (control.min, control.max) == (st.lo, st.hi), st.name
            ok.replace(**{st.name: st.kind(control.min)})  # both ends of the widget are valid ...
            ok.replace(**{st.name: st.kind(control.max)})
            below = st.lo - (1 if st.kind is int else 1e-6)
            above = st.hi + (1 if st.kind is int else 1e-6)
            for bad in (below, above):  # ... and just beyond them the validator refuses
                with pytest.raises(SettingsError):
                    ok.replace(**{st.name: st.kind(bad)})
        elif st.choices is not None:
            shown = [v for v in control.choices]
            assert set(shown) <= set(st.values), st.name
            if st.name != "device":  # devices: only those this machine has
                assert tuple(shown) == st.values, st.name
            for value in shown:
                ok.replace(**{st.name: value})
        assert control.tooltip.startswith(st.tooltip), st.name
    assert widget.steps.native.specialValueText().startswith("model default")
    assert widget.generations.native.specialValueText().startswith("model default")
