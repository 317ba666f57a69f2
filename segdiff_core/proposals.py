"""Automatic instance proposals: find every object in an image, then segment each with SegDiff.

The pipeline (all steps are small functions that can be used on their own):

1. **Foreground** (:func:`semantic_probability`): SegDiff on sliding windows (the MoNuSeg
   protocol, :class:`~segdiff_core.data.crops.WindowGrid`), stitched into an (H, W)
   probability; or, with ``foreground="otsu"``, a global Otsu threshold
   (:func:`~segdiff_core.evaluation.baselines.otsu_foreground`).
2. **Instance split** (:func:`split_instances`): touching objects merge in a semantic mask;
   they are separated by a watershed of the distance transform seeded by its h-maxima
   (:func:`scipy.ndimage.distance_transform_edt`, :func:`skimage.morphology.h_maxima`,
   :func:`skimage.segmentation.watershed`).
3. **One box per instance** (:func:`instance_boxes`, :func:`skimage.measure.regionprops`).
4. **SegDiff per box, batched** (:func:`segment_boxes`): every box is cropped with the prompt
   protocol and pushed through :meth:`Segmenter.segment_batch` ``batch_size`` at a time.
5. **Assembly** (:func:`assemble`): each object's probability is pasted back; a pixel goes to
   the object with the highest probability above the threshold; each object keeps its
   largest connected piece. The result is an :class:`InstanceResult`: instance labels, a
   probability and an uncertainty map, and one :class:`ObjectRecord` per object with its
   box and scores.

:func:`classical_instances` is the classical baseline the quality benchmark compares against
(Otsu foreground + the same distance-transform watershed).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu
from skimage.measure import regionprops
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from segdiff_core.config import InferenceConfig
from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import PAPER_MARGIN, CropGeometry, CropProtocol, WindowGrid, paste_back, prompt_crop
from segdiff_core.data.prompt import box_in_crop
from segdiff_core.ensemble import EnsembleResult
from segdiff_core.evaluation.baselines import otsu_foreground, to_grayscale
from segdiff_core.objectness import assess_object
from segdiff_core.scoring import ScoreCalibration, calibration_for, prompt_box_in_model, score_object

__all__ = [
    "FOREGROUNDS",
    "ProposalError",
    "ProposalSettings",
    "ObjectRecord",
    "InstanceResult",
    "semantic_probability",
    "stain_image",
    "stain_foreground",
    "split_instances",
    "instance_boxes",
    "segment_boxes",
    "assemble",
    "find_objects",
    "propose_boxes",
    "segment_prompts",
    "classical_instances",
    "match_instances",
]

FOREGROUNDS: tuple[str, ...] = ("auto", "segdiff", "stain", "otsu")
"""Ways to get the foreground that the instance split works on: ``segdiff`` windows,
``stain`` (Otsu of the background-subtracted nuclear stain, :func:`stain_foreground`), plain
global ``otsu`` of the luminance (the classical baseline's foreground), or ``auto``: SegDiff
windows for a model trained on the semantic (windows) task, ``stain`` for a box-prompt model
(whose windows foreground is poor: docs/predict-quality.md)."""

Progress = Callable[[int, int], None]


class ProposalError(ValueError):
    """Bad settings or inputs for automatic proposals."""


@dataclass(frozen=True)
class ProposalSettings:
    """Every setting of the automatic mode (one object, saved beside the outputs).

    Attributes
    ----------
    foreground
        one of :data:`FOREGROUNDS`.
    window_scale
        image pixels per model pixel for the foreground windows.
    window_overlap
        half-window stride, overlaps averaged (no seams).
    window_generations
        ensemble size for the foreground windows (1 is enough for a mask).
    window_steps
        sampling steps for the foreground windows.
    background_sigma
        ``stain`` foreground: Gaussian sigma (px) of the background that is subtracted
        before the threshold (a few nucleus diameters; 0 = none).
    h
        h-maxima height of the (smoothed) distance transform, in pixels; larger values
        merge more, smaller split more (0.5: chosen on tuning tiles of the training
        families, ``benchmarks/tune_predict_proposals.py``).
    smooth
        Gaussian sigma (px) applied to the distance transform before the maxima.
    min_area
        objects (proposals and final masks) smaller than this are dropped (px).
    box_scale
        each proposal box is scaled about its centre by this factor before it becomes a
        prompt (the bundled model trained on boxes 0.85-1.3x the object's).
    margin
        crop margin of the per-object prompts (the prompt protocol's expansion).
    batch_size
        prompts per network batch.
    seed
        seed of all random draws (foreground windows: ``seed``; objects: ``seed + 1``).
    """

    foreground: str = "auto"
    window_scale: float = 1.0
    window_overlap: bool = True
    window_generations: int = 1
    window_steps: int = 5
    background_sigma: float = 20.0
    h: float = 0.5
    smooth: float = 1.0
    min_area: int = 16
    box_scale: float = 1.0
    margin: float = PAPER_MARGIN
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.foreground not in FOREGROUNDS:
            raise ProposalError(f"foreground must be one of {FOREGROUNDS}, got {self.foreground!r}")
        if not self.window_scale > 0:
            raise ProposalError(f"window_scale must be > 0, got {self.window_scale!r}")
        if self.h < 0 or self.smooth < 0 or self.min_area < 0 or self.background_sigma < 0:
            raise ProposalError("h, smooth, min_area and background_sigma must be >= 0")
        if not self.box_scale > 0:
            raise ProposalError(f"box_scale must be > 0, got {self.box_scale!r}")
        if self.batch_size < 1 or self.window_generations < 1 or self.window_steps < 1:
            raise ProposalError("batch_size, window_generations and window_steps must be >= 1")
        if not self.margin > -1:
            raise ProposalError(f"margin must be > -1, got {self.margin!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "ProposalSettings":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ObjectRecord:
    """One segmented object: its label, the prompt box and its scores.

    ``box`` is the prompt ``(y0, x0, y1, x1)`` in image pixels; ``area`` is the final mask's
    pixel count; ``mean_probability`` and ``uncertainty`` (mean ensemble std) are averaged
    over the final mask; ``score`` is the review score of :mod:`segdiff_core.scoring` (in
    [0, 1], higher = more likely correct; ``score_kind`` says whether it is a calibrated
    predicted IoU or the generations' agreement); ``flag`` is the objectness rule's reason
    why the result may not be an object ('' = none).
    """

    label: int
    box: tuple[float, float, float, float]
    area: int
    centroid: tuple[float, float]
    mean_probability: float
    uncertainty: float
    score: float
    score_kind: str = ""
    flag: str = ""

    def as_row(self) -> dict[str, Any]:
        y0, x0, y1, x1 = self.box
        cy, cx = self.centroid
        return {
            "label": self.label, "y0": y0, "x0": x0, "y1": y1, "x1": x1, "area": self.area,
            "centroid_y": cy, "centroid_x": cx, "mean_probability": self.mean_probability,
            "uncertainty": self.uncertainty, "score": self.score, "score_kind": self.score_kind,
            "flag": self.flag,
        }


@dataclass
class InstanceResult:
    """Instance segmentation of one image.

    Attributes
    ----------
    labels
        (H, W) int32, 0 = background, objects ``1..N`` in ``objects`` order.
    probability
        (H, W) float32, the winning object's probability at each pixel.
    uncertainty
        (H, W) float32, the winning object's ensemble std at each pixel.
    objects
        one :class:`ObjectRecord` per label.
    """

    labels: np.ndarray
    probability: np.ndarray
    uncertainty: np.ndarray
    objects: list[ObjectRecord] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# 1. foreground
# --------------------------------------------------------------------------------------------


def _window_grid(shape: tuple[int, int], size: int, settings: ProposalSettings) -> WindowGrid:
    h, w = shape
    work = (max(1, round(h / settings.window_scale)), max(1, round(w / settings.window_scale)))
    stride = max(1, size // 2) if settings.window_overlap else size
    return WindowGrid.create((h, w), window=size, stride=stride, work_size=work)


def semantic_probability(
    segmenter: Any, image: np.ndarray, settings: ProposalSettings | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Foreground probability (H, W) float32 of ``image`` (H, W[, C]) from SegDiff windows.

    The image is resized by ``1 / window_scale``, cut into model-sized windows (half-window
    stride with ``window_overlap``), each window is sampled (``window_generations``,
    ``window_steps``) and the window probabilities are stitched (overlaps averaged).
    """
    settings = settings or ProposalSettings()
    size = segmenter.input_size
    grid = _window_grid(tuple(image.shape[:2]), size, settings)
    windows = grid.cut(image, order=1)
    inf = segmenter.inference.replace(generations=settings.window_generations, steps=settings.window_steps)
    probs = []
    for s in range(0, len(windows), settings.batch_size):
        chunk = list(windows[s : s + settings.batch_size])
        results = segmenter.segment_batch(chunk, inf, seed=settings.seed + s, batch_images=len(chunk))
        probs.extend(r.probability for r in results)
        if progress is not None:
            progress(min(s + len(chunk), len(windows)), len(windows))
    return np.clip(grid.stitch(np.stack(probs)), 0.0, 1.0)


def stain_image(image: np.ndarray) -> np.ndarray:
    """Nuclear stain intensity of an image: higher = more stain.

    RGB(A) brightfield: haematoxylin + DAB optical density of the colour deconvolution
    (:func:`skimage.color.rgb2hed`), so dark-blue and brown nuclei are bright and pink
    eosin or white background are dark. Other images: their grayscale
    (:func:`~segdiff_core.evaluation.baselines.to_grayscale`), polarity left to the threshold.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
        Any real dtype; float RGB is taken as [0, 1] (or scaled by its maximum if above 1).

    Returns
    -------
    (H, W) float64 array
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3]
        if not np.issubdtype(rgb.dtype, np.integer):
            rgb = np.clip(rgb, 0.0, 1.0) if float(np.nanmax(rgb, initial=0.0)) <= 1.0 else rgb / max(float(rgb.max()), 1.0)
        hed = rgb2hed(rgb)
        return hed[..., 0] + hed[..., 2]
    return to_grayscale(arr)


def stain_foreground(image: np.ndarray, background_sigma: float = 20.0, sigma: float = 1.0) -> np.ndarray:
    """Foreground mask: Otsu of the background-subtracted nuclear stain.

    The stain (:func:`stain_image`) is smoothed by a Gaussian of ``sigma`` px, the local
    background (a Gaussian of ``background_sigma`` px, skipped when 0) is subtracted so that
    dim nuclei in a dark region and bright haze do not share one global threshold, and
    :func:`skimage.filters.threshold_otsu` splits the result. For an RGB image the stain class
    is the foreground; for a grayscale image the smaller class is (nuclei cover less of an
    image than the background, as :func:`~segdiff_core.evaluation.baselines.otsu_foreground`
    assumes). Holes are filled. A constant image gives an empty mask. NaN/inf pixels (missing
    data) are filled with their channel's finite median and are never foreground.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
    background_sigma : float
        Scale (px) of the subtracted background; a few nucleus diameters.
    sigma : float
        Smoothing (px) of the stain before the threshold.

    Returns
    -------
    (H, W) bool array
    """
    arr, missing = _fill_missing(np.asarray(image))
    stain = stain_image(arr)
    g = ndimage.gaussian_filter(stain, sigma) if sigma > 0 else stain
    if background_sigma > 0:
        g = g - ndimage.gaussian_filter(stain, background_sigma)
    if not np.all(np.isfinite(g)) or float(g.max()) <= float(g.min()):
        return np.zeros(g.shape, dtype=bool)
    fg = g > threshold_otsu(g)
    rgb = arr.ndim == 3 and arr.shape[2] in (3, 4)
    if not rgb and np.count_nonzero(fg) > fg.size // 2:
        fg = ~fg
    fg = ndimage.binary_fill_holes(fg)
    return fg & ~missing if missing is not None else fg


def _fill_missing(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (H, W[, C]) with NaN/inf replaced by their channel's finite median
    (:func:`segdiff_core.data.preprocess._replace_non_finite`), and the (H, W) mask of the
    pixels that had any (None when all were finite), which are never foreground."""
    from segdiff_core.data.preprocess import _replace_non_finite

    if not np.issubdtype(image.dtype, np.floating):
        return image, None
    bad = ~np.isfinite(image)
    if not bad.any():
        return image, None
    hwc = image[..., None] if image.ndim == 2 else image
    filled = _replace_non_finite(hwc.astype(np.float64))
    return (filled[..., 0] if image.ndim == 2 else filled), (bad if image.ndim == 2 else bad.any(axis=2))


def resolve_foreground(segmenter: Any, foreground: str) -> str:
    """``"segdiff"``, ``"stain"`` or ``"otsu"`` for ``foreground`` (``"auto"`` looks at the
    model's task: ``"segdiff"`` for a semantic-task model, else ``"stain"``)."""
    if foreground != "auto":
        return foreground
    task = (getattr(segmenter, "metadata", {}) or {}).get("data", {}).get("task", "prompt")
    return "segdiff" if task == "semantic" else "stain"


def foreground_mask(
    segmenter: Any, image: np.ndarray, settings: ProposalSettings, progress: Progress | None = None
) -> np.ndarray:
    """(H, W) bool foreground by ``settings.foreground`` (see :data:`FOREGROUNDS`)."""
    kind = resolve_foreground(segmenter, settings.foreground)
    if kind == "otsu":
        return otsu_foreground(image)
    if kind == "stain":
        return stain_foreground(image, settings.background_sigma)
    threshold = segmenter.inference.threshold
    return semantic_probability(segmenter, image, settings, progress) > threshold


# --------------------------------------------------------------------------------------------
# 2.-3. instances and boxes
# --------------------------------------------------------------------------------------------


def split_instances(
    foreground: np.ndarray, h: float = 2.0, smooth: float = 1.0, min_area: int = 16
) -> np.ndarray:
    """Split a foreground mask (H, W) into instances: (H, W) int32 labels ``1..N``.

    Holes are filled, pieces smaller than ``min_area`` dropped; markers are the h-maxima
    (height ``h`` px) of the distance transform smoothed by a Gaussian of sigma ``smooth``;
    the watershed of the negated distance inside the foreground grows them into instances.
    """
    fg = np.asarray(foreground)
    if fg.ndim != 2:
        raise ProposalError(f"foreground must be a 2D mask, got shape {fg.shape}")
    fg = ndimage.binary_fill_holes(fg.astype(bool))
    if not fg.any():
        return np.zeros(fg.shape, dtype=np.int32)
    dist = ndimage.distance_transform_edt(fg)
    if smooth > 0:
        dist = ndimage.gaussian_filter(dist, smooth)
    markers, _ = ndimage.label(h_maxima(dist, h) if h > 0 else dist > 0)
    labels = watershed(-dist, markers, mask=fg)
    return _relabel(labels, min_area)


def _relabel(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Drop labels smaller than ``min_area`` px and renumber the rest ``1..N`` (int32)."""
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids[(ids != 0) & (counts >= max(1, min_area))]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lut[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    return lut[labels]


def instance_boxes(labels: np.ndarray, scale: float = 1.0) -> list[Box]:
    """One box per label of ``labels`` (H, W), in label order: the tight (pixel-edge aligned)
    box scaled about its centre by ``scale``, clipped to the image."""
    h, w = np.shape(labels)[:2]
    out = []
    for r in regionprops(np.asarray(labels)):
        y0, x0, y1, x1 = (float(v) for v in r.bbox)
        cy, cx, hy, hx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) * scale / 2, (x1 - x0) * scale / 2
        out.append(Box(max(0.0, cy - hy), max(0.0, cx - hx), min(float(h), cy + hy), min(float(w), cx + hx)))
    return out


# --------------------------------------------------------------------------------------------
# 4. SegDiff per box
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxResult:
    """One prompt's result pasted onto the image: region slices and maps over that region."""

    box: Box
    region: tuple[slice, slice]
    probability: np.ndarray
    std: np.ndarray
    score: float = float("nan")
    score_kind: str = ""
    flag: str | None = None  # why this does not look like an object (segdiff_core.objectness)


def _paste(
    result: EnsembleResult, box: Box, crop: np.ndarray, geometry: CropGeometry,
    calibration: ScoreCalibration | None,
) -> BoxResult:
    region, prob = paste_back(result.probability, geometry)
    _, std = paste_back(result.std, geometry)
    scored = score_object(result, box=prompt_box_in_model(geometry, box), calibration=calibration)
    flag = assess_object(crop, result.probability, result.std, result.threshold)
    return BoxResult(box, region, prob, std, scored.score, scored.kind, flag)


def segment_boxes(
    segmenter: Any,
    image: np.ndarray,
    boxes: Sequence[Box],
    inference: InferenceConfig | None = None,
    *,
    seed: int = 0,
    batch_size: int = 16,
    margin: float = PAPER_MARGIN,
    progress: Progress | None = None,
) -> list[BoxResult]:
    """SegDiff on every box, ``batch_size`` prompts per network batch.

    Each box is cropped with the prompt protocol (``margin`` expansion), the batch is sampled
    with one generator seeded by ``seed + first index of the batch`` (so a result does not
    depend on how many batches came before), and the maps are pasted back to image pixels.
    Each result carries the object's quality score (:func:`segdiff_core.scoring.score_object`,
    calibrated when a calibration file sits beside the model) and the objectness flag
    (:func:`segdiff_core.objectness.assess_object`; None = looks like an object).
    """
    protocol = CropProtocol(margin=margin)
    size = segmenter.input_size
    calibration, _ = calibration_for(getattr(segmenter, "source", None))
    out: list[BoxResult] = []
    for s in range(0, len(boxes), batch_size):
        chunk = boxes[s : s + batch_size]
        crops = [prompt_crop(image, b, size, protocol) for b in chunk]
        results = segmenter.segment_batch(
            [c for c, _ in crops], inference, seed=seed + s, batch_images=len(chunk), keep_generations=True,
            boxes=[box_in_crop(g, b) for b, (_, g) in zip(chunk, crops)],  # read by box-channel models
        )
        out.extend(_paste(r, b, c, g, calibration) for r, b, (c, g) in zip(results, chunk, crops))
        if progress is not None:
            progress(len(out), len(boxes))
    return out


# --------------------------------------------------------------------------------------------
# 5. assembly
# --------------------------------------------------------------------------------------------


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def assemble(
    shape: tuple[int, int], results: Sequence[BoxResult], threshold: float = 0.5, min_area: int = 1,
    drop_flagged: bool = False,
) -> InstanceResult:
    """Combine per-box results into instance labels (see the module docstring).

    A pixel belongs to the object whose probability there is highest and above
    ``threshold``; each object then keeps its largest 4-connected piece; objects with fewer
    than ``min_area`` pixels are dropped, and so are results with an objectness flag when
    ``drop_flagged`` (the automatic mode: a proposal on debris or background). Labels follow
    the order of ``results``.
    """
    if drop_flagged:
        results = [r for r in results if r.flag is None]
    h, w = int(shape[0]), int(shape[1])
    owner = np.zeros((h, w), dtype=np.int32)
    best = np.zeros((h, w), dtype=np.float32)
    unc = np.zeros((h, w), dtype=np.float32)
    for k, r in enumerate(results, start=1):
        sub = best[r.region]
        win = (r.probability > threshold) & (r.probability > sub)
        owner[r.region][win] = k
        sub[win] = r.probability[win]
        unc[r.region][win] = r.std[win]
    labels = np.zeros((h, w), dtype=np.int32)
    objects: list[ObjectRecord] = []
    for k, r in enumerate(results, start=1):
        mask = _largest_component(owner[r.region] == k)
        area = int(mask.sum())
        if area < max(1, min_area):
            continue
        label = len(objects) + 1
        labels[r.region][mask] = label
        objects.append(_record(label, r, mask, best[r.region], unc[r.region]))
    prob = np.where(labels > 0, best, 0.0).astype(np.float32)
    return InstanceResult(labels, prob, np.where(labels > 0, unc, 0.0).astype(np.float32), objects)


def _record(label: int, r: BoxResult, mask: np.ndarray, prob: np.ndarray, std: np.ndarray) -> ObjectRecord:
    ys, xs = np.nonzero(mask)
    return ObjectRecord(
        label=label,
        box=r.box.as_tuple(),
        area=int(mask.sum()),
        centroid=(float(ys.mean() + r.region[0].start), float(xs.mean() + r.region[1].start)),
        mean_probability=float(prob[mask].mean()),
        uncertainty=float(std[mask].mean()),
        score=float(r.score),
        score_kind=r.score_kind,
        flag=r.flag or "",
    )


# --------------------------------------------------------------------------------------------
# the whole pipeline
# --------------------------------------------------------------------------------------------


def segment_prompts(
    segmenter: Any,
    image: np.ndarray,
    boxes: Sequence[Box],
    settings: ProposalSettings | None = None,
    inference: InferenceConfig | None = None,
    progress: Progress | None = None,
    drop_flagged: bool = False,
) -> InstanceResult:
    """Segment given box prompts (batched) and assemble them into instance labels.

    With ``drop_flagged`` results the objectness rule flags are left out (automatic mode);
    otherwise they are kept with their ``flag`` (a user's prompt is never dropped silently).
    """
    settings = settings or ProposalSettings()
    inf = inference or segmenter.inference
    results = segment_boxes(
        segmenter, image, boxes, inf, seed=settings.seed + 1, batch_size=settings.batch_size,
        margin=settings.margin, progress=progress,
    )
    return assemble(tuple(image.shape[:2]), results, inf.threshold, settings.min_area, drop_flagged)


def find_objects(
    segmenter: Any,
    image: np.ndarray,
    settings: ProposalSettings | None = None,
    inference: InferenceConfig | None = None,
    progress: Progress | None = None,
) -> InstanceResult:
    """Automatic mode: foreground -> instances -> one box each -> SegDiff per box -> labels.

    Parameters
    ----------
    segmenter: a :class:`~segdiff_core.segmenter.Segmenter` (box-prompt model).
    image: (H, W) or (H, W, C) image, any dtype.
    settings: :class:`ProposalSettings` (defaults if None).
    inference: sampling settings for the per-object prompts (default: the model's).
    progress: called as ``progress(done, total)`` during the per-object stage.
    """
    settings = settings or ProposalSettings()
    boxes = propose_boxes(segmenter, image, settings)
    return segment_prompts(segmenter, image, boxes, settings, inference, progress, drop_flagged=True)


def propose_boxes(segmenter: Any, image: np.ndarray, settings: ProposalSettings | None = None) -> list[Box]:
    """Steps 1-3 of the automatic mode: one box per proposed instance of ``image`` (H, W[, C]).

    These are ordinary box prompts (e.g. for the plugin's "Find all objects"), in image pixels.
    """
    settings = settings or ProposalSettings()
    fg = foreground_mask(segmenter, image, settings)
    return instance_boxes(split_instances(fg, settings.h, settings.smooth, settings.min_area), settings.box_scale)


def classical_instances(image: np.ndarray, h: float = 2.0, smooth: float = 1.0, min_area: int = 16) -> np.ndarray:
    """Classical baseline: Otsu foreground + distance-transform watershed -> (H, W) int32."""
    return split_instances(otsu_foreground(image), h, smooth, min_area)


def match_instances(pred: np.ndarray, gt: np.ndarray, iou_threshold: float = 0.5) -> dict[str, float]:
    """Instance F1 at an IoU threshold and the mean IoU of the matched pairs.

    ``pred`` and ``gt`` are (H, W) instance label images (0 = background). With a threshold
    of at least 0.5 a pair is a match when its IoU exceeds the threshold (such matches are
    one-to-one). Returns ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` and
    ``mean_iou`` (NaN when nothing matched).
    """
    if iou_threshold < 0.5:
        raise ProposalError("iou_threshold must be >= 0.5 for one-to-one matches")
    p = _relabel(np.asarray(pred), 1).ravel()
    g = _relabel(np.asarray(gt), 1).ravel()
    if p.shape != g.shape:
        raise ProposalError(f"pred and gt shapes differ: {np.shape(pred)} vs {np.shape(gt)}")
    n_p, n_g = int(p.max(initial=0)), int(g.max(initial=0))
    both = (p > 0) & (g > 0)
    inter = np.bincount(p[both].astype(np.int64) * (n_g + 1) + g[both], minlength=(n_p + 1) * (n_g + 1))
    inter = inter.reshape(n_p + 1, n_g + 1)[1:, 1:].astype(float)
    area_p = np.bincount(p, minlength=n_p + 1)[1:].astype(float)
    area_g = np.bincount(g, minlength=n_g + 1)[1:].astype(float)
    union = area_p[:, None] + area_g[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    matched = iou[iou > iou_threshold]
    tp = int(matched.size)
    fp, fn = n_p - tp, n_g - tp
    prec = tp / n_p if n_p else float("nan")
    rec = tp / n_g if n_g else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else float("nan")
    return {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec, "f1": f1,
            "mean_iou": float(matched.mean()) if tp else float("nan")}
