"""The stage-2 denoising network eps_theta and the reverse chain of Eq. 16 (paper Sec. 3.3).

The denoiser reads Concat(Z'_t, t, x_S2) as the paper writes it. Time enters as one
scalar, the noise level sqrt(1 - alpha_bar_t) of Z'_t (DiffIR feeds a scalar t / (10 T);
the noise level carries the same information for the trained schedule and keeps its
meaning when the chain is re-spaced to another number of steps, Fig. 6).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lrdif.diffusion.schedule import NoiseSchedule, Parameterization


class Denoiser(nn.Module):
    """eps_theta: an MLP from Concat(Z'_t (C), noise level (1), x_S2 (C)) to C values.

    Its output is the noise estimate (``eps`` parameterisation) or the estimate of Z_0
    (``x0``); which one is decided by how :func:`reverse_process` uses it. Hidden width
    2C and LeakyReLU(0.1) as in DiffIR's denoiser; the last layer is linear because a
    noise estimate (and Z_0 under ``eps``) takes both signs.
    """

    def __init__(self, *, epr_dim: int, num_layers: int = 4) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"the denoiser needs >= 2 layers, got {num_layers}")
        hidden = 2 * epr_dim
        layers: list[nn.Module] = [nn.Linear(2 * epr_dim + 1, hidden), nn.LeakyReLU(0.1)]
        for _ in range(num_layers - 2):
            layers += [nn.Linear(hidden, hidden), nn.LeakyReLU(0.1)]
        layers.append(nn.Linear(hidden, epr_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z_t: Tensor, noise_level: Tensor, x_s2: Tensor) -> Tensor:
        """z_t (B, C), noise_level () or (B, 1), x_s2 (B, C) -> (B, C)."""
        level = noise_level.expand(z_t.shape[0], 1)
        return self.net(torch.cat([z_t, level, x_s2], dim=1))  # (B, 2C + 1) -> (B, C)


def reverse_process(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    *,
    x_s2: Tensor,
    z_T: Tensor,
    parameterization: Parameterization,
) -> Tensor:
    """Run Eq. 16 for t = T .. 1 from ``z_T`` (B, C) and return Z'_0 (B, C).

    Every step is differentiable: in training the gradients of the loss flow through
    all T denoiser calls into the denoiser and into x_S2 (FPEN_S2). The loop is over a
    handful of steps, each a (B, C) MLP call, so it unrolls into a fixed ONNX graph.
    """
    z = z_T
    for t in range(schedule.timesteps, 0, -1):
        out = denoiser(z, schedule.noise_level(t, z), x_s2)
        z = schedule.step(out, t, z, parameterization)
    return z
