"""A seeded random sequence of what a person does in the annotator, checked after every step.

Boxes are dragged with the mouse, Segment / Segment all / Cancel are pressed with their shortcuts,
undo and redo are Ctrl+Z / Ctrl+Shift+Z, boxes are selected by clicking and deleted with the
Delete key, objects are erased with the fill tool (label 0). Invariant: no object disappears or
changes unless the step was an explicit replace (redo a selected box), an undo, or an erase of
that object; a redo right after an undo restores the labels exactly; every box's recorded objects
are present in the labels.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from qtpy.QtCore import Qt

from segdiff_core.data.synthetic import generate_tile

from napari_segdiff._widget import AnnotatorWidget
from tests.conftest_napari import configure, model_file, wait_idle  # noqa: F401 (fixtures)
from tests.gui_helpers import click, draw_box_px, key, redo, undo

pytestmark = [pytest.mark.gui, pytest.mark.slow]

N_STEPS = int(os.environ.get("SEGDIFF_RANDOM_STEPS", "200"))
SIZE = 96
ACTIONS = ("draw", "segment", "segment_all", "redo_box", "undo", "redo", "cancel", "delete_box", "erase")
WEIGHTS = (0.24, 0.16, 0.08, 0.08, 0.14, 0.08, 0.06, 0.08, 0.08)


def _objects(data: np.ndarray) -> dict[int, np.ndarray]:
    return {int(i): data == i for i in np.unique(data) if i != 0}


class Session:
    """The viewer, the widget and the expectations of one random session."""

    def __init__(self, qtbot, viewer, widget, rng):
        self.qtbot, self.viewer, self.widget, self.rng = qtbot, viewer, widget, rng
        self.image = viewer.add_image(generate_tile("fluorescence", SIZE, 7).image, name="cells")
        viewer.reset_view()
        qtbot.waitUntil(lambda: widget.controller.prompts_layer is not None, timeout=5000)
        self.boxes = widget.controller.prompts_layer
        self.undone: list[np.ndarray] = []  # labels before each undo that redo can bring back

    @property
    def labels(self):
        return self.widget.controller.labels_layer

    def snapshot(self) -> np.ndarray:
        return np.zeros((SIZE, SIZE), np.int32) if self.labels is None else np.array(self.labels.data, copy=True)

    def _press(self, letter: str) -> None:
        key(self.qtbot, self.viewer, letter, Qt.KeyboardModifier.ShiftModifier)
        wait_idle(self.qtbot, self.widget)

    def _select_box(self) -> int | None:
        n = len(self.boxes.data)
        if n == 0:
            return None
        i = int(self.rng.integers(n))
        centre = np.asarray(self.boxes.data[i]).mean(axis=0)
        self.viewer.layers.selection.active = self.boxes
        self.boxes.mode = "select"
        self.boxes.selected_data = set()
        click(self.qtbot, self.viewer, self.boxes.data_to_world(centre))
        sel = sorted(self.boxes.selected_data)
        return sel[0] if len(sel) == 1 else None

    def step(self, action: str) -> tuple[str, set[int]]:
        """Do ``action``; return what it was and the ids it may remove."""
        if action == "draw":
            y, x = self.rng.uniform(0, SIZE - 14, 2)
            h, w = self.rng.uniform(8, 30, 2)
            draw_box_px(self.qtbot, self.viewer, self.boxes, self.image, y, x, min(y + h, SIZE - 1), min(x + w, SIZE - 1))
            return action, set()
        if action == "segment":
            self.boxes.selected_data = set()
            self._press("S")
            return action, set()
        if action == "segment_all":
            self._press("G")
            return action, set()
        if action == "redo_box":
            i = self._select_box()
            if i is None:
                return "nothing", set()
            allowed = set(self.widget.controller.box_objects()[i])
            self._press("S")
            self.boxes.selected_data = set()
            return action, allowed
        if action == "cancel":
            self.boxes.selected_data = set()
            key(self.qtbot, self.viewer, "G", Qt.KeyboardModifier.ShiftModifier)
            key(self.qtbot, self.viewer, "C", Qt.KeyboardModifier.ShiftModifier)
            wait_idle(self.qtbot, self.widget)
            return action, set()
        if action == "delete_box":
            if self._select_box() is None:
                return "nothing", set()
            n = len(self.boxes.data)
            key(self.qtbot, self.viewer, "Delete")
            assert len(self.boxes.data) == n - 1  # the Delete key removed the selected box
            return action, set()
        if action == "erase":
            return self._erase()
        labels = self.labels
        if labels is None:
            return "nothing", set()
        if action == "undo":
            undo(self.qtbot, self.viewer, labels)
        else:
            redo(self.qtbot, self.viewer, labels)
        return action, set()

    def _erase(self) -> tuple[str, set[int]]:
        labels = self.labels
        if labels is None or not labels.data.any():
            return "nothing", set()
        rr, cc = np.nonzero(labels.data)
        k = int(self.rng.integers(len(rr)))
        target = int(labels.data[rr[k], cc[k]])
        self.viewer.layers.selection.active = labels
        labels.mode = "fill"
        labels.selected_label = 0
        click(self.qtbot, self.viewer, labels.data_to_world((rr[k], cc[k])))
        labels.mode = "pan_zoom"
        return "erase", {target}


def _check(session: Session, action: str, allowed: set[int], before: np.ndarray, after: np.ndarray, n: int) -> None:
    where = f"step {n} ({action})"
    changed = not np.array_equal(before, after)
    if action == "undo":
        if changed:  # redo must bring this state back
            session.undone.append(before)
        return
    if action == "redo":
        if changed:
            assert session.undone, f"{where}: redo changed the labels with nothing undone"
            assert np.array_equal(after, session.undone.pop()), f"{where}: redo did not restore the labels"
        return
    if changed:
        session.undone.clear()  # a new edit: napari drops the redo history
    if action == "nothing":
        return
    old, new = _objects(before), _objects(after)
    for label_id, pixels in old.items():
        if label_id in allowed:
            continue
        assert label_id in new, f"{where}: object {label_id} disappeared"
        assert np.array_equal(new[label_id], pixels), f"{where}: object {label_id} changed"
    if action == "erase":
        diff = before != after
        assert np.all(after[diff] == 0) and np.all(np.isin(before[diff], list(allowed))), where
    present = set(new)
    for i, ids in enumerate(session.widget.controller.box_objects()):
        assert set(ids) <= present, f"{where}: box {i} claims objects {ids} that are not there"


def test_random_session_never_loses_an_object(qtbot, make_napari_viewer, model_file):
    viewer = make_napari_viewer(show=True)
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegDiff annotator")
    configure(widget, model_file, steps=2, generations=1, seed=0)
    widget.threshold.value = 0.3
    widget.largest_only.value = False
    rng = np.random.default_rng(20261130)
    session = Session(qtbot, viewer, widget, rng)
    counts: dict[str, int] = {}
    for n in range(N_STEPS):
        action = str(rng.choice(ACTIONS, p=WEIGHTS))
        before = session.snapshot()
        done, allowed = session.step(action)
        after = session.snapshot()
        _check(session, done, allowed, before, after, n)
        counts[done] = counts.get(done, 0) + 1
        assert not widget.controller.is_running and widget.segment_button.isEnabled()
    # the sequence really exercised the annotator (about 16 % segment, 14 % undo, 8 % erase)
    assert counts.get("segment", 0) + counts.get("segment_all", 0) > N_STEPS // 8, counts
    assert counts.get("undo", 0) > N_STEPS // 14 and counts.get("erase", 0) > N_STEPS // 30, counts
    assert session.labels is not None and len(_objects(session.labels.data)) > 0
