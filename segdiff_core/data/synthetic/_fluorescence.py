"""Fluorescent nuclei (``"fluorescence"``: widefield, ``"confocal"``): parameter tables and renderer."""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from ._fields import blur, chromatin, illumination, noise_field, spot_map
from ._layout import APOPTOTIC, DAUGHTERS, METAPHASE, NORMAL, Population, count_for, finalise_labels, layout
from ._layout import spots_in
from ._params import Param, Params, Rule, by, choice, const, log_uniform, maybe, one_of, pair, table
from ._params import uniform, with_draws


def _mean_radius(p: Params) -> float:
    """Draw of the typical radius within ``radius_range``."""
    lo, hi = p.radius_range
    return log_uniform(lo * 1.15, max(hi * 0.6, lo * 1.2))(p) if hi > lo else lo


def radius_rows(lo: float, hi: float) -> tuple[Param, Param]:
    """The ``radius_range`` (default ``(lo, hi)``, high end clipped to side/2) and ``mean_radius`` rows."""
    return table(("radius_range", Rule(lambda p: (lo, min(hi, min(p.shape) / 2)),
                                       f"({lo:g}, {hi:g}), high clipped to side/2"),
                  pair(1.5, "side/2"), "smallest and largest nucleus radius (px)"),
                 ("mean_radius", Rule(_mean_radius, "logU(1.15 low, max(0.6 high, 1.2 low))"),
                  ("radius low", "radius high"), "typical nucleus radius (px)"))


def _by_context(culture: Rule, tissue: Rule) -> Rule:
    """One distribution for cultured cells, another for tissue."""
    return by("context", {"culture": culture, "tissue": tissue})


_HAZE = _by_context(log_uniform(0.02, 0.15), log_uniform(0.02, 0.3))
_OFFSET = Rule(lambda p: float(p.rng.choice([100.0, 200.0, 500.0, p.rng.uniform(90, 600)])),
               "one of 100, 200, 500, U(90, 600)")
FLUORESCENCE: tuple[Param, ...] = radius_rows(4.0, 40.0) + table(
    ("context", choice(("culture", "tissue"), (0.6, 0.4)), one_of(("culture", "tissue")),
     "cultured cells (sparse, round) or a tissue section (crowded, irregular)"),
    ("coverage", _by_context(log_uniform(0.03, 0.45), log_uniform(0.2, 0.65)), (0.001, 0.9),
     "fraction of the tile covered by nuclei"),
    ("n_nuclei", Rule(lambda p: count_for(p.coverage, p.shape[0] * p.shape[1], p.mean_radius),
                      "coverage x area / (pi mean_radius^2)"), (0, 5000, True), "number of nuclei placed"),
    ("arrangement", choice(("uniform", "clustered"), (0.55, 0.45)), one_of(("uniform", "clustered")),
     "nuclei spread uniformly or gathered in clusters"),
    ("overlap", _by_context(uniform(0.72, 1.05), uniform(0.62, 0.92)), (0.3, 2.0),
     "least centre distance over the sum of radii (< 1: nuclei overlap)"),
    ("radius_cv", uniform(0.08, 0.3), (0, 1), "coefficient of variation of the radii"),
    ("max_elongation", _by_context(uniform(1.2, 2.4), uniform(1.2, 3.0)), (1, 6), "largest axis ratio"),
    ("irregularity", _by_context(uniform(0.02, 0.12), uniform(0.06, 0.25)), (0, 0.5),
     "amplitude of the outlines' Fourier perturbation"),
    ("mitotic_fraction", maybe(0.3, uniform(0.01, 0.08)), (0, 1),
     "fraction of metaphase, daughter-pair and apoptotic nuclei"),
    ("bit_depth", choice((8, 16)), one_of((8, 16)), "image type: uint8 or uint16"),
    ("peak_photons", log_uniform(20, 3000), (1, 1e6), "photons at the 99.5th percentile of the signal"),
    ("read_noise", Rule(lambda p: min(log_uniform(0.5, 6.0)(p), 0.15 * p.peak_photons),
                        "min(logU(0.5, 6), 0.15 peak_photons)"), (0, 1000), "camera read noise (electrons)"),
    ("psf_sigma", uniform(0.7, 2.5), (0, 10), "sigma of the in-focus PSF core (px)"),
    ("halo_fraction", maybe(0.25, uniform(0.1, 0.45)), (0, 0.9), "share of the light in the PSF halo"),
    ("halo_sigma", uniform(3.0, 10.0), (0, 50), "sigma of the PSF halo (px)"),
    ("defocus_fraction", maybe(0.35, uniform(0.05, 0.5)), (0, 1), "fraction of nuclei out of focus"),
    ("defocus_sigma", uniform(1.5, 6.0), (0, 20), "extra blur of the deepest focus level (px)"),
    ("bright_fraction", maybe(0.3, uniform(0.03, 0.2)), (0, 1), "fraction of 1.8-4x brighter nuclei"),
    ("label_convention", const("half_max"), one_of(("half_max", "geometric")),
     "outline at half of each nucleus' blurred peak, or the drawn shape"),
    ("global_blur", maybe(0.7, uniform(0.5, 2.0)), (0, 10), "blur of the whole image (px)"),
    ("intensity_cv", uniform(0.1, 0.45), (0, 2), "coefficient of variation of nucleus brightness"),
    ("texture", uniform(0.05, 0.45), (0, 1), "chromatin texture amplitude"),
    ("rim_fraction", maybe(0.5, uniform(0.2, 1.0)), (0, 1), "probability of a bright rim"),
    ("nucleoli", uniform(0.0, 0.7), (0, 1), "dark nucleoli, 2x this per nucleus on average"),
    ("chromocentres", maybe(0.65, uniform(0.2, 0.8)), (0, 1),
     "bright chromocentres, 8x this per nucleus on average"),
    ("background", log_uniform(0.01, 0.15), (0, 1), "background, relative to the median nucleus"),
    ("haze", _HAZE, (0, 2), "out-of-focus haze, relative to the signal"),
    ("cytoplasm", maybe(0.6, uniform(0.02, 0.12)), (0, 1), "cytoplasm autofluorescence"),
    ("vignetting", uniform(0.0, 0.6), (0, 1), "illumination fall-off towards an off-centre edge"),
    ("gradient", uniform(0.0, 0.5), (0, 1.5), "linear illumination ramp"),
    ("debris", Rule(lambda p: int(p.rng.poisson(p.rng.uniform(0, 12) * p.shape[0] * p.shape[1] / 65536)),
                    "Poisson(U(0, 12) per 256 x 256 px)"), (0, 100000, True), "unlabelled specks and blobs"),
    ("min_area", const(5), (1, 10000, True), "smallest labelled object (px)"),
    ("camera_offset", by("bit_depth", {8: const(0.0), 16: _OFFSET}), (0, 60000),
     "camera offset of 16-bit tiles (ADU)", "camera"),
    ("max_adu", by("bit_depth", {8: const(255.0), 16: log_uniform(600, 4000)}), (1, 65535),
     "level of the brightest 16-bit pixels (ADU)", "camera"),
)
"""Widefield DAPI/Hoechst: PSF with a sharp core and a wide halo, three focus depths."""

CONFOCAL: tuple[Param, ...] = with_draws(
    FLUORESCENCE, peak_photons=log_uniform(5, 400), psf_sigma=uniform(0.4, 1.1), halo_fraction=const(0.0),
    defocus_sigma=uniform(1.0, 3.0), haze=Rule(lambda p: _HAZE(p) * 0.2, f"0.2 x ({_HAZE})"))
"""Confocal optics: thin PSF, no halo, dim out-of-focus nuclei (optical sectioning), few photons."""

# metaphase plates, daughter pairs, apoptotic bodies: radius (x mean), radius cv, elongation, irregularity
_MITOTIC = {METAPHASE: (0.7, 0.15, (2.2, 3.8), 0.15), DAUGHTERS: (0.9, 0.1, (1.0, 1.0), 0.05),
            APOPTOTIC: (0.45, 0.25, (1.0, 1.3), 0.05)}
_Look = namedtuple("_Look", "intensity flat rim texture focus")  # per nucleus; focus level 0..2


def _populations(p: Params) -> list[Population]:
    """The main population (uniform or clustered) and the mitotic ones."""
    rng, n_target = p.rng, p.n_nuclei
    n_mit = int(rng.binomial(n_target, min(p.mitotic_fraction, 1.0))) if n_target else 0
    n_main = max(n_target - n_mit, 0)
    clusters = max(1, int(round(n_main / rng.uniform(4, 25)))) if p.arrangement == "clustered" else 0
    pops = [Population(n_main, p.mean_radius, p.radius_cv, (1.0, p.max_elongation), p.irregularity,
                       clusters=clusters, cluster_spread=float(rng.uniform(1.5, 4.0)))]
    kinds = rng.choice(list(_MITOTIC), size=n_mit, p=[0.35, 0.35, 0.3]) if n_mit else np.zeros(0)
    for kind, (rel_r, cv, elong, irr) in _MITOTIC.items():
        if (kinds == kind).any():
            pops.append(Population(int((kinds == kind).sum()), p.mean_radius * rel_r, cv, elong, irr,
                                   kind=kind))
    return pops


def _appearance(p: Params, nuclei: np.recarray, confocal: bool) -> _Look:
    """Brightness, dome flatness, rim, texture amplitude and focus level of each nucleus."""
    rng, n = p.rng, len(nuclei)
    sig = math.sqrt(math.log1p(p.intensity_cv**2))
    inten = rng.lognormal(-sig**2 / 2, sig, n)
    inten *= (nuclei.r / p.mean_radius) ** rng.uniform(-0.5, 0.3)  # bigger (G2) nuclei hold a bit more DNA
    inten = np.maximum(inten, 0.3)
    special = nuclei.kind != NORMAL
    inten[special] *= rng.uniform(1.6, 3.0, int(special.sum()))
    bright = rng.random(n) < p.bright_fraction  # brighter neighbours (G2, mitotic, other cell types)
    inten[bright] *= rng.uniform(1.8, 4.0, int(bright.sum()))
    flat = rng.uniform(0.15, 0.7, n)  # exponent of the dome profile: small = flat top
    rim = np.where(rng.random(n) < p.rim_fraction, rng.uniform(0.15, 0.6, n), 0.0)
    tex = p.texture * rng.uniform(0.5, 1.5, n)
    tex[special] = np.maximum(tex[special], 0.5)
    focus = np.zeros(n, int)
    if p.defocus_fraction > 0:
        focus = np.where(rng.random(n) < p.defocus_fraction, rng.integers(1, 3, n), 0)
        if confocal:  # optical sectioning: out-of-focus nuclei are dim
            inten = np.where(focus > 0, inten * rng.uniform(0.2, 0.6, n), inten)
    return _Look(inten, flat, rim, tex, focus)


def _paint(p: Params, fps: list, look: _Look, labels: np.ndarray, sigmas: np.ndarray):
    """Textured nuclei summed per focus level (3 layers), and the labels.

    With ``label_convention="half_max"`` the labels are drawn the way people annotate
    fluorescence: each nucleus' smooth profile (no texture) blurred with its own optical blur
    ``sigmas[i]`` (PSF core, defocus, global blur; not the halo, which only lifts the local
    background), cut at half of its maximum, hole-filled, painted in z-order and cleaned.
    """
    (h, w), chroma = labels.shape, chromatin(labels.shape, p.mean_radius, p.rng, (0.6, 1.2, 2.2), (0.12, 0.35))[1]
    layers, half_max = [np.zeros((h, w), np.float32) for _ in range(3)], np.zeros((h, w), np.int32)
    for k, fp in enumerate(fps):
        i, d, (ys, xs) = fp.index, np.minimum(fp.d, 1.0), fp.sl
        prof = (1.0 - d * d) ** look.flat[i]
        if look.rim[i]:
            prof = prof + look.rim[i] * fp.rim(0.17)
        layers[look.focus[i]][fp.sl] += fp.stained(look.intensity[i], prof, look.texture[i], chroma, 0.2)
        pad = int(math.ceil(3.0 * float(sigmas[i]))) + 1
        ya, yb = max(ys.start - pad, 0), min(ys.stop + pad, h)
        xa, xb = max(xs.start - pad, 0), min(xs.stop + pad, w)
        win = np.zeros((yb - ya, xb - xa), np.float32)
        win[ys.start - ya : ys.stop - ya, xs.start - xa : xs.stop - xa] = fp.cover * prof
        if sigmas[i] > 0.05:
            win = ndi.gaussian_filter(win, float(sigmas[i]), mode="nearest", truncate=3.0)
        if win.max() > 0:
            half_max[ya:yb, xa:xb][ndi.binary_fill_holes(win >= 0.5 * float(win.max()))] = k + 1
    if p.label_convention == "half_max" and fps:
        labels = finalise_labels(half_max, p.min_area)
    return layers, labels


def _add_spots(p: Params, nuclei: np.recarray, inten: np.ndarray, layers: list, labels: np.ndarray) -> None:
    """Nucleoli (dark, DAPI-excluded holes) and chromocentres (bright foci), into ``layers``."""
    rng, shape, normal = p.rng, labels.shape, np.flatnonzero(nuclei.kind == NORMAL)
    if p.nucleoli > 0 and len(normal):
        ys, xs, amps, _ = spots_in(nuclei, normal, rng, count_mean=2.0 * p.nucleoli, spread=0.45)
        holes = spot_map(shape, ys, xs, amps * rng.uniform(0.3, 0.7), max(0.7, 0.16 * p.mean_radius))
        for lay in layers:
            lay *= 1.0 - np.clip(holes, 0, 0.85)
    if p.chromocentres > 0 and len(normal):
        ys, xs, amps, owner = spots_in(nuclei, normal, rng, count_mean=8.0 * p.chromocentres, spread=0.75)
        amps = amps * inten[owner] * rng.uniform(0.4, 1.0)
        foci = spot_map(shape, ys, xs, amps, max(0.6, 0.07 * p.mean_radius))
        layers[0] += foci * (labels > 0)


def _surroundings(p: Params, signal: np.ndarray, labels: np.ndarray, n: int, ref: float) -> np.ndarray:
    """Cytoplasm autofluorescence, haze, background, debris, global blur and illumination."""
    rng, shape, img = p.rng, signal.shape, signal
    if p.cytoplasm > 0 and n:
        territory = expand_labels(labels, p.mean_radius * rng.uniform(0.8, 2.0))
        cyto = blur(((territory > 0) & (labels == 0)).astype(np.float32), p.mean_radius * 0.3 + 1)
        img = img + p.cytoplasm * ref * cyto * (1 + 0.3 * noise_field(shape, 3.0, rng))
    if p.haze > 0:
        img = img + p.haze * blur(signal, float(rng.uniform(6, 20)))
    bgf = 1.0 + 0.35 * noise_field(shape, float(rng.uniform(15, 60)), rng)
    img = img + p.background * ref * np.clip(bgf, 0.2, None)
    if p.debris:
        k = rng.binomial(p.debris, 0.7)  # sharp bright specks, the rest dim out-of-focus blobs
        img = img + sum(spot_map(shape, rng.uniform(0, shape[0], n), rng.uniform(0, shape[1], n),
                                 ref * rng.uniform(*amp, n), float(rng.uniform(*sig)))
                        for n, amp, sig in ((k, (0.2, 1.5), (0.5, 1.2)), (p.debris - k, (0.05, 0.3), (3, 8))))
    img = blur(img, p.global_blur) if p.global_blur > 0 else img
    return img * illumination(shape, p.vignetting, p.gradient, rng)


def _camera(p: Params, img: np.ndarray) -> np.ndarray:
    """Photons -> Poisson -> read noise -> hot pixels -> offset and gain -> uint8 or uint16."""
    rng, shape, photons = p.rng, img.shape, p.peak_photons
    scale = photons / max(float(np.percentile(img, 99.5)), 1e-6)
    electrons = rng.poisson(np.clip(img * scale, 0, None)).astype(np.float32)
    electrons += rng.normal(0, p.read_noise, shape).astype(np.float32)
    hot = rng.random(shape) < rng.uniform(0, 2e-4)
    electrons[hot] += rng.uniform(0.5, 3.0, int(hot.sum())) * photons
    p.draw("camera")
    if p.bit_depth == 16:
        gain = max(p.max_adu - p.camera_offset, 200.0) / photons  # effective ADU per photo-electron
        return np.clip(np.round(p.camera_offset + gain * electrons), 0, 65535).astype(np.uint16)
    black = float(np.percentile(electrons, rng.uniform(0.5, 30)))
    white = float(np.percentile(electrons, 99.7)) * rng.uniform(0.75, 1.25)
    scaled = np.clip((electrons - black) / max(white - black, 1e-6), 0, 1) ** rng.uniform(0.75, 1.25)
    return np.round(scaled * 255).astype(np.uint8)


def render_fluorescence(shape: tuple[int, int], p: Params, style: str) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(H, W)`` uint8/uint16 and labels of a fluorescence or confocal tile drawn with ``p``."""
    p.draw()
    rr = p.radius_range
    nuclei, fps, labels = layout(_populations(p), shape, (min(rr[0], p.mean_radius * 0.3), rr[1]), p.overlap,
                                 p.min_area, p.rng)
    look = _appearance(p, nuclei, style == "confocal")
    blur_of_focus = p.psf_sigma + p.defocus_sigma * np.array([0.0, 0.6, 1.0])
    layers, labels = _paint(p, fps, look, labels, np.hypot(blur_of_focus[look.focus], p.global_blur))
    _add_spots(p, nuclei, look.intensity, layers, labels)
    signal = blur(layers[0], p.psf_sigma)
    if p.defocus_fraction > 0:
        signal += blur(layers[1], blur_of_focus[1]) + blur(layers[2], blur_of_focus[2])
    if p.halo_fraction > 0:  # widefield PSF: a sharp core plus a wide, weak halo
        signal = (1.0 - p.halo_fraction) * signal + p.halo_fraction * blur(signal, p.halo_sigma)
    ref = float(np.median(look.intensity)) if len(nuclei) else 1.0
    return _camera(p, _surroundings(p, signal, labels, len(nuclei), ref)), labels
