"""The Review dock widget: objects sorted least-certain first, Accept / Reject / Redo, next to
review, re-threshold from the stored probability, per-object CSV.

A thin view over :class:`napari_segdiff._review_model.ReviewSession` (no logic here besides
layout). Keyboard shortcuts work while the panel has focus (click the table): ``A`` accept,
``R`` reject, ``G`` redo with more generations, ``M`` redo with a larger margin, ``N`` next to
review. The annotator colours each segmented box by its object's score (magenta = uncertain,
green = certain; :func:`napari_segdiff._review_model.score_colour`).
"""
from __future__ import annotations

import logging
from typing import Any

from magicgui.widgets import ComboBox
from napari.layers import Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_segdiff._review_model import ReviewRow, ReviewSession, counts
from napari_segdiff._settings import SCHEMA
from napari_segdiff._widget import make_control

__all__ = ["ReviewWidget"]

log = logging.getLogger(__name__)

COLUMNS = ("id", "slice", "score", "area", "status")

REFRESH_DELAY_MS = 300
"""The table follows changes of the labels this long after they stop: a brush stroke changes the
labels at every mouse move, and re-reading every object each time made painting lag (about
0.1 s per move with 800 objects on a 2048 x 2048 layer, growing with the image)."""


class ReviewWidget(QWidget):
    """Dock widget contributed by napari.yaml ("SegDiff review")."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = ReviewSession(napari_viewer)
        self._rows: list[ReviewRow] = []
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_DELAY_MS)
        self._refresh_timer.timeout.connect(self.refresh)
        self._build()
        self._connect()
        self.reset_choices()
        self.refresh()

    # -- layout (flat) ----------------------------------------------------------------------

    def _build(self) -> None:
        self.labels_combo = ComboBox(label="labels", choices=self._labels_choices, nullable=True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.counts_label = QLabel()
        self.accept_btn = QPushButton("Accept (A)")
        self.reject_btn = QPushButton("Reject (R)")
        self.redo_gen_btn = QPushButton("Redo: 2x generations (G)")
        self.redo_margin_btn = QPushButton("Redo: +10 % margin (M)")
        self.next_btn = QPushButton("Next to review (N)")
        self.threshold = make_control(SCHEMA["threshold"])  # the annotator's declaration: 0 = model default
        self.rethreshold_sel_btn = QPushButton("Re-threshold selected")
        self.rethreshold_all_btn = QPushButton("Re-threshold all")
        self.export_btn = QPushButton("Export CSV ...")
        self.refresh_btn = QPushButton("Refresh")
        layout = QVBoxLayout(self)
        layout.addWidget(self.labels_combo.native)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.table)
        for group in ((self.accept_btn, self.reject_btn, self.next_btn), (self.redo_gen_btn, self.redo_margin_btn),
                      (self.rethreshold_sel_btn, self.rethreshold_all_btn), (self.export_btn, self.refresh_btn)):
            row = QHBoxLayout()
            for w in group:
                row.addWidget(w)
            layout.addLayout(row)
        layout.insertWidget(layout.count() - 2, self.threshold.native)
        self.shortcuts: dict[int, Any] = {
            Qt.Key.Key_A: self.accept, Qt.Key.Key_R: self.reject, Qt.Key.Key_N: self.next_to_review,
            Qt.Key.Key_G: lambda: self.redo("generations"), Qt.Key.Key_M: lambda: self.redo("margin"),
        }
        self.table.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt API)
        """Single-key shortcuts while the table has focus (A, R, N, G, M without modifiers)."""
        if obj is self.table and event.type() == QEvent.Type.KeyPress and not (
                event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier):
            slot = self.shortcuts.get(event.key())
            if slot is not None:
                slot()
                return True
        return super().eventFilter(obj, event)

    def _connect(self) -> None:
        self.labels_combo.changed.connect(self._on_labels_changed)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.accept_btn.clicked.connect(self.accept)
        self.reject_btn.clicked.connect(self.reject)
        self.next_btn.clicked.connect(self.next_to_review)
        self.redo_gen_btn.clicked.connect(lambda: self.redo("generations"))
        self.redo_margin_btn.clicked.connect(lambda: self.redo("margin"))
        self.rethreshold_sel_btn.clicked.connect(lambda: self.rethreshold(selected_only=True))
        self.rethreshold_all_btn.clicked.connect(lambda: self.rethreshold(selected_only=False))
        self.export_btn.clicked.connect(self._export_dialog)
        self.refresh_btn.clicked.connect(self.refresh)
        self.viewer.layers.events.inserted.connect(self.reset_choices)
        self.viewer.layers.events.removed.connect(self.reset_choices)

    def _labels_choices(self, _widget: Any = None) -> list:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Labels)]

    def reset_choices(self, *_: Any) -> None:
        self.labels_combo.reset_choices()
        if self.labels_combo.value is None and self.labels_combo.choices:
            self.labels_combo.value = self.labels_combo.choices[-1]

    def _on_labels_changed(self, layer: Labels | None) -> None:
        old = self.session.labels
        if old is not None:
            old.events.data.disconnect(self._on_data)
            if hasattr(old.events, "labels_update"):
                old.events.labels_update.disconnect(self._on_data)
        self.session.labels = layer
        if layer is not None:
            layer.events.data.connect(self._on_data)
            if hasattr(layer.events, "labels_update"):
                layer.events.labels_update.connect(self._on_data)
        self.refresh()

    def _on_data(self, *_: Any) -> None:
        self._refresh_timer.start()  # once the labels stop changing (a stroke, a batch of commits)

    # -- view -------------------------------------------------------------------------------

    def refresh(self, *_: Any) -> None:
        """Re-read the objects, rewrite the table, the counts, the features and box colours."""
        self._refresh_timer.stop()
        selected = self.selected_id()
        self._rows = self.session.rows()
        if self.session.labels is not None:
            self.session.sync_features()
        self.table.blockSignals(True)
        self.table.setRowCount(len(self._rows))
        for i, r in enumerate(self._rows):
            cells = (str(r.label_id), " ".join(map(str, r.slice)) or "-",
                     f"{r.score:.2f}" if r.has_score else "no score", str(r.area), r.status)
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.blockSignals(False)
        if selected is not None:
            self._select_id(selected, focus=False)
        c = counts(self._rows)
        self.counts_label.setText(f"{c['accepted']} accepted, {c['pending']} pending, {c['rejected']} rejected, "
                                  f"{c['no score']} without score")

    def selected_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or rows[0].row() >= len(self._rows):
            return None
        return self._rows[rows[0].row()].label_id

    def _select_id(self, label_id: int, focus: bool = True) -> bool:
        for i, r in enumerate(self._rows):
            if r.label_id == label_id:
                self.table.blockSignals(not focus)
                self.table.selectRow(i)
                self.table.blockSignals(False)
                return True
        return False

    def _on_selection(self) -> None:
        label_id = self.selected_id()
        if label_id is not None:
            self.session.focus(label_id)

    # -- actions ----------------------------------------------------------------------------

    def accept(self) -> None:
        label_id = self.selected_id()
        if label_id is None:
            show_info("SegDiff review: select an object in the table first")
            return
        self.session.accept(label_id)
        self.refresh()
        self.next_to_review(after=label_id)

    def reject(self) -> None:
        label_id = self.selected_id()
        if label_id is None:
            show_info("SegDiff review: select an object in the table first")
            return
        self.session.reject(label_id)  # one undo step (Ctrl+Z on the labels layer brings it back)
        self.refresh()
        self.next_to_review(after=label_id)

    def next_to_review(self, after: int | None = None) -> int | None:
        from napari_segdiff._review_model import next_to_review

        row = next_to_review(self._rows, after if after is not None else self.selected_id())
        if row is None:
            show_info("SegDiff review: nothing left to review")
            return None
        self._select_id(row.label_id)
        return row.label_id

    def rethreshold(self, selected_only: bool = False) -> int:
        ids = None
        if selected_only:
            label_id = self.selected_id()
            if label_id is None:
                show_info("SegDiff review: select an object in the table first")
                return 0
            ids = [label_id]
        changed, messages = self.session.rethreshold(float(self.threshold.value), ids, annotator=self._annotator)
        for msg in messages:
            show_warning(f"SegDiff review: {msg}")
        self.refresh()
        return changed

    def redo(self, what: str) -> Any:
        """Sample the selected object's box again through the annotator, with twice the
        generations or a 10 % larger crop margin (the annotator's settings are unchanged)."""
        label_id = self.selected_id()
        if label_id is None:
            show_info("SegDiff review: select an object in the table first")
            return None
        return self.session.redo(label_id, what, self._annotator())

    def _annotator(self) -> Any:
        """The SegDiff annotator dock widget of this viewer (opened from the plugin if none)."""
        from napari_segdiff._widget import AnnotatorWidget

        for widget in dict(getattr(self.viewer.window, "dock_widgets", {})).values():
            found = widget if isinstance(widget, AnnotatorWidget) else widget.findChild(AnnotatorWidget)
            if found is not None:
                return found
        _, widget = self.viewer.window.add_plugin_dock_widget("napari-segdiff", "SegDiff annotator")
        return widget

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Per-object table", "objects.csv", "CSV (*.csv)")
        if path:
            out = self.session.export_csv(path)
            show_info(f"SegDiff review: wrote {out}")
