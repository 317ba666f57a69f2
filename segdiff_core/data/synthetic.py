"""Synthetic nucleus microscopy tiles with instance labels.

Real data cannot be bundled, so this module draws microscopy-like tiles for the demo, the
tests and the pretrained box-prompt model. Every tile comes with an exact instance label
image. Four style families are provided, each with its own parameter distribution:

``"fluorescence"``
    DAPI/Hoechst-like widefield tiles, one channel ``(H, W)``, ``uint8`` or ``uint16``
    (16-bit tiles carry a camera offset and a low dynamic range, e.g. 100..4000 of 65535).
    Chromatin texture, dark nucleoli, bright chromocentres, brighter rims, intensity
    variation between nuclei, mitotic/apoptotic bright small nuclei and daughter pairs,
    per-nucleus and global defocus, vignetting/gradients, out-of-focus haze,
    Poisson + Gaussian camera noise, debris and hot pixels.
    Widefield optics: a PSF with a sharp core and a wide weak halo, nuclei at three focus
    depths, brighter neighbours. Labels follow the half-maximum annotation convention (the
    outline lies where the nucleus' own blurred profile falls to half its peak; see
    :func:`_half_max_labels` and docs/synthetic-data.md).
``"confocal"``
    The fluorescence renderer with confocal optics: thin PSF, no halo, dim out-of-focus
    nuclei (optical sectioning), few photons.
``"he"``
    H&E brightfield RGB ``(H, W, 3) uint8``: haematoxylin nuclei (dense or vesicular with
    nucleoli) on eosin stroma with collagen fibres, cytoplasm, white lumen/gaps and glands,
    spindle stromal nuclei, lymphocyte clusters and unlabelled red blood cells. Colours
    come from a Beer-Lambert optical density model with randomly perturbed stain vectors,
    followed by optical blur, noise and JPEG-like 8x8 DCT quantisation.
``"ihc"`` (held out from training)
    DAB immunohistochemistry RGB ``(H, W, 3) uint8``: brown DAB-positive and pale blue
    haematoxylin-counterstained negative nuclei on an almost unstained background.

All randomness flows from an explicit :class:`numpy.random.Generator` (or an int seed), so a
seed reproduces a tile exactly. Labels are ``int32 (H, W)``: 0 is background and objects are
numbered ``1..N`` consecutively; a nucleus hidden in part by another keeps only its visible
pixels, and every object is one 4-connected, non-empty region (a piece of an occluded
nucleus cut off from its main part joins the nucleus covering it; visible slivers smaller
than ``min_area``, default 5 px, are left unlabelled).

Example::

    from segdiff_core.data.synthetic import generate_tile, iter_tiles, make_dataset

    tile = generate_tile("he", 256, rng=0, architecture="gland")
    tile.image.shape, tile.labels.max()          # (256, 256, 3), number of nuclei
    for tile in iter_tiles(("fluorescence", "he"), n=100, size=256, seed=1): ...
    make_dataset("data/synth", n_per_style=50)   # root/images/*.tif + root/masks/*.tif
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.segmentation import expand_labels, relabel_sequential

__all__ = [
    "STYLES",
    "TRAIN_STYLES",
    "HELDOUT_STYLES",
    "SyntheticError",
    "SyntheticTile",
    "generate_tile",
    "iter_tiles",
    "make_dataset",
    "style_parameter_names",
    "tile_rng",
    "pick_objects",
]

STYLES: tuple[str, ...] = ("fluorescence", "he", "ihc", "confocal")
"""All style families :func:`generate_tile` can draw (new families are appended: the index of a
style seeds its evaluation streams)."""
TRAIN_STYLES: tuple[str, ...] = ("fluorescence", "he", "confocal")
"""Styles meant for training the bundled model."""
HELDOUT_STYLES: tuple[str, ...] = ("ihc",)
"""Styles kept out of training to measure generalisation to an unseen stain."""

MIN_SIZE = 16
"""Smallest tile side length accepted, in pixels."""

# Standard Ruifrok & Johnston optical density vectors (RGB), normalised below.
_H_OD = np.array([0.650, 0.704, 0.286])
_E_OD = np.array([0.072, 0.990, 0.105])
_DAB_OD = np.array([0.268, 0.570, 0.776])

# IJG quantisation tables (quality 50).
_JPEG_Q_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float32,
)
_JPEG_Q_CHROMA = np.full((8, 8), 99, dtype=np.float32)
_JPEG_Q_CHROMA[:4, :4] = np.array(
    [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]], dtype=np.float32
)


class SyntheticError(ValueError):
    """Bad arguments to the synthetic generator (unknown style, bad size or override)."""


@dataclass(frozen=True)
class SyntheticTile:
    """One synthetic tile.

    Attributes:
        image: ``(H, W)`` uint8/uint16 for ``"fluorescence"``; ``(H, W, 3)`` uint8 RGB for
            ``"he"`` and ``"ihc"``.
        labels: ``(H, W)`` int32 instance labels, 0 = background, objects ``1..N``.
        style: the style family name (one of :data:`STYLES`).
        params: the tile-level parameters actually used (JSON-serialisable scalars, strings
            and lists), including any overrides.
    """

    image: np.ndarray
    labels: np.ndarray
    style: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_objects(self) -> int:
        """Number of labelled nuclei."""
        return int(self.labels.max(initial=0))


# --------------------------------------------------------------------------------------
# argument handling
# --------------------------------------------------------------------------------------
def _as_rng(rng: np.random.Generator | int | np.random.SeedSequence | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
        if isinstance(rng, (int, np.integer)) and int(rng) < 0:
            raise SyntheticError(f"seed must be a non-negative integer, got {rng}")
        return np.random.default_rng(rng)
    raise SyntheticError(
        f"rng must be a numpy.random.Generator, a non-negative int seed or None, "
        f"got {type(rng).__name__}"
    )


def _parse_size(size: int | tuple[int, int] | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        shape = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size
    ):
        shape = (int(size[0]), int(size[1]))
    else:
        raise SyntheticError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    if min(shape) < MIN_SIZE:
        raise SyntheticError(f"tile size {shape} is too small; use at least {MIN_SIZE} px per side")
    return shape


def _check_style(style: str) -> str:
    if style not in STYLES:
        raise SyntheticError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    return style


class _Params:
    """Draws tile parameters, letting user overrides replace any drawn value.

    ``get(name, draw)`` returns ``overrides[name]`` if given (after ``check``), else
    ``draw()``; every value is recorded so the tile can report what it used.
    """

    def __init__(self, rng: np.random.Generator, overrides: dict[str, Any]):
        self.rng = rng
        self.overrides = dict(overrides)
        self.values: dict[str, Any] = {}

    def get(self, name: str, draw: Callable[[], Any], check: Callable[[Any], Any] | None = None) -> Any:
        if name in self.overrides:
            value = self.overrides[name]
            if check is not None:
                value = check(value)
        else:
            value = draw()
        if isinstance(value, np.generic):
            value = value.item()
        self.values[name] = value
        return value

    def finish(self, style: str) -> dict[str, Any]:
        unknown = sorted(set(self.overrides) - set(self.values))
        if unknown:
            raise SyntheticError(
                f"unknown override(s) {unknown} for style {style!r}; valid names are: "
                f"{', '.join(sorted(self.values))}"
            )
        return dict(self.values)


def _check_range(lo_min: float, hi_max: float, name: str) -> Callable[[Any], tuple[float, float]]:
    def check(v: Any) -> tuple[float, float]:
        try:
            lo, hi = (float(x) for x in v)
        except (TypeError, ValueError):
            raise SyntheticError(f"{name} must be a (low, high) pair of numbers, got {v!r}") from None
        if not (lo_min <= lo <= hi <= hi_max):
            raise SyntheticError(
                f"{name} must satisfy {lo_min} <= low <= high <= {hi_max}, got ({lo}, {hi})"
            )
        return (lo, hi)

    return check


def _check_number(lo: float, hi: float, name: str, integer: bool = False) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        ok_type = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.number))
        if isinstance(v, bool) or not ok_type or not (lo <= float(v) <= hi):
            kind = "an integer" if integer else "a number"
            raise SyntheticError(f"{name} must be {kind} in [{lo}, {hi}], got {v!r}")
        return int(v) if integer else float(v)

    return check


def _check_choice(choices: Sequence[Any], name: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v not in choices:
            raise SyntheticError(f"{name} must be one of {list(choices)}, got {v!r}")
        return v

    return check


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# --------------------------------------------------------------------------------------
# random fields and filters
# --------------------------------------------------------------------------------------
def _freq_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    fy = sfft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    return fy, fx


def _spectral_field(shape: tuple[int, int], envelope: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Real Gaussian random field with the given rfft amplitude envelope, zero mean, unit std."""
    spec = (rng.standard_normal(envelope.shape, dtype=np.float32)
            + 1j * rng.standard_normal(envelope.shape, dtype=np.float32)) * envelope
    spec[0, 0] = 0
    out = sfft.irfft2(spec, s=shape, workers=1).astype(np.float32)
    std = float(out.std())
    return out / std if std > 0 else out


def _noise_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth isotropic noise, correlation length ~``sigma`` px, zero mean, unit std, float32."""
    fy, fx = _freq_grid(shape)
    env = np.exp(-2.0 * (math.pi * sigma) ** 2 * (fy**2 + fx**2))
    return _spectral_field(shape, env, rng)


def _bandpass_field(shape: tuple[int, int], sigma_lo: float, sigma_hi: float, rng: np.random.Generator) -> np.ndarray:
    """Band-pass noise: structures between ``sigma_lo`` and ``sigma_hi`` px."""
    fy, fx = _freq_grid(shape)
    f2 = fy**2 + fx**2
    env = np.exp(-2.0 * (math.pi * sigma_lo) ** 2 * f2) - np.exp(-2.0 * (math.pi * sigma_hi) ** 2 * f2)
    return _spectral_field(shape, env, rng)


def _anisotropic_field(
    shape: tuple[int, int], along: float, across: float, angle: float, rng: np.random.Generator
) -> np.ndarray:
    """Fibre-like noise elongated along ``angle`` (radians, from the +x axis towards +y)."""
    fy, fx = _freq_grid(shape)
    c, s = math.cos(angle), math.sin(angle)
    f_along = fx * c + fy * s
    f_across = -fx * s + fy * c
    env = np.exp(-2.0 * math.pi**2 * ((along * f_along) ** 2 + (across * f_across) ** 2))
    return _spectral_field(shape, env, rng)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2D float image (spatial for small sigma, padded FFT for large)."""
    if sigma <= 0.05:
        return img
    if sigma <= 4.0:
        return ndi.gaussian_filter(img, sigma, mode="reflect", truncate=3.0)
    pad = int(math.ceil(2.5 * sigma))
    padded = np.pad(img, pad, mode="reflect")
    fy, fx = _freq_grid(padded.shape)
    tf = np.exp(-2.0 * (math.pi * sigma) ** 2 * (fy**2 + fx**2))
    out = sfft.irfft2(sfft.rfft2(padded, workers=1) * tf, s=padded.shape, workers=1)
    return out[pad:-pad, pad:-pad].astype(np.float32)


def _warp(img: np.ndarray, amplitude: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random displacement of ``img`` (amplitude px, displacement field scale px)."""
    shape = img.shape
    dy = _noise_field(shape, scale, rng) * amplitude
    dx = _noise_field(shape, scale, rng) * amplitude
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return ndi.map_coordinates(img, [yy + dy, xx + dx], order=1, mode="mirror").astype(np.float32)


def _illumination(shape: tuple[int, int], vignetting: float, gradient: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative illumination field (max 1): off-centre vignetting times a linear ramp."""
    h, w = shape
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    cy, cx = rng.uniform(-0.8, 0.8, 2)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0
    field = 1.0 - vignetting * r2
    ang = rng.uniform(0, 2 * math.pi)
    field = field * (1.0 + gradient * (math.cos(ang) * xx + math.sin(ang) * yy) / 2.0)
    field = np.clip(field, 0.05, None)
    return (field / field.max()).astype(np.float32)


def _spot_map(
    shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, amps: np.ndarray, sigma: float
) -> np.ndarray:
    """Sum of Gaussian spots (peak ~``amps``) at sub-pixel-free integer positions."""
    out = np.zeros(shape, np.float32)
    if len(ys) == 0:
        return out
    yi = np.clip(np.round(ys).astype(int), 0, shape[0] - 1)
    xi = np.clip(np.round(xs).astype(int), 0, shape[1] - 1)
    np.add.at(out, (yi, xi), amps.astype(np.float32))
    return ndi.gaussian_filter(out, sigma, truncate=3.0) * np.float32(2 * math.pi * sigma**2)


# --------------------------------------------------------------------------------------
# nucleus geometry
# --------------------------------------------------------------------------------------
# kinds of nuclei
_NORMAL, _METAPHASE, _DAUGHTERS, _APOPTOTIC, _SPINDLE, _LYMPHO = range(6)


@dataclass
class _Candidates:
    """Per-nucleus geometry (parallel float arrays) plus a population index and kind."""

    cy: np.ndarray
    cx: np.ndarray
    r: np.ndarray
    elong: np.ndarray
    theta: np.ndarray
    irregularity: np.ndarray
    kind: np.ndarray
    pop: np.ndarray

    @classmethod
    def empty(cls) -> "_Candidates":
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, np.zeros(0, int), np.zeros(0, int))

    def __len__(self) -> int:
        return len(self.cy)

    def take(self, idx: np.ndarray) -> "_Candidates":
        return _Candidates(*(getattr(self, f)[idx] for f in self._fields()))

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("cy", "cx", "r", "elong", "theta", "irregularity", "kind", "pop")

    @staticmethod
    def concat(parts: Sequence["_Candidates"]) -> "_Candidates":
        if not parts:
            return _Candidates.empty()
        return _Candidates(*(np.concatenate([getattr(p, f) for p in parts]) for f in _Candidates._fields()))


@dataclass
class _Population:
    """A group of similar nuclei: how many, how big, how shaped and where."""

    n: int
    mean_radius: float
    radius_cv: float
    elong_range: tuple[float, float]
    irregularity: float
    kind: int = _NORMAL
    angle_field: np.ndarray | None = None  # per-pixel preferred orientation (radians)
    angle_jitter: float = math.pi  # std of orientation around the field (pi = random)
    region: np.ndarray | None = None  # where nuclei may lie: density map (H, W) in [0, 1]
    clusters: int = 0  # >0: candidates gathered around this many cluster centres
    cluster_spread: float = 3.0  # cluster std in units of mean radius


def _draw_population(
    pop: _Population, pop_index: int, shape: tuple[int, int], radius_range: tuple[float, float],
    rng: np.random.Generator,
) -> _Candidates:
    """About ``4 n`` candidate nuclei of a population (more than needed: placement rejects some).

    Centres: uniform over the tile plus a margin (so some nuclei are cut by the border),
    drawn from ``region`` as a density, or around cluster centres (then thinned by
    ``region``). Radii are log-normal around ``mean_radius`` clipped to ``radius_range``;
    elongations follow a Beta law within ``elong_range``; orientations are uniform or
    follow ``angle_field``.
    """
    h, w = shape
    m = max(8, int(pop.n * 4 + 20))
    if pop.clusters > 0:
        if pop.region is not None:
            ccy, ccx = _sample_density(pop.region, pop.clusters, 0.0, rng)
        else:
            ccy, ccx = rng.uniform(0, h, pop.clusters), rng.uniform(0, w, pop.clusters)
        which = rng.integers(0, pop.clusters, m)
        spread = pop.cluster_spread * pop.mean_radius
        cy = ccy[which] + rng.normal(0, spread, m)
        cx = ccx[which] + rng.normal(0, spread, m)
    elif pop.region is not None:
        cy, cx = _sample_density(pop.region, m, 0.3 * pop.mean_radius, rng)
    else:
        margin = 0.6 * pop.mean_radius
        cy = rng.uniform(-margin, h + margin, m)
        cx = rng.uniform(-margin, w + margin, m)
    m = len(cy)
    if pop.region is not None and pop.clusters > 0 and m:
        yi = np.clip(cy.astype(int), 0, h - 1)
        xi = np.clip(cx.astype(int), 0, w - 1)
        keep = rng.random(m) < pop.region[yi, xi]
        cy, cx = cy[keep], cx[keep]
        m = len(cy)
    sigma = math.sqrt(math.log1p(pop.radius_cv**2))
    r = pop.mean_radius * rng.lognormal(-sigma**2 / 2, sigma, m)
    r = np.clip(r, radius_range[0], radius_range[1])
    lo, hi = pop.elong_range
    elong = 1.0 + (hi - 1.0) * rng.beta(1.2, 2.5, m) if hi > lo else np.full(m, lo)
    elong = np.maximum(elong, lo)
    if pop.angle_field is not None and m:
        yi = np.clip(cy.astype(int), 0, h - 1)
        xi = np.clip(cx.astype(int), 0, w - 1)
        theta = pop.angle_field[yi, xi] + rng.normal(0, pop.angle_jitter, m)
    else:
        theta = rng.uniform(0, math.pi, m)
    irr = pop.irregularity * rng.uniform(0.4, 1.4, m)
    return _Candidates(cy, cx, r, elong, theta, irr, np.full(m, pop.kind), np.full(m, pop_index))


def _sample_density(
    density: np.ndarray, m: int, jitter: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` random points distributed like the non-negative map ``density`` (+ Gaussian jitter)."""
    cdf = np.cumsum(density.ravel(), dtype=np.float64)
    if m == 0 or cdf[-1] <= 0:
        return np.zeros(0), np.zeros(0)
    flat = np.minimum(np.searchsorted(cdf, rng.random(m) * cdf[-1], side="right"), cdf.size - 1)
    yi, xi = np.divmod(flat, density.shape[1])
    cy = yi + rng.uniform(-0.5, 0.5, m) + (rng.normal(0, jitter, m) if jitter > 0 else 0.0)
    cx = xi + rng.uniform(-0.5, 0.5, m) + (rng.normal(0, jitter, m) if jitter > 0 else 0.0)
    return cy, cx


def _select(cands: _Candidates, targets: Sequence[int], overlap: float, rng: np.random.Generator) -> _Candidates:
    """Greedy random sequential placement.

    Candidates are visited in random order; one is accepted if its population is not full
    and its centre is at least ``overlap * (r_i + r_j)`` and ``0.8 * max(r_i, r_j)`` away
    from every accepted nucleus (``overlap`` < 1 lets nuclei overlap, > 1 keeps gaps).
    """
    m = len(cands)
    if m == 0:
        return cands
    order = rng.permutation(m)
    cands = cands.take(order)
    pts = np.stack([cands.cy, cands.cx], axis=1)
    reach = cands.r * np.sqrt(np.maximum(cands.elong, 1.0) ** 0.25)
    max_d = max(overlap * 2 * float(reach.max()), 0.8 * float(reach.max()))
    pairs = cKDTree(pts).query_pairs(max_d, output_type="ndarray")
    neighbours: list[list[int]] = [[] for _ in range(m)]
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        d = np.hypot(pts[i, 0] - pts[j, 0], pts[i, 1] - pts[j, 1])
        ri, rj = reach[i], reach[j]
        clash = (d < overlap * (ri + rj)) | (d < 0.8 * np.maximum(ri, rj))
        for a, b in zip(i[clash].tolist(), j[clash].tolist()):
            neighbours[a].append(b)
            neighbours[b].append(a)
    room = list(targets)
    blocked = np.zeros(m, bool)
    pop = cands.pop.tolist()
    accepted: list[int] = []
    for k in range(m):
        if blocked[k] or room[pop[k]] <= 0:
            continue
        accepted.append(k)
        room[pop[k]] -= 1
        if neighbours[k]:
            blocked[neighbours[k]] = True
        if not any(x > 0 for x in room):
            break
    return cands.take(np.asarray(accepted, dtype=int))


def _expand_daughters(c: _Candidates, rng: np.random.Generator) -> _Candidates:
    """Split every ``_DAUGHTERS`` candidate into two small nuclei along its axis."""
    is_pair = c.kind == _DAUGHTERS
    if not is_pair.any():
        return c
    p = c.take(np.flatnonzero(is_pair))
    rest = c.take(np.flatnonzero(~is_pair))
    sep = p.r * rng.uniform(0.55, 0.95, len(p))
    dy, dx = np.sin(p.theta) * sep, np.cos(p.theta) * sep
    r_d = p.r * rng.uniform(0.4, 0.55, len(p))
    out = []
    for sign in (-1.0, 1.0):
        out.append(_Candidates(
            p.cy + sign * dy, p.cx + sign * dx, r_d * rng.uniform(0.9, 1.1, len(p)),
            rng.uniform(1.2, 2.2, len(p)), p.theta + math.pi / 2 + rng.normal(0, 0.2, len(p)),
            p.irregularity, p.kind, p.pop,
        ))
    return _Candidates.concat([rest] + out)


@dataclass
class _Footprint:
    """Where one nucleus lies: bbox slices, soft coverage and normalised radius there."""

    index: int
    sl: tuple[slice, slice]
    cover: np.ndarray  # float32 soft coverage 0..1 (anti-aliased)
    d: np.ndarray  # float32 radius normalised by the boundary radius (1 on the boundary)
    inside: np.ndarray  # bool, pixel centre inside the boundary


def _fourier_coefficients(c: _Candidates, rng: np.random.Generator) -> np.ndarray:
    """Complex boundary coefficients ``(n, 6)`` for harmonics ``k = 1..6``."""
    n = len(c)
    ks = np.arange(1, 7)
    amp = rng.standard_normal((n, ks.size)) / ks**1.4
    amp[:, 0] *= 0.35  # k = 1 only makes egg shapes, keep it weak
    phase = np.exp(1j * rng.uniform(0, 2 * math.pi, (n, ks.size)))
    return ((c.irregularity[:, None] * amp) * phase).astype(np.complex64)


def _rasterise(c: _Candidates, shape: tuple[int, int], rng: np.random.Generator) -> list[_Footprint]:
    """Rasterise star-shaped nuclei: ellipses with a smooth Fourier radial perturbation.

    In ellipse-normalised coordinates the boundary radius at polar angle ``phi`` is
    ``1 + sum_k a_k cos(k phi + p_k)``, ``k = 1..6``, amplitudes decaying as ``k^-1.4``
    (clipped to [0.45, 1.8], so every nucleus is star-shaped about its centre). Nuclei are
    processed in batches of equal window size, so thousands of small nuclei stay cheap.
    Returns footprints in the order of ``c`` (nuclei with no pixel in the tile are dropped).
    """
    h, w = shape
    n = len(c)
    if n == 0:
        return []
    coeff = _fourier_coefficients(c, rng)
    bound = np.minimum(1.0 + np.abs(coeff).sum(axis=1), 1.8)
    a = c.r * np.sqrt(c.elong)
    b = c.r / np.sqrt(c.elong)
    half = np.ceil(a * bound + 1.5).astype(int)
    # bucket window half-sizes so that batches share an array shape (<= ~25% padding)
    buckets = np.unique(np.ceil(1.25 ** np.ceil(np.log(np.maximum(half, 1)) / math.log(1.25))).astype(int))
    bucket_of = np.searchsorted(buckets, half)
    found: dict[int, _Footprint] = {}
    for bi, hb in enumerate(buckets):
        idx = np.flatnonzero(bucket_of == bi)
        if idx.size == 0:
            continue
        win = np.arange(-hb, hb + 1, dtype=np.float32)
        oy = np.floor(c.cy[idx]).astype(int)
        ox = np.floor(c.cx[idx]).astype(int)
        dy = (oy - c.cy[idx]).astype(np.float32)[:, None, None] + win[None, :, None]
        dx = (ox - c.cx[idx]).astype(np.float32)[:, None, None] + win[None, None, :]
        ct = np.cos(c.theta[idx]).astype(np.float32)[:, None, None]
        st = np.sin(c.theta[idx]).astype(np.float32)[:, None, None]
        u = (dx * ct + dy * st) / a[idx].astype(np.float32)[:, None, None]
        v = (dy * ct - dx * st) / b[idx].astype(np.float32)[:, None, None]
        rho = np.sqrt(u * u + v * v) + np.float32(1e-6)
        z = (u + 1j * v) / rho
        zk = z
        radius = np.ones_like(rho)
        for k in range(coeff.shape[1]):
            radius += (coeff[idx, k][:, None, None] * zk).real
            zk = zk * z
        np.clip(radius, 0.45, 1.8, out=radius)
        d = rho / radius
        scale = np.sqrt(a[idx] * b[idx]).astype(np.float32)[:, None, None]
        cover = np.clip((1.0 - d) * radius * scale + 0.5, 0.0, 1.0)
        for j, i in enumerate(idx.tolist()):
            y0, x0 = oy[j] - hb, ox[j] - hb
            ya, yb = max(y0, 0), min(y0 + 2 * hb + 1, h)
            xa, xb = max(x0, 0), min(x0 + 2 * hb + 1, w)
            if yb <= ya or xb <= xa:
                continue
            loc = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
            dj = d[j][loc]
            inside = dj <= 1.0
            if not inside.any():
                continue
            found[i] = _Footprint(i, (slice(ya, yb), slice(xa, xb)), cover[j][loc], dj, inside)
    return [found[i] for i in range(n) if i in found]


def _paint_labels(footprints: Sequence[_Footprint], shape: tuple[int, int]) -> np.ndarray:
    """Paint footprints in order (later ones occlude earlier ones); ids are 1 + list position."""
    labels = np.zeros(shape, np.int32)
    for k, fp in enumerate(footprints):
        labels[fp.sl][fp.inside] = k + 1
    return labels


_CROSS = ndi.generate_binary_structure(2, 1)


def _neighbour_label(labels: np.ndarray, region: np.ndarray, exclude: int) -> int:
    """Most frequent non-zero label 4-adjacent to ``region`` (0 if none)."""
    ring = ndi.binary_dilation(region, _CROSS) & ~region
    vals = labels[ring]
    vals = vals[(vals != 0) & (vals != exclude)]
    if vals.size == 0:
        return 0
    uniq, counts = np.unique(vals, return_counts=True)
    return int(uniq[np.argmax(counts)])


def _components(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4-connected regions of equal non-zero label.

    Returns ``(comp, owner, size)``: ``comp`` int32 ``(H, W)`` component ids (0 = background),
    ``owner[c]`` the label of component ``c`` and ``size[c]`` its pixel count.
    """
    from skimage.measure import label as cc_label

    comp = cc_label(labels, background=0, connectivity=1).astype(np.int32)
    ncomp = int(comp.max(initial=0))
    owner = np.zeros(ncomp + 1, np.int64)
    owner[comp.ravel()] = labels.ravel()
    size = np.bincount(comp.ravel(), minlength=ncomp + 1)
    return comp, owner, size


def _finalise_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Make every object one 4-connected region of at least ``min_area`` px, ids ``1..N``.

    Fragments of an object beyond its largest piece (an occluded nucleus cut in two, or a
    nucleus cut by the tile border) go to the adjacent object they touch most, else to
    background; objects smaller than ``min_area`` are treated the same way.
    """
    labels = labels.copy()
    for _ in range(4):
        comp, owner, size = _components(labels)
        ncomp = len(owner) - 1
        if ncomp == 0:
            break
        ids = np.arange(1, ncomp + 1)
        # largest component of each label: sort by (label, -size), take the first per label
        order = np.lexsort((-size[ids], owner[ids]))
        sorted_ids = ids[order]
        first = np.ones(ncomp, bool)
        first[1:] = owner[sorted_ids[1:]] != owner[sorted_ids[:-1]]
        largest = np.zeros(ncomp + 1, bool)
        largest[sorted_ids[first]] = True
        bad = ids[~largest[ids] | (size[ids] < min_area)]
        if bad.size == 0:
            break
        slices = ndi.find_objects(comp)
        for cid in bad.tolist():
            sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in slices[cid - 1])
            frag = comp[sl] == cid
            win = labels[sl]
            win[frag] = _neighbour_label(win, frag, int(owner[cid]))
    else:  # still not clean after reassignment rounds: drop remaining stray pieces
        comp, owner, size = _components(labels)
        for lab in np.unique(owner[1:]):
            cids = np.flatnonzero(owner == lab)
            cids = cids[cids > 0]
            if cids.size > 1:
                keep = cids[np.argmax(size[cids])]
                labels[np.isin(comp, cids[cids != keep])] = 0
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)




def _layout(
    pops: Sequence[_Population], shape: tuple[int, int], radius_range: tuple[float, float],
    overlap: float, min_area: int, rng: np.random.Generator,
) -> tuple[_Candidates, list[_Footprint], np.ndarray]:
    """Place, rasterise and label all populations.

    Returns the accepted nuclei, their footprints in z-order (only those with visible
    pixels are kept) and the final ``int32`` labels. Footprints keep their z-order so that
    renderers can composite them; ``labels`` come from :func:`_finalise_labels`.
    """
    parts = [_draw_population(p, k, shape, radius_range, rng) for k, p in enumerate(pops)]
    cands = _Candidates.concat(parts)
    nuclei = _select(cands, [p.n for p in pops], overlap, rng)
    nuclei = _expand_daughters(nuclei, rng)
    nuclei = nuclei.take(rng.permutation(len(nuclei)))  # random z-order
    footprints = _rasterise(nuclei, shape, rng)
    labels = _finalise_labels(_paint_labels(footprints, shape), min_area)
    return nuclei, footprints, labels


def _common_geometry(p: _Params, shape: tuple[int, int], default_range: tuple[float, float]) -> dict[str, Any]:
    rng = p.rng
    side = min(shape)
    rr = p.get("radius_range", lambda: default_range, _check_range(1.5, side / 2, "radius_range"))
    rr = (float(rr[0]), float(min(rr[1], side / 2)))
    mean_r = p.get(
        "mean_radius",
        lambda: _loguniform(rng, rr[0] * 1.15, max(rr[1] * 0.6, rr[0] * 1.2)) if rr[1] > rr[0] else rr[0],
        _check_number(rr[0], rr[1], "mean_radius"),
    )
    return {"radius_range": rr, "mean_radius": mean_r}


def _count_for(coverage: float, area: float, mean_r: float) -> int:
    """Number of nuclei of radius ``mean_r`` covering about ``coverage`` of ``area``."""
    return max(1, int(round(coverage * area / (math.pi * mean_r**2))))


# --------------------------------------------------------------------------------------
# fluorescence
# --------------------------------------------------------------------------------------
def _confocal(shape: tuple[int, int], p: _Params) -> tuple[np.ndarray, np.ndarray]:
    return _fluorescence(shape, p, optics="confocal")


def _half_max_labels(
    fps: Sequence[_Footprint], profiles: Sequence[np.ndarray], sigmas: np.ndarray, shape: tuple[int, int],
    min_area: int,
) -> np.ndarray:
    """Labels drawn the way people annotate fluorescence: at half the nucleus' own peak.

    Each nucleus' smooth intensity profile (``profiles[k]`` on ``fps[k].sl``, no texture) is
    blurred with its own optical blur ``sigmas[k]`` (in-focus PSF, defocus and global blur; the
    wide halo is left out: it lifts the local background, against which people judge the
    edge), and the label is the hole-filled region at or above half of its maximum. The labels
    are painted in z-order and cleaned like the geometric ones (:func:`_finalise_labels`).
    """
    h, w = shape
    labels = np.zeros(shape, np.int32)
    for k, (fp, prof) in enumerate(zip(fps, profiles)):
        pad = int(math.ceil(3.0 * float(sigmas[k]))) + 1
        ys, xs = fp.sl
        ya, yb, xa, xb = max(ys.start - pad, 0), min(ys.stop + pad, h), max(xs.start - pad, 0), min(xs.stop + pad, w)
        win = np.zeros((yb - ya, xb - xa), np.float32)
        win[ys.start - ya : ys.stop - ya, xs.start - xa : xs.stop - xa] = prof
        if sigmas[k] > 0.05:
            win = ndi.gaussian_filter(win, float(sigmas[k]), mode="nearest", truncate=3.0)
        peak = float(win.max())
        if peak <= 0:
            continue
        inside = ndi.binary_fill_holes(win >= 0.5 * peak)
        labels[ya:yb, xa:xb][inside] = k + 1
    return _finalise_labels(labels, min_area)


def _fluorescence(shape: tuple[int, int], p: _Params, optics: str = "widefield") -> tuple[np.ndarray, np.ndarray]:
    """Fluorescent nuclei; ``optics`` ``"widefield"`` (halo, deep defocus) or ``"confocal"``
    (thin PSF, optical sectioning dims out-of-focus nuclei, few photons)."""
    rng = p.rng
    h, w = shape
    confocal = optics == "confocal"
    geo = _common_geometry(p, shape, (4.0, 40.0))
    rr, mean_r = geo["radius_range"], geo["mean_radius"]
    context = p.get("context", lambda: str(rng.choice(["culture", "tissue"], p=[0.6, 0.4])),
                    _check_choice(["culture", "tissue"], "context"))
    tissue = context == "tissue"
    coverage = p.get("coverage", lambda: _loguniform(rng, 0.2, 0.65) if tissue else _loguniform(rng, 0.03, 0.45),
                     _check_number(0.001, 0.9, "coverage"))
    n_target = p.get("n_nuclei", lambda: _count_for(coverage, h * w, mean_r),
                     _check_number(0, 5000, "n_nuclei", integer=True))
    arrangement = p.get("arrangement", lambda: str(rng.choice(["uniform", "clustered"], p=[0.55, 0.45])),
                        _check_choice(["uniform", "clustered"], "arrangement"))
    overlap = p.get("overlap", lambda: float(rng.uniform(0.72, 1.05) if not tissue else rng.uniform(0.62, 0.92)),
                    _check_number(0.3, 2.0, "overlap"))
    radius_cv = p.get("radius_cv", lambda: float(rng.uniform(0.08, 0.3)), _check_number(0, 1, "radius_cv"))
    max_elong = p.get("max_elongation", lambda: float(rng.uniform(1.2, 2.4 if not tissue else 3.0)),
                      _check_number(1, 6, "max_elongation"))
    irregular = p.get("irregularity", lambda: float(rng.uniform(0.02, 0.12) if not tissue else rng.uniform(0.06, 0.25)),
                      _check_number(0, 0.5, "irregularity"))
    mitotic = p.get("mitotic_fraction", lambda: float(rng.choice([0.0, rng.uniform(0.01, 0.08)], p=[0.3, 0.7])),
                    _check_number(0, 1, "mitotic_fraction"))
    bit_depth = p.get("bit_depth", lambda: int(rng.choice([8, 16])), _check_choice([8, 16], "bit_depth"))
    photons = p.get("peak_photons", lambda: _loguniform(rng, 5, 400) if confocal else _loguniform(rng, 20, 3000),
                    _check_number(1, 1e6, "peak_photons"))
    read_noise = p.get("read_noise", lambda: min(_loguniform(rng, 0.5, 6.0), 0.15 * photons),
                       _check_number(0, 1000, "read_noise"))
    psf = p.get("psf_sigma", lambda: float(rng.uniform(0.4, 1.1) if confocal else rng.uniform(0.7, 2.5)),
                _check_number(0, 10, "psf_sigma"))
    halo = p.get("halo_fraction",
                 lambda: 0.0 if confocal else float(rng.choice([0.0, rng.uniform(0.1, 0.45)], p=[0.25, 0.75])),
                 _check_number(0, 0.9, "halo_fraction"))
    halo_sigma = p.get("halo_sigma", lambda: float(rng.uniform(3.0, 10.0)), _check_number(0, 50, "halo_sigma"))
    defocus_frac = p.get("defocus_fraction", lambda: float(rng.choice([0.0, rng.uniform(0.05, 0.5)], p=[0.35, 0.65])),
                         _check_number(0, 1, "defocus_fraction"))
    defocus_sigma = p.get("defocus_sigma", lambda: float(rng.uniform(1.0, 3.0) if confocal else rng.uniform(1.5, 6.0)),
                          _check_number(0, 20, "defocus_sigma"))
    bright_frac = p.get("bright_fraction", lambda: float(rng.choice([0.0, rng.uniform(0.03, 0.2)], p=[0.3, 0.7])),
                        _check_number(0, 1, "bright_fraction"))
    convention = p.get("label_convention", lambda: "half_max", _check_choice(["half_max", "geometric"], "label_convention"))
    global_blur = p.get("global_blur", lambda: float(rng.choice([0.0, rng.uniform(0.5, 2.0)], p=[0.7, 0.3])),
                        _check_number(0, 10, "global_blur"))
    intensity_cv = p.get("intensity_cv", lambda: float(rng.uniform(0.1, 0.45)), _check_number(0, 2, "intensity_cv"))
    texture = p.get("texture", lambda: float(rng.uniform(0.05, 0.45)), _check_number(0, 1, "texture"))
    rim_prob = p.get("rim_fraction", lambda: float(rng.choice([0.0, rng.uniform(0.2, 1.0)], p=[0.5, 0.5])),
                     _check_number(0, 1, "rim_fraction"))
    nucleoli = p.get("nucleoli", lambda: float(rng.uniform(0.0, 0.7)), _check_number(0, 1, "nucleoli"))
    chromocentres = p.get("chromocentres", lambda: float(rng.choice([0.0, rng.uniform(0.2, 0.8)], p=[0.65, 0.35])),
                          _check_number(0, 1, "chromocentres"))
    background = p.get("background", lambda: _loguniform(rng, 0.01, 0.15), _check_number(0, 1, "background"))
    haze = p.get("haze", lambda: _loguniform(rng, 0.02, 0.3 if tissue else 0.15) * (0.2 if confocal else 1.0),
                 _check_number(0, 2, "haze"))
    cytoplasm = p.get("cytoplasm", lambda: float(rng.choice([0.0, rng.uniform(0.02, 0.12)], p=[0.6, 0.4])),
                      _check_number(0, 1, "cytoplasm"))
    vignetting = p.get("vignetting", lambda: float(rng.uniform(0.0, 0.6)), _check_number(0, 1, "vignetting"))
    gradient = p.get("gradient", lambda: float(rng.uniform(0.0, 0.5)), _check_number(0, 1.5, "gradient"))
    debris = p.get("debris", lambda: int(rng.poisson(rng.uniform(0, 12) * h * w / 65536)),
                   _check_number(0, 100000, "debris", integer=True))
    min_area = p.get("min_area", lambda: 5, _check_number(1, 10000, "min_area", integer=True))

    # --- populations
    n_mit = int(rng.binomial(n_target, min(mitotic, 1.0))) if n_target else 0
    n_main = max(n_target - n_mit, 0)
    clusters = 0
    if arrangement == "clustered":
        clusters = max(1, int(round(n_main / rng.uniform(4, 25))))
    pops = [_Population(n_main, mean_r, radius_cv, (1.0, max_elong), irregular,
                        clusters=clusters, cluster_spread=float(rng.uniform(1.5, 4.0)))]
    if n_mit:
        kinds = rng.choice([_METAPHASE, _DAUGHTERS, _APOPTOTIC], size=n_mit, p=[0.35, 0.35, 0.3])
        for kind in (_METAPHASE, _DAUGHTERS, _APOPTOTIC):
            k = int((kinds == kind).sum())
            if not k:
                continue
            if kind == _METAPHASE:
                pops.append(_Population(k, mean_r * 0.7, 0.15, (2.2, 3.8), 0.15, kind=kind))
            elif kind == _DAUGHTERS:
                pops.append(_Population(k, mean_r * 0.9, 0.1, (1.0, 1.0), 0.05, kind=kind))
            else:
                pops.append(_Population(k, mean_r * 0.45, 0.25, (1.0, 1.3), 0.05, kind=kind))
    rr_eff = (min(rr[0], mean_r * 0.3), rr[1])
    nuclei, fps, labels = _layout(pops, shape, rr_eff, overlap, min_area, rng)

    # --- per-nucleus appearance
    n = len(nuclei)
    sig = math.sqrt(math.log1p(intensity_cv**2))
    inten = rng.lognormal(-sig**2 / 2, sig, n)
    # G2 nuclei: bigger nuclei have a bit more DNA; integrated intensity spreads the area
    inten *= (nuclei.r / mean_r) ** rng.uniform(-0.5, 0.3)
    inten = np.maximum(inten, 0.3)
    special = nuclei.kind != _NORMAL
    inten[special] *= rng.uniform(1.6, 3.0, int(special.sum()))
    bright = rng.random(n) < bright_frac  # brighter neighbours (G2, mitotic, other cell types)
    inten[bright] *= rng.uniform(1.8, 4.0, int(bright.sum()))
    flat = rng.uniform(0.15, 0.7, n)  # exponent of the dome profile: small = flat top
    rim = np.where(rng.random(n) < rim_prob, rng.uniform(0.15, 0.6, n), 0.0)
    tex = texture * rng.uniform(0.5, 1.5, n)
    tex[special] = np.maximum(tex[special], 0.5)
    focus = np.zeros(n, int)
    if defocus_frac > 0:
        focus = np.where(rng.random(n) < defocus_frac, rng.integers(1, 3, n), 0)
        if confocal:  # optical sectioning: out-of-focus nuclei are dim
            inten = np.where(focus > 0, inten * rng.uniform(0.2, 0.6, n), inten)

    fine = _bandpass_field(shape, 0.6, float(rng.uniform(1.2, 2.2)), rng)
    coarse = _bandpass_field(shape, float(mean_r * 0.12 + 0.8), float(mean_r * 0.35 + 1.5), rng)
    mix = float(rng.uniform(0.2, 0.8))
    chroma_tex = (mix * fine + (1 - mix) * coarse).astype(np.float32)

    layers = [np.zeros(shape, np.float32) for _ in range(3)]
    smooth = []
    for fp in fps:
        i = fp.index
        d = np.minimum(fp.d, 1.0)
        prof = (1.0 - d * d) ** flat[i]
        if rim[i]:
            prof = prof + rim[i] * np.exp(-(((1.0 - d) / 0.17) ** 2))
        t = 1.0 + tex[i] * chroma_tex[fp.sl]
        layers[focus[i]][fp.sl] += (inten[i] * fp.cover) * prof * np.clip(t, 0.2, None)
        smooth.append(fp.cover * prof)
    blur_of_focus = psf + defocus_sigma * np.array([0.0, 0.6, 1.0])
    if convention == "half_max" and fps:
        sigmas = np.hypot(blur_of_focus[focus[[fp.index for fp in fps]]], global_blur)
        labels = _half_max_labels(fps, smooth, sigmas, shape, min_area)

    # nucleoli (dark holes, DAPI-excluded) and chromocentres (bright foci)
    normal = np.flatnonzero(nuclei.kind == _NORMAL)
    if nucleoli > 0 and len(normal):
        ys, xs, amps, _ = _spots_in(nuclei, normal, rng, count_mean=2.0 * nucleoli, spread=0.45)
        holes = _spot_map(shape, ys, xs, amps * rng.uniform(0.3, 0.7), max(0.7, 0.16 * mean_r))
        for lay in layers:
            lay *= 1.0 - np.clip(holes, 0, 0.85)
    if chromocentres > 0 and len(normal):
        ys, xs, amps, owner = _spots_in(nuclei, normal, rng, count_mean=8.0 * chromocentres, spread=0.75)
        amps = amps * inten[owner]
        foci = _spot_map(shape, ys, xs, amps * rng.uniform(0.4, 1.0), max(0.6, 0.07 * mean_r))
        layers[0] += foci * (labels > 0)
    signal = _blur(layers[0], psf)
    if defocus_frac > 0:
        signal += _blur(layers[1], blur_of_focus[1]) + _blur(layers[2], blur_of_focus[2])
    if halo > 0:  # widefield PSF: a sharp core plus a wide, weak halo
        signal = (1.0 - halo) * signal + halo * _blur(signal, halo_sigma)
    ref = float(np.median(inten)) if n else 1.0

    # background, cytoplasm autofluorescence, haze
    img = signal
    if cytoplasm > 0 and n:
        terr = expand_labels(labels, mean_r * rng.uniform(0.8, 2.0))  # each nucleus' cell territory
        cyto = _blur(((terr > 0) & (labels == 0)).astype(np.float32), mean_r * 0.3 + 1)
        img = img + cytoplasm * ref * cyto * (1 + 0.3 * _noise_field(shape, 3.0, rng))
    if haze > 0:
        img = img + haze * _blur(signal, float(rng.uniform(6, 20)))
    bgf = 1.0 + 0.35 * _noise_field(shape, float(rng.uniform(15, 60)), rng)
    img = img + background * ref * np.clip(bgf, 0.2, None)
    if debris:
        img = img + _debris(shape, debris, ref, rng)
    if global_blur > 0:
        img = _blur(img, global_blur)
    img = img * _illumination(shape, vignetting, gradient, rng)

    # camera: photons -> Poisson -> read noise -> offset/gain -> quantise
    scale = photons / max(float(np.percentile(img, 99.5)), 1e-6)
    electrons = rng.poisson(np.clip(img * scale, 0, None)).astype(np.float32)
    electrons += rng.normal(0, read_noise, shape).astype(np.float32)
    hot = rng.random(shape) < rng.uniform(0, 2e-4)
    electrons[hot] += rng.uniform(0.5, 3.0, int(hot.sum())) * photons
    if bit_depth == 16:
        offset = p.get("camera_offset", lambda: float(rng.choice([100.0, 200.0, 500.0, rng.uniform(90, 600)])),
                       _check_number(0, 60000, "camera_offset"))
        top = p.get("max_adu", lambda: _loguniform(rng, 600, 4000), _check_number(1, 65535, "max_adu"))
        gain = max(top - offset, 200.0) / photons  # effective ADU per photo-electron
        adu = offset + gain * electrons
        image = np.clip(np.round(adu), 0, 65535).astype(np.uint16)
    else:
        p.get("camera_offset", lambda: 0.0, _check_number(0, 60000, "camera_offset"))
        p.get("max_adu", lambda: 255.0, _check_number(1, 65535, "max_adu"))
        black = float(np.percentile(electrons, rng.uniform(0.5, 30)))
        white = float(np.percentile(electrons, 99.7)) * rng.uniform(0.75, 1.25)
        gamma = rng.uniform(0.75, 1.25)
        x = np.clip((electrons - black) / max(white - black, 1e-6), 0, 1) ** gamma
        image = np.round(x * 255).astype(np.uint8)
    return image, labels


def _spots_in(
    nuclei: _Candidates, idx: np.ndarray, rng: np.random.Generator, count_mean: float, spread: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random spot centres inside the given nuclei (within ``spread`` of their radius).

    Returns ``(ys, xs, amplitudes, owner)`` where ``owner`` indexes ``nuclei``.
    """
    counts = rng.poisson(count_mean, len(idx))
    owner = np.repeat(idx, counts)
    if owner.size == 0:
        z = np.zeros(0)
        return z, z, z, np.zeros(0, int)
    ang = rng.uniform(0, 2 * math.pi, owner.size)
    rad = spread * np.sqrt(rng.random(owner.size)) * nuclei.r[owner]
    e = np.sqrt(nuclei.elong[owner])
    u, v = rad * np.cos(ang) * e, rad * np.sin(ang) / e
    t = nuclei.theta[owner]
    ys = nuclei.cy[owner] + u * np.sin(t) + v * np.cos(t)
    xs = nuclei.cx[owner] + u * np.cos(t) - v * np.sin(t)
    return ys, xs, rng.uniform(0.6, 1.0, owner.size), owner


def _debris(shape: tuple[int, int], count: int, ref: float, rng: np.random.Generator) -> np.ndarray:
    """Unlabelled bright specks (sharp) and dim out-of-focus blobs."""
    h, w = shape
    n_sharp = rng.binomial(count, 0.7)
    out = _spot_map(shape, rng.uniform(0, h, n_sharp), rng.uniform(0, w, n_sharp),
                    ref * rng.uniform(0.2, 1.5, n_sharp), float(rng.uniform(0.5, 1.2)))
    n_blob = count - n_sharp
    out += _spot_map(shape, rng.uniform(0, h, n_blob), rng.uniform(0, w, n_blob),
                     ref * rng.uniform(0.05, 0.3, n_blob), float(rng.uniform(3, 8)))
    return out


# --------------------------------------------------------------------------------------
# brightfield tissue (shared by H&E and IHC)
# --------------------------------------------------------------------------------------
_ARCHITECTURES = ("epithelium", "stroma", "mixed", "gland", "lymphoid")


@dataclass
class _Scene:
    """Tissue architecture of a brightfield tile.

    All maps are float32 ``(H, W)`` in [0, 1] unless noted: ``white`` = empty space
    (lumen, fat, tears), ``epi`` = cellular/epithelial cytoplasm, ``fibres`` = collagen
    texture of the stroma, ``membranes`` = faint cell borders in cellular regions;
    ``territories`` and ``nucleus_distance`` describe the cells around each nucleus.
    """

    nuclei: _Candidates
    footprints: list[_Footprint]
    labels: np.ndarray
    white: np.ndarray
    epi: np.ndarray
    fibres: np.ndarray
    membranes: np.ndarray
    territories: np.ndarray  # int32: nearest nucleus label within 3 radii, else 0
    nucleus_distance: np.ndarray  # float32: distance (px) to the nearest nucleus pixel


def _soft_threshold(field: np.ndarray, level: float, softness: float) -> np.ndarray:
    from scipy.special import expit

    return expit((field - level) / max(softness, 1e-3)).astype(np.float32)


def _brightfield_scene(shape: tuple[int, int], p: _Params, default_range: tuple[float, float]) -> _Scene:
    rng = p.rng
    h, w = shape
    geo = _common_geometry(p, shape, default_range)
    rr, mean_r = geo["radius_range"], geo["mean_radius"]
    arch = p.get("architecture", lambda: str(rng.choice(_ARCHITECTURES, p=[0.27, 0.15, 0.25, 0.2, 0.13])),
                 _check_choice(_ARCHITECTURES, "architecture"))
    coverage = p.get("coverage", lambda: _loguniform(rng, 0.25 if arch == "epithelium" else 0.15, 0.6),
                     _check_number(0.001, 0.9, "coverage"))
    overlap = p.get("overlap", lambda: float(rng.uniform(0.75, 1.0)), _check_number(0.3, 2.0, "overlap"))
    radius_cv = p.get("radius_cv", lambda: float(rng.uniform(0.1, 0.3)), _check_number(0, 1, "radius_cv"))
    max_elong = p.get("max_elongation", lambda: float(rng.uniform(1.3, 2.3)), _check_number(1, 6, "max_elongation"))
    irregular = p.get("irregularity", lambda: float(rng.uniform(0.04, 0.2)), _check_number(0, 0.5, "irregularity"))
    white_frac = p.get("white_fraction", lambda: float(rng.choice([0.0, rng.uniform(0.02, 0.3)], p=[0.35, 0.65])),
                       _check_number(0, 0.9, "white_fraction"))
    fibre_angle = p.get("fibre_angle", lambda: float(rng.uniform(0, math.pi)), _check_number(-10, 10, "fibre_angle"))
    lymph_frac = p.get("lymphocyte_fraction",
                       lambda: 0.85 if arch == "lymphoid"
                       else float(rng.choice([0.0, rng.uniform(0.03, 0.25)], p=[0.4, 0.6])),
                       _check_number(0, 1, "lymphocyte_fraction"))
    min_area = p.get("min_area", lambda: 5, _check_number(1, 10000, "min_area", integer=True))
    n_override = p.get("n_nuclei", lambda: None,
                       lambda v: v if v is None else _check_number(0, 5000, "n_nuclei", integer=True)(v))

    # --- white space: tears / fat / loose tissue
    white = np.zeros(shape, np.float32)
    if white_frac > 0:
        scale = float(rng.uniform(10, 30))
        wf = _noise_field(shape, scale, rng) + 0.3 * _noise_field(shape, scale / 5, rng)
        level = float(np.quantile(wf, 1 - white_frac))
        white = _blur(_soft_threshold(wf, level, 0.015), 0.6)
    # --- regions
    epi = np.zeros(shape, np.float32)
    angle_field = None
    if arch == "epithelium":
        epi[:] = 1.0
    elif arch in ("mixed", "lymphoid"):
        rf = _noise_field(shape, float(rng.uniform(20, 50)), rng)
        epi = _soft_threshold(rf, float(np.quantile(rf, rng.uniform(0.3, 0.7))), 0.08)
        if arch == "lymphoid":
            epi *= 0.0
    elif arch == "gland":
        lumen, dist_out, normal_angle = _glands(shape, mean_r, rng)
        white = np.maximum(white * (dist_out > 6 * mean_r), lumen)
        band = float(rng.uniform(2.5, 4.5)) * mean_r
        epi = _soft_threshold(-dist_out, -band, 0.5 * mean_r / max(band, 1)) * (1 - lumen)
        angle_field = normal_angle
    stroma = np.clip(1.0 - epi, 0, 1) * (1 - white)
    epi = epi * (1 - white)

    # --- nuclei populations
    area = h * w
    pops: list[_Population] = []
    epi_area = float(epi.mean()) * area
    str_area = float(stroma.mean()) * area
    n_epi = _count_for(coverage, epi_area, mean_r) if epi_area > area * 0.02 else 0
    ring = None
    if arch == "gland":
        # columnar epithelium: a crowded row of nuclei at a fixed distance from the lumen
        off = float(rng.uniform(1.2, 2.2)) * mean_r
        ring = np.exp(-(((dist_out - off) / (0.7 * mean_r)) ** 2)).astype(np.float32) * (1 - lumen)
        n_epi = int(1.5 * float(ring.sum()) / (math.pi * mean_r**2 / max(max_elong, 1.8))) + 1
    n_str = int(round(str_area * coverage * rng.uniform(0.08, 0.3) / (math.pi * mean_r**2)))
    n_lym_base = (n_epi + n_str) if arch != "lymphoid" else _count_for(coverage, area, mean_r * 0.6)
    n_lym = int(round(lymph_frac * n_lym_base))
    if n_override is not None:
        total = max(n_epi + n_str + n_lym, 1)
        n_epi, n_str = (int(round(n_override * x / total)) for x in (n_epi, n_str))
        n_lym = n_override - n_epi - n_str
    if n_epi:
        if ring is not None:
            pops.append(_Population(n_epi, mean_r, radius_cv, (1.3, max(max_elong, 1.8)), irregular,
                                    angle_field=angle_field, angle_jitter=0.25, region=ring))
        else:
            pops.append(_Population(n_epi, mean_r, radius_cv, (1.0, max_elong), irregular, region=epi))
    fib_angle = (fibre_angle + 0.6 * _noise_field(shape, 60.0, rng)).astype(np.float32)
    if n_str:
        pops.append(_Population(n_str, mean_r * rng.uniform(0.7, 0.9), 0.2, (2.5, 5.5), 0.08,
                                kind=_SPINDLE, angle_field=fib_angle, angle_jitter=0.2, region=stroma))
    if n_lym:
        lym_region = np.clip(1 - white, 0, 1) if arch == "lymphoid" else np.clip(stroma + 0.3 * epi, 0, 1)
        clusters = 0 if arch == "lymphoid" else (0 if rng.random() < 0.5 else max(1, n_lym // 12))
        pops.append(_Population(n_lym, max(rr[0], min(mean_r * 0.65, 7.0)), 0.1, (1.0, 1.25), 0.05,
                                kind=_LYMPHO, region=lym_region, clusters=clusters, cluster_spread=2.5))
    if n_epi and rng.random() < 0.25:
        pops.append(_Population(int(rng.integers(1, 3)), mean_r * 0.8, 0.1, (1.5, 2.5), 0.3,
                                kind=_METAPHASE, region=epi))
    nuclei, fps, labels = _layout(pops, shape, (min(rr[0], 2.0), rr[1]), overlap, min_area, rng)

    # --- stroma fibres: anisotropic noise, domain-warped into wavy bundles
    across = float(rng.uniform(1.0, 3.0))
    fib = _anisotropic_field(shape, float(rng.uniform(8, 30)), across, fibre_angle, rng)
    if rng.random() < 0.6:  # a second bundle direction, blended in patches
        other = _anisotropic_field(shape, float(rng.uniform(8, 30)), across,
                                   fibre_angle + float(rng.uniform(0.4, 1.4)), rng)
        blend = _soft_threshold(_noise_field(shape, float(rng.uniform(20, 50)), rng), 0.0, 0.3)
        fib = fib * blend + other * (1 - blend)
    fib = _warp(fib, float(rng.uniform(4, 15)), float(rng.uniform(15, 40)), rng)
    fibres = _soft_threshold(fib, float(rng.uniform(-0.8, 0.4)), float(rng.uniform(0.2, 0.6)))
    # --- cell borders in cellular regions (Voronoi edges of nucleus territories)
    terr = expand_labels(labels, mean_r * 3.0)
    dist = (ndi.distance_transform_edt(labels == 0) if labels.max() > 0 else np.full(shape, np.inf)).astype(np.float32)
    membranes = np.zeros(shape, np.float32)
    if labels.max() > 0 and epi.max() > 0:
        edge = np.zeros(shape, bool)
        edge[:-1] |= terr[:-1] != terr[1:]
        edge[:, :-1] |= terr[:, :-1] != terr[:, 1:]
        membranes = _blur((edge & (labels == 0)).astype(np.float32), 0.7) * epi
    return _Scene(nuclei, fps, labels, white, epi, fibres, membranes, terr, dist)


def _glands(
    shape: tuple[int, int], mean_r: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gland lumens: returns (lumen map, distance outside lumens in px, outward normal angle)."""
    h, w = shape
    n = int(rng.integers(1, 4))
    size = rng.uniform(2.5, 7.0, n) * mean_r
    lum = _Candidates(
        cy=rng.uniform(0.1 * h, 0.9 * h, n), cx=rng.uniform(0.1 * w, 0.9 * w, n), r=size,
        elong=rng.uniform(1.0, 2.5, n), theta=rng.uniform(0, math.pi, n),
        irregularity=rng.uniform(0.1, 0.3, n), kind=np.zeros(n, int), pop=np.zeros(n, int),
    )
    mask = np.zeros(shape, bool)
    for fp in _rasterise(lum, shape, rng):
        mask[fp.sl] |= fp.inside
    if not mask.any():
        mask[h // 2, w // 2] = True
    dist = ndi.distance_transform_edt(~mask).astype(np.float32)
    sm = _blur(dist, 2.0)
    gy, gx = np.gradient(sm)
    # angle convention of _rasterise: theta from +x towards +y
    angle = np.arctan2(gy, gx).astype(np.float32)
    lumen = _blur(mask.astype(np.float32), 0.8)
    return lumen, dist, angle


def _stain_vectors(rng: np.random.Generator, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """H and E optical density unit vectors between the Ruifrok and Macenko references."""
    mac_h = np.array([0.5626, 0.7201, 0.4062])
    mac_e = np.array([0.2159, 0.8012, 0.5581])
    t = rng.uniform(0.0, 1.0)
    out = []
    for k, (ref_a, ref_b) in enumerate(((_H_OD, mac_h), (_E_OD, mac_e))):
        v = (1 - t) * ref_a / np.linalg.norm(ref_a) + t * ref_b / np.linalg.norm(ref_b)
        v = np.clip(v + rng.normal(0, jitter, 3), 0.02, None)
        if k == 0:  # haematoxylin stays blue-purple: absorbs red clearly more than blue
            v[2] = min(v[2], v[0] - 0.12)
        out.append((v / np.linalg.norm(v)).astype(np.float32))
    return out[0], out[1]


def _od_to_rgb(od: np.ndarray, white: np.ndarray) -> np.ndarray:
    """Beer-Lambert: ``(H, W, 3)`` optical density (natural log) -> float RGB in 0..255."""
    return (255.0 * white[None, None, :] * np.exp(-od)).astype(np.float32)


def _jpeg_like(rgb: np.ndarray, quality: float) -> np.ndarray:
    """8x8 DCT quantisation in YCbCr with 2x2 chroma subsampling (baseline JPEG, IJG tables).

    Args:
        rgb: ``(H, W, 3)`` float image in 0..255.
        quality: IJG quality 1..100.
    Returns:
        ``(H, W, 3)`` float image in 0..255 with JPEG blocking/ringing artefacts.
    """
    h, w = rgb.shape[:2]
    ph, pw = (-h) % 16, (-w) % 16
    x = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge").astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    q = quality
    s = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
    ql = np.clip(np.floor((_JPEG_Q_LUMA * s + 50) / 100), 1, 255)
    qc = np.clip(np.floor((_JPEG_Q_CHROMA * s + 50) / 100), 1, 255)

    def code(ch: np.ndarray, qt: np.ndarray) -> np.ndarray:
        hh, ww = ch.shape
        blocks = (ch - 128.0).reshape(hh // 8, 8, ww // 8, 8).transpose(0, 2, 1, 3)
        coef = sfft.dctn(blocks, axes=(2, 3), norm="ortho", workers=1)
        coef = np.round(coef / qt) * qt
        out = sfft.idctn(coef, axes=(2, 3), norm="ortho", workers=1) + 128.0
        return out.transpose(0, 2, 1, 3).reshape(hh, ww)

    def sub(ch: np.ndarray) -> np.ndarray:
        hh, ww = ch.shape
        return ch.reshape(hh // 2, 2, ww // 2, 2).mean(axis=(1, 3))

    y = code(y, ql)
    cb = np.repeat(np.repeat(code(sub(cb), qc), 2, axis=0), 2, axis=1)
    cr = np.repeat(np.repeat(code(sub(cr), qc), 2, axis=0), 2, axis=1)
    out = np.stack([y + 1.402 * (cr - 128),
                    y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                    y + 1.772 * (cb - 128)], axis=-1)
    return out[:h, :w].astype(np.float32)


def _finish_brightfield(
    od: np.ndarray, p: _Params, shape: tuple[int, int], jpeg_default: Callable[[], float]
) -> np.ndarray:
    """Optics, white balance, illumination, noise and JPEG for a brightfield OD stack."""
    rng = p.rng
    blur = p.get("blur", lambda: float(rng.choice([rng.uniform(0.3, 1.0), rng.uniform(1.0, 2.2)], p=[0.8, 0.2])),
                 _check_number(0, 10, "blur"))
    noise = p.get("noise", lambda: float(rng.uniform(0.5, 4.0)), _check_number(0, 50, "noise"))
    jpeg = p.get("jpeg_quality", jpeg_default, _check_number(0, 100, "jpeg_quality"))
    vignetting = p.get("vignetting", lambda: float(rng.choice([0.0, rng.uniform(0.02, 0.25)], p=[0.6, 0.4])),
                       _check_number(0, 1, "vignetting"))
    whitept = np.clip(1.0 - np.abs(rng.normal(0, 0.02, 3)), 0.88, 1.0).astype(np.float32)
    bg_od = np.abs(rng.normal(0, 0.01, 3)).astype(np.float32)
    od = od + bg_od
    for c in range(3):
        od[..., c] = _blur(od[..., c], blur)
    rgb = _od_to_rgb(od, whitept)
    if vignetting > 0:
        rgb *= _illumination(shape, vignetting, vignetting, rng)[..., None]
    rgb += rng.normal(0, noise, rgb.shape).astype(np.float32)
    if jpeg > 0:
        rgb = _jpeg_like(np.clip(rgb, 0, 255), jpeg)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _nucleus_profiles(
    scene: _Scene, shape: tuple[int, int], dens: np.ndarray, vesicular: np.ndarray,
    centre_level: np.ndarray, tex_amp: np.ndarray, chroma: np.ndarray,
) -> np.ndarray:
    """Accumulate a nuclear stain density map from per-nucleus darkness and chromatin pattern.

    ``dens`` is each nucleus' rim/peak density; vesicular nuclei fall to ``centre_level``
    times that in the centre (open chromatin, marginated to the membrane).
    """
    out = np.zeros(shape, np.float32)
    for fp in scene.footprints:
        i = fp.index
        d = np.minimum(fp.d, 1.0)
        if vesicular[i]:
            prof = centre_level[i] + (1 - centre_level[i]) * np.exp(-(((1.0 - d) / 0.22) ** 2))
        else:
            prof = 0.85 + 0.15 * (1 - d * d)
        t = np.clip(1.0 + tex_amp[i] * chroma[fp.sl], 0.3, None)
        out[fp.sl] += (dens[i] * fp.cover) * prof * t
    return out


def _red_blood_cells(scene: _Scene, shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Eosin density of unlabelled red blood cells: small biconcave discs (~7 um) in clumps.

    ``fraction`` is roughly the tile area they cover; they avoid nuclei (never labelled).
    """
    h, w = shape
    # an RBC is ~7 um across, about the size of a lymphocyte nucleus: scale with the nuclei
    typical_r = float(np.median(scene.nuclei.r)) if len(scene.nuclei) else 5.0
    r_rbc = float(np.clip(rng.uniform(0.5, 0.9) * max(typical_r, 3.0), 2.0, 6.0))
    n = int(fraction * h * w / (math.pi * r_rbc**2))
    if n == 0:
        return np.zeros(shape, np.float32)
    pops = [_Population(n, r_rbc, 0.08, (1.0, 1.3), 0.03, region=None,
                        clusters=max(1, n // 25), cluster_spread=3.0)]
    cand = _draw_population(pops[0], 0, shape, (1.5, 8.0), rng)
    cells = _select(cand, [n], float(rng.uniform(0.6, 0.95)), rng)
    out = np.zeros(shape, np.float32)
    dens = rng.uniform(0.9, 1.5, len(cells))
    for fp in _rasterise(cells, shape, rng):
        d = np.minimum(fp.d, 1.0)
        out[fp.sl] = np.maximum(out[fp.sl], dens[fp.index] * fp.cover * (0.75 + 0.25 * d * d))
    return out * (scene.nucleus_distance > 1.0)


def _he(shape: tuple[int, int], p: _Params) -> tuple[np.ndarray, np.ndarray]:
    rng = p.rng
    scene = _brightfield_scene(shape, p, (3.0, 22.0))
    h_scale = p.get("hematoxylin", lambda: _loguniform(rng, 0.7, 1.5), _check_number(0, 5, "hematoxylin"))
    e_scale = p.get("eosin", lambda: _loguniform(rng, 0.35, 1.4), _check_number(0, 5, "eosin"))
    stain_jitter = p.get("stain_jitter", lambda: float(rng.uniform(0.0, 0.08)), _check_number(0, 0.5, "stain_jitter"))
    vesicular_frac = p.get("vesicular_fraction", lambda: float(rng.uniform(0.0, 1.0)),
                           _check_number(0, 1, "vesicular_fraction"))
    texture = p.get("texture", lambda: float(rng.uniform(0.1, 0.5)), _check_number(0, 1, "texture"))
    h_vec, e_vec = _stain_vectors(rng, stain_jitter)
    nuc = scene.nuclei
    n = len(nuc)
    mean_r = float(p.values["mean_radius"])

    # nuclei: haematoxylin density per kind
    dens = rng.uniform(1.1, 1.9, n)
    vesicular = (rng.random(n) < vesicular_frac) & (nuc.kind == _NORMAL)
    centre = rng.uniform(0.35, 0.6, n)
    dens[vesicular] *= rng.uniform(0.8, 1.0, int(vesicular.sum()))
    lym = nuc.kind == _LYMPHO
    dens[lym] = rng.uniform(1.7, 2.5, int(lym.sum()))
    spindle = nuc.kind == _SPINDLE
    dens[spindle] = rng.uniform(1.2, 2.0, int(spindle.sum()))
    dens[nuc.kind == _METAPHASE] = 2.6
    tex_amp = texture * rng.uniform(0.5, 1.5, n)
    tex_amp[vesicular] *= 1.6
    fine = _bandpass_field(shape, 0.5, float(rng.uniform(1.0, 2.0)), rng)
    clumps = _bandpass_field(shape, 0.8 + 0.1 * mean_r, 1.5 + 0.3 * mean_r, rng)
    chroma = 0.5 * fine + 0.5 * clumps
    nuc_h = _nucleus_profiles(scene, shape, dens, vesicular, centre, tex_amp, chroma)
    # nucleoli: prominent in vesicular nuclei (dark magenta dots)
    ves_idx = np.flatnonzero(vesicular)
    ys, xs, amps, _ = _spots_in(nuc, ves_idx, rng, count_mean=1.2, spread=0.35)
    nucleoli = _spot_map(shape, ys, xs, amps, max(0.6, 0.1 * mean_r))

    # tissue: fibrous stroma, cells with per-cell cytoplasm tone, faint membranes
    grain = float(rng.uniform(0.1, 0.3))
    fine_t = _noise_field(shape, 0.8, rng)
    e_stroma = 0.55 * (0.3 + 0.7 * scene.fibres) * (1 + grain * fine_t)
    cell_tone = rng.lognormal(0.0, 0.2, int(scene.labels.max(initial=0)) + 1).astype(np.float32)
    cell_tone[0] = 1.0
    cyto_tex = _noise_field(shape, float(rng.uniform(0.8, 2.0)), rng)
    e_cyto = 0.45 * cell_tone[scene.territories] * (1 + 1.2 * grain * cyto_tex) + 0.25 * scene.membranes
    h_cyto = float(rng.uniform(0.03, 0.15)) * (1 + 0.3 * fine_t)
    stroma_w = np.clip(1 - scene.epi - scene.white, 0, 1)
    E = e_scale * (stroma_w * e_stroma + scene.epi * e_cyto)
    H = h_scale * (scene.epi * h_cyto + stroma_w * 0.04)
    if rng.random() < 0.4:  # retraction artefact: a clear halo around nuclei
        halo = float(rng.uniform(0.3, 0.8)) * np.exp(-scene.nucleus_distance / float(rng.uniform(0.8, 2.0)))
        halo *= scene.nucleus_distance > 0
        E *= 1 - halo
        H *= 1 - halo
    E = E + e_scale * 0.02 * scene.white
    rbc_frac = p.get("rbc", lambda: float(rng.choice([0.0, rng.uniform(0.02, 0.2)], p=[0.55, 0.45])),
                     _check_number(0, 0.8, "rbc"))
    if rbc_frac > 0:
        E = E + e_scale * _red_blood_cells(scene, shape, rbc_frac, rng)
    inside = nuc_h > 0
    E = np.where(inside, E * 0.5 + 0.15 * e_scale, E)  # nuclei hold little eosin
    H = H + h_scale * (nuc_h + 0.6 * nucleoli * (scene.labels > 0))
    E = E + e_scale * 0.5 * nucleoli * (scene.labels > 0)
    od = H[..., None] * h_vec + E[..., None] * e_vec
    image = _finish_brightfield(od, p, shape, lambda: float(rng.choice([0.0, rng.uniform(55, 95)], p=[0.2, 0.8])))
    return image, scene.labels


def _ihc(shape: tuple[int, int], p: _Params) -> tuple[np.ndarray, np.ndarray]:
    rng = p.rng
    scene = _brightfield_scene(shape, p, (3.0, 22.0))
    positive = p.get("positive_fraction", lambda: float(rng.uniform(0.05, 0.9)),
                     _check_number(0, 1, "positive_fraction"))
    h_scale = p.get("hematoxylin", lambda: _loguniform(rng, 0.35, 0.9), _check_number(0, 5, "hematoxylin"))
    dab_scale = p.get("dab", lambda: _loguniform(rng, 0.6, 1.3), _check_number(0, 5, "dab"))
    dab_background = p.get("dab_background", lambda: float(rng.uniform(0.0, 0.12)),
                           _check_number(0, 2, "dab_background"))
    stain_jitter = p.get("stain_jitter", lambda: float(rng.uniform(0.0, 0.06)), _check_number(0, 0.5, "stain_jitter"))
    texture = p.get("texture", lambda: float(rng.uniform(0.15, 0.5)), _check_number(0, 1, "texture"))
    h_vec, _ = _stain_vectors(rng, stain_jitter)
    dab_vec = np.clip(_DAB_OD / np.linalg.norm(_DAB_OD) + rng.normal(0, stain_jitter, 3), 0.02, None)
    dab_vec = (dab_vec / np.linalg.norm(dab_vec)).astype(np.float32)
    nuc = scene.nuclei
    n = len(nuc)
    mean_r = float(p.values["mean_radius"])
    pos = rng.random(n) < positive
    pos &= nuc.kind != _LYMPHO if rng.random() < 0.5 else np.ones(n, bool)
    # weak / moderate / strong positivity, as scored in IHC
    level = np.where(pos, rng.choice([0.35, 0.7, 1.1], n, p=[0.3, 0.4, 0.3]) * rng.uniform(0.75, 1.2, n), 0.0)
    h_dens = rng.uniform(0.7, 1.4, n) * np.where(pos, 0.5, 1.0)
    h_dens[nuc.kind == _LYMPHO] *= 1.5
    no_ves = np.zeros(n, bool)
    vesicular = rng.random(n) < 0.4
    centre = rng.uniform(0.35, 0.7, n)
    fine = _bandpass_field(shape, 0.5, float(rng.uniform(1.0, 2.0)), rng)
    clumps = _bandpass_field(shape, 0.8 + 0.1 * mean_r, 1.5 + 0.3 * mean_r, rng)
    chroma = 0.5 * fine + 0.5 * clumps
    tex = texture * rng.uniform(0.5, 1.5, n)
    H = h_scale * _nucleus_profiles(scene, shape, h_dens, vesicular, centre, tex, chroma)
    D = dab_scale * _nucleus_profiles(scene, shape, level, no_ves, centre, tex * 1.2, fine)
    fine_t = _noise_field(shape, 1.5, rng)
    stroma_w = np.clip(1 - scene.epi - scene.white, 0, 1)
    H = H + h_scale * (0.05 * stroma_w * (0.4 + 0.6 * scene.fibres) + 0.08 * scene.epi * (1 + 0.3 * fine_t)
                       + 0.1 * scene.membranes)
    D = D + dab_scale * dab_background * (scene.epi + 0.4 * stroma_w) * (1 + 0.3 * fine_t)
    od = H[..., None] * h_vec + D[..., None] * dab_vec
    image = _finish_brightfield(od, p, shape, lambda: float(rng.choice([0.0, rng.uniform(60, 95)], p=[0.3, 0.7])))
    return image, scene.labels


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
_RENDERERS: dict[str, Callable[[tuple[int, int], _Params], tuple[np.ndarray, np.ndarray]]] = {
    "fluorescence": _fluorescence,
    "confocal": _confocal,
    "he": _he,
    "ihc": _ihc,
}


def generate_tile(
    style: str,
    size: int | tuple[int, int] = 256,
    rng: np.random.Generator | int | None = None,
    **overrides: Any,
) -> SyntheticTile:
    """Draw one synthetic microscopy tile with its instance labels.

    Args:
        style: one of :data:`STYLES` (``"fluorescence"``, ``"he"``, ``"ihc"``).
        size: tile side in px, or ``(height, width)``; at least :data:`MIN_SIZE`.
        rng: a :class:`numpy.random.Generator` (consumed), an int seed, or None for fresh
            OS entropy. The same seed always gives the same tile.
        **overrides: fix any tile parameter instead of drawing it, e.g.
            ``radius_range=(6, 12)``, ``n_nuclei=20``, ``coverage=0.3``, ``bit_depth=16``,
            ``architecture="gland"``. :func:`style_parameter_names` lists the names; an
            unknown name raises :class:`SyntheticError`.

    Returns:
        A :class:`SyntheticTile`: ``image`` ``(H, W)`` uint8/uint16 (fluorescence) or
        ``(H, W, 3)`` uint8 (he, ihc); ``labels`` ``(H, W)`` int32 with ids ``1..N``.
    """
    _check_style(style)
    shape = _parse_size(size)
    gen = _as_rng(rng)
    params = _Params(gen, overrides)
    image, labels = _RENDERERS[style](shape, params)
    values = params.finish(style)
    values["n_objects"] = int(labels.max(initial=0))
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    return SyntheticTile(image=image, labels=labels.astype(np.int32, copy=False), style=style, params=values)


def style_parameter_names(style: str) -> tuple[str, ...]:
    """Names of the parameters of ``style`` that :func:`generate_tile` accepts as overrides."""
    _check_style(style)
    names: set[str] = set()
    # parameters drawn conditionally (e.g. on bit depth) show up across a few draws
    for seed in range(4):
        tile = generate_tile(style, 64, seed)
        names |= set(tile.params)
    names.discard("n_objects")
    return tuple(sorted(names))


def tile_rng(seed: int, style: str, index: int) -> np.random.Generator:
    """Generator of tile ``index`` of ``style`` in a seeded stream of tiles.

    ``SeedSequence(entropy=seed, spawn_key=(STYLES.index(style), index))``: the one seeding rule
    of :func:`iter_tiles`, :func:`make_dataset` and the evaluation sets
    (:func:`segdiff_core.evaluation.runner.synthetic_items`); a style gets the same tiles
    whichever other styles are drawn.
    """
    key = (STYLES.index(style), int(index))
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=key))




def pick_objects(labels: np.ndarray, k: int, rng: np.random.Generator, min_area: int = 16) -> np.ndarray:
    """Up to ``k`` distinct object ids of ``labels`` (H, W) with at least ``min_area`` pixels.

    Drawn without replacement with ``rng`` (one ``rng.choice`` call; an empty array, and no draw,
    when no object is large enough). The one object-picking rule of training
    (:class:`segdiff_core.training.data.SyntheticSource`) and evaluation.
    """
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[areas >= min_area]
    if ids.size == 0:
        return ids
    return rng.choice(ids, size=min(int(k), ids.size), replace=False)


def _check_styles(styles: str | Iterable[str]) -> tuple[str, ...]:
    out = (styles,) if isinstance(styles, str) else tuple(styles)
    if not out:
        raise SyntheticError("styles is empty; pass at least one of " + ", ".join(STYLES))
    for s in out:
        _check_style(s)
    return out


def iter_tiles(
    styles: str | Iterable[str] = TRAIN_STYLES,
    n: int | None = None,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    **overrides: Any,
) -> Iterator[SyntheticTile]:
    """Stream tiles, cycling through ``styles`` (tile ``k`` has style ``styles[k % len]``).

    The ``j``-th tile of a style is drawn from its own generator derived from
    ``(seed, style, j)``: the stream is reproducible, any prefix of it is the same whatever
    ``n`` is, and it matches the tiles :func:`make_dataset` writes for the same seed.
    ``n=None`` streams forever. ``overrides`` are passed to every :func:`generate_tile` call.

    Yields:
        :class:`SyntheticTile` objects.
    """
    styles_t = _check_styles(styles)
    _parse_size(size)
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
        raise SyntheticError(f"n must be a non-negative int or None, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SyntheticError(f"seed must be a non-negative int, got {seed!r}")
    k = 0
    while n is None or k < n:
        style = styles_t[k % len(styles_t)]
        yield generate_tile(style, size, tile_rng(int(seed), style, k // len(styles_t)), **overrides)
        k += 1


def make_dataset(
    root: str | Path,
    n_per_style: int,
    styles: str | Iterable[str] = TRAIN_STYLES,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    **overrides: Any,
) -> list[str]:
    """Write a folder dataset of synthetic tiles.

    Layout: ``root/images/<name>.tif`` (the image, as generated) and ``root/masks/<name>.tif``
    (``int32`` instance labels), with ``<name> = <style>_<index:05d>``, plus
    ``root/synthetic_manifest.json`` recording each tile's style, seed and parameters.
    Tile ``i`` of a style is the ``i``-th tile of that style in
    ``iter_tiles(styles, seed=seed)``, so it is reproducible from ``seed`` alone.

    Returns:
        The tile names written, in order.
    """
    import tifffile

    styles_t = _check_styles(styles)
    if isinstance(n_per_style, bool) or not isinstance(n_per_style, (int, np.integer)) or n_per_style < 1:
        raise SyntheticError(f"n_per_style must be a positive int, got {n_per_style!r}")
    shape = _parse_size(size)
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    manifest: list[dict[str, Any]] = []
    for style in dict.fromkeys(styles_t):
        for i in range(int(n_per_style)):
            tile = generate_tile(style, shape, tile_rng(int(seed), style, i), **overrides)
            name = f"{style}_{i:05d}"
            photometric = "rgb" if tile.image.ndim == 3 else "minisblack"
            tifffile.imwrite(img_dir / f"{name}.tif", tile.image, photometric=photometric, compression="zlib")
            tifffile.imwrite(mask_dir / f"{name}.tif", tile.labels, photometric="minisblack", compression="zlib")
            names.append(name)
            manifest.append({"name": name, "style": style, "seed": int(seed), "index": i, "params": tile.params})
    (root / "synthetic_manifest.json").write_text(json.dumps(manifest, indent=1))
    return names
