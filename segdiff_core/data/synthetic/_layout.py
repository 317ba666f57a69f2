"""Nucleus geometry: candidate draws, placement, rasterisation and clean instance labels."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.measure import label as connected_components
from skimage.segmentation import relabel_sequential

NORMAL, METAPHASE, DAUGHTERS, APOPTOTIC, SPINDLE, LYMPHO = range(6)  # kinds of nuclei


def candidates(*arrays: np.ndarray) -> np.recarray:
    """Nuclei as a record array: centre, radius, elongation, angle, irregularity, kind, population."""
    names = "cy,cx,r,elong,theta,irregularity,kind,pop"
    return np.rec.fromarrays([np.asarray(a) for a in arrays], names=names)


@dataclass
class Population:
    """A group of similar nuclei: how many, how big, how shaped and where."""

    n: int
    mean_radius: float
    radius_cv: float
    elong_range: tuple[float, float]
    irregularity: float
    kind: int = NORMAL
    angle_field: np.ndarray | None = None  # per-pixel preferred orientation (radians)
    angle_jitter: float = math.pi  # std of orientation around the field (pi = random)
    region: np.ndarray | None = None  # where nuclei may lie: density map (H, W) in [0, 1]
    clusters: int = 0  # >0: candidates gathered around this many cluster centres
    cluster_spread: float = 3.0  # cluster std in units of mean radius


def _centres(pop: Population, m: int, shape: tuple[int, int], rng: np.random.Generator):
    """``m`` candidate centres: uniform (with a border margin), from ``region``, or clustered."""
    h, w = shape
    if pop.clusters > 0:
        if pop.region is not None:
            ccy, ccx = _sample_density(pop.region, pop.clusters, 0.0, rng)
        else:
            ccy, ccx = rng.uniform(0, h, pop.clusters), rng.uniform(0, w, pop.clusters)
        which = rng.integers(0, pop.clusters, m)
        spread = pop.cluster_spread * pop.mean_radius
        cy, cx = ccy[which] + rng.normal(0, spread, m), ccx[which] + rng.normal(0, spread, m)
        if pop.region is not None and m:  # thin the clusters by the region
            keep = rng.random(m) < pop.region[_pixel(cy, h), _pixel(cx, w)]
            cy, cx = cy[keep], cx[keep]
        return cy, cx
    if pop.region is not None:
        return _sample_density(pop.region, m, 0.3 * pop.mean_radius, rng)
    margin = 0.6 * pop.mean_radius
    return rng.uniform(-margin, h + margin, m), rng.uniform(-margin, w + margin, m)


def _pixel(c: np.ndarray, n: int) -> np.ndarray:
    """Coordinates ``c`` as pixel indices clipped to ``[0, n)``."""
    return np.clip(c.astype(int), 0, n - 1)


def draw_population(pop: Population, pop_index: int, shape: tuple[int, int],
                    radius_range: tuple[float, float], rng: np.random.Generator) -> np.recarray:
    """About ``4 n`` candidates: log-normal radii, Beta elongations, random or field-guided angles."""
    cy, cx = _centres(pop, max(8, int(pop.n * 4 + 20)), shape, rng)
    m = len(cy)
    sigma = math.sqrt(math.log1p(pop.radius_cv**2))
    r = np.clip(pop.mean_radius * rng.lognormal(-sigma**2 / 2, sigma, m), radius_range[0], radius_range[1])
    lo, hi = pop.elong_range
    elong = np.maximum(1.0 + (hi - 1.0) * rng.beta(1.2, 2.5, m) if hi > lo else np.full(m, lo), lo)
    if pop.angle_field is not None and m:
        theta = pop.angle_field[_pixel(cy, shape[0]), _pixel(cx, shape[1])]
        theta = theta + rng.normal(0, pop.angle_jitter, m)
    else:
        theta = rng.uniform(0, math.pi, m)
    irr = pop.irregularity * rng.uniform(0.4, 1.4, m)
    return candidates(cy, cx, r, elong, theta, irr, np.full(m, pop.kind), np.full(m, pop_index))


def _sample_density(density: np.ndarray, m: int, jitter: float, rng: np.random.Generator):
    """``m`` random points distributed like the non-negative map ``density`` (+ Gaussian jitter)."""
    cdf = np.cumsum(density.ravel(), dtype=np.float64)
    if m == 0 or cdf[-1] <= 0:
        return np.zeros(0), np.zeros(0)
    flat = np.minimum(np.searchsorted(cdf, rng.random(m) * cdf[-1], side="right"), cdf.size - 1)
    yi, xi = np.divmod(flat, density.shape[1])
    cy = yi + rng.uniform(-0.5, 0.5, m) + (rng.normal(0, jitter, m) if jitter > 0 else 0.0)
    cx = xi + rng.uniform(-0.5, 0.5, m) + (rng.normal(0, jitter, m) if jitter > 0 else 0.0)
    return cy, cx


def select_nuclei(cands: np.recarray, targets: Sequence[int], overlap: float,
                  rng: np.random.Generator) -> np.recarray:
    """Random sequential placement: a candidate is taken if its population has room and it is at
    least ``overlap (r_i + r_j)`` and ``0.8 max(r_i, r_j)`` away from every taken one."""
    m = len(cands)
    if m == 0:
        return cands
    cands = cands[rng.permutation(m)]
    pts = np.stack([cands.cy, cands.cx], axis=1)
    reach = cands.r * np.sqrt(np.maximum(cands.elong, 1.0) ** 0.25)
    max_d = max(overlap * 2 * float(reach.max()), 0.8 * float(reach.max()))
    i, j = cKDTree(pts).query_pairs(max_d, output_type="ndarray").reshape(-1, 2).astype(np.intp).T
    d = np.hypot(pts[i, 0] - pts[j, 0], pts[i, 1] - pts[j, 1])
    clash = (d < overlap * (reach[i] + reach[j])) | (d < 0.8 * np.maximum(reach[i], reach[j]))
    neighbours: list[list[int]] = [[] for _ in range(m)]
    for a, b in zip(i[clash].tolist(), j[clash].tolist()):
        neighbours[a].append(b)
        neighbours[b].append(a)
    room, blocked, pop, accepted = list(targets), np.zeros(m, bool), cands.pop.tolist(), []
    for k in range(m):
        if blocked[k] or room[pop[k]] <= 0:
            continue
        accepted.append(k)
        room[pop[k]] -= 1
        blocked[neighbours[k]] = True
        if not any(x > 0 for x in room):
            break
    return cands[np.asarray(accepted, dtype=int)]


def _expand_daughters(c: np.recarray, rng: np.random.Generator) -> np.recarray:
    """Split every ``DAUGHTERS`` candidate into two small nuclei along its axis."""
    is_pair = c.kind == DAUGHTERS
    if not is_pair.any():
        return c
    p, rest = c[np.flatnonzero(is_pair)], c[np.flatnonzero(~is_pair)]
    sep = p.r * rng.uniform(0.55, 0.95, len(p))
    dy, dx = np.sin(p.theta) * sep, np.cos(p.theta) * sep
    r_d = p.r * rng.uniform(0.4, 0.55, len(p))
    out = [candidates(p.cy + sign * dy, p.cx + sign * dx, r_d * rng.uniform(0.9, 1.1, len(p)),
                      rng.uniform(1.2, 2.2, len(p)), p.theta + math.pi / 2 + rng.normal(0, 0.2, len(p)),
                      p.irregularity, p.kind, p.pop) for sign in (-1.0, 1.0)]
    return np.concatenate([rest] + out).view(np.recarray)


@dataclass
class Footprint:
    """Where one nucleus lies: bbox slices, soft coverage and normalised radius there."""

    index: int
    sl: tuple[slice, slice]
    cover: np.ndarray  # float32 soft coverage 0..1 (anti-aliased)
    d: np.ndarray  # float32 radius normalised by the boundary radius (1 on the boundary)
    inside: np.ndarray  # bool, pixel centre inside the boundary

    def rim(self, width: float) -> np.ndarray:
        """``exp(-((1 - d) / width)^2)``: 1 on the boundary, falling off inwards over ``width``."""
        return np.exp(-(((1.0 - np.minimum(self.d, 1.0)) / width) ** 2))

    def stained(self, amount: float, profile: np.ndarray, texture: float, chroma: np.ndarray,
                floor: float) -> np.ndarray:
        """``amount`` x coverage x ``profile`` x ``max(1 + texture chroma, floor)`` on ``sl``."""
        return (amount * self.cover) * profile * np.clip(1.0 + texture * chroma[self.sl], floor, None)


def _window_shapes(c: np.recarray, idx: np.ndarray, hb: int, coeff: np.ndarray, a: np.ndarray, b: np.ndarray):
    """Normalised radius ``d`` and soft coverage of nuclei ``idx`` on ``(2 hb + 1)^2`` windows."""
    win = np.arange(-hb, hb + 1, dtype=np.float32)
    oy, ox = np.floor(c.cy[idx]).astype(int), np.floor(c.cx[idx]).astype(int)
    dy = (oy - c.cy[idx]).astype(np.float32)[:, None, None] + win[None, :, None]
    dx = (ox - c.cx[idx]).astype(np.float32)[:, None, None] + win[None, None, :]
    ct = np.cos(c.theta[idx]).astype(np.float32)[:, None, None]
    st = np.sin(c.theta[idx]).astype(np.float32)[:, None, None]
    u = (dx * ct + dy * st) / a[idx].astype(np.float32)[:, None, None]
    v = (dy * ct - dx * st) / b[idx].astype(np.float32)[:, None, None]
    rho = np.sqrt(u * u + v * v) + np.float32(1e-6)
    z = (u + 1j * v) / rho
    zk, radius = z, np.ones_like(rho)
    for k in range(coeff.shape[1]):
        radius += (coeff[idx, k][:, None, None] * zk).real
        zk = zk * z
    np.clip(radius, 0.45, 1.8, out=radius)
    d = rho / radius
    scale = np.sqrt(a[idx] * b[idx]).astype(np.float32)[:, None, None]
    return oy, ox, d, np.clip((1.0 - d) * radius * scale + 0.5, 0.0, 1.0)


def rasterise(c: np.recarray, shape: tuple[int, int], rng: np.random.Generator) -> list[Footprint]:
    """Footprints of star-shaped nuclei ``c`` in their order (those off the tile dropped).

    The boundary radius in ellipse-normalised coordinates is ``1 + sum_k a_k cos(k phi + p_k)``,
    ``k = 1..6``, ``a_k ~ k^-1.4``, clipped to [0.45, 1.8]; batches share a window size.
    """
    if len(c) == 0:
        return []
    ks = np.arange(1, 7)  # complex boundary coefficients (n, 6) of harmonics 1..6
    amp = rng.standard_normal((len(c), ks.size)) / ks**1.4
    amp[:, 0] *= 0.35  # k = 1 only makes egg shapes, keep it weak
    phase = np.exp(1j * rng.uniform(0, 2 * math.pi, (len(c), ks.size)))
    coeff = ((c.irregularity[:, None] * amp) * phase).astype(np.complex64)
    a, b = c.r * np.sqrt(c.elong), c.r / np.sqrt(c.elong)
    half = np.ceil(a * np.minimum(1.0 + np.abs(coeff).sum(axis=1), 1.8) + 1.5).astype(int)
    # bucket window half-sizes so that batches share an array shape (<= ~25% padding)
    buckets = np.unique(np.ceil(1.25 ** np.ceil(np.log(np.maximum(half, 1)) / math.log(1.25))).astype(int))
    bucket_of = np.searchsorted(buckets, half)
    found: dict[int, Footprint] = {}
    for bi, hb in enumerate(buckets):
        idx = np.flatnonzero(bucket_of == bi)
        oy, ox, d, cover = _window_shapes(c, idx, hb, coeff, a, b)
        for j, i in enumerate(idx.tolist()):
            y0, x0 = oy[j] - hb, ox[j] - hb
            ya, yb = max(y0, 0), min(y0 + 2 * hb + 1, shape[0])
            xa, xb = max(x0, 0), min(x0 + 2 * hb + 1, shape[1])
            loc = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
            dj = d[j][loc]
            if yb > ya and xb > xa and (dj <= 1.0).any():
                found[i] = Footprint(i, (slice(ya, yb), slice(xa, xb)), cover[j][loc], dj, dj <= 1.0)
    return [found[i] for i in range(len(c)) if i in found]


def _neighbour_label(labels: np.ndarray, region: np.ndarray, exclude: int) -> int:
    """Most frequent non-zero label 4-adjacent to ``region`` (0 if none)."""
    vals = labels[ndi.binary_dilation(region, ndi.generate_binary_structure(2, 1)) & ~region]
    vals = vals[(vals != 0) & (vals != exclude)]
    if vals.size == 0:
        return 0
    uniq, counts = np.unique(vals, return_counts=True)
    return int(uniq[np.argmax(counts)])


def _components(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """4-connected regions of equal label: ids ``(H, W)``, and per region its label, pixel count and
    whether it is its label's largest (the first on ties)."""
    comp = connected_components(labels, background=0, connectivity=1).astype(np.int32)
    owner = np.zeros(int(comp.max(initial=0)) + 1, np.int64)
    owner[comp.ravel()] = labels.ravel()
    size, ids = np.bincount(comp.ravel(), minlength=owner.size), np.arange(1, owner.size)
    order = ids[np.lexsort((-size[ids], owner[ids]))]  # by label, then by decreasing size
    largest = np.zeros(owner.size, bool)
    largest[order[np.diff(owner[order], prepend=-1) != 0]] = True
    return comp, owner, size, largest


def finalise_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Make every object one 4-connected region of at least ``min_area`` px, ids ``1..N``: smaller
    pieces go to the adjacent object they touch most, else to background."""
    labels = labels.copy()
    for _ in range(4):
        comp, owner, size, largest = _components(labels)
        bad = np.flatnonzero(~largest[1:] | (size[1:] < min_area)) + 1
        if bad.size == 0:
            break
        slices = ndi.find_objects(comp)
        for cid in bad.tolist():
            sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in slices[cid - 1])
            frag = comp[sl] == cid
            labels[sl][frag] = _neighbour_label(labels[sl], frag, int(owner[cid]))
    else:  # still not clean after reassignment rounds: drop remaining stray pieces
        comp, _, _, largest = _components(labels)
        labels[(comp > 0) & ~largest[comp]] = 0
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)


def layout(pops: Sequence[Population], shape: tuple[int, int], radius_range: tuple[float, float],
           overlap: float, min_area: int, rng: np.random.Generator) -> tuple[np.recarray, list, np.ndarray]:
    """Accepted nuclei, their visible footprints in (random) z-order and final ``int32 (H, W)`` labels."""
    parts = [draw_population(p, k, shape, radius_range, rng) for k, p in enumerate(pops)]
    cands = np.concatenate(parts).view(np.recarray) if parts else candidates(*[np.zeros(0)] * 8)
    nuclei = _expand_daughters(select_nuclei(cands, [p.n for p in pops], overlap, rng), rng)
    nuclei = nuclei[rng.permutation(len(nuclei))]
    footprints, labels = rasterise(nuclei, shape, rng), np.zeros(shape, np.int32)
    for k, fp in enumerate(footprints):  # later footprints occlude earlier ones
        labels[fp.sl][fp.inside] = k + 1
    return nuclei, footprints, finalise_labels(labels, min_area)


def count_for(coverage: float, area: float, mean_r: float) -> int:
    """Number of nuclei of radius ``mean_r`` covering about ``coverage`` of ``area``."""
    return max(1, int(round(coverage * area / (math.pi * mean_r**2))))


def spots_in(nuclei: np.recarray, idx: np.ndarray, rng: np.random.Generator, count_mean: float,
             spread: float) -> tuple[np.ndarray, ...]:
    """``(ys, xs, amplitudes, owner)`` of random spots within ``spread`` radii of nuclei ``idx``."""
    owner = np.repeat(idx, rng.poisson(count_mean, len(idx)))
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
