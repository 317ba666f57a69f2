"""Shared fixtures. Torch uses one thread: the suite runs small models, and oversubscribed
OpenMP threads (Xvfb, napari and subprocesses share 2 cores) slow it down many times.

Under pytest-xdist (``scripts/test.sh`` runs ``-n 2 --dist loadfile``: a file's tests, and so its
module fixtures, stay on one worker) every worker process and the processes its tests start use
one thread, and napari keeps its settings in a folder of its own per worker.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, subprocesses too
    os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "NAPARI_CONFIG" not in os.environ:  # napari's settings file: never the user's, never another worker's
    _napari_dir = tempfile.mkdtemp(prefix="segdiff-tests-napari-")
    atexit.register(shutil.rmtree, _napari_dir, True)
    os.environ["NAPARI_CONFIG"] = os.path.join(_napari_dir, "settings.yaml")


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
