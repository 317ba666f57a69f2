"""The handle that keeps a widget's running job reachable after Qt deletes the widget."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


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
