"""Does iterative refinement earn its steps? IoU against DDIM steps and generations, and time.

For one or more model files (the shipped model and the refinement variants of issue 11 item 5:
self-conditioning, v-prediction, a noise schedule shifted toward high noise): synthetic prompts
of every style family, including the family held out of training, at two crop margins, sampled
once with the largest number of generations for each number of DDIM steps; the ensemble of the
first ``g`` generations gives the curve over ``g`` (nested ensembles, a paired comparison). All
models see the same prompts, so model-against-model differences are paired too. IoU is measured
on the image's own pixels (paste-back of the mean map, the model's threshold); seconds are wall
time per prompt of the sampling (batched, 1 torch thread unless ``--threads``). The evaluation set
cuts several prompts from one tile, and prompts of one tile share its optics and stain: every
standard error and paired difference is clustered by tile (``prompt_tiles`` in the JSON).

    python benchmarks/bench_steps.py                                  # the bundled model
    python benchmarks/bench_steps.py --model selfcond=runs/selfcond/last.pt --merge docs/steps-generations.json
    python benchmarks/bench_steps.py runs/x/last.pt --n-per-style 4 --out /tmp/steps
    python benchmarks/bench_steps.py --merge docs/steps-generations.json --rename shipped=v4 --previous v4 \
        --describe v4=git:cc4db75:segdiff_core/models/nuclei-cpu.pt   # a new bundled model; the old one kept as v4

Writes ``<out>/steps-generations.json``, ``<out>/steps-generations.md`` and
``<out>/images/steps-generations.png`` (default ``<out>`` = docs/). With the default ``<out>``
it also re-renders docs/evaluation.md, whose section "Does iterative refinement pay?" is
:func:`evaluation_section` of this JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_box_robustness import resolve_model  # noqa: E402
from benchmarks.report.common import (MIN_VERDICT_TILES, clustered_se, fmt, judge, paired_difference, save_figure,  # noqa: E402
                                      tile_of, write_outputs)
from segdiff_core.checkpoint import file_sha256  # noqa: E402
from segdiff_core.bundled import bundled_model_path  # noqa: E402
from segdiff_core.data.synthetic import HELDOUT_STYLES, STYLES  # noqa: E402
from segdiff_core.evaluation.runner import EvalProtocol, prepare_items, synthetic_items  # noqa: E402
from segdiff_core.metrics import iou  # noqa: E402
from segdiff_core.segmenter import Segmenter  # noqa: E402

EVAL_SEED = 20261201
SHIPPED = "shipped"
"""Name of the bundled model's rows; the other models are compared with it."""


def sweep(seg: Segmenter, prepared: list[Any], steps: list[int], generations: list[int], seed: int) -> dict[str, Any]:
    """IoU per (steps, g) for every prompt, and seconds per prompt per steps value."""
    g_max = max(generations)
    patches = [it.model_inputs[0] for it in prepared]
    boxes = [it.prompt_box for it in prepared]
    out: dict[str, Any] = {}
    for n_steps in steps:
        inf = seg.inference.replace(generations=g_max, steps=n_steps, sampler="ddim")
        t0 = time.perf_counter()
        res = seg.segment_batch(patches, inf, seed=seed, keep_generations=True, boxes=boxes)
        seconds = (time.perf_counter() - t0) / len(patches)
        per_g: dict[str, list[float]] = {}
        for g in generations:
            vals = []
            for it, r in zip(prepared, res):
                prob = it.to_region(r.generations[:g].mean(0)[None])
                vals.append(float(iou(prob > inf.threshold, it.target)))
            per_g[str(g)] = vals
        out[str(n_steps)] = {"seconds_per_prompt_at_max_g": seconds, "iou": per_g}
        print(f"steps {n_steps:3d}: " + " ".join(f"G{g} {np.mean(v):.3f}" for g, v in per_g.items())
              + f"  ({seconds:.2f} s/prompt at G={g_max})", flush=True)
    return out


def describe(seg: Segmenter, path: str, file: Path) -> dict[str, Any]:
    """What distinguishes a model file: its refinement-related settings and training. ``path``: the
    model as named on the command line (a path or ``git:<rev>:<path>``); ``file``: the file read."""
    m, d = seg.config.model, seg.config.diffusion
    return {"model": path, "sha256": file_sha256(file), "train_steps": seg.metadata.get("steps"), "prediction": d.prediction,
            "noise_shift": d.noise_shift, "self_condition": m.self_condition, "box_channel": m.box_channel,
            "default": f"{seg.inference.generations} x {seg.inference.steps} {seg.inference.sampler}",
            "threshold": seg.inference.threshold}


def _rel(path: str) -> str:
    """A model path as written in the docs: relative to the repository when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def prompt_tiles(items: list[Any]) -> list[str]:
    """The tile each prompt was cut from (:func:`~benchmarks.report.common.tile_of`), in
    prompt order: the clusters of every standard error on the page."""
    return [tile_of(it.name) for it in items]


# ------------------------------------------------------------------ statistics
def _sel(result: dict[str, Any], subset: str) -> np.ndarray:
    """Boolean mask over the prompts: ``all`` or ``heldout`` (the held-out families)."""
    styles = np.array(result["prompt_styles"])
    return np.ones(styles.size, bool) if subset == "all" else np.isin(styles, result["heldout"])


def _tiles(result: dict[str, Any], subset: str = "all") -> list[str]:
    """The tile of each prompt of ``subset`` (the clusters of its standard errors)."""
    return [t for t, keep in zip(result["prompt_tiles"], _sel(result, subset)) if keep]


def _n(result: dict[str, Any], subset: str) -> str:
    """``n=<prompts> from <tiles> tiles`` of a subset, as the page writes it."""
    tiles = _tiles(result, subset)
    return f"n={len(tiles)} from {len(set(tiles))} tiles"


def _cell(v: np.ndarray, tiles: list[str]) -> str:
    """Mean IoU ×100 ± its standard error clustered by tile."""
    return f"{100 * v.mean():.1f} ± {fmt(clustered_se(100 * v, tiles), '.1f')}"


def _ious(result: dict[str, Any], model: str, margin: str, steps: str, g: int, subset: str = "all") -> np.ndarray:
    return np.array(result["models"][model]["margins"][margin][steps]["iou"][str(g)])[_sel(result, subset)]


WORDS = {"agrees": "better", "disagrees": "worse", "inconclusive": "no different", "n/a": "n/a"}


def _paired(a: np.ndarray, b: np.ndarray, tiles: list[str]) -> tuple[float, float | None, str]:
    """Mean of ``a - b`` in IoU points, its standard error clustered by tile (None: one tile), and
    whether it is beyond twice that error (``better`` / ``worse``; ``no different`` otherwise;
    ``no verdict`` over fewer than :data:`MIN_VERDICT_TILES` tiles)."""
    d = paired_difference(100 * a, 100 * b, groups=tiles)
    if d["groups"] < MIN_VERDICT_TILES:
        return d["mean"], d["se"], f"no verdict: {d['groups']} tiles"
    return d["mean"], d["se"], WORDS[judge(d["mean"], d["se"], +1)]


# ------------------------------------------------------------------ report
def render(result: dict[str, Any]) -> str:
    g_max = max(result["generations"])
    lines = [
        "# IoU against DDIM steps and generations",
        "",
        "Written by `benchmarks/bench_steps.py`; do not edit by hand.",
        f"{result['n_prompts']} prompts per margin ({result['n_per_style']} per family of {', '.join(result['styles'])};",
        f"held out of training: {', '.join(result['heldout'])}), evaluation seed {result['eval_seed']}, the same prompts",
        f"for every model. The evaluation set cuts several prompts from one tile: the {result['n_prompts']} prompts come "
        f"from {len(set(_tiles(result)))} tiles,",
        f"the held-out family's {_n(result, 'heldout').removeprefix('n=')}. Prompts of one tile share its optics and stain, "
        "so every standard error",
        "and paired difference on this page is clustered by tile (`benchmarks.report.common.clustered_se`): it counts "
        "tiles, not prompts.",
        "Cells: mean IoU ×100 ± that standard error (all prompts, or the held-out family's); nested ensembles",
        "(the first g of the same samples). Time: seconds per prompt of batched sampling",
        f"with {result['threads']} torch thread(s) on a shared 2-core machine at G={g_max} (load average "
        f"{' / '.join(f'{x:.1f}' for x in result.get('load_average', []))} at the end of the last run; absolute",
        "times move with the load, time is linear in g x steps).",
        "",
        *_notes(result),
        "Models:",
        "",
    ]
    for name, info in result["models"].items():
        lines.append(f"- `{name}`: " + ", ".join(f"{k} {_show(k, v)}" for k, v in info["info"].items()))
    for name, info in result["models"].items():
        lines += ["", f"## Model `{name}`"]
        for margin, data in info["margins"].items():
            lines += ["", f"### Crop margin {margin}", "",
                      "| DDIM steps | " + " | ".join(f"G={g}" for g in result["generations"])
                      + f" | held out, G={g_max} ({_n(result, 'heldout')}) | s/prompt at G={g_max} |",
                      "|---|" + "---|" * (len(result["generations"]) + 2)]
            for n_steps, d in data.items():
                cells = [_cell(_ious(result, name, margin, n_steps, g), _tiles(result)) for g in result["generations"]]
                cells.append(_cell(_ious(result, name, margin, n_steps, g_max, "heldout"), _tiles(result, "heldout")))
                lines.append(f"| {n_steps} | " + " | ".join(cells) + f" | {d['seconds_per_prompt_at_max_g']:.2f} |")
    lines += ["", "## Does iterative refinement earn its steps?", "", verdict(result), "",
              "![IoU against steps and generations](images/steps-generations.png)", ""]
    return "\n".join(lines)


def _show(key: str, value: Any) -> Any:
    """A model's description entry as the page writes it (paths relative, hashes shortened)."""
    return _rel(value) if key == "model" else value[:12] if key == "sha256" else value


def _notes(result: dict[str, Any]) -> list[str]:
    """The page's warnings (few held-out tiles, a changed bundled file), each a paragraph."""
    return [line for note in _few_tiles_note(result) + _stale_note(result) for line in (note, "")]


def _stale_note(result: dict[str, Any]) -> list[str]:
    """A warning when ``shipped`` was measured with the bundled model's path but the file there has
    changed since (another SHA-256): its rows are then an earlier version's."""
    info = result["models"].get(SHIPPED, {}).get("info", {})
    bundled = bundled_model_path()
    if "sha256" not in info or _rel(info["model"]) != _rel(str(bundled)) or info["sha256"] == file_sha256(bundled):
        return []
    return [f"**The bundled model file has changed since `{SHIPPED}` was measured (SHA-256 {info['sha256'][:12]}, now "
            f"{file_sha256(bundled)[:12]}): its rows are an earlier version's. Rerun this script.**"]


def _few_tiles_note(result: dict[str, Any]) -> list[str]:
    """A warning when a subset's errors rest on very few tiles (few degrees of freedom)."""
    n_tiles = len(set(_tiles(result, "heldout")))
    if n_tiles >= MIN_VERDICT_TILES:
        return []
    df = max(n_tiles - 1, 0)
    return [f"**The held-out family's prompts come from {n_tiles} tile{'s' * (n_tiles != 1)}**: its clustered errors "
            f"rest on {df} degree{'s' * (df != 1)} of freedom (with 2 tiles, the gap between the two tile means) and can be "
            f"far too small or too large, so held-out comparisons get no *better* / *worse* verdict (that needs "
            f"{MIN_VERDICT_TILES} tiles or more); read their means, and the all-families rows."]


def _refinement_lines(result: dict[str, Any], name: str) -> tuple[list[str], bool]:
    """Per margin and subset: each steps value against 1 step of the same model (paired, G max)."""
    g = max(result["generations"])
    out, pays = [], False
    for margin, data in result["models"][name]["margins"].items():
        for subset in ("all", "heldout"):
            one, tiles = _ious(result, name, margin, "1", g, subset), _tiles(result, subset)
            parts = []
            for n_steps in data:
                if n_steps == "1":
                    continue
                m, se, word = _paired(_ious(result, name, margin, n_steps, g, subset), one, tiles)
                pays |= word == "better"
                parts.append(f"{n_steps} steps {m:+.1f} ± {fmt(se, '.1f')} ({word})")
            tag = "all families" if subset == "all" else "held-out family"
            out.append(f"- `{name}`, margin {margin}, {tag} ({_n(result, subset)}), G={g}, against its own 1 step: "
                       + "; ".join(parts) + ".")
    return out, pays


def _best(result: dict[str, Any], name: str, margin: str, subset: str) -> tuple[str, float]:
    g = max(result["generations"])
    data = result["models"][name]["margins"][margin]
    best = max(data, key=lambda s: _ious(result, name, margin, s, g, subset).mean())
    return best, float(_ious(result, name, margin, best, g, subset).mean())


def _against_shipped(result: dict[str, Any], name: str) -> tuple[list[str], bool]:
    """A variant's best steps against its base model's 1 step (paired, G max), per margin and subset."""
    g = max(result["generations"])
    base = _base(result)
    out, better_everywhere = [], True
    for margin in result["models"][name]["margins"]:
        for subset in ("all", "heldout"):
            best, _ = _best(result, name, margin, subset)
            m, se, word = _paired(_ious(result, name, margin, best, g, subset), _ious(result, base, margin, "1", g, subset),
                                  _tiles(result, subset))
            better_everywhere &= word == "better" or word.startswith("no verdict")
            tag = "all families" if subset == "all" else "held-out family"
            out.append(f"- `{name}` at its best ({best} steps) vs `{base}` at 1 step, margin {margin}, {tag}: "
                       f"{m:+.1f} ± {fmt(se, '.1f')} IoU points ({word}).")
    return out, better_everywhere


def _base(result: dict[str, Any]) -> str:
    """The model the refinement variants and controls are compared with (the one they were trained from)."""
    return result.get("base") or SHIPPED


def _against_previous(result: dict[str, Any], name: str) -> list[str]:
    """The shipped model at its default steps minus an earlier bundled version at its own default
    steps (paired, G max), per margin and subset."""
    g = max(result["generations"])
    mine = result["models"][SHIPPED]["info"]["default"].split()[2]
    theirs = result["models"][name]["info"]["default"].split()[2]
    out = []
    for margin in result["models"][name]["margins"]:
        for subset in ("all", "heldout"):
            m, se, word = _paired(_ious(result, SHIPPED, margin, mine, g, subset), _ious(result, name, margin, theirs, g, subset),
                                  _tiles(result, subset))
            tag = "all families" if subset == "all" else "held-out family"
            out.append(f"- `{SHIPPED}` ({mine} steps) minus `{name}` ({theirs} steps), margin {margin}, {tag}: "
                       f"{m:+.1f} ± {fmt(se, '.1f')} IoU points ({word}).")
    return out


def _is_variant(info: dict[str, Any]) -> bool:
    """A refinement recipe of issue 11 item 5: self-conditioning, v/eps prediction or a shifted schedule."""
    return bool(info.get("self_condition")) or info.get("prediction") != "x0" or float(info.get("noise_shift", 1.0)) != 1.0


def verdict(result: dict[str, Any]) -> str:
    """Does any model gain from more than one step, and does any variant beat the shipped model? In words."""
    lines, paying = [], []
    for name in result["models"]:
        rl, pays = _refinement_lines(result, name)
        lines += rl
        paying += [name] * pays
    base, previous = _base(result), result.get("previous", [])
    fixed = {SHIPPED, base, *previous}
    variants = [n for n in result["models"] if n not in fixed and _is_variant(result["models"][n]["info"])]
    controls = [n for n in result["models"] if n not in fixed and n not in variants]
    vs, winners = [], []
    if base in result["models"]:
        for name in variants + controls:
            v, better = _against_shipped(result, name)
            vs += v
            if better and name in variants:
                winners.append(name)
    older = [line for name in previous if name in result["models"] and SHIPPED in result["models"]
             for line in _against_previous(result, name)]
    if paying:
        head = ("**In some settings more steps are better than one step of the same model beyond twice the noise: "
                f"for {', '.join(f'`{n}`' for n in paying)} (marked *better* below).**")
    else:
        head = ("**No: for no model and no margin does more than one DDIM step improve the ensemble beyond twice "
                "the noise; one step is the best quality for the time.**")
    where = (" and on the held-out family" if len(set(_tiles(result, "heldout"))) >= MIN_VERDICT_TILES
             else " on all families (the held-out family gets no verdict)")
    if variants:
        head += (f" Refinement variants measured: {', '.join(f'`{v}`' for v in variants)}; "
                 + (f"clearly better than `{base}` at every margin{where}: "
                    f"{', '.join(winners)}." if winners else
                    f"none is clearly better than `{base}` at one step at every margin{where}."))
    if controls:
        head += (f" Controls (`{base}`'s recipe, trained further with a variant's budget): "
                 f"{', '.join(f'`{c}`' for c in controls)}.")
    if previous:
        head += f" Earlier bundled versions: {', '.join(f'`{p}`' for p in previous)}."
    return "\n".join([head, "", choice(result), "", "Each model against its own 1 step (paired, IoU points):", ""] + lines
                     + (["", f"Variants against `{base}`, the model they were trained from (paired, IoU points):", ""] + vs if vs else [])
                     + (["", "The shipped model against earlier bundled versions, each at its default steps (paired, IoU points):", ""]
                        + older if older else []))


def choice(result: dict[str, Any]) -> str:
    """The quality-against-time reading for the shipped model: the best (steps, G) by mean IoU over
    the margins (all families), and every cheaper-or-equal setting not worse than it beyond twice
    the standard error of the paired difference (same prompts, clustered by tile)."""
    name = SHIPPED if SHIPPED in result["models"] else next(iter(result["models"]))
    margins = list(result["models"][name]["margins"])
    per = {(int(n), g): np.mean([_ious(result, name, m, n, g) for m in margins], axis=0)
           for n in result["models"][name]["margins"][margins[0]] for g in result["generations"]}
    best = max(per, key=lambda k: per[k].mean())
    same = [k for k in per if k == best or _paired(per[k], per[best], _tiles(result))[2] != "worse"]
    same.sort(key=lambda k: (k[0] * k[1], -k[1]))
    show = lambda k: f"{k[1]} x {k[0]} ({100 * per[k].mean():.1f})"  # noqa: E731
    return (f"Quality against time, `{name}` (G x DDIM steps; mean IoU over margins {', '.join(margins)}, all "
            f"families; cost = G x steps network calls): best {show(best)}; not worse than it beyond twice the paired "
            f"standard error (clustered by tile), cheapest first: {', '.join(show(k) for k in same)}.")


def evaluation_section(result: dict[str, Any]) -> str:
    """The docs/evaluation.md section on issue 11 item 5: a table of IoU at G max per model and
    steps, and the verdict. ``result``: the JSON of this script."""
    g = max(result["generations"])
    margins = list(next(iter(result["models"].values()))["margins"])
    head = ["model", "DDIM steps"] + [f"margin {m}, {s}" for m in margins for s in ("all", "held out")] + ["s/prompt"]
    rows = []
    for name, info in result["models"].items():
        for n_steps in info["margins"][margins[0]]:
            cells = [_cell(_ious(result, name, m, n_steps, g, s), _tiles(result, s)) for m in margins for s in ("all", "heldout")]
            secs = np.mean([info["margins"][m][n_steps]["seconds_per_prompt_at_max_g"] for m in margins])
            rows.append(f"| `{name}` | {n_steps} | " + " | ".join(cells) + f" | {secs:.2f} |")
    return "\n".join([
        f"Written by `benchmarks/bench_steps.py` (raw numbers: [steps-generations.json](steps-generations.json), more in "
        f"[steps-generations.md](steps-generations.md)). G = {g} generations, IoU ×100 ± SE clustered by tile over "
        f"{result['n_prompts']} prompts from {len(set(_tiles(result)))} tiles (held out: the {', '.join(result['heldout'])} "
        f"family, {_n(result, 'heldout')}). Each model is timed in "
        "its own run, at that run's machine load: compare s/prompt within a model, not across models.",
        "", *_notes(result),
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows, "", verdict(result)])


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g_max = max(result["generations"])
    names = list(result["models"])
    margins = list(result["models"][names[0]]["margins"])
    fig, axes = plt.subplots(3, len(margins), figsize=(5.5 * len(margins), 11), squeeze=False)
    for c, margin in enumerate(margins):
        data = result["models"].get(SHIPPED, result["models"][names[0]])["margins"][margin]
        for g in result["generations"]:
            xs = [d["seconds_per_prompt_at_max_g"] * g / g_max for d in data.values()]
            ys = [np.mean(d["iou"][str(g)]) for d in data.values()]
            axes[0, c].plot(xs, ys, marker="o", label=f"G={g}")
            for x, y, n_steps in zip(xs, ys, data):
                axes[0, c].annotate(n_steps, (x, y), fontsize=7, textcoords="offset points", xytext=(2, 2))
        axes[0, c].set_xscale("log")
        axes[0, c].set_xlabel("seconds per prompt (labels: DDIM steps)")
        axes[0, c].set_title(f"{names[0] if SHIPPED not in names else SHIPPED}, crop margin {margin}")
        for r, subset in ((1, "all"), (2, "heldout")):
            for name in names:
                steps = list(result["models"][name]["margins"][margin])
                vals = [_ious(result, name, margin, s, g_max, subset) for s in steps]
                errs = [clustered_se(v, _tiles(result, subset)) for v in vals]
                axes[r, c].errorbar([int(s) for s in steps], [v.mean() for v in vals],
                                    yerr=[np.nan if e is None else e for e in errs], marker="o", capsize=3, label=name)
            axes[r, c].set_xscale("log")
            axes[r, c].set_xlabel("DDIM steps")
            axes[r, c].set_title(f"G={g_max}, margin {margin}, {'all families' if subset == 'all' else 'held-out family'} "
                                 "(± SE clustered by tile)", fontsize=9)
        for r in range(3):
            axes[r, c].set_ylabel("mean IoU")
            axes[r, c].legend(fontsize=8)
    save_figure(fig, path, dpi=80)


def merge_earlier(result: dict[str, Any], paths: list[Path], renames: dict[str, str], run_now: set[str]) -> dict[str, Any]:
    """Put the models of earlier runs' JSONs (same prompts) into ``result``, renamed by ``renames``,
    except those in ``run_now``; later files win. Returns the last JSON read (or {})."""
    old: dict[str, Any] = {}
    for path in paths:
        old = json.loads(path.read_text())
        same = [old.get(k) == result[k] for k in ("styles", "n_per_style", "eval_seed", "generations", "prompt_styles")]
        if not all(same) or old.get("prompt_tiles", result["prompt_tiles"]) != result["prompt_tiles"]:
            raise SystemExit(f"--merge {path}: other prompts or generations; rerun all models together")
        kept = {renames.get(k, k): v for k, v in old["models"].items()}
        result["models"].update({k: v for k, v in kept.items() if k not in run_now})
        result["previous"] = list(dict.fromkeys(result.get("previous", []) + [renames.get(p, p) for p in old.get("previous", [])]))
        base = old.get("base") or SHIPPED
        result["base"] = renames.get(base, base)
    return old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help=f"one model file, named {SHIPPED!r} (default: the bundled model)")
    ap.add_argument("--model", dest="models", action="append", default=[], help="NAME=PATH (repeatable)")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="keep this earlier JSON's models that are not run now (same prompts; repeatable, later files win)")
    ap.add_argument("--rename", action="append", default=[], help="OLD=NEW: rename a model kept by --merge")
    ap.add_argument("--previous", action="append", default=[], help="NAME of an earlier bundled version (repeatable)")
    ap.add_argument("--describe", action="append", default=[],
                    help="NAME=MODEL: describe a kept model anew from its file (a path or git:<rev>:<path>; no sampling), "
                         "e.g. a record measured with a bundled file that is now in git history (repeatable)")
    ap.add_argument("--base", help=f"NAME the variants and controls were trained from (default {SHIPPED!r})")
    ap.add_argument("--render-only", action="store_true", help="run no model: rewrite the outputs from --merge's JSON")
    ap.add_argument("--styles", nargs="*", default=list(STYLES))
    ap.add_argument("--n-per-style", type=int, default=8)
    ap.add_argument("--margins", type=float, nargs="*", default=[0.15, 0.5])
    ap.add_argument("--steps", type=int, nargs="*", default=[1, 2, 3, 5, 10, 25])
    ap.add_argument("--generations", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = [s.partition("=")[::2] for s in args.models]
    if args.render_only:
        if not args.merge:
            raise SystemExit("--render-only needs --merge JSON")
        specs = []
    elif args.model or not specs:
        specs.insert(0, (SHIPPED, args.model or str(bundled_model_path())))
    items = synthetic_items(args.styles, args.n_per_style, tile_size=256, eval_seed=EVAL_SEED)
    result: dict[str, Any] = {
        "styles": args.styles, "heldout": [s for s in args.styles if s in HELDOUT_STYLES],
        "n_per_style": args.n_per_style, "n_prompts": len(items), "eval_seed": EVAL_SEED,
        "generations": args.generations, "threads": args.threads, "prompt_styles": [it.group for it in items],
        "prompt_tiles": prompt_tiles(items), "models": {},
    }
    old = merge_earlier(result, args.merge, dict(r.partition("=")[::2] for r in args.rename), {n for n, _ in specs})
    result["previous"] = list(dict.fromkeys(result.get("previous", []) + args.previous))
    result["base"] = args.base or result.get("base") or SHIPPED
    tmp = tempfile.TemporaryDirectory()
    for name, path in (d.partition("=")[::2] for d in args.describe):
        if name not in result["models"] or name in {n for n, _ in specs}:
            raise SystemExit(f"--describe {name}: not a model kept from --merge")
        file = resolve_model(path, Path(tmp.name))
        result["models"][name]["info"] = describe(Segmenter.from_checkpoint(file, device="cpu"), path, file)
    for name, path in specs:
        file = resolve_model(path, Path(tmp.name))
        seg = Segmenter.from_checkpoint(file, device="cpu")
        entry: dict[str, Any] = {"info": describe(seg, path, file), "margins": {}}
        for margin in args.margins:
            print(f"{name}: margin {margin}", flush=True)
            prepared = prepare_items(items, EvalProtocol("expansion", margin=margin), seg.input_size)
            entry["margins"][f"{margin:g}"] = sweep(seg, prepared, args.steps, args.generations, args.seed)
        result["models"][name] = entry
    tmp.cleanup()
    result["models"] = dict(sorted(result["models"].items(), key=lambda kv: kv[0] != SHIPPED))
    result["load_average"] = list(os.getloadavg()) if specs else old.get("load_average", [])
    write_outputs(args.out, "steps-generations", result, render, plot)
    if args.out.resolve() == (ROOT / "docs").resolve():
        from benchmarks.report.cli import main as report_main

        report_main(["--render-only"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
