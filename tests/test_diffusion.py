"""The stage-2 diffusion: schedule (Eq. 14), reverse step (Eq. 16), reverse chain, denoiser."""

from __future__ import annotations

import math

import pytest
import torch

from lrdif.diffusion import Denoiser, NoiseSchedule, make_betas, reverse_process


def test_linear_sqrt_schedule_matches_diffir_numbers() -> None:
    # DiffIR's T = 4 schedule, as quoted in the reference notes.
    s = NoiseSchedule.build(timesteps=4, beta_schedule="linear_sqrt", beta_start=0.1, beta_end=0.99)
    assert torch.allclose(s.betas, torch.tensor([0.1, 0.2944, 0.5910, 0.99]), atol=5e-4)
    assert torch.allclose(s.alphas_cumprod, torch.tensor([0.9, 0.635, 0.260, 0.0026]), atol=5e-4)
    assert torch.allclose(s.alphas, 1 - s.betas)


def test_linear_schedule_and_bad_settings() -> None:
    betas = make_betas("linear", start=0.1, end=0.4, timesteps=4)
    assert betas.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        make_betas("linear", start=0.5, end=0.1, timesteps=4)
    with pytest.raises(ValueError, match="timesteps"):
        make_betas("linear", start=0.1, end=0.5, timesteps=0)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas("cosine", start=0.1, end=0.5, timesteps=4)  # type: ignore[arg-type]


@pytest.mark.parametrize("t", [1, 2, 4])
def test_forward_process_moments(t: int) -> None:
    """q(Z_t | Z) = N(sqrt(abar_t) Z, (1 - abar_t) I) (Eq. 14), by sampling."""
    s = NoiseSchedule.build()
    gen = torch.Generator().manual_seed(t)
    z0 = torch.randn(1, 16, generator=gen, dtype=torch.float64).expand(100_000, 16)
    zt = s.add_noise(z0, torch.randn(z0.shape, generator=gen, dtype=torch.float64), t)
    abar = s.alphas_cumprod[t - 1].double()
    var = 1 - abar
    n = z0.shape[0]
    # 5 standard errors of the sample mean and of the sample variance.
    assert torch.allclose(zt.mean(0), abar.sqrt() * z0[0], atol=5 * math.sqrt(var / n))
    assert torch.allclose(zt.var(0), var.expand(16), atol=5 * var * math.sqrt(2 / n))


def test_per_sample_steps_broadcast() -> None:
    s = NoiseSchedule.build()
    z0, noise = torch.randn(3, 5), torch.randn(3, 5)
    t = torch.tensor([1, 3, 4])
    batched = s.add_noise(z0, noise, t)
    for i in range(3):
        one = s.add_noise(z0[i : i + 1], noise[i : i + 1], int(t[i]))
        assert torch.allclose(batched[i], one[0])


def _oracle(z0: torch.Tensor, parameterization: str) -> torch.nn.Module:
    """A denoiser that knows Z: returns Z (x0) or the exact noise in the current Z_t (eps)."""

    class Oracle(torch.nn.Module):
        def forward(self, z_t, noise_level, x_s2):
            if parameterization == "x0":
                return z0
            abar = 1 - noise_level**2
            return (z_t - abar.sqrt() * z0) / noise_level

    return Oracle()


@pytest.mark.parametrize("parameterization", ["x0", "eps"])
@pytest.mark.parametrize("insert_noise", [True, False])
def test_oracle_denoiser_recovers_z(parameterization: str, insert_noise: bool) -> None:
    """Proves the sampler's algebra: a perfect denoiser brings Z_T back to Z exactly."""
    s = NoiseSchedule.build()
    z0 = torch.randn(8, 32, dtype=torch.float64)
    T = s.timesteps
    z_T = s.add_noise(z0, torch.randn_like(z0), T) if insert_noise else torch.zeros_like(z0)
    out = reverse_process(
        _oracle(z0, parameterization), s, x_s2=torch.zeros_like(z0), z_T=z_T,
        parameterization=parameterization,  # type: ignore[arg-type]
    )
    assert torch.allclose(out, z0, atol=1e-5, rtol=0)
    # The reverse chain really moved: its start is far from Z.
    assert (z_T - z0).abs().max() > 0.5


@pytest.mark.parametrize("steps", [1, 2, 8])
def test_oracle_recovers_z_on_respaced_chains(steps: int) -> None:
    s = NoiseSchedule.build().respaced(steps)
    z0 = torch.randn(4, 16, dtype=torch.float64)
    z_T = s.add_noise(z0, torch.randn_like(z0), steps)
    for p in ("x0", "eps"):
        out = reverse_process(_oracle(z0, p), s, x_s2=z0, z_T=z_T, parameterization=p)  # type: ignore[arg-type]
        assert torch.allclose(out, z0, atol=1e-5, rtol=0)


def test_eps_step_is_the_posterior_mean() -> None:
    """Eq. 16 (typo fixed) equals the x0 posterior mean when eps and Z_0 agree, at every t."""
    s = NoiseSchedule.build()
    z_t, eps = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 10, dtype=torch.float64)
    for t in range(1, s.timesteps + 1):
        z0_hat = s.predict_z0(eps, t, z_t)
        assert torch.allclose(s.step(eps, t, z_t, "eps"), s.step(z0_hat, t, z_t, "x0"), atol=1e-4)
        # Written out by hand from the paper's symbols (denominator sqrt(1 - alpha_bar_t)).
        a, abar = s.alphas[t - 1].double(), s.alphas_cumprod[t - 1].double()
        by_hand = (z_t - eps * (1 - a) / (1 - abar).sqrt()) / a.sqrt()
        assert torch.allclose(s.step(eps, t, z_t, "eps"), by_hand, atol=1e-4)


def test_respaced_schedule_keeps_the_end_points() -> None:
    s = NoiseSchedule.build()
    assert torch.equal(s.respaced(s.timesteps).alphas_cumprod, s.alphas_cumprod)
    for n in (1, 3, 10):
        r = s.respaced(n)
        assert r.timesteps == n
        assert r.alphas_cumprod[-1] == pytest.approx(float(s.alphas_cumprod[-1]), rel=1e-5)
        assert torch.all(r.alphas_cumprod[1:] < r.alphas_cumprod[:-1])
    with pytest.raises(ValueError, match="steps"):
        s.respaced(0)


def test_invalid_parameterization_and_schedule() -> None:
    s = NoiseSchedule.build()
    with pytest.raises(ValueError, match="parameterization"):
        s.step(torch.zeros(1, 2), 1, torch.zeros(1, 2), "v")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decrease"):
        NoiseSchedule(torch.tensor([0.5, 0.7]))


def test_denoiser_shapes_and_gradients_through_every_step() -> None:
    torch.manual_seed(0)
    s = NoiseSchedule.build()
    net = Denoiser(epr_dim=16)
    x_s2 = torch.randn(5, 16, requires_grad=True)
    z_T = torch.randn(5, 16)
    out = reverse_process(net, s, x_s2=x_s2, z_T=z_T, parameterization="x0")
    assert out.shape == (5, 16)
    out.square().sum().backward()
    assert x_s2.grad is not None and x_s2.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The chain is deterministic given its start.
    again = reverse_process(net, s, x_s2=x_s2, z_T=z_T, parameterization="x0")
    assert torch.equal(out, again)
