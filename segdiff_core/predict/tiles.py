"""Tile-by-tile prediction of one image (any size): the tasks ``segdiff-predict`` runs.

An image is cut into core tiles of ``tile`` x ``tile`` pixels. A task reads its core plus a
``halo`` of context on every side (only that region is read from disk), finds or segments the
objects there, and keeps an object only if it *belongs* to the core: in automatic mode its
centroid lies in the core, with prompts the prompt box's centre does. An object on a seam is
therefore segmented whole, from the tile that owns it, and exactly once. The halo must be larger
than an object plus its crop margin; objects touching the outer edge of the read region are
reported in the ``cut`` counter of the result.

Every task carries its own seed, derived from the run's seed and the tile's index, so a tile's
result does not depend on which process runs it or in which order: a 2-worker dask cluster
gives the same output as a single process.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from segdiff_core.data.boxes import Box
from segdiff_core.proposals import InstanceResult, ObjectRecord, ProposalSettings, find_objects, segment_prompts

__all__ = ["TileTask", "ObjectPiece", "TileResult", "plan_tiles", "run_tile", "load_segmenter"]

SEED_STRIDE = 1_000_003
"""Seed offset between consecutive tiles (larger than any number of batches in a tile)."""


@dataclass(frozen=True)
class TileTask:
    """Everything a worker needs to process one tile (picklable, no pixel data)."""

    index: int
    image_path: str
    core: tuple[int, int, int, int]  # (r0, c0, r1, c1) rows/cols owned by this tile
    read: tuple[int, int, int, int]  # region read from disk (core + halo, clipped)
    image_shape: tuple[int, int]
    model_path: str
    device: str
    settings: ProposalSettings
    inference: dict[str, Any]
    boxes: tuple[tuple[float, float, float, float], ...] | None = None  # None: automatic


@dataclass(frozen=True)
class ObjectPiece:
    """One object's maps over its bounding box, in image coordinates."""

    bbox: tuple[int, int, int, int]  # (r0, c0, r1, c1)
    mask: np.ndarray
    probability: np.ndarray
    uncertainty: np.ndarray
    record: ObjectRecord


@dataclass
class TileResult:
    index: int
    pieces: list[ObjectPiece] = field(default_factory=list)
    cut: int = 0


def _axis_starts(length: int, tile: int) -> list[int]:
    return list(range(0, length, tile))


def plan_tiles(
    shape: tuple[int, int], tile: int, halo: int, boxes: Sequence[Box] | None = None
) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int], tuple[Box, ...] | None]]:
    """Cut an image of ``shape`` into ``(core, read, boxes)`` triples.

    With prompts, each box goes to the tile holding its centre, and the read region grows to
    hold every crop of its boxes; tiles without boxes are left out.
    """
    h, w = shape
    out = []
    for r0 in _axis_starts(h, tile):
        for c0 in _axis_starts(w, tile):
            core = (r0, c0, min(h, r0 + tile), min(w, c0 + tile))
            read = (max(0, r0 - halo), max(0, c0 - halo), min(h, core[2] + halo), min(w, core[3] + halo))
            if boxes is None:
                out.append((core, read, None))
                continue
            mine = tuple(b for b in boxes if _owns(core, b.center, shape))
            if mine:
                out.append((core, _grow(read, mine, shape), mine))
    return out


def _owns(core: tuple[int, int, int, int], point: tuple[float, float], shape: tuple[int, int]) -> bool:
    """True if ``point`` (y, x) lies in ``core`` (points outside the image go to the edge tile)."""
    y = min(max(point[0], 0.0), shape[0] - 1e-6)
    x = min(max(point[1], 0.0), shape[1] - 1e-6)
    return core[0] <= y < core[2] and core[1] <= x < core[3]


def _grow(read: tuple[int, int, int, int], boxes: Sequence[Box], shape: tuple[int, int], margin: float = 0.25) -> tuple[int, int, int, int]:
    r0, c0, r1, c1 = read
    for b in boxes:
        my, mx = b.height * margin, b.width * margin
        r0, c0 = min(r0, math.floor(b.y0 - my)), min(c0, math.floor(b.x0 - mx))
        r1, c1 = max(r1, math.ceil(b.y1 + my)), max(c1, math.ceil(b.x1 + mx))
    return max(0, r0), max(0, c0), min(shape[0], r1), min(shape[1], c1)


def load_segmenter(model_path: str, device: str) -> Any:
    """The model, loaded once per process (worker) and reused by its tasks, until the file
    changes: a long-lived worker (``--scheduler``) must not keep a retrained file's old weights."""
    import os

    try:
        stat = os.stat(model_path)
        version = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        version = None  # let the loader report the problem
    return _load_segmenter(model_path, device, version)


@functools.lru_cache(maxsize=2)
def _load_segmenter(model_path: str, device: str, version: tuple[int, int] | None) -> Any:
    from segdiff_core.segmenter import Segmenter

    return Segmenter.from_checkpoint(model_path, device=device)


def run_tile(task: TileTask) -> TileResult:
    """Process one tile: read, segment, keep the objects the tile owns."""
    from segdiff_core.predict.io import open_image

    seg = load_segmenter(task.model_path, task.device)
    r0, c0, r1, c1 = task.read
    image = open_image(task.image_path).read(slice(r0, r1), slice(c0, c1))
    settings = task.settings.replace(seed=task.settings.seed + SEED_STRIDE * task.index)
    inf = seg.inference.replace(**task.inference)
    if task.boxes is None:
        result = find_objects(seg, image, settings, inf)
    else:
        local = [Box(y0 - r0, x0 - c0, y1 - r0, x1 - c0) for (y0, x0, y1, x1) in task.boxes]
        result = segment_prompts(seg, image, local, settings, inf)
    return _owned_pieces(task, result)


def _owned_pieces(task: TileTask, result: InstanceResult) -> TileResult:
    from scipy import ndimage

    r0, c0, _, _ = task.read
    out = TileResult(task.index)
    slices = ndimage.find_objects(result.labels)
    for rec in result.objects:
        sl = slices[rec.label - 1]
        cy, cx = rec.centroid[0] + r0, rec.centroid[1] + c0
        if task.boxes is None and not (task.core[0] <= cy < task.core[2] and task.core[1] <= cx < task.core[3]):
            continue
        mask = result.labels[sl] == rec.label
        bbox = (sl[0].start + r0, sl[1].start + c0, sl[0].stop + r0, sl[1].stop + c0)
        out.cut += _touches_inner_edge(bbox, task.read, task.image_shape)
        record = _shift(rec, r0, c0)
        out.pieces.append(ObjectPiece(
            bbox, mask, np.where(mask, result.probability[sl], 0).astype(np.float32),
            np.where(mask, result.uncertainty[sl], 0).astype(np.float32), record,
        ))
    return out


def _touches_inner_edge(bbox: tuple[int, int, int, int], read: tuple[int, int, int, int], shape: tuple[int, int]) -> bool:
    """True if ``bbox`` reaches an edge of the read region that is not an image edge."""
    return (
        (bbox[0] == read[0] > 0) or (bbox[1] == read[1] > 0)
        or (bbox[2] == read[2] < shape[0]) or (bbox[3] == read[3] < shape[1])
    )


def _shift(rec: ObjectRecord, dr: int, dc: int) -> ObjectRecord:
    y0, x0, y1, x1 = rec.box
    return dataclasses.replace(
        rec, box=(y0 + dr, x0 + dc, y1 + dr, x1 + dc), centroid=(rec.centroid[0] + dr, rec.centroid[1] + dc)
    )
