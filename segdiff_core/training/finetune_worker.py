"""The fine-tune worker process: ``python -m segdiff_core.training.finetune_worker FOLDER``.

Started by :class:`~segdiff_core.training.finetune_process.FinetuneProcess`. ``FOLDER`` holds
the request (:func:`write_request`: ``request.json`` plus the annotated images in
``images.npz``, read without pickle). Events go to stdout as JSON lines prefixed with
:data:`EVENT_PREFIX`; the last one is ``done`` or ``error``. A line ``cancel`` on stdin stops the
run after the current step (the best model so far is still saved); the end of stdin means the
parent is gone, and the worker exits at once, so no orphan keeps a core busy.

A module entry point (not ``multiprocessing``) because spawn re-runs the parent's main script in
the child: a napari script without an ``if __name__ == "__main__"`` guard would open a second
viewer.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from segdiff_core.training.finetune import FinetuneError, FinetuneRequest, TrainingImage

EVENT_PREFIX = "SEGDIFF-EVENT "


def write_request(request: FinetuneRequest, folder: Path) -> None:
    """Store ``request`` in ``folder`` for the worker (JSON + an npz of arrays, no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    images = []
    for i, item in enumerate(request.images):
        arrays[f"image{i}"] = np.asarray(item.image)
        arrays[f"labels{i}"] = np.asarray(item.labels)
        images.append({"name": item.name, "keep": None if item.keep is None else [int(k) for k in item.keep]})
    np.savez(folder / "images.npz", **arrays)
    meta = {"base_model": request.base_model, "images": images, "folders": list(request.folders),
            "overrides": {k: dict(v) for k, v in request.overrides.items()}, "base_digest": request.base_digest,
            "out_root": request.out_root, "name": request.name, "started_at": request.started_at}
    (folder / "request.json").write_text(json.dumps(meta))


def read_request(folder: Path) -> FinetuneRequest:
    """The request :func:`write_request` stored in ``folder``."""
    meta = json.loads((folder / "request.json").read_text())
    with np.load(folder / "images.npz", allow_pickle=False) as arrays:
        images = tuple(
            TrainingImage(arrays[f"image{i}"], arrays[f"labels{i}"], d["name"], None if d["keep"] is None else tuple(d["keep"]))
            for i, d in enumerate(meta["images"])
        )
    return FinetuneRequest(meta["base_model"], images, tuple(meta["folders"]), meta["overrides"], meta["base_digest"],
                           meta["out_root"], meta["name"], meta.get("started_at"))


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()


def _watch_stdin(cancel: threading.Event) -> None:
    """'cancel' on stdin sets ``cancel``; the end of stdin (parent gone) ends the process."""
    for line in sys.stdin:
        if line.strip() == "cancel":
            cancel.set()
    os._exit(3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    cancel = threading.Event()
    threading.Thread(target=_watch_stdin, args=(cancel,), daemon=True).start()
    import torch

    from segdiff_core.checkpoint import CheckpointError
    from segdiff_core.config import ConfigError
    from segdiff_core.training.finetune import run_finetune
    from segdiff_core.training.trainer import TrainingError

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        result = run_finetune(read_request(args.folder), _emit, should_stop=cancel.is_set)
    except (FinetuneError, CheckpointError, ConfigError, TrainingError) as exc:
        _emit({"event": "error", "message": str(exc)})
        return 1
    except Exception as exc:  # unexpected: the message and its traceback go to the GUI
        _emit({"event": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        return 1
    _emit({"event": "done", "model_path": str(result.model_path), "metadata": result.metadata,
           "improved": result.improved, "stop_reason": result.stop_reason})
    return 0


if __name__ == "__main__":
    sys.exit(main())
