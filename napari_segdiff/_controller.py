"""The annotator's state and behaviour, free of Qt: the widget is a thin view over this class.

:class:`AnnotatorController` owns the settings, references to the layers it works with (never
found by name), the model cache and the state of the current run. The widget asks it for a
:class:`~napari_segdiff._engine.RunRequest` (:meth:`prepare_run`), runs
:func:`~napari_segdiff._engine.run_segmentation` on a worker thread, and hands every yielded
event back to :meth:`handle_event` on the GUI thread, where layers are updated:

* the live preview layer shows the current estimate over the crop; it is hidden at the end of a
  run and reused by the next one (adding and removing a layer costs napari a garbage
  collection and a scene rebuild, more than a whole box on a busy machine),
* progress goes to the widget's own bar a few times a second (napari's activity-dock progress is
  not used: its animated indicator redraws the window continuously and took CPU from the model),
* each finished box writes its probability and uncertainty into image-sized layers and commits
  its mask to the Labels layer through ``Labels.data_setitem`` inside ``block_history``, so one
  Ctrl+Z (``labels.undo()``) removes one box's object,
* the run's last result is held until the worker's end arrives (it returns right after
  yielding it) and both are applied in one event-loop turn, so the objects, maps, box colours,
  status and progress of a one-box run reach the screen in one redraw of the window;
  :attr:`AnnotatorController.layers_updated` tells the view when layers changed,
* every committed object gets a record in the Labels layer's
  :class:`~napari_segdiff._objects.ObjectTable` (label id, plane, region, box, score); whether a
  box is segmented is read from that table *and* the labels data, so undo and redo keep boxes
  and objects in step, and label ids are never reused.

A failure while applying an event ends the run (the widget unlocks, the preview hides), is shown
to the user and is logged with its traceback.

Bad input never raises: it is reported with a napari notification that says what to do, and
nothing already annotated is changed.
"""
from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal
from scipy import ndimage

from segdiff_core.bundled import bundled_model_path
from segdiff_core.data.readers import write_pair
from segdiff_core.objectness import assess_remnant
from segdiff_core.training.finetune import FinetuneError, accepted_ids, finetuned_path

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
    find_layer,
    make_labels_layer,
    make_map_layer,
    make_prompts_layer,
    role_of,
    write_map,
)
from napari_segdiff._objects import BoxKey, ObjectRecord, ObjectTable, box_key, region_of
from napari_segdiff._review_model import box_edge_colours, link_saved_boxes, remember_commit
from napari_segdiff._settings import AnnotatorSettings, SettingsError
from napari_segdiff._writer import write_labels_tiff

__all__ = ["AnnotatorController", "Scope"]

log = logging.getLogger(__name__)

Scope = Literal["newest", "all"]

UI_INTERVAL = 1.0
"""Seconds between two progress redraws during a run (on a software-rendered screen every redraw
takes CPU from the model; the worker still yields after every step, so Cancel stays immediate)."""


@dataclass
class _ActiveRun:
    """Bookkeeping of the run in progress (GUI thread only)."""

    request: RunRequest
    image: Image
    prompts: Shapes
    labels: Labels
    planes: dict[int, PlaneSpec]
    keys: dict[int, BoxKey]
    labels_max: int
    labels_edited: bool = False  # the labels changed during the run other than by its commits
    preview: Image | None = None
    preview_key: tuple | None = None
    committed: dict[int, list[int]] = field(default_factory=dict)
    stale_maps: list = field(default_factory=list)  # map layers written but not yet redrawn
    held: JobFinished | None = None  # the run's last result, applied together with the run's end
    lost: str | None = None  # why the run's results can no longer be committed (it is being stopped)
    total_steps: int = 0
    done_steps: int = 0
    shown_at: float = -float("inf")  # when progress was last shown


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
    #: layers were updated with a result or a preview (the view may lay itself out now)
    layers_updated = Signal()
    #: the run cannot go on (its labels layer was deleted): the view should cancel its worker
    cancel_requested = Signal()

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.settings = AnnotatorSettings()
        self.cache = ModelCache()
        self.image_layer: Image | None = None
        self._prompts_layer: Shapes | None = None
        self._box_keys: list[BoxKey] = []  # the prompts' keys after their last change (to follow edits)
        self._labels_layer: Labels | None = None
        self._run: _ActiveRun | None = None
        self._rng = np.random.default_rng()
        self._closed = False
        self._pending: deque[Any] = deque()
        self._warned: set[BoxKey] = set()  # shapes already reported as unusable
        self._handling = False
        self._holding_boxes = False  # while a batch commits: box colours are refreshed once, at its end
        viewer.layers.events.removed.connect(self._on_layer_removed)

    # ---------------------------------------------------------------------------------------
    # layers
    # ---------------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._run is not None

    @property
    def run_progress(self) -> tuple[int, int] | None:
        """(denoising steps applied, steps of the whole run) of the running segmentation."""
        run = self._run
        return None if run is None else (run.done_steps, run.total_steps)

    @property
    def prompts_layer(self) -> Shapes | None:
        """The Shapes layer with the box prompts (colours refresh when boxes are drawn)."""
        return self._prompts_layer

    @prompts_layer.setter
    def prompts_layer(self, layer: Shapes | None) -> None:
        old = self._prompts_layer
        if layer is old:
            return
        if old is not None:
            old.events.data.disconnect(self._on_boxes_edited)
        self._prompts_layer = layer
        if layer is not None:
            layer.events.data.connect(self._on_boxes_edited)
        self.link_saved_boxes()
        self._on_boxes_edited()  # remembers the boxes' keys, recolours them

    def _on_boxes_edited(self, event: Any = None) -> None:
        """Boxes were drawn, deleted or edited. A box moved or resized by hand (napari's select
        or direct tool: 'changed', naming the edited vertices; replacing ``layer.data`` names
        none and keeps nothing) keeps its objects: they follow its new vertices, in the object
        table and in a run that is going on."""
        prompts = self._prompts_layer
        before, self._box_keys = self._box_keys, (
            [box_key(prompts.unique_id, v) for v in prompts.data] if prompts is not None else [])
        by_hand = any(len(v) for v in (getattr(event, "vertex_indices", None) or ()))
        if str(getattr(event, "action", "")) == "changed" and by_hand and len(before) == len(self._box_keys):
            moved = {before[i]: self._box_keys[i] for i in getattr(event, "data_indices", ())
                     if 0 <= i < len(before) and before[i] != self._box_keys[i]}
            run = self._run
            for labels in {id(x): x for x in (self._labels_layer, run and run.labels) if x is not None}.values():
                ObjectTable.of(labels).rekey(moved)
            if run is not None and run.prompts is prompts:
                run.keys = {job: moved.get(k, k) for job, k in run.keys.items()}
        self.refresh_boxes()

    @property
    def labels_layer(self) -> Labels | None:
        """The Labels layer objects are committed to (box colours follow its undo/redo)."""
        return self._labels_layer

    @labels_layer.setter
    def labels_layer(self, layer: Labels | None) -> None:
        old = self._labels_layer
        if layer is old:
            return
        if old is not None:
            old.events.set_data.disconnect(self.refresh_boxes)
            old.events.paint.disconnect(self.refresh_boxes)
            ObjectTable.of(old).changed.disconnect(self.refresh_boxes)
        self._labels_layer = layer
        if layer is not None:
            layer.events.set_data.connect(self.refresh_boxes)  # undo / redo / new data
            layer.events.paint.connect(self.refresh_boxes)  # commits and hand edits
            ObjectTable.of(layer).changed.connect(self.refresh_boxes)  # review decisions (rejected: grey)
        self.link_saved_boxes()
        self.refresh_boxes()

    def link_saved_boxes(self) -> int:
        """Link the boxes of a reopened boxes layer to the objects of a reopened labels layer
        made from them (the prompt boxes saved in its ``features``, see
        :func:`napari_segdiff._review_model.link_saved_boxes`): they show as done and Segment
        all leaves them. Returns the number of objects linked."""
        prompts, labels, image = self._prompts_layer, self._labels_layer, self.image_layer
        if prompts is None or labels is None or image is None or not len(labels.features) or not len(prompts.data):
            return 0
        plane = current_plane(self.viewer, image)
        boxes = []
        for i in range(len(prompts.data)):
            try:
                box, box_plane = shape_box(prompts, i, image, plane)
            except PromptError:  # not a usable box: it links nothing (Segment reports it)
                continue
            boxes.append((box_key(prompts.unique_id, prompts.data[i]), box, box_plane))
        return link_saved_boxes(ObjectTable.of(labels), labels.features, boxes)

    # ---------------------------------------------------------------------------------------
    # boxes <-> objects
    # ---------------------------------------------------------------------------------------

    def box_objects(self, prompts: Shapes | None = None) -> list[list[int]]:
        """For each box of ``prompts`` (default: the prompts layer), the label ids of its objects
        present in the labels layer now ([] = not segmented, or undone)."""
        prompts = prompts if prompts is not None else self.prompts_layer
        labels = self.labels_layer
        if prompts is None:
            return []
        if labels is None:
            return [[] for _ in prompts.data]
        table = ObjectTable.of(labels)
        alive = table.alive(labels.data)
        by_key: dict[BoxKey, list[int]] = {}
        for rec in alive:
            if rec.box_key is not None:
                by_key.setdefault(rec.box_key, []).append(rec.label_id)
        return [sorted(by_key.get(box_key(prompts.unique_id, v), [])) for v in prompts.data]

    def rejected_boxes(self, prompts: Shapes | None = None) -> list[bool]:
        """For each box of ``prompts`` (default: the prompts layer), True if its object was
        rejected in the review and it has no object now (Segment all leaves such boxes)."""
        prompts = prompts if prompts is not None else self.prompts_layer
        labels = self.labels_layer
        if prompts is None:
            return []
        if labels is None:
            return [False for _ in prompts.data]
        gone = ObjectTable.of(labels).rejected_boxes(labels.data)
        return [bool(gone) and box_key(prompts.unique_id, v) in gone for v in prompts.data]

    def refresh_boxes(self, *_: Any) -> None:
        """Colour the boxes: yellow until their object is in the labels; then by the object's
        quality score (:func:`napari_segdiff._review_model.box_edge_colours`)."""
        prompts = self.prompts_layer
        if prompts is None or self._closed or len(prompts.data) == 0 or self._holding_boxes:
            return
        try:
            objects = self.box_objects(prompts)
            labels = self.labels_layer
            want = box_edge_colours(objects, ObjectTable.of(labels) if labels is not None else None,
                                    self.rejected_boxes(prompts))
        except Exception:  # never let a colour update break napari's event loop
            log.exception("SegDiff: could not update the box colours")
            return
        colors = np.array(prompts.edge_color, copy=True)
        if len(colors) != len(objects):
            return
        if not np.allclose(colors, want):
            prompts.edge_color = want

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
        self.link_saved_boxes()  # boxes and labels chosen before the image

    def set_prompts_layer(self, layer: Shapes | None) -> None:
        """Use ``layer`` for box prompts (None: create one when needed)."""
        self.prompts_layer = layer

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
        if run is not None and layer is run.labels and run.lost is None:
            run.lost = f"the labels layer {layer.name!r} was deleted during the run"
            show_warning(f"SegDiff: {run.lost}; the run was stopped, its remaining boxes have nowhere to go")
            self.status_changed.emit(f"stopping: {run.lost}")
            self.cancel_requested.emit()
        elif run is not None and layer in (run.image, run.prompts):
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
        if s.model_source == "finetuned":
            try:
                return finetuned_path(s.finetuned_model)
            except FinetuneError as exc:
                raise PromptError(str(exc)) from exc
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
            elsewhere = self._rectangles_elsewhere(prompts)
            self.ensure_prompts_layer()
            if elsewhere is not None:
                raise PromptError(
                    f"the boxes layer {self.prompts_layer.name!r} has no box, but your rectangles are on "
                    f"the Shapes layer {elsewhere.name!r}: choose {elsewhere.name!r} under 'boxes' to segment "
                    f"them (or draw the boxes on {self.prompts_layer.name!r})"
                )
            raise PromptError(
                "no box to segment: draw a rectangle around an object on the boxes layer "
                "(rectangle tool, R) and press Segment again"
            )
        labels = self._labels_for(image)
        indices = self._box_indices(prompts, scope)
        if not indices:
            show_info("SegDiff: every box already has a label (or its object was rejected in the review); "
                      "draw a new box (or select one to redo it)")
            return None

        jobs: list[BoxJob] = []
        planes: dict[int, PlaneSpec] = {}
        keys: dict[int, BoxKey] = {}
        readers: dict[tuple, PlaneReader] = {}
        problems: list[str] = []
        data = image_data(image)
        for i in indices:
            try:
                box, box_plane = shape_box(prompts, i, image, plane)
            except PromptError as exc:
                if scope == "newest" and len(indices) == 1:
                    raise
                key = box_key(prompts.unique_id, prompts.data[i])
                if key not in self._warned:  # say it once per shape, not on every Segment all
                    self._warned.add(key)
                    problems.append(str(exc))
                continue
            reader = readers.get(box_plane.fixed)
            if reader is None:
                reader = readers[box_plane.fixed] = PlaneReader(data, box_plane)
            jobs.append(BoxJob(i, box, reader, box_plane.shape))
            planes[i] = box_plane
            keys[i] = box_key(prompts.unique_id, prompts.data[i])
        for msg in problems:
            show_warning(f"SegDiff: skipped {msg}")
        if not jobs:
            return None
        labels_max = int(np.max(labels.data)) if labels.data.size else 0
        _check_capacity(labels, ObjectTable.of(labels).next_id(labels_max))

        seed = self.settings.run_seed(int(self._rng.integers(0, 2**31 - 1)))
        request = RunRequest(
            model_path=model_path,
            settings=self.settings,
            jobs=tuple(jobs),
            seed=seed,
            preview_kind=lambda: self.settings.preview,
        )
        self._run = _ActiveRun(request, image, prompts, labels, planes, keys, labels_max)
        labels.events.paint.connect(self._note_labels_edit)  # hand edits during the run
        labels.events.set_data.connect(self._note_labels_edit)
        self.running_changed.emit(True)
        self.status_changed.emit(f"loading model {model_path.name} ...")
        return request

    def _note_labels_edit(self, *_: Any) -> None:
        """The run's labels changed, not by its own commit (a stroke painted by hand, an undo):
        the next commit takes its ids above the labels' new maximum."""
        run = self._run
        if run is not None and not self._holding_boxes:
            run.labels_edited = True

    def _rectangles_elsewhere(self, prompts: Shapes | None) -> Shapes | None:
        """Another Shapes layer with rectangles, not made by the annotator (the selected layer
        first): where a user who drew boxes on a layer of their own left them."""
        layers = self.viewer.layers
        active = layers.selection.active
        for layer in [active, *reversed(list(layers))]:
            if (isinstance(layer, Shapes) and layer is not prompts and role_of(layer) is None
                    and "rectangle" in layer.shape_type):
                return layer
        return None

    def find_objects(self, area: str) -> int | None:
        """Add one box per automatically proposed object in ``area`` (see
        :data:`napari_segdiff._find.FIND_AREAS`) to the boxes layer; returns how many (None,
        after a message, when the search could not be done).

        'selected box' searches inside the selected rectangle(s); those without an object are
        then removed (they were a search area), those of an object stay (they are its prompt).
        Objects that already have a label, or lie in another box on the plane, are skipped.
        """
        from segdiff_core.proposals import ProposalSettings

        from napari_segdiff._find import box_region, box_vertices, find_boxes, visible_region

        try:
            image = self.image_layer
            if image is None or image not in self.viewer.layers:
                raise PromptError("no image layer: open an image and pick it as 'image'")
            if self._run is not None:
                raise PromptError("a segmentation is running; wait for it or press Cancel")
            plane = current_plane(self.viewer, image)
            prompts = self.ensure_prompts_layer()
            labels = plane.read(self._labels_for(image).data)
            search: set[int] = set()  # the selected boxes searched in ('selected box')
            if area == "whole image":
                regions = [(slice(0, plane.shape[0]), slice(0, plane.shape[1]))]
            elif area == "visible area":
                regions = [visible_region(self.viewer, image, plane)]
            else:
                chosen = sorted(prompts.selected_data)
                if not chosen:
                    raise PromptError("select a drawn box to search in (or choose another area)")
                regions = [box_region(shape_box(prompts, i, image, plane)[0], plane.shape) for i in chosen]
                search = set(chosen)
            taken = self._boxes_on(prompts, image, plane, exclude=search)
            boxes = [b for r in regions for b in find_boxes(image, plane, r, labels, ProposalSettings(), taken)]
        except PromptError as exc:
            show_error(f"SegDiff: {exc}")
            return None
        owned = self.box_objects(prompts)
        areas_only = {i for i in search if not owned[i]}
        if areas_only:
            prompts.selected_data = areas_only
            prompts.remove_selected()
        if boxes:
            prompts.add_rectangles([box_vertices(b, image, prompts, plane) for b in boxes])
        self.status_changed.emit(f"found {len(boxes)} new object(s)")
        return len(boxes)

    @staticmethod
    def _boxes_on(prompts: Shapes, image: Image, plane: PlaneSpec, exclude: set[int] = frozenset()) -> list[Any]:
        """The usable boxes of ``prompts`` that lie on ``plane`` (image plane pixel coordinates),
        but for the indices in ``exclude``."""
        out = []
        for i in range(len(prompts.data)):
            if i in exclude:
                continue
            try:
                box, box_plane = shape_box(prompts, i, image, plane)
            except PromptError:  # not a rectangle, outside the image: not a box to keep clear of
                continue
            if box_plane.fixed == plane.fixed:
                out.append(box)
        return out

    def _box_indices(self, prompts: Shapes, scope: Scope) -> list[int]:
        """'all': every box without a present object; 'newest': the selected boxes (an
        explicit redo: their objects are replaced), else the newest box without an object.
        Boxes whose object was rejected in the review are left out unless selected."""
        n = len(prompts.data)
        if scope == "newest":
            selected = sorted(i for i in prompts.selected_data if 0 <= i < n)
            if selected:
                return selected
        rejected = self.rejected_boxes(prompts)
        open_boxes = [i for i, ids in enumerate(self.box_objects(prompts)) if not ids and not rejected[i]]
        if scope == "all":
            return open_boxes
        return open_boxes[-1:]

    def _labels_for(self, image: Image) -> Labels:
        """The Labels layer to commit to (created if needed); PromptError if it cannot be used."""
        labels = self.labels_layer
        if labels is None or labels not in self.viewer.layers:
            labels = find_layer(self.viewer.layers, image, "labels", Labels)
            if labels is None:
                _check_fits(image)
                labels = self._add(make_labels_layer(image))
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
        if not isinstance(labels.data, np.ndarray):
            raise PromptError(
                f"the labels layer {labels.name!r} holds a {type(labels.data).__name__} (a lazy or "
                "read-only array), which napari cannot edit with undo; choose '<new labels layer>' "
                "or load the labels into memory first"
            )
        if not _same_placement(labels, image):
            raise PromptError(
                f"the labels layer {labels.name!r} is placed differently from the image "
                f"{image.name!r} (scale/translate/rotation); objects would appear in the wrong "
                "place. Choose '<new labels layer>' or give it the image's scale and translate"
            )
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
        try:
            self._dispatch(run, event)
        except Exception as exc:  # any failure ends the run, says so, and keeps the traceback
            log.error("SegDiff: applying a %s of the run failed", type(event).__name__, exc_info=True)
            show_error(
                f"SegDiff: the run stopped: {type(exc).__name__}: {exc}. Objects committed "
                "before this are kept (details with traceback in the log)"
            )
            self.status_changed.emit(f"failed: {type(exc).__name__}: {exc}")
            self.end_run()

    def _dispatch(self, run: _ActiveRun, event: Any) -> None:
        if isinstance(event, RunStarted):
            self.model_loaded.emit(event.model)
            inf = event.inference
            desc = f"{len(run.request.jobs)} box(es), {inf.sampler.upper()} {inf.steps} steps x {inf.generations}"
            run.total_steps = event.total_steps
            asked = run.request.settings.steps
            if asked > event.model.num_timesteps:
                show_info(
                    f"SegDiff: {asked} steps asked, but this model's chain has T = "
                    f"{event.model.num_timesteps} steps; sampling with {inf.steps}"
                )
            self.progress_changed.emit(0, event.total_steps, "denoising ...")
            self.status_changed.emit(f"segmenting {desc} with {event.model.name} on {event.model.device}")
        elif isinstance(event, StepUpdate):
            run.done_steps = event.done
            now = time.monotonic()
            if event.preview is None and now - run.shown_at < UI_INTERVAL:
                return  # progress is redrawn a few times a second, not at every step
            run.shown_at = now
            first = event.job_number + 1
            where = (f"boxes {first}-{first + event.batch - 1}/{event.n_jobs}" if event.batch > 1
                     else f"box {first}/{event.n_jobs}")
            if event.n_windows > 1:
                where += f", window {event.window + 1}/{event.n_windows}"
            self.progress_changed.emit(event.done, event.total, f"{where}, step {event.step + 1}/{event.n_steps}")
            if event.preview is not None:
                self._show_preview(run, event.preview)
        elif isinstance(event, JobFinished):
            if event.batch_done and event.job_id == run.request.jobs[-1].job_id:
                run.held = event  # the worker returns next: its end and this result make one redraw
            else:
                self._commit(run, event)
        elif isinstance(event, _RunEnded):
            held, run.held = run.held, None
            if held is not None:
                self._commit(run, held)
            if event.worker_done:
                self.end_run()
            elif event.summary is None:
                self._cancelled()
            else:
                self._finish(event.summary)

    def _show_preview(self, run: _ActiveRun, patch: PreviewPatch) -> None:
        """Show the preview of the current box in a crop-sized layer (reused between runs)."""
        plane = run.planes[patch.job_id]
        if run.preview is None or run.preview not in self.viewer.layers:
            layer = find_layer(self.viewer.layers, run.image, "preview", Image)
            run.preview = layer if layer is not None else self._add(make_map_layer(run.image, "preview"))
            run.preview_key = None
        write_map(run.preview, run.image, plane, patch.region, patch.values, reset=True)
        if not run.preview.visible:  # (setting it rebuilds napari's scene graph)
            run.preview.visible = True
        run.preview_key = (patch.job_id, patch.region)
        self.layers_updated.emit()

    def _map_layer(self, run: _ActiveRun, role: str, kind: str | None = None) -> Image:
        extra = {"kind": kind} if kind else {}
        layer = find_layer(self.viewer.layers, run.image, role, Image, **extra)
        if layer is None or layer.ndim != run.image.ndim:
            layer = self._add_below_labels(make_map_layer(run.image, role, kind), run.labels)
        return layer

    def _add_below_labels(self, layer: Image, labels: Labels) -> Image:
        """Add a map layer under the labels layer, so the instance colours stay visible."""
        self._add(layer)
        layers = self.viewer.layers
        if labels in layers and layers.index(layer) > layers.index(labels):
            layers.move(layers.index(layer), layers.index(labels))
        return layer

    def _commit(self, run: _ActiveRun, result: JobFinished) -> None:
        """Write one box's maps and objects. The results of a batch arrive one after the other;
        the maps and box colours are redrawn once, with the batch's last result (or at the end
        of the run, if it stopped in between)."""
        self._holding_boxes = True  # the labels' paint event would recolour the boxes before the table knows the box
        done = False
        try:
            self._commit_box(run, result)
            done = True
        finally:
            self._holding_boxes = False
            if result.batch_done:
                run.stale_maps.clear()
            if result.batch_done or not done:
                self.refresh_boxes()  # never raises
                self.layers_updated.emit()

    def _commit_box(self, run: _ActiveRun, result: JobFinished) -> None:
        plane = run.planes[result.job_id]
        labels = run.labels
        prob_layer = self._map_layer(run, "probability")
        unc_layer = self._map_layer(run, "uncertainty", run.request.settings.uncertainty)
        # a batch's maps are redrawn once, with its last result
        write_map(prob_layer, run.image, plane, result.region, result.probability, refresh=result.batch_done)
        write_map(unc_layer, run.image, plane, result.region, result.uncertainty, refresh=result.batch_done)
        if not result.batch_done:
            run.stale_maps.extend(layer for layer in (prob_layer, unc_layer) if all(layer is not m for m in run.stale_maps))

        if labels not in self.viewer.layers:  # deleted: the run is being stopped (said once)
            return
        if result.rejected:
            run.committed[result.job_id] = []
            show_warning(f"SegDiff: box #{result.job_id + 1} was not committed: {result.rejected}")
            return
        settings = run.request.settings
        objects = self._objects(result, settings.largest_object_only)
        table = ObjectTable.of(labels)
        key = run.keys[result.job_id]
        old = [rec.label_id for rec in table.for_box(key, labels.data)]
        if run.labels_edited:  # e.g. napari's new label (M) painted by hand meanwhile: never reuse its id
            run.labels_max, run.labels_edited = max(run.labels_max, int(np.max(labels.data))), False
        writer = _ObjectWriter(labels, plane, result, old, settings)
        ids = writer.write(objects, table.next_id(run.labels_max))
        run.committed[result.job_id] = ids
        records = writer.records(key, run.request.jobs, result.job_id)
        remember_commit(labels, records, writer.written, result, run.request)  # score, probability
        table.add(records)
        if writer.rejected:
            show_warning(f"SegDiff: box #{result.job_id + 1} was not committed: {writer.rejected}")
        elif not ids:
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
        if run.lost:
            self._stopped(run)
        elif summary.error:
            show_error(f"SegDiff: {summary.error}")
            self.status_changed.emit(f"failed: {summary.error}")
            self.progress_changed.emit(run.done_steps, run.total_steps, "failed")
        else:
            ids = [i for job in summary.finished for i in run.committed.get(job, [])]
            n_boxes = sum(1 for job in summary.finished if run.committed.get(job))
            text = f"{n_boxes} of {len(run.request.jobs)} box(es) gave objects"
            if ids:
                text += f", new label(s) {_ranges(ids)}"
            text += f" (seed {summary.seed})"
            log.info("SegDiff: %s", text)
            if len(run.request.jobs) > 1:  # one box: the status line says it; a toast over the
                show_info(f"SegDiff: {text}")  # canvas costs repaints that slow the next box
            self.status_changed.emit(text)
            self.progress_changed.emit(run.total_steps, run.total_steps, "done")
        self.end_run()

    def _cancelled(self) -> None:
        run = self._run
        if run is None or self._closed:
            return
        if run.lost:
            self._stopped(run)
            return
        done = len(run.committed)
        unfinished = len(run.request.jobs) - done
        show_info(
            f"SegDiff: cancelled; {unfinished} unfinished box(es) wrote nothing"
            + (f" ({done} finished box(es) kept; Ctrl+Z on the labels layer removes them)" if done else "")
        )
        self.status_changed.emit("cancelled")
        self.progress_changed.emit(run.done_steps, run.total_steps, "cancelled")
        self.end_run()

    def _stopped(self, run: _ActiveRun) -> None:
        """The run ended after it lost its labels layer (the user was told then)."""
        self.status_changed.emit(f"stopped: {run.lost}")
        self.progress_changed.emit(run.done_steps, run.total_steps, "stopped")
        self.end_run()

    def end_run(self) -> None:
        """Hide the live preview and forget the run (never raises)."""
        run = self._run
        self._run = None
        self._pending.clear()
        if run is None:
            return
        try:
            run.labels.events.paint.disconnect(self._note_labels_edit)
            run.labels.events.set_data.disconnect(self._note_labels_edit)
            changed = bool(run.stale_maps)
            if run.preview is not None and run.preview in self.viewer.layers and run.preview.visible:
                run.preview.visible = False
                changed = True
            for layer in run.stale_maps:  # a batch that stopped before its last result
                if layer in self.viewer.layers:
                    layer.refresh()
            if run.stale_maps:
                self.refresh_boxes()
            if changed:
                self.layers_updated.emit()
        except Exception:  # the viewer may be closing; the run is over regardless
            log.warning("SegDiff: cleaning up after the run failed", exc_info=True)
        self.running_changed.emit(False)

    def detach_view(self, *_: Any) -> None:
        """The view is going away (widget closed, viewer closed): disconnect it from the signals
        and stop applying events, so nothing touches deleted Qt widgets."""
        for signal in (self.progress_changed, self.running_changed, self.model_loaded, self.status_changed,
                       self.layers_updated, self.cancel_requested):
            signal.disconnect()
        self.close()

    def close(self) -> None:
        """Forget the viewer (the widget is closing)."""
        if self._closed:
            return
        self._closed = True
        self.end_run()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self.prompts_layer = None  # disconnects from the layers' events
        self.labels_layer = None
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
            _, state, _ = labels.as_layer_data_tuple()  # what napari's own save passes to the writer
            written = write_labels_tiff(str(path), labels.data, state)
        except (OSError, ValueError) as exc:
            show_error(f"SegDiff: could not write the labels: {exc}")
            return None
        out = Path(written[0])
        show_info(f"SegDiff: labels written to {out}")
        return out

    def export_training_crops(self, folder: str | Path, accepted_only: bool = False) -> tuple[Path, Path] | None:
        """Write the current slice and its instance labels as ``folder/images/<name>.tif`` and
        ``folder/masks/<name>.tif`` (the layout ``segdiff-train --data.source instances`` reads).

        ``accepted_only``: keep only the objects the review accepted (the labels layer's
        ``status`` column, see :func:`segdiff_core.training.finetune.accepted_ids`); the others
        are written as background.
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
            if accepted_only:
                lab = _accepted_only(labels, lab, plane.describe())
            img = plane.read(image_data(image))
            name = _safe_name(image.name) + "".join(f"_a{ax}-{idx:04d}" for ax, idx in plane.fixed)
            paths = write_pair(folder, name, img, lab)
        except PromptError as exc:
            show_error(f"SegDiff: {exc}")
            return None
        except (OSError, ValueError) as exc:
            show_error(f"SegDiff: could not write the training pair: {exc}")
            return None
        n = len(np.unique(lab)) - 1
        show_info(f"SegDiff: wrote {paths[0].name} with {n} object(s) to {Path(folder)} (images/ + masks/)")
        return paths


def _accepted_only(labels: Labels, lab: np.ndarray, where: str) -> np.ndarray:
    """``lab`` with every object the review did not accept set to background (PromptError when
    the layer has no review status, or none of its objects on this slice is accepted)."""
    keep = accepted_ids(labels.features) if len(labels.features) else None
    if keep is None:
        raise PromptError(
            f"the labels layer {labels.name!r} has no review status yet; accept objects in the "
            "SegDiff review panel, or untick 'accepted objects only'"
        )
    kept = np.where(np.isin(lab, np.asarray(keep, dtype=lab.dtype)), lab, 0)
    if not np.any(kept):
        raise PromptError(f"{where} has no accepted object; accept some in the SegDiff review panel first")
    return kept


def _check_capacity(labels: Labels, highest: int) -> None:
    """PromptError (before anything is written) if ``labels`` cannot hold id ``highest``."""
    dtype = labels.data.dtype
    if not np.issubdtype(dtype, np.integer):
        raise PromptError(f"the labels layer {labels.name!r} has dtype {dtype}; labels must be integers")
    top = np.iinfo(dtype).max
    if highest > top:
        raise PromptError(
            f"the labels layer {labels.name!r} is {dtype} and its ids are used up to {top}; "
            "nothing was written. Convert it to a wider type (right-click the layer > "
            "Convert data type > uint32) or choose '<new labels layer>'"
        )


def available_bytes() -> int | None:
    """Memory the system can still give (Linux ``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_fits(image: Image) -> None:
    """PromptError before making a labels layer that would not fit in memory (int32 labels,
    plus napari's display copy of one plane)."""
    shape = spatial_shape(image)
    need = 4 * int(np.prod(shape, dtype=np.int64)) + 8 * int(np.prod(shape[-2:], dtype=np.int64))
    free = available_bytes()
    if free is not None and need > 0.8 * free:
        raise PromptError(
            f"a labels layer for {image.name!r} ({' x '.join(map(str, shape))} pixels) needs about "
            f"{need / 2**30:.1f} GB but only {free / 2**30:.1f} GB of memory are free; nothing was "
            "made. Annotate a cropped or downsampled copy, or choose an existing labels layer"
        )


def _same_placement(a: Any, b: Any) -> bool:
    """True if layers ``a`` and ``b`` map data pixels to the same world points."""
    if a.ndim != b.ndim:
        return False
    pts = np.vstack([np.zeros(a.ndim), np.eye(a.ndim) * 1000.0])
    wa = np.array([a.data_to_world(p) for p in pts], dtype=float)
    wb = np.array([b.data_to_world(p) for p in pts], dtype=float)
    return bool(np.allclose(wa, wb, rtol=1e-6, atol=1e-6))


class _ObjectWriter:
    """Writes the objects of one finished box into a Labels layer as ONE undo step.

    Only the crop of the labels is read; the box's previous objects (``old``, a redo the user
    asked for) give way; other labels are kept unless ``settings.overwrite``; a remnant that is
    mostly covered by existing labels is refused (:func:`segdiff_core.objectness.assess_remnant`).
    """

    def __init__(self, labels: Labels, plane: PlaneSpec, result: JobFinished, old: list[int], settings: AnnotatorSettings) -> None:
        self.labels, self.plane, self.result, self.old, self.settings = labels, plane, result, old, settings
        self.written: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.rejected: str | None = None

    def write(self, objects: list[np.ndarray], first_id: int) -> list[int]:
        if not objects:
            return []
        labels, plane = self.labels, self.plane
        rows, cols = self.result.region
        current = plane.read_region(labels.data, self.result.region)
        free = (current == 0) | np.isin(current, self.old)
        plans = []
        for obj in objects:
            writable = obj if self.settings.overwrite else obj & free
            if self.settings.skip_empty and not self.result.split:
                self.rejected = assess_remnant(int(obj.sum()), int(writable.sum()))
                if self.rejected:
                    return []
            if writable.any():
                plans.append(writable)
        _check_capacity(labels, first_id + len(plans) - 1)
        edits = []
        for rec in ObjectTable.of(labels).records_of(self.old):
            # redoing a box: its previous object gives way, in the same undo step; all of it,
            # also pixels it got outside its region later (painted on by hand)
            rr, cc = np.nonzero(rec.plane.read(labels.data) == rec.label_id)
            if rr.size:
                edits.append((rec.plane.indices(rr, cc), 0))
        for k, writable in enumerate(plans):
            rr, cc = np.nonzero(writable)
            edits.append((plane.indices(rr + rows.start, cc + cols.start), first_id + k))
            self.written.append((first_id + k, rr + rows.start, cc + cols.start))
        with labels.block_history():  # one undo step; only the touched pixels are redrawn
            for n, (indices, value) in enumerate(edits):
                labels.data_setitem(indices, value, refresh=n == len(edits) - 1)
        return [i for i, _, _ in self.written]

    def records(self, key: BoxKey, jobs: Any, job_id: int) -> list[ObjectRecord]:
        box = next((job.box for job in jobs if job.job_id == job_id), None)
        out = []
        rows, cols = self.result.region
        for label_id, rr, cc in self.written:
            score = float(self.result.probability[rr - rows.start, cc - cols.start].mean())
            out.append(
                ObjectRecord(
                    label_id, self.plane, region_of(rr, cc), key, box, score,
                    source="windows" if self.result.split else "box", replaces=tuple(self.old),
                )
            )
        return out


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
