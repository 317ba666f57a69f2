"""Learned baselines to compare SegDiff with (the classical Otsu baseline lives in
:mod:`segdiff_core.evaluation.baselines`).

* :mod:`segdiff_core.baselines.unet`: a plain U-Net trained on the same data stream and
  budget as a SegDiff run.
"""
from segdiff_core.baselines.unet import (
    UNET_FORMAT,
    UNet,
    UNetConfig,
    UNetConfigError,
    UNetSegmenter,
    UNetTrainResult,
    bce_dice_loss,
    config_matching_parameters,
    count_parameters,
    load_unet,
    save_unet,
    train_unet,
    unet_method,
)

__all__ = [
    "UNET_FORMAT",
    "UNet",
    "UNetConfig",
    "UNetConfigError",
    "UNetSegmenter",
    "UNetTrainResult",
    "bce_dice_loss",
    "config_matching_parameters",
    "count_parameters",
    "load_unet",
    "save_unet",
    "train_unet",
    "unet_method",
]
