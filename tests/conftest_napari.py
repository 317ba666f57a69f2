"""Fixtures and helpers shared by the plugin tests (imported explicitly by tests/test_plugin_*.py).

Real components only: model files are real SegDiff checkpoints ('test' preset, random weights)
written to a temporary folder, notifications are captured from napari's notification manager,
and runs go through the widget's real worker thread.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from segdiff_core.checkpoint import save_model
from segdiff_core.config import SegDiffConfig
from segdiff_core.presets import get_preset
from tests.helpers import random_model

RUN_TIMEOUT_MS = 60_000


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-channel, 32x32 'test' preset model file."""
    model, cfg = random_model()
    return save_model(tmp_path_factory.mktemp("models") / "test-model.pt", model, cfg)


@pytest.fixture(scope="session")
def two_channel_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that expects 2-channel images (no RGB or gray image can feed it)."""
    base = get_preset("test")
    cfg = SegDiffConfig(
        model=dataclasses.replace(base.model, in_channels=2),
        diffusion=base.diffusion,
        inference=base.inference,
    )
    model, cfg = random_model(cfg)
    return save_model(tmp_path_factory.mktemp("models2") / "two-channel.pt", model, cfg)


@pytest.fixture
def notes():
    """Every napari notification emitted during the test: list of (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(notification) -> None:
        seen.append((str(notification.severity), str(notification.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def messages(notes: list[tuple[str, str]], severity: str) -> list[str]:
    return [msg for sev, msg in notes if sev == severity]


def configure(widget, model_path: Path, steps: int = 3, generations: int = 2, seed: int = 0, skip_empty: bool = False) -> None:
    """Set the widget's fields as a user would (each change reaches the controller)."""
    widget.model_source.value = "file"
    widget.model_file.value = model_path
    widget.device.value = "cpu"
    widget.steps.value = steps
    widget.generations.value = generations
    widget.seed.value = seed
    widget.skip_empty.value = skip_empty


def docked_annotator(make_napari_viewer, model_path: Path):
    """A visible viewer with the annotator docked and set up for predictable masks: the test
    model at threshold 0.01 (its mask is then the whole crop; 0 would be "model default"),
    every component kept."""
    from napari_segdiff._widget import AnnotatorWidget

    viewer = make_napari_viewer(show=True)
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegDiff annotator")
    configure(widget, model_path)
    widget.threshold.value = 0.01
    widget.largest_only.value = False
    return viewer, widget


def wait_idle(qtbot, widget, timeout: int = RUN_TIMEOUT_MS) -> None:
    qtbot.waitUntil(lambda: widget.worker is None and not widget.controller.is_running, timeout=timeout)


def press(qtbot, widget, button, timeout: int = RUN_TIMEOUT_MS) -> None:
    """Click ``button`` and wait until the run it started (if any) has ended."""
    button.click()
    wait_idle(qtbot, widget, timeout)


def rect(y0: float, x0: float, y1: float, x1: float, z: float | None = None) -> np.ndarray:
    """napari rectangle vertices (pixel-centre coordinates), optionally on slice ``z``."""
    corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
    if z is None:
        return corners
    return np.column_stack([np.full(4, z), corners])


def full_map(layer, shape: tuple[int, ...]) -> np.ndarray:
    """A map layer's values on the whole image grid (its data covers only what was written)."""
    from napari_segdiff._layers import map_origin

    out = np.zeros(shape, dtype=np.float32)
    origin = map_origin(layer)
    if origin is not None:
        out[tuple(slice(o, o + n) for o, n in zip(origin, layer.data.shape))] = layer.data
    return out
