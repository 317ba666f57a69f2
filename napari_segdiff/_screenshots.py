"""Screenshots of the plugin at work, for the user guide (and the rendering test).

:func:`capture_walkthrough` drives a real viewer with the annotator docked, the way a user would:
boxes are drawn on the image, Segment all is pressed, the run is paused half-way to capture the
live preview, and the probability, uncertainty and committed labels are captured once it ends.
``scripts/demo.py --screenshots docs/images/plugin`` calls it to (re)generate the guide's images.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from segdiff_core.data.boxes import Box

from napari_segdiff._layers import role_of

__all__ = ["SHOTS", "wait_until", "settle", "boxes_around_objects", "capture_walkthrough"]

SHOTS: tuple[str, ...] = ("box", "preview", "probability", "uncertainty", "labels")


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Process Qt events until ``predicate()`` is true; TimeoutError after ``timeout`` s."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.005)
    QApplication.processEvents()


def settle(seconds: float) -> None:
    """Process Qt events for ``seconds`` so deferred layouts and canvas paints catch up."""
    end = time.monotonic() + seconds
    while True:
        QApplication.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.01)


def boxes_around_objects(labels: np.ndarray, count: int, margin: float = 1.0, min_area: int = 60) -> list[np.ndarray]:
    """napari rectangles ((4, 2) vertices, pixel-centre coordinates) around ``count`` objects
    of an instance label image: the largest among the objects nearest the image centre."""
    lab = np.asarray(labels)
    ids, areas = np.unique(lab[lab > 0], return_counts=True)
    h, w = lab.shape
    candidates = []
    for i, a in zip(ids, areas):
        if a < min_area:
            continue
        box = Box.from_mask(lab == i)
        cy, cx = box.center
        candidates.append((np.hypot(cy - h / 2, cx - w / 2), box))
    candidates.sort(key=lambda t: t[0])
    near = candidates[: max(count * 6, count)]  # among the objects near the centre ...
    near.sort(key=lambda t: -(t[1].height * t[1].width))  # ... the largest ones
    rects = []
    for _, b in near[:count]:
        y0, x0 = b.y0 - margin - 0.5, b.x0 - margin - 0.5  # pixel edges -> napari pixel centres
        y1, x1 = b.y1 + margin - 0.5, b.x1 + margin - 0.5
        rects.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]]))
    return rects


def _roles(viewer: Any) -> dict[str, Any]:
    out = {}
    for layer in viewer.layers:
        meta = role_of(layer)
        if meta:
            out[meta["role"]] = layer
    return out


def _show_only(viewer: Any, keep: Sequence[Any]) -> None:
    for layer in viewer.layers:
        meta = role_of(layer)
        if meta is not None and meta["role"] in ("probability", "uncertainty", "labels"):
            layer.visible = layer in keep


def capture_walkthrough(
    viewer: Any,
    widget: Any,
    out_dir: str | Path,
    rects: Sequence[np.ndarray],
    *,
    canvas_only: bool = False,
    timeout: float = 300.0,
    settle_time: float = 0.4,
) -> dict[str, Path]:
    """Draw ``rects`` on the annotator's boxes layer, segment them all and save one PNG per
    :data:`SHOTS` entry in ``out_dir``. The widget's current settings (model, steps, ...) are
    used. Returns ``{shot: path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.png" for name in SHOTS}

    def shot(name: str) -> None:
        settle(settle_time)
        viewer.screenshot(str(paths[name]), canvas_only=canvas_only, flash=False)

    controller = widget.controller
    prompts = controller.ensure_prompts_layer()
    if prompts is None:
        raise RuntimeError("the annotator has no image layer to draw boxes on")
    prompts.add_rectangles(list(rects))
    prompts.selected_data = set()
    prompts.mode = "add_rectangle"
    widget.reset_choices()
    shot("box")

    state: dict[str, Any] = {"paused": False}

    def pause_half_way() -> None:  # polled: progress is only shown once a second
        worker, progress = widget.worker, controller.run_progress
        preview = next((layer for layer in viewer.layers if (role_of(layer) or {}).get("role") == "preview"), None)
        if state["paused"] or worker is None or progress is None or preview is None or not preview.visible:
            return
        done, total = progress
        steps = max(total // max(len(rects), 1), 1)
        if done >= max(steps // 2, 1):
            state["paused"] = True
            worker.pause()

    timer = QTimer()
    timer.timeout.connect(pause_half_way)
    timer.start(5)
    try:
        if widget.segment("all") is None:
            raise RuntimeError("segmentation did not start (see the notifications)")
        wait_until(lambda: state["paused"] or widget.worker is None, timeout, "the live preview")
        if widget.worker is not None:
            wait_until(lambda: widget.worker is None or widget.worker.is_paused, timeout, "the pause")
            shot("preview")
            widget.worker.resume()
        wait_until(lambda: widget.worker is None and not controller.is_running, timeout, "the run to end")
    finally:
        timer.stop()
    if not paths["preview"].exists():
        raise RuntimeError("the run ended before the live preview could be captured; use more steps")

    roles = _roles(viewer)
    _show_only(viewer, [roles.get("probability")])
    shot("probability")
    _show_only(viewer, [roles.get("uncertainty")])
    shot("uncertainty")
    _show_only(viewer, [roles.get("labels")])
    shot("labels")
    _show_only(viewer, [roles.get("labels"), roles.get("probability"), roles.get("uncertainty")])
    return paths
