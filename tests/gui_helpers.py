"""Drive the napari canvas like a person: mouse drags in world coordinates, key presses.

Used by the plugin's GUI tests (tests/test_plugin_*.py). Every action goes through Qt events on
the real vispy canvas widget (``viewer.window._qt_viewer.canvas.native``), so napari's own mouse
and key handling (rectangle tool, feature defaults, selection, undo) runs exactly as it does
for a user.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QApplication

__all__ = ["canvas_widget", "world_to_canvas", "drag", "draw_box", "draw_box_px", "click", "key", "undo", "redo"]


def canvas_widget(viewer: Any) -> Any:
    """The Qt widget of the viewer's vispy canvas (receives the mouse events)."""
    return viewer.window._qt_viewer.canvas.native


def world_to_canvas(viewer: Any, world: Sequence[float]) -> QPoint:
    """Canvas pixel (x, y) of a 2D world point ``(row, col)`` of the displayed axes."""
    canvas = viewer.window._qt_viewer.canvas
    view = canvas.view
    transform = view.transform * view.scene.transform
    x, y = transform.map([float(world[-1]), float(world[-2])])[:2]
    return QPoint(int(round(x)), int(round(y)))


def _process() -> None:
    QApplication.processEvents()


def drag(qtbot: Any, viewer: Any, start: Sequence[float], end: Sequence[float], steps: int = 6) -> None:
    """Press the left button at world ``start``, move in ``steps`` moves, release at ``end``."""
    widget = canvas_widget(viewer)
    p0, p1 = world_to_canvas(viewer, start), world_to_canvas(viewer, end)
    qtbot.mouseMove(widget, p0)
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=p0)
    _process()
    for t in np.linspace(0, 1, steps + 1)[1:]:
        p = QPoint(int(round(p0.x() + t * (p1.x() - p0.x()))), int(round(p0.y() + t * (p1.y() - p0.y()))))
        qtbot.mouseMove(widget, p)
        _process()
        qtbot.wait(30)
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=p1)
    _process()


def click(qtbot: Any, viewer: Any, world: Sequence[float], modifier: Any = Qt.KeyboardModifier.NoModifier) -> None:
    """A left click at a world point (e.g. to select a shape in select mode)."""
    widget = canvas_widget(viewer)
    p = world_to_canvas(viewer, world)
    qtbot.mouseMove(widget, p)
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, modifier=modifier, pos=p)
    _process()


def draw_box(qtbot: Any, viewer: Any, shapes: Any, y0: float, x0: float, y1: float, x1: float) -> None:
    """Draw a rectangle on ``shapes`` with the rectangle tool from world (y0, x0) to (y1, x1).

    Makes ``shapes`` the active layer in rectangle mode first, as a person would (R key)."""
    viewer.layers.selection.active = shapes
    if shapes.mode != "add_rectangle":
        shapes.mode = "add_rectangle"
    n = len(shapes.data)
    drag(qtbot, viewer, (y0, x0), (y1, x1))
    qtbot.waitUntil(lambda: len(shapes.data) == n + 1, timeout=5000)


def draw_box_px(qtbot: Any, viewer: Any, shapes: Any, image: Any, y0: float, x0: float, y1: float, x1: float) -> None:
    """:func:`draw_box` with corners given as ``image`` data (pixel) coordinates."""
    w0 = np.asarray(image.data_to_world((y0, x0)))[-2:]
    w1 = np.asarray(image.data_to_world((y1, x1)))[-2:]
    draw_box(qtbot, viewer, shapes, w0[0], w0[1], w1[0], w1[1])


def key(qtbot: Any, viewer: Any, name: str, modifier: Any = Qt.KeyboardModifier.NoModifier) -> None:
    """Press a key (e.g. ``"S"`` with ``Qt.KeyboardModifier.ShiftModifier``) on the canvas."""
    widget = canvas_widget(viewer)
    widget.setFocus()
    code = getattr(Qt.Key, f"Key_{name}")
    qtbot.keyClick(widget, code, modifier)
    _process()


def undo(qtbot: Any, viewer: Any, labels: Any) -> None:
    """Ctrl+Z with the labels layer active (napari's undo of the last labels edit)."""
    viewer.layers.selection.active = labels
    key(qtbot, viewer, "Z", Qt.KeyboardModifier.ControlModifier)


def redo(qtbot: Any, viewer: Any, labels: Any) -> None:
    """Ctrl+Shift+Z with the labels layer active (napari's redo)."""
    viewer.layers.selection.active = labels
    key(qtbot, viewer, "Z", Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
