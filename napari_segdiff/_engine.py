"""The segmentation run, as a plain generator (no Qt, no napari): what the worker thread executes.

:func:`run_segmentation` loads the model (through a :class:`ModelCache`), then segments every
:class:`BoxJob` of a :class:`RunRequest` with :meth:`Segmenter.segment_progressive`, yielding

* :class:`RunStarted` once the model is ready (the total number of denoising steps),
* :class:`StepUpdate` after *every* denoising step (so a cancel request is honoured within one
  step), carrying a :class:`PreviewPatch` at most every ``preview_interval`` seconds, and never
  at a box's last step (its result follows at once; with a one-step sampler there is no preview),
* :class:`JobFinished` with the maps of a finished box, in the image plane's pixel grid,

and returns a :class:`RunSummary`. Every failure (bad model file, channels that do not fit
the model, a device the machine lacks, a bug) ends the run with ``RunSummary.error`` set instead
of raising, so the GUI can show a notification; it is logged at ERROR level with its traceback.

Memory: a job reads only the pixels its crop needs from the image (``data[region]``, so a dask or
zarr image is read chunk by chunk), and every map it yields covers the crop, never the image.

Threads: :func:`configure_torch_threads` sets torch's intra-op thread count once per process
(the first annotator widget calls it on the GUI thread); runs never change it.

All crop/paste geometry, preprocessing, sampling and ensemble statistics come from
``segdiff_core``; this module only orchestrates them. Coordinates are those of the 2D *plane*
being segmented: ``(rows, cols)`` pixel indices, and boxes in the pixel-edge convention of
:class:`segdiff_core.data.boxes.Box`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Hashable, Sequence

import numpy as np
import torch

from segdiff_core.config import InferenceConfig
from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import CropGeometry, CropProtocol, WindowGrid, crop_to_model, paste_back
from segdiff_core.data.prompt import box_in_crop
from segdiff_core.device import resolve_device
from segdiff_core.ensemble import EnsembleResult, to_probability
from segdiff_core.objectness import assess_object, box_covers_image
from segdiff_core.scoring import (
    ScoreCalibration,
    calibration_for,
    calibration_path,
    prompt_box_in_model,
    score_object,
)
from segdiff_core.segmenter import Segmenter

from napari_segdiff._geometry import PlaneSpec
from napari_segdiff._settings import AnnotatorSettings

__all__ = [
    "ModelCache",
    "ModelInfo",
    "PlaneReader",
    "BoxJob",
    "RunRequest",
    "PreviewPatch",
    "RunStarted",
    "StepUpdate",
    "JobFinished",
    "RunSummary",
    "RunEvent",
    "run_segmentation",
    "configure_torch_threads",
]

log = logging.getLogger(__name__)

Region = tuple[slice, slice]


# --------------------------------------------------------------------------------------------
# Model cache
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What the GUI shows about the loaded model."""

    name: str
    path: str
    device: str
    input_size: int
    in_channels: int
    defaults: InferenceConfig
    num_timesteps: int

    def describe(self) -> str:
        d = self.defaults
        return (
            f"{self.name}: {self.input_size} px, {self.in_channels} channel(s), on {self.device}; "
            f"defaults {d.sampler.upper()} {d.steps} steps x {d.generations} generations, threshold "
            f"{d.threshold:g} (used where steps, generations or threshold are 0)"
        )


class ModelCache:
    """Keeps one loaded :class:`Segmenter`; reloads only when the file, its contents or the
    device change. Thread-safe: the worker thread loads, the GUI thread may ask for info."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: Hashable | None = None
        self._segmenter: Segmenter | None = None
        self._calibration: tuple[tuple, ScoreCalibration | None] | None = None
        self.loads = 0  # how many times a model file was actually read

    @staticmethod
    def _key_for(path: Path, device: str) -> tuple:
        resolved = path.expanduser().resolve()
        try:
            st = resolved.stat()
            stamp: tuple = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (None, None)  # Segmenter.from_checkpoint reports the missing file
        return (str(resolved), stamp, str(resolve_device(device)))

    def get(self, path: Path, device: str) -> Segmenter:
        """The segmenter for ``path`` on ``device``, loading it if needed.

        Raises CheckpointError (bad file) or ValueError (unknown/unavailable device).
        """
        key = self._key_for(path, device)
        with self._lock:
            if self._segmenter is None or key != self._key:
                self._segmenter = None
                self._key = None
                seg = Segmenter.from_checkpoint(path, device=device)
                self._segmenter, self._key = seg, key
                self.loads += 1
            return self._segmenter

    def calibration(self, path: Path) -> ScoreCalibration | None:
        """The score calibration beside ``path`` (:func:`~segdiff_core.scoring.calibration_for`),
        read again only when the model or calibration file changes: checking it hashes the model
        file, which took 20 ms of every one-box run."""
        stamps = []
        for p in (Path(path), calibration_path(path)):
            try:
                st = p.stat()
                stamps.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((str(p), None, None))
        key = tuple(stamps)
        with self._lock:
            if self._calibration is None or self._calibration[0] != key:
                self._calibration = (key, calibration_for(path)[0])
            return self._calibration[1]

    def clear(self) -> None:
        with self._lock:
            self._segmenter = None
            self._key = None
            self._calibration = None


def model_info(seg: Segmenter) -> ModelInfo:
    path = seg.source or "<in memory>"
    return ModelInfo(
        name=Path(path).name,
        path=path,
        device=str(seg.device),
        input_size=seg.input_size,
        in_channels=seg.in_channels,
        defaults=seg.inference,
        num_timesteps=seg.config.diffusion.num_timesteps,
    )


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


class PlaneReader:
    """Reads regions of one 2D plane ``(H, W)`` or ``(H, W, C)`` of a layer's data on demand.

    ``plane`` names the plane (:class:`~napari_segdiff._geometry.PlaneSpec`); only the requested
    region is indexed out of the data, so a lazy (dask, zarr) image is read chunk by chunk.
    """

    def __init__(self, data: object, plane: PlaneSpec) -> None:
        self._data = data
        self.plane = plane

    def read(self, region: Region) -> np.ndarray:
        """``plane[region]``, rows first (a copy as a numpy array)."""
        return self.plane.read_region(self._data, region)


@dataclass(frozen=True)
class BoxJob:
    """One box to segment: ``box`` in plane pixel coordinates (pixel edges on integers)."""

    job_id: int
    box: Box
    plane: PlaneReader
    plane_shape: tuple[int, int]


@dataclass(frozen=True)
class RunRequest:
    """Everything a run needs, captured in the GUI thread when the user presses a button."""

    model_path: Path
    settings: AnnotatorSettings
    jobs: tuple[BoxJob, ...]
    seed: int
    preview_kind: Callable[[], str] = field(default=lambda: "pred_x0")
    preview_interval: float = 1.0


def gui_torch_threads(cores: int | None = None) -> int:
    """CPU threads for torch inside a GUI: all cores but one (at least one).

    One core stays with the GUI and everything else on the machine: with OpenMP's spinning
    thread barriers an oversubscribed core slows every step many times (measured on a 2-core
    machine with one other busy process: 26 s per prompt with 2 threads, 1.4 s with 1).
    """
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1)


def configure_torch_threads() -> int:
    """Set torch's intra-op threads for the annotator, once per process, from the GUI thread.

    Leaves the setting alone when the user chose it (``OMP_NUM_THREADS`` or
    ``SEGDIFF_TORCH_THREADS`` in the environment; the latter is applied). Returns the count
    in use.
    """
    global _THREADS_CONFIGURED  # a once-per-process guard, set only from the GUI thread
    if not _THREADS_CONFIGURED:
        _THREADS_CONFIGURED = True
        chosen = os.environ.get("SEGDIFF_TORCH_THREADS")
        if chosen and chosen.isdigit() and int(chosen) > 0:
            torch.set_num_threads(int(chosen))
        elif "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(gui_torch_threads())
    return torch.get_num_threads()


_THREADS_CONFIGURED = False


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewPatch:
    """The preview of the current box: ``values`` (float32, in [0, 1]) for ``plane[region]``."""

    job_id: int
    region: Region
    values: np.ndarray
    kind: str


@dataclass(frozen=True)
class RunStarted:
    """The model is loaded: ``inference`` settings and ``total_steps`` of the whole run."""

    model: ModelInfo
    inference: InferenceConfig
    total_steps: int


@dataclass(frozen=True)
class StepUpdate:
    """After each denoising step. ``done``/``total`` count box-steps over the whole run (a step
    of a batch of ``batch`` boxes, jobs ``job_number .. job_number + batch - 1``, counts
    ``batch``); ``job_id`` is the batch's first job."""

    job_id: int
    job_number: int
    n_jobs: int
    step: int
    n_steps: int
    window: int
    n_windows: int
    done: int
    total: int
    preview: PreviewPatch | None = None
    batch: int = 1


@dataclass(frozen=True)
class JobFinished:
    """Maps of one finished box, to be written at ``plane[region]``.

    ``probability`` and ``uncertainty`` are float32 ``(h, w)``; ``mask`` is bool; ``split``
    says the mask may hold several objects (windows mode) rather than one.
    """

    job_id: int
    region: Region
    probability: np.ndarray
    uncertainty: np.ndarray
    mask: np.ndarray
    split: bool
    threshold: float
    rejected: str | None = None
    score: float | None = None
    score_kind: str = ""
    batch_done: bool = True  # the last result of its batch (the others arrive just before it)


@dataclass(frozen=True)
class RunSummary:
    finished: tuple[int, ...] = ()
    error: str | None = None
    seed: int | None = None


RunEvent = RunStarted | StepUpdate | JobFinished


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """One model input of a job: the patch and the geometry that maps it back to the plane."""

    patch: np.ndarray
    geometry: CropGeometry


@dataclass(frozen=True)
class _Plan:
    job: BoxJob
    windows: Sequence[_Window]
    grid: WindowGrid | None  # windows mode
    region: Region  # windows mode: the box's pixels


def _window_grid(region_shape: tuple[int, int], size: int, settings: AnnotatorSettings) -> WindowGrid:
    h, w = region_shape
    work = (max(1, round(h / settings.window_scale)), max(1, round(w / settings.window_scale)))
    stride = max(1, size // 2) if settings.window_overlap else size
    return WindowGrid.create((h, w), window=size, stride=stride, work_size=work)


def _padded(region: Region, pad: int, shape: tuple[int, int]) -> Region:
    rows, cols = region
    return (
        slice(max(rows.start - pad, 0), min(rows.stop + pad, shape[0])),
        slice(max(cols.start - pad, 0), min(cols.stop + pad, shape[1])),
    )


def _box_window(job: BoxJob, size: int, protocol: CropProtocol) -> _Window:
    """The model input of a box, read from only the pixels the crop needs.

    The crop is resampled from ``plane[region]``, where ``region`` is the crop's footprint plus
    a margin for the anti-aliasing filter (or up to the plane's edge, where padding starts), so
    the patch equals :func:`~segdiff_core.data.crops.prompt_crop` on the whole plane.
    """
    shape = job.plane_shape
    crop = protocol.crop_box(job.box, image_shape=shape)
    geom = CropGeometry(crop, shape, (size, size))
    shrink = max(geom.scale)
    region = _padded(geom.footprint, int(np.ceil(4.0 * shrink)) + 4, shape)
    sub = job.plane.read(region)
    dy, dx = region[0].start, region[1].start
    shifted = Box(crop.y0 - dy, crop.x0 - dx, crop.y1 - dy, crop.x1 - dx)
    patch, _ = crop_to_model(sub, shifted, size)
    return _Window(patch, geom)


def _plan_job(job: BoxJob, size: int, settings: AnnotatorSettings, protocol: CropProtocol) -> _Plan:
    if settings.protocol != "windows":
        window = _box_window(job, size, protocol)
        return _Plan(job, [window], None, window.geometry.footprint)
    shape = job.plane_shape
    region = CropGeometry(job.box, shape, (size, size)).footprint
    rows, cols = region
    sub = job.plane.read(region)
    grid = _window_grid(sub.shape[:2], size, settings)
    patches = grid.cut(sub)
    fy = sub.shape[0] / grid.work_shape[0]
    fx = sub.shape[1] / grid.work_shape[1]
    windows = []
    for k, (oy, ox) in enumerate(grid.origins):
        box = Box(
            rows.start + oy * fy, cols.start + ox * fx,
            rows.start + (oy + size) * fy, cols.start + (ox + size) * fx,
        )
        windows.append(_Window(patches[k], CropGeometry(box, shape, (size, size))))
    return _Plan(job, windows, grid, region)


def _count_windows(job: BoxJob, size: int, settings: AnnotatorSettings) -> int:
    if settings.protocol != "windows":
        return 1
    rows, cols = CropGeometry(job.box, job.plane_shape, (size, size)).footprint
    return _window_grid((rows.stop - rows.start, cols.stop - cols.start), size, settings).n_windows


PREVIEW_PIXELS = 2**22
"""At most this many image pixels (16 MB of float32) in the preview of a batch: crops of boxes
far from the batch's first box are left out of it rather than growing the preview layer."""


def _batch_preview(step_x: torch.Tensor, windows: Sequence[_Window], job_id: int, kind: str) -> PreviewPatch:
    """One preview covering the crops of a batch: ``step_x`` is ``(N * G, 1, S, S)``, image-major.

    Each crop shows the mean over its generations, pasted into the plane; where crops overlap
    the larger value shows.
    """
    n = len(windows)
    probs = to_probability(step_x).reshape(n, -1, *step_x.shape[-2:]).mean(dim=1).cpu().numpy()
    pasted = [paste_back(probs[k], windows[k].geometry, order=1) for k in range(n)]
    (r0, r1), (c0, c1) = (pasted[0][0][0].start, pasted[0][0][0].stop), (pasted[0][0][1].start, pasted[0][0][1].stop)
    kept = []
    for region, values in pasted:
        rows, cols = region
        nr0, nr1 = min(r0, rows.start), max(r1, rows.stop)
        nc0, nc1 = min(c0, cols.start), max(c1, cols.stop)
        if kept and (nr1 - nr0) * (nc1 - nc0) > PREVIEW_PIXELS:
            continue
        (r0, r1), (c0, c1) = (nr0, nr1), (nc0, nc1)
        kept.append((region, values))
    out = np.zeros((r1 - r0, c1 - c0), np.float32)
    for (rows, cols), values in kept:
        target = out[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0]
        np.maximum(target, np.clip(values, 0.0, 1.0), out=target)
    return PreviewPatch(job_id, (slice(r0, r1), slice(c0, c1)), out, kind)


def _finish_box(
    plan: _Plan, result: EnsembleResult, kind: str, check: bool, calibration: ScoreCalibration | None = None,
    batch_done: bool = True,
) -> JobFinished:
    window = plan.windows[0]
    geom = window.geometry
    region, prob = paste_back(result.probability, geom, order=1)
    _, unc = paste_back(result.uncertainty(kind), geom, order=1)
    rejected = None
    if check:
        box = plan.job.box
        rejected = box_covers_image((box.height, box.width), plan.job.plane_shape) or assess_object(
            window.patch, result.probability, result.std, result.threshold
        )
    score = score_object(result, box=prompt_box_in_model(geom, plan.job.box), calibration=calibration)
    return JobFinished(
        plan.job.job_id, region, prob, unc, prob > result.threshold, False, result.threshold, rejected,
        score.score, score.kind, batch_done,
    )


def _finish_windows(plan: _Plan, results: Sequence[EnsembleResult], kind: str) -> JobFinished:
    assert plan.grid is not None
    prob = plan.grid.stitch(np.stack([r.probability for r in results]))
    unc = plan.grid.stitch(np.stack([r.uncertainty(kind) for r in results]))
    thr = results[0].threshold
    return JobFinished(plan.job.job_id, plan.region, prob, unc, prob > thr, True, thr)


def run_segmentation(
    request: RunRequest,
    cache: ModelCache,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[RunEvent, None, RunSummary]:
    """Segment every job of ``request``; see the module docstring for the events."""
    return (yield from _run(request, cache, clock))


@dataclass
class _Progress:
    """Steps done so far, and when the last preview was made."""

    total: int
    interval: float
    clock: Callable[[], float]
    done: int = 0
    last_preview: float = -float("inf")

    def preview_due(self, final: bool) -> bool:
        """True at most every ``interval`` seconds, never at a box's last step (``final``)."""
        now = self.clock()
        if final or now - self.last_preview < self.interval:
            return False
        self.last_preview = now
        return True


def _batches(jobs: Sequence[BoxJob], settings: AnnotatorSettings) -> list[tuple[int, list[BoxJob]]]:
    """``(index of the first job, jobs)`` of each network batch: up to ``settings.batch_boxes``
    consecutive jobs on one plane; whole-region windows: one job at a time."""
    size = 1 if settings.protocol == "windows" else settings.batch_boxes
    out: list[tuple[int, list[BoxJob]]] = []
    for number, job in enumerate(jobs):
        if out and len(out[-1][1]) < size and out[-1][1][0].plane is job.plane:
            out[-1][1].append(job)
        else:
            out.append((number, [job]))
    return out


def _run(
    request: RunRequest, cache: ModelCache, clock: Callable[[], float]
) -> Generator[RunEvent, None, RunSummary]:
    settings = request.settings
    finished: list[int] = []
    try:
        seg = cache.get(request.model_path, settings.device)
        info = model_info(seg)
        inference = settings.inference_for(seg.inference, info.num_timesteps)
        n_windows = [_count_windows(job, seg.input_size, settings) for job in request.jobs]
        total = sum(n * inference.steps for n in n_windows)
        yield RunStarted(info, inference, total)
        calibration = cache.calibration(request.model_path)  # None: the score is the agreement
        progress = _Progress(total, request.preview_interval, clock)
        for number, jobs in _batches(request.jobs, settings):
            if settings.protocol == "windows":
                yield from _run_windows(seg, request, inference, number, jobs[0], progress)
            else:
                yield from _run_boxes(seg, request, inference, number, jobs, progress, calibration)
            finished.extend(job.job_id for job in jobs)
    except Exception as exc:  # every failure becomes a message for the GUI, and is logged
        log.error("SegDiff: segmentation run failed", exc_info=True)
        return RunSummary(tuple(finished), _describe(exc), request.seed)
    return RunSummary(tuple(finished), None, request.seed)


def _steps(
    run: Generator[Any, None, Any], request: RunRequest, progress: _Progress, number: int,
    jobs: Sequence[BoxJob], windows: Sequence[_Window], where: tuple[int, int],
) -> Generator[StepUpdate, None, Any]:
    """Drive one sampling generator (one window of one job, or a batch of boxes), yielding a
    StepUpdate per step; returns the sampler's result. ``where``: (window, windows of the job)."""
    window, n_windows = where
    while True:
        try:
            step = next(run)
        except StopIteration as stop:
            return stop.value
        progress.done += len(jobs)
        preview = None
        if progress.preview_due(step.is_last and window == n_windows - 1):  # the result follows
            kind = request.preview_kind()
            x = step.pred_x0 if kind == "pred_x0" else step.x_t
            preview = _batch_preview(x, windows, jobs[0].job_id, kind)
        yield StepUpdate(
            jobs[0].job_id, number, len(request.jobs), step.index, step.num_steps, window, n_windows,
            progress.done, progress.total, preview, len(jobs),
        )


def _run_boxes(
    seg: Segmenter, request: RunRequest, inference: InferenceConfig, number: int, jobs: Sequence[BoxJob],
    progress: _Progress, calibration: ScoreCalibration | None,
) -> Generator[RunEvent, None, None]:
    """Sample a batch of box jobs through the network together, then yield their results.

    The batch's noise is seeded with ``request.seed + number`` (``number``: the index of its
    first job in the run), so the first box of a run reproduces :meth:`Segmenter.segment`.
    """
    settings = request.settings
    protocol = settings.crop_protocol()
    plans = [_plan_job(job, seg.input_size, settings, protocol) for job in jobs]
    windows = [plan.windows[0] for plan in plans]
    if seg.device.type == "cpu" and len(jobs) > 1:
        # on a CPU the network is compute-bound: calls larger than one box's generations only
        # spill caches (bench: 16-box batches 0.83x one at a time with 32 rows per call, 1.04x
        # with 8 = the generations); the batch still shares the encoder pass and the GUI updates
        inference = inference.replace(chunk_size=min(inference.chunk_size, inference.generations))
    run = seg.segment_batch_progressive(
        [w.patch for w in windows], inference, seed=request.seed + number, keep_generations=True,
        boxes=[box_in_crop(w.geometry, job.box) for w, job in zip(windows, jobs)],
    )
    results = yield from _steps(run, request, progress, number, jobs, windows, (0, 1))
    for k, (plan, result) in enumerate(zip(plans, results)):
        yield _finish_box(plan, result, settings.uncertainty, settings.skip_empty, calibration, k == len(plans) - 1)


def _run_windows(
    seg: Segmenter, request: RunRequest, inference: InferenceConfig, number: int, job: BoxJob, progress: _Progress,
) -> Generator[RunEvent, None, None]:
    """Whole-region windows: sample the windows of one box one after the other, then stitch."""
    settings = request.settings
    plan = _plan_job(job, seg.input_size, settings, settings.crop_protocol())
    results: list[EnsembleResult] = []
    for w, window in enumerate(plan.windows):
        run = seg.segment_progressive(
            window.patch, inference, seed=request.seed, box=box_in_crop(window.geometry, job.box),
        )
        result = yield from _steps(run, request, progress, number, [job], [window], (w, len(plan.windows)))
        results.append(result)
    yield _finish_windows(plan, results, settings.uncertainty)


def _describe(exc: Exception) -> str:
    """A one-paragraph message for a failed run."""
    from segdiff_core.checkpoint import CheckpointError
    from segdiff_core.data.preprocess import PreprocessError

    if isinstance(exc, CheckpointError):
        return f"Cannot load the model: {exc}. Choose another model file."
    if isinstance(exc, PreprocessError):
        return f"This image cannot feed the model: {exc}"
    if isinstance(exc, ValueError):
        return f"Segmentation stopped: {exc}"
    return f"Segmentation failed ({type(exc).__name__}): {exc}"
