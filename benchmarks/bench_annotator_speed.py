"""Seconds per box prompt in the annotator with a visible viewer, against the library, in one run.

A visible napari viewer (run it under ``xvfb-run -a`` on a machine without a display; the window
size is fixed by ``--window``) with the annotator docked segments ``--prompts`` nuclei of a
synthetic fluorescence tile with the bundled model: each box is drawn, its redraw let finish,
then pressed through the Segment button and timed until the run has ended (labels committed,
window redrawn). The library (same model, settings, seed and torch threads) segments the same
boxes, alternating with the GUI so both see the same machine load, in two ways:
``prompt_crop`` + ``Segmenter.segment`` (the reference the 1.3x target is judged against), and
the GUI's work in library terms (box channel, kept generations, both maps pasted back, the
quality score), for information. Also reports the time from the click to the first window
redraw that shows something of the prompt (preview or result). Reports medians and ratios.

    xvfb-run -a python benchmarks/bench_annotator_speed.py --prompts 12 --markdown docs/benchmarks.md

``--markdown`` writes the numbers into that file's ``bench_annotator_speed`` section, with the
machine load average at the start and the end of the run.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prompt import write_section  # noqa: E402 (the one writer of benchmark doc sections)

BEGIN, END = "<!-- bench_annotator_speed: begin -->", "<!-- bench_annotator_speed: end -->"


def _boxes(labels: np.ndarray, n: int) -> list[tuple[float, float, float, float]]:
    from scipy import ndimage

    areas = np.bincount(labels.ravel())[1:]
    order = [int(i) for i in np.argsort(areas)[::-1] if areas[i] >= 80]
    slices = ndimage.find_objects(labels)
    out = []
    for i in order[:n]:
        r, c = slices[i]
        out.append((r.start - 1.0, c.start - 1.0, float(r.stop), float(c.stop)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--segment-all", type=int, default=0, metavar="N",
                    help="also time Segment all on N boxes: one box at a time against batched (issue 14, item 2)")
    ap.add_argument("--batch", type=int, default=16, help="boxes per batch of the batched Segment all")
    ap.add_argument("--steps", type=int, default=0,
                    help="denoising steps in both the GUI and the library (0: the model's default)")
    ap.add_argument("--rounds", type=int, default=2, help="Segment all rounds per mode (alternating)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="rounds over the same prompts (labels emptied between rounds); medians over all, spread per round")
    ap.add_argument("--window", type=int, nargs=2, default=(1200, 800), metavar=("W", "H"),
                    help="napari window size in pixels (fixed: the canvas size sets the redraw cost)")
    ap.add_argument("--markdown", type=Path, help="write the result into this file's bench_annotator_speed section")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()[0]

    import napari
    import torch
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    from segdiff_core.bundled import bundled_model_path
    from segdiff_core.data.boxes import Box
    from segdiff_core.data.crops import CropProtocol, paste_back, prompt_crop
    from segdiff_core.data.prompt import box_in_crop
    from segdiff_core.data.synthetic import generate_tile
    from segdiff_core.scoring import calibration_for, prompt_box_in_model, score_object
    from segdiff_core.segmenter import Segmenter

    from napari_segdiff._widget import AnnotatorWidget

    tile = generate_tile("fluorescence", args.size, 3)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(*args.window)  # the canvas size sets the cost of every software-GL redraw
    widget = AnnotatorWidget(viewer)  # sets torch's threads once, as in napari
    viewer.window.add_dock_widget(widget, name="SegDiff annotator")
    widget.model_source.value = "bundled"
    widget.device.value = "cpu"
    widget.seed.value = 0
    widget.skip_empty.value = False
    widget.steps.value = args.steps
    image = viewer.add_image(tile.image, name="cells")
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
    boxes_layer = widget.controller.ensure_prompts_layer()
    seg = Segmenter.from_checkpoint(bundled_model_path(), device="cpu")
    calibration = calibration_for(bundled_model_path())[0]
    protocol = CropProtocol.expansion()
    inference = seg.inference.replace(steps=args.steps) if args.steps else seg.inference

    first_paint = _FirstPaint(viewer, widget, app)

    def gui(box) -> tuple[float, float]:
        y0, x0, y1, x1 = box
        boxes_layer.add_rectangles(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]]))
        _settle(app)  # the drawn box is on screen before the click, as when a person draws it
        loop = QEventLoop()
        t = time.perf_counter()
        first_paint.arm(t)
        widget.segment_button.click()  # starts the worker; Qt's event loop runs until it ends
        widget.worker.finished.connect(loop.quit)
        loop.exec()
        app.processEvents()  # the last redraw
        end = time.perf_counter() - t
        _settle(app)
        return end, first_paint.seconds()

    def lib(box) -> float:
        y0, x0, y1, x1 = box
        t = time.perf_counter()
        patch, _ = prompt_crop(tile.image, Box(y0 + 0.5, x0 + 0.5, y1 + 0.5, x1 + 0.5), seg.input_size, protocol)
        seg.segment(patch, inference, seed=0)
        return time.perf_counter() - t

    def lib_same_work(box) -> float:
        """The GUI's work in library terms: the prompt box channel, kept generations, both maps
        pasted back onto the image, the quality score (no drawing, no labels written)."""
        y0, x0, y1, x1 = box
        prompt = Box(y0 + 0.5, x0 + 0.5, y1 + 0.5, x1 + 0.5)
        t = time.perf_counter()
        patch, geom = prompt_crop(tile.image, prompt, seg.input_size, protocol)
        result = seg.segment(patch, inference, seed=0, keep_generations=True, box=box_in_crop(geom, prompt))
        paste_back(result.probability, geom, order=1)
        paste_back(result.uncertainty("std"), geom, order=1)
        score_object(result, box=prompt_box_in_model(geom, prompt), calibration=calibration)
        return time.perf_counter() - t

    boxes = _boxes(tile.labels, args.prompts + 1)
    gui(boxes[0])  # warm-up: loads the model into the annotator's cache, first draw
    lib(boxes[0])
    lib_same_work(boxes[0])
    g, l_, lw, fp, per_round = [], [], [], [], []
    for r in range(args.repeats):
        if r:
            _clear(widget)  # the same boxes again, on empty labels
        rg, rl, rf = [], [], []
        for box in boxes[1:]:
            end, first = gui(box)
            rg.append(end)
            rf.append(first)
            rl.append(lib(box))
            lw.append(lib_same_work(box))
        g += rg
        l_ += rl
        fp += rf
        per_round.append((statistics.median(rg), statistics.median(rl), statistics.median(rf)))
    n_objects = len(np.unique(widget.controller.labels_layer.data)) - 1
    redraw = _idle_redraw(viewer, app)
    recolour = _idle_redraw(viewer, app, widget.controller.prompts_layer)
    throughput = _segment_all(widget, app, tile, args) if args.segment_all else []
    renderer = _renderer(viewer)
    window, canvas = _sizes(viewer)
    viewer.close()
    gm, lm, lwm, fpm = (statistics.median(v) for v in (g, l_, lw, fp))
    load_end = os.getloadavg()[0]
    lines = [
        f"torch threads {torch.get_num_threads()}, {args.prompts} prompts x {args.repeats} round(s), "
        f"image {image.data.shape}, "
        f"OpenGL {renderer}, window {window}, canvas {canvas}, "
        f"load average {load_start:.1f} at the start, {load_end:.1f} at the end",
        f"GUI (visible viewer)         : median {gm:.3f} s  (min {min(g):.3f}, max {max(g):.3f})",
        f"library (prompt_crop+segment): median {lm:.3f} s  (min {min(l_):.3f}, max {max(l_):.3f})",
        f"library, the GUI's work      : median {lwm:.3f} s  (min {min(lw):.3f}, max {max(lw):.3f})",
        f"GUI / library = {gm / lm:.2f}   (target <= 1.3; GUI / library with the GUI's work = {gm / lwm:.2f}; "
        f"{n_objects} objects in the labels at the end)",
        f"click -> first canvas paint showing the prompt (preview or result): median {fpm:.3f} s "
        f"(min {min(fp):.3f}, max {max(fp):.3f}; target <= 0.1)",
        *[f"  round {k + 1}: GUI {a:.3f} s, library {b:.3f} s, GUI / library {a / b:.2f}, first paint {c:.3f} s"
          for k, (a, b, c) in enumerate(per_round)],
        f"one window redraw with nothing new (canvas update, same layers and window): median {redraw:.3f} s; "
        f"library + one redraw = {lm + redraw:.3f} s, so the lowest GUI / library a box can reach here "
        f"(its result needs one redraw after the network) is {(lm + redraw) / lm:.2f}",
        f"the same redraw after one box changes colour: median {recolour:.3f} s (vispy relinks the "
        "Shapes layer's shader program on every colour change: vispy issue #2568)",
        f"GUI / library over the {len(per_round)} round(s): "
        f"{min(a / b for a, b, _ in per_round):.2f} - {max(a / b for a, b, _ in per_round):.2f}",
        f"verdict in this run: GUI / library <= 1.3 {'met' if gm / lm <= 1.3 else 'NOT met'}; "
        f"first canvas paint <= 0.1 s {'met' if fpm <= 0.1 else 'NOT met'}",
        *throughput,
    ]
    print("\n".join(lines))
    if args.markdown:
        begin, end = _markers(args)
        write_section(args.markdown, _markdown(args, lines, seg, begin, end), begin, end)
    return 0


def _segment_all(widget, app, tile, args: argparse.Namespace) -> list[str]:
    """Seconds for Segment all on ``args.segment_all`` boxes, one at a time vs batched, alternating.

    Each round starts from the same boxes with every label erased (so every box is open again)
    and runs until the worker has ended and the window is redrawn."""
    from qtpy.QtCore import QEventLoop

    viewer = widget.viewer
    boxes = _boxes(tile.labels, args.segment_all)
    if len(boxes) < args.segment_all:
        raise SystemExit(f"the tile has only {len(boxes)} objects of >= 80 px; use a larger --size")
    prompts = widget.controller.prompts_layer
    prompts.selected_data = set(range(len(prompts.data)))
    prompts.remove_selected()
    prompts.add_rectangles([np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]]) for y0, x0, y1, x1 in boxes])
    labels = widget.controller.labels_layer
    times: dict[int, list[float]] = {1: [], args.batch: []}
    counts: dict[int, list[int]] = {1: [], args.batch: []}
    for _ in range(args.rounds):
        for batch in (1, args.batch):
            labels.data = np.zeros_like(labels.data)  # every box is open again
            widget.batch_boxes.value = batch
            app.processEvents()
            loop = QEventLoop()
            t = time.perf_counter()
            widget.segment_all_button.click()
            widget.worker.finished.connect(loop.quit)
            loop.exec()
            app.processEvents()
            times[batch].append(time.perf_counter() - t)
            counts[batch].append(len(np.unique(labels.data)) - 1)
    one, many = statistics.median(times[1]), statistics.median(times[args.batch])
    n = len(boxes)
    lib_one, lib_many = _library_batches(tile, boxes, args.batch)
    return [
        f"Segment all, {n} boxes, {args.rounds} round(s) per mode (alternating), median seconds:",
        f"  one box at a time : {one:.2f} s = {n / one:.2f} objects/s  (rounds {', '.join(f'{t:.2f}' for t in times[1])}; objects {counts[1]})",
        f"  batches of {args.batch:<6d}: {many:.2f} s = {n / many:.2f} objects/s  (rounds {', '.join(f'{t:.2f}' for t in times[args.batch])}; objects {counts[args.batch]})",
        f"  batched / one at a time throughput = {one / many:.2f}x (target >= 3x)",
        f"library, same {n} boxes, same torch threads: one at a time {lib_one:.2f} s, segment_batch "
        f"({args.batch} per batch) {lib_many:.2f} s: {lib_one / lib_many:.2f}x",
    ]


def _library_batches(tile, boxes, batch: int) -> tuple[float, float]:
    """Seconds of ``Segmenter.segment`` on each box against ``segment_batch``: how much the
    network itself gains from batches on this machine."""
    from segdiff_core.bundled import bundled_model_path
    from segdiff_core.data.boxes import Box
    from segdiff_core.data.crops import CropProtocol, prompt_crop
    from segdiff_core.segmenter import Segmenter

    seg = Segmenter.from_checkpoint(bundled_model_path(), device="cpu")
    patches = [
        prompt_crop(tile.image, Box(y0 + 0.5, x0 + 0.5, y1 + 0.5, x1 + 0.5), seg.input_size, CropProtocol.expansion())[0]
        for y0, x0, y1, x1 in boxes
    ]
    t = time.perf_counter()
    for p in patches:
        seg.segment(p, seed=0)
    one = time.perf_counter() - t
    t = time.perf_counter()
    seg.segment_batch(patches, seed=0, batch_images=batch)
    return one, time.perf_counter() - t


def _idle_redraw(viewer, app, boxes=None, n: int = 15) -> float:
    """Median seconds of one window redraw that shows nothing new: the canvas is asked to
    redraw and Qt runs until the window is composited (the floor any box's result pays).
    With ``boxes`` (a Shapes layer), the first box's edge colour changes before each redraw."""
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    times = []
    for k in range(n):
        _settle(app, 0.1)
        colours = None
        if boxes is not None:
            colours = np.array(boxes.edge_color, copy=True)
            colours[0, :3] = (k % 2, 1.0, 0.5)
        t = time.perf_counter()
        if colours is not None:
            boxes.edge_color = colours
        canvas.update()
        app.processEvents()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _clear(widget) -> None:
    """Remove every box and empty the labels (outside the timed part), for another round."""
    from qtpy.QtWidgets import QApplication

    prompts, labels = widget.controller.prompts_layer, widget.controller.labels_layer
    prompts.selected_data = set(range(len(prompts.data)))
    prompts.remove_selected()
    labels.data = np.zeros_like(labels.data)
    _settle(QApplication.instance(), 0.5)


def _settle(app, seconds: float = 0.15) -> None:
    """Let Qt finish every pending redraw (timers included) before the next measurement."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


class _FirstPaint:
    """Seconds from a click to the end of the first window redraw whose canvas shows something
    of the prompt: the first canvas draw after the labels layer was painted (the result) or the
    live preview layer got data, timed when Qt has finished that redraw (a zero timer queued
    during the canvas draw runs once the window's composite has returned)."""

    def __init__(self, viewer, widget, app) -> None:
        from qtpy.QtCore import QTimer

        self._timer = QTimer
        self._t0 = 0.0
        self._shown = False
        self._done: float | None = None
        self._widget = widget
        self._watched: set[int] = set()
        viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(self._on_draw, position="last")

    def arm(self, t0: float) -> None:
        self._t0, self._shown, self._done = t0, False, None
        c = self._widget.controller
        from napari_segdiff._layers import role_of

        for layer in c.viewer.layers:  # the labels layer and the live preview layer
            role = (role_of(layer) or {}).get("role")
            if id(layer) not in self._watched and role in ("labels", "preview"):
                self._watched.add(id(layer))
                ev = layer.events.paint if role == "labels" else layer.events.set_data
                ev.connect(self._on_shown)

    def _on_shown(self, *_) -> None:
        self._shown = True

    def _on_draw(self, *_) -> None:
        if self._shown and self._done is None:
            self._done = -1.0
            self._timer.singleShot(0, self._record)

    def _record(self) -> None:
        self._done = time.perf_counter() - self._t0

    def seconds(self) -> float:
        return self._done if self._done is not None and self._done > 0 else float("nan")


def _sizes(viewer) -> tuple[str, str]:
    """The window and canvas sizes (pixels) the redraws covered."""
    win = viewer.window._qt_window.size()
    w, h = viewer.window._qt_viewer.canvas._scene_canvas.size
    return f"{win.width()}x{win.height()}", f"{w}x{h}"


def _renderer(viewer) -> str:
    """The OpenGL renderer drawing the canvas (e.g. llvmpipe: software rendering)."""
    try:
        from vispy.gloo import gl

        viewer.window._qt_viewer.canvas._scene_canvas.set_current()
        return gl.glGetParameter(gl.GL_RENDERER)
    except Exception as exc:  # only a label for the report
        return f"unknown ({type(exc).__name__})"


def _markers(args: argparse.Namespace) -> tuple[str, str]:
    """The section markers: one section at the model's default steps, one per ``--steps``."""
    if not args.steps:
        return BEGIN, END
    return (BEGIN.replace(":", f" steps={args.steps}:"), END.replace(":", f" steps={args.steps}:"))


def _markdown(args: argparse.Namespace, lines: list[str], seg, begin: str, end: str) -> str:
    inf = seg.inference.replace(steps=args.steps) if args.steps else seg.inference
    title = f", {args.steps} denoising steps" if args.steps else ""
    return "\n".join([
        begin, "",
        f"## Seconds per box in the annotator, against the library (issue 10, fault 7){title}", "",
        f"Written by `xvfb-run -a python benchmarks/bench_annotator_speed.py --prompts {args.prompts} "
        f"--repeats {args.repeats} "
        + (f"--steps {args.steps} " if args.steps else "")
        + (f"--segment-all {args.segment_all} --batch {args.batch} --rounds {args.rounds} " if args.segment_all else "")
        + "--markdown docs/benchmarks.md` (one process; the prompts are segmented again in each round, "
        "the medians are over all rounds, and each round's medians show the spread). A visible "
        f"napari viewer ({args.window[0]} x {args.window[1]} px window, fixed: on a software-rendered "
        "screen every redraw costs in proportion to the pixels of the window and the canvas) with the "
        f"annotator docked segments {args.prompts} boxes of a {args.size} px synthetic fluorescence "
        "tile one at a time through the Segment button, each box drawn and its redraw finished before "
        "the click, timed from the click until the run has ended and the window is redrawn (the "
        "probability and uncertainty layers as the annotator leaves them: hidden). Alternating with the "
        "GUI, the library segments the same boxes with the same model, seed and torch threads in two "
        "ways: `prompt_crop` + `Segmenter.segment` (the **reference row**: the 1.3x target is judged "
        "against it), and the GUI's work in library terms (the prompt-box channel, kept generations, "
        "both maps pasted back, the quality score), shown for information only. *First canvas paint*: "
        "from the click to the end of the first window redraw whose canvas shows something of the "
        "prompt (its live preview or its result; issue 11 item 6 asks for <= 0.1 s). What the GUI "
        "adds per box on top of the library: the worker thread's hand-over, the commit on the GUI thread "
        "(labels written inside `block_history`, object record, box colour) and one redraw of the window "
        "(one canvas paint in software OpenGL and one composite of the whole window, which Qt 6 does "
        "through OpenGL whenever any widget of a window holding the canvas changes; the status line, "
        "progress bar, box colour and napari's layer list are drawn in that same redraw). With one "
        "denoising step that redraw cannot overlap the sampling, so it adds to every box; with more steps "
        "it is a smaller share. The *one window redraw with nothing new* line times that redraw alone "
        "(the canvas asked to redraw, the same layers and window): the library plus that redraw is the "
        "least a box can take in the GUI on this screen, whatever the plugin does. "
        f"Sampler {inf.sampler.upper()} {inf.steps} step(s) x "
        f"{inf.generations} generations; {platform.machine()}, {os.cpu_count()} cores shared with other "
        "work (absolute times move with the load; the ratio compares both in the same run). "
        "Target: GUI / library <= 1.3." + (
            f" Segment all (issue 14, item 2): {args.segment_all} boxes through the Segment all button, one box "
            f"at a time (boxes per batch 1) against batches of {args.batch}, alternating; target >= 3x the "
            "objects per second. The last line times the network alone, in the library, both ways."
            if args.segment_all else ""), "",
        "```", *lines, "```", "", end,
    ])


if __name__ == "__main__":
    raise SystemExit(main())
