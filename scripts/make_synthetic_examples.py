#!/usr/bin/env python
"""Write example figures of the synthetic nuclei generator.

For every style in ``segdiff_core.data.synthetic.STYLES`` this writes
``docs/images/synthetic/<style>.png``: a grid of tiles, each shown as the image and as the
image with the instance outlines drawn in yellow. It also writes
``docs/images/synthetic/overview.png`` with a few tiles per style side by side, and
``docs/images/synthetic/half-maximum.png``: one widefield nucleus with the geometric outline of
its drawn shape and the half-maximum outline the labels use, and the intensity profile across it.
It also writes each style's parameter table (from ``segdiff_core.data.synthetic.PARAMETERS``)
into docs/synthetic-data.md between the ``<!-- parameters -->`` markers; ``--tables-only`` does
only that.

Usage::

    python scripts/make_synthetic_examples.py [--out docs/images/synthetic] [--seed 0]
        [--n 8] [--size 256] [--tables-only]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segdiff_core.data.synthetic import (  # noqa: E402
    HELDOUT_STYLES,
    STYLES,
    SyntheticTile,
    generate_tile,
    iter_tiles,
    parameter_table,
)

MAX_PNG_BYTES = 500_000


def display_rgb(image: np.ndarray) -> np.ndarray:
    """Image -> float RGB in [0, 1] for display (single-channel images auto-contrasted)."""
    if image.ndim == 3:
        return image.astype(np.float32) / 255.0
    img = image.astype(np.float32)
    lo, hi = np.percentile(img, [0.5, 99.8])
    gray = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat(gray[..., None], 3, axis=-1)


def outline_overlay(image: np.ndarray, labels: np.ndarray, colour=(1.0, 0.9, 0.0)) -> np.ndarray:
    """Display RGB of ``image`` with the instance boundaries of ``labels`` painted in ``colour``."""
    rgb = display_rgb(image).copy()
    edges = find_boundaries(labels, mode="inner")
    rgb[edges] = colour
    return rgb


def caption(tile: SyntheticTile) -> str:
    p = tile.params
    bits = [f"n={tile.n_objects}", f"r~{p['mean_radius']:.0f}px"]
    for key in ("context", "architecture"):
        if key in p:
            bits.append(str(p[key]))
    if tile.image.ndim == 2:
        bits.append(str(tile.image.dtype))
    return "  ".join(bits)


def style_grid(style: str, n: int, size: int, seed: int, path: Path) -> None:
    tiles = list(iter_tiles(style, n, size, seed))
    cols = 4  # two tiles per row, image + outlines each
    rows = int(np.ceil(n / 2))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.55), dpi=100)
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.axis("off")
    for k, tile in enumerate(tiles):
        r, c = divmod(k, 2)
        axes[r, 2 * c].imshow(display_rgb(tile.image), interpolation="nearest")
        axes[r, 2 * c].set_title(caption(tile), fontsize=7)
        axes[r, 2 * c + 1].imshow(outline_overlay(tile.image, tile.labels), interpolation="nearest")
        axes[r, 2 * c + 1].set_title("instance outlines", fontsize=7)
    held = " (held out from training)" if style in HELDOUT_STYLES else ""
    fig.suptitle(f"synthetic style '{style}'{held}, seed {seed}", fontsize=10)
    fig.tight_layout()
    save(fig, path)


def overview(n: int, size: int, seed: int, path: Path) -> None:
    fig, axes = plt.subplots(len(STYLES), n, figsize=(n * 2.3, len(STYLES) * 2.45), dpi=100)
    axes = np.atleast_2d(axes)
    for r, style in enumerate(STYLES):
        for c, tile in enumerate(iter_tiles(style, n, size, seed + 1000)):
            ax = axes[r, c]
            ax.imshow(display_rgb(tile.image), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(style, fontsize=10)
    fig.suptitle("synthetic nuclei: one row per style", fontsize=10)
    fig.tight_layout()
    save(fig, path)


def half_maximum(seed: int, path: Path) -> None:
    """One blurred nucleus: geometric vs half-maximum outline, and the profile through its centre."""
    quiet = dict(n_nuclei=1, radius_range=(14.0, 16.0), mean_radius=15.0, psf_sigma=2.5, halo_fraction=0.25,
                 halo_sigma=6.0, defocus_fraction=0.0, global_blur=0.0, peak_photons=3000.0, texture=0.1,
                 debris=0, vignetting=0.0, gradient=0.0, bit_depth=16, mitotic_fraction=0.0)
    for seed in range(seed, seed + 100):  # the first seed whose nucleus lies away from the border
        half = generate_tile("fluorescence", 80, seed, **quiet)
        ys, xs = np.nonzero(half.labels)
        if ys.size and 25 < ys.mean() < 55 and 25 < xs.mean() < 55:
            break
    geo = generate_tile("fluorescence", 80, seed, label_convention="geometric", **quiet)
    img = half.image.astype(float)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), dpi=100)
    axes[0].imshow(img, cmap="gray", interpolation="nearest")
    axes[0].contour(geo.labels > 0, levels=[0.5], colors="tab:red", linewidths=1)
    axes[0].contour(half.labels > 0, levels=[0.5], colors="yellow", linewidths=1)
    axes[0].set_title("red: drawn shape (v1 labels); yellow: half maximum (v2)", fontsize=8)
    axes[0].axis("off")
    cy = int(round(np.mean(np.nonzero(half.labels)[0])))
    row = img[cy]
    axes[1].plot(row, color="k", label="intensity (row through the centre)")
    for lab, colour, name in ((geo.labels, "tab:red", "drawn shape"), (half.labels, "gold", "half maximum")):
        cols = np.flatnonzero(lab[cy] > 0)
        if cols.size:
            axes[1].axvspan(cols[0] - 0.5, cols[-1] + 0.5, color=colour, alpha=0.25, label=name)
    axes[1].set_xlabel("column (px)")
    axes[1].legend(fontsize=7)
    fig.suptitle("annotation convention of the fluorescence labels", fontsize=10)
    fig.tight_layout()
    save(fig, path)


def save(fig: plt.Figure, path: Path) -> None:
    """Save ``fig`` as a 256-colour palette PNG (noisy microscopy compresses badly as RGB)."""
    from PIL import Image  # matplotlib's own dependency

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    img = Image.fromarray(rgba[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                  dither=Image.Dither.NONE)
    img.save(path, optimize=True)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1000:.0f} kB)")
    if size > MAX_PNG_BYTES:
        raise SystemExit(f"{path} is {size} bytes, over the {MAX_PNG_BYTES} byte budget; use fewer tiles")


def write_parameter_tables(doc: Path) -> None:
    """Replace the text between the parameter markers of ``doc`` with every style's table."""
    start, end = "<!-- parameters:start -->", "<!-- parameters:end -->"
    text = doc.read_text()
    head, rest = text.split(start)
    tables = [f"#### `{style}`\n\n{parameter_table(style)}\n" for style in STYLES]
    doc.write_text(head + start + "\n" + "\n".join(tables) + rest[rest.index(end):])
    print(f"wrote the parameter tables into {doc}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=6, help="tiles per style figure (default 6)")
    ap.add_argument("--size", type=int, default=256, help="tile side in px (default 256)")
    ap.add_argument("--styles", nargs="*", default=list(STYLES))
    ap.add_argument("--tables-only", action="store_true", help="only write the parameter tables into the docs")
    args = ap.parse_args(argv)
    write_parameter_tables(Path(__file__).resolve().parents[1] / "docs" / "synthetic-data.md")
    if args.tables_only:
        return 0
    for style in args.styles:
        style_grid(style, args.n, args.size, args.seed, args.out / f"{style}.png")
    overview(4, args.size, args.seed, args.out / "overview.png")
    half_maximum(args.seed, args.out / "half-maximum.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
