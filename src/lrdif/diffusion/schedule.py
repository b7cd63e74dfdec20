"""The weight-free noise schedule of the stage-2 diffusion on the EPR (paper Sec. 3.3).

Indexing follows the paper: steps are ``t = 1 .. T``; ``Z_0 = Z`` is the clean EPR and
``Z_T`` the most noisy one. ``alphas[t - 1]`` holds alpha_t and ``alphas_cumprod[t - 1]``
holds alpha_bar_t = prod_{i <= t} alpha_i, with alpha_bar_0 = 1 implied.

- :meth:`NoiseSchedule.add_noise` is the forward process q(Z_t | Z) (Eq. 14).
- :meth:`NoiseSchedule.step` is one reverse step Z_t -> Z_{t-1} (Eq. 16), without added
  sampling noise, so a reverse chain is deterministic given its start.

Coefficients are gathered per sample and broadcast over any trailing shape, so the
same object serves (B, C) EPRs and any other tensor rank.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

BetaSchedule = Literal["linear_sqrt", "linear"]
Parameterization = Literal["x0", "eps"]


def make_betas(kind: BetaSchedule, *, start: float, end: float, timesteps: int) -> np.ndarray:
    """beta_1 .. beta_T (float64, shape (T,)).

    ``linear_sqrt`` spaces sqrt(beta) linearly from ``start`` to ``end`` and squares it
    (DiffIR's schedule: 0.1 .. 0.99 over T = 4 gives beta ~ [0.1, 0.294, 0.591, 0.99]).
    ``linear`` spaces beta itself linearly from ``start`` to ``end``.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if not 0.0 < start <= end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {start} and {end}")
    if kind == "linear_sqrt":
        if end**2 >= 1.0:
            raise ValueError(f"linear_sqrt: beta_end**2 must be < 1, got {end}")
        return np.linspace(math.sqrt(start), math.sqrt(end), timesteps) ** 2
    if kind == "linear":
        return np.linspace(start, end, timesteps)
    raise ValueError(f"unknown beta schedule {kind!r}; known: 'linear_sqrt', 'linear'")


class NoiseSchedule:
    """alpha_t, alpha_bar_t of a T-step schedule and the two operations that use them.

    All coefficients are computed in float64 and stored as float32 CPU tensors; they
    are moved to the device and dtype of the tensors they multiply at use.
    """

    def __init__(self, alphas_cumprod: Tensor | np.ndarray) -> None:
        abar = torch.as_tensor(np.asarray(alphas_cumprod, dtype=np.float64))
        if abar.ndim != 1 or len(abar) < 1:
            raise ValueError(f"alphas_cumprod must be a non-empty vector, got {tuple(abar.shape)}")
        previous = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        if not (torch.all(abar > 0) and torch.all(abar < previous)):
            raise ValueError("alphas_cumprod must decrease strictly from below 1 and stay > 0")
        alphas = abar / previous
        self.timesteps = len(abar)
        self.alphas = alphas.float()  # (T,) alpha_t = 1 - beta_t
        self.betas = (1.0 - alphas).float()  # (T,)
        self.alphas_cumprod = abar.float()  # (T,) alpha_bar_t
        # Posterior q(Z_{t-1} | Z_t, Z_0) mean = c0 * Z_0 + ct * Z_t (DDPM, Ho et al. 2020).
        self._posterior_c0 = (previous.sqrt() * (1.0 - alphas) / (1.0 - abar)).float()
        self._posterior_ct = (alphas.sqrt() * (1.0 - previous) / (1.0 - abar)).float()
        # Eq. 16 coefficients: Z_{t-1} = (Z_t - (1 - a_t) / sqrt(1 - abar_t) * eps) / sqrt(a_t).
        self._eps_scale = ((1.0 - alphas) / (1.0 - abar).sqrt()).float()
        self._inv_sqrt_alpha = (1.0 / alphas.sqrt()).float()

    @classmethod
    def build(
        cls,
        *,
        timesteps: int = 4,
        beta_schedule: BetaSchedule = "linear_sqrt",
        beta_start: float = 0.1,
        beta_end: float = 0.99,
    ) -> NoiseSchedule:
        """The schedule used for training: betas from :func:`make_betas`."""
        betas = make_betas(beta_schedule, start=beta_start, end=beta_end, timesteps=timesteps)
        return cls(np.cumprod(1.0 - betas))

    def respaced(self, steps: int) -> NoiseSchedule:
        """The same noise range covered in ``steps`` reverse steps (inference only).

        Step t of T sits at fraction t / T of the chain. The new schedule interpolates
        log(alpha_bar) piecewise-linearly over the points (0, log 1) and (t / T,
        log alpha_bar_t), and samples it at fractions j / steps, j = 1 .. steps. So it
        starts from exactly the trained alpha_bar_T (same start distribution), ends at
        Z_0, and ``respaced(T)`` is the trained schedule itself. The denoiser is told
        the noise level (:meth:`noise_level`), not the step index, so it sees values of
        the range it was trained on.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if steps == self.timesteps:
            return self
        trained = self.alphas_cumprod.double().numpy()
        xp = np.arange(self.timesteps + 1) / self.timesteps
        fp = np.concatenate([[0.0], np.log(trained)])
        wanted = np.arange(1, steps + 1) / steps
        return NoiseSchedule(np.exp(np.interp(wanted, xp, fp)))

    @staticmethod
    def _at(coeffs: Tensor, t: int | Tensor, like: Tensor) -> Tensor:
        """Coefficient of step ``t`` (int or (B,) long, 1-based) shaped to broadcast on ``like``."""
        coeffs = coeffs.to(device=like.device, dtype=like.dtype)
        if isinstance(t, int):
            return coeffs[t - 1]
        return coeffs[t.to(like.device) - 1].reshape(-1, *([1] * (like.ndim - 1)))

    def noise_level(self, t: int | Tensor, like: Tensor) -> Tensor:
        """sqrt(1 - alpha_bar_t): the std of the noise in Z_t, the denoiser's time input."""
        return self._at((1.0 - self.alphas_cumprod).sqrt(), t, like)

    def add_noise(self, z0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """A sample of q(Z_t | Z) (Eq. 14): sqrt(alpha_bar_t) Z + sqrt(1 - alpha_bar_t) noise.

        z0, noise: (B, ...) same shape; t: int or (B,) in 1..T.
        """
        abar = self._at(self.alphas_cumprod, t, z0)
        return abar.sqrt() * z0 + (1.0 - abar).sqrt() * noise

    def predict_z0(self, eps: Tensor, t: int | Tensor, z_t: Tensor) -> Tensor:
        """The Z_0 implied by a noise estimate: (Z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        abar = self._at(self.alphas_cumprod, t, z_t)
        return (z_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()

    def step(
        self, model_output: Tensor, t: int | Tensor, z_t: Tensor, parameterization: Parameterization
    ) -> Tensor:
        """One reverse step Z_t -> Z_{t-1}, with no sampling noise added.

        ``eps``: ``model_output`` is the noise estimate; Eq. 16 with the printed typo
        fixed: Z_{t-1} = (Z_t - (1 - alpha_t) / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t)
        (the paper prints sqrt(1 - alpha_t) in the denominator; DDPM's mean, which the
        equation is, has sqrt(1 - alpha_bar_t)).
        ``x0``: ``model_output`` is the estimate of Z_0; the result is the mean of the
        posterior q(Z_{t-1} | Z_t, Z_0 = estimate). Both agree when the estimates agree
        (eps <-> Z_0 through :meth:`predict_z0`); at t = 1 both return Z_0 exactly.
        """
        if parameterization == "eps":
            scale = self._at(self._eps_scale, t, z_t)
            return self._at(self._inv_sqrt_alpha, t, z_t) * (z_t - scale * model_output)
        if parameterization == "x0":
            c0 = self._at(self._posterior_c0, t, z_t)
            ct = self._at(self._posterior_ct, t, z_t)
            return c0 * model_output + ct * z_t
        raise ValueError(f"unknown parameterization {parameterization!r}; known: 'x0', 'eps'")
