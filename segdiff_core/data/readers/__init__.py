"""Dataset readers: streams of :class:`Sample` (image, target mask, tight box prompt) for
training and evaluating box-prompted segmentation.

All readers index their files (and, for per-object readers, their objects) at construction and
decode image pixels lazily in ``__getitem__``, with a small cache of recently decoded images.
Problems are reported by file name as :class:`DatasetError` (a ``ValueError``); files without a
counterpart are reported with a :class:`DatasetWarning` (or an error with ``strict=True``), and a
dataset without any usable sample is an error, never an empty run.

Readers
-------
* :class:`FolderDataset` -- ``root/images`` + ``root/masks`` pairs, binary or instance masks.
* :class:`InstancePromptDataset` -- one sample per object of instance label images, in memory
  or on disk (the synthetic generator's ``root/images/*.tif`` + ``root/masks/*.tif``).
* :class:`MoNuSegDataset` -- H&E images + Aperio XML nucleus outlines.
* :class:`CityscapesDataset` -- per-object samples from polygon JSON or instanceIds PNG.
* :class:`VaihingenDataset` -- one building per image (DSAC layout with the reference
  train/test split, or images/ + masks/ folders).

Objects: :func:`central_object` (Vaihingen protocol), :func:`central_component`,
:func:`pick_objects` (the object-picking rule of training and evaluation).

Writing (atomic): :func:`write_tiff`, :func:`write_label_image`, :func:`write_pair` (one
``images/`` + ``masks/`` pair).

Splits: :func:`split_indices`, :func:`split_dataset`, :class:`Subset`.
"""
from segdiff_core.data.readers._base import Dataset, DatasetError, DatasetWarning, Sample
from segdiff_core.data.readers.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_IDS,
    CityscapesDataset,
    rasterise_cityscapes_polygons,
)
from segdiff_core.data.readers._io import LabelsWriteError, labels_dtype, write_label_image, write_tiff
from segdiff_core.data.readers.folder import (
    FolderDataset,
    InstancePromptDataset,
    VaihingenDataset,
    write_pair,
)
from segdiff_core.data.readers.objects import NoObjectError, central_component, central_object, pick_objects
from segdiff_core.data.readers.monuseg import MoNuSegDataset, read_aperio_regions
from segdiff_core.data.readers._raster import rasterise_polygons
from segdiff_core.data.readers.splits import Subset, split_dataset, split_indices

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_IDS",
    "CityscapesDataset",
    "Dataset",
    "DatasetError",
    "DatasetWarning",
    "FolderDataset",
    "InstancePromptDataset",
    "LabelsWriteError",
    "MoNuSegDataset",
    "Sample",
    "Subset",
    "VaihingenDataset",
    "NoObjectError",
    "central_component",
    "central_object",
    "labels_dtype",
    "pick_objects",
    "rasterise_cityscapes_polygons",
    "rasterise_polygons",
    "read_aperio_regions",
    "split_dataset",
    "split_indices",
    "write_label_image",
    "write_pair",
    "write_tiff",
]
