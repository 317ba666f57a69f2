"""The evaluation report (benchmarks/report); the U-Net baseline is tested in test_unet_baseline.py.

The whole report runs once in its ``--smoke`` size on a small real model (module fixture);
the other tests check the pieces against hand-computed values.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.report import PARTS
from benchmarks.report.cli import _verdict_digest, main, select_parts
from segdiff_core.data.synthetic import HELDOUT_STYLES, TRAIN_STYLES
from benchmarks.report.common import (
    PROTOCOL,
    SMOKE,
    EnsembleBank,
    ReplaySource,
    ReportError,
    MIN_VERDICT_TILES,
    judge,
    cluster_resamples,
    clustered_se,
    paired_by_tile,
    paired_difference,
    pm,
    tile_of,
    tile_verdict,
    seed_stats,
    standard_error,
)
from benchmarks.report.steps import linear_fit
from segdiff_core.checkpoint import save_model
from segdiff_core.evaluation.runner import prepare_items, run_method, synthetic_items
from segdiff_core.segmenter import Segmenter
from segdiff_core.training.config import merge_run_config
from segdiff_core.training.data import PairBatches, SyntheticSource, step_rng
from segdiff_core.training.sources import build_sources
from tests.helpers import random_model

PART_NAMES = [p.NAME for p in PARTS]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    model, config = random_model()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, model, config, {"steps": 0, "trained_on": "random weights (test)"})
    return path


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, model_file) -> Path:
    """The whole report, smoke sizes, written under a temporary root."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    code = main(["--smoke", "--model", str(model_file), "--output-root", str(root), "--threads", "1", "--quiet"])
    assert code == 0
    return root


def _load(root: Path, name: str) -> dict:
    return json.loads((root / "evaluation" / f"{name}.json").read_text())


# ------------------------------------------------------------------------------ the whole report
def test_smoke_report_writes_every_part_and_a_complete_document(smoke: Path) -> None:
    for name in [*PART_NAMES, "meta"]:
        assert (smoke / "evaluation" / f"{name}.json").is_file(), name
    text = (smoke / "evaluation.md").read_text()
    assert "{{" not in text and "Not run yet" not in text
    assert "Smoke run" in text
    for i, part in enumerate(PARTS, 1):
        assert f"## {i}. {part.TITLE}" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 10
    for link in links:
        assert (smoke / link).is_file(), link
        assert (smoke / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every summary row carries a verdict the scripts computed
    summary = text[text.index("## Summary"):text.index("## 1.")]
    rows = [ln for ln in summary.splitlines() if ln.startswith("| ")][2:]
    verdicts = [re.search(r"\*\*([a-z/]+)\*\* \|$", ln.rstrip()).group(1) for ln in rows]
    assert rows and set(verdicts) <= {"agrees", "disagrees", "inconclusive", "n/a"}


def test_smoke_generations_json_has_the_requested_grid_and_counts(smoke: Path) -> None:
    data = _load(smoke, "generations")
    assert data["settings"]["generations"] == list(SMOKE.generations)
    assert [s["seed"] for s in data["per_seed"]] == list(SMOKE.seeds)
    for s in data["per_seed"]:
        for g in SMOKE.generations:
            splits = s["by_generations"][str(g)]
            # one prompt per style: the training styles in-distribution, the rest held out
            assert splits["in-distribution"]["n"] == len(TRAIN_STYLES)
            assert splits["held-out"]["n"] == len(HELDOUT_STYLES)
    agg = data["aggregate"]["in-distribution"]
    ious = [s["by_generations"]["2"]["in-distribution"]["iou"] for s in data["per_seed"]]
    assert agg["by_generations"]["2"]["iou"]["mean"] == pytest.approx(np.mean(ious))
    assert agg["by_generations"]["2"]["iou"]["std"] == pytest.approx(np.std(ious, ddof=1))
    assert data["seconds"] > 0 and data["sizes"] == "smoke"


def test_smoke_conditioning_trains_each_variant_once_on_replayed_batches(smoke: Path) -> None:
    data = _load(smoke, "conditioning")
    assert set(data["variants"]) == {"sum", "concat", "raw_concat", "deep1", "deep3", "deep5"}
    steps = SMOKE.small_train_steps
    # the first training draws its batches, the five others replay them
    assert data["settings"]["generated_draws"] == steps
    assert data["settings"]["replayed_draws"] == 5 * steps
    assert all(not v["reused"] and v["steps"] == steps for v in data["variants"].values())
    assert data["settings"]["model"]["channel_mult"] == [1, 1, 2, 2, 2, 2]


def test_smoke_baselines_match_parameter_counts_and_score_the_same_prompts(smoke: Path) -> None:
    data = _load(smoke, "baselines")
    assert abs(data["settings"]["parameter_ratio"] - 1.0) <= 0.2
    names = {m: v["splits"]["in-distribution"]["per_sample"]["name"] for m, v in data["methods"].items()}
    assert len({tuple(v) for v in names.values()}) == 1  # every method scored the same prompts
    d = data["comparisons"]["unet"]["in-distribution"]
    a = data["methods"]["segdiff-small"]["splits"]["in-distribution"]["per_sample"]["iou"]
    b = data["methods"]["unet"]["splits"]["in-distribution"]["per_sample"]["iou"]
    assert d["mean"] == pytest.approx(np.mean(np.subtract(a, b)))


def test_smoke_speed_and_sampler_record_positive_times(smoke: Path) -> None:
    speed = _load(smoke, "speed")
    cells = {(r["generations"], r["steps"]) for r in speed["grid"]}
    assert cells == {(g, s) for g in SMOKE.speed_generations for s in SMOKE.speed_steps}
    assert all(r["seconds"] > 0 for r in speed["grid"])
    assert all(p["first_step_seconds"] <= p["full_seconds"] for p in speed["preview"])
    assert [m["generations"] for m in speed["memory"]] == list(SMOKE.memory_generations)
    assert all(m["peak_mib"] > 0 for m in speed["memory"])
    sampler = _load(smoke, "sampler")
    for case in sampler["cases"].values():
        assert case["ratio"] == pytest.approx(case["times"]["seq_recompute"] / case["times"]["batched_cached"])


def test_smoke_review_scores_every_candidate_and_keeps_the_model_folder_clean(smoke: Path, model_file: Path) -> None:
    from benchmarks.report.review import CANDIDATES
    from segdiff_core.scoring import ScoreCalibration, calibration_path

    data = _load(smoke, "review")
    assert set(data["results"]) == set(CANDIDATES) and data["chosen"] in CANDIDATES
    n_prompts = len(SMOKE.styles) * SMOKE.review_n_per_style * len(SMOKE.review_protocols)
    assert len(data["objects"]) == n_prompts
    assert all(0.0 <= o["iou"] <= 1.0 for o in data["objects"])
    # each object keeps its tile (the unit of the bootstrap); every row counts its tiles
    assert all(o["tile"] == tile_of(o["name"]) for o in data["objects"])
    chosen = data["chosen"]
    for key, q in data["results"][chosen].items():
        split, protocol = key.split("/")
        scored = [o for o in data["objects"] if o["split"] == split and o["protocol"] == protocol
                  and o["predicted"][chosen] is not None and math.isfinite(o["predicted"][chosen])]
        assert (q["n"], q["n_tiles"]) == (len(scored), len({o["tile"] for o in scored}))
    cal = ScoreCalibration.from_dict(data["calibration"])
    assert cal.features == tuple(CANDIDATES[data["chosen"]])
    assert not calibration_path(model_file).exists()  # smoke runs never write beside the model
    rt = data["rethreshold"]
    assert rt["objects"] == SMOKE.rethreshold_objects and rt["equals_fresh_threshold"] and rt["undo_restores"]


def test_render_only_regenerates_the_same_document(smoke: Path) -> None:
    md = smoke / "evaluation.md"
    before = md.read_text()
    md.unlink()
    assert main(["--render-only", "--output-root", str(smoke), "--quiet"]) == 0
    assert md.read_text() == before


def test_render_only_without_results_says_what_to_run(tmp_path: Path) -> None:
    assert main(["--render-only", "--output-root", str(tmp_path), "--quiet"]) == 0
    text = (tmp_path / "evaluation.md").read_text()
    assert text.count("Not run yet") == len(PARTS) and "{{" not in text


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["--parts", "1", "--smoke", "--model", str(tmp_path / "nope.pt"), "--output-root", str(tmp_path), "--quiet"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------ pieces
def test_select_parts_by_number_and_name_in_report_order() -> None:
    assert [p.NAME for p in select_parts("7,1,uncertainty")] == ["generations", "uncertainty", "sampler"]
    assert [p.NAME for p in select_parts("8,review")] == ["review"]
    assert len(select_parts(None)) == len(select_parts("all")) == 8
    for bad in ("0", "9", "speedy", ","):
        with pytest.raises(ReportError):
            select_parts(bad)


def test_judge_verdicts() -> None:
    assert judge(0.05, 0.01, +1) == "agrees"
    assert judge(-0.05, 0.01, +1) == "disagrees"
    assert judge(0.015, 0.01, +1) == "inconclusive"  # within 2 x noise
    assert judge(-0.05, 0.01, -1) == "agrees"
    assert judge(0.05, None, +1) == "inconclusive"  # a single seed: no noise estimate
    assert judge(None, 0.01, +1) == "n/a"
    assert judge(float("nan"), 0.01, +1) == "n/a"


def test_statistics_helpers_against_hand_values() -> None:
    d = paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert d == {"mean": 2.0, "se": pytest.approx(1.0 / math.sqrt(3)), "n": 3}
    assert paired_difference([1.0], [0.5])["se"] is None
    with pytest.raises(ReportError):
        paired_difference([1.0, 2.0], [1.0])
    s = seed_stats([1.0, 3.0, None, float("nan")])
    assert s == {"mean": 2.0, "std": pytest.approx(math.sqrt(2.0)), "n": 2}
    assert seed_stats([4.0]) == {"mean": 4.0, "std": None, "n": 1}
    assert standard_error(2.0, 4) == 1.0 and standard_error(None, 4) is None and standard_error(1.0, 1) is None


def test_clustered_se_counts_groups_not_copies() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=12)
    plain = x.std(ddof=1) / math.sqrt(x.size)
    assert clustered_se(x, list(range(12))) == pytest.approx(plain)  # one sample per group: the usual SE
    copies = np.repeat(x, 4)  # each sample four times, inside its own group (prompts of one tile alike)
    assert clustered_se(copies, np.repeat(np.arange(12), 4)) == pytest.approx(plain)
    assert copies.std(ddof=1) / math.sqrt(copies.size) < 0.6 * plain  # what the per-sample SE would claim
    assert clustered_se(x, ["a"] * 12) is None  # one group: no spread between groups
    with pytest.raises(ReportError):
        clustered_se(x, [0, 1])
    d = paired_difference(copies + 1.0, copies, groups=np.repeat(np.arange(12), 4))
    assert d["mean"] == pytest.approx(1.0) and d["se"] == pytest.approx(0.0, abs=1e-12) and d["groups"] == 12
    assert pm(0.0123, 0.004, "+.1f", 100) == "+1.2 ± 0.4"
    assert pm(0.5, None) == "0.5"
    fit = linear_fit([1, 2, 3], [3, 5, 7])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(1.0) and fit["r2"] == pytest.approx(1.0)
    assert linear_fit([1, 2], [1, 3])["r2"] is None  # two points always lie on a line
    assert linear_fit([1, 3, 5], [1, 1, 4])["r2"] == pytest.approx(0.75)


def test_report_parts_pair_prompts_by_name_and_cluster_their_errors_by_tile() -> None:
    """Parts 3 and 4 (conditioning, baselines): the paired differences of two methods' records
    are clustered by the tile in each prompt's name, and get no verdict over fewer than 4 tiles."""
    from benchmarks.report import baselines

    assert tile_of("ihc/tile0003#12") == "ihc/tile0003" and tile_of("plain") == "plain"
    rng = np.random.default_rng(0)
    tile_gain = rng.normal(0.02, 0.03, 6)  # the gain varies between tiles, barely within a tile
    names = [f"he/tile{t:04d}#{k}" for t in range(6) for k in range(5)]
    b = rng.uniform(0.6, 0.9, len(names))
    a = b + np.repeat(tile_gain, 5) + rng.normal(0, 0.001, len(names))
    d = paired_by_tile({"name": names, "iou": list(a)}, {"name": names, "iou": list(b)})
    per_prompt = paired_difference(a, b)
    assert d["groups"] == 6 and d["n"] == 30 and d["se"] > 1.5 * per_prompt["se"]
    assert tile_verdict(d) == judge(d["mean"], d["se"], +1)
    few = paired_by_tile({"name": names[:10], "iou": list(a[:10] + 0.2)}, {"name": names[:10], "iou": list(b[:10])})
    assert few["groups"] == 2 < MIN_VERDICT_TILES and judge(few["mean"], few["se"], +1) == "agrees"
    assert tile_verdict(few) == "inconclusive"  # +20 points, but two tiles cannot tell
    with pytest.raises(ReportError, match="same prompts"):
        paired_by_tile({"name": names[::-1], "iou": list(a)}, {"name": names, "iou": list(b)})
    split = {"per_sample": {"name": names, "iou": list(a)}}
    methods = {"segdiff-small": {"splits": {"in-distribution": split}},
               **{m: {"splits": {"in-distribution": {"per_sample": {"name": names, "iou": list(b)}}}} for m in ("unet", "otsu")}}
    compared = baselines.comparisons(methods)
    assert compared["unet"]["in-distribution"] == d == compared["otsu"]["in-distribution"]


def test_cluster_resamples_draw_whole_groups() -> None:
    from collections import Counter

    groups = ["b", "a", "b", "c", "a", "b"]
    size = Counter(groups)
    resamples = list(cluster_resamples(groups, 50, seed=1))
    assert len(resamples) == 50
    for idx in resamples:
        times = Counter(idx.tolist())
        draws = {g: Counter(groups[i] for i in idx)[g] // size[g] for g in size}
        assert sum(draws.values()) == 3  # three groups drawn with replacement
        # every sample comes exactly as often as its group was drawn: groups are never split
        assert all(times.get(i, 0) == draws[g] for i, g in enumerate(groups))
    assert any(len(idx) != len(groups) for idx in resamples)  # resample sizes follow the drawn groups
    assert list(cluster_resamples(["a"] * 4, 10)) == []  # one group: no spread between groups
    assert all(len(idx) == 5 for idx in cluster_resamples(range(5), 20))  # one sample per group: plain bootstrap


def test_review_spread_resamples_tiles_so_copies_inside_a_tile_do_not_shrink_it() -> None:
    from benchmarks.report.review import _quality

    rng = np.random.default_rng(5)
    iou = rng.uniform(0.3, 1.0, 40)
    unc = 1.0 - iou + rng.normal(0.0, 0.15, 40)  # a noisy score
    one = _quality(unc, iou, np.arange(40), 300, seed=2)  # one object per tile
    tiles = np.repeat(np.arange(40), 5)  # every object five times, inside its own tile
    copies = _quality(np.repeat(unc, 5), np.repeat(iou, 5), tiles, 300, seed=2)
    per_object = _quality(np.repeat(unc, 5), np.repeat(iou, 5), np.arange(200), 300, seed=2)  # the old bootstrap
    assert copies["auroc_worst"] == pytest.approx(one["auroc_worst"])
    assert (copies["n"], copies["n_tiles"], one["n_tiles"]) == (200, 40, 40)
    # the same tiles are drawn, so the clustered spread of the copies is the spread of the originals
    assert copies["auroc_worst_std"] == pytest.approx(one["auroc_worst_std"], rel=1e-9)
    assert copies["auroc_worst_ci"] == pytest.approx(one["auroc_worst_ci"], rel=1e-9)
    # an object bootstrap takes the copies for independent objects and claims a much smaller spread
    assert per_object["auroc_worst_std"] < 0.6 * copies["auroc_worst_std"]


def test_review_verdict_needs_the_whole_interval_and_enough_tiles() -> None:
    from benchmarks.report.review import TARGET_AUROC, _verdict

    row = {"auroc_worst": 0.9, "n_tiles": 50}
    assert _verdict({**row, "auroc_worst_ci": [TARGET_AUROC + 0.01, 0.95]}) == "agrees"
    assert _verdict({**row, "auroc_worst_ci": [0.70, TARGET_AUROC - 0.01]}) == "disagrees"
    assert _verdict({**row, "auroc_worst_ci": [TARGET_AUROC - 0.01, 0.95]}) == "inconclusive"
    assert _verdict({**row, "auroc_worst_ci": None}) == "inconclusive"
    few = {**row, "n_tiles": MIN_VERDICT_TILES - 1, "auroc_worst_ci": [0.95, 0.99]}
    assert _verdict(few) == "inconclusive"  # a tight interval from three tiles proves nothing


def test_replay_source_repeats_the_wrapped_stream_exactly() -> None:
    inner = SyntheticSource(("fluorescence", "he"), tile_size=64, objects_per_tile=2)
    replay = ReplaySource(inner)
    first = replay.draw(step_rng(3, 0), 3)
    rng = step_rng(3, 0)
    again = replay.draw(rng, 3)
    plain_rng = step_rng(3, 0)
    plain = inner.draw(plain_rng, 3)
    assert (replay.misses, replay.hits) == (1, 1)
    assert all(a[0] is b[0] for a, b in zip(first, again))  # replayed, not regenerated
    for (im, m, box), (im2, m2, box2) in zip(again, plain):
        np.testing.assert_array_equal(im, im2)
        np.testing.assert_array_equal(m, m2)
        assert box == box2
    assert rng.random() == plain_rng.random()  # the generator is left where the source leaves it


def test_replayed_pair_batches_equal_the_unwrapped_ones() -> None:
    run = merge_run_config("test", None, {"data.tile_size": 64, "data.objects_per_tile": 2, "train.batch_size": 2})
    src, _, _ = build_sources(run.data)
    replay = ReplaySource(src)
    args = (run.segdiff.preprocess, run.data, 2, 0)
    for _ in range(2):  # first generated, then replayed
        x, y = PairBatches(replay, *args, stop=1)[0]
        x0, y0 = PairBatches(src, *args, stop=1)[0]
        assert torch.equal(x, x0) and torch.equal(y, y0)
    assert replay.hits == 1


def test_ensemble_bank_nests_generations_and_matches_segment_batch(model_file: Path) -> None:
    seg = Segmenter.from_checkpoint(model_file, device="cpu")
    items = prepare_items(synthetic_items(("fluorescence", "ihc"), 1, tile_size=96), PROTOCOL, seg.input_size)
    bank = EnsembleBank(seg, items, generations=3, steps=2, sampler="ddim", seed=5, batch_images=8)
    patch = items[1].model_inputs[0]
    samples = bank.samples(patch)
    assert samples.shape == (3, seg.input_size, seg.input_size)
    p2 = bank.prediction(patch, 2)
    np.testing.assert_allclose(p2.probability, samples[:2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(p2.uncertainty, samples[:2].std(0), rtol=1e-6)
    direct = seg.segment_batch([it.model_inputs[0] for it in items], seg.inference.replace(generations=3, steps=2, sampler="ddim"),
                               seed=5, keep_generations=True)
    np.testing.assert_allclose(bank.prediction(patch, 3).probability, direct[1].probability, rtol=1e-6)
    result = run_method(items, bank.method(2))
    assert result.n == 2 and result.settings["generations"] == 2
    with pytest.raises(ReportError):
        bank.prediction(patch, 4)
    with pytest.raises(ReportError):
        bank.samples(np.zeros_like(patch))


def test_verdict_digest_names_every_disagreement():
    from benchmarks.report.common import Claim

    claims = [
        Claim("a", "up", "+1", "agrees"),
        Claim("b", "x improves.", "x got worse by 2", "disagrees"),
        Claim("c", "up", "+0.1 ± 1", "inconclusive"),
        Claim("d", "(no claim)", "3x", "n/a"),
    ]
    text = _verdict_digest(claims)
    assert "Of 4 rows, 1 agrees with the paper, 1 disagrees and 1 is inconclusive" in text
    assert "2 agree with the paper, 1 disagrees and 0 are inconclusive" in _verdict_digest(claims[:1] * 2 + claims[1:2])
    assert "1 are measurements the paper makes no claim about" in text
    assert "- b: the paper says x improves; we measured x got worse by 2." in text
    assert "disagree with the paper:" not in _verdict_digest(claims[:1])


# --------------------------------------------------------------------------------------------
# benchmarks/bench_steps.py: errors clustered by the tile each prompt was cut from
# --------------------------------------------------------------------------------------------


def _steps_record(one_step: list[float], two_steps: list[float], tiles: list[str]) -> dict:
    """A bench_steps JSON for a 'shipped' model, one margin, 1 and 2 DDIM steps at G = 1 and 2."""
    styles = [t.partition("/")[0] for t in tiles]
    runs = {s: {"seconds_per_prompt_at_max_g": 0.1, "iou": {"1": v, "2": v}} for s, v in (("1", one_step), ("2", two_steps))}
    return {"styles": list(dict.fromkeys(styles)), "heldout": ["ihc"], "n_per_style": len(tiles) // 2, "n_prompts": len(tiles),
            "eval_seed": 1, "generations": [1, 2], "threads": 1, "prompt_styles": styles, "prompt_tiles": tiles,
            "load_average": [1.0, 1.0, 1.0],
            "models": {"shipped": {"info": {"model": "m.pt", "default": "2 x 1 ddim"}, "margins": {"0.15": runs}}}}


def test_bench_steps_errors_and_verdicts_are_clustered_by_tile() -> None:
    from benchmarks.bench_steps import render

    # two prompts per tile, alike within their tile: the per-prompt error counts each tile twice
    tiles = [t for t in ("fluorescence/tile0000", "fluorescence/tile0001", "ihc/tile0000", "ihc/tile0001") for _ in (0, 1)]
    one = np.linspace(0.6, 0.8, 8)
    gain = np.repeat([0.05, 0.0, 0.03, 0.0], 2)
    result = _steps_record(one.tolist(), (one + gain).tolist(), tiles)
    per_prompt_se = 100 * gain.std(ddof=1) / math.sqrt(gain.size)
    assert 100 * gain.mean() > 2 * per_prompt_se  # by prompts, 2 steps would be "better"
    clustered = clustered_se(100 * gain, tiles)
    assert 100 * gain.mean() < 2 * clustered and clustered > 1.4 * per_prompt_se
    page = render(result)
    line = next(x for x in page.splitlines() if "margin 0.15, all families" in x and "own 1 step" in x)
    assert f"2 steps +{100 * gain.mean():.1f} ± {clustered:.1f} (no different)" in line
    assert "n=8 from 4 tiles" in line
    assert "held out, G=2 (n=4 from 2 tiles)" in page and "the 8 prompts come from 4 tiles" in page
    assert "come from 2 tiles**: its clustered errors rest on 1 degree of freedom" in page  # two held-out tiles: said on the page, and no verdict over them
    held = next(x for x in page.splitlines() if "margin 0.15, held-out family" in x and "own 1 step" in x)
    assert held.endswith(f"± {clustered_se(100 * gain[4:], tiles[4:]):.1f} (no verdict: 2 tiles).")
    cell = f"{100 * one.mean():.1f} ± {clustered_se(100 * one, tiles):.1f}"
    assert f"| 1 | {cell} | {cell} |" in page
    # one sample per tile: the clustered error is the per-prompt one and the verdict flips to "better"
    result["prompt_tiles"] = [f"{t}#{k}" for k, t in enumerate(tiles)]
    assert f"2 steps +{100 * gain.mean():.1f} ± {per_prompt_se:.1f} (better)" in render(result)


def test_bench_steps_render_only_stores_the_tiles_and_describes_a_kept_model_anew(tmp_path: Path, model_file: Path) -> None:
    from benchmarks.bench_steps import EVAL_SEED, main as steps_main
    from segdiff_core.checkpoint import file_sha256

    items = synthetic_items(["fluorescence", "ihc"], 3, tile_size=256, eval_seed=EVAL_SEED)
    tiles = [it.name.rpartition("#")[0] for it in items]
    old = _steps_record([0.7] * 6, [0.6] * 6, ["?"] * 6)  # written before tiles were stored
    old.update(styles=["fluorescence", "ihc"], n_per_style=3, eval_seed=EVAL_SEED, prompt_styles=[it.group for it in items])
    del old["prompt_tiles"]
    old["models"]["shipped"]["info"] = {"model": "segdiff_core/models/nuclei-cpu.pt"}  # the file has changed since
    src = tmp_path / "old.json"
    src.write_text(json.dumps(old))
    args = ["--render-only", "--merge", str(src), "--styles", "fluorescence", "ihc", "--n-per-style", "3", "--generations", "1", "2",
            "--rename", "shipped=v4", "--previous", "v4", "--out", str(tmp_path / "out")]
    assert steps_main([*args, "--describe", f"v4={model_file}"]) == 0
    new = json.loads((tmp_path / "out" / "steps-generations.json").read_text())
    assert new["prompt_tiles"] == tiles and len(set(tiles)) < len(tiles)
    assert list(new["models"]) == ["v4"] and new["previous"] == ["v4"]
    info = new["models"]["v4"]["info"]
    assert info["model"] == str(model_file) and info["sha256"] == file_sha256(model_file)
    assert info["threshold"] == Segmenter.from_checkpoint(model_file, device="cpu").inference.threshold
    assert f"from {len(set(tiles))} tiles" in (tmp_path / "out" / "steps-generations.md").read_text()
    with pytest.raises(SystemExit, match="not a model kept"):
        steps_main([*args, "--describe", f"v9={model_file}"])
    new["prompt_tiles"] = new["prompt_tiles"][::-1]  # other prompts under the same styles: not paired
    src.write_text(json.dumps(new))
    with pytest.raises(SystemExit, match="other prompts"):
        steps_main(args)
