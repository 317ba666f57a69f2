"""Segmentation metrics used by the SegDiff paper, plus calibration and uncertainty quality.

Conventions
-----------
* Binary masks: ``(H, W)`` arrays, bool or integer/float with values in {0, 1}.
* Label images: ``(H, W)`` bool or integer arrays (or floats holding whole numbers).
* Probabilities: float arrays with values in ``[0, 1]``.
* Every metric returns a Python ``float``. Inputs that cannot be compared (different shapes,
  empty arrays, probabilities outside ``[0, 1]``, NaNs) raise :class:`MetricError`.

Empty masks
-----------
``iou`` and ``dice``/``f1`` of two empty masks are **1.0**: the prediction agrees perfectly with a
ground truth that contains nothing. If exactly one mask is empty they are 0.0. Boundary F
follows the DAVIS convention (both without boundary -> 1.0; one without -> 0.0).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata
from skimage.segmentation import find_boundaries

from segdiff_core.validation import check_float, check_int

__all__ = [
    "MetricError",
    "iou",
    "dice",
    "f1",
    "miou",
    "image_miou",
    "wcov",
    "area_ratio",
    "boundary_precision_recall",
    "boundary_f",
    "boundf",
    "ReliabilityCurve",
    "reliability_curve",
    "calibration_score",
    "expected_calibration_error",
    "uncertainty_auroc",
    "ErrorRateCurve",
    "error_rate_by_uncertainty",
    "SegmentationMetrics",
]

#: Distance tolerances (pixels) averaged by the paper's BoundF.
BOUNDF_TOLERANCES: tuple[float, ...] = (1, 2, 3, 4, 5)


class MetricError(ValueError):
    """Inputs that a metric cannot be computed on (shape mismatch, wrong values, empty)."""


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def _check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise MetricError(
            f"{names[0]} has shape {a.shape} but {names[1]} has shape {b.shape}; "
            "they must be the same size (resize the prediction to the ground truth first)"
        )
    if a.size == 0:
        raise MetricError(f"{names[0]} and {names[1]} are empty arrays (shape {a.shape})")


def _as_binary(mask: np.ndarray, name: str) -> np.ndarray:
    """Bool view of a binary mask; raises if it holds values other than 0/1."""
    arr = np.asarray(mask)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MetricError(f"{name} must be a bool or numeric mask, got dtype {arr.dtype}")
    is_zero, is_one = arr == 0, arr == 1
    if not np.all(is_zero | is_one):
        bad = arr[~(is_zero | is_one)].ravel()[0]
        raise MetricError(
            f"{name} must be a binary mask with values 0/1, found {bad!r}; "
            "threshold probabilities (e.g. prob > 0.5) or compare labels first"
        )
    return is_one


def _binary_pair(
    pred: np.ndarray, gt: np.ndarray, ndim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred), np.asarray(gt)
    _check_same_shape(p, g, ("pred", "gt"))
    if ndim is not None and p.ndim != ndim:
        raise MetricError(f"pred and gt must be {ndim}D (H, W) masks, got shape {p.shape}")
    return _as_binary(p, "pred"), _as_binary(g, "gt")


def _as_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Integer view of a label image (bool, integer, or float holding whole numbers)."""
    arr = np.asarray(labels)
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise MetricError(f"{name} must hold whole-number labels, found non-integer values")
        return arr.astype(np.int64)
    raise MetricError(f"{name} must be a bool or integer label image, got dtype {arr.dtype}")


def _as_probability(prob: np.ndarray, name: str = "prob") -> np.ndarray:
    arr = np.asarray(prob)
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise MetricError(f"{name} must be a float array of probabilities, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise MetricError(f"{name} contains NaN or infinite values")
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if lo < 0.0 or hi > 1.0:
        raise MetricError(f"{name} must lie in [0, 1], found values in [{lo:g}, {hi:g}]")
    return arr


# --------------------------------------------------------------------------------------------
# overlap metrics
# --------------------------------------------------------------------------------------------


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union ``|P & G| / |P | G|`` of two binary masks of the same shape.

    Returns 1.0 when both masks are empty (documented convention, see module docstring).
    """
    p, g = _binary_pair(pred, gt)
    union = int(np.count_nonzero(p | g))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & g)) / union


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient = F1 score ``2 |P & G| / (|P| + |G|)`` of two binary masks.

    Returns 1.0 when both masks are empty.
    """
    p, g = _binary_pair(pred, gt)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & g)) / total


#: F1 score of the foreground class; identical to :func:`dice`.
f1 = dice


def _finite_values(values: Iterable[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        raise MetricError(f"{what} is empty; nothing to average")
    if not np.all(np.isfinite(arr)):
        raise MetricError(f"{what} contains NaN or infinite values")
    return arr


def miou(per_class_ious: Mapping[str, Sequence[float]]) -> float:
    """Cityscapes-style mIoU: the mean over classes of each class's mean per-object IoU.

    Parameters
    ----------
    per_class_ious
        ``{class_name: [iou of each object of that class, ...]}``.

    Every class counts equally, however many objects it has.
    """
    if not per_class_ious:
        raise MetricError("per_class_ious is empty; add at least one class")
    means = [
        float(_finite_values(v, f"IoU list of class {k!r}").mean())
        for k, v in per_class_ious.items()
    ]
    return float(np.mean(means))


def image_miou(ious: Iterable[float]) -> float:
    """mIoU over images (MoNuSeg/Vaihingen style): the plain mean of per-image IoUs."""
    return float(_finite_values(ious, "ious").mean())


def wcov(pred: np.ndarray, gt: np.ndarray) -> float:
    """Weighted coverage of the ground-truth regions by the predicted regions.

    ``WCov = sum_R (|R| / N) * max_R' IoU(R, R')`` where ``R`` runs over the ground-truth
    regions, ``R'`` over the predicted regions and ``N`` is the number of pixels (the
    "covering" of Arbelaez et al. / Pont-Tuset & Marques, as used by DarNet for buildings).

    Regions are the sets of pixels sharing a label value: for binary masks the two regions are
    foreground and background (the two-class evaluation of DarNet), for label images every
    distinct value including the background 0. Labels are not split into connected components.
    A class absent from an image is not a region (e.g. an empty prediction has a single region,
    the whole image). Computed from the label contingency table, without per-pixel loops.

    Covering compares partitions, not label names: a region may be matched by a predicted
    region of any label, so a prediction with foreground and background swapped scores 1.0.
    That is a property of the standard definition; report WCov next to IoU/F1, which do
    look at the labels.

    Note: some public evaluation scripts for the building benchmark define a function named
    ``WCov_metric`` that only returns the area ratio ``min(|P|, |G|) / max(|P|, |G|)``; that
    quantity is available as :func:`area_ratio`, but it is not a coverage.

    Parameters
    ----------
    pred, gt
        ``(H, W)`` binary masks or label images of the same shape.
    """
    p = _as_labels(pred, "pred")
    g = _as_labels(gt, "gt")
    _check_same_shape(p, g, ("pred", "gt"))
    _, g_idx = np.unique(g.ravel(), return_inverse=True)
    _, p_idx = np.unique(p.ravel(), return_inverse=True)
    n_g, n_p = int(g_idx.max()) + 1, int(p_idx.max()) + 1
    table = np.bincount(g_idx * n_p + p_idx, minlength=n_g * n_p).reshape(n_g, n_p)
    g_size = table.sum(axis=1)
    p_size = table.sum(axis=0)
    union = g_size[:, None] + p_size[None, :] - table
    best = (table / union).max(axis=1)
    return float(np.sum(g_size * best) / g.size)


def area_ratio(pred: np.ndarray, gt: np.ndarray) -> float:
    """``min(|P|, |G|) / max(|P|, |G|)`` of two binary masks; 1.0 when both are empty.

    Provided only to reproduce numbers of scripts that call this quantity "WCov" (see
    :func:`wcov`). It ignores where the pixels are.
    """
    p, g = _binary_pair(pred, gt)
    a, b = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    if max(a, b) == 0:
        return 1.0
    return min(a, b) / max(a, b)


# --------------------------------------------------------------------------------------------
# boundary F-score
# --------------------------------------------------------------------------------------------


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a binary mask: foreground pixels with a 4-connected background neighbour.

    ``skimage.segmentation.find_boundaries(mode="inner")``: pixels on the image border are not
    boundary pixels unless they touch background inside the image.
    """
    return find_boundaries(mask.view(np.uint8), connectivity=1, mode="inner")


def _tolerance(value: float) -> float:
    return check_float(value, "tolerance (pixels)", 0.0, error=MetricError)


def _boundary_distances(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (px) from each predicted boundary pixel to the nearest gt boundary pixel, and
    from each gt boundary pixel to the nearest predicted one (empty arrays if none)."""
    p, g = _binary_pair(pred, gt, ndim=2)
    bp, bg = _boundary(p), _boundary(g)
    if not bp.any() or not bg.any():
        return np.zeros(int(bp.sum())), np.zeros(int(bg.sum()))
    to_gt = ndimage.distance_transform_edt(~bg)[bp]
    to_pred = ndimage.distance_transform_edt(~bp)[bg]
    return to_gt, to_pred


def _boundary_prf(
    to_gt: np.ndarray, to_pred: np.ndarray, tolerance: float
) -> tuple[float, float, float]:
    if to_gt.size == 0 and to_pred.size == 0:
        return 1.0, 1.0, 1.0
    if to_gt.size == 0:  # no predicted boundary, gt has one
        return 0.0, 1.0, 0.0
    if to_pred.size == 0:  # predicted boundary, gt has none
        return 0.0, 0.0, 1.0
    precision = float(np.mean(to_gt <= tolerance))
    recall = float(np.mean(to_pred <= tolerance))
    if precision + recall == 0:
        return 0.0, precision, recall
    return 2 * precision * recall / (precision + recall), precision, recall


def boundary_precision_recall(
    pred: np.ndarray, gt: np.ndarray, tolerance: float
) -> tuple[float, float, float]:
    """``(F, precision, recall)`` of the boundary match at ``tolerance`` pixels.

    Boundaries are the inner boundaries of the masks (see :func:`boundary_f`). Precision is the
    fraction of predicted boundary pixels whose Euclidean distance to the nearest gt boundary
    pixel is ``<= tolerance`` (the same pixels a disk of that radius reaches), recall the
    fraction of gt boundary pixels within ``tolerance`` of a predicted boundary pixel.
    Degenerate cases follow the DAVIS evaluation: no boundary in either mask -> (1, 1, 1);
    no predicted boundary -> P = 1, R = 0, F = 0; no gt boundary -> P = 0, R = 1, F = 0.
    """
    tol = _tolerance(tolerance)
    return _boundary_prf(*_boundary_distances(pred, gt), tol)


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: float) -> float:
    """Boundary F-score ``2PR / (P + R)`` of two ``(H, W)`` binary masks at ``tolerance`` px.

    Boundary pixels: ``find_boundaries(mask, connectivity=1, mode="inner")`` (one-pixel-wide
    outline inside each mask; the image frame is not a boundary). Distances:
    ``scipy.ndimage.distance_transform_edt``. See :func:`boundary_precision_recall`.
    """
    return boundary_precision_recall(pred, gt, tolerance)[0]


def boundf(
    pred: np.ndarray, gt: np.ndarray, tolerances: Sequence[float] = BOUNDF_TOLERANCES
) -> float:
    """The paper's BoundF: :func:`boundary_f` averaged over ``tolerances`` (1..5 px by default).

    The distance transforms are computed once for all tolerances.
    """
    tols = [_tolerance(t) for t in tolerances]
    if not tols:
        raise MetricError("tolerances is empty; give at least one distance in pixels")
    to_gt, to_pred = _boundary_distances(pred, gt)
    return float(np.mean([_boundary_prf(to_gt, to_pred, t)[0] for t in tols]))


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


class ReliabilityCurve(NamedTuple):
    """Reliability-diagram data for ``n_bins`` uniform probability bins.

    All arrays have shape ``(n_bins,)``; ``mean_prob`` and ``frac_positive`` are NaN for empty
    bins.
    """

    bin_centres: np.ndarray
    mean_prob: np.ndarray
    frac_positive: np.ndarray
    counts: np.ndarray


def _bin_index(prob: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ``k`` holds ``k/n <= p < (k+1)/n``, computed as ``floor(p * n)``; p = 1 goes to the
    last bin."""
    return np.minimum((prob * n_bins).astype(np.int64), n_bins - 1)


def _bin_sums(prob: np.ndarray, gt: np.ndarray, n_bins: int) -> np.ndarray:
    """``(3, n_bins)`` array of per-bin pixel counts, sums of probabilities, sums of positives."""
    p = _as_probability(prob)
    g = _as_binary(gt, "gt")
    _check_same_shape(p, g, ("prob", "gt"))
    n_bins = check_int(n_bins, "n_bins", 1, error=MetricError)
    idx = _bin_index(p.ravel(), n_bins)
    return np.stack([
        np.bincount(idx, minlength=n_bins).astype(np.float64),
        np.bincount(idx, weights=p.ravel(), minlength=n_bins),
        np.bincount(idx, weights=g.ravel().astype(np.float64), minlength=n_bins),
    ])


def _curve_from_sums(sums: np.ndarray) -> ReliabilityCurve:
    counts, sum_p, sum_pos = sums
    n_bins = counts.size
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.where(counts > 0, sum_p / counts, np.nan)
        frac = np.where(counts > 0, sum_pos / counts, np.nan)
    centres = (np.arange(n_bins) + 0.5) / n_bins
    return ReliabilityCurve(centres, mean_prob, frac, counts.astype(np.int64))


def _calibration_from_sums(sums: np.ndarray) -> float:
    curve = _curve_from_sums(sums)
    filled = curve.counts > 0
    return float(np.mean((curve.mean_prob[filled] - curve.frac_positive[filled]) ** 2))


def _ece_from_sums(sums: np.ndarray) -> float:
    curve = _curve_from_sums(sums)
    filled = curve.counts > 0
    weights = curve.counts[filled] / curve.counts.sum()
    return float(np.sum(weights * np.abs(curve.mean_prob[filled] - curve.frac_positive[filled])))


def reliability_curve(prob: np.ndarray, gt: np.ndarray, n_bins: int = 10) -> ReliabilityCurve:
    """Per-bin mean predicted probability and fraction of positive pixels.

    Parameters
    ----------
    prob
        foreground probabilities in ``[0, 1]``, any shape.
    gt
        binary ground truth of the same shape.
    n_bins
        number of uniform bins over ``[0, 1]``; bin ``k`` is ``[k/n, (k+1)/n)``, the
        last bin also holds ``p = 1``.
    """
    return _curve_from_sums(_bin_sums(prob, gt, n_bins))


def calibration_score(prob: np.ndarray, gt: np.ndarray, n_bins: int = 10) -> float:
    """The paper's calibration score (§5); lower is better, 0 is perfectly calibrated.

    Pixels are put into ``n_bins`` uniform bins by predicted probability; the score is the
    **unweighted** mean, over the non-empty bins, of ``(mean prob in bin - fraction of positive
    pixels in bin)^2``. Every non-empty bin counts equally, as in the paper's description.
    """
    return _calibration_from_sums(_bin_sums(prob, gt, n_bins))


def expected_calibration_error(prob: np.ndarray, gt: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: ``sum_b (n_b / N) |mean prob_b - fraction positive_b|``."""
    return _ece_from_sums(_bin_sums(prob, gt, n_bins))


# --------------------------------------------------------------------------------------------
# uncertainty quality
# --------------------------------------------------------------------------------------------


def _uncertainty_inputs(
    uncertainty: np.ndarray, pred: np.ndarray, gt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened ``(uncertainty float64, wrong bool)`` after validation."""
    u = np.asarray(uncertainty)
    p, g = _as_labels(pred, "pred"), _as_labels(gt, "gt")
    _check_same_shape(p, g, ("pred", "gt"))
    _check_same_shape(u, g, ("uncertainty", "gt"))
    if not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)):
        raise MetricError(f"uncertainty must be a numeric array, got dtype {u.dtype}")
    u = u.astype(np.float64, copy=False).ravel()
    if not np.all(np.isfinite(u)):
        raise MetricError("uncertainty contains NaN or infinite values")
    return u, (p != g).ravel()


def uncertainty_auroc(uncertainty: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> float:
    """AUROC of ``uncertainty`` as a score for finding wrong pixels (``pred != gt``).

    Equals the probability that a randomly chosen wrong pixel has a higher uncertainty than a
    randomly chosen right pixel, ties counting one half (Mann-Whitney U from average ranks,
    ``scipy.stats.rankdata``). 1.0: every error is more uncertain than every correct pixel;
    0.5: uninformative.

    Returns NaN when there are no wrong pixels or no right pixels (AUROC is undefined with one
    class); aggregate with ``np.nanmean``.

    Parameters
    ----------
    uncertainty
        per-pixel uncertainty (any real scale, e.g. std over generations).
    pred, gt
        masks or label images of the same shape.
    """
    u, wrong = _uncertainty_inputs(uncertainty, pred, gt)
    n_pos = int(np.count_nonzero(wrong))
    n_neg = wrong.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(u)  # average ranks for ties
    u_stat = float(ranks[wrong].sum()) - n_pos * (n_pos + 1) / 2.0
    return u_stat / (n_pos * n_neg)


class ErrorRateCurve(NamedTuple):
    """Error rate per uncertainty bin; arrays of shape ``(n_bins,)`` (edges ``(n_bins + 1,)``).

    ``error_rate`` is NaN for empty bins.
    """

    bin_centres: np.ndarray
    error_rate: np.ndarray
    counts: np.ndarray
    bin_edges: np.ndarray


def error_rate_by_uncertainty(
    uncertainty: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    n_bins: int = 10,
    value_range: tuple[float, float] | None = None,
) -> ErrorRateCurve:
    """Fraction of wrong pixels (``pred != gt``) in uniform bins of uncertainty.

    Parameters
    ----------
    value_range
        ``(low, high)`` of the bins; default the min/max of ``uncertainty``
        (``numpy.histogram`` conventions: the last bin is closed, values outside the range
        are not counted).
    """
    u, wrong = _uncertainty_inputs(uncertainty, pred, gt)
    n_bins = check_int(n_bins, "n_bins", 1, error=MetricError)
    edges = np.histogram_bin_edges(u, bins=n_bins, range=value_range)
    counts, _ = np.histogram(u, bins=edges)
    errors, _ = np.histogram(u, bins=edges, weights=wrong.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(counts > 0, errors / counts, np.nan)
    return ErrorRateCurve((edges[:-1] + edges[1:]) / 2.0, rate, counts.astype(np.int64), edges)


# --------------------------------------------------------------------------------------------
# accumulator
# --------------------------------------------------------------------------------------------

class SegmentationMetrics:
    """Accumulates per-sample metrics of binary segmentations and summarises them.

    Parameters
    ----------
    n_bins
        probability bins for the calibration score and ECE.
    boundary_tolerances
        pixel tolerances averaged by BoundF.

    Examples
    --------
    >>> m = SegmentationMetrics()
    >>> for prob, gt, unc, cls in samples:  # doctest: +SKIP
    ...     m.add(prob, gt, uncertainty=unc, class_name=cls)
    >>> m.summary()["iou"], m.per_sample[0]["boundf"]  # doctest: +SKIP
    """

    def __init__(
        self, n_bins: int = 10, boundary_tolerances: Sequence[float] = BOUNDF_TOLERANCES
    ) -> None:
        self.n_bins = check_int(n_bins, "n_bins", 1, error=MetricError)
        self.boundary_tolerances = tuple(_tolerance(t) for t in boundary_tolerances)
        if not self.boundary_tolerances:
            raise MetricError("boundary_tolerances is empty")
        self._records: list[dict[str, Any]] = []
        self._bin_sums = np.zeros((3, self.n_bins))

    def __len__(self) -> int:
        return len(self._records)

    @property
    def per_sample(self) -> list[dict[str, Any]]:
        """One dict per added sample (copies): ``index``, ``class_name``, ``n_pixels``,
        ``threshold`` and the metrics ``iou``, ``f1``, ``wcov``, ``boundf``, ``calibration``,
        ``ece``, ``uncertainty_auroc`` (NaN if no uncertainty was given or it is undefined)."""
        return [dict(r) for r in self._records]

    def add(
        self,
        pred_prob: np.ndarray,
        gt: np.ndarray,
        uncertainty: np.ndarray | None = None,
        class_name: str | None = None,
        threshold: float = 0.5,
    ) -> dict[str, Any]:
        """Score one sample and store it; returns its record (see :attr:`per_sample`).

        Parameters
        ----------
        pred_prob
            ``(H, W)`` foreground probability in ``[0, 1]`` (e.g. the mean of the
            generations); a binary mask is accepted too (its calibration is then that of a
            hard prediction).
        gt
            ``(H, W)`` binary ground truth.
        uncertainty
            optional ``(H, W)`` per-pixel uncertainty.
        class_name
            optional class (e.g. Cityscapes "car") for the class-averaged mIoU.
        threshold
            the hard prediction is ``pred_prob > threshold`` (strictly greater).
        """
        if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise MetricError(f"threshold must be in [0, 1], got {threshold!r}")
        prob = _as_probability(pred_prob, "pred_prob")
        g = _as_binary(gt, "gt")
        _check_same_shape(prob, g, ("pred_prob", "gt"))
        if prob.ndim != 2:
            raise MetricError(f"pred_prob and gt must be 2D (H, W), got shape {prob.shape}")
        pred = prob > threshold
        sums = _bin_sums(prob, g, self.n_bins)
        auroc = math.nan if uncertainty is None else uncertainty_auroc(uncertainty, pred, g)
        record: dict[str, Any] = {
            "index": len(self._records),
            "class_name": class_name,
            "n_pixels": int(g.size),
            "threshold": float(threshold),
            "iou": iou(pred, g),
            "pred_pixels": int(pred.sum()),
            "true_pixels": int(g.sum()),
            "f1": dice(pred, g),
            "wcov": wcov(pred, g),
            "boundf": boundf(pred, g, self.boundary_tolerances),
            "calibration": _calibration_from_sums(sums),
            "ece": _ece_from_sums(sums),
            "uncertainty_auroc": auroc,
        }
        self._bin_sums += sums
        self._records.append(record)
        return dict(record)

    def summary(self) -> dict[str, Any]:
        """Aggregated metrics.

        Keys:
            ``n``: number of samples.
            ``iou``, ``f1``, ``wcov``, ``boundf``: mean over samples, with ``<key>_std``
            (population std, ddof=0).
            ``miou``: class-averaged mIoU (:func:`miou`) over the samples that have a
            ``class_name``, or the mean IoU over images if none has; ``miou_kind`` says which
            (``"classes"``/``"images"``); ``per_class_iou`` and ``per_class_n`` per class.
            ``calibration``, ``ece``: pooled over all pixels of all samples (one reliability
            diagram); ``calibration_mean``/``calibration_std``: across samples.
            ``uncertainty_auroc``, ``uncertainty_auroc_std``: over the samples where it is
            defined, ``n_uncertainty_auroc`` of them (NaN if none).
            ``reliability``: pooled :class:`ReliabilityCurve`.
        """
        if not self._records:
            raise MetricError("no samples added; call add() before summary()")
        out: dict[str, Any] = {"n": len(self._records)}
        for key in ("iou", "f1", "wcov", "boundf"):
            vals = np.array([r[key] for r in self._records], dtype=float)
            out[key], out[f"{key}_std"] = float(vals.mean()), float(vals.std())

        per_class: dict[str, list[float]] = {}
        for r in self._records:
            if r["class_name"] is not None:
                per_class.setdefault(str(r["class_name"]), []).append(r["iou"])
        if per_class:
            out["miou"], out["miou_kind"] = miou(per_class), "classes"
        else:
            out["miou"], out["miou_kind"] = out["iou"], "images"
        out["per_class_iou"] = {k: float(np.mean(v)) for k, v in sorted(per_class.items())}
        out["per_class_n"] = {k: len(v) for k, v in sorted(per_class.items())}

        out["calibration"] = _calibration_from_sums(self._bin_sums)
        out["ece"] = _ece_from_sums(self._bin_sums)
        cal = np.array([r["calibration"] for r in self._records], dtype=float)
        out["calibration_mean"], out["calibration_std"] = float(cal.mean()), float(cal.std())
        out["reliability"] = _curve_from_sums(self._bin_sums)

        aurocs = np.array([r["uncertainty_auroc"] for r in self._records], dtype=float)
        defined = aurocs[np.isfinite(aurocs)]
        out["n_uncertainty_auroc"] = int(defined.size)
        out["uncertainty_auroc"] = float(defined.mean()) if defined.size else math.nan
        out["uncertainty_auroc_std"] = float(defined.std()) if defined.size else math.nan
        return out
