"""What keeps a dock widget's work safe when the widget goes away: the job handle and the close rule."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent


class JobHandle:
    """Holds a widget's running job apart from the widget, so that it is stopped even when Qt
    deletes the widget (connect ``widget.destroyed`` to :meth:`stop`).

    Parameters
    ----------
    stop_job : callable
        Stops a job: ``GeneratorWorker.quit`` for a segmentation run, ``FinetuneProcess.stop``
        for a fine-tuning process.
    """

    def __init__(self, stop_job: Callable[[Any], Any]) -> None:
        self.job: Any = None
        self._stop_job = stop_job

    def stop(self, *_: Any) -> None:
        """Stop the job, if any, and forget it."""
        if self.job is not None:
            self._stop_job(self.job)
            self.job = None


class ClosesWithItsDock:
    """Mixin (before ``QWidget``) that calls ``self.close_dock_widget()`` when the widget closes or
    when napari's ``remove_dock_widget`` (the dock's 'x') un-parents it instead of closing it."""

    _docked = False

    def close_dock_widget(self) -> None:
        raise NotImplementedError

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self.close_dock_widget()
        super().closeEvent(event)  # type: ignore[misc]

    def event(self, ev: QEvent) -> bool:
        if ev.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:  # type: ignore[attr-defined]
                self._docked = True
            elif self._docked:
                self.close_dock_widget()
        return super().event(ev)  # type: ignore[misc]
