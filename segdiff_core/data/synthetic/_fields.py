"""Random fields and filters of the synthetic generator; all maps are float32 ``(H, W)``."""
from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi
from scipy.special import expit


def _freq_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """rfft frequencies ``(H, 1)`` and ``(1, W // 2 + 1)`` (cycles per px), float32."""
    fy, fx = sfft.fftfreq(shape[0]).astype(np.float32), sfft.rfftfreq(shape[1]).astype(np.float32)
    return fy[:, None], fx[None, :]


def _gaussian_tf(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """rfft transfer function of a Gaussian blur of ``sigma`` px."""
    fy, fx = _freq_grid(shape)
    return np.exp(-2.0 * (math.pi * sigma) ** 2 * (fy**2 + fx**2))


def _spectral_field(shape: tuple[int, int], envelope: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Real Gaussian random field with the given rfft amplitude envelope, zero mean, unit std."""
    spec = (rng.standard_normal(envelope.shape, dtype=np.float32)
            + 1j * rng.standard_normal(envelope.shape, dtype=np.float32)) * envelope
    spec[0, 0] = 0
    out = sfft.irfft2(spec, s=shape, workers=1).astype(np.float32)
    std = float(out.std())
    return out / std if std > 0 else out


def noise_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth isotropic noise, correlation length ~``sigma`` px, zero mean, unit std."""
    return _spectral_field(shape, _gaussian_tf(shape, sigma), rng)


def bandpass_field(shape: tuple[int, int], sigma_lo: float, sigma_hi: float, rng: np.random.Generator):
    """Band-pass noise: structures between ``sigma_lo`` and ``sigma_hi`` px."""
    return _spectral_field(shape, _gaussian_tf(shape, sigma_lo) - _gaussian_tf(shape, sigma_hi), rng)


def chromatin(shape: tuple[int, int], mean_r: float, rng: np.random.Generator, fine: tuple[float, float, float],
              coarse: tuple[float, float], mix: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fine chromatin texture (band-pass ``fine[0]`` to ``U(fine[1], fine[2])`` px) and its mix
    (weight ``mix``, default ``U(0.2, 0.8)``) with clumps of ``coarse[k] mean_r + (0.8, 1.5)[k]`` px."""
    fine_t = bandpass_field(shape, fine[0], float(rng.uniform(fine[1], fine[2])), rng)
    clumps = bandpass_field(shape, coarse[0] * mean_r + 0.8, coarse[1] * mean_r + 1.5, rng)
    w = float(rng.uniform(0.2, 0.8)) if mix is None else mix
    return fine_t, w * fine_t + (1 - w) * clumps


def anisotropic_field(shape: tuple[int, int], along: float, across: float, angle: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Fibre-like noise elongated along ``angle`` (radians, from the +x axis towards +y)."""
    fy, fx = _freq_grid(shape)
    c, s = math.cos(angle), math.sin(angle)
    env = np.exp(-2.0 * math.pi**2 * ((along * (fx * c + fy * s)) ** 2 + (across * (-fx * s + fy * c)) ** 2))
    return _spectral_field(shape, env, rng)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (spatial for small ``sigma``, reflect-padded FFT for large)."""
    if sigma <= 0.05:
        return img
    if sigma <= 4.0:
        return ndi.gaussian_filter(img, sigma, mode="reflect", truncate=3.0)
    pad = int(math.ceil(2.5 * sigma))
    padded = np.pad(img, pad, mode="reflect")
    spec = sfft.rfft2(padded, workers=1) * _gaussian_tf(padded.shape, sigma)
    out = sfft.irfft2(spec, s=padded.shape, workers=1)
    return out[pad:-pad, pad:-pad].astype(np.float32)


def warp(img: np.ndarray, amplitude: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random displacement of ``img`` (``amplitude`` px, field correlation ``scale`` px)."""
    dy = noise_field(img.shape, scale, rng) * amplitude
    dx = noise_field(img.shape, scale, rng) * amplitude
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float32)
    return ndi.map_coordinates(img, [yy + dy, xx + dx], order=1, mode="mirror").astype(np.float32)


def illumination(shape: tuple[int, int], vignetting: float, gradient: float, rng: np.random.Generator):
    """Multiplicative illumination field (max 1): off-centre vignetting times a linear ramp."""
    yy = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, shape[1], dtype=np.float32)[None, :]
    cy, cx = rng.uniform(-0.8, 0.8, 2)
    field = 1.0 - vignetting * (((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    ang = rng.uniform(0, 2 * math.pi)
    field = np.clip(field * (1.0 + gradient * (math.cos(ang) * xx + math.sin(ang) * yy) / 2.0), 0.05, None)
    return (field / field.max()).astype(np.float32)


def spot_map(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, amps: np.ndarray, sigma: float):
    """Sum of Gaussian spots of peak ~``amps`` at the nearest pixels to ``(ys, xs)``."""
    out = np.zeros(shape, np.float32)
    if len(ys) == 0:
        return out
    yi = np.clip(np.round(ys).astype(int), 0, shape[0] - 1)
    xi = np.clip(np.round(xs).astype(int), 0, shape[1] - 1)
    np.add.at(out, (yi, xi), amps.astype(np.float32))
    return ndi.gaussian_filter(out, sigma, truncate=3.0) * np.float32(2 * math.pi * sigma**2)


def soft_threshold(field: np.ndarray, level: float, softness: float) -> np.ndarray:
    """Logistic step of ``field`` at ``level`` with width ``softness``."""
    return expit((field - level) / max(softness, 1e-3)).astype(np.float32)
