"""Model files: weights + config + preprocessing + metadata, loaded without executing code.

A model checkpoint is a ``torch.save`` archive of plain containers and tensors::

    {"format": "segdiff-model", "version": 1,
     "config": SegDiffConfig.to_dict(),         # network, diffusion, preprocessing, inference
     "metadata": {...},                          # trained on, steps, metrics (JSON-safe)
     "state_dict": {name: tensor}}

It is read with ``torch.load(weights_only=True)``, which refuses anything but tensors and
primitive containers, so a model file can never run code. The U-Net baseline's files follow the
same layout with their own format name and config class (:class:`ModelKind`); one pair,
:func:`save_model` / :func:`load_model` (or :func:`read_model_file` to read a file once),
handles both. Writes are atomic (temp file in the
same folder, fsync, rename): a crash leaves either the old file or the new one.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Mapping

import torch

from segdiff_core.config import SegDiffConfig
from segdiff_core.model import SegDiffModel

MODEL_FORMAT = "segdiff-model"
MODEL_VERSION = 1


class CheckpointError(ValueError):
    """A model file that cannot be used: unreadable, corrupt, truncated or mismatched."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on Windows without ``os.kill``, whose signal 0 is Ctrl-C)."""
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockHeldError(RuntimeError):
    """A lock file of :func:`take_pid_lock` belongs to a live process (``pid``; 0: another
    process took it in the same instant)."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"{path} is held by process {pid}" if pid else f"{path} is being taken by another process")
        self.path, self.pid = path, pid


def take_pid_lock(path: str | os.PathLike) -> Path:
    """Create the lock file ``path`` holding this process's id (``O_EXCL``: one owner).

    The lock of a process that is gone (killed, crashed) is removed and taken; a live
    owner's raises :class:`LockHeldError`. Delete the file with :meth:`Path.unlink` when done.
    """
    path = Path(path)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not path.is_file():
                raise
            try:
                pid = int(path.read_text().strip() or 0)
            except (ValueError, OSError):
                pid = 0
            if pid and pid_alive(pid):
                raise LockHeldError(path, pid) from None
            path.unlink(missing_ok=True)  # its owner is gone (or it holds no process id)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return path
    raise LockHeldError(path, 0)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes: identifies a model file (score calibrations name their model by it;
    fine-tuning notices a base model that changed on disk)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None] | bytes | str) -> Path:
    """Write a file atomically: ``write(fh)`` (or the given bytes, or text as UTF-8) fills a temp
    file beside ``path``, which is fsynced and renamed over ``path`` (readers see the old file or
    the new one, never half; a failed write leaves the old file as it was)."""
    if not callable(write):
        data = write.encode("utf-8") if isinstance(write, str) else bytes(write)
        write = lambda fh: fh.write(data)  # noqa: E731
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


def check_writable(folder: str | os.PathLike, error: type[Exception] = OSError) -> Path:
    """Create ``folder`` if needed and check that a file can be created there: the early check of
    every command that writes, so a bad output folder is said before any work (``error``, naming
    the folder, if not)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".segdiff-write-test."):
            pass
    except OSError as exc:
        raise error(f"output folder {folder} is not writable ({exc.strerror or exc})") from exc
    return folder


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save ``obj`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def safe_load(path: str | os.PathLike, what: str = "checkpoint", mmap: bool = False) -> Any:
    """torch.load with ``weights_only=True`` onto the CPU; every failure -> CheckpointError.

    ``mmap``: map the tensors from the file instead of reading them (for callers that only look
    at a file's config and metadata).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder, not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes); the file was not written completely")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as exc:
        raise CheckpointError(
            f"{what} {path} is corrupt or truncated and cannot be read ({type(exc).__name__}: {exc}); "
            "use another copy of the file"
        ) from exc
    except Exception as exc:  # pickle.UnpicklingError for code-carrying or foreign pickles, etc.
        raise CheckpointError(_refusal(path, what, exc)) from exc


def _refusal(path: Path, what: str, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, without torch's advice to load it
    unsafely: a pickle that names code (a ``GLOBAL``) is refused, anything else is no model file."""
    advice = ("weights_only", "Weights only load failed", "Check the documentation")
    text = str(exc).replace("WeightsUnpickler error:", "\n")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not any(a in ln for a in advice)]
    detail = "; ".join(lines)[:200]
    code = re.search(r"GLOBAL\s+([\w.]+)", detail)
    if code or "global" in detail.lower():
        name = code.group(1) if code else "a Python global"
        return (
            f"{what} {path} refers to code ({name}); it was refused: files that would run code "
            "are never loaded. Use a model file written by segdiff-train"
        )
    reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return f"{what} {path} is not a segdiff model file and cannot be read ({reason}); use a model file written by segdiff-train"


@dataclass(frozen=True)
class ModelKind:
    """One kind of model file, in the spirit of diffusers' ``ModelMixin`` + ``ConfigMixin``.

    Attributes
    ----------
    format : str
        Written into the file as ``"format"``.
    name : str
        What to call such a file in messages (``"segdiff model"``).
    config_class : type
        The config saved beside the weights; has ``to_dict`` and ``from_dict``.
    build : callable
        ``config -> torch.nn.Module`` (freshly initialised network).
    version : int
        Written into the file as ``"version"``.
    upgrade : callable, optional
        Rewrites the payload of an older layout of this kind in place.
    """

    format: str
    name: str
    config_class: type
    build: Callable[[Any], torch.nn.Module]
    version: int = 1
    upgrade: Callable[[dict[str, Any]], None] | None = None


SEGDIFF_KIND = ModelKind(MODEL_FORMAT, "segdiff model", SegDiffConfig, lambda c: SegDiffModel(c.model),
                         MODEL_VERSION)


def model_kinds() -> dict[str, ModelKind]:
    """Every kind of model file this package reads, by format name."""
    from segdiff_core.baselines.unet import UNET_KIND  # the baseline module imports this one

    return {k.format: k for k in (SEGDIFF_KIND, UNET_KIND)}


def kind_of(config: Any) -> ModelKind:
    """The :class:`ModelKind` whose config class ``config`` is."""
    for kind in model_kinds().values():
        if isinstance(config, kind.config_class):
            return kind
    raise TypeError(f"no model file kind for a config of type {type(config).__name__}")


def model_payload(model: torch.nn.Module, config: Any, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dictionary stored in a model file (weights copied to the CPU)."""
    kind = kind_of(config)
    return {
        "format": kind.format,
        "version": kind.version,
        "config": config.to_dict(),
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def save_model(path: str | os.PathLike, model: torch.nn.Module, config: Any, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a model file atomically (any :class:`ModelKind`, chosen by the config's class).

    Parameters
    ----------
    path : path-like
        Destination; written atomically.
    model : torch.nn.Module
        The network (its weights are copied to the CPU).
    config : SegDiffConfig or another registered config class
        Saved beside the weights; rebuilds the network on loading.
    metadata : mapping, optional
        JSON-safe values (trained on, steps, metrics ...).

    Returns
    -------
    Path
    """
    return atomic_save(model_payload(model, config, metadata), path)


def _check_state_dict(path: Path, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
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


@dataclass(frozen=True)
class ModelFile:
    """A model file read once (:func:`read_model_file`): config, metadata and weights.

    Attributes
    ----------
    path : Path
    kind : ModelKind
    config : object
        An instance of ``kind.config_class``.
    metadata : dict
    state_dict : dict of str to torch.Tensor
        On the CPU.
    """

    path: Path
    kind: ModelKind
    config: Any
    metadata: dict[str, Any]
    state_dict: dict[str, Any]

    def build(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The network with the file's weights, checked against its config, in eval mode."""
        model = self.kind.build(self.config)
        _check_state_dict(self.path, model, self.state_dict)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


def read_model_file(path: str | os.PathLike, kind: str | None = MODEL_FORMAT) -> ModelFile:
    """Read and check a model file once (never runs code).

    Parameters
    ----------
    path : path-like
    kind : str, optional
        Required format (default: a SegDiff model); ``None`` accepts every known kind.

    Returns
    -------
    ModelFile

    Raises
    ------
    CheckpointError
        With the file name and the problem, for any unusable file.
    """
    path = Path(path)
    payload = safe_load(path, "model file")
    kinds = model_kinds()
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found not in kinds or (kind is not None and found != kind):
        what = kinds[kind].name if kind in kinds else "segdiff model"
        hint = " (a training-state file? export the model with segdiff-train's best/last model files)" if found == "segdiff-train-state" else ""
        raise CheckpointError(f"{path} is not a {what} file (format: {found!r}){hint}")
    spec = kinds[found]
    if spec.upgrade is not None:
        spec.upgrade(payload)
    if payload.get("version") != spec.version:
        raise CheckpointError(
            f"model file {path} has format version {payload.get('version')!r}; this napari-segdiff reads version {spec.version}"
        )
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"model file {path} has no valid {key!r} section")
    try:
        config = spec.config_class.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:  # ConfigError and the other config errors are ValueErrors
        raise CheckpointError(f"model file {path} has an invalid config: {exc}") from exc
    return ModelFile(path, spec, config, dict(payload.get("metadata") or {}), payload["state_dict"])


def load_model(
    path: str | os.PathLike, device: torch.device | str = "cpu", kind: str | None = MODEL_FORMAT
) -> tuple[Any, Any, dict[str, Any]]:
    """Read, check and build a model from ``path`` (see :func:`read_model_file`).

    Returns
    -------
    model : torch.nn.Module
        In eval mode on ``device`` (a :class:`SegDiffModel` unless ``kind`` says otherwise).
    config : SegDiffConfig or the kind's config class
    metadata : dict
    """
    file = read_model_file(path, kind)
    return file.build(device), file.config, file.metadata
