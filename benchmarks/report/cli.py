"""Command line of the evaluation report: run parts, keep their JSON, render the Markdown."""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from segdiff_core.checkpoint import atomic_write

from benchmarks.report import PARTS
from benchmarks.report.common import (
    FULL,
    REPO_ROOT,
    SMOKE,
    Claim,
    RenderContext,
    ReportContext,
    ReportError,
    ReportPaths,
    ReportSizes,
    md_table,
    read_json,
    write_json,
)

TEMPLATE = Path(__file__).with_name("template.md")
META = "meta.json"


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


def select_parts(spec: str | None) -> list[Any]:
    """Part modules for ``'1,3,speed'`` (numbers or names; None/'all' = every part), in report order."""
    if spec is None or spec.strip().lower() == "all":
        return list(PARTS)
    by_name = {p.NAME: p for p in PARTS}
    chosen = set()
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token.isdigit() and 1 <= int(token) <= len(PARTS):
            chosen.add(PARTS[int(token) - 1].NAME)
        elif token in by_name:
            chosen.add(token)
        else:
            valid = ", ".join(f"{i} {p.NAME}" for i, p in enumerate(PARTS, 1))
            raise ReportError(f"unknown part {token!r}; choose numbers or names from: {valid}")
    if not chosen:
        raise ReportError("--parts selects no part")
    return [p for p in PARTS if p.NAME in chosen]


def default_model_path() -> Path:
    """The bundled model's path inside the package (it may not exist yet)."""
    from segdiff_core.bundled import BUNDLED_MODEL_NAME, bundled_model_path

    try:
        return bundled_model_path()
    except FileNotFoundError:
        import segdiff_core

        return Path(segdiff_core.__file__).parent / "models" / BUNDLED_MODEL_NAME


def make_smoke_model(out_dir: Path) -> Path:
    """A 'test'-preset model trained for 2 steps (the smoke run's stand-in when no model is
    given and the bundled one does not exist)."""
    from segdiff_core.training.config import merge_run_config
    from segdiff_core.training.sources import build_sources
    from segdiff_core.training.trainer import Trainer

    flags = {"train.steps": 2, "train.batch_size": 2, "train.warmup_steps": 1, "train.val_every": 0,
             "train.checkpoint_every": 2, "data.tile_size": 64, "data.objects_per_tile": 2}
    run = merge_run_config("test", None, flags)
    train_src, _, desc = build_sources(run.data)
    result = Trainer(run, out_dir, train_src, None, progress=False, describe_data=desc, log=lambda m: None).fit()
    assert result.last_model is not None
    return result.last_model


def environment(threads: int) -> dict[str, Any]:
    """Machine, versions, commit and date of this run."""
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
        "torch": torch.__version__, "numpy": numpy.__version__, "commit": commit,
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def model_info(ctx: ReportContext) -> dict[str, Any]:
    seg = ctx.segmenter()
    path = Path(ctx.model_path).resolve()
    try:
        shown = str(path.relative_to(REPO_ROOT))
    except ValueError:
        shown = str(path)
    meta = seg.metadata
    return {
        "path": shown, "parameters": seg.model.num_parameters(), "image_size": seg.input_size,
        "in_channels": seg.in_channels, "trained_steps": meta.get("steps"), "trained_on": meta.get("trained_on"),
        "model": seg.config.model.to_dict(), "inference": seg.inference.to_dict(),
    }


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def _setup_section(meta: dict[str, Any] | None, parts: dict[str, dict[str, Any] | None]) -> str:
    if meta is None:
        return "_No run recorded yet: run `python -m benchmarks.report`._"
    env, model, sizes = meta["environment"], meta["model"], meta["sizes"]
    lines = []
    if any(p is not None and p.get("sizes") == "smoke" for p in parts.values()):
        lines += ["> **Smoke run**: some parts below were computed with the tiny `--smoke` sizes; their numbers mean nothing.", ""]
    m = model["model"]
    lines += [
        f"Last run {env['date']} at commit `{env['commit']}`: {env['cpu']}, {env['cores']} cores, {env['threads']} torch "
        f"thread(s), Python {env['python']}, torch {env['torch']}, numpy {env['numpy']}. Command: `{meta['command']}`.",
        "",
        f"**Model of the last run** (claims 1, 2, 5 and speed): `{model['path']}`, {model['parameters']:,} parameters, "
        f"{model['image_size']} px x {model['in_channels']} channels, C = {m['model_channels']}, channel_mult "
        f"{tuple(m['channel_mult'])}, {m['rrdb_blocks']} RRDBs, conditioning `{m['conditioning']}`; trained "
        f"{model['trained_steps']} steps on {model['trained_on'] or 'unknown data'}. Default inference: "
        f"{model['inference']['generations']} generations, {model['inference']['steps']} {model['inference']['sampler'].upper()} steps. "
        "Each part keeps the results of its own run (dates in *How long each part took*): a part run before the bundled "
        "model last changed measured the bundled model of that date, not this one.",
        "",
        "**Data**: held-out synthetic nuclei from `segdiff_core.evaluation.runner.synthetic_items` (evaluation seed 2024, a "
        f"stream disjoint from every training stream), {sizes['eval_tile_size']} px tiles. *In-distribution* = the training "
        "styles of the evaluated model (`fluorescence` and `he` before version 2 of the generator; `confocal` joined them "
        "with it); *held-out* = the `ihc` style no model was trained on. Every prompt is the object's "
        "tight box, cropped with the paper's *expansion* protocol (15 % larger) and resampled to the model input; metrics are "
        "computed on the crop's footprint at the original resolution (`segdiff_core.metrics`): IoU and F1 in percent, the "
        "paper's calibration score (10 bins, lower is better).",
    ]
    return "\n".join(lines)


def _timing_section(parts: dict[str, dict[str, Any] | None]) -> str:
    rows, total = [], 0.0
    for i, p in enumerate(PARTS, 1):
        d = parts[p.NAME]
        if d is None:
            rows.append([f"{i}. {p.NAME}", "not run", "", "", "", ""])
            continue
        total += d["seconds"]
        env = d.get("environment", {})
        notes = ""
        if d.get("settings", {}).get("samples_reused"):
            notes = f"reused the samples of part 1 (drawn in {d['settings']['sampling_seconds']:.0f} s there)"
        if p.NAME in ("conditioning", "baselines"):
            models = d.get("variants") or d.get("methods") or {}
            reused = {k: v.get("training_seconds") for k, v in models.items() if isinstance(v, dict) and v.get("reused")}
            if reused:
                earlier = sum(t for t in reused.values() if t is not None)
                notes = (f"reused the models {', '.join(reused)} trained by an earlier run (their training took "
                         f"{earlier:.0f} s then, not counted here)")
            else:
                notes = "all models trained in this run"
        rows.append([f"{i}. {p.NAME}", f"{d['seconds']:.0f}", f"{d['seconds'] / 60:.1f}", env.get("date", ""),
                     str(env.get("threads", "")), "; ".join(x for x in (d.get("sizes", ""), notes) if x)])
    rows.append(["**total**", f"**{total:.0f}**", f"**{total / 60:.1f}**", "", "", ""])
    return md_table(["part", "seconds", "minutes", "run at", "threads", "sizes / notes"], rows, "lrrlrl")


def _reproduce_section(paths: ReportPaths) -> str:
    return "\n".join([
        "```bash",
        "python -m benchmarks.report                  # every part, then this file",
        "python -m benchmarks.report --parts 1,5      # some parts (numbers or names); the others keep their JSON",
        "python -m benchmarks.report --render-only    # rewrite this file and the plots from the JSON",
        "python -m benchmarks.report --model PATH     # evaluate another checkpoint",
        "python -m benchmarks.report --smoke --output-root /tmp/report   # tiny version of everything",
        "```",
        "",
        f"Raw results: `{_rel(paths.results)}/<part>.json`; plots: `{_rel(paths.images)}/`; trained small models "
        f"(claims 3-4, reused when their configuration is unchanged; `--retrain` forces training): `{_rel(paths.work)}/small/`.",
    ])


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _verdict_digest(claims: list[Claim]) -> str:
    """Plain sentences under the summary table: the counts, and every disagreement by name."""
    counts = {v: sum(c.verdict == v for c in claims) for v in ("agrees", "disagrees", "inconclusive")}
    verbs = {v: (s if counts[v] == 1 else p) for v, s, p in (("agrees", "agrees", "agree"), ("disagrees", "disagrees", "disagree"),
                                                              ("inconclusive", "is", "are"))}
    lines = ["", "", f"Of {len(claims)} rows, {counts['agrees']} {verbs['agrees']} with the paper, {counts['disagrees']} "
             f"{verbs['disagrees']} and {counts['inconclusive']} {verbs['inconclusive']} inconclusive at this sample size"
             + (f"; {len(claims) - sum(counts.values())} are measurements the paper makes no claim about." if len(claims) > sum(counts.values()) else ".")]
    against = [c for c in claims if c.verdict == "disagrees"]
    if against:
        lines += ["", "**Where our results disagree with the paper:**", ""]
        lines += [f"- {c.claim}: the paper says {c.paper.rstrip('.')}; we measured {c.ours}." for c in against]
    return "\n".join(lines)


def _refinement_section(paths: ReportPaths) -> str:
    """Issue 11 item 5 (IoU against steps of the shipped model and the refinement variants), from
    the JSON ``benchmarks/bench_steps.py`` writes beside evaluation.md (else the repository's)."""
    candidates = (paths.markdown.parent / "steps-generations.json", Path(__file__).resolve().parents[2] / "docs" / "steps-generations.json")
    data = next((d for d in map(read_json, candidates) if d and "models" in d), None)
    if data is None:
        return "_No results: `python benchmarks/bench_steps.py` writes them._"
    from benchmarks.bench_steps import evaluation_section

    return evaluation_section(data)


def render_document(paths: ReportPaths) -> tuple[str, list[Claim]]:
    """Render the Markdown from the JSON results (and write the plots); returns
    ``(markdown, claims)``. Parts without results say so."""
    rc = RenderContext(paths.images, paths.markdown)
    parts = {p.NAME: read_json(paths.results / f"{p.NAME}.json") for p in PARTS}
    text = TEMPLATE.read_text()
    claims: list[Claim] = []
    for i, p in enumerate(PARTS, 1):
        data = parts[p.NAME]
        if data is None:
            body = f"_Not run yet: `python -m benchmarks.report --parts {i}`._"
        else:
            section = p.render(data, rc)
            body, claims = section.markdown, claims + section.claims
        text = text.replace(f"{{{{title:{p.NAME}}}}}", p.TITLE).replace(f"{{{{{p.NAME}}}}}", body)
    summary = md_table(["claim", "paper", "ours", "verdict"], [[c.claim, c.paper, c.ours, f"**{c.verdict}**"] for c in claims],
                       "llll") + _verdict_digest(claims) if claims else "_No part has been run yet._"
    replacements = {
        "setup": _setup_section(read_json(paths.results / META), parts),
        "summary": summary,
        "timing": _timing_section(parts),
        "reproduce": _reproduce_section(paths),
        "results_dir": _rel(paths.results),
        "refinement": _refinement_section(paths),
    }
    for key, value in replacements.items():
        text = text.replace(f"{{{{{key}}}}}", value)
    if "{{" in text:
        left = sorted({text[i : text.index("}}", i) + 2] for i in range(len(text)) if text.startswith("{{", i)})
        raise ReportError(f"template placeholders without a value: {left}")
    return text, claims


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Test the SegDiff paper's claims on held-out synthetic nuclei, measure speed, write docs/evaluation.md.",
    )
    ap.add_argument("--parts", help="comma-separated part numbers or names (default: all): "
                    + ", ".join(f"{i} {p.NAME}" for i, p in enumerate(PARTS, 1)))
    ap.add_argument("--model", type=Path, help="SegDiff checkpoint for claims 1, 2, 5 and speed (default: the bundled model)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for every part (seconds; numbers are meaningless)")
    ap.add_argument("--render-only", action="store_true", help="only rewrite the Markdown and plots from the JSON results")
    ap.add_argument("--output-root", type=Path,
                    help="write evaluation.md, images/evaluation/, evaluation/*.json and work/ under this folder "
                         "(default: docs/ and runs/report/; with --smoke: runs/report-smoke/)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's default, one per core)")
    ap.add_argument("--retrain", action="store_true", help="train claim 3-4 models even if matching ones exist in the work folder")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    return ap


def _paths(args: argparse.Namespace) -> ReportPaths:
    if args.output_root is not None:
        return ReportPaths.under(args.output_root)
    if args.smoke:
        return ReportPaths.under(REPO_ROOT / "runs" / "report-smoke")
    return ReportPaths.default()


def run_parts(ctx: ReportContext, parts: Sequence[Any], command: str) -> dict[str, float]:
    """Run ``parts`` and write their JSON (and ``meta.json``); returns seconds per part."""
    import torch

    env = environment(torch.get_num_threads())
    ctx.paths.results.mkdir(parents=True, exist_ok=True)
    write_json(ctx.paths.results / META, {"environment": env, "model": model_info(ctx), "sizes": ctx.sizes.to_dict(),
                                           "command": command})
    seconds: dict[str, float] = {}
    for k, part in enumerate(parts, 1):
        number = next(i for i, p in enumerate(PARTS, 1) if p is part)
        ctx.log(f"[{k}/{len(parts)}] part {number} ({part.NAME}): {part.TITLE}")
        t0 = time.perf_counter()
        data = part.run(ctx)
        seconds[part.NAME] = time.perf_counter() - t0
        data.update({"part": part.NAME, "seconds": seconds[part.NAME], "sizes": ctx.sizes.name, "environment": env})
        write_json(ctx.paths.results / f"{part.NAME}.json", data)
        ctx.log(f"  part {number} done in {seconds[part.NAME]:.1f} s")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log: Callable[[str], None] = (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))
    paths = _paths(args)
    try:
        parts = select_parts(args.parts)
        if not args.render_only:
            import torch

            if args.threads is not None:
                if args.threads < 1:
                    raise ReportError(f"--threads must be >= 1, got {args.threads}")
                torch.set_num_threads(args.threads)
            sizes: ReportSizes = SMOKE if args.smoke else FULL
            model = args.model
            if model is None:
                model = default_model_path()
                if args.smoke and not model.is_file():
                    log(f"no model given and {model} does not exist: training a 2-step 'test' model for the smoke run")
                    model = make_smoke_model(paths.work / "smoke-model")
            ctx = ReportContext(sizes, Path(model), paths, torch.get_num_threads(), retrain=args.retrain, log=log)
            command = "python -m benchmarks.report " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
            t0 = time.perf_counter()
            seconds = run_parts(ctx, parts, command.strip())
            log(f"parts: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + f"; total {time.perf_counter() - t0:.1f} s")
        text, claims = render_document(paths)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths.markdown.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(paths.markdown, text)
    print(f"wrote {paths.markdown}")
    for c in claims:
        print(f"  [{c.verdict}] {c.claim}: {c.ours}")
    return 0
