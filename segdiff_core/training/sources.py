"""From a DataConfig to training / validation sample sources (one place for every caller)."""
from __future__ import annotations

from typing import Any

from segdiff_core.training.config import DataConfig
from segdiff_core.training.data import DatasetSource, SampleSource, SyntheticSource


def open_dataset(data: DataConfig) -> Any:
    """The reader for ``data.source`` (lazy: images are decoded per sample)."""
    from segdiff_core.data import readers

    mode = "instances" if data.task == "prompt" else "binary"
    if data.source == "folder":
        return readers.FolderDataset(data.root, mode="auto" if data.task == "prompt" else "binary", min_area=data.min_area)
    if data.source == "instances":
        if data.task == "semantic":
            return readers.FolderDataset(data.root, mode="binary", min_area=data.min_area)
        return readers.InstancePromptDataset.from_folder(data.root, min_area=data.min_area)
    if data.source == "monuseg":
        return readers.MoNuSegDataset(data.root, mode=mode, min_area=data.min_area)
    if data.source == "cityscapes":
        return readers.CityscapesDataset(data.root, split=data.split, min_area=data.min_area)
    if data.source == "vaihingen":
        return readers.VaihingenDataset(data.root, split=data.split, min_area=data.min_area)  # type: ignore[arg-type]
    raise ValueError(f"data.source {data.source!r} has no dataset reader")


def build_sources(data: DataConfig) -> tuple[SampleSource, SampleSource, str]:
    """(train source, validation source, a one-line description of the data)."""
    if data.source == "synthetic":
        make = lambda: SyntheticSource(tuple(data.styles), data.tile_size, data.objects_per_tile, data.min_area, data.task)
        return make(), make(), f"synthetic nuclei ({', '.join(data.styles)}), {data.tile_size}px tiles, {data.task}"
    from segdiff_core.data import readers

    dataset = open_dataset(data)
    train, val = readers.split_dataset(dataset, data.val_fraction, data.val_seed, group_by_image=True)
    if len(val) == 0:  # val_fraction 0: validate on training samples
        val = train
    desc = f"{data.source} dataset at {data.root} ({len(train)} train / {len(val)} validation samples, {data.task})"
    return (
        DatasetSource(train, range(len(train)), data.task),
        DatasetSource(val, range(len(val)), data.task),
        desc,
    )
