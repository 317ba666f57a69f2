"""napari-segdiff: box-prompted SegDiff (diffusion-model) segmentation for napari.

The napari side of the project: a dock widget (:class:`AnnotatorWidget`) over a Qt-free
controller (:class:`AnnotatorController`), synthetic sample data and a labels TIFF writer, all
declared in the package's ``napari.yaml``. The model, crops and sampling live in
``segdiff_core``; nothing here re-implements them.

Importing this package is cheap: the widget and controller load on first access.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["AnnotatorWidget", "AnnotatorController", "AnnotatorSettings", "__version__"]

_LAZY = {
    "AnnotatorWidget": "napari_segdiff._widget",
    "AnnotatorController": "napari_segdiff._controller",
    "AnnotatorSettings": "napari_segdiff._settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_segdiff' has no attribute {name!r}")
