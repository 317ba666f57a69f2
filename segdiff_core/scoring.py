"""Per-object quality scores from a SegDiff ensemble (no Qt).

SegDiff samples G masks per prompt; how much they disagree says how far the consensus mask can
be trusted. This module turns the G sampled probabilities of **one object** into a few
features and one score in ``[0, 1]`` (higher = more certain; a review queue shows the lowest
first):

>>> result = segmenter.segment(patch, keep_generations=True)          # doctest: +SKIP
>>> box = prompt_box_in_model(geometry, prompt_box)                      # doctest: +SKIP
>>> s = score_object(result, box=box, calibration=calibration_for(path)) # doctest: +SKIP
>>> s.score, s.kind                                                      # doctest: +SKIP
(0.83, 'predicted_iou')

Features (:func:`object_features`, all computed at the model's resolution on the crop):

``mean_std``
    mean per-pixel std of the generations inside the consensus mask (uncertainty; 0.5 when the
    mask is empty).
``agreement``
    mean IoU of each generation's mask (``p_i > threshold``) with the consensus mask
    (``mean > threshold``); 1 = every generation drew the same object.
``boundary_std``
    mean std in a band of ``band`` pixels on both sides of the consensus mask's boundary.
``box_fit``
    IoU of the consensus mask's bounding box with the prompt box (both in model coordinates);
    NaN when no box is given. A mask that does not fill the box the user drew is suspicious.

The score (:func:`score_object`) is the **predicted IoU** of a :class:`ScoreCalibration` (a
logistic function of the features, a handful of numbers fitted on held-out synthetic data and
stored in a JSON file beside the model, never code) when one matches the model, else the
``agreement`` (itself an IoU-like number in ``[0, 1]``). Which features enter the calibration,
and why, is measured by ``python -m benchmarks.report --parts review`` (docs/evaluation.md).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from segdiff_core.checkpoint import file_sha256  # re-exported: the calibration names its model by it
from segdiff_core.ensemble import EnsembleResult

__all__ = [
    "FEATURES",
    "ScoreError",
    "ObjectScore",
    "ScoreCalibration",
    "object_features",
    "prompt_box_in_model",
    "score_object",
    "score_from_features",
    "calibration_path",
    "calibration_for",
    "file_sha256",
    "ranking_quality",
]

FEATURES: tuple[str, ...] = ("mean_std", "agreement", "boundary_std", "box_fit")
"""Names of the per-object features, in the order :func:`object_features` returns them."""

CALIBRATION_SUFFIX = ".score.json"
"""The calibration of ``model.pt`` lives in ``model.score.json`` beside it."""


class ScoreError(ValueError):
    """Inputs a score cannot be computed from (wrong shapes, no generations, bad calibration)."""


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------


def _generations(source: EnsembleResult | np.ndarray) -> np.ndarray:
    if isinstance(source, EnsembleResult):
        if source.generations is None:
            raise ScoreError(
                "the ensemble result holds no individual generations; segment with keep_generations=True"
            )
        source = source.generations
    gens = np.asarray(source, dtype=np.float32)
    if gens.ndim != 3 or gens.shape[0] < 1 or min(gens.shape[1:]) < 1:
        raise ScoreError(f"expected (G, H, W) sampled probabilities, got shape {gens.shape}")
    if not np.isfinite(gens).all():
        raise ScoreError("the sampled probabilities contain NaN or infinite values")
    return gens


def _bbox(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return None
    return float(rows[0]), float(cols[0]), float(rows[-1] + 1), float(cols[-1] + 1)


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def object_features(
    generations: EnsembleResult | np.ndarray,
    threshold: float | None = None,
    box: Sequence[float] | None = None,
    band: int = 2,
) -> dict[str, float]:
    """The per-object features of one ensemble (see the module docstring).

    Parameters
    ----------
    generations : EnsembleResult or ndarray, shape (G, H, W)
        The G sampled probabilities of one object's crop (an ``EnsembleResult`` made with
        ``keep_generations=True``).
    threshold : float, optional
        Mask threshold; default: the result's threshold, or 0.5 for a plain array.
    box : (y0, x0, y1, x1), optional
        The prompt box in the same (model) coordinates, ``y1``/``x1`` exclusive
        (:func:`prompt_box_in_model`); without it ``box_fit`` is NaN.
    band : int
        Half width in pixels of the boundary band of ``boundary_std``.

    Returns
    -------
    dict
        ``{name: float}`` for every name in :data:`FEATURES`.
    """
    if threshold is None:
        threshold = generations.threshold if isinstance(generations, EnsembleResult) else 0.5
    gens = _generations(generations)
    mean, std = gens.mean(axis=0), gens.std(axis=0)
    mask = mean > threshold
    feats = {"mean_std": 0.5, "agreement": 0.0, "boundary_std": 0.5, "box_fit": math.nan}
    if box is not None:
        feats["box_fit"] = 0.0
    if not mask.any():
        return feats
    masks = gens > threshold
    inter = (masks & mask).sum(axis=(1, 2))
    union = (masks | mask).sum(axis=(1, 2))
    feats["mean_std"] = float(std[mask].mean())
    feats["agreement"] = float(np.mean(inter / np.maximum(union, 1)))
    ring = ndimage.binary_dilation(mask, iterations=band) & ~ndimage.binary_erosion(
        mask, iterations=band, border_value=1
    )
    feats["boundary_std"] = float(std[ring].mean()) if ring.any() else 0.0
    if box is not None:
        feats["box_fit"] = _box_iou(_bbox(mask), [float(v) for v in box])  # type: ignore[arg-type]
    return feats


def prompt_box_in_model(geometry: Any, box: Any) -> tuple[float, float, float, float]:
    """A prompt box (image coordinates, a :class:`~segdiff_core.data.boxes.Box` or
    ``(y0, x0, y1, x1)``) in the model coordinates of a crop's
    :class:`~segdiff_core.data.crops.CropGeometry`, as a tuple
    (:func:`segdiff_core.data.prompt.box_in_crop` does the mapping)."""
    from segdiff_core.data.boxes import as_box
    from segdiff_core.data.prompt import box_in_crop

    return box_in_crop(geometry, as_box(box)).as_tuple()


# --------------------------------------------------------------------------------------------
# calibration: predicted IoU
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreCalibration:
    """Predicted IoU = ``sigmoid(intercept + sum_k weights[k] * (f_k - centre[k]) / scale[k])``.

    Attributes
    ----------
    features
        feature names (a subset of :data:`FEATURES`), in weight order.
    weights, centre, scale
        one number per feature (``centre``/``scale`` standardise the
        features so the weights are comparable).
    intercept
        the constant term.
    model_sha256
        SHA-256 of the model file it was fitted for ("" = any model).
    fitted_on
        free text: data, protocols and sample counts of the fit.
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    centre: tuple[float, ...]
    scale: tuple[float, ...]
    model_sha256: str = ""
    fitted_on: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.features)
        unknown = [f for f in self.features if f not in FEATURES]
        if n == 0 or unknown:
            raise ScoreError(f"calibration features must be a non-empty subset of {FEATURES}, got {self.features!r}")
        for name in ("weights", "centre", "scale"):
            values = getattr(self, name)
            if len(values) != n or not all(math.isfinite(float(v)) for v in values):
                raise ScoreError(f"calibration {name} must be {n} finite numbers, got {values!r}")
        if any(float(s) <= 0 for s in self.scale) or not math.isfinite(float(self.intercept)):
            raise ScoreError("calibration scales must be > 0 and the intercept finite")

    def predict(self, features: Mapping[str, float]) -> float:
        """Predicted IoU in ``(0, 1)`` for one object's features (a missing/NaN feature is
        replaced by its centre, i.e. contributes nothing)."""
        z = float(self.intercept)
        for name, w, c, s in zip(self.features, self.weights, self.centre, self.scale):
            v = features.get(name, math.nan)
            v = c if v is None or not math.isfinite(v) else v
            z += w * (v - c) / s
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    @classmethod
    def fit(cls, features: Sequence[Mapping[str, float]], ious: Sequence[float], names: Sequence[str],
            l2: float = 1e-3, **meta: Any) -> "ScoreCalibration":
        """Fit by minimising the cross-entropy between ``sigmoid(...)`` and the measured IoUs
        (IoU used as a soft target in ``[0, 1]``), with a small L2 penalty on the weights."""
        from scipy.optimize import minimize

        x = np.array([[f[n] for n in names] for f in features], dtype=float)
        y = np.clip(np.asarray(ious, dtype=float), 0.0, 1.0)
        if x.ndim != 2 or x.shape[0] != y.size or y.size < len(names) + 2 or not np.isfinite(x).all():
            raise ScoreError(f"need more than {len(names) + 1} objects with finite features to fit, got {y.size}")
        centre, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale <= 1e-12] = 1.0
        z = (x - centre) / scale

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            logit = theta[0] + z @ theta[1:]
            p = 1.0 / (1.0 + np.exp(-logit))
            eps = 1e-9
            value = -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)) + l2 * np.sum(theta[1:] ** 2)
            grad_logit = (p - y) / y.size
            grad = np.concatenate([[grad_logit.sum()], z.T @ grad_logit + 2 * l2 * theta[1:]])
            return float(value), grad

        res = minimize(loss, np.zeros(len(names) + 1), jac=True, method="L-BFGS-B")
        return cls(tuple(names), tuple(float(v) for v in res.x[1:]), float(res.x[0]),
                   tuple(float(v) for v in centre), tuple(float(v) for v in scale), **meta)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "segdiff-score-calibration", "version": 1, "features": list(self.features),
            "weights": list(self.weights), "intercept": self.intercept, "centre": list(self.centre),
            "scale": list(self.scale), "model_sha256": self.model_sha256, "fitted_on": self.fitted_on,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ScoreCalibration":
        if not isinstance(data, Mapping) or data.get("kind") != "segdiff-score-calibration":
            raise ScoreError("not a SegDiff score calibration (missing kind 'segdiff-score-calibration')")
        try:
            return cls(
                tuple(str(f) for f in data["features"]), tuple(float(v) for v in data["weights"]),
                float(data["intercept"]), tuple(float(v) for v in data["centre"]),
                tuple(float(v) for v in data["scale"]), str(data.get("model_sha256", "")),
                str(data.get("fitted_on", "")), dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScoreError(f"bad score calibration: {exc}") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON, atomically."""
        from segdiff_core.checkpoint import atomic_write

        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        atomic_write(path, text)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScoreCalibration":
        """Read a JSON calibration (data only; raises :class:`ScoreError` on a bad file)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ScoreError(f"cannot read the score calibration {path}: {exc}") from exc
        return cls.from_dict(data)


def calibration_path(model_path: str | os.PathLike) -> Path:
    """Where the calibration of a model file lives: ``model.pt`` -> ``model.score.json``."""
    p = Path(model_path)
    return p.with_name(p.stem + CALIBRATION_SUFFIX)


def calibration_for(model_path: str | os.PathLike | None) -> tuple[ScoreCalibration | None, str]:
    """The calibration beside ``model_path`` if it exists and was fitted for this very file.

    Returns ``(calibration or None, message)``; the message says why there is none (no file,
    a bad file, or one fitted for another model), so a caller can show it once.
    """
    if model_path is None:
        return None, "no model file: the score is the generations' agreement (uncalibrated)"
    path = calibration_path(model_path)
    if not path.is_file():
        return None, f"no score calibration beside {Path(model_path).name}: the score is the generations' agreement"
    try:
        cal = ScoreCalibration.load(path)
    except ScoreError as exc:
        return None, f"{exc}; the score is the generations' agreement"
    if cal.model_sha256 and cal.model_sha256 != file_sha256(model_path):
        return None, (f"{path.name} was fitted for another model file (retrained?); the score is the "
                      "generations' agreement until the calibration is refitted (python -m benchmarks.report --parts review)")
    return cal, f"score = predicted IoU ({path.name})"


# --------------------------------------------------------------------------------------------
# the score
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectScore:
    """The quality score of one object.

    Attributes
    ----------
    score
        in ``[0, 1]``, higher = more likely correct (review the lowest first).
    kind
        ``'predicted_iou'`` (calibrated) or ``'agreement'`` (uncalibrated fallback).
    features
        every feature of :func:`object_features`.
    """

    score: float
    kind: str
    features: dict[str, float]

    @property
    def uncertainty(self) -> float:
        """``1 - score`` (higher = review first)."""
        return 1.0 - self.score


def score_from_features(features: Mapping[str, float], calibration: ScoreCalibration | None = None) -> ObjectScore:
    """The score of already computed features (see :func:`score_object`)."""
    if calibration is not None:
        return ObjectScore(calibration.predict(features), "predicted_iou", dict(features))
    return ObjectScore(float(features["agreement"]), "agreement", dict(features))


def score_object(
    result: EnsembleResult | np.ndarray,
    threshold: float | None = None,
    box: Sequence[float] | None = None,
    calibration: ScoreCalibration | None = None,
) -> ObjectScore:
    """The quality score of one object from its ensemble.

    Parameters
    ----------
    result : EnsembleResult or ndarray, shape (G, H, W)
        The object's ensemble at model resolution, with its individual generations
        (``Segmenter.segment(..., keep_generations=True)``).
    threshold : float, optional
        Mask threshold (default: the result's own, or 0.5).
    box : (y0, x0, y1, x1), optional
        The prompt box in model coordinates (:func:`prompt_box_in_model`); improves the
        calibrated score; without it ``box_fit`` does not contribute.
    calibration : ScoreCalibration, optional
        From :func:`calibration_for`; None = uncalibrated agreement.

    Returns
    -------
    ObjectScore
        ``score`` in ``[0, 1]`` (higher = more certain), its ``kind`` and the features.
    """
    return score_from_features(object_features(result, threshold, box), calibration)


# --------------------------------------------------------------------------------------------
# how well a score ranks objects
# --------------------------------------------------------------------------------------------


def ranking_quality(
    uncertainty: Sequence[float], ious: Sequence[float], worst_fraction: float = 0.2, bad_iou: float = 0.7
) -> dict[str, float | int]:
    """How well a per-object uncertainty (higher = worse) finds the bad objects.

    Parameters
    ----------
    uncertainty : (N,) floats
        Per-object uncertainty, e.g. ``1 - score``.
    ious : (N,) floats
        Measured IoU of each object with its ground truth.
    worst_fraction : float
        The ``ceil(worst_fraction * N)`` objects of lowest IoU are the positives of the AUROC,
        and the review budget of the top share.
    bad_iou : float
        Objects below this IoU are "bad".

    Returns
    -------
    dict
        ``auroc_worst``: AUROC of the uncertainty for the worst objects (Mann-Whitney, ties
        one half; :func:`segdiff_core.metrics.uncertainty_auroc`); ``n``; ``n_bad``;
        ``top_bad_share``: share of the bad objects among the ``worst_fraction`` most uncertain
        (NaN without bad objects); ``spearman``: rank correlation of uncertainty and IoU
        (negative is good).
    """
    from scipy.stats import spearmanr

    from segdiff_core.metrics import uncertainty_auroc

    u, iou = np.asarray(uncertainty, dtype=float), np.asarray(ious, dtype=float)
    if u.shape != iou.shape or u.ndim != 1 or u.size < 2:
        raise ScoreError(f"need two equal-length lists of at least 2 objects, got {u.shape} and {iou.shape}")
    k = max(1, int(math.ceil(worst_fraction * u.size)))
    worst = np.zeros(u.size, bool)
    worst[np.argsort(iou, kind="stable")[:k]] = True
    top = np.zeros(u.size, bool)
    top[np.argsort(-u, kind="stable")[:k]] = True
    bad = iou < bad_iou
    rho = float(spearmanr(u, iou)[0]) if np.ptp(u) > 0 and np.ptp(iou) > 0 else math.nan
    return {
        "auroc_worst": uncertainty_auroc(u, worst, np.zeros(u.size, bool)),
        "n": int(u.size),
        "n_bad": int(bad.sum()),
        "top_bad_share": float((bad & top).sum() / bad.sum()) if bad.any() else math.nan,
        "spearman": rho,
    }
