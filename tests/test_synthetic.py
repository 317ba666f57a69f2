"""Tests for segdiff_core.data.synthetic (the synthetic nuclei generator)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from segdiff_core.data.synthetic._brightfield import jpeg
from segdiff_core.data.synthetic._layout import finalise_labels
from segdiff_core.data.synthetic import (
    HELDOUT_STYLES,
    STYLES,
    TRAIN_STYLES,
    SyntheticError,
    SyntheticTile,
    generate_tile,
    iter_tiles,
    make_dataset,
    parameter_table,
    style_parameter_names,
    tile_rng,
)

SIZE = 128
SEEDS = range(6)


def assert_valid_labels(labels: np.ndarray, shape: tuple[int, int]) -> None:
    """ids 1..N consecutive, each one non-empty 4-connected component."""
    assert labels.dtype == np.int32
    assert labels.shape == shape
    n = int(labels.max())
    assert labels.min() == 0
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1) if (labels == 0).any() else np.arange(1, n + 1))
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        assert sl is not None, f"label {lab} is empty"
        _, ncomp = ndi.label(labels[sl] == lab)  # default structure: 4-connectivity
        assert ncomp == 1, f"label {lab} has {ncomp} pieces"


# --------------------------------------------------------------------------------------
# constants and API shape
# --------------------------------------------------------------------------------------
def test_style_constants_partition_styles():
    assert set(TRAIN_STYLES) | set(HELDOUT_STYLES) == set(STYLES)
    assert not set(TRAIN_STYLES) & set(HELDOUT_STYLES)
    assert {"fluorescence", "he"} <= set(TRAIN_STYLES)
    assert len(HELDOUT_STYLES) >= 1


@pytest.mark.parametrize("style", STYLES)
def test_dtype_shape_and_labels_per_style(style):
    for seed in SEEDS:
        tile = generate_tile(style, SIZE, seed)
        assert isinstance(tile, SyntheticTile)
        assert tile.style == style
        if style in ("fluorescence", "confocal"):
            assert tile.image.shape == (SIZE, SIZE)
            assert tile.image.dtype in (np.uint8, np.uint16)
            assert tile.image.dtype == (np.uint16 if tile.params["bit_depth"] == 16 else np.uint8)
        else:
            assert tile.image.shape == (SIZE, SIZE, 3)
            assert tile.image.dtype == np.uint8
        assert_valid_labels(tile.labels, (SIZE, SIZE))
        assert tile.n_objects >= 1
        assert tile.params["n_objects"] == tile.n_objects
        json.dumps(tile.params)  # parameters are plain JSON data


def test_non_square_size():
    tile = generate_tile("he", (96, 160), 3)
    assert tile.image.shape == (96, 160, 3)
    assert_valid_labels(tile.labels, (96, 160))


# --------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
def test_same_seed_same_tile_different_seed_different_tile(style):
    a = generate_tile(style, 96, 42)
    b = generate_tile(style, 96, 42)
    c = generate_tile(style, 96, np.random.default_rng(42))
    d = generate_tile(style, 96, 43)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.params == b.params
    np.testing.assert_array_equal(a.image, c.image)
    np.testing.assert_array_equal(a.labels, c.labels)
    assert a.image.shape != d.image.shape or not np.array_equal(a.image, d.image)
    assert not np.array_equal(a.labels, d.labels)


def test_generator_is_consumed_so_successive_tiles_differ():
    rng = np.random.default_rng(5)
    a = generate_tile("fluorescence", 64, rng)
    b = generate_tile("fluorescence", 64, rng)
    assert not np.array_equal(a.labels, b.labels)


def test_no_global_rng_use():
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    generate_tile("he", 64, 1)
    generate_tile("fluorescence", 64, 1)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


# --------------------------------------------------------------------------------------
# appearance: contrast of nuclei against background has the right sign
# --------------------------------------------------------------------------------------
def test_fluorescence_nuclei_brighter_than_background():
    for seed in SEEDS:
        tile = generate_tile("fluorescence", SIZE, seed)
        img = tile.image.astype(float)
        fg = tile.labels > 0
        bg = ~ndi.binary_dilation(fg, iterations=3)
        assert img[fg].mean() > img[bg].mean(), f"seed {seed}: nuclei not brighter"


@pytest.mark.parametrize("style", ["he", "ihc"])
def test_brightfield_nuclei_darker_than_background(style):
    for seed in SEEDS:
        tile = generate_tile(style, SIZE, seed)
        img = tile.image.astype(float)
        fg = tile.labels > 0
        bg = ~ndi.binary_dilation(fg, iterations=3)
        assert img[fg].sum(axis=-1).mean() < img[bg].sum(axis=-1).mean(), f"seed {seed}: nuclei not darker"


def test_he_nuclei_bluer_than_background():
    for seed in SEEDS:
        tile = generate_tile("he", SIZE, seed)
        img = tile.image.astype(float)
        fg = tile.labels > 0
        bg = ~ndi.binary_dilation(fg, iterations=3)
        blue_minus_red = img[..., 2] - img[..., 0]
        assert blue_minus_red[fg].mean() > blue_minus_red[bg].mean() + 5, f"seed {seed}"


def test_ihc_positive_nuclei_are_brown():
    tile = generate_tile("ihc", SIZE, 2, positive_fraction=1.0, architecture="epithelium", dab=1.2, hematoxylin=0.5)
    img = tile.image.astype(float)
    fg = tile.labels > 0
    # DAB absorbs blue most: brown nuclei have red > blue
    assert (img[..., 0] - img[..., 2])[fg].mean() > 10
    neg = generate_tile("ihc", SIZE, 2, positive_fraction=0.0, architecture="epithelium")
    img = neg.image.astype(float)
    assert (img[..., 2] - img[..., 0])[neg.labels > 0].mean() > 0


def test_fluorescence_16bit_camera_offset_and_low_dynamic_range():
    tile = generate_tile("fluorescence", SIZE, 7, bit_depth=16, camera_offset=100.0, max_adu=2000.0)
    img = tile.image
    assert img.dtype == np.uint16
    bg = ~ndi.binary_dilation(tile.labels > 0, iterations=4)
    assert 60 < np.median(img[bg]) < 600  # sits near the camera offset, not at 0
    assert np.percentile(img, 99) < 4000  # a few thousand of 65535, like real cameras


# --------------------------------------------------------------------------------------
# variety
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", TRAIN_STYLES)
def test_variety_across_seeds(style):
    counts, areas, means = [], [], []
    for seed in range(10):
        tile = generate_tile(style, SIZE, seed)
        counts.append(tile.n_objects)
        areas.append(np.bincount(tile.labels.ravel())[1:].mean())
        means.append(tile.image.mean())
    assert max(counts) >= 2 * min(counts)
    assert max(areas) >= 2 * min(areas)
    assert np.std(means) > 1.0


def test_fluorescence_draws_both_bit_depths_and_he_several_architectures():
    depths = {generate_tile("fluorescence", 32, s).image.dtype for s in range(12)}
    assert depths == {np.dtype(np.uint8), np.dtype(np.uint16)}
    archs = {generate_tile("he", 32, s).params["architecture"] for s in range(15)}
    assert len(archs) >= 3


def test_nuclei_touch_and_occlude_when_crowded():
    tile = generate_tile("fluorescence", SIZE, 3, coverage=0.6, overlap=0.6, radius_range=(6, 10))
    lab = tile.labels
    # touching: some 4-neighbour pixel pairs carry two different non-zero labels
    horiz = (lab[:, 1:] != lab[:, :-1]) & (lab[:, 1:] > 0) & (lab[:, :-1] > 0)
    assert horiz.sum() > 20
    assert_valid_labels(lab, (SIZE, SIZE))


def test_some_nuclei_cut_by_border():
    tile = generate_tile("fluorescence", SIZE, 0, coverage=0.4)
    lab = tile.labels
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    assert np.unique(border[border > 0]).size >= 1


# --------------------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------------------
def test_override_count_and_size():
    tile = generate_tile(
        "fluorescence", SIZE, 11, n_nuclei=5, radius_range=(6.0, 7.0), mean_radius=6.5,
        overlap=1.3, irregularity=0.0, max_elongation=1.0, mitotic_fraction=0.0, debris=0,
        label_convention="geometric",  # the drawn shapes; half-maximum labels depend on the blur
    )
    assert tile.n_objects == 5
    assert tile.params["n_nuclei"] == 5
    assert tile.params["radius_range"] == [6.0, 7.0]
    lab = tile.labels
    interior = set(range(1, 6)) - set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])))
    areas = np.bincount(lab.ravel())
    for i in interior:  # discs of radius 6..7 px: area pi r^2 within pixel tolerance
        assert np.pi * 5.5**2 <= areas[i] <= np.pi * 7.5**2


@pytest.mark.parametrize("depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_override_bit_depth(depth, dtype):
    assert generate_tile("fluorescence", 48, 0, bit_depth=depth).image.dtype == dtype


@pytest.mark.parametrize("arch", ["epithelium", "stroma", "mixed", "gland", "lymphoid"])
def test_override_he_architecture(arch):
    tile = generate_tile("he", 96, 4, architecture=arch)
    assert tile.params["architecture"] == arch
    assert_valid_labels(tile.labels, (96, 96))
    assert tile.n_objects >= 1


def test_stroma_nuclei_are_elongated():
    tile = generate_tile("he", SIZE, 8, architecture="stroma", lymphocyte_fraction=0.0)
    from skimage.measure import regionprops

    props = [p for p in regionprops(tile.labels) if p.area > 20]
    ratios = [p.axis_major_length / max(p.axis_minor_length, 1e-6) for p in props]
    assert np.median(ratios) > 1.8


def test_unknown_override_is_rejected_with_valid_names():
    with pytest.raises(SyntheticError, match="unknown override.*radius_range"):
        generate_tile("he", 64, 0, radius_rnage=(3, 5))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bit_depth": 12},
        {"radius_range": (10, 5)},
        {"radius_range": "big"},
        {"coverage": 3.0},
        {"n_nuclei": 2.5},
        {"context": "slide"},
    ],
)
def test_bad_override_values_raise(kwargs):
    with pytest.raises(SyntheticError):
        generate_tile("fluorescence", 64, 0, **kwargs)


@pytest.mark.parametrize(
    "args, match",
    [
        (("phase", 64, 0), "unknown style"),
        (("he", 8, 0), "too small"),
        (("he", (64, 64, 3), 0), "size must be"),
        (("he", 64, "seed"), "rng must be"),
        (("he", 64, -1), "non-negative"),
    ],
)
def test_bad_arguments_raise_value_errors(args, match):
    with pytest.raises(SyntheticError, match=match):
        generate_tile(*args)
    assert issubclass(SyntheticError, ValueError)


def test_style_parameter_names():
    names = style_parameter_names("fluorescence")
    assert {"radius_range", "bit_depth", "coverage", "n_nuclei", "camera_offset"} <= set(names)
    assert "n_objects" not in names
    assert {"architecture", "eosin", "hematoxylin"} <= set(style_parameter_names("he"))
    assert "positive_fraction" in style_parameter_names("ihc")


@pytest.mark.parametrize("style", STYLES)
def test_every_table_row_is_drawn_and_nothing_else(style):
    """The table is the whole truth: a tile reports exactly the table's parameters (both bit depths)."""
    for depth in ((8, 16) if style in ("fluorescence", "confocal") else (None,)):
        extra = {"bit_depth": depth} if depth else {}
        params = set(generate_tile(style, 48, 0, **extra).params) - {"n_objects"}
        assert params == set(style_parameter_names(style))


def test_docs_list_every_parameter_as_the_tables_say():
    """docs/synthetic-data.md carries each style's table as scripts/make_synthetic_examples.py writes it."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "synthetic-data.md").read_text()
    for style in STYLES:
        assert parameter_table(style) in doc, f"docs/synthetic-data.md is out of date for {style}: rerun the script"


def test_override_is_checked_against_the_table_bounds():
    with pytest.raises(SyntheticError, match="hematoxylin"):
        generate_tile("he", 48, 0, hematoxylin=6.0)
    with pytest.raises(SyntheticError, match="mean_radius"):
        generate_tile("fluorescence", 48, 0, radius_range=(5, 8), mean_radius=9.0)
    with pytest.raises(SyntheticError, match="radius_range"):
        generate_tile("fluorescence", 48, 0, radius_range=(5, 30))  # high end beyond half the tile


def _edge_levels(tile):
    """(inner-edge level, outer-edge level) of the single nucleus, relative to peak over background."""
    img = tile.image.astype(float)
    fg = tile.labels > 0
    bg = float(np.median(img[~ndi.binary_dilation(fg, iterations=12)]))
    peak = float(np.percentile(img[fg], 95)) - bg
    inner = fg & ~ndi.binary_erosion(fg)
    outer = ndi.binary_dilation(fg) & ~fg
    return (img[inner].mean() - bg) / peak, (img[outer].mean() - bg) / peak


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fluorescence_labels_follow_the_half_maximum(seed):
    quiet = dict(n_nuclei=1, radius_range=(14.0, 16.0), mean_radius=15.0, psf_sigma=2.5, halo_fraction=0.0,
                 defocus_fraction=0.0, global_blur=0.0, peak_photons=1e5, read_noise=0.0, texture=0.0,
                 nucleoli=0.0, chromocentres=0.0, rim_fraction=0.0, debris=0, cytoplasm=0.0, haze=0.02,
                 vignetting=0.0, gradient=0.0, bit_depth=16, mitotic_fraction=0.0)
    half = generate_tile("fluorescence", 96, seed, **quiet)
    geo = generate_tile("fluorescence", 96, seed, label_convention="geometric", **quiet)
    inner, outer = _edge_levels(half)
    assert inner >= 0.45 and outer <= 0.55, (inner, outer)  # the boundary straddles half max
    _, g_outer = _edge_levels(geo)
    assert g_outer < 0.3  # the geometric outline runs further out, in the tail of the blur
    assert (half.labels > 0).sum() < (geo.labels > 0).sum()


def test_widefield_and_confocal_optics_differ():
    wide = [generate_tile("fluorescence", 64, s).params for s in range(6)]
    conf = [generate_tile("confocal", 64, s).params for s in range(6)]
    assert all(p["halo_fraction"] == 0.0 for p in conf)
    assert any(p["halo_fraction"] > 0.0 for p in wide)
    assert max(p["psf_sigma"] for p in conf) <= 1.1 < max(p["psf_sigma"] for p in wide)


# --------------------------------------------------------------------------------------
# label clean-up and JPEG model (hand-computed cases)
# --------------------------------------------------------------------------------------
def test_finalise_labels_reassigns_fragments_and_drops_specks():
    lab = np.array(
        [
            [1, 1, 1, 2, 1, 0, 0],
            [1, 1, 1, 2, 1, 0, 3],
            [0, 0, 0, 2, 0, 0, 0],
            [0, 5, 5, 0, 0, 0, 0],
        ],
        dtype=np.int32,
    )
    out = finalise_labels(lab, min_area=2)
    expected = np.array(
        [
            [1, 1, 1, 2, 2, 0, 0],  # right piece of 1 joins the occluder 2 it touches
            [1, 1, 1, 2, 2, 0, 0],  # 1-px object 3 (< min_area, no neighbour) -> background
            [0, 0, 0, 2, 0, 0, 0],
            [0, 3, 3, 0, 0, 0, 0],  # 5 renumbered to 3
        ],
        dtype=np.int32,
    )
    np.testing.assert_array_equal(out, expected)


def test_jpeg_error_grows_as_quality_drops():
    rng = np.random.default_rng(0)
    img = np.clip(128 + 40 * ndi.gaussian_filter(rng.standard_normal((40, 56, 3)), (2, 2, 0)), 0, 255)
    err = {q: np.abs(jpeg(img, q) - img).mean() for q in (100, 75, 30)}
    assert err[100] < 1.5  # near lossless (only chroma subsampling + rounding)
    assert err[100] < err[75] < err[30]
    assert jpeg(img, 50).shape == img.shape


# --------------------------------------------------------------------------------------
# property test: any seed/size/style gives valid labels
# --------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    style=st.sampled_from(STYLES),
    seed=st.integers(0, 2**31),
    h=st.integers(24, 96),
    w=st.integers(24, 96),
)
def test_labels_always_valid(style, seed, h, w):
    tile = generate_tile(style, (h, w), seed)
    assert tile.image.shape[:2] == (h, w)
    assert_valid_labels(tile.labels, (h, w))


# --------------------------------------------------------------------------------------
# streaming and dataset writing
# --------------------------------------------------------------------------------------
def test_iter_tiles_cycles_styles_and_is_reproducible():
    tiles = list(iter_tiles(["fluorescence", "he"], n=4, size=48, seed=3))
    assert [t.style for t in tiles] == ["fluorescence", "he", "fluorescence", "he"]
    again = list(iter_tiles(["fluorescence", "he"], n=2, size=48, seed=3))
    for a, b in zip(tiles, again):
        np.testing.assert_array_equal(a.image, b.image)
    other = next(iter_tiles(["fluorescence"], n=1, size=48, seed=4))
    assert not np.array_equal(tiles[0].labels, other.labels)


def test_iter_tiles_unbounded_and_bad_arguments():
    stream = iter_tiles("he", n=None, size=32, seed=0)
    assert [next(stream).style for _ in range(3)] == ["he"] * 3
    with pytest.raises(SyntheticError):
        list(iter_tiles([], n=1))
    with pytest.raises(SyntheticError):
        list(iter_tiles("he", n=-1))
    with pytest.raises(SyntheticError):
        list(iter_tiles("he", n=1, seed=-5))


def test_make_dataset_writes_readable_tiffs(tmp_path):
    names = make_dataset(tmp_path / "ds", n_per_style=2, styles=("fluorescence", "he"), size=48, seed=9)
    assert names == ["fluorescence_00000", "fluorescence_00001", "he_00000", "he_00001"]
    stream = {s: list(iter_tiles(s, n=2, size=48, seed=9)) for s in ("fluorescence", "he")}
    for name in names:
        style, idx = name.rsplit("_", 1)
        img = tifffile.imread(tmp_path / "ds" / "images" / f"{name}.tif")
        mask = tifffile.imread(tmp_path / "ds" / "masks" / f"{name}.tif")
        ref = stream[style][int(idx)]
        np.testing.assert_array_equal(img, ref.image)
        np.testing.assert_array_equal(mask, ref.labels)
        assert mask.dtype == np.uint8  # the smallest type that holds the labels (readers.write_pair)
        assert_valid_labels(mask.astype(np.int32), (48, 48))
    manifest = json.loads((tmp_path / "ds" / "synthetic_manifest.json").read_text())
    assert [m["name"] for m in manifest] == names
    assert manifest[2]["style"] == "he" and "architecture" in manifest[2]["params"]


def test_make_dataset_rejects_bad_count(tmp_path):
    with pytest.raises(SyntheticError, match="n_per_style"):
        make_dataset(tmp_path, n_per_style=0)


def test_tile_rng_is_the_stream_of_iter_tiles():
    tile = next(iter_tiles("he", n=1, size=48, seed=5))
    again = generate_tile("he", 48, tile_rng(5, "he", 0))
    assert np.array_equal(tile.image, again.image)
