"""segdiff_core: SegDiff (Amit et al.) models, diffusion, data, metrics and training.

Pure PyTorch/NumPy; never imports Qt or napari.
"""
__version__ = "0.1.0"
