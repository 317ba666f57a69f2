"""Brightfield tissue (``"he"``, ``"ihc"``): parameter tables, tissue scene and stain rendering."""
from __future__ import annotations

import io
import math
from types import SimpleNamespace

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.color import combine_stains
from skimage.segmentation import expand_labels

from ._fields import anisotropic_field, blur, chromatin, illumination, noise_field, soft_threshold, warp
from ._fields import spot_map
from ._fluorescence import radius_rows
from ._layout import LYMPHO, METAPHASE, NORMAL, SPINDLE, Population, candidates, count_for, layout
from ._layout import select_nuclei, draw_population, rasterise, spots_in
from ._params import Param, Params, Rule, by, choice, const, log_uniform, maybe, one_of, table, uniform

ARCHITECTURES = ("epithelium", "stroma", "mixed", "gland", "lymphoid")
_BLUR = Rule(lambda p: float(p.rng.choice([p.rng.uniform(0.3, 1.0), p.rng.uniform(1.0, 2.2)], p=[0.8, 0.2])),
             "U(0.3, 1) (0.8), U(1, 2.2) (0.2)")
_STAIN_JITTER, _TEXTURE = "random change of the stain colours", "chromatin texture amplitude"
SCENE: tuple[Param, ...] = radius_rows(3.0, 22.0) + table(
    ("architecture", choice(ARCHITECTURES, (0.27, 0.15, 0.25, 0.2, 0.13)), one_of(ARCHITECTURES),
     "tissue layout"),
    ("coverage", by("architecture", {"epithelium": log_uniform(0.25, 0.6)}, log_uniform(0.15, 0.6)),
     (0.001, 0.9), "fraction of the cellular tissue covered by nuclei"),
    ("overlap", uniform(0.75, 1.0), (0.3, 2.0),
     "least centre distance over the sum of radii (< 1: nuclei overlap)"),
    ("radius_cv", uniform(0.1, 0.3), (0, 1), "coefficient of variation of the radii"),
    ("max_elongation", uniform(1.3, 2.3), (1, 6), "largest axis ratio of epithelial nuclei"),
    ("irregularity", uniform(0.04, 0.2), (0, 0.5), "amplitude of the outlines' Fourier perturbation"),
    ("white_fraction", maybe(0.35, uniform(0.02, 0.3)), (0, 0.9), "white space: tears, fat, lumen"),
    ("fibre_angle", uniform(0, math.pi), (-10, 10), "main direction of the collagen fibres (rad)"),
    ("lymphocyte_fraction", by("architecture", {"lymphoid": const(0.85)}, maybe(0.4, uniform(0.03, 0.25))),
     (0, 1), "lymphocytes per other nucleus"),
    ("min_area", const(5), (1, 10000, True), "smallest labelled object (px)"),
    ("n_nuclei", const(None), (0, 5000, True, True), "number of nuclei (None: from coverage)"),
)
"""Tissue architecture shared by H&E and IHC."""


def _finish_rows(jpeg: Rule) -> tuple[Param, ...]:
    """The blur, noise, JPEG and vignetting rows (drawn at the ``"finish"`` stage)."""
    return table(("blur", _BLUR, (0, 10), "optical blur (px)", "finish"),
                 ("noise", uniform(0.5, 4.0), (0, 50), "camera noise std (of 255)", "finish"),
                 ("jpeg_quality", jpeg, (0, 100), "JPEG quality (0: not compressed)", "finish"),
                 ("vignetting", maybe(0.6, uniform(0.02, 0.25)), (0, 1), "vignetting and ramp", "finish"))


HE: tuple[Param, ...] = SCENE + table(
    ("hematoxylin", log_uniform(0.7, 1.5), (0, 5), "haematoxylin amount", "stain"),
    ("eosin", log_uniform(0.35, 1.4), (0, 5), "eosin amount", "stain"),
    ("stain_jitter", uniform(0.0, 0.08), (0, 0.5), _STAIN_JITTER, "stain"),
    ("vesicular_fraction", uniform(0.0, 1.0), (0, 1), "fraction of vesicular (open) nuclei", "stain"),
    ("texture", uniform(0.1, 0.5), (0, 1), _TEXTURE, "stain"),
    ("rbc", maybe(0.55, uniform(0.02, 0.2)), (0, 0.8), "area fraction of red blood cells", "rbc"),
) + _finish_rows(maybe(0.2, uniform(55, 95)))
"""H&E: haematoxylin nuclei on eosin stroma and cytoplasm, red blood cells."""

IHC: tuple[Param, ...] = SCENE + table(
    ("positive_fraction", uniform(0.05, 0.9), (0, 1), "fraction of DAB-positive nuclei", "stain"),
    ("hematoxylin", log_uniform(0.35, 0.9), (0, 5), "haematoxylin counterstain amount", "stain"),
    ("dab", log_uniform(0.6, 1.3), (0, 5), "DAB amount", "stain"),
    ("dab_background", uniform(0.0, 0.12), (0, 2), "unspecific DAB in the tissue", "stain"),
    ("stain_jitter", uniform(0.0, 0.06), (0, 0.5), _STAIN_JITTER, "stain"),
    ("texture", uniform(0.15, 0.5), (0, 1), _TEXTURE, "stain"),
) + _finish_rows(maybe(0.3, uniform(60, 95)))
"""DAB immunohistochemistry: brown positive and pale blue negative nuclei."""


class _Scene(SimpleNamespace):
    """A brightfield tile's tissue: float32 ``(H, W)`` maps in [0, 1] and its nuclei.

    ``white`` empty space (lumen, fat, tears), ``epi`` cellular/epithelial cytoplasm, ``stroma``
    the rest, ``fibres`` collagen texture, ``membranes`` faint cell borders; ``territories`` (int32)
    the nearest nucleus label within 3 radii and ``nucleus_distance`` the distance to a nucleus (px);
    gland tiles add ``lumen``, ``dist_out`` and ``angle_field``; then ``nuclei``, ``footprints``, ``labels``.
    """


def _glands(shape: tuple[int, int], mean_r: float, rng: np.random.Generator):
    """Gland lumens: (lumen map, distance outside lumens in px, outward normal angle)."""
    h, w = shape
    n = int(rng.integers(1, 4))
    size = rng.uniform(2.5, 7.0, n) * mean_r
    lum = candidates(rng.uniform(0.1 * h, 0.9 * h, n), rng.uniform(0.1 * w, 0.9 * w, n), size,
                     rng.uniform(1.0, 2.5, n), rng.uniform(0, math.pi, n), rng.uniform(0.1, 0.3, n),
                     np.zeros(n, int), np.zeros(n, int))
    mask = np.zeros(shape, bool)
    for fp in rasterise(lum, shape, rng):
        mask[fp.sl] |= fp.inside
    if not mask.any():
        mask[h // 2, w // 2] = True
    dist = ndi.distance_transform_edt(~mask).astype(np.float32)
    gy, gx = np.gradient(blur(dist, 2.0))
    return blur(mask.astype(np.float32), 0.8), dist, np.arctan2(gy, gx).astype(np.float32)


def _regions(shape: tuple[int, int], p: Params) -> _Scene:
    """White space, cellular (epithelial) regions and stroma of the tile's architecture."""
    rng, arch = p.rng, p.architecture
    white = np.zeros(shape, np.float32)
    if p.white_fraction > 0:  # tears / fat / loose tissue
        scale = float(rng.uniform(10, 30))
        wf = noise_field(shape, scale, rng) + 0.3 * noise_field(shape, scale / 5, rng)
        white = blur(soft_threshold(wf, float(np.quantile(wf, 1 - p.white_fraction)), 0.015), 0.6)
    scene = _Scene(white=white, epi=np.zeros(shape, np.float32), angle_field=None)
    if arch == "epithelium":
        scene.epi[:] = 1.0
    elif arch in ("mixed", "lymphoid"):
        rf = noise_field(shape, float(rng.uniform(20, 50)), rng)
        level = float(np.quantile(rf, rng.uniform(0.3, 0.7)))
        scene.epi = soft_threshold(rf, level, 0.08) * (arch == "mixed")
    elif arch == "gland":
        scene.lumen, scene.dist_out, scene.angle_field = _glands(shape, p.mean_radius, rng)
        scene.white = np.maximum(white * (scene.dist_out > 6 * p.mean_radius), scene.lumen)
        band = float(rng.uniform(2.5, 4.5)) * p.mean_radius
        scene.epi = (soft_threshold(-scene.dist_out, -band, 0.5 * p.mean_radius / max(band, 1))
                     * (1 - scene.lumen))
    scene.stroma = np.clip(1.0 - scene.epi, 0, 1) * (1 - scene.white)
    scene.epi = scene.epi * (1 - scene.white)
    return scene


def _populations(shape: tuple[int, int], p: Params, s: _Scene) -> list[Population]:
    """Epithelial (or columnar gland), spindle stromal, lymphocyte and mitotic nuclei."""
    rng, mean_r, arch, area = p.rng, p.mean_radius, p.architecture, shape[0] * shape[1]
    epi_area, str_area = float(s.epi.mean()) * area, float(s.stroma.mean()) * area
    n_epi = count_for(p.coverage, epi_area, mean_r) if epi_area > area * 0.02 else 0
    if arch == "gland":  # columnar epithelium: a crowded row of nuclei at a fixed distance from the lumen
        off = float(rng.uniform(1.2, 2.2)) * mean_r
        ring = np.exp(-(((s.dist_out - off) / (0.7 * mean_r)) ** 2)).astype(np.float32) * (1 - s.lumen)
        n_epi = int(1.5 * float(ring.sum()) / (math.pi * mean_r**2 / max(p.max_elongation, 1.8))) + 1
    n_str = int(round(str_area * p.coverage * rng.uniform(0.08, 0.3) / (math.pi * mean_r**2)))
    n_lym = int(round(p.lymphocyte_fraction * ((n_epi + n_str) if arch != "lymphoid"
                                               else count_for(p.coverage, area, mean_r * 0.6))))
    if p.n_nuclei is not None:
        total = max(n_epi + n_str + n_lym, 1)
        n_epi, n_str = (int(round(p.n_nuclei * x / total)) for x in (n_epi, n_str))
        n_lym = p.n_nuclei - n_epi - n_str
    pops = []
    if n_epi and arch == "gland":
        pops.append(Population(n_epi, mean_r, p.radius_cv, (1.3, max(p.max_elongation, 1.8)), p.irregularity,
                               angle_field=s.angle_field, angle_jitter=0.25, region=ring))
    elif n_epi:
        pops.append(Population(n_epi, mean_r, p.radius_cv, (1.0, p.max_elongation), p.irregularity,
                               region=s.epi))
    fib_angle = (p.fibre_angle + 0.6 * noise_field(shape, 60.0, rng)).astype(np.float32)
    if n_str:
        pops.append(Population(n_str, mean_r * rng.uniform(0.7, 0.9), 0.2, (2.5, 5.5), 0.08, kind=SPINDLE,
                               angle_field=fib_angle, angle_jitter=0.2, region=s.stroma))
    if n_lym:
        lym_region = np.clip((1 - s.white) if arch == "lymphoid" else (s.stroma + 0.3 * s.epi), 0, 1)
        clusters = 0 if arch == "lymphoid" else (0 if rng.random() < 0.5 else max(1, n_lym // 12))
        pops.append(Population(n_lym, max(p.radius_range[0], min(mean_r * 0.65, 7.0)), 0.1, (1.0, 1.25), 0.05,
                               kind=LYMPHO, region=lym_region, clusters=clusters, cluster_spread=2.5))
    if n_epi and rng.random() < 0.25:
        pops.append(Population(int(rng.integers(1, 3)), mean_r * 0.8, 0.1, (1.5, 2.5), 0.3, kind=METAPHASE,
                               region=s.epi))
    return pops


def _scene(shape: tuple[int, int], p: Params) -> _Scene:
    """Draw the scene parameters, then the tissue, its nuclei, collagen fibres and cells."""
    p.draw()
    s = _regions(shape, p)
    rr = p.radius_range
    s.nuclei, s.footprints, s.labels = layout(_populations(shape, p, s), shape, (min(rr[0], 2.0), rr[1]),
                                              p.overlap, p.min_area, p.rng)
    rng, angle, across = p.rng, p.fibre_angle, float(p.rng.uniform(1.0, 3.0))  # collagen: wavy fibre bundles
    fib = anisotropic_field(shape, float(rng.uniform(8, 30)), across, angle, rng)
    if rng.random() < 0.6:  # a second bundle direction, blended in patches
        along = float(rng.uniform(8, 30))
        other = anisotropic_field(shape, along, across, angle + float(rng.uniform(0.4, 1.4)), rng)
        blend = soft_threshold(noise_field(shape, float(rng.uniform(20, 50)), rng), 0.0, 0.3)
        fib = fib * blend + other * (1 - blend)
    fib = warp(fib, float(rng.uniform(4, 15)), float(rng.uniform(15, 40)), rng)
    s.fibres = soft_threshold(fib, float(rng.uniform(-0.8, 0.4)), float(rng.uniform(0.2, 0.6)))
    # cell borders in cellular regions: Voronoi edges of nucleus territories
    s.territories = expand_labels(s.labels, p.mean_radius * 3.0)
    any_nucleus = s.labels.max() > 0
    s.nucleus_distance = (ndi.distance_transform_edt(s.labels == 0) if any_nucleus
                          else np.full(shape, np.inf)).astype(np.float32)
    s.membranes, s.stroma_w = np.zeros(shape, np.float32), np.clip(1 - s.epi - s.white, 0, 1)
    if any_nucleus and s.epi.max() > 0:
        edge = np.zeros(shape, bool)
        edge[:-1] |= s.territories[:-1] != s.territories[1:]
        edge[:, :-1] |= s.territories[:, :-1] != s.territories[:, 1:]
        s.membranes = blur((edge & (s.labels == 0)).astype(np.float32), 0.7) * s.epi
    return s


# Ruifrok & Johnston optical density vectors (RGB) and Macenko's H&E references
_H_OD, _E_OD = np.array([0.650, 0.704, 0.286]), np.array([0.072, 0.990, 0.105])
_DAB_OD = np.array([0.268, 0.570, 0.776])
_MACENKO_H, _MACENKO_E = np.array([0.5626, 0.7201, 0.4062]), np.array([0.2159, 0.8012, 0.5581])
_LOG_ADJUST = -np.log(1e-6)  # combine_stains scales its input by this
_CHROMATIN = (0.5, 1.0, 2.0), (0.1, 0.3), 0.5  # fine band, clump scale, even mix


def _unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length."""
    return v / np.linalg.norm(v)


def _stain_vectors(rng: np.random.Generator, jitter: float, dab: bool) -> tuple[np.ndarray, np.ndarray]:
    """H and E (or, with ``dab``, DAB) optical density unit vectors near the Ruifrok/Macenko references."""
    t = rng.uniform(0.0, 1.0)
    out = []
    for k, (ref_a, ref_b) in enumerate(((_H_OD, _MACENKO_H), (_E_OD, _MACENKO_E))):
        v = np.clip((1 - t) * _unit(ref_a) + t * _unit(ref_b) + rng.normal(0, jitter, 3), 0.02, None)
        if k == 0:  # haematoxylin stays blue-purple: absorbs red clearly more than blue
            v[2] = min(v[2], v[0] - 0.12)
        out.append(_unit(v).astype(np.float32))
    if dab:
        out[1] = _unit(np.clip(_unit(_DAB_OD) + rng.normal(0, jitter, 3), 0.02, None)).astype(np.float32)
    return out[0], out[1]


def jpeg(rgb: np.ndarray, quality: float) -> np.ndarray:
    """``rgb`` ``(H, W, 3)`` float 0..255 after a round trip through Pillow's JPEG encoder."""
    buffer = io.BytesIO()
    image = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
    image.save(buffer, "JPEG", quality=round(quality))
    return np.asarray(Image.open(buffer), dtype=np.float32)


def _finish(p: Params, densities: tuple[np.ndarray, ...], vectors: tuple[np.ndarray, ...]) -> np.ndarray:
    """Blur, Beer-Lambert colour (``combine_stains``), white balance, illumination, noise, JPEG; uint8 RGB."""
    rng, shape = p.rng, densities[0].shape
    p.draw("finish")
    whitept = np.clip(1.0 - np.abs(rng.normal(0, 0.02, 3)), 0.88, 1.0).astype(np.float32)
    background_od = np.abs(rng.normal(0, 0.01, 3)).astype(np.float32)
    amounts = np.stack([blur(d, p.blur) for d in densities] + [np.ones(shape, np.float32)], axis=-1)
    stains = np.stack([*vectors, background_od])
    rgb = (255.0 * whitept * combine_stains(amounts / _LOG_ADJUST, stains)).astype(np.float32)
    if p.vignetting > 0:
        rgb *= illumination(shape, p.vignetting, p.vignetting, rng)[..., None]
    rgb += rng.normal(0, p.noise, rgb.shape).astype(np.float32)
    if p.jpeg_quality > 0:
        rgb = jpeg(rgb, p.jpeg_quality)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _nucleus_profiles(s: _Scene, dens: np.ndarray, vesicular: np.ndarray, centre_level: np.ndarray,
                      tex_amp: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Nuclear stain density: each nucleus' darkness ``dens`` times its chromatin pattern.

    Vesicular nuclei fall to ``centre_level`` times that in the centre (open chromatin,
    marginated to the membrane).
    """
    out = np.zeros(s.labels.shape, np.float32)
    for fp in s.footprints:
        i, d = fp.index, np.minimum(fp.d, 1.0)
        prof = (centre_level[i] + (1 - centre_level[i]) * fp.rim(0.22)) if vesicular[i] else 0.85 + 0.15 * (1 - d * d)
        out[fp.sl] += fp.stained(dens[i], prof, tex_amp[i], chroma, 0.3)
    return out


def _red_blood_cells(s: _Scene, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Eosin density of unlabelled red blood cells (about ``fraction`` of the tile): clumps of
    small biconcave discs (~7 um, the size of a lymphocyte nucleus) away from the nuclei."""
    shape = s.labels.shape
    typical_r = float(np.median(s.nuclei.r)) if len(s.nuclei) else 5.0
    r_rbc = float(np.clip(rng.uniform(0.5, 0.9) * max(typical_r, 3.0), 2.0, 6.0))
    n = int(fraction * shape[0] * shape[1] / (math.pi * r_rbc**2))
    out = np.zeros(shape, np.float32)
    if n == 0:
        return out
    pop = Population(n, r_rbc, 0.08, (1.0, 1.3), 0.03, clusters=max(1, n // 25), cluster_spread=3.0)
    cands = draw_population(pop, 0, shape, (1.5, 8.0), rng)
    cells = select_nuclei(cands, [n], float(rng.uniform(0.6, 0.95)), rng)
    dens = rng.uniform(0.9, 1.5, len(cells))
    for fp in rasterise(cells, shape, rng):
        d = np.minimum(fp.d, 1.0)
        out[fp.sl] = np.maximum(out[fp.sl], dens[fp.index] * fp.cover * (0.75 + 0.25 * d * d))
    return out * (s.nucleus_distance > 1.0)


def _he_stains(shape: tuple[int, int], p: Params, s: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin: nuclei (dense, vesicular, lymphocytes, spindles), nucleoli, fibrous
    stroma, cells with their own cytoplasm tone, retraction halos and red blood cells."""
    rng, nuc, n = p.rng, s.nuclei, len(s.nuclei)
    dens = rng.uniform(1.1, 1.9, n)
    vesicular = (rng.random(n) < p.vesicular_fraction) & (nuc.kind == NORMAL)
    centre = rng.uniform(0.35, 0.6, n)
    dens[vesicular] *= rng.uniform(0.8, 1.0, int(vesicular.sum()))
    for kind, lo, hi in ((LYMPHO, 1.7, 2.5), (SPINDLE, 1.2, 2.0)):
        dens[nuc.kind == kind] = rng.uniform(lo, hi, int((nuc.kind == kind).sum()))
    dens[nuc.kind == METAPHASE] = 2.6
    tex_amp = p.texture * rng.uniform(0.5, 1.5, n)
    tex_amp[vesicular] *= 1.6
    chroma = chromatin(shape, p.mean_radius, rng, *_CHROMATIN)[1]
    nuc_h = _nucleus_profiles(s, dens, vesicular, centre, tex_amp, chroma)
    # nucleoli: prominent in vesicular nuclei (dark magenta dots)
    ys, xs, amps, _ = spots_in(nuc, np.flatnonzero(vesicular), rng, count_mean=1.2, spread=0.35)
    nucleoli = spot_map(shape, ys, xs, amps, max(0.6, 0.1 * p.mean_radius)) * (s.labels > 0)
    grain = float(rng.uniform(0.1, 0.3))
    fine_t = noise_field(shape, 0.8, rng)
    e_stroma = 0.55 * (0.3 + 0.7 * s.fibres) * (1 + grain * fine_t)
    cell_tone = rng.lognormal(0.0, 0.2, int(s.labels.max(initial=0)) + 1).astype(np.float32)
    cell_tone[0] = 1.0
    cyto_tex = noise_field(shape, float(rng.uniform(0.8, 2.0)), rng)
    e_cyto = 0.45 * cell_tone[s.territories] * (1 + 1.2 * grain * cyto_tex) + 0.25 * s.membranes
    h_cyto = float(rng.uniform(0.03, 0.15)) * (1 + 0.3 * fine_t)
    E = p.eosin * (s.stroma_w * e_stroma + s.epi * e_cyto)
    H = p.hematoxylin * (s.epi * h_cyto + s.stroma_w * 0.04)
    if rng.random() < 0.4:  # retraction artefact: a clear halo around nuclei
        halo = float(rng.uniform(0.3, 0.8)) * np.exp(-s.nucleus_distance / float(rng.uniform(0.8, 2.0)))
        halo *= s.nucleus_distance > 0
        E, H = E * (1 - halo), H * (1 - halo)
    E = E + p.eosin * 0.02 * s.white
    p.draw("rbc")
    if p.rbc > 0:
        E = E + p.eosin * _red_blood_cells(s, p.rbc, p.rng)
    E = np.where(nuc_h > 0, E * 0.5 + 0.15 * p.eosin, E)  # nuclei hold little eosin
    E = E + p.eosin * 0.5 * nucleoli
    return H + p.hematoxylin * (nuc_h + 0.6 * nucleoli), E


def _ihc_stains(shape: tuple[int, int], p: Params, s: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and DAB: weak, moderate or strong positive nuclei, pale blue negative ones."""
    rng, nuc, n = p.rng, s.nuclei, len(s.nuclei)
    pos = rng.random(n) < p.positive_fraction
    pos &= nuc.kind != LYMPHO if rng.random() < 0.5 else np.ones(n, bool)
    level = np.where(pos, rng.choice([0.35, 0.7, 1.1], n, p=[0.3, 0.4, 0.3]) * rng.uniform(0.75, 1.2, n), 0.0)
    h_dens = rng.uniform(0.7, 1.4, n) * np.where(pos, 0.5, 1.0)
    h_dens[nuc.kind == LYMPHO] *= 1.5
    vesicular = rng.random(n) < 0.4
    centre = rng.uniform(0.35, 0.7, n)
    fine, chroma = chromatin(shape, p.mean_radius, rng, *_CHROMATIN)
    tex = p.texture * rng.uniform(0.5, 1.5, n)
    H = p.hematoxylin * _nucleus_profiles(s, h_dens, vesicular, centre, tex, chroma)
    D = p.dab * _nucleus_profiles(s, level, np.zeros(n, bool), centre, tex * 1.2, fine)
    fine_t = noise_field(shape, 1.5, rng)
    H = H + p.hematoxylin * (0.05 * s.stroma_w * (0.4 + 0.6 * s.fibres) + 0.08 * s.epi * (1 + 0.3 * fine_t)
                             + 0.1 * s.membranes)
    D = D + p.dab * p.dab_background * (s.epi + 0.4 * s.stroma_w) * (1 + 0.3 * fine_t)
    return H, D


def render_brightfield(shape: tuple[int, int], p: Params, style: str) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(H, W, 3)`` uint8 and labels of an H&E or DAB IHC tile drawn with ``p``."""
    s = _scene(shape, p)
    p.draw("stain")
    vectors = _stain_vectors(p.rng, p.stain_jitter, style == "ihc")
    return _finish(p, (_he_stains if style == "he" else _ihc_stains)(shape, p, s), vectors), s.labels
