"""Fine-tuning in a separate process, so that a GUI stays responsive (no Qt here).

>>> job = FinetuneProcess(request)          # doctest: +SKIP
>>> job.start()
>>> for event in job.poll(): ...            # call from a timer: started / log / val / done / error
>>> job.cancel()                            # stops after the current step, keeps the best model
>>> job.stop()                              # cancel, wait briefly, then terminate (viewer closing)

The worker is a fresh interpreter running :mod:`segdiff_core.training.finetune_worker` (no
inherited Qt or threads, and the parent's main script is not re-run as ``multiprocessing``
spawn would); it runs :func:`~segdiff_core.training.finetune.run_finetune` and prints its
events as JSON lines, which a reader thread here queues. Exactly one ``done`` or ``error``
event ends a run; a worker that dies without one (killed, out of memory) is reported as an
``error`` with its exit code. The worker exits when its stdin closes (the parent is gone), so
no orphan keeps a core busy. One fine-tune runs at a time per data folder: a lock file holds
the worker's process id.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from segdiff_core.checkpoint import LockHeldError, take_pid_lock
from segdiff_core.training.finetune import FinetuneError, FinetuneRequest, data_dir

__all__ = ["FinetuneProcess", "FinetuneBusyError", "LOCK_NAME"]

LOCK_NAME = "finetune.lock"


class FinetuneBusyError(FinetuneError):
    """Another fine-tune is running (in this or another napari window)."""


def _read_events(stream: IO[str], events: "queue.Queue[dict[str, Any] | None]") -> None:
    """Queue every event line of the worker's stdout; None marks the end of the stream."""
    import json

    from segdiff_core.training.finetune_worker import EVENT_PREFIX

    for line in stream:
        if line.startswith(EVENT_PREFIX):
            events.put(json.loads(line[len(EVENT_PREFIX):]))
    events.put(None)


class FinetuneProcess:
    """One fine-tune run in a spawned worker process (see the module docstring).

    Parameters
    ----------
    request
        what to fine-tune (its ``out_root`` or :func:`data_dir` holds the lock).
    threads
        torch threads of the worker; None: all cores but one (one core stays with the
        GUI; on a loaded 2-core machine one thread trained 7x faster than two, see
        docs/fine-tuning.md).
    """

    def __init__(self, request: FinetuneRequest, threads: int | None = None) -> None:
        self.request = request
        self.threads = max(1, (os.cpu_count() or 2) - 1) if threads is None else int(threads)
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._folder: Path | None = None
        self._stderr: IO[str] | None = None
        self._ended = False
        root = Path(request.out_root) if request.out_root else data_dir()
        self.lock_path = root / LOCK_NAME

    # ------------------------------------------------------------------ lock
    def _take_lock(self) -> None:
        try:
            if not self.lock_path.parent.is_dir():
                self.lock_path.parent.mkdir(parents=True)
            take_pid_lock(self.lock_path)
        except LockHeldError as exc:
            raise FinetuneBusyError(
                f"a fine-tune is already running (process {exc.pid}); wait for it to finish or cancel it first"
                if exc.pid else "a fine-tune is starting in another window; wait for it"
            ) from None
        except FileExistsError as exc:
            raise FinetuneError(f"cannot write to the data folder {self.lock_path.parent}: it is a file. Nothing was changed") from exc
        except OSError as exc:
            raise FinetuneError(
                f"cannot write to the data folder {self.lock_path.parent} ({exc.strerror or exc}); free some disk "
                "space or choose a writable folder. Nothing was changed"
            ) from exc

    def _release_lock(self) -> None:
        try:
            self.lock_path.unlink()
        except OSError:
            pass

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the worker; raises FinetuneBusyError if another fine-tune runs."""
        from segdiff_core.training.finetune_worker import write_request

        self._take_lock()
        try:
            self._folder = Path(tempfile.mkdtemp(prefix="segdiff-finetune-"))
            write_request(self.request, self._folder)
            self._stderr = open(self._folder / "stderr.txt", "w+")
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "segdiff_core.training.finetune_worker", str(self._folder), "--threads", str(self.threads)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )
        except BaseException:
            self._cleanup()
            raise
        threading.Thread(target=_read_events, args=(self._proc.stdout, self._events), daemon=True).start()
        self.lock_path.write_text(str(self._proc.pid))

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """True until the run has ended (its last event was read, or the worker died)."""
        return self._proc is not None and not self._ended

    def cancel(self) -> None:
        """Ask the worker to stop after its current step; it still saves the best model so far."""
        if self._proc is not None and self._proc.stdin is not None and not self._ended:
            try:
                self._proc.stdin.write("cancel\n")
                self._proc.stdin.flush()
            except OSError:  # the worker has already gone; poll() reports how
                pass

    def poll(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (never blocks)."""
        out: list[dict[str, Any]] = []
        while not self._ended:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event is None:  # stdout closed without a last event: the worker died
                self._proc.wait(timeout=10.0)
                out.append({"event": "error", "message": self._death_message()})
                self._finish()
                break
            out.append(event)
            if event.get("event") in ("done", "error"):
                self._finish()
        return out

    def _death_message(self) -> str:
        code = self._proc.returncode if self._proc is not None else None
        how = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        tail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read().splitlines() if ln.strip()]
            tail = f" Last output: {lines[-1]}" if lines else ""
        return (
            f"the fine-tune process ended unexpectedly ({how}; out of memory?). No new model was made; the "
            f"current model stays active.{tail}"
        )

    def _finish(self) -> None:
        self._ended = True
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5.0)
        self._cleanup()

    def _cleanup(self) -> None:
        self._release_lock()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._proc is not None and self._proc.stdin is not None:
            try:  # stdout stays open: the reader thread ends at its end of file
                self._proc.stdin.close()
            except OSError:
                pass
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel and wait up to ``timeout`` s, then terminate (and kill) the worker: after this
        no worker process is left."""
        if self._proc is None or self._ended:
            return
        self.cancel()
        for action in (None, self._proc.terminate, self._proc.kill):
            if action is not None:
                action()
            try:
                self._proc.wait(timeout=timeout if action is None else 5.0)
                break
            except subprocess.TimeoutExpired:
                continue
        self._ended = True
        self._cleanup()
