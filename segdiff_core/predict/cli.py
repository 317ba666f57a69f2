"""``segdiff-predict``: run a SegDiff model over images, folders or huge images, headless.

Examples::

    segdiff-predict images/ -o out/                          # automatic mode, bundled model
    segdiff-predict "plate/*.tif" -o out/ --prompts-labels masks/   # one box per label
    segdiff-predict slide.ome.tif -o out/ --prompts-csv boxes.csv   # napari Shapes CSV
    segdiff-predict big.tif -o out/ --workers 2                     # dask LocalCluster
    segdiff-predict big.tif -o out/ --scheduler tcp://head:8786     # an existing cluster

See docs/predict.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from segdiff_core.checkpoint import CheckpointError, check_writable
from segdiff_core.device import device_arg
from segdiff_core.predict.distributed import dask_runner
from segdiff_core.predict.io import InputError, OutputError, find_inputs
from segdiff_core.predict.prompts import PromptError
from segdiff_core.predict.run import ImageJob, PredictConfig, image_lock, own_outputs, predict_image, resume_state, run_identity, serial_runner
from segdiff_core.proposals import FOREGROUNDS, ProposalError, ProposalSettings
from segdiff_core.validation import int_at_least

log = logging.getLogger("segdiff.predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="segdiff-predict", description="Segment every object in images with a SegDiff model (no GUI).",
    )
    p.add_argument("inputs", nargs="+", help="image files, glob patterns or folders (TIFF/OME-TIFF, PNG, JPEG, zarr)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default=None, help="model file (default: the bundled nuclei model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompts-csv", help="napari Shapes CSV, or a folder of <image stem>.csv files")
    src.add_argument("--prompts-labels", help="label image (one box per label), or a folder of <image stem>.* label images")
    p.add_argument("--seed", type=int, default=0, help="seed of all random draws (default 0)")
    p.add_argument("--generations", type=int_at_least(1), help="ensemble size per object (default: the model's)")
    p.add_argument("--steps", type=int_at_least(1), help="sampling steps per object (default: the model's)")
    p.add_argument("--batch-size", type=int_at_least(1), default=16, help="prompts per network batch (default 16)")
    p.add_argument("--foreground", choices=FOREGROUNDS, help="automatic mode: foreground from SegDiff windows, the nuclear stain (Otsu of the background-subtracted stain; H+DAB for RGB), plain luminance Otsu, or auto (windows for a semantic-task model, else stain)")
    p.add_argument("--window-scale", type=float, help=f"automatic mode: image px per model px of the foreground windows (default {ProposalSettings.window_scale:g})")
    p.add_argument("--h", type=float, help=f"automatic mode: h-maxima height (px) of the instance split (default {ProposalSettings.h})")
    p.add_argument("--box-scale", type=float, help=f"automatic mode: proposal boxes scaled about their centre by this (default {ProposalSettings.box_scale})")
    p.add_argument("--min-area", type=int, default=16, help="drop objects smaller than this (px)")
    p.add_argument("--tile", type=int_at_least(1), default=2048, help="tile side (px); each tile is one task")
    p.add_argument("--halo", type=int_at_least(0), default=96, help="context around each tile (px); larger than an object")
    p.add_argument("--format", choices=("auto", "tiff", "zarr"), default="auto", help="output maps as TIFF or OME-Zarr (auto: zarr above 8192x8192)")
    p.add_argument("--device", type=device_arg, default="auto", help="auto, cpu, cuda or mps")
    where = p.add_mutually_exclusive_group()  # with both, --workers would be ignored
    where.add_argument("--workers", type=int_at_least(0), default=0, help="start a dask LocalCluster with this many worker processes (0: run here)")
    where.add_argument("--scheduler", help="address of a running dask scheduler, e.g. tcp://head:8786")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs exist (default: skip them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _prompt_for(image: Path, spec: str | None, suffixes: tuple[str, ...]) -> Path | None:
    if spec is None:
        return None
    path = Path(spec)
    if not path.is_dir() or path.name.lower().endswith(".zarr"):
        if not path.exists():
            raise PromptError(f"prompt file {path} does not exist")
        return path
    from segdiff_core.predict.run import _stem

    stem = _stem(image)
    for suffix in suffixes:
        cand = path / f"{stem}{suffix}"
        if cand.exists():
            return cand
    raise PromptError(f"no prompts for {image.name} in {path} (looked for {stem} with {', '.join(suffixes)})")


def _check_distinct_stems(images: list[Path]) -> None:
    """Two images whose outputs would share a name (``a/img.tif`` and ``b/img.tif``, or
    ``img.tif`` and ``img.png``) would overwrite, or be skipped as done by, each other."""
    from segdiff_core.predict.run import _stem

    seen: dict[str, Path] = {}
    for img in images:
        other = seen.setdefault(_stem(img), img)
        if other is not img:
            raise InputError(
                f"{other} and {img} would both write {_stem(img)}_*; "
                "run them into different output folders or rename one"
            )


def make_jobs(args: argparse.Namespace) -> list[ImageJob]:
    images = find_inputs(args.inputs)
    mine = own_outputs(images, Path(args.output))
    if mine:
        log.info("%d output(s) of earlier runs in %s are not inputs (e.g. %s)", len(mine), args.output, mine[0].name)
        images = [p for p in images if p not in mine]
        if not images:
            raise InputError(f"{', '.join(args.inputs)}: only outputs of segdiff-predict, no images to predict")
    _check_distinct_stems(images)
    if len(images) > 1:
        for spec in (args.prompts_csv, args.prompts_labels):
            if spec and not Path(spec).is_dir():
                raise PromptError(f"{len(images)} images but one prompt file {spec}; give a folder of per-image prompt files")
    return [
        ImageJob(
            img,
            _prompt_for(img, args.prompts_csv, (".csv",)),
            _prompt_for(img, args.prompts_labels, (".tif", ".tiff", ".png", ".zarr")),
        )
        for img in images
    ]


#: Settings of the automatic mode's proposals; with prompts they would be ignored.
AUTOMATIC_ONLY = ("foreground", "window_scale", "h", "box_scale")


def make_config(args: argparse.Namespace) -> PredictConfig:
    from segdiff_core.bundled import bundled_model_path

    inference = {k: v for k, v in (("generations", args.generations), ("steps", args.steps)) if v is not None}
    automatic = {k: getattr(args, k) for k in AUTOMATIC_ONLY if getattr(args, k) is not None}
    if automatic and (args.prompts_csv or args.prompts_labels):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in automatic)
        raise ProposalError(f"{flags}: automatic mode only; with prompts every box is segmented as given")
    settings = ProposalSettings(min_area=args.min_area, batch_size=args.batch_size, seed=args.seed, **automatic)
    return PredictConfig(
        model=str(args.model or bundled_model_path()), device=args.device, tile=args.tile, halo=args.halo,
        output_format=args.format, proposals=settings, inference=inference,
    )


def _finished(jobs: list[ImageJob], out_dir: Path, config: PredictConfig) -> set[Path]:
    """Images whose outputs this very run already wrote (to be skipped). Outputs written from
    another version of the image or prompts, another model or other settings stop the run
    before any work: skipping them would mix two runs in one folder, redoing them would
    destroy results the user has."""
    done, clashes = set(), []
    for job in jobs:
        try:
            finished, differences = resume_state(job, out_dir, run_identity(job, config))
        except OSError as exc:
            raise InputError(f"{job.image}: {exc.strerror or exc}") from exc
        if finished and not differences:
            done.add(job.image)
        elif finished:
            clashes.append(f"{job.image} (differs in: {', '.join(differences[:6])})")
    if clashes:
        raise OutputError(
            f"{out_dir} holds outputs of another run for {len(clashes)} image(s): {'; '.join(clashes[:5])}. "
            "Use another output folder, or --overwrite to redo them with these settings"
        )
    return done


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the number of images that failed."""
    from tqdm.auto import tqdm

    out_dir = check_writable(args.output, error=OutputError)
    config = make_config(args)
    from segdiff_core.predict.tiles import load_segmenter

    load_segmenter(config.model, config.device)  # a bad model file fails before any work
    jobs = make_jobs(args)
    done = set() if args.overwrite else _finished(jobs, out_dir, config)
    failed = 0
    with dask_runner(args.workers, args.scheduler) as runner:
        bar = tqdm(jobs, desc="images", unit="image", disable=args.no_progress)
        for job in bar:
            if job.image in done:
                log.info("%s: outputs exist, skipped (use --overwrite to redo)", job.image)
                continue
            tiles = tqdm(desc=job.image.name, unit="tile", leave=False, disable=args.no_progress)

            def on_tile(done: int, total: int, tiles=tiles) -> None:
                tiles.total = total
                tiles.update(done - tiles.n)

            try:
                with image_lock(job, out_dir):
                    if not args.overwrite and _finished([job], out_dir, config):
                        log.info("%s: finished by another run into %s meanwhile, skipped", job.image, out_dir)
                        continue
                    predict_image(job, out_dir, config, runner or serial_runner, on_tile)
            except (InputError, PromptError) as exc:
                failed += 1
                log.error("%s: skipped: %s", job.image, exc)
            finally:
                tiles.close()
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="segdiff-predict: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        failed = run(args)
    except (InputError, PromptError, OutputError, CheckpointError, ProposalError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; finished images are complete, the rest will be redone on the next run")
        return 130
    if failed:
        log.error("%d image(s) failed (see above); the others are complete", failed)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
