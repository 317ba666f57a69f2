"""Protocol runner: score any predictor on a fixed set of prompts, the way the paper does.

Pipeline
--------
1. **Items** (:class:`EvalItem`): an image, its target mask and the object's tight box. They come
   from the deterministic synthetic held-out set (:func:`synthetic_items`) or from a dataset
   reader (:func:`dataset_items`).
2. **Cropping** (:func:`crop_items`), done *once* per protocol and reused by every method
   and every (generations, steps) combination:

   * ``tight`` / ``expansion`` (paper section 5): the prompt is the tight box of the
     ground-truth object; the crop is that box (tight) or 15 % larger (expansion), resampled to
     the model size (:func:`segdiff_core.data.crops.prompt_crop`). The evaluated region is the
     crop's footprint on the original image (the crop clipped to the image) and the target is
     the ground truth there.
   * ``windows`` (MoNuSeg): the whole image is resized to a working size (default twice the
     model size, the paper's 512 for 256 windows), cut into model-size windows (stride = window
     by default), and the predictions are stitched back to the original resolution; the
     target is the full foreground mask.

3. **Methods** (:class:`Method`): a name plus a predictor callable ``inputs -> list of
   predictions``. A ``"model"``-resolution method receives the model-size patches (one per
   prompt, or every window of an image) and its maps are pasted back bilinearly
   (:func:`~segdiff_core.data.crops.paste_back`) or stitched
   (:meth:`~segdiff_core.data.crops.WindowGrid.stitch`) onto the evaluated region. A
   ``"native"`` method receives the evaluated region at the original resolution (the crop
   footprint, or the whole image) and returns maps of that shape. SegDiff
   (:func:`segdiff_method`) and the Otsu baseline
   (:mod:`segdiff_core.evaluation.baselines`) both go through :func:`run_method`, so they
   are scored on exactly the same pixels.
4. **Scoring**: :class:`segdiff_core.metrics.SegmentationMetrics` overall and per group
   (synthetic style family, or dataset class), plus timing.

A prediction may be a probability map (``(h, w)`` float in ``[0, 1]`` or bool), a
:class:`Prediction` (probability, optional uncertainty, threshold) or a
:class:`segdiff_core.ensemble.EnsembleResult` (its ``std`` is used as the uncertainty).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from segdiff_core.config import InferenceConfig
from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import PAPER_MARGIN, CropGeometry, CropProtocol, WindowGrid, paste_back, prompt_crop
from segdiff_core.data.readers import Sample
from segdiff_core.data.prompt import box_in_crop
from segdiff_core.ensemble import EnsembleResult
from segdiff_core.metrics import SegmentationMetrics
from segdiff_core.validation import check_float, check_int

if TYPE_CHECKING:  # pragma: no cover - typing only
    from segdiff_core.segmenter import Segmenter

__all__ = [
    "PROTOCOLS",
    "DEFAULT_EVAL_SEED",
    "EvaluationError",
    "EvalProtocol",
    "EvalItem",
    "PreparedItem",
    "Prediction",
    "Predictor",
    "Method",
    "MethodResult",
    "synthetic_items",
    "dataset_items",
    "crop_items",
    "prepare_items",
    "run_method",
    "evaluate",
    "segdiff_method",
    "format_table",
    "to_jsonable",
]

PROTOCOLS: tuple[str, ...] = ("tight", "expansion", "windows")
"""Evaluation protocols: box prompts with a tight or 15 %-expanded crop, or sliding windows."""

DEFAULT_EVAL_SEED = 2024
"""Seed of the synthetic held-out prompt set (disjoint from the training streams)."""

RESOLUTIONS = ("model", "native")


class EvaluationError(ValueError):
    """An evaluation that cannot run: no samples, bad settings, or a predictor that returns
    the wrong number or shape of maps."""


# --------------------------------------------------------------------------------------------
# protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalProtocol:
    """How an item becomes model inputs and which pixels are scored.

    Attributes
    ----------
    name
        ``'tight'``, ``'expansion'`` or ``'windows'``.
    margin
        crop margin of the expansion protocol (paper: 0.15).
    work_size
        windows protocol: side of the working resolution the whole image is
        resized to; None = twice the model size (paper: 1000 px images -> 512, 256 windows).
    stride
        windows protocol: window stride at the working resolution; None = the window
        size (non-overlapping; overlaps are averaged when smaller).
    """

    name: str
    margin: float = PAPER_MARGIN
    work_size: int | None = None
    stride: int | None = None

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise EvaluationError(
                f"unknown protocol {self.name!r}; choose one of {', '.join(PROTOCOLS)}"
            )
        check_float(self.margin, "protocol margin", -1.0, lo_open=True, error=EvaluationError)
        for key in ("work_size", "stride"):
            if getattr(self, key) is not None:
                check_int(getattr(self, key), f"protocol {key}", 1, error=EvaluationError)

    @property
    def is_prompt(self) -> bool:
        """True for the box-prompt protocols (tight, expansion)."""
        return self.name != "windows"

    def crop_protocol(self) -> CropProtocol:
        """The :class:`CropProtocol` of a box-prompt protocol."""
        if not self.is_prompt:
            raise EvaluationError("the windows protocol has no box crop")
        return CropProtocol.named(self.name, self.margin)

    def window_grid(self, image_shape: tuple[int, ...], window: int) -> WindowGrid:
        """The :class:`WindowGrid` of the windows protocol for an image and a model size."""
        work = self.work_size if self.work_size is not None else 2 * window
        return WindowGrid.create(image_shape, window=window, stride=self.stride, work_size=work)

    def describe(self) -> str:
        """One-line human description."""
        if self.name == "tight":
            return "tight (crop = box)"
        if self.name == "expansion":
            return f"expansion (crop {self.margin:.0%} larger than the box)"
        work = "2x model size" if self.work_size is None else f"{self.work_size}px"
        stride = "= window size" if self.stride is None else f"{self.stride}px"
        return f"windows (whole image resized to {work}, model-size windows, stride {stride}, stitched)"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# items
# --------------------------------------------------------------------------------------------


EvalItem = Sample
"""One evaluation sample before cropping: the readers' :class:`~segdiff_core.data.readers.Sample`
(``image``, bool ``mask``, tight ``box`` of the object or None for the windows protocol,
``name``, ``class_name`` for the class-averaged mIoU, ``group`` for the breakdown)."""


def synthetic_items(
    styles: Sequence[str],
    n_per_style: int,
    *,
    tile_size: int = 256,
    min_area: int = 16,
    objects_per_tile: int = 6,
    task: str = "prompt",
    eval_seed: int = DEFAULT_EVAL_SEED,
    max_tiles_per_style: int | None = None,
) -> list[EvalItem]:
    """A deterministic held-out synthetic set, ``n_per_style`` items for each style family.

    Tile ``t`` of style ``s`` is drawn from ``SeedSequence(entropy=eval_seed,
    spawn_key=(STYLES.index(s), t))``. Training draws from ``SeedSequence(entropy=seed,
    spawn_key=(stream, rank, step))`` (3-element keys), so the two streams never coincide, and
    a style gets the same tiles whichever other styles are evaluated.

    ``task='prompt'``: up to ``objects_per_tile`` objects of at least ``min_area`` pixels are
    drawn per tile (without replacement, in label order) until the style has ``n_per_style``
    prompts; each item's box is the object's tight box. ``task='semantic'``: one item per tile,
    the target is all foreground.

    Raises
    ------
    EvaluationError
        bad arguments, or no objects found in ``max_tiles_per_style`` tiles
        (default ``50 * n_per_style + 50``).
    """
    from segdiff_core.data.readers import pick_objects
    from segdiff_core.data.synthetic import STYLES, generate_tile, tile_rng

    check_int(n_per_style, "the number of samples per style", 1, error=EvaluationError)
    if not styles:
        raise EvaluationError("no synthetic styles given; use e.g. --data.styles fluorescence,he,ihc")
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        raise EvaluationError(f"unknown synthetic style(s) {unknown}; choose from {', '.join(STYLES)}")
    if task not in ("prompt", "semantic"):
        raise EvaluationError(f"task must be 'prompt' or 'semantic', got {task!r}")
    check_int(objects_per_tile, "objects_per_tile", 1, error=EvaluationError)
    max_tiles = max_tiles_per_style if max_tiles_per_style is not None else 50 * n_per_style + 50
    items: list[EvalItem] = []
    for style in dict.fromkeys(styles):  # unique, in the given order
        count, tile_index = 0, 0
        while count < n_per_style:
            if tile_index >= max_tiles:
                raise EvaluationError(
                    f"found only {count} objects of >= {min_area} px in {max_tiles} synthetic "
                    f"'{style}' tiles of {tile_size} px; use larger tiles or a smaller min_area"
                )
            rng = tile_rng(eval_seed, style, tile_index)
            tile = generate_tile(style, tile_size, rng)
            name = f"{style}/tile{tile_index:04d}"
            tile_index += 1
            if task == "semantic":
                items.append(EvalItem(tile.image, tile.labels > 0, None, name, group=style))
                count += 1
                continue
            picked = np.sort(pick_objects(tile.labels, min(objects_per_tile, n_per_style - count), rng, min_area))
            for obj in picked:
                mask = tile.labels == obj
                items.append(EvalItem(tile.image, mask, Box.from_mask(mask), f"{name}#{int(obj)}", group=style))
            count += picked.size
    return items


def dataset_items(
    dataset: Sequence[Any],
    *,
    n: int | None = None,
    seed: int = DEFAULT_EVAL_SEED,
    require_box: bool = True,
) -> tuple[list[EvalItem], int]:
    """Items from a reader dataset (``Sample(image, mask, box, name, class_name, ...)``).

    Parameters
    ----------
    dataset
        a :class:`segdiff_core.data.readers.Dataset` or a Subset of one.
    n
        evaluate a deterministic random subset of ``n`` samples (drawn with ``seed``, kept
        in dataset order); None = every sample.
    require_box
        skip samples without a box (empty masks); needed by the prompt protocols.

    Returns
    -------
        ``(items, n_skipped)``. The group of an item is its ``class_name``.

    Raises
    ------
    EvaluationError
        the dataset (or the selection) has no usable sample.
    """
    total = len(dataset)
    if total == 0:
        raise EvaluationError("the dataset has no samples to evaluate")
    if n is not None:
        check_int(n, "--n", 1, error=EvaluationError)
    indices = np.arange(total)
    if n is not None and n < total:
        indices = np.sort(np.random.default_rng(int(seed)).choice(total, size=int(n), replace=False))
    items: list[EvalItem] = []
    skipped = 0
    for i in indices:
        s = dataset[int(i)]
        if require_box and s.box is None:
            skipped += 1
            continue
        items.append(dataclasses.replace(s, group=s.class_name))
    if not items:
        raise EvaluationError(
            f"none of the {len(indices)} selected samples has an object to prompt "
            "(all masks are empty)"
        )
    return items, skipped


# --------------------------------------------------------------------------------------------
# preparation (once per protocol)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedItem:
    """An item cropped for a protocol; shared by every method and setting.

    Attributes
    ----------
    name, group, class_name
        from the :class:`EvalItem`.
    model_inputs
        ``(K, S, S)`` or ``(K, S, S, C)`` float32 model-size patches: ``K = 1``
        for the prompt protocols, the number of windows for the windows protocol.
    native_input
        the evaluated region at original resolution, ``(h, w[, C])`` in the
        image's dtype (the crop footprint, or the whole image).
    target
        ``(h, w)`` bool ground truth on the evaluated region.
    geometry
        crop geometry (prompt protocols) or None.
    grid
        window grid (windows protocol) or None.
    """

    name: str
    group: str | None
    class_name: str | None
    model_inputs: np.ndarray
    native_input: np.ndarray
    target: np.ndarray
    geometry: CropGeometry | None = None
    grid: WindowGrid | None = None
    prompt_box: Box | None = None

    @property
    def input_boxes(self) -> list[Box | None]:
        """The prompt box on the model grid for each model input (None for windows)."""
        return [self.prompt_box] * self.n_inputs

    @property
    def n_inputs(self) -> int:
        return int(self.model_inputs.shape[0])

    def to_region(self, maps: np.ndarray) -> np.ndarray:
        """Model-resolution maps ``(K, S, S)`` -> float32 ``(h, w)`` on the evaluated region
        (bilinear paste-back of the crop, or stitching of the windows)."""
        maps = np.asarray(maps, dtype=np.float32)
        if self.geometry is not None:
            _, pasted = paste_back(maps[0], self.geometry, order=1)
            return pasted
        assert self.grid is not None
        return self.grid.stitch(maps, order=1)


def _crop_item(item: EvalItem, protocol: EvalProtocol, size: int) -> PreparedItem:
    image = np.asarray(item.image)
    mask = np.asarray(item.mask).astype(bool, copy=False)
    if image.ndim not in (2, 3) or mask.shape != image.shape[:2]:
        raise EvaluationError(
            f"{item.name}: image {image.shape} and mask {mask.shape} must share (H, W)"
        )
    if protocol.is_prompt:
        if item.box is None:
            raise EvaluationError(f"{item.name}: the {protocol.name} protocol needs a box prompt")
        patch, geom = prompt_crop(image, item.box, size, protocol.crop_protocol(), order=1)
        rows, cols = geom.footprint
        return PreparedItem(
            item.name, item.group, item.class_name, patch[None].astype(np.float32, copy=False),
            image[rows, cols], mask[rows, cols], geometry=geom, prompt_box=box_in_crop(geom, item.box),
        )
    grid = protocol.window_grid(image.shape, size)
    windows = grid.cut(image, order=1).astype(np.float32, copy=False)
    return PreparedItem(item.name, item.group, item.class_name, windows, image, mask, grid=grid)


def crop_items(
    items: Iterable[EvalItem], protocol: EvalProtocol, model_size: int, *, progress: bool = False
) -> list[PreparedItem]:
    """Crop every item once for ``protocol`` at ``model_size`` (see the module docstring)."""
    items = list(items)
    if not items:
        raise EvaluationError("no samples to evaluate")
    return [
        _crop_item(it, protocol, int(model_size))
        for it in tqdm(items, desc="cropping", unit="prompt", disable=not progress, leave=False)
    ]


prepare_items = crop_items
"""Former name of :func:`crop_items`."""


# --------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """One predicted map.

    Attributes
    ----------
    probability
        ``(h, w)`` foreground probability in ``[0, 1]`` (or a 0/1 mask).
    uncertainty
        optional ``(h, w)`` per-pixel uncertainty (for the uncertainty AUROC).
    threshold
        the hard mask is ``probability > threshold``.
    """

    probability: np.ndarray
    uncertainty: np.ndarray | None = None
    threshold: float = 0.5


Predictor = Callable[[list[np.ndarray]], Sequence["np.ndarray | Prediction | EnsembleResult"]]
"""``inputs -> one prediction per input``: a probability map, :class:`Prediction` or
:class:`EnsembleResult`."""


def _as_prediction(out: Any) -> Prediction:
    if isinstance(out, Prediction):
        return out
    if isinstance(out, EnsembleResult):
        return Prediction(out.probability, out.std, out.threshold)
    arr = np.asarray(out)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    return Prediction(arr)


@dataclass(frozen=True)
class Method:
    """A predictor under a name.

    Attributes
    ----------
    name
        short method name (``'segdiff'``, ``'otsu'``).
    predict
        the :data:`Predictor`.
    resolution
        ``'model'`` (gets model-size patches, maps are pasted back/stitched) or
        ``'native'`` (gets the evaluated region at original resolution, returns maps of
        its shape).
    settings
        values reported with the results (generations, steps, sampler ...).
    """

    name: str
    predict: Predictor
    resolution: str = "model"
    settings: Mapping[str, Any] = field(default_factory=dict)
    takes_boxes: bool = False  # predict(inputs, boxes=...) gets each input's prompt box

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise EvaluationError(
                f"method resolution must be one of {RESOLUTIONS}, got {self.resolution!r}"
            )

    @property
    def label(self) -> str:
        """Name plus settings, e.g. ``'segdiff G=4 steps=10 ddim'``."""
        s = self.settings
        if "generations" in s and "steps" in s:
            return f"{self.name} G={s['generations']} steps={s['steps']} {s.get('sampler', '')}".strip()
        return self.name


class _SegDiffPredictor:
    """Calls :meth:`Segmenter.segment_batch`; call ``k`` uses a seed derived from
    ``(seed, k)``, so a run is reproducible for a given chunking of the items."""

    def __init__(self, segmenter: "Segmenter", inference: InferenceConfig, seed: int, batch_images: int) -> None:
        self.segmenter = segmenter
        self.inference = inference
        self.seed = int(seed)
        self.batch_images = int(batch_images)
        self.calls = 0

    def __call__(self, patches: list[np.ndarray], boxes: list[Box | None] | None = None) -> list[EnsembleResult]:
        call_seed = int(np.random.SeedSequence(self.seed, spawn_key=(self.calls,)).generate_state(1)[0])
        self.calls += 1
        return self.segmenter.segment_batch(
            patches, self.inference, seed=call_seed, batch_images=self.batch_images, boxes=boxes
        )


def segdiff_method(
    segmenter: "Segmenter",
    generations: int,
    steps: int,
    sampler: str | None = None,
    *,
    seed: int = 0,
    batch_images: int = 8,
) -> Method:
    """SegDiff with the checkpoint's inference settings and ``generations``/``steps``/``sampler``
    replaced; the uncertainty is the std over generations."""
    changes: dict[str, Any] = {"generations": int(generations), "steps": int(steps)}
    if sampler is not None:
        changes["sampler"] = sampler
    inference = segmenter.inference.replace(**changes)
    settings = {
        "generations": inference.generations,
        "steps": inference.steps,
        "sampler": inference.sampler,
        "eta": inference.eta,
        "threshold": inference.threshold,
        "seed": int(seed),
    }
    predictor = _SegDiffPredictor(segmenter, inference, seed, batch_images)
    return Method("segdiff", predictor, "model", settings, takes_boxes=True)


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


@dataclass
class MethodResult:
    """Scores of one method on the prepared items.

    Attributes
    ----------
    name, label, settings
        from the :class:`Method`.
    summary
        :meth:`SegmentationMetrics.summary` over all items.
    groups
        per-group summaries (style family / class), in first-seen order.
    per_sample
        one record per item (``name``, ``group`` and the metrics).
    seconds
        wall time of prediction plus paste-back (cropping is shared and excluded).
    """

    name: str
    label: str
    settings: dict[str, Any]
    summary: dict[str, Any]
    groups: dict[str, dict[str, Any]]
    per_sample: list[dict[str, Any]]
    seconds: float

    @property
    def n(self) -> int:
        return int(self.summary["n"])

    @property
    def seconds_per_prompt(self) -> float:
        return self.seconds / max(self.n, 1)

    def to_dict(self, per_sample: bool = True) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None, arrays -> lists)."""
        d: dict[str, Any] = {
            "method": self.name,
            "label": self.label,
            "settings": dict(self.settings),
            "n": self.n,
            "metrics": self.summary,
            "groups": self.groups,
            "timing": {"seconds": self.seconds, "seconds_per_prompt": self.seconds_per_prompt},
        }
        if per_sample:
            d["per_sample"] = self.per_sample
        return to_jsonable(d)


def _region_predictions(
    item: PreparedItem, preds: list[Prediction], method: Method
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Probability, uncertainty (or None) and threshold of one item on its evaluated region."""
    threshold = float(preds[0].threshold)
    if method.resolution == "native":
        prob = np.asarray(preds[0].probability, dtype=np.float32)
        unc = preds[0].uncertainty
        unc = None if unc is None else np.asarray(unc, dtype=np.float32)
    else:
        size = item.model_inputs.shape[1:3]
        for p in preds:
            if np.shape(p.probability) != size:
                raise EvaluationError(
                    f"{method.label}: predicted map of shape {np.shape(p.probability)} for "
                    f"{item.name}, expected the model size {size}"
                )
        prob = item.to_region(np.stack([np.asarray(p.probability, dtype=np.float32) for p in preds]))
        uncs = [p.uncertainty for p in preds]
        unc = None if any(u is None for u in uncs) else item.to_region(np.stack(uncs))
    if prob.shape != item.target.shape:
        raise EvaluationError(
            f"{method.label}: predicted map of shape {prob.shape} for {item.name}, expected "
            f"{item.target.shape} (the evaluated region)"
        )
    return np.clip(prob, 0.0, 1.0), unc, threshold


def run_method(
    items: Sequence[PreparedItem],
    method: Method,
    *,
    chunk_size: int = 8,
    progress: bool = False,
    n_bins: int = 10,
) -> MethodResult:
    """Predict every item with ``method`` (``chunk_size`` items per predictor call) and score it.

    Raises
    ------
    EvaluationError
        no items, or the predictor returned the wrong number/shape of maps.
    """
    if not items:
        raise EvaluationError("no samples to evaluate")
    check_int(chunk_size, "chunk_size", 1, error=EvaluationError)
    overall = SegmentationMetrics(n_bins=n_bins)
    by_group: dict[str, SegmentationMetrics] = {}
    records: list[dict[str, Any]] = []
    seconds = 0.0
    with tqdm(total=len(items), desc=method.label, unit="prompt", disable=not progress) as bar:
        for start in range(0, len(items), chunk_size):
            chunk = items[start : start + chunk_size]
            if method.resolution == "model":
                inputs = [w for it in chunk for w in it.model_inputs]
            else:
                inputs = [it.native_input for it in chunk]
            t0 = time.perf_counter()
            if method.takes_boxes and method.resolution == "model":
                raw = method.predict(inputs, boxes=[b for it in chunk for b in it.input_boxes])  # type: ignore[call-arg]
            else:
                raw = method.predict(inputs)
            outputs = [_as_prediction(o) for o in raw]
            if len(outputs) != len(inputs):
                raise EvaluationError(
                    f"{method.label}: the predictor returned {len(outputs)} maps for {len(inputs)} inputs"
                )
            k = 0
            regions = []
            for it in chunk:
                n_in = it.n_inputs if method.resolution == "model" else 1
                regions.append(_region_predictions(it, outputs[k : k + n_in], method))
                k += n_in
            seconds += time.perf_counter() - t0
            for it, (prob, unc, thr) in zip(chunk, regions):
                rec = overall.add(prob, it.target, unc, class_name=it.class_name, threshold=thr)
                if it.group is not None:
                    by_group.setdefault(it.group, SegmentationMetrics(n_bins=n_bins)).add(
                        prob, it.target, unc, class_name=it.class_name, threshold=thr
                    )
                records.append({"name": it.name, "group": it.group, **rec})
            bar.update(len(chunk))
    return MethodResult(
        method.name, method.label, dict(method.settings), overall.summary(),
        {g: m.summary() for g, m in by_group.items()}, records, seconds,
    )


def evaluate(
    items: Sequence[PreparedItem],
    methods: Iterable[Method],
    *,
    chunk_size: int = 8,
    progress: bool = False,
) -> list[MethodResult]:
    """:func:`run_method` for every method on the same prepared items."""
    return [run_method(items, m, chunk_size=chunk_size, progress=progress) for m in methods]


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Recursively convert to JSON-safe values: NaN/inf -> None, numpy -> Python,
    tuples/NamedTuples -> lists/dicts, arrays -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return to_jsonable(obj._asdict())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(float(value) * scale, spec)


TABLE_COLUMNS: tuple[tuple[str, str, str, float], ...] = (
    # header, summary key, format, scale
    ("IoU", "iou", ".2f", 100.0),
    ("F1", "f1", ".2f", 100.0),
    ("WCov", "wcov", ".2f", 100.0),
    ("BoundF", "boundf", ".2f", 100.0),
    ("Calib", "calibration", ".4f", 1.0),
    ("U-AUROC", "uncertainty_auroc", ".3f", 1.0),
)


def _render(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def format_table(results: Sequence[MethodResult], group_title: str = "group", unit: str = "prompt") -> str:
    """Text table: one row per result with IoU, F1, WCov, BoundF (percent), the paper's
    calibration score (lower is better), the uncertainty AUROC and milliseconds per prompt; then,
    when there are several groups, the IoU (percent) of each group and its sample count.
    ``unit`` names what one sample is in the timing column (``'prompt'``, ``'image'``)."""
    header = ["method", "G", "steps", "sampler", *[c[0] for c in TABLE_COLUMNS], f"ms/{unit}", "n"]
    rows = []
    for r in results:
        s = r.settings
        rows.append([
            r.name,
            str(s.get("generations", "-")),
            str(s.get("steps", "-")),
            str(s.get("sampler", "-")),
            *[_fmt(r.summary.get(key), spec, scale) for _, key, spec, scale in TABLE_COLUMNS],
            _fmt(r.seconds_per_prompt, ".1f", 1000.0),
            str(r.n),
        ])
    text = _render(header, rows, left=4)
    groups = list(dict.fromkeys(g for r in results for g in r.groups))
    if len(groups) > 1:
        counts = {g: next(r.groups[g]["n"] for r in results if g in r.groups) for g in groups}
        gheader = [f"IoU by {group_title}", *[f"{g} (n={counts[g]})" for g in groups]]
        grows = [
            [r.label, *[_fmt(r.groups[g]["iou"], ".2f", 100.0) if g in r.groups else "n/a" for g in groups]]
            for r in results
        ]
        text += "\n\n" + _render(gheader, grows, left=1)
    return text
