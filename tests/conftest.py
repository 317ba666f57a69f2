"""Shared fixtures. Torch uses one thread: the suite runs small models, and oversubscribed
OpenMP threads (Xvfb, napari and subprocesses share 2 cores) slow it down many times."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _private_settings_folder(tmp_path_factory, monkeypatch):
    """Each test's annotator remembers its settings in its own folder, never the user's."""
    monkeypatch.setenv("NAPARI_SEGDIFF_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    monkeypatch.setenv("NAPARI_SEGDIFF_DATA_DIR", str(tmp_path_factory.mktemp("data")))  # fine-tuned models


def pytest_collection_modifyitems(config, items):
    """Tests that use the whole smoke report (a module fixture of tests/test_report.py, about
    half a minute) are slow; CI still runs them (it does not deselect ``slow``)."""
    for item in items:
        if "smoke" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def saved(tmp_path):
    """(path, model, config) of a small random SegDiff model file (tests/helpers.random_model)."""
    from segdiff_core.checkpoint import save_model
    from tests.helpers import random_model

    model, cfg = random_model()
    path = save_model(tmp_path / "m.pt", model, cfg, {"trained_on": "unit test", "steps": 3})
    return path, model, cfg
