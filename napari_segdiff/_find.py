"""'Find all objects': automatic box proposals for the annotator (no Qt).

The proposals come from :func:`segdiff_core.proposals.propose_boxes` (foreground -> distance
transform watershed -> one box per instance) on a region of the current plane: the visible
area of the canvas, a drawn rectangle, or the whole image. They become ordinary rectangles of
the boxes layer, which Segment all then segments (batched or not, like any boxes) and the user
can edit, redo or delete.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from segdiff_core.data.boxes import Box
from segdiff_core.proposals import ProposalSettings, propose_boxes

from napari_segdiff._geometry import PlaneSpec, PromptError, image_data

__all__ = ["FIND_AREAS", "box_region", "visible_region", "find_boxes", "box_vertices"]

FIND_AREAS: tuple[str, ...] = ("visible area", "selected box", "whole image")
"""Where 'Find all objects' looks."""


def _clip_region(r0: float, c0: float, r1: float, c1: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    rows = slice(max(0, int(np.floor(r0))), min(shape[0], int(np.ceil(r1))))
    cols = slice(max(0, int(np.floor(c0))), min(shape[1], int(np.ceil(c1))))
    if rows.stop - rows.start < 2 or cols.stop - cols.start < 2:
        raise PromptError("the area to search does not overlap the image; pan over the image or draw a box on it")
    return rows, cols


def box_region(box: Box, shape: tuple[int, int]) -> tuple[slice, slice]:
    """The plane pixels under ``box``, clipped to the plane."""
    return _clip_region(box.y0, box.x0, box.y1, box.x1, shape)


def visible_region(viewer: Any, image: Any, plane: PlaneSpec) -> tuple[slice, slice]:
    """The plane pixels of ``image`` the 2D canvas currently shows (rows, cols slices)."""
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 keeps the camera on the scene
    camera = scene.camera if scene is not None else viewer.camera
    half = np.asarray(viewer.canvas.viewbox_size(viewer.layers), dtype=float) / (2.0 * camera.zoom)
    centre = np.asarray(camera.center[-2:], dtype=float)
    displayed = list(viewer.dims.displayed)
    corners = []
    for dy, dx in ((-1, -1), (1, 1), (-1, 1), (1, -1)):
        point = np.asarray(viewer.dims.point, dtype=float)
        point[displayed] = centre + np.array([dy, dx]) * half
        offset = len(point) - image.ndim
        corners.append(np.asarray(image.world_to_data(point[offset:]), dtype=float)[list(plane.axes)])
    pts = np.array(corners) + 0.5  # napari pixel centres -> pixel edges
    (r0, c0), (r1, c1) = pts.min(axis=0), pts.max(axis=0)
    return _clip_region(r0, c0, r1, c1, plane.shape)


def find_boxes(
    image: Any, plane: PlaneSpec, region: tuple[slice, slice], labels: np.ndarray | None,
    settings: ProposalSettings, taken: Sequence[Box] = (),
) -> list[Box]:
    """Proposed boxes (plane pixel coordinates) in ``region`` of the plane.

    A proposal whose centre pixel already carries a label (``labels``: the plane of the labels
    layer, or None) or lies inside a box of ``taken`` (the boxes already drawn or found on this
    plane: waiting to be segmented, or whose object was rejected) is left out, so finding again
    duplicates neither objects nor boxes.
    """
    crop = plane.read_region(image_data(image), region)
    if crop.ndim == 3 and not getattr(image, "rgb", False):
        raise PromptError("Find all objects works on 2D gray or RGB planes")
    boxes = propose_boxes(None, np.asarray(crop), settings.replace(foreground="stain"))
    r0, c0 = region[0].start, region[1].start
    out = []
    for b in boxes:
        box = Box(b.y0 + r0, b.x0 + c0, b.y1 + r0, b.x1 + c0)
        cy, cx = int(box.center[0]), int(box.center[1])
        if labels is not None and labels[cy, cx] != 0:
            continue
        if any(t.y0 <= box.center[0] < t.y1 and t.x0 <= box.center[1] < t.x1 for t in taken):
            continue
        out.append(box)
    return out


def box_vertices(box: Box, image: Any, shapes: Any, plane: PlaneSpec) -> np.ndarray:
    """The 4 vertices of a napari rectangle for ``box`` in ``shapes``' data coordinates."""
    fixed = dict(plane.fixed)
    out = []
    for y, x in ((box.y0, box.x0), (box.y0, box.x1), (box.y1, box.x1), (box.y1, box.x0)):
        data = np.zeros(image.ndim, dtype=float)
        for ax, idx in fixed.items():
            data[ax] = idx
        data[plane.axes[0]], data[plane.axes[1]] = y - 0.5, x - 0.5  # pixel edges -> napari
        world = np.asarray(image.data_to_world(data), dtype=float)
        out.append(np.asarray(shapes.world_to_data(world[-shapes.ndim:] if shapes.ndim < len(world) else world), dtype=float))
    return np.array(out)
