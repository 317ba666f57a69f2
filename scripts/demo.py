#!/usr/bin/env python
"""Open napari with the SegDiff annotator docked and a synthetic sample image ready to annotate.

    python scripts/demo.py                          # interactive demo (fluorescence sample)
    python scripts/demo.py --style he               # H&E sample
    python scripts/demo.py --check                  # open, segment one box, verify, close
    python scripts/demo.py --screenshot shot.png    # segment a few boxes, save the window, quit
    python scripts/demo.py --screenshots docs/images/plugin   # the user guide's screenshots

Headless machines: prefix with ``xvfb-run -a``. The model is the bundled nuclei model when it is
installed, else ``--model PATH``, else a random-weight model of the 'test' preset written to a
temporary folder (the plugin then works end to end, but its masks are meaningless).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def random_test_model(folder: Path) -> Path:
    """A real SegDiff checkpoint ('test' preset) whose zero-initialised output layers get random
    weights, so every part of the plugin runs; its predictions are not meaningful."""
    import torch

    from segdiff_core.checkpoint import save_model
    from segdiff_core.model import SegDiffModel
    from segdiff_core.presets import get_preset

    config = get_preset("test")
    gen = torch.Generator().manual_seed(0)
    model = SegDiffModel(config.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return save_model(folder / "random-test-model.pt", model.eval(), config, {"note": "random weights (demo)"})


def choose_model(requested: str | None, scratch: Path) -> tuple[Path | None, str]:
    """(model file or None for the bundled one, description)."""
    if requested:
        return Path(requested), f"model file {requested}"
    from segdiff_core.bundled import bundled_model_path

    try:
        return None, f"bundled model {bundled_model_path()}"
    except FileNotFoundError:
        path = random_test_model(scratch)
        return path, f"RANDOM-WEIGHT test model {path} (the bundled model is not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", choices=("fluorescence", "he"), default="fluorescence", help="sample image style")
    parser.add_argument("--model", help="SegDiff checkpoint (.pt); default: the bundled model")
    parser.add_argument("--steps", type=int, default=0, help="denoising steps (0 = model default)")
    parser.add_argument("--generations", type=int, default=0, help="ensemble size (0 = model default)")
    parser.add_argument("--boxes", type=int, default=3, help="boxes drawn for --check/--screenshot(s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="segment one box, verify the labels, close")
    mode.add_argument("--screenshot", metavar="PATH", help="segment a few boxes, save a window screenshot, quit")
    mode.add_argument("--screenshots", metavar="DIR", help="write the user guide's screenshots into DIR, quit")
    args = parser.parse_args(argv)

    import napari
    import numpy as np

    from napari_segdiff._screenshots import boxes_around_objects, capture_walkthrough, wait_until

    scratch = Path(tempfile.mkdtemp(prefix="segdiff-demo-"))
    if args.check or args.screenshot or args.screenshots:
        # automated runs start from the default settings and leave the user's saved ones alone
        from napari_segdiff._store import CONFIG_DIR_ENV

        os.environ[CONFIG_DIR_ENV] = str(scratch / "config")
    model_path, model_desc = choose_model(args.model, scratch)
    print(f"[demo] using the {model_desc}")

    viewer = napari.Viewer(title="napari-segdiff demo")
    viewer.window.resize(1500, 950)
    layers = viewer.open_sample("napari-segdiff", args.style)
    image = next(layer for layer in layers if layer._type_string == "image")
    truth = next(layer for layer in layers if layer._type_string == "labels")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-segdiff", "SegDiff annotator")
    widget.image_combo.value = image
    if model_path is not None:
        widget.model_source.value = "file"
        widget.model_file.value = model_path
    if args.steps:
        widget.steps.value = args.steps
    if args.generations:
        widget.generations.value = args.generations
    widget.controller.ensure_prompts_layer()
    widget.reset_choices()

    rects = boxes_around_objects(np.asarray(truth.data), args.boxes)
    if rects:
        lo = np.min([r.min(axis=0) for r in rects], axis=0) - 20
        hi = np.max([r.max(axis=0) for r in rects], axis=0) + 20
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        camera.center = tuple(image.data_to_world((lo + hi) / 2))
        extent = float(np.max((hi - lo) * np.asarray(image.scale)))
        camera.zoom = max(0.5, 380.0 / max(extent, 1.0))

    if args.screenshots:
        wait_until(lambda: viewer.window._qt_window.isVisible(), 30, "the window")
        if not args.steps:
            widget.steps.value = 30  # long enough to catch the live preview half-way
        paths = capture_walkthrough(viewer, widget, args.screenshots, rects)
        for name, path in paths.items():
            print(f"[demo] {name}: {path}")
        viewer.close()
        return 0

    if args.check or args.screenshot:
        boxes = widget.controller.prompts_layer
        boxes.add_rectangles(rects[:1] if args.check else rects)
        widget.segment("newest" if args.check else "all")
        wait_until(lambda: widget.worker is None and not widget.controller.is_running, 600, "the segmentation")
        labels = widget.controller.labels_layer
        n = 0 if labels is None else len(np.unique(labels.data)) - 1
        print(f"[demo] {n} object(s) in the labels layer")
        if args.screenshot:
            viewer.screenshot(args.screenshot, canvas_only=False)
            print(f"[demo] screenshot: {args.screenshot}")
        viewer.close()
        if args.check and n < 1:
            print("[demo] CHECK FAILED: the box produced no label", file=sys.stderr)
            return 1
        return 0

    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
