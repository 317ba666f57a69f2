"""Synthetic nucleus microscopy tiles with exact instance labels, drawn from declared parameter tables.

Styles: ``"fluorescence"`` (widefield DAPI, ``(H, W)`` uint8/uint16, labels at half maximum),
``"confocal"`` (the same nuclei, confocal optics), ``"he"`` (H&E, ``(H, W, 3)`` uint8) and ``"ihc"``
(DAB, held out of training). Each style's :data:`PARAMETERS` table draws, checks and documents its
parameters (docs/synthetic-data.md). A seed reproduces a tile exactly. Labels are ``int32 (H, W)``,
0 background, objects ``1..N``, each one 4-connected region of at least ``min_area`` px.

>>> generate_tile("he", 256, rng=0, architecture="gland").image.shape
(256, 256, 3)
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdiff_core.validation import check_int, check_shape2

from ._brightfield import HE, IHC, render_brightfield
from ._fluorescence import CONFOCAL, FLUORESCENCE, render_fluorescence
from ._params import Param, Params, SyntheticError, markdown_table

__all__ = ["STYLES", "TRAIN_STYLES", "HELDOUT_STYLES", "PARAMETERS", "SyntheticError", "SyntheticTile",
           "generate_tile", "iter_tiles", "make_dataset", "style_parameter_names", "parameter_table",
           "tile_rng"]

STYLES: tuple[str, ...] = ("fluorescence", "he", "ihc", "confocal")  # appended only: the index seeds streams
TRAIN_STYLES: tuple[str, ...] = ("fluorescence", "he", "confocal")  # for training the bundled model
HELDOUT_STYLES: tuple[str, ...] = ("ihc",)  # kept out of training: generalisation to an unseen stain
MIN_SIZE = 16  # smallest tile side (px)
PARAMETERS: dict[str, tuple[Param, ...]] = {"fluorescence": FLUORESCENCE, "he": HE, "ihc": IHC,
                                            "confocal": CONFOCAL}
"""Each style's parameter table (name, draw distribution, override check, meaning)."""
_RENDERERS = {"fluorescence": render_fluorescence, "he": render_brightfield, "ihc": render_brightfield,
              "confocal": render_fluorescence}


@dataclass(frozen=True)
class SyntheticTile:
    """One synthetic tile.

    Attributes
    ----------
    image : ndarray
        ``(H, W)`` uint8/uint16 (fluorescence, confocal) or ``(H, W, 3)`` uint8 RGB (he, ihc).
    labels : ndarray
        ``(H, W)`` int32 instance labels, 0 = background, objects ``1..N``.
    style : str
        One of :data:`STYLES`.
    params : dict
        The parameters used (JSON-serialisable), overrides included, plus ``n_objects``.
    """

    image: np.ndarray
    labels: np.ndarray
    style: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_objects(self) -> int:
        """Number of labelled nuclei."""
        return int(self.labels.max(initial=0))


def _check(styles: str | Iterable[str], size: Any = MIN_SIZE) -> tuple[tuple[str, ...], tuple[int, int]]:
    """Validated styles and ``(h, w)`` size."""
    out = (styles,) if isinstance(styles, str) else tuple(styles)
    if not out:
        raise SyntheticError("styles is empty; pass at least one of " + ", ".join(STYLES))
    for s in out:
        if s not in STYLES:
            raise SyntheticError(f"unknown style {s!r}; choose one of {', '.join(STYLES)}")
    shape = check_shape2(size, "size", error=SyntheticError)
    if min(shape) < MIN_SIZE:
        raise SyntheticError(f"tile size {shape} is too small; use at least {MIN_SIZE} px per side")
    return out, shape


def generate_tile(style: str, size: int | tuple[int, int] = 256, rng: np.random.Generator | int | None = None,
                  **overrides: Any) -> SyntheticTile:
    """Draw one synthetic microscopy tile with its instance labels.

    Parameters
    ----------
    style : str
        One of :data:`STYLES`.
    size : int or (int, int)
        Tile side in px, or ``(height, width)``; at least :data:`MIN_SIZE`.
    rng : numpy.random.Generator, int or None
        A generator (consumed), a non-negative int seed (same seed, same tile) or None.
    **overrides
        Fixed values for parameters of the style's table (:data:`PARAMETERS`), e.g.
        ``radius_range=(6, 12)``, ``n_nuclei=20``, ``bit_depth=16``, ``architecture="gland"``.

    Returns
    -------
    SyntheticTile
        ``image`` ``(H, W)`` or ``(H, W, 3)``, ``labels`` ``(H, W)`` int32 with ids ``1..N``.

    Raises
    ------
    SyntheticError
        Unknown style or parameter name, bad size, seed or override value.
    """
    (style,), shape = _check(style, size)
    try:
        if isinstance(rng, (bool, float, str)):
            raise TypeError(rng)
        rng = np.random.default_rng(rng)
    except (TypeError, ValueError):
        raise SyntheticError("rng must be a numpy.random.Generator, a non-negative int seed or None, "
                             f"got {rng!r}") from None
    params = Params(style, PARAMETERS[style], shape, rng, overrides)
    image, labels = _RENDERERS[style](shape, params, style)
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.values.items()}
    values["n_objects"] = int(labels.max(initial=0))
    return SyntheticTile(image=image, labels=labels.astype(np.int32, copy=False), style=style, params=values)


def style_parameter_names(style: str) -> tuple[str, ...]:
    """Names of the parameters of ``style`` that :func:`generate_tile` accepts as overrides."""
    return tuple(sorted(row.name for row in PARAMETERS[_check(style)[0][0]]))


def parameter_table(style: str) -> str:
    """``style``'s parameter table as Markdown (written into docs/synthetic-data.md)."""
    return markdown_table(PARAMETERS[_check(style)[0][0]])


def tile_rng(seed: int, style: str, index: int) -> np.random.Generator:
    """Generator of tile ``index`` of ``style`` in a seeded stream of tiles.

    ``SeedSequence(entropy=seed, spawn_key=(STYLES.index(style), index))``: the one seeding rule
    of :func:`iter_tiles`, :func:`make_dataset` and the evaluation sets; a style gets the same
    tiles whichever other styles are drawn.
    """
    key = (STYLES.index(style), int(index))
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=key))


def iter_tiles(styles: str | Iterable[str] = TRAIN_STYLES, n: int | None = None,
               size: int | tuple[int, int] = 256, seed: int = 0, **overrides: Any) -> Iterator[SyntheticTile]:
    """Stream tiles, cycling through ``styles`` (tile ``k`` has style ``styles[k % len]``).

    The ``j``-th tile of a style is drawn from ``tile_rng(seed, style, j)``, so any prefix of the
    stream is the same whatever ``n`` is (``None`` streams forever) and matches
    :func:`make_dataset`. ``overrides`` go to every :func:`generate_tile` call.

    Yields
    ------
    SyntheticTile
    """
    styles_t, _ = _check(styles, size)
    if n is not None:
        check_int(n, "n", 0, error=SyntheticError)
    check_int(seed, "seed", 0, error=SyntheticError)
    for k in range(n) if n is not None else itertools.count():
        style = styles_t[k % len(styles_t)]
        yield generate_tile(style, size, tile_rng(int(seed), style, k // len(styles_t)), **overrides)


def make_dataset(root: str | Path, n_per_style: int, styles: str | Iterable[str] = TRAIN_STYLES,
                 size: int | tuple[int, int] = 256, seed: int = 0, **overrides: Any) -> list[str]:
    """Write a folder dataset of synthetic tiles.

    Layout: ``root/images/<style>_<index:05d>.tif`` and ``root/masks/<same>.tif`` (one pair of
    :func:`segdiff_core.data.readers.write_pair`), and ``root/synthetic_manifest.json`` (each
    tile's style, seed and parameters). Tile ``i`` of a style is the ``i``-th tile of that style
    in ``iter_tiles(styles, seed=seed)``.

    Returns
    -------
    list of str
        The tile names written, in order.
    """
    from segdiff_core.checkpoint import atomic_write
    from segdiff_core.data.readers import write_pair

    styles_t, shape = _check(styles, size)
    check_int(n_per_style, "n_per_style", 1, error=SyntheticError)
    manifest = []
    for style in dict.fromkeys(styles_t):
        for i in range(int(n_per_style)):
            tile = generate_tile(style, shape, tile_rng(int(seed), style, i), **overrides)
            write_pair(root, f"{style}_{i:05d}", tile.image, tile.labels)
            manifest.append(dict(name=f"{style}_{i:05d}", style=style, seed=int(seed), index=i, params=tile.params))
    atomic_write(Path(root) / "synthetic_manifest.json", json.dumps(manifest, indent=1))
    return [m["name"] for m in manifest]
