"""One image through ``segdiff-predict``: plan tiles, run them (here or on dask), write outputs.

Outputs of an image ``<stem>`` in the output folder:

* ``<stem>_labels``, ``<stem>_probability``, ``<stem>_uncertainty``: ``.tif`` (zlib TIFF), or
  ``.ome.zarr`` (OME-Zarr 0.4, chunked, written tile by tile) for images larger than
  ``zarr_above`` pixels or with ``output_format="zarr"``;
* ``<stem>_objects.csv``: one row per object (label, prompt box, area, centroid, scores);
* ``<stem>_settings.json``: every setting, the seeds, the model and the software version. It
  is written last and marks the image as finished: a restarted run skips images that have it
  (and all the other outputs) and redoes the rest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from segdiff_core.checkpoint import file_sha256
from segdiff_core.data.boxes import Box
from segdiff_core.predict.io import InputError, ImageSource, ZarrOutput, open_image, write_csv, write_json, write_tiff
from segdiff_core.predict.prompts import boxes_from_csv, boxes_from_label_source, check_boxes
from segdiff_core.predict.tiles import TileResult, TileTask, plan_tiles, run_tile
from segdiff_core.proposals import ProposalSettings

log = logging.getLogger("segdiff.predict")

__all__ = ["PredictConfig", "ImageJob", "output_paths", "own_outputs", "image_lock", "is_done", "run_identity", "resume_state", "plan_image", "predict_image", "OBJECT_COLUMNS"]

OBJECT_COLUMNS = (
    "label", "y0", "x0", "y1", "x1", "area", "centroid_y", "centroid_x",
    "mean_probability", "uncertainty", "score", "score_kind", "flag",
)
MAPS = ("labels", "probability", "uncertainty")
NO_OBJECT = "no object"
"""``flag`` of the objects-CSV row of a prompt that gave no object (empty ``label``, area 0)."""
MAP_DTYPES = {"labels": np.int32, "probability": np.float32, "uncertainty": np.float32}


@dataclass(frozen=True)
class PredictConfig:
    """Settings of a ``segdiff-predict`` run (recorded beside every output).

    Attributes
    ----------
    model
        model file path.
    device
        ``auto``/``cpu``/``cuda``/``mps``.
    tile
        core tile side (px); each tile is one task.
    halo
        context read around a tile (px); must exceed an object's size plus margin.
    output_format
        ``auto`` (TIFF up to ``zarr_above`` pixels, else OME-Zarr), ``tiff`` or ``zarr``.
    zarr_above
        pixel count above which ``auto`` writes OME-Zarr.
    proposals
        automatic-mode and batching settings (its ``seed`` is the run's seed).
    inference
        overrides of the model's inference settings (generations, steps, ...).
    """

    model: str
    device: str = "auto"
    tile: int = 2048
    halo: int = 96
    output_format: str = "auto"
    zarr_above: int = 8192 * 8192
    proposals: ProposalSettings = field(default_factory=ProposalSettings)
    inference: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["proposals"] = self.proposals.to_dict()
        return d


@dataclass(frozen=True)
class ImageJob:
    """One input image and where its prompts come from (``None``: automatic)."""

    image: Path
    prompt_csv: Path | None = None
    prompt_labels: Path | None = None

    @property
    def prompt_mode(self) -> str:
        return "csv" if self.prompt_csv else "labels" if self.prompt_labels else "auto"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".png", ".jpeg", ".jpg", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _use_zarr(config: PredictConfig, shape: tuple[int, int]) -> bool:
    if config.output_format == "zarr":
        return True
    return config.output_format == "auto" and shape[0] * shape[1] > config.zarr_above


def output_paths(job: ImageJob, out_dir: Path, zarr: bool) -> dict[str, Path]:
    """Final output paths of one image, by name (maps, ``objects``, ``settings``)."""
    stem = _stem(job.image)
    ext = ".ome.zarr" if zarr else ".tif"
    paths = {m: out_dir / f"{stem}_{m}{ext}" for m in MAPS}
    paths["objects"] = out_dir / f"{stem}_objects.csv"
    paths["settings"] = out_dir / f"{stem}_settings.json"
    return paths


def own_outputs(images: Sequence[Path], out_dir: Path) -> list[Path]:
    """The ``images`` that are maps a run wrote into ``out_dir`` (``<stem>_labels.tif`` etc.
    whose ``<stem>`` is another input or has a settings file there): a folder that is both
    input and output must not have its outputs predicted as new images on a rerun."""
    stems = {_stem(p) for p in images}
    out = out_dir.resolve()
    found = []
    for path in images:
        if path.parent.resolve() != out:
            continue
        for m, ext in ((m, ext) for m in MAPS for ext in (".tif", ".ome.zarr")):
            prefix = path.name[: -len(f"_{m}{ext}")] if path.name.endswith(f"_{m}{ext}") else None
            if prefix and (prefix in stems or (out / f"{prefix}_settings.json").exists()):
                found.append(path)
                break
    return found


class ImageBusy(InputError):
    """Another live process is predicting this image into the same output folder."""


@contextlib.contextmanager
def image_lock(job: ImageJob, out_dir: Path) -> Iterator[None]:
    """Hold ``.<stem>.segdiff-predict.lock`` in ``out_dir`` (the process id) while predicting
    an image: two runs into one folder share its images instead of deleting each other's
    temporary files. A killed run's lock is taken over; a live one raises :class:`ImageBusy`."""
    from segdiff_core.checkpoint import LockHeldError, take_pid_lock

    path = out_dir / f".{_stem(job.image)}.segdiff-predict.lock"
    try:
        take_pid_lock(path)
    except LockHeldError as exc:
        raise ImageBusy(f"process {exc.pid or '(starting)'} is predicting it into {out_dir} ({path.name})") from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def is_done(paths: dict[str, Path]) -> bool:
    """True if every output of an image exists (the settings file is written last)."""
    return all(p.exists() for p in paths.values())


def _file_id(path: Path | None) -> dict[str, Any] | None:
    """Where a file is and which version of it (size and modification time; a folder: where)."""
    if path is None:
        return None
    path = Path(path)
    stat = path.stat()
    if path.is_dir():
        return {"path": str(path.resolve())}
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@functools.lru_cache(maxsize=4)
def _model_digest(model: str, mtime_ns: int) -> str:
    return file_sha256(model)


def run_identity(job: ImageJob, config: PredictConfig) -> dict[str, Any]:
    """Everything an image's outputs depend on: the image and prompt files (which version),
    the model file's content and every setting but the device. A rerun skips an image only
    if its settings file records the same identity (JSON-normalised)."""
    settings = config.to_dict()
    del settings["device"], settings["model"]  # the model counts by content, not by path
    identity = {
        "image": _file_id(job.image),
        "prompts": job.prompt_mode,
        "prompt_file": _file_id(job.prompt_csv or job.prompt_labels),
        "model_sha256": _model_digest(str(config.model), Path(config.model).stat().st_mtime_ns),
        "config": settings,
    }
    return json.loads(json.dumps(identity))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def resume_state(job: ImageJob, out_dir: Path, identity: dict[str, Any]) -> tuple[bool, list[str]]:
    """``(done, differences)`` of an image's existing outputs in ``out_dir``.

    ``done`` is True if all its outputs exist; ``differences`` then names what the run that
    wrote them did differently (empty: the same run, safe to skip).
    """
    for zarr in (True, False):
        paths = output_paths(job, out_dir, zarr)
        if not is_done(paths):
            continue
        try:
            recorded = json.loads(paths["settings"].read_text()).get("identity")
        except (OSError, ValueError, AttributeError):
            return True, [f"{paths['settings'].name} (unreadable)"]
        if recorded is None:
            return True, ["everything (written by an older segdiff-predict that did not record its inputs)"]
        return True, _differences(recorded, identity)
    return False, []


def _boxes(job: ImageJob, source: ImageSource, tile: int) -> list[Box] | None:
    if job.prompt_csv is not None:
        return check_boxes(boxes_from_csv(job.prompt_csv), source.shape, job.prompt_csv)
    if job.prompt_labels is not None:
        return boxes_from_label_source(open_image(job.prompt_labels), source.shape, tile)
    return None


def plan_image(job: ImageJob, config: PredictConfig) -> tuple[ImageSource, list[TileTask]]:
    """Open the image and its prompts (clear errors for bad input) and cut it into tasks."""
    source = open_image(job.image)
    if source.channels not in (1, 3, 4):
        raise InputError(f"{job.image}: {source.channels} channels; expected 1 (gray) or 3/4 (RGB[A])")
    boxes = _boxes(job, source, config.tile)
    plan = plan_tiles(source.shape, config.tile, config.halo, boxes)
    tasks = [
        TileTask(
            index=i, image_path=str(job.image), core=core, read=read, image_shape=source.shape,
            model_path=config.model, device=config.device, settings=config.proposals,
            inference=dict(config.inference),
            boxes=None if b is None else tuple(x.as_tuple() for x in b),
        )
        for i, (core, read, b) in enumerate(plan)
    ]
    return source, tasks


# --------------------------------------------------------------------------------------------
# assembling tile results into outputs
# --------------------------------------------------------------------------------------------


class _Canvas:
    """The three output maps (numpy in memory, or zarr arrays on disk) and the object rows."""

    def __init__(self, shape: tuple[int, int], zarr_paths: dict[str, Path] | None, chunk: int) -> None:
        self.outputs: dict[str, ZarrOutput] = {}
        if zarr_paths is None:
            self.maps = {m: np.zeros(shape, dtype=MAP_DTYPES[m]) for m in MAPS}
        else:
            self.outputs = {m: ZarrOutput(zarr_paths[m], shape, MAP_DTYPES[m], chunk) for m in MAPS}
            self.maps = {m: o.array for m, o in self.outputs.items()}
        self.rows: list[dict[str, Any]] = []
        self.cut = 0
        self.missing = 0  # prompts that gave no object

    def add(self, result: TileResult) -> None:
        """Paste a tile's objects (one read-modify-write of the region they cover)."""
        self.cut += result.cut
        if not result.pieces:
            return
        b = np.array([p.bbox for p in result.pieces])
        r0, c0, r1, c1 = int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())
        region = (slice(r0, r1), slice(c0, c1))
        lab, prob, unc = (np.array(self.maps[m][region]) for m in MAPS)
        for piece in result.pieces:
            sl = (slice(piece.bbox[0] - r0, piece.bbox[2] - r0), slice(piece.bbox[1] - c0, piece.bbox[3] - c0))
            take = piece.mask & ((lab[sl] == 0) | (piece.probability > prob[sl]))
            label = len(self.rows) + 1
            lab[sl][take] = label
            prob[sl][take] = piece.probability[take]
            unc[sl][take] = piece.uncertainty[take]
            self.rows.append({**piece.record.as_row(), "label": label})
        for m, arr in zip(MAPS, (lab, prob, unc)):
            self.maps[m][region] = arr

    def abort(self) -> None:
        for o in self.outputs.values():
            o.abort()


def _settings_record(
    job: ImageJob, config: PredictConfig, identity: dict[str, Any], source: ImageSource, n_tasks: int, canvas: _Canvas, seconds: float,
) -> dict[str, Any]:
    from segdiff_core.predict.tiles import SEED_STRIDE, load_segmenter

    import segdiff_core

    seg = load_segmenter(config.model, config.device)
    return {
        "image": str(job.image),
        "identity": identity,
        "image_shape": list(source.shape),
        "prompts": job.prompt_mode,
        "prompt_file": str(job.prompt_csv or job.prompt_labels or ""),
        "config": config.to_dict(),
        "inference": seg.inference.replace(**config.inference).to_dict(),
        "seed": config.proposals.seed,
        "tile_seed": f"seed + {SEED_STRIDE} * tile_index",
        "n_tiles": n_tasks,
        "n_objects": len(canvas.rows),
        "objects_cut_by_halo": canvas.cut,
        "prompts_without_object": canvas.missing,
        "model_metadata": {k: seg.metadata.get(k) for k in ("trained_on", "steps", "preset", "created")},
        "segdiff_version": getattr(segdiff_core, "__version__", "unknown"),
        "seconds": round(seconds, 2),
    }


Runner = Callable[[Sequence[TileTask]], Iterable[TileResult]]


def serial_runner(tasks: Sequence[TileTask]) -> Iterator[TileResult]:
    """Run tasks one after the other in this process."""
    for task in tasks:
        yield run_tile(task)


def predict_image(
    job: ImageJob, out_dir: Path, config: PredictConfig, runner: Runner = serial_runner,
    on_tile: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Predict one image and write its outputs atomically; returns the output paths.

    ``runner`` maps the tile tasks to results *in task order* (serially, or on dask).
    ``on_tile(done, total)`` is called after each tile.
    """
    t0 = time.perf_counter()
    identity = run_identity(job, config)  # before reading: an input changed mid-run is not "done" next time
    source, tasks = plan_image(job, config)
    zarr = _use_zarr(config, source.shape)
    paths = output_paths(job, out_dir, zarr)
    for fmt in (True, False):  # a killed run may have been writing either format
        remove_stale_temporaries(output_paths(job, out_dir, fmt))
    canvas = _Canvas(source.shape, paths if zarr else None, min(config.tile, 1024))
    try:
        for k, result in enumerate(runner(tasks), start=1):
            canvas.add(result)
            if on_tile is not None:
                on_tile(k, len(tasks))
        _write_maps(canvas, paths, zarr)
    except BaseException:
        canvas.abort()
        raise
    missing = _missing_prompts(tasks, canvas.rows)
    if missing:
        canvas.missing = len(missing)
        log.warning("%s: %d of %d prompts gave no object (rows with flag %r in %s), e.g. box %s",
                    job.image, len(missing), sum(len(t.boxes or ()) for t in tasks), NO_OBJECT, paths["objects"].name, missing[0])
    rows = canvas.rows + [dict(zip(("y0", "x0", "y1", "x1"), b), label="", area=0, flag=NO_OBJECT) for b in missing]
    write_csv(paths["objects"], rows, OBJECT_COLUMNS)
    write_json(paths["settings"], _settings_record(job, config, identity, source, len(tasks), canvas, time.perf_counter() - t0))
    return paths


def _missing_prompts(tasks: Sequence[TileTask], rows: Sequence[dict[str, Any]]) -> list[tuple[float, ...]]:
    """Prompt boxes (image coordinates) that gave no object: nothing above the threshold,
    fewer than ``min_area`` pixels, or every pixel lost to a more probable neighbour."""
    def key(box: Sequence[float]) -> tuple[float, ...]:
        return tuple(round(float(v), 4) for v in box)

    found = Counter(key((r["y0"], r["x0"], r["y1"], r["x1"])) for r in rows)
    missing = []
    for task in tasks:
        for box in task.boxes or ():
            if found[key(box)]:
                found[key(box)] -= 1
            else:
                missing.append(tuple(box))
    return missing


def remove_stale_temporaries(paths: dict[str, Path]) -> None:
    """Delete temporary files/folders a killed run left for these outputs (hidden names
    ``.<output>.<random>.tmp`` and ``.<output>.tmp-<pid>``); final outputs are never touched."""
    import shutil

    for final in paths.values():
        for tmp in final.parent.glob(f".{final.name}.*"):
            if tmp.name.endswith(".tmp") or ".tmp-" in tmp.name:
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def _write_maps(canvas: _Canvas, paths: dict[str, Path], zarr: bool) -> None:
    if zarr:
        for o in canvas.outputs.values():
            o.commit()
        return
    for m in MAPS:
        write_tiff(paths[m], canvas.maps[m])
