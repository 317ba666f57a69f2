"""Packaging and discovery: the one manifest, npe2 validation, napari finding the widget, the
sample data and the labels writer, and the docs screenshots from a real rendered viewer."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_segdiff._sample_data import fluorescence_nuclei, he_nuclei
from napari_segdiff._writer import write_labels_tiff
from segdiff_core.data.readers import LabelsWriteError, labels_dtype, write_pair
from tests.conftest_napari import configure, model_file  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-segdiff"


def test_single_manifest_file_is_exposed_by_the_package():
    link = ROOT / "napari_segdiff" / "napari.yaml"
    assert link.is_symlink() and os.readlink(link) == "../napari.yaml"
    assert link.resolve() == (ROOT / "napari.yaml").resolve()
    from importlib import resources

    packaged = resources.files("napari_segdiff") / "napari.yaml"
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()


def test_npe2_discovers_the_plugin_and_its_contributions():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover(include_npe1=False)
    manifest = pm.get_manifest(PLUGIN)
    contrib = manifest.contributions
    assert [w.display_name for w in contrib.widgets] == ["SegDiff annotator", "SegDiff fine-tune", "SegDiff review"]
    assert {s.key for s in contrib.sample_data} == {"fluorescence", "he"}
    writer, _path = pm.get_writer("out.tif", ["labels"], PLUGIN)
    assert writer is not None and writer.command == "napari-segdiff.write_labels_tiff"
    widget_cmd = pm.get_command(contrib.widgets[0].command)
    from napari_segdiff._widget import AnnotatorWidget

    assert widget_cmd.exec is not None and widget_cmd.python_name.endswith(":AnnotatorWidget")
    assert AnnotatorWidget.__init__.__code__.co_varnames[1] == "napari_viewer"


def test_npe2_validate_passes():
    npe2 = Path(sys.executable).with_name("npe2")
    proc = subprocess.run(
        [str(npe2), "validate", PLUGIN, "--imports"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_sample_data_is_seeded_and_sized():
    (img, meta, kind), (truth, tmeta, tkind) = fluorescence_nuclei()
    assert kind == "image" and tkind == "labels" and meta["rgb"] is False
    assert img.shape == (512, 512) and truth.shape == (512, 512) and truth.max() > 10
    again = fluorescence_nuclei()[0][0]
    assert np.array_equal(img, again)
    (rgb, rmeta, _), _ = he_nuclei(size=128)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8 and rmeta["rgb"] is True


def test_labels_writer(tmp_path):
    data = np.zeros((3, 20, 30), np.int32)
    data[1, 2:5, 3:9] = 300
    (path,) = write_labels_tiff(str(tmp_path / "stack"), data, {})
    assert path.endswith("stack.tif")
    back = tifffile.imread(path)
    assert back.dtype == np.uint16 and np.array_equal(back, data)
    assert labels_dtype(np.array([[0, 255]])) == np.uint8
    assert labels_dtype(np.array([[0, 70000]])) == np.uint32
    with pytest.raises(LabelsWriteError, match=">= 0"):
        write_labels_tiff(str(tmp_path / "neg.tif"), np.array([[-1, 2]]), {})
    with pytest.raises(LabelsWriteError, match="integers"):
        write_labels_tiff(str(tmp_path / "f.tif"), np.zeros((2, 2), float), {})
    with pytest.raises(LabelsWriteError, match="differ in size"):
        write_pair(tmp_path, "x", np.zeros((4, 4)), np.zeros((4, 5), int))


@pytest.mark.gui
def test_napari_opens_samples_docks_widget_and_saves_labels(make_napari_viewer, tmp_path):
    import napari

    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "he")
    assert [layer.name for layer in layers] == ["nuclei (H&E)", "nuclei (H&E) ground truth"]
    assert layers[0].rgb and layers[0].data.shape == (512, 512, 3)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "SegDiff annotator")
    assert widget.image_combo.value is layers[0]
    truth = layers[1]
    out = tmp_path / "truth.tif"
    written = napari.save_layers(str(out), [truth], plugin=PLUGIN)
    assert written == [str(out)]
    assert np.array_equal(tifffile.imread(out), truth.data)


@pytest.mark.gui
def test_screenshots_of_the_running_plugin(make_napari_viewer, model_file, tmp_path):
    """The code that writes the user guide's screenshots, on a real shown window."""
    from napari_segdiff._screenshots import SHOTS, boxes_around_objects, capture_walkthrough
    from napari_segdiff._widget import AnnotatorWidget

    viewer = make_napari_viewer(show=True)
    (img, meta, _), (truth, _tm, _) = fluorescence_nuclei(size=192)
    image = viewer.add_image(img, **meta)
    widget = AnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget)
    configure(widget, model_file, steps=12, generations=2)
    rects = boxes_around_objects(truth, 2)
    assert len(rects) == 2
    paths = capture_walkthrough(viewer, widget, tmp_path, rects, canvas_only=True, settle_time=0.1)
    assert set(paths) == set(SHOTS)
    import imageio.v3 as iio

    pictures = {name: iio.imread(p) for name, p in paths.items()}
    for name, pic in pictures.items():
        assert pic.ndim == 3 and pic[..., :3].std() > 5, f"{name} screenshot is blank"
    # each shot shows its layer in its colours over the gray image (R = G = B)
    def count(pic, kind):
        r, g, b = (pic[..., i].astype(int) for i in range(3))
        mask = {
            "cyan": (g - r > 40) & (b - r > 40) & (b >= g),  # live preview (not the green boxes)
            "orange": (r - b > 60) & (r >= g),  # probability
            "magenta": (r - g > 40) & (b - g > 40),  # uncertainty
        }[kind]
        return int(mask.sum())

    assert count(pictures["preview"], "cyan") > 20 and count(pictures["box"], "cyan") == 0
    assert count(pictures["probability"], "orange") > 20 and count(pictures["uncertainty"], "orange") == 0
    assert count(pictures["uncertainty"], "magenta") > 20 and count(pictures["probability"], "magenta") == 0
    canvas = viewer.screenshot(canvas_only=True)
    assert canvas[..., :3].std() > 5
    assert image in viewer.layers and widget.controller.labels_layer.data.max() == 2
