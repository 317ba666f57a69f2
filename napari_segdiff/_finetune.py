"""The Fine-tune dock widget: train the annotator's model on the objects of a labels layer.

A thin Qt view over :mod:`segdiff_core.training.finetune`: it gathers the training planes
(:func:`training_images`), starts a :class:`~segdiff_core.training.finetune_process.FinetuneProcess`
(a separate process, so the viewer stays responsive), polls its events on a timer (progress in
the panel and in napari's activity dock, a live plot of loss and validation IoU), and on
success makes the new model the annotator's active model. Fine-tuned models stay listed (newest
first) and the model used before is one click away. Closing the panel or the viewer stops the
worker process.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, SpinBox
from napari.layers import Image, Labels
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QListWidget, QProgressBar, QPushButton, QVBoxLayout, QWidget

from segdiff_core.bundled import bundled_model_path
from segdiff_core.checkpoint import CheckpointError, load_model
from segdiff_core.checkpoint import file_sha256
from segdiff_core.training.finetune import (
    FinetuneError,
    FinetuneRequest,
    TrainingImage,
    accepted_ids,
    list_finetuned,
)
from segdiff_core.training.finetune_process import FinetuneProcess

from napari_segdiff._geometry import PlaneSpec, PromptError, current_plane, image_data, spatial_shape
from napari_segdiff._lifecycle import ClosesWithItsDock, JobHandle

__all__ = ["FinetuneWidget", "training_images", "POLL_MS"]

POLL_MS = 200
SCOPES = (("current slice", "current"), ("all slices and time points", "all"))
OBJECTS = (("all objects", "all"), ("accepted objects only", "accepted"))


# ------------------------------------------------------------------------------ training data
def recipe_train() -> dict[str, Any]:
    """The recipe's [train] values (defaults of the panel's step and time limits)."""
    from segdiff_core.training.config import load_config_file
    from segdiff_core.training.finetune import RECIPE_PATH

    return dict(load_config_file(RECIPE_PATH).get("train", {}))


def _planes(viewer: Any, image: Image, scope: str) -> list[PlaneSpec]:
    """The 2D planes of ``image`` to train on: the one shown, or every one."""
    plane = current_plane(viewer, image)
    if scope == "current" or not plane.fixed:
        return [plane]
    shape = spatial_shape(image)
    others = [ax for ax, _ in plane.fixed]
    return [
        PlaneSpec(plane.ndim, plane.axes, tuple(zip(others, idx)), plane.shape)
        for idx in itertools.product(*(range(shape[ax]) for ax in others))
    ]


def training_images(viewer: Any, image: Image, labels: Labels, scope: str = "current", accepted_only: bool = False) -> list[TrainingImage]:
    """The annotated planes of ``labels`` over ``image`` as :class:`TrainingImage` objects.

    Raises
    ------
    FinetuneError
        labels of another shape than the image, no 'accepted' information
        when ``accepted_only``, or a slice the viewer cannot show.
    """
    if tuple(labels.data.shape) != spatial_shape(image):
        raise FinetuneError(
            f"the labels layer {labels.name!r} has shape {tuple(labels.data.shape)} but the image {image.name!r} "
            f"has {spatial_shape(image)}; choose the labels drawn on this image"
        )
    keep = None
    if accepted_only:
        keep = accepted_ids(labels.features) if len(labels.features) else None
        if keep is None:
            raise FinetuneError(
                f"the labels layer {labels.name!r} has no review status ('status' or 'accepted' column in its "
                "features): review the objects first, or train on all objects"
            )
    try:
        planes = _planes(viewer, image, scope)
    except PromptError as exc:
        raise FinetuneError(str(exc)) from exc
    out = []
    for plane in planes:
        lab = plane.read(labels.data)
        if not lab.any():
            continue
        name = image.name if not plane.fixed else f"{image.name} [{', '.join(f'{ax}={i}' for ax, i in plane.fixed)}]"
        out.append(TrainingImage(plane.read(image_data(image)), np.asarray(lab), name, keep))
    return out


# ------------------------------------------------------------------------------ the widget
class _LivePlot:
    """Loss and validation IoU against the step (matplotlib canvas)."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 1.8), dpi=90, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(150)
        self.loss_ax = self.figure.add_subplot(111)
        self.iou_ax = self.loss_ax.twinx()
        self.clear()

    def clear(self) -> None:
        self.loss: list[tuple[int, float]] = []
        self.iou: list[tuple[int, float]] = []
        self.redraw()

    def add(self, event: dict[str, Any]) -> None:
        if event["event"] == "log":
            self.loss.append((event["step"], event["loss"]))
        elif event["event"] in ("val", "started"):
            self.iou.append((event.get("step", 0), event["val_iou"]))
        self.redraw()

    def redraw(self) -> None:
        for ax in (self.loss_ax, self.iou_ax):
            ax.clear()
        if self.loss:
            self.loss_ax.plot(*zip(*self.loss), color="C0", lw=1)
        if self.iou:
            self.iou_ax.plot(*zip(*self.iou), color="C1", marker="o", ms=3)
        self.loss_ax.set_xlabel("step", fontsize=7)
        self.loss_ax.set_ylabel("loss", color="C0", fontsize=7)
        self.iou_ax.set_ylabel("val IoU", color="C1", fontsize=7)
        for ax in (self.loss_ax, self.iou_ax):
            ax.tick_params(labelsize=6)
        self.canvas.draw_idle()


class FinetuneWidget(ClosesWithItsDock, QWidget):
    """Fine-tune the annotator's model on your labels, in a background process."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._handle = JobHandle(lambda job: job.stop(timeout=5.0))
        self.destroyed.connect(self._handle.stop)
        self._pbar: progress | None = None
        self._closed = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)
        self._build()
        self.refresh_models()
        napari_viewer.layers.events.inserted.connect(self.reset_choices)
        napari_viewer.layers.events.removed.connect(self.reset_choices)
        self.reset_choices()

    # ---------------------------------------------------------------------------------- build
    def _build(self) -> None:
        v = self.viewer
        self.image_combo = ComboBox(label="image", choices=lambda _w=None: [(l.name, l) for l in v.layers if isinstance(l, Image)])
        self.labels_combo = ComboBox(label="labels", choices=lambda _w=None: [(l.name, l) for l in v.layers if isinstance(l, Labels)],
                                     tooltip="The objects to learn from (and the image they were drawn on)")
        self.scope = ComboBox(label="planes", choices=list(SCOPES), value="current")
        self.objects = ComboBox(label="objects", choices=list(OBJECTS), value="all",
                                tooltip="'accepted only' needs the review status of the objects")
        recipe = recipe_train()
        self.steps = SpinBox(label="max steps", value=recipe["steps"], min=1, max=100_000,
                             tooltip="Training steps at most (early stopping may end sooner)")
        self.minutes = FloatSpinBox(label="time budget (min)", value=recipe["max_minutes"], min=0.0, max=600.0, step=0.5,
                                    tooltip="Stop after this many minutes with the best model so far (0: no budget)")
        self.folder = FileEdit(label="add folder", mode="d", nullable=True,
                               tooltip="A folder exported by the annotator (images/ + masks/): its objects are added")
        self.models = ComboBox(label="fine-tuned", choices=[], tooltip="Your fine-tuned models, newest first")
        form = Container(widgets=[self.image_combo, self.labels_combo, self.scope, self.objects, self.steps,
                                  self.minutes, self.folder])
        self.folders = QListWidget()
        self.folders.setMaximumHeight(60)
        self.start_button = QPushButton("Fine-tune")
        self.cancel_button = QPushButton("Cancel (keep best so far)")
        self.clear_folders_button = QPushButton("Clear folders")
        self.progress_bar = QProgressBar()
        self.status = QLabel("Fine-tune the annotator's model on the objects of a labels layer.")
        self.status.setWordWrap(True)
        self.plot = _LivePlot()
        self.use_button = QPushButton("Use selected model")
        self.previous_button = QPushButton("Use previous model")
        self.resegment_button = QPushButton("Re-segment boxes without a label")
        layout = QVBoxLayout(self)
        layout.addWidget(form.native)
        layout.addWidget(self.folders)
        row = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.clear_folders_button):
            row.addWidget(b)
        layout.addLayout(row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.plot.canvas)
        layout.addWidget(Container(widgets=[self.models]).native)
        for b in (self.use_button, self.previous_button, self.resegment_button):
            layout.addWidget(b)
        layout.addStretch(1)
        self.folder.changed.connect(self._add_folder)
        self.clear_folders_button.clicked.connect(self.folders.clear)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(lambda: self.use_model(self.models.value))
        self.previous_button.clicked.connect(self.use_previous)
        self.resegment_button.clicked.connect(self.resegment)
        self._sync_enabled()

    def reset_choices(self, *_: Any) -> None:
        if not self._closed:
            self.image_combo.reset_choices()
            self.labels_combo.reset_choices()

    def _add_folder(self, value: Any) -> None:
        if value is not None and str(value) not in ("", ".") and Path(value).is_dir():
            self.folders.addItem(str(value))

    def refresh_models(self) -> None:
        """Offer the fine-tuned models of the data folder, newest first."""
        self.models.choices = [(m.describe(), m.path) for m in list_finetuned()]

    def _sync_enabled(self) -> None:
        running = self.running
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        annotator = self.annotator()
        self.previous_button.setEnabled(annotator is not None and annotator.previous_model is not None)

    # ------------------------------------------------------------------------------- annotator
    def annotator(self) -> Any:
        """The SegDiff annotator docked in this viewer, or None."""
        from napari_segdiff._widget import AnnotatorWidget

        window = getattr(self.viewer, "window", None)
        docks = getattr(window, "dock_widgets", {}) if window is not None else {}
        return next((w for w in docks.values() if isinstance(w, AnnotatorWidget)), None)

    def base_model(self) -> Path:
        """The annotator's active model (the bundled model without an annotator)."""
        annotator = self.annotator()
        if annotator is None:
            return bundled_model_path()
        path = annotator.active_model()
        if path is None:
            raise FinetuneError("the annotator has no usable model: choose one in the annotator first")
        return Path(path)

    def use_model(self, path: Path | None) -> bool:
        """Make ``path`` the annotator's active model (None: the bundled model), in the
        annotator's own model choice; the annotator remembers the model used before
        ('Use previous model' here, 'Previous model' there)."""
        annotator = self.annotator()
        if annotator is None:
            show_warning("SegDiff: open the SegDiff annotator to use a fine-tuned model")
            return False
        if path is not None:
            try:
                load_model(path)  # a file changed or damaged on disk is refused here
            except CheckpointError as exc:
                show_error(f"SegDiff: {exc}. The active model is unchanged")
                self.status.setText(f"Not switched: {exc}")
                return False
        annotator.use_model(path)
        self.status.setText(f"Active model: {Path(path).name if path else 'bundled nuclei model'}")
        self._sync_enabled()
        return True

    def use_previous(self) -> None:
        """Go back to the model used before the last switch (the annotator's 'Previous model')."""
        annotator = self.annotator()
        if annotator is not None and annotator.use_previous():
            active = annotator.active_model()
            self.status.setText(f"Active model: {active.name if active else 'none usable'}")
        self._sync_enabled()

    def resegment(self) -> None:
        """Segment every box without a label yet, with the annotator's active model."""
        annotator = self.annotator()
        if annotator is None:
            show_warning("SegDiff: open the SegDiff annotator (with its boxes layer) first")
            return
        annotator.segment("all")

    # --------------------------------------------------------------------------------- running
    @property
    def running(self) -> bool:
        return self._handle.job is not None and self._handle.job.running

    @property
    def job(self) -> FinetuneProcess | None:
        return self._handle.job

    def request(self) -> FinetuneRequest:
        """The fine-tune of the chosen layers and folders (raises FinetuneError with advice)."""
        image, labels = self.image_combo.value, self.labels_combo.value
        folders = tuple(self.folders.item(i).text() for i in range(self.folders.count()))
        images: list[TrainingImage] = []
        if image is not None and labels is not None:
            images = training_images(self.viewer, image, labels, self.scope.value, self.objects.value == "accepted")
        elif not folders:
            raise FinetuneError("choose an image and its labels layer (or add an exported folder)")
        base = self.base_model()
        overrides = {"train": {"steps": int(self.steps.value), "max_minutes": float(self.minutes.value)}}
        return FinetuneRequest(str(base), tuple(images), folders, overrides=overrides, base_digest=file_sha256(base),
                               started_at=time.time())

    def start(self) -> FinetuneProcess | None:
        """Start a fine-tune in a worker process; bad input is reported and nothing changes."""
        if self.running:
            show_info("SegDiff: a fine-tune is already running; wait for it or press Cancel")
            return None
        try:
            from segdiff_core.training.finetune import collect_objects

            request = self.request()
            collect_objects(request.images, request.folders)  # the clear messages, before a process starts
            job = FinetuneProcess(request)
            job.start()
        except (FinetuneError, OSError) as exc:
            show_error(f"SegDiff fine-tune: {exc}")
            self.status.setText(f"Not started: {exc}")
            return None
        self._handle.job = job
        self.plot.clear()
        self.status.setText("Starting the fine-tune process ...")
        self._timer.start()
        self._sync_enabled()
        return job

    def cancel(self) -> None:
        """Stop after the current step; the best model so far is still saved and offered."""
        if self.running:
            self._handle.job.cancel()
            self.status.setText("Cancelling: saving the best model so far ...")

    def poll(self) -> None:
        """Read the worker's events (timer slot on the GUI thread)."""
        job = self._handle.job
        if job is None:
            self._timer.stop()
            return
        for event in job.poll():
            self._on_event(event)
        if not job.running:
            self._timer.stop()
            self._handle.job = None
            if self._pbar is not None:
                self._pbar.close()
                self._pbar = None
            self._sync_enabled()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "started":
            self._started(event)
        elif kind in ("log", "val"):
            self.plot.add(event)
            self.progress_bar.setValue(int(event["step"]))
            if self._pbar is not None:
                self._pbar.update(int(event["step"]) - self._pbar.n)
            if kind == "val":
                self.status.setText(f"step {event['step']}: validation IoU {event['val_iou']:.3f}")
        elif kind == "done":
            self._done(event)
        elif kind == "error":
            show_error(f"SegDiff fine-tune: {event['message']}")
            self.status.setText(f"Fine-tune failed: {event['message']} The active model is unchanged.")

    def _started(self, event: dict[str, Any]) -> None:
        self.plot.add(event)
        self.progress_bar.setRange(0, int(event["steps"]))
        self.progress_bar.setValue(0)
        self._pbar = progress(total=int(event["steps"]), desc="SegDiff fine-tune")
        self.status.setText(
            f"Fine-tuning on {event['n_train']} objects ({event['n_val']} held aside); validation IoU before: "
            f"{event['val_iou']:.3f}"
        )

    def _done(self, event: dict[str, Any]) -> None:
        """A finished run: the new model is listed and becomes the active model."""
        info, path = event["metadata"], Path(event["model_path"])
        self.refresh_models()
        self.models.value = path
        why = f" ({event['stop_reason']})" if event.get("stop_reason") else ""
        before, after = info["val_iou_before"], info["val_iou_after"]
        ious = f"validation IoU {before:.3f} -> {after:.3f}" if after is not None else f"validation IoU before {before:.3f}, not validated since"
        if not self.use_model(path):
            self.status.setText(f"Done after {info['steps']} steps{why}: {ious}. Saved as {path.name}.")
            return
        caution = "" if event["improved"] else (
            f" It did not score higher on the {info['n_val']} held-aside objects (few objects make this noisy); "
            "'Use previous model' goes back."
        )
        self.status.setText(f"Done after {info['steps']} steps{why}: {ious}. {path.name} is now the active model.{caution}")
        show_info(f"SegDiff: fine-tuned model {path.name} is active ({ious})")

    # -------------------------------------------------------------------------------- teardown
    def close_panel(self) -> None:
        """Stop a running fine-tune (its worker process ends) and disconnect from the viewer."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        self._handle.stop()
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.disconnect(self.reset_choices)

    def close_dock_widget(self) -> None:
        self.close_panel()
