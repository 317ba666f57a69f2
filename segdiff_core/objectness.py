"""Is there an object in this box? Rules that reject a prediction before it becomes an object.

A box-prompted model always paints *something*: on empty background, on a constant image or over a
box that covers the whole image it returns a confident-looking blob. These small functions look
at the crop, the ensemble and the mask and return the reason to reject it (``None`` = looks like
an object). The napari annotator and library callers use the same rule::

    from segdiff_core.objectness import ObjectnessRule, assess_object, assess_remnant
    reason = assess_object(patch, result.probability, result.std, result.threshold)
    if reason is None: ...commit result.mask...

The thresholds were set on the bundled nuclei model and synthetic fluorescence tiles; they are a
heuristic, not a guarantee (:class:`ObjectnessRule` makes each one explicit).
``benchmarks/bench_objectness.py`` prints how the rule splits nucleus boxes from background
boxes for the current model and generator: a model that does not follow an object's edge gets
its mask refused too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ObjectnessRule", "DEFAULT_RULE", "assess_object", "assess_remnant", "box_covers_image", "separation"]


@dataclass(frozen=True)
class ObjectnessRule:
    """Thresholds of the no-object rules.

    Attributes
    ----------
    flat_separation : float
        Below this d' (:func:`separation`) the mask does not stand out at all: refused
        (bundled model v2 on generator v2: background boxes 0.04-0.19, nuclei mostly above).
    min_separation : float
        Below this d' the mask barely stands out; it is refused when the generations also
        disagree (mean spread over the mask at least ``weak_spread``): background boxes give
        weak masks the samples do not agree on, faint real nuclei give weak but agreed masks.
    weak_spread : float
        See ``min_separation``.
    max_fill : float
        Maximum fraction of the crop the mask may cover.
    max_spread : float
        Maximum mean spread (std across generations) over the mask: above it the ensemble does
        not agree on the object.
    min_remnant : float
        Minimum fraction of the predicted pixels that must remain free after existing labels
        are respected; less leaves only slivers.
    max_box_fraction : float
        A box covering at least this fraction of the image along both axes holds no single object.
    """

    flat_separation: float = 0.2
    min_separation: float = 0.5
    weak_spread: float = 0.19
    max_fill: float = 0.9
    max_spread: float = 0.35
    min_remnant: float = 0.5
    max_box_fraction: float = 0.9


DEFAULT_RULE = ObjectnessRule()


def _gray(patch: np.ndarray) -> np.ndarray:
    arr = np.asarray(patch, dtype=np.float64)
    return arr.mean(axis=-1) if arr.ndim == 3 else arr


def separation(patch: np.ndarray, mask: np.ndarray) -> float:
    """d' between the crop intensities inside and outside ``mask``: |difference of the means|
    over the pooled standard deviation (0 for a flat crop or an empty/full mask).

    Parameters
    ----------
    patch : (S, S) or (S, S, C) array
        The crop (channels are averaged).
    mask : (S, S) bool array

    Returns
    -------
    float
    """
    gray = _gray(patch)
    mask = np.asarray(mask, dtype=bool)
    if gray.shape != mask.shape:
        raise ValueError(f"patch {gray.shape} and mask {mask.shape} differ in size")
    if not mask.any() or mask.all():
        return 0.0
    inside, outside = gray[mask], gray[~mask]
    pooled = float(np.sqrt((inside.var() + outside.var()) / 2.0))
    diff = abs(float(inside.mean()) - float(outside.mean()))
    return diff / pooled if pooled > 0 else (float("inf") if diff > 0 else 0.0)


def assess_object(
    patch: np.ndarray,
    probability: np.ndarray,
    spread: np.ndarray,
    threshold: float,
    rule: ObjectnessRule = DEFAULT_RULE,
) -> str | None:
    """Why the prediction for one box is not an object, or None if it looks like one.

    Parameters
    ----------
    patch : (S, S) or (S, S, C) array
        The model input crop (any dtype).
    probability, spread : (S, S) float arrays
        Mean and spread (std) of the ensemble on the same grid.
    threshold : float
        Probability threshold of the mask.
    rule : ObjectnessRule
        Thresholds.

    Returns
    -------
    reason : str or None
    """
    mask = np.asarray(probability) > threshold
    if not mask.any():
        return None  # nothing to commit anyway; the caller says so
    fill = float(mask.mean())
    if fill >= rule.max_fill:
        return f"the mask fills {fill:.0%} of the crop (no object boundary inside the box)"
    contrast = separation(patch, mask)
    disagreement = float(np.asarray(spread)[mask].mean())
    if contrast < rule.flat_separation:
        return (
            f"the mask does not stand out from its surroundings (contrast d' = {contrast:.2f} "
            f"< {rule.flat_separation:g}): empty background or a flat image"
        )
    if contrast < rule.min_separation and disagreement >= rule.weak_spread:
        return (
            f"the mask does not stand out from its surroundings (contrast d' = {contrast:.2f} "
            f"< {rule.min_separation:g}) and the generations disagree (spread {disagreement:.2f}): "
            "empty background"
        )
    if disagreement > rule.max_spread:
        return f"the generations disagree (mean spread {disagreement:.2f} > {rule.max_spread:g})"
    return None


def assess_remnant(predicted: int, kept: int, rule: ObjectnessRule = DEFAULT_RULE) -> str | None:
    """Why ``kept`` of ``predicted`` pixels (the rest already labelled) is no object, or None."""
    if predicted <= 0:
        return None
    if kept < rule.min_remnant * predicted:
        return (
            f"only {kept} of {predicted} predicted pixels are unlabelled (the object is already "
            "labelled; what is left is a sliver)"
        )
    return None


def box_covers_image(
    box_shape: tuple[float, float], image_shape: tuple[int, int], rule: ObjectnessRule = DEFAULT_RULE
) -> str | None:
    """Why a box of ``(height, width)`` holds no single object in an image of ``image_shape``."""
    fy = box_shape[0] / max(image_shape[0], 1)
    fx = box_shape[1] / max(image_shape[1], 1)
    if fy >= rule.max_box_fraction and fx >= rule.max_box_fraction:
        return (
            "the box covers the whole image; draw it around one object, or use the "
            "'whole-region windows' crop to label every object in it"
        )
    return None
