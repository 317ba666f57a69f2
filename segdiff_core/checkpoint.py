"""Model files: weights + config + preprocessing + metadata, loaded without executing code.

A model checkpoint is a ``torch.save`` archive of plain containers and tensors::

    {"format": "segdiff-model", "version": 1,
     "config": SegDiffConfig.to_dict(),         # network, diffusion, preprocessing, inference
     "metadata": {...},                          # trained on, steps, metrics (JSON-safe)
     "state_dict": {name: tensor}}

It is read with ``torch.load(weights_only=True)``, which refuses anything but tensors and
primitive containers, so a model file can never run code. Writes are atomic (temp file in the
same folder, fsync, rename): a crash leaves either the old file or the new one.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import torch

from segdiff_core.config import ConfigError, SegDiffConfig
from segdiff_core.model import SegDiffModel

MODEL_FORMAT = "segdiff-model"
MODEL_VERSION = 1


class CheckpointError(ValueError):
    """A model file that cannot be used: unreadable, corrupt, truncated or mismatched."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file atomically: ``write(fh)`` fills a temp file beside ``path``, which is
    fsynced and renamed over ``path`` (readers see the old file or the new one, never half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save ``obj`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def safe_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """torch.load with ``weights_only=True`` onto the CPU; every failure -> CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder, not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes); the file was not written completely")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as exc:
        raise CheckpointError(
            f"{what} {path} is corrupt or truncated and cannot be read ({type(exc).__name__}: {exc}); "
            "use another copy of the file"
        ) from exc
    except Exception as exc:  # pickle.UnpicklingError for code-carrying or foreign pickles, etc.
        raise CheckpointError(
            f"{what} {path} is not a safe segdiff file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Only files of plain tensors and values are loaded; files that would run code are refused"
        ) from exc


def model_payload(model: SegDiffModel, config: SegDiffConfig, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dictionary stored in a model file (weights copied to the CPU)."""
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config": config.to_dict(),
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def save_model(path: str | os.PathLike, model: SegDiffModel, config: SegDiffConfig, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a model checkpoint atomically; returns the path."""
    return atomic_save(model_payload(model, config, metadata), path)


def _check_state_dict(path: Path, model: SegDiffModel, state: Mapping[str, Any]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(v.shape)
    ]
    not_tensors = [k for k in state if not isinstance(state[k], torch.Tensor)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights (e.g. {unexpected[:3]})")
    if wrong:
        problems.append(f"{len(wrong)} weights with the wrong shape (e.g. {wrong[:3]})")
    if not_tensors:
        problems.append(f"non-tensor entries {not_tensors[:3]}")
    if problems:
        raise CheckpointError(f"model file {path}: the weights do not match its config: " + "; ".join(problems))
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"model file {path} has non-finite (NaN/inf) weights in {bad[:3]}; it is unusable")


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[SegDiffModel, SegDiffConfig, dict[str, Any]]:
    """Read, validate and build a model from ``path``. Returns (model in eval mode, config, metadata).

    Raises:
        CheckpointError: with the file name and the problem, for any unusable file.
    """
    path = Path(path)
    payload = safe_load(path, "model file")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        hint = " (a training-state file? export the model with segdiff-train's best/last model files)" if found == "segdiff-train-state" else ""
        raise CheckpointError(f"{path} is not a segdiff model file (format: {found!r}){hint}")
    if payload.get("version") != MODEL_VERSION:
        raise CheckpointError(
            f"model file {path} has format version {payload.get('version')!r}; this napari-segdiff reads version {MODEL_VERSION}"
        )
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"model file {path} has no valid {key!r} section")
    try:
        config = SegDiffConfig.from_dict(payload["config"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"model file {path} has an invalid config: {exc}") from exc
    model = SegDiffModel(config.model)
    _check_state_dict(path, model, payload["state_dict"])
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    metadata = payload.get("metadata") or {}
    return model, config, dict(metadata)
