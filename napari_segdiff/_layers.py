"""The layers the annotator creates, and how it recognises them again (no Qt).

Every layer made here carries ``layer.metadata["segdiff"] = {"role": ..., "image": <unique id
of the image layer>, ...}``; the controller keeps references to the layer objects and uses this
metadata only to adopt the layers of an earlier session (e.g. after the widget is reopened).
Result layers have the image's spatial shape and the image's scale/translate/rotate/shear/
affine, so a value written at a pixel index lands exactly over that image pixel in world
coordinates.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Shapes
from napari.utils.colormaps import Colormap

from napari_segdiff._geometry import spatial_shape

__all__ = [
    "META_KEY",
    "ROLES",
    "PROMPT_EDGE",
    "DONE_EDGE",
    "role_of",
    "find_layer",
    "transform_kwargs",
    "make_prompts_layer",
    "make_labels_layer",
    "make_map_layer",
    "ensure_box_features",
]

META_KEY = "segdiff"
ROLES = ("prompts", "labels", "probability", "uncertainty", "preview")

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
        features=pd.DataFrame({"label_id": pd.Series([], dtype=int), "n_objects": pd.Series([], dtype=int)}),
        feature_defaults={"label_id": 0, "n_objects": 0},
        metadata=_tag(image, "prompts"),
        **transform_kwargs(image),
    )
    layer.current_edge_color = PROMPT_EDGE
    layer.current_face_color = [0.0, 0.0, 0.0, 0.0]
    return layer


def ensure_box_features(shapes: Shapes) -> None:
    """Give a Shapes layer the ``label_id`` / ``n_objects`` columns (0 = not segmented)."""
    feats = shapes.features
    changed = False
    for col in ("label_id", "n_objects"):
        if col not in feats.columns:
            feats = feats.copy()
            feats[col] = np.zeros(len(feats), dtype=int)
            changed = True
    if changed:
        shapes.features = feats
    defaults = shapes.feature_defaults
    values = {c: defaults[c].iloc[0] for c in defaults.columns}
    if values.get("label_id") != 0 or values.get("n_objects") != 0:
        values.update(label_id=0, n_objects=0)  # a new box starts unsegmented
        shapes.feature_defaults = values


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
    """A float32 map over the whole image (0 = not computed), for probability, uncertainty or
    the live preview."""
    shape = spatial_shape(image)
    limits = UNCERTAINTY_LIMITS[kind] if role == "uncertainty" and kind else (0.0, 1.0)
    name = {
        "probability": f"{image.name} probability",
        "uncertainty": f"{image.name} uncertainty ({kind})",
        "preview": "SegDiff live preview",
    }[role]
    extra = {"kind": kind} if kind else {}
    return Image(
        np.zeros(shape, dtype=np.float32),
        name=name,
        colormap=_COLORMAPS[role],
        contrast_limits=limits,
        blending="translucent",
        opacity=0.9 if role == "preview" else 0.75,
        interpolation2d="nearest",
        metadata=_tag(image, role, **extra),
        **transform_kwargs(image),
    )
