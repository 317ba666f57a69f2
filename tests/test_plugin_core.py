"""Qt-free parts of the plugin: settings, plane/box geometry, the run generator, the model cache.

No window is needed: napari's ViewerModel and layers are plain Python.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from napari.components import ViewerModel

from segdiff_core.config import InferenceConfig
from segdiff_core.data.boxes import Box

from napari_segdiff._controller import AnnotatorController, _ranges
from napari_segdiff._engine import (
    BoxJob,
    JobFinished,
    ModelCache,
    PlaneReader,
    RunRequest,
    RunStarted,
    StepUpdate,
    run_segmentation,
)
from napari_segdiff._geometry import PlaneSpec, PromptError, current_plane, shape_box
from napari_segdiff._settings import MODEL_THRESHOLD, AnnotatorSettings, SettingsError
from napari_segdiff._store import CONFIG_DIR_ENV, SettingsStore
from tests.conftest_napari import model_file, notes, rect  # noqa: F401 (fixtures)

# ------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------

DEFAULTS = InferenceConfig(generations=8, steps=10, sampler="ddim")


def test_inference_follows_model_defaults_unless_set():
    s = AnnotatorSettings()
    assert s.threshold == MODEL_THRESHOLD and s.inference_for(DEFAULTS, 100) == DEFAULTS  # the model's threshold
    assert s.inference_for(DEFAULTS.replace(threshold=0.7), 100).threshold == 0.7
    paper = s.replace(sampler="ddpm").inference_for(DEFAULTS, 100)
    assert (paper.sampler, paper.steps, paper.generations) == ("ddpm", 100, 8)
    assert s.replace(sampler="ddpm").inference_for(DEFAULTS, 50).steps == 50  # capped at T
    custom = s.replace(sampler="ddim", steps=25, generations=3, threshold=0.3).inference_for(DEFAULTS, 100)
    assert (custom.sampler, custom.steps, custom.generations, custom.threshold) == ("ddim", 25, 3, 0.3)
    assert s.replace(seed=-1).run_seed(1234) == 1234 and s.replace(seed=7).run_seed(1234) == 7


def test_crop_protocols():
    s = AnnotatorSettings()
    assert s.crop_protocol().margin == pytest.approx(0.15)
    assert s.replace(protocol="tight").crop_protocol().margin == 0.0
    assert s.replace(protocol="custom", margin=0.4).crop_protocol().margin == pytest.approx(0.4)
    assert s.replace(protocol="windows").crop_protocol().margin == 0.0


@pytest.mark.parametrize(
    "change, match",
    [
        ({"device": "tpu"}, "unknown device 'tpu'; use one of"),
        ({"threshold": 1.0}, r"threshold must be a finite number in \[0, 0.99\]"),
        ({"steps": -1}, r"steps must be an int in \[0, 1000\]"),
        ({"generations": 2.5}, "generations must be an int"),
        ({"protocol": "loose"}, "unknown crop 'loose'"),
        ({"window_scale": 0}, r"window scale must be a finite number in \[0.05, 64\]"),
        ({"overwrite": "yes"}, "overwrite existing labels must be True or False"),
    ],
)
def test_bad_settings_are_rejected_with_a_clear_message(change, match):
    with pytest.raises(SettingsError, match=match):
        AnnotatorSettings().replace(**change)


def test_settings_round_trip_through_json_and_bad_saved_values_keep_their_default(tmp_path):
    s = AnnotatorSettings(model_source="file", model_path=tmp_path / "m.pt", protocol="custom", margin=0.4,
                          steps=25, generations=3, seed=-1, overwrite=True, uncertainty="entropy")
    back, problems = AnnotatorSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and problems == []
    saved = {**s.to_dict(), "threshold": 7, "steps": "many", "model_path": 5, "from_the_future": 1}
    back, problems = AnnotatorSettings.from_dict(saved)
    assert (back.threshold, back.steps, back.model_path) == (MODEL_THRESHOLD, 0, None)  # defaults kept
    assert (back.generations, back.margin, back.overwrite) == (3, 0.4, True)  # good values read
    assert len(problems) == 3 and any("threshold" in p for p in problems)
    assert AnnotatorSettings.from_dict(["not", "a", "table"]) == (AnnotatorSettings(), [
        "saved settings are a list, not a table of values"])


def test_settings_store_saves_atomically_and_survives_bad_files(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "cfg"))
    store = SettingsStore()
    assert store.path == tmp_path / "cfg" / "annotator.json"
    assert store.load() == (AnnotatorSettings(), [])  # nothing saved yet
    s = AnnotatorSettings(steps=40, sampler="ddpm")
    assert store.save(s) is None
    assert store.load() == (s, []) and [p.name for p in store.path.parent.iterdir()] == ["annotator.json"]

    store.path.write_text('{"format": "napari-segdiff-settings", "settings": {"steps": 99999}}')
    settings, problems = store.load()
    assert settings == AnnotatorSettings() and problems == ["saved setting ignored: steps must be an int in [0, 1000], got 99999"]

    store.path.write_bytes(b'{"format": "napari-segdiff-sett')  # truncated
    settings, problems = store.load()
    assert settings == AnnotatorSettings() and "unreadable" in problems[0] and "annotator.json.bad" in problems[0]
    assert not store.path.exists() and store.path.with_name("annotator.json.bad").read_bytes().endswith(b"sett")

    blocked = SettingsStore(tmp_path / "a-file")
    (tmp_path / "a-file").write_text("")  # the folder is a file: cannot write
    assert "cannot save the settings" in blocked.save(s)


# ------------------------------------------------------------------------------------------
# planes and boxes
# ------------------------------------------------------------------------------------------


def test_plane_spec_reads_writes_and_indexes_transposed_planes():
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    plane = PlaneSpec(3, (2, 1), ((0, 1),), (4, 3))  # rows = axis 2, cols = axis 1, slice 1
    assert plane.transpose
    np.testing.assert_array_equal(plane.read(arr), arr[1].T)
    out = np.zeros_like(arr)
    plane.write(out, (slice(1, 3), slice(0, 2)), np.array([[1, 2], [3, 4]]))
    assert out[1, 0, 1] == 1 and out[1, 1, 1] == 2 and out[1, 0, 2] == 3 and out[1, 1, 2] == 4
    assert out.sum() == 10
    idx = plane.indices(np.array([3]), np.array([2]))
    assert [int(i[0]) for i in idx] == [1, 2, 3]


def test_current_plane_follows_the_viewer():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((5, 30, 40)), scale=(2.0, 1.0, 1.0))
    viewer.dims.set_current_step(0, 3)
    plane = current_plane(viewer, image)
    assert plane.axes == (1, 2) and plane.fixed == ((0, 3),) and plane.shape == (30, 40)
    viewer.dims.order = (0, 2, 1)  # transposed view
    plane = current_plane(viewer, image)
    assert plane.axes == (2, 1) and plane.shape == (40, 30)
    viewer.dims.ndisplay = 3
    with pytest.raises(PromptError, match="switch the viewer to 2D"):
        current_plane(viewer, image)


def test_shape_box_adds_half_a_pixel_and_uses_the_box_slice():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((4, 50, 60)), scale=(1.0, 0.5, 2.0), translate=(0, 10, -5))
    plane = current_plane(viewer, image)
    shapes = viewer.add_shapes(
        [rect(10, 20, 30, 40, z=2)], shape_type="rectangle",
        scale=(1.0, 0.5, 2.0), translate=(0, 10, -5),
    )
    box, own = shape_box(shapes, 0, image, plane)
    assert box == Box(10.5, 20.5, 30.5, 40.5)
    assert own.fixed == ((0, 2),)
    # a 2D Shapes layer in world coordinates (identity transform) maps through the world
    world = viewer.add_shapes([rect(15.0, 35.0, 25.0, 75.0)], shape_type="rectangle")
    box2, own2 = shape_box(world, 0, image, plane)
    assert box2 == Box(10.5, 20.5, 30.5, 40.5) and own2 == plane
    ell = viewer.add_shapes([np.array([[20, 20], [5, 5]])], shape_type="ellipse")
    with pytest.raises(PromptError, match="is an ellipse; SegDiff needs rectangles"):
        shape_box(ell, 0, image, plane)
    far = viewer.add_shapes([rect(500, 500, 600, 600)], shape_type="rectangle")
    with pytest.raises(PromptError, match="outside the image"):
        shape_box(far, 0, image, plane)


# ------------------------------------------------------------------------------------------
# the run generator
# ------------------------------------------------------------------------------------------


def _request(model_path, image, boxes, **settings) -> RunRequest:
    s = AnnotatorSettings(model_source="file", model_path=model_path, device="cpu", **settings)
    reader = PlaneReader(image, PlaneSpec(2, (0, 1), (), image.shape[:2]))
    jobs = tuple(BoxJob(i, b, reader, image.shape[:2]) for i, b in enumerate(boxes))
    return RunRequest(model_path, s, jobs, seed=0, preview_interval=0.1)


class FakeClock:
    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_run_yields_every_step_and_bounds_the_preview_rate(model_file):
    image = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    req = _request(model_file, image, [Box(10, 10, 30, 30), Box(20, 5, 40, 25)], steps=8, generations=2, batch_boxes=1)
    cache = ModelCache()
    events = []
    run = run_segmentation(req, cache, clock=FakeClock(0.03))  # 30 ms per step
    while True:
        try:
            events.append(next(run))
        except StopIteration as stop:
            summary = stop.value
            break
    assert summary.error is None and summary.finished == (0, 1)
    assert isinstance(events[0], RunStarted) and events[0].total_steps == 16
    steps = [e for e in events if isinstance(e, StepUpdate)]
    assert [s.done for s in steps] == list(range(1, 17))
    previews = [s for s in steps if s.preview is not None]
    # at most one preview per 0.1 s of (fake) time: every 4th step at 30 ms per step
    assert [s.done for s in previews] == [1, 5, 9, 13]
    for p in previews:
        assert p.preview.values.min() >= 0 and p.preview.values.max() <= 1
    results = [e for e in events if isinstance(e, JobFinished)]
    assert [r.job_id for r in results] == [0, 1]
    # a box's last step never carries a preview (its result follows at once): a one-step run has none
    one = list(run_segmentation(_request(model_file, image, [Box(10, 10, 30, 30)], steps=1, generations=2), cache))
    assert [isinstance(e, StepUpdate) and e.preview is None for e in one] == [False, True, False]
    # crop of Box(10, 10, 30, 30) at 15 %: 23 px centred on 20 -> [8.5, 31.5) -> pixels 8..30
    assert results[0].region == (slice(8, 31), slice(8, 31))
    assert results[0].probability.shape == (23, 23)
    np.testing.assert_array_equal(results[0].mask, results[0].probability > 0.5)
    assert cache.loads == 1


def _events(run):
    events = []
    with pytest.raises(StopIteration) as stop:
        while True:
            events.append(next(run))
    return events, stop.value.value


def test_a_batch_of_boxes_is_sampled_together_with_a_preview_of_every_crop(model_file):
    image = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    boxes = [Box(4, 4, 20, 20), Box(30, 30, 50, 50), Box(40, 6, 58, 24)]
    req = _request(model_file, image, boxes, steps=4, generations=2, batch_boxes=2)
    events, summary = _events(run_segmentation(req, ModelCache(), clock=FakeClock(1.0)))
    assert summary.error is None and summary.finished == (0, 1, 2)
    steps = [e for e in events if isinstance(e, StepUpdate)]
    # boxes 0 and 1 together (4 steps of 2 box-steps), then box 2 alone
    assert [(s.job_number, s.batch, s.done) for s in steps] == [(0, 2, 2), (0, 2, 4), (0, 2, 6), (0, 2, 8),
                                                                (2, 1, 9), (2, 1, 10), (2, 1, 11), (2, 1, 12)]
    assert [s.preview is not None for s in steps] == [True, True, True, False] * 2  # none at a last step
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("JobFinished") == 5 and kinds[5:7] == ["JobFinished", "JobFinished"]  # after the batch
    results = [e for e in events if isinstance(e, JobFinished)]
    assert [r.batch_done for r in results] == [False, True, True]
    # the batch preview covers both crops: values inside each, nothing far outside them
    patch = steps[0].preview
    full = np.zeros((64, 64), np.float32)
    full[patch.region] = patch.values
    for r in results[:2]:
        assert full[r.region].max() > 0
    assert not full[58:, 58:].any()
    # the first box of a batch gets the same noise as a one-box run with the run's seed (the
    # batched network differs only by float rounding)
    (one,) = [e for e in _events(run_segmentation(_request(model_file, image, boxes[:1], steps=4, generations=2),
                                                  ModelCache()))[0] if isinstance(e, JobFinished)]
    np.testing.assert_allclose(one.probability, results[0].probability, atol=1e-4)


def test_closing_the_run_cancels_it_before_any_result(model_file):
    image = np.zeros((32, 32), np.float32)
    req = _request(model_file, image, [Box(4, 4, 20, 20)], steps=20, generations=1)
    run = run_segmentation(req, ModelCache())
    first = [next(run) for _ in range(4)]
    run.close()
    assert not any(isinstance(e, JobFinished) for e in first)
    with pytest.raises(StopIteration):
        next(run)


def test_model_cache_reloads_only_when_file_or_device_changes(model_file, tmp_path):
    cache = ModelCache()
    a = cache.get(model_file, "cpu")
    assert cache.get(model_file, "cpu") is a and cache.get(model_file, "auto") is a  # auto = cpu here
    assert cache.loads == 1
    copy = tmp_path / "copy.pt"
    copy.write_bytes(model_file.read_bytes())
    b = cache.get(copy, "cpu")
    assert b is not a and cache.loads == 2
    import os

    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was retrained
    assert cache.get(copy, "cpu") is not b and cache.loads == 3


def test_model_cache_reads_the_score_calibration_once_per_file_version(model_file, tmp_path):
    from segdiff_core.scoring import ScoreCalibration, calibration_path, file_sha256

    import os

    model = tmp_path / "m.pt"
    model.write_bytes(model_file.read_bytes())
    cache = ModelCache()
    assert cache.calibration(model) is None  # no calibration file: the score is the agreement
    cal_file = calibration_path(model)
    cal = ScoreCalibration(("agreement",), (1.0,), 0.0, (0.5,), (0.1,), model_sha256=file_sha256(model))
    cal.save(cal_file)
    first = cache.calibration(model)  # the new file is seen
    assert isinstance(first, ScoreCalibration) and cache.calibration(model) is first  # then cached
    st = model.stat()
    model.write_bytes(model.read_bytes() + b"\0")  # the model changed: its calibration no longer fits
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.calibration(model) is None


def test_failures_end_the_run_with_a_message(model_file, tmp_path):
    image = np.zeros((32, 32), np.float32)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 10)
    req = _request(bad, image, [Box(4, 4, 20, 20)])
    run = run_segmentation(req, ModelCache())
    with pytest.raises(StopIteration) as stop:
        next(run)
    assert "bad.pt" in stop.value.value.error and stop.value.value.finished == ()
    two = np.zeros((32, 32, 2), np.float32)  # 2 channels cannot feed a 3-channel model
    run = run_segmentation(_request(model_file, two, [Box(4, 4, 20, 20)], steps=2), ModelCache())
    events = []
    with pytest.raises(StopIteration) as stop:
        while True:
            events.append(next(run))
    assert "expects 3" in stop.value.value.error and not any(isinstance(e, JobFinished) for e in events)


# ------------------------------------------------------------------------------------------
# controller details
# ------------------------------------------------------------------------------------------


def test_controller_without_image_or_boxes_explains(model_file, notes):
    viewer = ViewerModel()
    c = AnnotatorController(viewer)
    c.update_settings(model_source="file", model_path=model_file)
    assert c.prepare_run("newest") is None
    viewer.add_image(np.zeros((20, 20)))
    c.set_image_layer(viewer.layers[0])
    assert c.prepare_run("newest") is None  # no box yet: a boxes layer is made for the user
    assert c.prompts_layer is not None and c.prompts_layer.mode == "add_rectangle"
    seen = [m for _sev, m in notes]
    assert any("no image layer" in m for m in seen) and any("no box to segment" in m for m in seen)
    assert not c.update_settings(threshold=3.0) and c.settings.threshold == MODEL_THRESHOLD
    c.close()


def test_ranges():
    assert _ranges([5, 3, 4, 8, 10, 11]) == "3-5, 8, 10-11"
    assert _ranges([1]) == "1"


def test_a_labels_layer_that_would_not_fit_in_memory_is_refused_before_allocating(model_file, notes):
    import dask.array as da

    from napari_segdiff._controller import available_bytes

    free = available_bytes()
    if free is None:
        pytest.skip("no MemAvailable on this system")
    depth = int(free // (4 * 512 * 512)) + 10  # int32 labels of this stack exceed the free memory
    viewer = ViewerModel()
    stack = da.zeros((depth, 512, 512), dtype=np.uint8, chunks=(1, 512, 512))
    image = viewer.add_image(stack, contrast_limits=(0, 1))
    c = AnnotatorController(viewer)
    c.update_settings(model_source="file", model_path=model_file, device="cpu")
    c.set_image_layer(image)
    c.ensure_prompts_layer().add_rectangles(np.array([[0, 10, 10], [0, 10, 40], [0, 40, 40], [0, 40, 10]], float))
    assert c.prepare_run("newest") is None
    assert any("needs about" in m and "nothing was made" in m for _s, m in notes), notes
    assert c.labels_layer is None and len(viewer.layers) == 2
    c.close()


def test_a_run_never_changes_torchs_thread_count(model_file):
    """Threads are set once per process (configure_torch_threads), never from the worker."""
    import torch

    from napari_segdiff._engine import gui_torch_threads

    before = torch.get_num_threads()
    image = np.zeros((32, 32), np.float32)
    run = run_segmentation(_request(model_file, image, [Box(4, 4, 20, 20)], steps=3), ModelCache())
    seen = []
    with pytest.raises(StopIteration):
        while True:
            next(run)
            seen.append(torch.get_num_threads())
    assert seen and set(seen) == {before}
    assert gui_torch_threads(2) == 1 and gui_torch_threads(8) == 7 and gui_torch_threads(1) == 1


def test_a_box_reads_only_its_crop_of_a_huge_lazy_image(model_file):
    """A 200000 x 200000 dask image (40 GB if read): one box reads a few chunks only."""
    import dask.array as da

    huge = da.ones((200_000, 200_000), dtype=np.uint8, chunks=(512, 512)) * np.uint8(90)
    plane = PlaneSpec(2, (0, 1), (), huge.shape)
    box = Box(100_010, 150_020, 100_040, 150_050)
    s = AnnotatorSettings(model_source="file", model_path=model_file, device="cpu", steps=2, generations=1)
    windows = s.replace(protocol="windows")
    for settings in (s, windows):
        req = RunRequest(model_file, settings, (BoxJob(0, box, PlaneReader(huge, plane), huge.shape),), seed=0)
        run = run_segmentation(req, ModelCache())
        events = []
        with pytest.raises(StopIteration) as stop:
            while True:
                events.append(next(run))
        assert stop.value.value.error is None
        (result,) = [e for e in events if isinstance(e, JobFinished)]
        rows, cols = result.region
        assert rows.stop - rows.start < 64 and cols.stop - cols.start < 64  # maps cover the crop


def test_map_layers_grow_in_blocks_and_write_in_place_within_them():
    """A map layer covers the written crops rounded out to MAP_BLOCK pixels: a second box in
    the same block is written in place (no new data, no move); a far box grows the data."""
    from napari.layers import Image

    from napari_segdiff._layers import MAP_BLOCK, make_map_layer, map_origin, write_map

    image = Image(np.zeros((1000, 3000), np.uint8), scale=(0.5, 2.0), translate=(10.0, -5.0))
    plane = PlaneSpec(2, (0, 1), (), (1000, 3000))
    layer = make_map_layer(image, "probability")
    write_map(layer, image, plane, (slice(300, 323), slice(140, 163)), np.full((23, 23), 0.25, np.float32))
    assert MAP_BLOCK == 256 and map_origin(layer) == (256, 0) and layer.data.shape == (256, 256)
    np.testing.assert_allclose(layer.translate, (10.0 + 0.5 * 256, -5.0))
    data = layer.data
    write_map(layer, image, plane, (slice(330, 350), slice(200, 220)), np.full((20, 20), 0.75, np.float32))
    assert layer.data is data and map_origin(layer) == (256, 0)  # in place
    write_map(layer, image, plane, (slice(900, 910), slice(2990, 3000)), np.ones((10, 10), np.float32))
    assert map_origin(layer) == (256, 0) and layer.data.shape == (1000 - 256, 3000)  # clipped to the image
    full = np.zeros((1000, 3000), np.float32)
    full[256:, :] = layer.data
    assert full[300:323, 140:163].min() == 0.25 and full[330:350, 200:220].min() == 0.75
    assert full[900:910, 2990:3000].min() == 1.0
    assert np.count_nonzero(full) == 23 * 23 + 20 * 20 + 100
    preview = make_map_layer(image, "preview")  # reset: only the newest crop stays
    write_map(preview, image, plane, (slice(300, 323), slice(140, 163)), np.ones((23, 23), np.float32), reset=True)
    kept = preview.data
    write_map(preview, image, plane, (slice(330, 340), slice(200, 210)), np.ones((10, 10), np.float32), reset=True)
    assert preview.data is kept and np.count_nonzero(preview.data) == 100
    write_map(preview, image, plane, (slice(900, 910), slice(0, 10)), np.ones((10, 10), np.float32), reset=True)
    assert map_origin(preview) == (768, 0) and np.count_nonzero(preview.data) == 100
