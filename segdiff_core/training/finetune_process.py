"""Fine-tuning in a separate process, so that a GUI stays responsive (no Qt here).

>>> job = FinetuneProcess(request)          # doctest: +SKIP
>>> job.start()
>>> for event in job.poll(): ...            # call from a timer: started / log / val / done / error
>>> job.cancel()                            # stops after the current step, keeps the best model
>>> job.stop()                              # cancel, wait briefly, then terminate (viewer closing)

The worker is a ``multiprocessing`` *spawn* process (a fresh interpreter: no inherited Qt or
threads) that runs :func:`~segdiff_core.training.finetune.run_finetune` and sends its events as
dicts through a queue. Exactly one ``done`` or ``error`` event ends a run; a worker that dies
without one (killed, out of memory) is reported as an ``error`` with its exit code. The worker
also exits when its parent process disappears, so no orphan keeps a core busy. One fine-tune
runs at a time per data folder: a lock file holds the worker's process id.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import traceback
from pathlib import Path
from typing import Any

from segdiff_core.training.finetune import FinetuneError, FinetuneRequest, data_dir

__all__ = ["FinetuneProcess", "FinetuneBusyError", "LOCK_NAME"]

LOCK_NAME = "finetune.lock"


class FinetuneBusyError(FinetuneError):
    """Another fine-tune is running (in this or another napari window)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(parent: int) -> None:
    """Exit the worker when the process that started it is gone (killed GUI)."""
    import time

    while True:
        if os.getppid() != parent or not _pid_alive(parent):
            os._exit(3)
        time.sleep(1.0)


def _worker_main(request: FinetuneRequest, events: Any, cancel: Any, parent: int, threads: int) -> None:
    """Entry point of the worker process: run the fine-tune, report every event and the end."""
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    import torch

    from segdiff_core.checkpoint import CheckpointError
    from segdiff_core.config import ConfigError
    from segdiff_core.training.finetune import run_finetune
    from segdiff_core.training.trainer import TrainingError

    if threads > 0:
        torch.set_num_threads(threads)
    try:
        result = run_finetune(request, events.put, should_stop=cancel.is_set)
    except (FinetuneError, CheckpointError, ConfigError, TrainingError) as exc:
        events.put({"event": "error", "message": str(exc)})
    except Exception as exc:  # unexpected: the GUI shows the message, the traceback goes with it
        events.put({"event": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    else:
        events.put({"event": "done", "model_path": str(result.model_path), "metadata": result.metadata,
                    "improved": result.improved, "stop_reason": result.stop_reason})


class FinetuneProcess:
    """One fine-tune run in a spawned worker process (see the module docstring).

    Args:
        request: what to fine-tune (its ``out_root`` or :func:`data_dir` holds the lock).
        threads: torch threads of the worker; None: all cores but one (one core stays with the
            GUI; on a loaded 2-core machine one thread trained 7x faster than two, see
            docs/fine-tuning.md).
    """

    def __init__(self, request: FinetuneRequest, threads: int | None = None) -> None:
        self.request = request
        self.threads = max(1, (os.cpu_count() or 2) - 1) if threads is None else int(threads)
        ctx = mp.get_context("spawn")
        self._events = ctx.Queue()
        self._cancel = ctx.Event()
        self._proc: Any = ctx.Process(
            target=_worker_main, args=(request, self._events, self._cancel, os.getpid(), self.threads),
            daemon=True, name="segdiff-finetune",
        )
        self._ended = False
        root = Path(request.out_root) if request.out_root else data_dir()
        self.lock_path = root / LOCK_NAME

    # ------------------------------------------------------------------ lock
    def _take_lock(self) -> None:
        try:
            if not self.lock_path.parent.is_dir():
                self.lock_path.parent.mkdir(parents=True)
            self._clear_stale_lock()
            fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError as exc:
            if self.lock_path.parent.is_dir():
                raise FinetuneBusyError("a fine-tune is starting in another window; wait for it") from None
            raise FinetuneError(f"cannot write to the data folder {self.lock_path.parent}: it is a file. Nothing was changed") from exc
        except OSError as exc:
            raise FinetuneError(
                f"cannot write to the data folder {self.lock_path.parent} ({exc.strerror or exc}); free some disk "
                "space or choose a writable folder. Nothing was changed"
            ) from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))

    def _clear_stale_lock(self) -> None:
        """Remove the lock of a run whose process is gone; refuse while it lives."""
        if not self.lock_path.is_file():
            return
        try:
            pid = int(self.lock_path.read_text().strip() or 0)
        except ValueError:
            pid = 0
        if pid and _pid_alive(pid):
            raise FinetuneBusyError(
                f"a fine-tune is already running (process {pid}); wait for it to finish or cancel it first"
            )
        self.lock_path.unlink()

    def _release_lock(self) -> None:
        try:
            self.lock_path.unlink()
        except OSError:
            pass

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the worker; raises FinetuneBusyError if another fine-tune runs."""
        self._take_lock()
        try:
            self._proc.start()
        except BaseException:
            self._release_lock()
            raise
        self.lock_path.write_text(str(self._proc.pid))

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True until the run has ended (its last event was read, or the worker died)."""
        return self._proc.pid is not None and not self._ended

    def cancel(self) -> None:
        """Ask the worker to stop after its current step; it still saves the best model so far."""
        self._cancel.set()

    def poll(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (never blocks)."""
        out: list[dict[str, Any]] = []
        while not self._ended:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            out.append(event)
            if event.get("event") in ("done", "error"):
                self._finish()
        if not self._ended and self._proc.pid is not None and not self._proc.is_alive():
            try:  # the last events may still be in the pipe
                event = self._events.get(timeout=0.5)
                out.append(event)
                if event.get("event") in ("done", "error"):
                    self._finish()
                    return out
            except queue.Empty:
                pass
            self._finish()
            out.append({"event": "error", "message": self._death_message()})
        return out

    def _death_message(self) -> str:
        code = self._proc.exitcode
        how = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return (
            f"the fine-tune process ended unexpectedly ({how}; out of memory?). No new model was made; the "
            "current model stays active"
        )

    def _finish(self) -> None:
        self._ended = True
        self._proc.join(timeout=5.0)
        self._release_lock()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel and wait up to ``timeout`` s, then terminate (and kill) the worker: after this
        no worker process is left."""
        if self._proc.pid is None:
            return
        self._cancel.set()
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5.0)
        self._ended = True
        self._release_lock()
        self._events.close()
        self._events.cancel_join_thread()
