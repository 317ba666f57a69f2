"""Fast fine-tuning of a model on a user's own annotated objects (the human-in-the-loop step).

The recipe is the ordinary training loop (:class:`~segdiff_core.training.trainer.Trainer`,
``segdiff-train --init-from``) with the settings of ``finetune.toml`` beside this module
(``configs/finetune.toml`` in the repository points at it)::

    segdiff-train --config configs/finetune.toml --init-from base.pt \\
        --data.source instances --data.root exported_folder --out run

:func:`run_finetune` is what the napari panel runs (in a worker process, see
:mod:`segdiff_core.training.finetune_worker`):

1. the objects of the user's label images (and of exported ``images/`` + ``masks/`` folders)
   become one box-prompt sample each (:class:`~segdiff_core.data.readers.InstancePromptDataset`);
   at least :data:`MIN_OBJECTS` are needed;
2. a share of them (``data.val_fraction``, at least one) is held aside for validation;
3. every step draws fresh crops of the training objects with the crop jitter and augmentation the
   base model was trained with (read from its model file), so the network and preprocessing are
   the base model's own;
4. validation IoU is measured before the first step and every ``train.val_every`` steps; the
   run stops early when it stops improving (``train.patience``) or the time budget
   (``train.max_minutes``) is spent, and the best validated fine-tuned weights are kept. They
   are kept even when their validation IoU is below the base model's: with a handful of
   held-aside objects that comparison is noisy (docs/fine-tuning.md shows a run whose 5
   validation objects said "worse" while 30 held-out objects gained 0.07 IoU), so the result
   reports both numbers and the caller decides;
5. the result is an ordinary model file, written atomically into the user's data folder
   (:func:`models_dir`) with metadata (base model, images, objects, steps, validation IoU before
   and after, date); :func:`list_finetuned` lists them, newest first.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from segdiff_core.checkpoint import CheckpointError, atomic_write, check_writable, file_sha256, load_model, safe_load
from segdiff_core.data.readers import InstancePromptDataset
from segdiff_core.data.readers._base import Dataset, DatasetError, Sample
from segdiff_core.data.readers.splits import Subset, split_dataset

__all__ = [
    "MIN_OBJECTS",
    "DATA_DIR_ENV",
    "RECIPE_PATH",
    "FinetuneError",
    "TrainingImage",
    "FinetuneRequest",
    "FinetuneResult",
    "FinetunedModel",
    "data_dir",
    "models_dir",
    "recipe_run",
    "collect_objects",
    "run_finetune",
    "list_finetuned",
    "finetuned_path",
    "finetuned_name",
    "accepted_ids",
]

MIN_OBJECTS = 5
"""Fewest objects a fine-tune accepts: at least one for validation and four to train on."""

DATA_DIR_ENV = "NAPARI_SEGDIFF_DATA_DIR"
"""Environment variable that replaces the user data folder (tests, shared machines)."""

RECIPE_PATH = Path(__file__).with_name("finetune.toml")
"""The fast fine-tune recipe, shared by the napari panel and ``segdiff-train --config``."""

#: settings taken from the base model's training run: the crop protocol and augmentation
INHERITED_DATA = ("augmentation", "crop_margin", "box_shift", "box_scale", "min_area")


class FinetuneError(ValueError):
    """A fine-tune that cannot start or finish; the message says what to do."""


def data_dir() -> Path:
    """``$NAPARI_SEGDIFF_DATA_DIR`` if set, else the platform's user data folder."""
    override = os.environ.get(DATA_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-segdiff", appauthor=False))


def models_dir(root: Path | None = None) -> Path:
    """Folder of the fine-tuned model files (``<data folder>/models``)."""
    return (root or data_dir()) / "models"


# ------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class TrainingImage:
    """One annotated 2D image.

    Attributes
    ----------
    image
        ``(H, W)`` or ``(H, W, C)``, any real dtype.
    labels
        ``(H, W)`` integer instance labels, 0 = background.
    name
        a name for messages and the model's metadata (unique among the images).
    keep
        train only on these label ids (e.g. the objects a reviewer accepted); None = all.
    """

    image: np.ndarray
    labels: np.ndarray
    name: str
    keep: tuple[int, ...] | None = None


def accepted_ids(features: Mapping[str, Sequence[Any]]) -> tuple[int, ...] | None:
    """Label ids that a review accepted, from a Labels layer's features table, or None when the
    table carries no review (then every object counts).

    A ``status`` column (the review panel's ``pending`` / ``accepted`` / ``rejected``) is read
    first, else a boolean ``accepted`` column. The label id of a row is its ``index`` column
    when there is one, else the row number (napari's convention for Labels features).
    """
    if "status" in features:
        flags = np.asarray(features["status"]).astype(str) == "accepted"
    elif "accepted" in features:
        flags = np.asarray(features["accepted"]).astype(bool)
    else:
        return None
    ids = np.asarray(features["index"]) if "index" in features else np.arange(len(flags))
    return tuple(int(i) for i, ok in zip(ids, flags) if ok and int(i) > 0)


class _Concat(Dataset):
    """Samples of several datasets one after the other."""

    def __init__(self, parts: Sequence[Dataset]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _where(self, index: int) -> tuple[Dataset, int]:
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[part], index - int(self.offsets[part])

    def _load(self, index: int) -> Sample:
        ds, i = self._where(index)
        return ds[i]

    def image_key(self, index: int) -> str:
        ds, i = self._where(index)
        return f"{id(ds)}:{ds.image_key(i)}"


def _check_image(item: TrainingImage, in_channels: int) -> np.ndarray:
    """The labels to train on (kept ids only); raises FinetuneError for unusable input."""
    from segdiff_core.data.preprocess import PreprocessConfig, PreprocessError, adapt_channels, to_channels_last

    image, labels = np.asarray(item.image), np.asarray(item.labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise FinetuneError(f"{item.name}: labels must be a 2D integer image, got {labels.dtype} {labels.shape}")
    if image.shape[:2] != labels.shape or image.ndim not in (2, 3):
        raise FinetuneError(
            f"{item.name}: the image {image.shape} and its labels {labels.shape} differ in size; choose the "
            "labels layer drawn on this image"
        )
    try:
        adapt_channels(to_channels_last(image[:16, :16]), PreprocessConfig(in_channels=in_channels))
    except PreprocessError as exc:
        raise FinetuneError(f"{item.name}: {exc}") from exc
    if item.keep is not None:
        labels = np.where(np.isin(labels, np.asarray(item.keep, dtype=labels.dtype)), labels, 0)
    return labels


def collect_objects(
    images: Sequence[TrainingImage],
    folders: Sequence[str | os.PathLike] = (),
    *,
    in_channels: int = 3,
    min_area: int = 16,
    min_objects: int = MIN_OBJECTS,
) -> Dataset:
    """Every object (of at least ``min_area`` pixels) of ``images`` and of exported folders
    (``root/images`` + ``root/masks``, see :func:`segdiff_core.data.readers.write_pair`),
    one box-prompt :class:`~segdiff_core.data.readers.Sample` each.

    Raises
    ------
    FinetuneError
        mismatched shapes or channels, unreadable folders, or fewer than
        ``min_objects`` objects (the message names the minimum).
    """
    parts: list[Dataset] = []
    names = [it.name for it in images]
    labels = [_check_image(it, in_channels) for it in images]
    usable = [(it, lab) for it, lab in zip(images, labels) if lab.any()]
    try:
        if usable:
            parts.append(InstancePromptDataset(
                [it.image for it, _ in usable], [lab for _, lab in usable], names=[it.name for it, _ in usable],
                min_area=min_area, origin="the chosen layers",
            ))
        for folder in folders:
            parts.append(InstancePromptDataset.from_folder(folder, min_area=min_area))
            names.append(str(folder))
    except DatasetError as exc:
        if "no usable samples" not in str(exc):
            raise FinetuneError(str(exc)) from exc
    objects = _Concat(parts)
    if len(objects) < min_objects:
        where = ", ".join(names) or "no images"
        raise FinetuneError(
            f"fine-tuning needs at least {min_objects} annotated objects (of >= {min_area} px); "
            f"found {len(objects)} in {where}. Annotate more objects, or add exported folders"
        )
    return objects


class _InOrder:
    """A sample source that hands out its samples in order, cycling (a fixed validation set)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def draw(self, rng: np.random.Generator, n: int) -> list:
        out = []
        for k in range(n):
            s = self.dataset[k % len(self.dataset)]
            out.append((s.image, s.mask, s.box))
        return out


# ------------------------------------------------------------------------------------ recipe
def recipe_run(base_config: Any, base_metadata: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]] | None = None):
    """The :class:`~segdiff_core.training.config.RunConfig` of a fine-tune of a base model.

    Network, diffusion, preprocessing and inference come from the base model's file; the crop
    protocol and augmentation from its training run (its metadata); the optimisation from the
    recipe file, then ``overrides`` (``{"train": {"steps": 50}}``).
    """
    from segdiff_core.training.config import RunConfig, load_config_file

    recipe = load_config_file(RECIPE_PATH)
    d = RunConfig().to_dict()
    d.update(base_config.to_dict())
    base_data = dict(base_metadata.get("data") or {})
    d["data"].update({k: base_data[k] for k in INHERITED_DATA if k in base_data})
    for section in ("train", "data"):
        d[section].update(recipe.get(section, {}))
        d[section].update((overrides or {}).get(section, {}))
    d["data"].update(source="instances", root="(in memory)", task="prompt")
    d["preset"] = base_metadata.get("preset", "cpu-small")
    return RunConfig.from_dict(d)


@dataclass(frozen=True)
class FinetuneRequest:
    """Everything a fine-tune needs (picklable: it crosses into the worker process).

    Attributes
    ----------
    base_model
        the model file to start from.
    images
        the annotated images.
    folders
        exported training folders to add.
    overrides
        recipe overrides per section, e.g. ``{"train": {"steps": 20}}``.
    base_digest
        SHA-256 of ``base_model`` when the user chose it; a different file on disk
        stops the run (see :func:`segdiff_core.checkpoint.file_sha256`). None: not checked.
    out_root
        data folder (None: :func:`data_dir`).
    name
        file name stem of the new model (None: from the date and the images).
    started_at
        ``time.time()`` when the user asked for the fine-tune: the recipe's time budget
        (``train.max_minutes``) counts from then and covers the whole fine-tune (process
        start, setup, validations, saving). None: from the call.
    """

    base_model: str
    images: tuple[TrainingImage, ...] = ()
    folders: tuple[str, ...] = ()
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    base_digest: str | None = None
    out_root: str | None = None
    name: str | None = None
    started_at: float | None = None


@dataclass(frozen=True)
class FinetuneResult:
    """Outcome of :func:`run_finetune`.

    Attributes
    ----------
    model_path
        the new model file (in the user's models folder).
    metadata
        what was saved with it (see the module docstring).
    improved
        the best validation IoU is above the base model's (noisy for few objects).
    stop_reason
        why training ended early ('cancelled', 'time budget',
        'no better validation IoU') or None (all steps done).
    """

    model_path: Path
    metadata: dict[str, Any]
    improved: bool
    stop_reason: str | None


def _check_writable(folder: Path) -> None:
    try:
        check_writable(folder)
    except OSError as exc:
        raise FinetuneError(
            f"cannot write to the data folder {folder} ({exc.strerror or exc}); free some disk space or set "
            f"{DATA_DIR_ENV} to a writable folder. Nothing was changed"
        ) from exc
    free = shutil.disk_usage(folder).free
    if free < 50 * 2**20:
        raise FinetuneError(f"only {free / 2**20:.0f} MB free in {folder}; fine-tuning needs about 50 MB. Nothing was changed")


def _load_base(request: FinetuneRequest):
    try:
        model, config, meta = load_model(request.base_model)
    except CheckpointError as exc:
        raise FinetuneError(f"the base model cannot be used: {exc}") from exc
    if request.base_digest is not None and file_sha256(request.base_model) != request.base_digest:
        raise FinetuneError(
            f"the model file {request.base_model} changed on disk after it was chosen; choose it again "
            "(or restart the annotator) before fine-tuning"
        )
    return model, config, meta


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "images"


def run_finetune(
    request: FinetuneRequest,
    on_event: Callable[[dict[str, Any]], None] = lambda _e: None,
    should_stop: Callable[[], bool] | None = None,
) -> FinetuneResult:
    """Fine-tune ``request.base_model`` on the request's objects (see the module docstring).

    ``on_event`` receives dicts: ``{"event": "started", "steps", "n_train", "n_val", ...}``,
    ``{"event": "log", "step", "loss"}``, ``{"event": "val", "step", "val_iou"}``. Returns a
    :class:`FinetuneResult`; raises :class:`FinetuneError` with advice for bad input.
    """
    from segdiff_core.training.data import DatasetSource
    from segdiff_core.training.trainer import Trainer

    waited = time.time() - request.started_at if request.started_at is not None else 0.0
    t0 = time.perf_counter() - max(0.0, waited)  # when the user asked (perf_counter clock)
    _, base_config, base_meta = _load_base(request)
    run = recipe_run(base_config, base_meta, request.overrides)
    objects = collect_objects(
        request.images, request.folders, in_channels=base_config.model.in_channels, min_area=run.data.min_area
    )
    train, val = split_dataset(objects, run.data.val_fraction, run.data.val_seed, group_by_image=False)
    n_val = min(len(val), run.train.val_samples)  # the recipe's val_samples caps the validation cost
    val = Subset(val, np.arange(n_val))
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, val_samples=n_val))
    root = Path(request.out_root) if request.out_root else data_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = request.name or f"finetuned-{stamp}-{_slug('+'.join(i.name for i in request.images) or 'folders')}"
    work = root / "runs" / name
    _check_writable(work)
    trainer = Trainer(
        run, work, DatasetSource(train, range(len(train))), _InOrder(val), init_from=request.base_model,
        progress=False, describe_data=f"fine-tune on {len(objects)} objects", log=lambda _m: None,
    )
    t_val = time.perf_counter()
    before = trainer.validate().get("iou", float("nan"))
    # the time budget covers the whole fine-tune: the final validation (as long as this one)
    # and saving (a few seconds) are reserved from it
    reserve = 2.0 * (time.perf_counter() - t_val) + 3.0
    on_event({"event": "started", "steps": run.train.steps, "n_train": len(train), "n_val": len(val),
              "val_iou": before, "trainable": run.train.trainable})

    def forward(record: dict[str, Any]) -> None:
        on_event({"event": "val" if "val_iou" in record else "log", **record})

    trainer.fit(callback=forward, should_stop=should_stop, budget_start=t0 - reserve)
    best = work / "best.pt"  # the best validated fine-tuned weights (last.pt: cancelled before any validation)
    chosen = best if best.exists() else work / "last.pt"
    metadata = {
        "finetune": {
            "base_model": str(request.base_model),
            "base_trained_on": base_meta.get("trained_on", ""),
            "images": [i.name for i in request.images] + [str(f) for f in request.folders],
            "n_objects": len(objects), "n_train": len(train), "n_val": len(val),
            "steps": trainer.step, "best_step": trainer.best_step,
            "val_iou_before": before, "val_iou_after": trainer.best_iou,
            "stop_reason": trainer.stop_reason, "trainable": run.train.trainable,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    out = _publish(chosen, models_dir(root) / f"{name}.pt", metadata)
    after = trainer.best_iou
    improved = after is not None and after > before
    return FinetuneResult(out, metadata["finetune"], improved, trainer.stop_reason)


def _publish(source: Path, target: Path, extra: Mapping[str, Any]) -> Path:
    """Copy a model file into the models folder atomically, with ``extra`` metadata added."""
    import torch

    payload = safe_load(source, "model file")
    payload["metadata"] = {**payload.get("metadata", {}), **extra}
    try:
        atomic_write(target, lambda fh: torch.save(payload, fh))
    except OSError as exc:
        raise FinetuneError(
            f"the fine-tuned model could not be saved to {target} ({exc.strerror or exc}); free some disk space "
            f"or set {DATA_DIR_ENV}. The training run is kept in {source.parent}"
        ) from exc
    return target


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class FinetunedModel:
    """A fine-tuned model file in the user's models folder and its fine-tune metadata."""

    path: Path
    info: dict[str, Any]

    def describe(self) -> str:
        i = self.info
        before, after = i.get("val_iou_before"), i.get("val_iou_after")
        ious = f", val IoU {before:.3f} -> {after:.3f}" if isinstance(before, float) and isinstance(after, float) else ""
        return f"{self.path.stem} ({i.get('n_objects', '?')} objects, {i.get('steps', '?')} steps{ious})"


def list_finetuned(root: Path | None = None) -> list[FinetunedModel]:
    """Fine-tuned models in the models folder, newest first; unreadable files are skipped."""
    folder = models_dir(root)
    found = []
    for path in folder.glob("*.pt") if folder.is_dir() else ():
        try:
            payload = safe_load(path, "model file", mmap=True)  # metadata only: weights stay on disk
        except CheckpointError:
            continue
        info = (payload.get("metadata") or {}).get("finetune") if isinstance(payload, dict) else None
        if isinstance(info, dict):
            found.append(FinetunedModel(path, info))
    return sorted(found, key=lambda m: (str(m.info.get("date", "")), m.path.stat().st_mtime), reverse=True)


def finetuned_path(name: str, root: Path | None = None) -> Path:
    """The file of the fine-tuned model ``name`` (a file stem in :func:`models_dir`).

    Raises:
        FinetuneError: an empty name, a name that is not a plain file stem, or a model that is
            no longer in the folder.
    """
    folder = models_dir(root)
    if not name or Path(name).name != name or name in (".", ".."):
        raise FinetuneError(f"no fine-tuned model chosen: pick one of your fine-tuned models (in {folder})")
    path = folder / f"{name}.pt"
    if not path.is_file():
        raise FinetuneError(f"the fine-tuned model {name!r} is no longer in {folder}; choose another model")
    return path


def finetuned_name(path: str | os.PathLike, root: Path | None = None) -> str | None:
    """The registry name of ``path`` when it is a model file in :func:`models_dir`, else None."""
    path = Path(path)
    try:
        inside = path.suffix == ".pt" and path.parent.resolve() == models_dir(root).resolve()
    except OSError:
        return None
    return path.stem if inside else None


def write_summary(result: FinetuneResult, path: Path) -> None:
    """The result's metadata as JSON beside a run (for scripts)."""
    text = json.dumps({"model": str(result.model_path), **result.metadata}, indent=2)
    atomic_write(path, text)
