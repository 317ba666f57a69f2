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
