"""The layers the annotator creates, and how it recognises them again (no Qt).

Every layer made here carries ``layer.metadata["segdiff"] = {"role": ..., "image": <unique id
of the image layer>, ...}``; the controller keeps references to the layer objects and uses this
metadata only to adopt the layers of an earlier session (e.g. after the widget is reopened).
The Labels layer has the image's spatial shape and the image's scale/translate/rotate/shear/
affine, so a value written at a pixel index lands exactly over that image pixel in world
coordinates. The map layers (probability, uncertainty, live preview) cover only the part of the
image written so far, rounded out to blocks of :data:`MAP_BLOCK` pixels (:func:`write_map`):
their data starts at the image pixel ``metadata["segdiff"]["origin"]`` and their translate is
shifted to match, so a box costs memory in proportion to its crop, not to the image.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Shapes
from napari.utils.colormaps import Colormap
from napari.utils.transforms import CompositeAffine

from napari_segdiff._geometry import PlaneSpec, spatial_shape

__all__ = [
    "META_KEY",
    "PROMPT_EDGE",
    "DONE_EDGE",
    "role_of",
    "find_layer",
    "transform_kwargs",
    "make_prompts_layer",
    "make_labels_layer",
    "make_map_layer",
    "write_map",
    "map_origin",
    "MAP_BLOCK",
]

META_KEY = "segdiff"

PROMPT_EDGE = np.array([1.0, 0.85, 0.0, 1.0])  # yellow: not segmented yet
DONE_EDGE = np.array([0.2, 1.0, 0.4, 1.0])  # green: produced a label

_COLORMAPS = {
    # transparent at 0, so only the segmented crops show over the image
    "probability": Colormap(
        [[1.0, 0.3, 0.0, 0.0], [1.0, 0.55, 0.0, 0.55], [1.0, 1.0, 0.2, 1.0]],
        name="segdiff probability",
    ),
    "uncertainty": Colormap(
        [[0.6, 0.0, 1.0, 0.0], [0.8, 0.1, 1.0, 0.6], [1.0, 0.5, 1.0, 1.0]],
        name="segdiff uncertainty",
    ),
    "preview": Colormap(
        [[0.0, 0.9, 1.0, 0.0], [0.0, 0.9, 1.0, 0.45], [0.6, 1.0, 1.0, 0.95]],
        name="segdiff preview",
    ),
}

UNCERTAINTY_LIMITS = {"std": (0.0, 0.5), "entropy": (0.0, 1.0)}


def role_of(layer: Any) -> dict[str, Any] | None:
    """The annotator metadata of ``layer`` (None for layers it did not make)."""
    meta = getattr(layer, "metadata", None) or {}
    value = meta.get(META_KEY)
    return value if isinstance(value, dict) else None


def _tag(image: Image, role: str, **extra: Any) -> dict[str, Any]:
    return {META_KEY: {"role": role, "image": str(image.unique_id), **extra}}


def find_layer(layers: Any, image: Image, role: str, layer_type: type, **extra: Any) -> Any | None:
    """The newest layer of ``layers`` tagged with ``role`` for ``image`` (and ``extra``)."""
    want = {"role": role, "image": str(image.unique_id), **extra}
    for layer in reversed(list(layers)):
        meta = role_of(layer)
        if isinstance(layer, layer_type) and meta is not None and all(
            meta.get(k) == v for k, v in want.items()
        ):
            return layer
    return None


def transform_kwargs(image: Image) -> dict[str, Any]:
    """The image layer's data -> world transform, to give another layer the same placement."""
    return {
        "scale": tuple(image.scale),
        "translate": tuple(image.translate),
        "rotate": np.asarray(image.rotate),
        "shear": np.asarray(image.shear),
        "affine": image.affine,
    }


def make_prompts_layer(image: Image) -> Shapes:
    """An empty Shapes layer for box prompts over ``image``, in rectangle mode."""
    layer = Shapes(
        ndim=image.ndim,
        name=f"{image.name} boxes",
        edge_color=PROMPT_EDGE,
        face_color=[0.0, 0.0, 0.0, 0.0],
        edge_width=1,
        metadata=_tag(image, "prompts"),
        **transform_kwargs(image),
    )
    layer.current_edge_color = PROMPT_EDGE
    layer.current_face_color = [0.0, 0.0, 0.0, 0.0]
    return layer


def make_labels_layer(image: Image) -> Labels:
    """An empty instance Labels layer with the image's spatial shape and placement."""
    shape = spatial_shape(image)
    return Labels(
        np.zeros(shape, dtype=np.int32),  # calloc: untouched slices of a big stack cost nothing
        name=f"{image.name} labels",
        metadata=_tag(image, "labels"),
        **transform_kwargs(image),
    )


def make_map_layer(image: Image, role: str, kind: str | None = None) -> Image:
    """An empty float32 map (probability, uncertainty or the live preview) placed over ``image``;
    :func:`write_map` gives it data where results arrive (0 = not computed).

    The probability and uncertainty maps start hidden (the eye icon shows them): shown, they
    cover the image around every segmented box, and on a software-rendered screen each visible
    map made every box's redraw cost more (bench_annotator_speed: ~13 ms of CPU per box)."""
    limits = UNCERTAINTY_LIMITS[kind] if role == "uncertainty" and kind else (0.0, 1.0)
    name = {
        "probability": f"{image.name} probability",
        "uncertainty": f"{image.name} uncertainty ({kind})",
        "preview": "SegDiff live preview",
    }[role]
    extra = {"kind": kind} if kind else {}
    return Image(
        np.zeros((1,) * image.ndim, dtype=np.float32),
        name=name,
        colormap=_COLORMAPS[role],
        contrast_limits=limits,
        blending="translucent",
        opacity=0.9 if role == "preview" else 0.75,
        visible=role == "preview",
        interpolation2d="nearest",
        metadata=_tag(image, role, origin=None, **extra),
        **transform_kwargs(image),
    )


def map_origin(layer: Image) -> tuple[int, ...] | None:
    """The image pixel where the map layer's data starts (None: nothing written yet)."""
    origin = (role_of(layer) or {}).get("origin")
    return None if origin is None else tuple(int(v) for v in origin)


MAP_BLOCK = 256
"""The map layers' data grow in blocks of this many image pixels along the plane axes, so most
boxes write in place (a redraw of the layer) rather than replacing the layer's data and moving
its translate, which rebuilds napari's dims and the canvas texture (measured: ~6 ms against
~1.5 ms per map and box on a software-rendered canvas)."""


def _target_box(plane: PlaneSpec, region: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    key = plane.region_key(region)
    lo = np.array([k.start if isinstance(k, slice) else k for k in key], dtype=int)
    hi = np.array([k.stop if isinstance(k, slice) else k + 1 for k in key], dtype=int)
    return lo, hi


def _blocks(lo: np.ndarray, hi: np.ndarray, plane: PlaneSpec, image: Image) -> tuple[np.ndarray, np.ndarray]:
    """``[lo, hi)`` rounded out to :data:`MAP_BLOCK` along the plane axes, within the image."""
    size = np.array(spatial_shape(image), dtype=int)
    lo, hi = lo.copy(), hi.copy()
    for ax in plane.axes:
        lo[ax] = (lo[ax] // MAP_BLOCK) * MAP_BLOCK
        hi[ax] = min(-(-hi[ax] // MAP_BLOCK) * MAP_BLOCK, int(size[ax]))
    return lo, hi


def write_map(
    layer: Image, image: Image, plane: PlaneSpec, region: tuple[slice, slice], values: Any, reset: bool = False,
    refresh: bool = True,
) -> None:
    """Write ``values`` at ``plane[region]`` (image pixels) into a map layer, growing its data
    to cover everything written (``reset``: clearing what was written before), in blocks of
    :data:`MAP_BLOCK` pixels. ``refresh=False`` leaves a write in place undrawn until the next
    write with ``refresh`` (several boxes, one redraw).

    The layer's translate is shifted so its data stay over the right image pixels."""
    lo, hi = _blocks(*_target_box(plane, region), plane, image)
    start = map_origin(layer)
    origin = np.array(start if start is not None else lo, dtype=int)
    shape = np.array(layer.data.shape, dtype=int)
    if start is None or (reset and not (np.all(origin <= lo) and np.all(hi <= origin + shape))):
        new_lo, new_hi = lo, hi
    else:
        new_lo, new_hi = np.minimum(origin, lo), np.maximum(origin + shape, hi)
    same = start is not None and np.array_equal(new_lo, origin) and np.array_equal(new_hi, origin + shape)
    data = layer.data
    if same and reset:
        data[...] = 0
    elif not same:  # grow (or move) the data
        data = np.zeros(tuple(new_hi - new_lo), dtype=np.float32)
        if not reset and start is not None:
            at = origin - new_lo
            data[tuple(slice(a, a + n) for a, n in zip(at, shape))] = layer.data
    fixed = tuple((ax, idx - int(new_lo[ax])) for ax, idx in plane.fixed)
    local = PlaneSpec(plane.ndim, plane.axes, fixed, plane.shape)
    r0, c0 = int(new_lo[plane.axes[0]]), int(new_lo[plane.axes[1]])
    rows, cols = region
    local.write(data, (slice(rows.start - r0, rows.stop - r0), slice(cols.start - c0, cols.stop - c0)), values)
    if same:
        if refresh:
            layer.refresh()  # written in place: redraw
        return
    linear = CompositeAffine(scale=image.scale, rotate=image.rotate, shear=image.shear, ndim=image.ndim).linear_matrix
    meta = dict(layer.metadata)
    meta[META_KEY] = {**meta[META_KEY], "origin": tuple(int(v) for v in new_lo)}
    layer.metadata = meta
    layer.translate = np.asarray(image.translate, dtype=float) + linear @ new_lo
    layer.data = data  # redraws
