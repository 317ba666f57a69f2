"""The annotator's state and behaviour, free of Qt: the widget is a thin view over this class.

:class:`AnnotatorController` owns the settings, references to the layers it works with (never
found by name), the model cache and the state of the current run. The widget asks it for a
:class:`~napari_segdiff._engine.RunRequest` (:meth:`prepare_run`), runs
:func:`~napari_segdiff._engine.run_segmentation` on a worker thread, and hands every yielded
event back to :meth:`handle_event` on the GUI thread, where layers are updated:

* the live preview layer shows the current estimate over the crop (and is removed at the end),
* each finished box writes its probability and uncertainty into image-sized layers and commits
  its mask to the Labels layer through ``Labels.data_setitem`` inside ``block_history``, so one
  Ctrl+Z (``labels.undo()``) removes one box's object,
* the box remembers the label it produced in the Shapes layer's ``label_id`` feature.

Bad input never raises: it is reported with a napari notification that says what to do, and
nothing already annotated is changed.
"""
from __future__ import annotations

import logging
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal
from scipy import ndimage

from segdiff_core.bundled import bundled_model_path

from napari_segdiff._engine import (
    BoxJob,
    JobFinished,
    ModelCache,
    ModelInfo,
    PlaneReader,
    PreviewPatch,
    RunRequest,
    RunStarted,
    RunSummary,
    StepUpdate,
)
from napari_segdiff._geometry import PlaneSpec, PromptError, current_plane, image_data, shape_box, spatial_shape
from napari_segdiff._layers import (
    DONE_EDGE,
    PROMPT_EDGE,
    ensure_box_features,
    find_layer,
    make_labels_layer,
    make_map_layer,
    make_prompts_layer,
    role_of,
)
from napari_segdiff._settings import AnnotatorSettings, SettingsError
from napari_segdiff._writer import export_training_pair, write_labels_tiff

__all__ = ["AnnotatorController", "Scope"]

log = logging.getLogger(__name__)

Scope = Literal["newest", "all"]


@dataclass
class _ActiveRun:
    """Bookkeeping of the run in progress (GUI thread only)."""

    request: RunRequest
    image: Image
    prompts: Shapes
    labels: Labels
    planes: dict[int, PlaneSpec]
    vertices: dict[int, np.ndarray]
    preview: Image | None = None
    preview_key: tuple | None = None
    pbar: progress | None = None
    committed: dict[int, list[int]] = field(default_factory=dict)
    model: ModelInfo | None = None


@dataclass(frozen=True)
class _RunEnded:
    """The worker returned ``summary``, or was cancelled (``summary`` None)."""

    summary: RunSummary | None
    worker_done: bool = False


class AnnotatorController:
    """State of one annotator (one per widget). All methods run on the GUI thread."""

    #: (done steps, total steps, text) while a run progresses
    progress_changed = Signal(int, int, str)
    #: True when a run starts, False when it ends (finished, failed or cancelled)
    running_changed = Signal(bool)
    #: information on the model a run loaded
    model_loaded = Signal(object)
    #: a status line for the widget
    status_changed = Signal(str)

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.settings = AnnotatorSettings()
        self.cache = ModelCache()
        self.image_layer: Image | None = None
        self.prompts_layer: Shapes | None = None
        self.labels_layer: Labels | None = None
        self._run: _ActiveRun | None = None
        self._rng = np.random.default_rng()
        self._closed = False
        self._pending: deque[Any] = deque()
        self._handling = False
        viewer.layers.events.removed.connect(self._on_layer_removed)

    # ---------------------------------------------------------------------------------------
    # layers
    # ---------------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._run is not None

    def set_image_layer(self, layer: Image | None) -> None:
        """Choose the image to annotate; adopts the boxes/labels layers made for it earlier."""
        if layer is self.image_layer:
            return
        self.image_layer = layer
        if layer is None:
            return
        for attr, role, kind in (("prompts_layer", "prompts", Shapes), ("labels_layer", "labels", Labels)):
            current = getattr(self, attr)
            meta = role_of(current) if current is not None else None
            made_for_other = meta is not None and meta.get("image") != str(layer.unique_id)
            if current is None or current not in self.viewer.layers or made_for_other:
                # the layers made for this image earlier, if any (else new ones when needed)
                setattr(self, attr, find_layer(self.viewer.layers, layer, role, kind))

    def set_prompts_layer(self, layer: Shapes | None) -> None:
        """Use ``layer`` for box prompts (None: create one when needed)."""
        self.prompts_layer = layer
        if layer is not None:
            ensure_box_features(layer)

    def set_labels_layer(self, layer: Labels | None) -> None:
        """Commit objects to ``layer`` (None: create one when needed)."""
        self.labels_layer = layer

    def ensure_prompts_layer(self) -> Shapes | None:
        """The prompts layer, created (rectangle tool ready) for the image if there is none."""
        image = self.image_layer
        if image is None:
            return None
        if self.prompts_layer is None or self.prompts_layer not in self.viewer.layers:
            layer = find_layer(self.viewer.layers, image, "prompts", Shapes) or self._add(
                make_prompts_layer(image)
            )
            self.set_prompts_layer(layer)
        self.activate_prompts()
        return self.prompts_layer

    def activate_prompts(self) -> None:
        """Select the prompts layer with the rectangle tool, on top of the other layers."""
        layer = self.prompts_layer
        if layer is None or layer not in self.viewer.layers:
            return
        layers = self.viewer.layers
        idx = layers.index(layer)
        if idx != len(layers) - 1:
            layers.move(idx, len(layers))
        layers.selection.active = layer
        if layer.mode not in ("add_rectangle", "select", "direct"):
            layer.mode = "add_rectangle"

    def _add(self, layer: Any) -> Any:
        """Add a layer without taking the selection (the user keeps drawing boxes)."""
        active = self.viewer.layers.selection.active
        self.viewer.layers.append(layer)
        prompts = self.prompts_layer
        if prompts is not None and prompts in self.viewer.layers and layer is not prompts:
            idx = self.viewer.layers.index(prompts)
            self.viewer.layers.move(idx, len(self.viewer.layers))
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        return layer

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        for attr in ("image_layer", "prompts_layer", "labels_layer"):
            if getattr(self, attr) is layer:
                setattr(self, attr, None)
        run = self._run
        if run is not None and layer in (run.image, run.labels, run.prompts):
            self.status_changed.emit("a layer of the running segmentation was deleted")

    # ---------------------------------------------------------------------------------------
    # model
    # ---------------------------------------------------------------------------------------

    def model_path(self) -> Path:
        """The model file the settings select. Raises PromptError with advice if unusable."""
        s = self.settings
        if s.model_source == "bundled":
            try:
                return bundled_model_path()
            except FileNotFoundError as exc:
                raise PromptError(f"{exc}. Select 'checkpoint file' and choose a .pt model") from exc
        if s.model_path is None or not str(s.model_path).strip() or s.model_path == Path("."):
            raise PromptError("no checkpoint file chosen: pick a SegDiff model file (.pt)")
        path = Path(s.model_path).expanduser()
        if not path.is_file():
            raise PromptError(f"the checkpoint file {path} does not exist; pick an existing model file")
        return path

    def update_settings(self, **changes: Any) -> bool:
        """Apply setting changes; a bad value is reported and ignored. Returns success."""
        try:
            self.settings = self.settings.replace(**changes)
        except (SettingsError, TypeError) as exc:
            show_error(f"SegDiff: {exc}")
            return False
        return True

    # ---------------------------------------------------------------------------------------
    # starting a run
    # ---------------------------------------------------------------------------------------

    def prepare_run(self, scope: Scope) -> RunRequest | None:
        """Validate the input and build the request for ``scope``: ``"newest"`` (the selected
        boxes, or else the newest box) or ``"all"`` (every box without a label yet).

        Returns None after notifying the user when there is nothing (valid) to segment.
        """
        if self._run is not None:
            show_info("SegDiff: a segmentation is already running; wait for it or press Cancel")
            return None
        try:
            return self._prepare(scope)
        except PromptError as exc:
            show_error(f"SegDiff: {exc}")
            return None

    def _prepare(self, scope: Scope) -> RunRequest | None:
        image = self.image_layer
        if image is None or image not in self.viewer.layers:
            raise PromptError("no image layer: open an image (File > Open, or a sample) and pick it as 'image'")
        model_path = self.model_path()
        plane = current_plane(self.viewer, image)
        prompts = self.prompts_layer
        if prompts is None or prompts not in self.viewer.layers or len(prompts.data) == 0:
            self.ensure_prompts_layer()
            raise PromptError(
                "no box to segment: draw a rectangle around an object on the boxes layer "
                "(rectangle tool, R) and press Segment again"
            )
        ensure_box_features(prompts)
        indices = self._box_indices(prompts, scope)
        if not indices:
            show_info("SegDiff: every box already has a label; draw a new box (or select one to redo it)")
            return None

        jobs: list[BoxJob] = []
        planes: dict[int, PlaneSpec] = {}
        vertices: dict[int, np.ndarray] = {}
        readers: dict[tuple, PlaneReader] = {}
        problems: list[str] = []
        data = image_data(image)
        for i in indices:
            try:
                box, box_plane = shape_box(prompts, i, image, plane)
            except PromptError as exc:
                if scope == "newest" and len(indices) == 1:
                    raise
                problems.append(str(exc))
                continue
            reader = readers.get(box_plane.fixed)
            if reader is None:
                reader = readers[box_plane.fixed] = PlaneReader(data, box_plane.key(), box_plane.transpose)
            jobs.append(BoxJob(i, box, reader, box_plane.shape))
            planes[i] = box_plane
            vertices[i] = np.array(prompts.data[i], copy=True)
        for msg in problems:
            show_warning(f"SegDiff: skipped {msg}")
        if not jobs:
            return None
        labels = self._labels_for(image)

        seed = self.settings.run_seed(int(self._rng.integers(0, 2**31 - 1)))
        request = RunRequest(
            model_path=model_path,
            settings=self.settings,
            jobs=tuple(jobs),
            seed=seed,
            preview_kind=lambda: self.settings.preview,
        )
        self._run = _ActiveRun(request, image, prompts, labels, planes, vertices)
        self.running_changed.emit(True)
        self.status_changed.emit(f"loading model {model_path.name} ...")
        return request

    def _box_indices(self, prompts: Shapes, scope: Scope) -> list[int]:
        n = len(prompts.data)
        if scope == "all":
            ids = np.asarray(prompts.features["label_id"], dtype=int)
            return [i for i in range(n) if ids[i] == 0]
        selected = sorted(i for i in prompts.selected_data if 0 <= i < n)
        return selected or [n - 1]

    def _labels_for(self, image: Image) -> Labels:
        """The Labels layer to commit to (created if needed); PromptError if it cannot be used."""
        labels = self.labels_layer
        if labels is None or labels not in self.viewer.layers:
            labels = find_layer(self.viewer.layers, image, "labels", Labels) or self._add(
                make_labels_layer(image)
            )
            self.labels_layer = labels
        want = spatial_shape(image)
        have = tuple(labels.data.shape) if not labels.multiscale else tuple(labels.data[0].shape)
        if have != want:
            raise PromptError(
                f"the labels layer {labels.name!r} has shape {have} but the image {image.name!r} has "
                f"{want}; choose a matching labels layer or '<new labels layer>'"
            )
        if labels.multiscale:
            raise PromptError(f"the labels layer {labels.name!r} is multiscale; choose a plain labels layer")
        return labels

    # ---------------------------------------------------------------------------------------
    # events from the worker (GUI thread)
    # ---------------------------------------------------------------------------------------

    def handle_event(self, event: Any) -> None:
        """Apply one worker event. Events arriving while one is being applied (napari may
        process Qt events while it adds a layer) are queued and applied in order."""
        self._pending.append(event)
        if self._handling:
            return
        self._handling = True
        try:
            while self._pending:
                self._apply(self._pending.popleft())
        finally:
            self._handling = False

    def _apply(self, event: Any) -> None:
        run = self._run
        if run is None or self._closed:
            return
        if isinstance(event, RunStarted):
            run.model = event.model
            self.model_loaded.emit(event.model)
            inf = event.inference
            desc = f"SegDiff: {len(run.request.jobs)} box(es), {inf.sampler.upper()} {inf.steps} steps x {inf.generations}"
            run.pbar = progress(total=max(event.total_steps, 1), desc=desc)
            self.progress_changed.emit(0, event.total_steps, "denoising ...")
            self.status_changed.emit(event.model.describe())
        elif isinstance(event, StepUpdate):
            if run.pbar is not None:
                run.pbar.update(event.done - run.pbar.n)
            where = f"box {event.job_number + 1}/{event.n_jobs}"
            if event.n_windows > 1:
                where += f", window {event.window + 1}/{event.n_windows}"
            self.progress_changed.emit(event.done, event.total, f"{where}, step {event.step + 1}/{event.n_steps}")
            if event.preview is not None:
                self._show_preview(run, event.preview)
        elif isinstance(event, JobFinished):
            self._commit(run, event)
        elif isinstance(event, _RunEnded):
            if event.worker_done:
                self.end_run()
            elif event.summary is None:
                self._cancelled()
            else:
                self._finish(event.summary)

    def _show_preview(self, run: _ActiveRun, patch: PreviewPatch) -> None:
        plane = run.planes[patch.job_id]
        if run.preview is None or run.preview not in self.viewer.layers:
            run.preview = self._add(make_map_layer(run.image, "preview"))
            run.preview_key = None
        data = run.preview.data
        if run.preview_key is not None and run.preview_key != (patch.job_id, patch.region):
            prev_job, prev_region = run.preview_key
            run.planes[prev_job].write(data, prev_region, 0.0)  # clear the previous patch
        plane.write(data, patch.region, patch.values)
        run.preview_key = (patch.job_id, patch.region)
        run.preview.refresh()

    def _map_layer(self, run: _ActiveRun, role: str, kind: str | None = None) -> Image:
        extra = {"kind": kind} if kind else {}
        layer = find_layer(self.viewer.layers, run.image, role, Image, **extra)
        if layer is None or spatial_shape(layer) != spatial_shape(run.image):
            layer = self._add(make_map_layer(run.image, role, kind))
        return layer

    def _commit(self, run: _ActiveRun, result: JobFinished) -> None:
        plane = run.planes[result.job_id]
        rows, cols = result.region
        prob_layer = self._map_layer(run, "probability")
        unc_layer = self._map_layer(run, "uncertainty", run.request.settings.uncertainty)
        plane.write(prob_layer.data, result.region, result.probability)
        plane.write(unc_layer.data, result.region, result.uncertainty)
        prob_layer.refresh()
        unc_layer.refresh()

        labels = run.labels
        if labels not in self.viewer.layers:
            show_warning("SegDiff: the labels layer was deleted during the run; the mask was not committed")
            return
        objects = self._objects(result, run.request.settings.largest_object_only)
        shape_index = self._current_index(run, result.job_id)
        old_ids = self._old_ids(run.prompts, shape_index)
        ids = self._write_objects(labels, plane, result.region, objects, old_ids, run.request.settings.overwrite)
        run.committed[result.job_id] = ids
        if shape_index is not None:
            self._record_ids(run.prompts, shape_index, ids)
        if not ids:
            show_warning(
                f"SegDiff: box #{result.job_id + 1} gave no object above threshold "
                f"{result.threshold:g} (or only pixels that already carry labels); "
                "lower the threshold, redraw the box, or tick 'overwrite existing labels'"
            )

    @staticmethod
    def _objects(result: JobFinished, largest_only: bool) -> list[np.ndarray]:
        """Boolean (h, w) masks of the objects to commit, in writing order."""
        mask = np.asarray(result.mask, dtype=bool)
        if not mask.any():
            return []
        if not result.split and not largest_only:
            return [mask]
        comp, n = ndimage.label(mask)
        if not result.split:
            sizes = np.bincount(comp.ravel())[1:]
            return [comp == (int(np.argmax(sizes)) + 1)]
        return [comp == k for k in range(1, n + 1)]

    def _current_index(self, run: _ActiveRun, job_id: int) -> int | None:
        """Where the box of ``job_id`` is now (boxes may have been deleted during the run)."""
        prompts = run.prompts
        want = run.vertices.get(job_id)
        if prompts not in self.viewer.layers or want is None:
            return None
        if job_id < len(prompts.data) and np.array_equal(prompts.data[job_id], want):
            return job_id
        for i, verts in enumerate(prompts.data):
            if verts.shape == want.shape and np.array_equal(verts, want):
                return i
        return None

    @staticmethod
    def _old_ids(prompts: Shapes, index: int | None) -> list[int]:
        if index is None:
            return []
        feats = prompts.features
        first = int(feats["label_id"].iloc[index])
        count = int(feats["n_objects"].iloc[index]) if "n_objects" in feats.columns else 1
        return list(range(first, first + max(count, 1))) if first > 0 else []

    @staticmethod
    def _write_objects(
        labels: Labels,
        plane: PlaneSpec,
        region: tuple[slice, slice],
        objects: list[np.ndarray],
        old_ids: list[int],
        overwrite: bool,
    ) -> list[int]:
        """Commit ``objects`` (masks over ``plane[region]``) as new labels; one undo step."""
        if not objects:
            return []
        rows, cols = region
        data = labels.data
        plane_labels = plane.read(data)
        current = plane_labels[rows, cols]
        replaceable = np.isin(current, old_ids) if old_ids else np.zeros(current.shape, bool)
        free = (current == 0) | replaceable
        next_id = int(np.max(data)) + 1 if data.size else 1
        ids: list[int] = []
        with labels.block_history():
            if old_ids:  # redoing a box: its previous object(s) give way, in the same undo step
                rr, cc = np.nonzero(np.isin(plane_labels, old_ids))
                if rr.size:
                    labels.data_setitem(plane.indices(rr, cc), 0, refresh=False)
            for obj in objects:
                writable = obj if overwrite else obj & free
                rr, cc = np.nonzero(writable)
                if rr.size == 0:
                    continue
                labels.data_setitem(plane.indices(rr + rows.start, cc + cols.start), next_id, refresh=False)
                ids.append(next_id)
                next_id += 1
        labels.refresh()
        return ids

    @staticmethod
    def _record_ids(prompts: Shapes, index: int, ids: list[int]) -> None:
        feats = prompts.features.copy()
        feats.loc[feats.index[index], "label_id"] = ids[0] if ids else 0
        feats.loc[feats.index[index], "n_objects"] = len(ids)
        prompts.features = feats
        colors = np.array(prompts.edge_color, copy=True)
        if len(colors) > index:
            colors[index] = DONE_EDGE if ids else PROMPT_EDGE
            prompts.edge_color = colors

    # ---------------------------------------------------------------------------------------
    # end of a run
    # ---------------------------------------------------------------------------------------

    def finish(self, summary: RunSummary) -> None:
        """The worker returned (normally or after an error)."""
        self.handle_event(_RunEnded(summary))

    def cancelled(self) -> None:
        """The worker stopped at a cancel request (within one denoising step)."""
        self.handle_event(_RunEnded(None))

    def worker_finished(self) -> None:
        """The worker thread ended; ends the run if neither finish() nor cancelled() did
        (queued behind the worker's other events)."""
        self.handle_event(_RunEnded(None, worker_done=True))

    def _finish(self, summary: RunSummary) -> None:
        run = self._run
        if run is None or self._closed:
            return
        if summary.error:
            show_error(f"SegDiff: {summary.error}")
        else:
            ids = [i for job in summary.finished for i in run.committed.get(job, [])]
            text = f"{len(summary.finished)} box(es) segmented"
            if ids:
                text += f", new label(s) {_ranges(ids)}"
            text += f" (seed {summary.seed})"
            show_info(f"SegDiff: {text}")
            self.status_changed.emit(text)
        self.end_run()

    def _cancelled(self) -> None:
        run = self._run
        if run is None or self._closed:
            return
        done = len(run.committed)
        unfinished = len(run.request.jobs) - done
        show_info(
            f"SegDiff: cancelled; {unfinished} unfinished box(es) wrote nothing"
            + (f" ({done} finished box(es) kept; Ctrl+Z on the labels layer removes them)" if done else "")
        )
        self.status_changed.emit("cancelled")
        self.end_run()

    def end_run(self) -> None:
        """Close the progress bar, remove the live preview and forget the run."""
        run = self._run
        self._run = None
        self._pending.clear()
        if run is None:
            return
        if run.pbar is not None:
            run.pbar.close()
        if run.preview is not None and run.preview in self.viewer.layers:
            self.viewer.layers.remove(run.preview)
        self.progress_changed.emit(0, 0, "")
        self.running_changed.emit(False)

    def close(self) -> None:
        """Forget the viewer (the widget is closing)."""
        if self._closed:
            return
        self._closed = True
        self.end_run()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self.cache.clear()

    # ---------------------------------------------------------------------------------------
    # export
    # ---------------------------------------------------------------------------------------

    def export_labels(self, path: str | Path) -> Path | None:
        """Write the whole Labels layer to a TIFF file; None (after a message) on failure."""
        labels = self.labels_layer
        if labels is None or labels not in self.viewer.layers:
            show_error("SegDiff: no labels layer to export; segment something first")
            return None
        if not str(path).strip() or Path(path) == Path("."):
            show_error("SegDiff: choose a file name for the labels (e.g. labels.tif)")
            return None
        try:
            written = write_labels_tiff(str(path), labels.data, {"name": labels.name})
        except (OSError, ValueError) as exc:
            show_error(f"SegDiff: could not write the labels: {exc}")
            return None
        out = Path(written[0])
        show_info(f"SegDiff: labels written to {out}")
        return out

    def export_training_crops(self, folder: str | Path) -> tuple[Path, Path] | None:
        """Write the current slice and its instance labels as ``folder/images/<name>.tif`` and
        ``folder/masks/<name>.tif`` (the layout ``segdiff-train --data.source instances`` reads).
        """
        image, labels = self.image_layer, self.labels_layer
        if image is None or image not in self.viewer.layers:
            show_error("SegDiff: no image layer to export; pick the image you annotated")
            return None
        if labels is None or labels not in self.viewer.layers:
            show_error("SegDiff: no labels layer to export; segment some objects first")
            return None
        if not str(folder).strip() or Path(folder) == Path("."):
            show_error("SegDiff: choose an output folder for the training pairs")
            return None
        try:
            plane = current_plane(self.viewer, image)
            if spatial_shape(image) != tuple(labels.data.shape):
                raise PromptError(
                    f"the labels layer {labels.name!r} does not match the image {image.name!r} in shape"
                )
            lab = plane.read(labels.data)
            if not np.any(lab):
                raise PromptError(f"{plane.describe()} has no labelled object yet; annotate it first")
            img = plane.read(image_data(image))
            name = _safe_name(image.name) + "".join(f"_a{ax}-{idx:04d}" for ax, idx in plane.fixed)
            paths = export_training_pair(Path(folder), name, img, lab)
        except PromptError as exc:
            show_error(f"SegDiff: {exc}")
            return None
        except (OSError, ValueError) as exc:
            show_error(f"SegDiff: could not write the training pair: {exc}")
            return None
        n = len(np.unique(lab)) - 1
        show_info(f"SegDiff: wrote {paths[0].name} with {n} object(s) to {Path(folder)} (images/ + masks/)")
        return paths


def _safe_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return clean or "image"


def _ranges(ids: list[int]) -> str:
    """'3-5, 8' for [3, 4, 5, 8]."""
    ids = sorted(ids)
    parts: list[str] = []
    start = prev = ids[0]
    for i in ids[1:] + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)
