"""The DDPM noise scheduler: forward process, training loss and reverse steps.

Equation numbers refer to the SegDiff paper (which follows Ho et al. 2020):
- Eq. 1-3: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), alpha_t = 1 - beta_t.
- Eq. 4-5: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), abar_t = prod_{s<=t} alpha_s, so
  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
- Eq. 11-13 / Alg. 1: x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta) + sigma_t z,
  sigma_t^2 = beta_t, no noise at the last step.
- Eq. 18 / Alg. 2: loss = || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, I, t) ||^2.

With ``DiffusionConfig.prediction == "x0"`` the network predicts x_0 instead of eps and the
loss is || x_0 - x0_theta(x_t, I, t) ||^2 (Ho et al. Sec. 3.2 discuss both); the reverse steps
are the same, as both go through the predicted x_0. ``prediction == "v"`` (Salimans & Ho 2022)
learns v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0, from which x_0 = sqrt(abar_t) x_t -
sqrt(1 - abar_t) v.

``DiffusionConfig.noise_shift`` s divides every step's signal-to-noise ratio abar / (1 - abar)
by s**2 (a schedule shifted toward high noise); the betas are re-derived from the shifted abar.

The scheduler holds no sampling state: :meth:`DDPMScheduler.sampling_schedule` returns an
immutable :class:`SamplingSchedule` for a number of steps (respacing, improved-diffusion
Sec. 4) and a sampler ("ddpm" ancestral or "ddim"), so one scheduler serves many concurrent runs.
Indices t count from 0 (x_0 is the data; the chain's first noisy state is t = 0, its last t = T-1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segdiff_core.config import SAMPLERS, DiffusionConfig


@dataclass(frozen=True)
class StepOutput:
    """Result of one reverse step: the next state x_{t-1} and the model's estimate of x_0."""

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor


def _expand(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


class DDPMScheduler:
    """Linear-beta DDPM of T steps (betas scaled by 1000/T like the reference code)."""

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        self.config = config or DiffusionConfig()
        T = self.config.num_timesteps
        scale = 1000.0 / T if self.config.scale_betas else 1.0
        betas = np.linspace(scale * self.config.beta_start, scale * self.config.beta_end, T, dtype=np.float64)
        if not (betas > 0).all() or not (betas < 1).all():  # DiffusionConfig validates too
            raise ValueError(f"betas must lie in (0, 1); got {betas.min()}..{betas.max()} for T={T}")
        self.num_timesteps = T
        self.prediction = self.config.prediction
        ac = np.cumprod(1.0 - betas)
        shift2 = float(self.config.noise_shift) ** 2
        if shift2 != 1.0:  # SNR / s^2: abar' = abar / (abar + s^2 (1 - abar))
            ac = ac / (ac + shift2 * (1.0 - ac))
            betas = 1.0 - ac / np.append(1.0, ac[:-1])
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = ac
        self._sqrt_ac = torch.from_numpy(np.sqrt(self.alphas_cumprod)).float()
        self._sqrt_1m_ac = torch.from_numpy(np.sqrt(1.0 - self.alphas_cumprod)).float()

    # ------------------------------------------------------------------ training (Alg. 2)
    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """t ~ Uniform({0, ..., T-1}), shape (batch,), int64."""
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator).to(device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) in closed form (Eq. 4-5). x0, noise (B, ...), t (B,) int."""
        a = _expand(self._sqrt_ac.to(x0.device)[t], x0.ndim)
        s = _expand(self._sqrt_1m_ac.to(x0.device)[t], x0.ndim)
        return a * x0 + s * noise

    def q_step(self, x_prev: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """One forward step q(x_t | x_{t-1}) (Eq. 2): sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise."""
        return float(np.sqrt(self.alphas[t])) * x_prev + float(np.sqrt(self.betas[t])) * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """What the network learns to output: the noise (eps, the paper), x_0, or
        v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (needs ``t``, (B,) int)."""
        if self.prediction == "v":
            if t is None:
                raise ValueError("v-prediction needs the time steps t for its training target")
            a = _expand(self._sqrt_ac.to(x0.device)[t], x0.ndim)
            s = _expand(self._sqrt_1m_ac.to(x0.device)[t], x0.ndim)
            return a * noise - s * x0
        return x0 if self.prediction == "x0" else noise

    @staticmethod
    def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. 18: mean squared error between the target (the noise for eps-prediction) and
        the network's output (a scalar).

        The reference sums over pixels; the mean differs only by a constant factor absorbed
        into the learning rate.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        return torch.mean((prediction.float() - target.float()) ** 2)

    def predict_x0(self, x_t: torch.Tensor, model_output: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x_0 from the network's output: itself (x0-prediction), sqrt(abar_t) x_t -
        sqrt(1 - abar_t) v (v-prediction) or, inverting Eq. 5, x_0 = (x_t - sqrt(1 - abar_t) eps)
        / sqrt(abar_t)."""
        if self.prediction == "x0":
            return model_output
        t = torch.as_tensor(t, device=x_t.device).reshape(-1)
        a = _expand(self._sqrt_ac.to(x_t.device)[t], x_t.ndim)
        s = _expand(self._sqrt_1m_ac.to(x_t.device)[t], x_t.ndim)
        if self.prediction == "v":
            return a * x_t - s * model_output
        return (x_t - s * model_output) / a

    # ------------------------------------------------------------------ sampling (Alg. 1)
    def sampling_schedule(self, steps: int | None = None, sampler: str = "ddpm", eta: float = 0.0) -> "SamplingSchedule":
        """A reverse chain of ``steps`` steps (default: all T) for ``sampler`` 'ddpm' or 'ddim'.

        With fewer steps than T, the chain visits an evenly spaced subset of the training
        steps and its betas are respaced so that abar at each visited step is unchanged
        (improved-diffusion's respacing), so the network needs no change.
        """
        steps = self.num_timesteps if steps is None else int(steps)
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be in [1, {self.num_timesteps}], got {steps}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        visited = np.unique(np.round(np.linspace(0, self.num_timesteps - 1, steps)).astype(np.int64))
        return SamplingSchedule(self, visited[::-1].copy(), sampler, float(eta))


class SamplingSchedule:
    """An immutable reverse chain over ``timesteps`` (descending training-step indices)."""

    def __init__(self, scheduler: DDPMScheduler, timesteps: np.ndarray, sampler: str, eta: float) -> None:
        self.scheduler = scheduler
        self.timesteps = timesteps
        self.sampler = sampler
        self.eta = eta
        ac = scheduler.alphas_cumprod
        self._ac = ac[timesteps]
        self._ac_prev = np.append(ac[timesteps[1:]], 1.0)  # abar of the next visited step; x_0: 1
        # Respaced betas: beta'_i = 1 - abar_t / abar_prev (equal to beta_t with all T steps).
        self._betas = 1.0 - self._ac / self._ac_prev

    def __len__(self) -> int:
        return len(self.timesteps)

    def beta(self, i: int) -> float:
        return float(self._betas[i])

    def step(
        self,
        model_output: torch.Tensor,
        i: int,
        x_t: torch.Tensor,
        generator: torch.Generator | None = None,
        clip_denoised: bool = True,
        noise: torch.Tensor | None = None,
    ) -> StepOutput:
        """Reverse step i (0 = the noisiest), from x_t at ``timesteps[i]`` to the next state.

        Parameters
        ----------
        model_output : (B, 1, H, W) tensor
            The network's output at x_t: ``eps_theta(x_t, I, t)``, ``x0_theta`` or ``v_theta``
            (what it is follows the scheduler's ``prediction``).
        i : int
            Position in :attr:`timesteps`.
        x_t : (B, 1, H, W) tensor
            Current state.
        generator : torch.Generator, optional
            CPU generator for the step noise z (results do not depend on the device).
        clip_denoised : bool
            Clamp the predicted x_0 to [-1, 1] before forming the mean.
        noise : tensor, optional
            Explicit z instead of drawing it (tests).

        Returns
        -------
        StepOutput
        """
        ac, ac_prev, beta = float(self._ac[i]), float(self._ac_prev[i]), float(self._betas[i])
        if self.scheduler.prediction == "x0":
            pred_x0 = model_output
        elif self.scheduler.prediction == "v":
            pred_x0 = np.sqrt(ac) * x_t - np.sqrt(1.0 - ac) * model_output
        else:  # eps-prediction: x_0 from Eq. 5
            pred_x0 = (x_t - np.sqrt(1.0 - ac) * model_output) / np.sqrt(ac)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        last = i == len(self.timesteps) - 1
        if self.sampler == "ddpm":
            # Posterior mean of q(x_{t-1} | x_t, x_0) (Ho Eq. 7). With x_0 from Eq. 5 unclipped it
            # equals Alg. 1's 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps).
            alpha = 1.0 - beta
            mean = (np.sqrt(ac_prev) * beta / (1.0 - ac)) * pred_x0 + (np.sqrt(alpha) * (1.0 - ac_prev) / (1.0 - ac)) * x_t
            sigma = 0.0 if last else np.sqrt(beta)  # sigma_t^2 = beta_t (Eq. 13)
        else:
            # DDIM (Song et al. Eq. 12): deterministic for eta = 0.
            eps_hat = (x_t - np.sqrt(ac) * pred_x0) / np.sqrt(1.0 - ac)
            sigma = 0.0 if last else self.eta * np.sqrt((1.0 - ac_prev) / (1.0 - ac) * (1.0 - ac / ac_prev))
            mean = np.sqrt(ac_prev) * pred_x0 + np.sqrt(max(1.0 - ac_prev - sigma**2, 0.0)) * eps_hat
        if sigma > 0.0:
            if noise is None:
                noise = torch.randn(x_t.shape, generator=generator, dtype=torch.float32).to(x_t.device, x_t.dtype)
            mean = mean + float(sigma) * noise
        return StepOutput(prev_sample=mean, pred_x0=pred_x0)
