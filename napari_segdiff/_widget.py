"""The SegDiff annotator dock widget: a thin Qt view over :class:`AnnotatorController`.

Everything the user sets goes straight into the controller's settings and is saved for the next
session (:class:`~napari_segdiff._store.SettingsStore`); the buttons (and the
viewer shortcuts Shift-S, Shift-G, Shift-C) ask the controller for a run request, run it on a
napari ``thread_worker`` (one yield per denoising step, so Cancel stops within one step and the
GUI stays responsive) and route the worker's events back to the controller.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, SpinBox
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.key_bindings import coerce_keybinding
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QPainter
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListView,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from segdiff_core.bundled import bundled_model_path
from segdiff_core.device import DEVICE_CHOICES, available_devices
from segdiff_core.training.finetune import finetuned_name, list_finetuned

from napari_segdiff._controller import AnnotatorController
from napari_segdiff._geometry import PromptError
from napari_segdiff._engine import ModelInfo, RunSummary, configure_torch_threads, run_segmentation
from napari_segdiff._find import FIND_AREAS
from napari_segdiff._layers import role_of
from napari_segdiff._lifecycle import ClosesWithItsDock, JobHandle
from napari_segdiff._settings import SCHEMA, SETTINGS, AnnotatorSettings, Setting
from napari_segdiff._store import SettingsStore

__all__ = ["AnnotatorWidget", "SHORTCUTS"]

#: viewer key bindings (none of them is a napari default)
SHORTCUTS = {"segment": "Shift-S", "segment_all": "Shift-G", "cancel": "Shift-C"}

UI_DELAY_MS = 400
"""While a run is going, the progress bar, the status line and the greyed-out Segment buttons are
redrawn at most once per this many milliseconds, and not at all for a run that ends sooner (the
end of a run shows at once, in the same redraw as its last result). Each redraw of a widget makes
Qt recompose the whole window, OpenGL canvas included, which on a software-rendered screen took
CPU from the model; a one-box run now redraws the window once."""

NEW_BOXES = "<new boxes layer>"
NEW_LABELS = "<new labels layer>"


class StatusLine(QWidget):
    """A status text of up to :attr:`LINES` word-wrapped lines, with a fixed height.

    A ``QLabel`` asks its parents to lay out again at every new text (its size hint follows the
    text), and that relayout went up to napari's main window: a second window redraw per box.
    This widget's size never depends on its text, so a new text only repaints itself.
    """

    LINES = 3

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = text
        margin = 2
        self.setFixedHeight(self.fontMetrics().lineSpacing() * self.LINES + 2 * margin)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setToolTip(text)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:  # noqa: N802 (the QLabel name)
        if text == self._text:
            return
        self._text = text
        self.setToolTip(text)  # the whole text, if it needs more than LINES lines
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        painter = QPainter(self)
        flags = sum(_flag(f) for f in (Qt.AlignmentFlag.AlignLeft, Qt.AlignmentFlag.AlignTop, Qt.TextFlag.TextWordWrap))
        painter.drawText(self.rect().adjusted(0, 2, 0, -2), flags, self._text)
        painter.end()


def _shown(widget: QWidget) -> bool:
    """True if ``widget`` still exists (Qt may have deleted it) and is visible."""
    try:
        return widget.isVisible()
    except RuntimeError:  # its C++ object was deleted
        return False


def _flag(flag: Any) -> int:
    """A Qt flag as an int (Qt5 and Qt6 enums)."""
    return int(getattr(flag, "value", flag))


def _button(text: str, tooltip: str) -> QPushButton:
    """A push button with its tooltip."""
    button = QPushButton(text)
    button.setToolTip(tooltip)
    return button


def _layer_choices(viewer: Any, kind: type, new_text: str | None, own: bool = True) -> Callable[[Any], list]:
    """Choices of a layer combo box; ``own=False`` leaves out the layers the annotator made."""

    def choices(_widget: Any = None) -> list:
        out: list = [(new_text, None)] if new_text else []
        out += [
            (layer.name, layer) for layer in viewer.layers
            if isinstance(layer, kind) and (own or role_of(layer) is None)
        ]
        return out

    return choices


#: the settings that choose the model file
MODEL_FIELDS = ("model_source", "finetuned_model", "model_path")


def _same_choices(combo: ComboBox, choices: Callable[[Any], list]) -> bool:
    """True if ``combo`` already lists exactly the (name, layer) pairs ``choices`` gives."""
    want = choices(combo)
    have = combo.native
    return len(want) == have.count() and all(
        have.itemText(i) == name and have.itemData(i) is data for i, (name, data) in enumerate(want)
    )


def _finetuned_choices(_widget: Any = None) -> list[tuple[str, str]]:
    """The fine-tuned models of the data folder, newest first: (description, name)."""
    return [(m.describe(), m.path.stem) for m in list_finetuned()]


def _is_bundled(path: str | Path) -> bool:
    try:
        return Path(path) == bundled_model_path()
    except FileNotFoundError:
        return False


def make_control(setting: Setting, values: list | None = None) -> Any:
    """The magicgui control of one setting, built from its declaration (range, choices, tip);
    ``values`` narrows a choice to the values usable here (e.g. the devices this machine has)."""
    tip = setting.tooltip + setting.describe_range()
    common = {"value": setting.default, "tooltip": tip}
    if setting.kind is bool:
        return CheckBox(text=setting.label, **common)
    if setting.free_text:  # a choice among values that exist at run time (the widget lists them)
        return ComboBox(label=setting.label, choices=values or [], nullable=True, tooltip=tip)
    if setting.choices is not None:
        choices = [c for c in setting.choices if values is None or c[1] in values]
        return ComboBox(label=setting.label, choices=choices, **common)
    if setting.kind is Path:
        return FileEdit(label=setting.label, mode="r", filter="*.pt", nullable=True, tooltip=tip)
    if setting.kind is int:
        control = SpinBox(label=setting.label, min=int(setting.lo), max=int(setting.hi), **common)
    else:
        control = FloatSpinBox(label=setting.label, min=setting.lo, max=setting.hi, step=setting.step, **common)
    if setting.special:
        control.native.setSpecialValueText(setting.special)  # e.g. "model default" for 0
    return control


class AnnotatorWidget(ClosesWithItsDock, QWidget):
    """Box-prompted SegDiff annotation with live denoising preview, uncertainty and cancel."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.controller = AnnotatorController(napari_viewer)
        self._bound_keys: dict[str, Callable] = {}
        self._closed = False
        # if Qt deletes this widget (the viewer closes), stop a running worker
        self._handle = JobHandle(lambda worker: worker.quit())
        self.destroyed.connect(self._handle.stop)
        self.destroyed.connect(self.controller.detach_view)  # the viewer closed under us
        self._store = SettingsStore()
        self._saving = False  # off while saved settings are being shown
        self._model_now: Path | None = None  # the active model file, and the one before it
        self.previous_model: Path | None = None
        self._save_failed = False
        self._model_info: ModelInfo | None = None
        self._pending_view: dict[str, Any] = {}  # status/progress held back while a run is going
        self._list_views: list[QListView] = []  # napari's layer list (see _lay_out_layer_list)
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(UI_DELAY_MS)
        self._view_timer.timeout.connect(self._show_pending_view)
        configure_torch_threads()  # once per process, on the GUI thread (never from a run)

        self._build()
        self._connect()
        self._bind_keys()
        self.reset_choices()
        self._restore_settings()
        self._check_bundled_model()
        self._model_now, self.previous_model = self.active_model(), None
        self._sync_enabled()

    # ---------------------------------------------------------------------------------------
    # construction
    # ---------------------------------------------------------------------------------------

    def _build(self) -> None:
        layers_box = self._build_layer_pickers()
        setting_boxes = self._build_settings()
        self._build_run_controls()
        export_box = self._build_export()
        self._lay_out(layers_box, *setting_boxes, export_box)
        self._containers = [layers_box, *setting_boxes, export_box]

    def _build_layer_pickers(self) -> Container:
        v = self.viewer
        image_choices = _layer_choices(v, Image, None, own=False)
        boxes_choices = _layer_choices(v, Shapes, NEW_BOXES)
        labels_choices = _layer_choices(v, Labels, NEW_LABELS)
        self.image_combo = ComboBox(
            label="image", choices=image_choices,
            tooltip="The image to annotate (grayscale or RGB, any dtype; 3D/time stacks: the current 2D slice)",
        )
        self.boxes_combo = ComboBox(
            label="boxes", choices=boxes_choices,
            tooltip="Shapes layer with the box prompts (rectangles). '<new boxes layer>' makes one "
            "over the image with the rectangle tool ready",
        )
        self.labels_combo = ComboBox(
            label="labels", choices=labels_choices,
            tooltip="Labels layer that receives one new label per object ('<new labels layer>' makes one)",
        )
        self._combo_choices = [
            (self.image_combo, image_choices), (self.boxes_combo, boxes_choices), (self.labels_combo, labels_choices),
        ]
        return Container(widgets=[self.image_combo, self.boxes_combo, self.labels_combo])

    def _build_settings(self) -> tuple[Container, Container, Container, Container]:
        """One control per setting (from the settings schema), grouped: model, prompt, sampling, output."""
        here = [d for d in DEVICE_CHOICES if d == "auto" or d in available_devices()]
        controls = {st.name: make_control(st, here if st.name == "device" else None) for st in SETTINGS}
        self.controls = controls
        self.model_source, self.model_file, self.device = (
            controls["model_source"], controls["model_path"], controls["device"]
        )
        self.finetuned_combo = controls["finetuned_model"]
        self.finetuned_combo.choices = _finetuned_choices
        self.model_label = QLabel("model not loaded yet")
        self.model_label.setWordWrap(True)
        self.previous_button = _button("Previous model", "Go back to the model used before the last switch")
        self.protocol, self.margin = controls["protocol"], controls["margin"]
        self.window_scale, self.window_overlap = controls["window_scale"], controls["window_overlap"]
        self.sampler, self.steps, self.generations = controls["sampler"], controls["steps"], controls["generations"]
        self.batch_boxes = controls["batch_boxes"]
        self.threshold, self.seed = controls["threshold"], controls["seed"]
        self.preview, self.uncertainty, self.overwrite = controls["preview"], controls["uncertainty"], controls["overwrite"]
        self.largest_only, self.skip_empty = controls["largest_object_only"], controls["skip_empty"]
        groups = (
            (self.model_source, self.finetuned_combo, self.model_file, self.device),
            (self.protocol, self.margin, self.window_scale, self.window_overlap),
            (self.sampler, self.steps, self.generations, self.batch_boxes, self.threshold, self.seed),
            (self.preview, self.uncertainty, self.overwrite, self.largest_only, self.skip_empty),
        )
        model_box, prompt_box, sampling_box, output_box = (Container(widgets=list(g)) for g in groups)
        return model_box, prompt_box, sampling_box, output_box

    def _build_run_controls(self) -> None:
        k = SHORTCUTS
        self.segment_button = _button(f"Segment  [{k['segment']}]",
                                      f"Segment the selected box(es), or else the newest box ({k['segment']})")
        self.segment_all_button = _button(f"Segment all  [{k['segment_all']}]",
                                          f"Segment every box that has no label yet ({k['segment_all']})")
        self.cancel_button = _button(f"Cancel  [{k['cancel']}]",
                                     f"Stop after the current denoising step; the unfinished box writes nothing "
                                     f"({k['cancel']})")
        self.find_area = ComboBox(
            label="find in", choices=list(FIND_AREAS), value="visible area",
            tooltip="Where Find all objects looks: the visible area, the selected drawn box, or the whole image",
        )
        self.find_button = _button("Find all objects", "Propose one box per object (Otsu + watershed) and segment "
                                   "them all; the boxes can be edited, redone or deleted like drawn ones")
        self.draw_button = _button("Draw boxes", "Select the boxes layer (made if needed) with the rectangle tool")
        self.reset_settings_button = _button(
            "Reset settings", "Back to the defaults (settings are remembered between napari sessions)"
        )
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.status = StatusLine("Draw a box around an object, then press Segment.")

    def _build_export(self) -> Container:
        self.labels_file = FileEdit(
            label="labels file", mode="w", filter="*.tif", nullable=True,
            tooltip="TIFF file for the whole labels layer (uint8/16/32 instance labels)",
        )
        self.export_labels_button = _button("Export labels", "Write the labels layer to the TIFF file above")
        self.training_dir = FileEdit(
            label="training folder", mode="d", nullable=True,
            tooltip="Folder for training pairs: images/<name>.tif + masks/<name>.tif, as read by "
            "segdiff-train --data.source instances --data.root <folder>",
        )
        self.export_pair_button = _button("Export training pair (current slice)",
                                          "Write the current 2D slice and its instance labels to the training folder")
        self.export_accepted_only = CheckBox(
            text="accepted objects only",
            tooltip="Export only the objects accepted in the SegDiff review panel; the others become background",
        )
        return Container(widgets=[self.labels_file, self.training_dir, self.export_accepted_only])

    def _lay_out(self, layers_box: Container, model_box: Container, prompt_box: Container,
                 sampling_box: Container, output_box: Container, export_box: Container) -> None:
        """Settings in a scroll area; the run controls and the status below it, always visible."""
        inner = QWidget()
        lay = QVBoxLayout(inner)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(layers_box.native)
        lay.addWidget(self.draw_button)
        lay.addWidget(model_box.native)
        lay.addWidget(self.previous_button)
        lay.addWidget(self.model_label)
        self.prompt_section = self._section("Prompt", prompt_box, expanded=False)
        self.sampling_section = self._section("Sampling", sampling_box, expanded=True)
        self.output_section = self._section("Preview and output", output_box, expanded=True)
        for sec in (self.prompt_section, self.sampling_section, self.output_section):
            lay.addWidget(sec)
        lay.addWidget(self.reset_settings_button)
        export_inner = QWidget()
        ex = QVBoxLayout(export_inner)
        ex.setContentsMargins(0, 0, 0, 0)
        for w in (export_box.native, self.export_labels_button, self.export_pair_button):
            ex.addWidget(w)
        self.export_section = QCollapsible("Export (fine-tune loop)")
        self.export_section.addWidget(export_inner)
        self.export_section.expand(animate=False)
        lay.addWidget(self.export_section)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        bottom = QWidget()
        run_lay = QVBoxLayout(bottom)
        run_lay.setContentsMargins(4, 2, 4, 4)
        for pair in ((self.segment_button, self.segment_all_button), (self.find_area.native, self.find_button)):
            row = QHBoxLayout()
            for w in pair:
                row.addWidget(w)
            run_lay.addLayout(row)
        for w in (self.cancel_button, self.progress_bar, self.status):
            run_lay.addWidget(w)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll, 1)
        outer.addWidget(bottom, 0)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.setMinimumWidth(300)

    @staticmethod
    def _section(title: str, box: Container, expanded: bool) -> QCollapsible:
        sec = QCollapsible(title)
        sec.addWidget(box.native)
        if expanded:
            sec.expand(animate=False)
        else:
            sec.collapse(animate=False)
        return sec

    def _connect(self) -> None:
        c = self.controller
        self.image_combo.changed.connect(self._on_image_changed)
        self.boxes_combo.changed.connect(lambda layer: c.set_prompts_layer(layer))
        self.labels_combo.changed.connect(lambda layer: c.set_labels_layer(layer))

        for name, (widget, convert) in self._setting_widgets().items():
            widget.changed.connect(lambda value, name=name, convert=convert: self._set(name, convert(value)))

        self.segment_button.clicked.connect(lambda: self.segment("newest"))
        self.segment_all_button.clicked.connect(lambda: self.segment("all"))
        self.find_button.clicked.connect(self.find_all)
        self.cancel_button.clicked.connect(self.cancel)
        self.draw_button.clicked.connect(self._draw_boxes)
        self.previous_button.clicked.connect(self.use_previous)
        self.reset_settings_button.clicked.connect(self.reset_settings)
        self.export_labels_button.clicked.connect(self._export_labels)
        self.export_pair_button.clicked.connect(self._export_pair)

        c.progress_changed.connect(self._on_progress)
        c.running_changed.connect(self._on_running_changed)
        c.model_loaded.connect(self._on_model_loaded)
        c.status_changed.connect(self._on_status)
        c.layers_updated.connect(self._lay_out_layer_list)
        c.cancel_requested.connect(self.cancel)

        events = self.viewer.layers.events
        events.inserted.connect(self._on_layers_changed)
        events.removed.connect(self._on_layers_changed)
        events.reordered.connect(self._on_layers_changed)

    def _setting_widgets(self) -> dict[str, tuple[Any, Callable[[Any], Any]]]:
        """Each :class:`AnnotatorSettings` field -> (its widget, widget value -> setting value)."""
        convert = {bool: bool, int: int, float: float, str: str, Path: lambda v: v}
        text = lambda v: "" if v is None else str(v)  # noqa: E731 (a free-text choice with nothing listed)
        return {st.name: (self.controls[st.name], text if st.free_text else convert[st.kind]) for st in SETTINGS}

    def _set(self, name: str, value: Any) -> None:
        if self.controller.update_settings(**{name: value}) and self._saving:
            self._save_settings()
        if name == "model_source" and value == "finetuned" and self.finetuned_combo.value is None:
            newest = next((v for v in self.finetuned_combo.choices if v), None)
            if newest is not None:
                self.finetuned_combo.value = newest  # the newest fine-tuned model, unless one is chosen
        if name in MODEL_FIELDS:
            self._track_model()
        self._sync_enabled()

    # ---------------------------------------------------------------------------------------
    # remembered settings
    # ---------------------------------------------------------------------------------------

    def show_settings(self, settings: AnnotatorSettings) -> list[str]:
        """Put ``settings`` into the widgets (and so into the controller); returns the fields a
        widget could not show (e.g. a device this machine lacks), which keep their value."""
        problems = []
        for name, (widget, _convert) in self._setting_widgets().items():
            value = getattr(settings, name)
            if SCHEMA[name].free_text and value not in widget.choices:
                if value:  # e.g. a fine-tuned model deleted since the last session: none is chosen
                    problems.append(f"the {SCHEMA[name].label} model {value!r} is no longer in the data folder")
                value = None
            try:
                widget.value = value
            except (ValueError, TypeError) as exc:
                problems.append(f"{name} = {value!r} cannot be used here ({exc})")
        self._sync_enabled()
        return problems

    # ---------------------------------------------------------------------------------------
    # the active model (used by the Fine-tune panel, napari_segdiff._finetune)
    # ---------------------------------------------------------------------------------------

    def active_model(self) -> Path | None:
        """The model file the next run will use, or None when the choice is unusable."""
        try:
            return self.controller.model_path()
        except PromptError:
            return None

    def use_model(self, path: str | Path | None) -> None:
        """Make ``path`` the active model (None: the bundled model), as if chosen in the widgets
        (so it is remembered for the next session): a file in the fine-tuned models folder is
        chosen as a fine-tuned model, any other file as a checkpoint file. The model active
        before stays one click away (:meth:`use_previous`)."""
        if path is None or _is_bundled(path):
            self.model_source.value = "bundled"
            return
        name = finetuned_name(path)
        if name is not None:
            self.refresh_finetuned()
            self.finetuned_combo.value = name
            self.model_source.value = "finetuned"
            return
        self.model_file.value = Path(path)
        self.model_source.value = "file"

    def use_previous(self) -> bool:
        """Back to the model used before the last switch (False when there is none)."""
        if self.previous_model is None:
            self.status.setText("No previous model in this session.")
            return False
        self.use_model(self.previous_model)
        return True

    def refresh_finetuned(self) -> None:
        """List the fine-tuned models of the data folder again (e.g. after a fine-tune)."""
        self.finetuned_combo.reset_choices()

    def _track_model(self) -> None:
        """Remember the model used before a switch (for :meth:`use_previous`)."""
        now = self.active_model()
        if now is not None and now != self._model_now:
            before, self._model_now = self._model_now, now
            if before is not None:
                self.previous_model = before
                self._show_model_defaults(None)  # the last model's defaults no longer apply
        prev = self.previous_model
        self.previous_button.setToolTip(
            f"Go back to {prev.name if prev else 'the model used before the last switch'}"
        )

    def reset_settings(self) -> None:
        """All settings back to their defaults (saved as such)."""
        self.show_settings(AnnotatorSettings())
        self._save_settings()
        self.status.setText("Settings reset to the defaults.")

    def _restore_settings(self) -> None:
        saved, problems = self._store.load()
        problems += self.show_settings(saved)
        self._saving = True
        if problems:
            show_warning("SegDiff: " + "; ".join(problems))

    def _save_settings(self) -> None:
        error = self._store.save(self.controller.settings)
        if error and not self._save_failed:
            self._save_failed = True  # say it once, not on every click
            show_warning(f"SegDiff: {error}. Settings will not be remembered.")

    # ---------------------------------------------------------------------------------------
    # layers
    # ---------------------------------------------------------------------------------------

    @property
    def worker(self) -> GeneratorWorker | None:
        """The worker of the running segmentation (None when idle)."""
        return self._handle.job

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer lists (napari calls this when layers change)."""
        if self._closed:
            return
        for combo, choices in self._combo_choices:
            if not _same_choices(combo, choices):  # re-setting equal items relays the whole window out
                combo.reset_choices()
        if self.image_combo.value is not self.controller.image_layer:
            self._on_image_changed(self.image_combo.value)
        self._show_controller_layers()

    def _on_layers_changed(self, event: Any = None) -> None:
        self.reset_choices()

    def _on_image_changed(self, layer: Image | None) -> None:
        self.controller.set_image_layer(layer)
        self._show_controller_layers()
        if layer is not None and self.controller.prompts_layer is None:
            # a boxes layer with the rectangle tool, once napari has finished adding the image
            QTimer.singleShot(0, self._auto_prompts)

    def _auto_prompts(self) -> None:
        c = self.controller
        if self._closed or c.image_layer is None or c.prompts_layer is not None or c.is_running:
            return
        c.ensure_prompts_layer()
        self.reset_choices()

    def _show_controller_layers(self) -> None:
        c = self.controller
        for combo, layer in ((self.boxes_combo, c.prompts_layer), (self.labels_combo, c.labels_layer)):
            if combo.value is not layer:
                with combo.changed.blocked():
                    combo.value = layer if layer in self.viewer.layers else None

    def _draw_boxes(self) -> None:
        if self.controller.image_layer is None:
            show_warning("SegDiff: open or choose an image first")
            return
        self.controller.ensure_prompts_layer()
        self.reset_choices()

    # ---------------------------------------------------------------------------------------
    # running
    # ---------------------------------------------------------------------------------------

    def segment(self, scope: str = "newest") -> GeneratorWorker | None:
        """Start segmenting ('newest': selected or newest box; 'all': every unsegmented box)."""
        if self._after_finishing_thread(lambda: self.segment(scope)):
            return None
        if self.worker is not None:
            self.controller.prepare_run(scope)  # reports that a run is going on
            return None
        request = self.controller.prepare_run(scope)  # type: ignore[arg-type]
        self.reset_choices()
        if request is None:
            return None
        worker = create_worker(run_segmentation, request, self.controller.cache, _start_thread=False)
        worker.yielded.connect(self.controller.handle_event)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self.controller.cancelled)
        worker.finished.connect(self._on_finished)
        self._handle.job = worker
        self._show_running_later()  # the buttons show the run within UI_DELAY_MS (see there)
        worker.start()
        return worker

    def find_all(self) -> GeneratorWorker | None:
        """Find all objects in the chosen area as boxes, then segment every open box."""
        if self._after_finishing_thread(self.find_all):
            return None
        if self.worker is not None:
            self.controller.prepare_run("all")  # reports that a run is going on
            return None
        found = self.controller.find_objects(self.find_area.value)
        if found is None:
            return None
        c = self.controller
        if found == 0 and not any(not ids and not rej for ids, rej in zip(c.box_objects(), c.rejected_boxes())):
            return None  # nothing new, and no box waiting for its object
        return self.segment("all")

    def _after_finishing_thread(self, action: Callable[[], Any]) -> bool:
        """True when the last run has ended but its worker thread has not yet (a few ms): then
        ``action`` runs once the thread ends, so a click in that moment is carried out rather
        than refused (the Segment buttons are enabled again with the run's end)."""
        worker = self.worker
        if worker is None or self.controller.is_running:
            return False
        worker.finished.connect(lambda: None if self._closed else action())
        return True

    def cancel(self) -> None:
        """Ask the running segmentation to stop after its current denoising step."""
        if self.worker is not None:
            self.worker.quit()
            self._pending_view.pop("status", None)
            self.status.setText("cancelling ...")

    def _lay_out_layer_list(self) -> None:
        """After the controller updated layers: lay napari's layer list out now, so its repaint
        joins the canvas's in one window redraw. (The list answers every layer event with a
        layout deferred to a zero timer, which Qt ran after the canvas's redraw: a second
        composite of the whole window per box, ~10 ms on a software-rendered screen.) The list
        is found with Qt's public API among the visible list views of the viewer's window (a
        floating dock keeps the window as its parent), and remembered: searching the window
        takes milliseconds."""
        if self._closed:
            return
        views = [v for v in self._list_views if _shown(v)]
        if not views:
            top: QWidget = self
            while top.parentWidget() is not None:
                top = top.parentWidget()
            self._list_views = views = [v for v in top.findChildren(QListView) if v.isVisible()]
        for view in views:
            view.doItemsLayout()

    def _on_returned(self, summary: RunSummary) -> None:
        self.controller.finish(summary)

    def _on_finished(self) -> None:
        self._handle.job = None
        self.controller.worker_finished()
        if not self._closed:
            self._sync_enabled()

    def _on_progress(self, done: int, total: int, text: str) -> None:
        self._view_update("progress", (done, total, text))

    def _on_status(self, text: str) -> None:
        self._view_update("status", text)

    def _view_update(self, what: str, value: Any) -> None:
        """Show a status/progress change now when idle, else with the next delayed redraw."""
        self._pending_view[what] = value
        if not self.controller.is_running:
            self._show_pending_view()
        elif not self._view_timer.isActive():
            self._view_timer.start()

    def _show_pending_view(self) -> None:
        self._view_timer.stop()
        pending, self._pending_view = self._pending_view, {}
        if self._closed:
            return
        if self.controller.is_running:  # (at a run's end, _on_running_changed enables them)
            self._sync_enabled()
        if "status" in pending:
            self.status.setText(pending["status"])
        if "progress" in pending:
            done, total, text = pending["progress"]
            bar = self.progress_bar
            # QProgressBar.setValue repaints synchronously, which recomposes the whole window
            # (OpenGL canvas included); with updates off, one asynchronous update is queued instead
            bar.setUpdatesEnabled(False)
            bar.setRange(0, max(total, 1))
            bar.setValue(done)
            bar.setFormat(f"%p%  {text}" if text else "%p%")
            bar.setUpdatesEnabled(True)

    def _on_running_changed(self, running: bool) -> None:
        if running:
            self._show_running_later()
            return
        self._show_pending_view()  # the run's last status and progress, at once
        if self.worker is not None:
            self.worker.quit()  # the controller ended the run (e.g. a failure): stop the worker
        # the buttons come back with the run's result, in its redraw, not when the thread ends
        self._sync_enabled(running=False)

    def _show_running_later(self) -> None:
        """Grey out the Segment buttons (and enable Cancel) with the next delayed redraw, not at
        once: a run that ends within UI_DELAY_MS then redraws the window once, at its end, instead
        of also at its start, when the redraw held up the worker's first step. Meanwhile a click
        on Segment only reports that a run is going on; Shift-C cancels at any time."""
        if not self._view_timer.isActive():
            self._view_timer.start()

    def _on_model_loaded(self, info: ModelInfo) -> None:
        if info == self._model_info:
            return  # the same model as the last run: nothing to redraw
        self._show_model_defaults(info)

    def _show_model_defaults(self, info: ModelInfo | None) -> None:
        """Describe the loaded model and show its defaults in the fields whose 0 means "the
        model's default" (None: another model was chosen and is not loaded yet)."""
        self._model_info = info
        if info is None:
            name = self._model_now.name if self._model_now is not None else "the model"
            self.model_label.setText(f"{name}: its defaults are shown after its first run")
        else:
            self.model_label.setText(info.describe())
        for name in ("steps", "generations", "threshold"):
            setting, control = SCHEMA[name], self.controls[name]
            if info is None:
                control.tooltip = setting.tooltip + setting.describe_range()
                control.native.setSpecialValueText(setting.special)
                continue
            value = getattr(info.defaults, name)
            control.tooltip = f"{setting.tooltip}{setting.describe_range()} (0 = the model's default, {value:g})"
            control.native.setSpecialValueText(f"model default ({value:g})")

    def _sync_enabled(self, running: bool | None = None) -> None:
        if running is None:
            running = self.worker is not None or self.controller.is_running
        self.segment_button.setEnabled(not running)
        self.segment_all_button.setEnabled(not running)
        self.find_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.model_file.enabled = self.model_source.value == "file"
        self.finetuned_combo.enabled = self.model_source.value == "finetuned"
        self.previous_button.setEnabled(self.previous_model is not None)
        self.margin.enabled = self.protocol.value == "custom"
        self.window_scale.enabled = self.protocol.value == "windows"
        self.window_overlap.enabled = self.protocol.value == "windows"

    def _check_bundled_model(self) -> None:
        try:
            bundled_model_path()
        except FileNotFoundError as exc:
            self.model_source.value = "file"
            self.model_label.setText("bundled model missing: choose a checkpoint file")
            self._model_info = None
            show_warning(f"SegDiff: {exc}. Choose a checkpoint file (.pt) under 'checkpoint'.")

    # ---------------------------------------------------------------------------------------
    # export
    # ---------------------------------------------------------------------------------------

    def _export_labels(self) -> None:
        path = self.labels_file.value
        self.controller.export_labels(path if path is not None else "")

    def _export_pair(self) -> None:
        folder = self.training_dir.value
        self.controller.export_training_crops(
            folder if folder is not None else "", accepted_only=bool(self.export_accepted_only.value)
        )

    # ---------------------------------------------------------------------------------------
    # shortcuts and teardown
    # ---------------------------------------------------------------------------------------

    def _bind_keys(self) -> None:
        actions = {
            "segment": lambda _viewer: self.segment("newest"),
            "segment_all": lambda _viewer: self.segment("all"),
            "cancel": lambda _viewer: self.cancel(),
        }
        for name, key in SHORTCUTS.items():
            func = actions[name]
            self.viewer.bind_key(key, func, overwrite=True)
            self._bound_keys[key] = func

    def _unbind_keys(self) -> None:
        keymap = self.viewer.keymap
        for key, func in self._bound_keys.items():
            if keymap.get(coerce_keybinding(key)) is func:
                self.viewer.bind_key(key, None)
        self._bound_keys.clear()

    def close_annotator(self) -> None:
        """Stop any run, unbind the shortcuts and disconnect from the viewer."""
        if self._closed:
            return
        self._closed = True
        if self.worker is not None:
            self.worker.quit()
        self.controller.detach_view()  # no more updates of Qt widgets that may be deleted
        self._unbind_keys()
        events = self.viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.disconnect(self._on_layers_changed)
        self.controller.close()

    def close_dock_widget(self) -> None:
        self.close_annotator()
