"""The degradation model (lrdif.udc.degrade): light, noise statistics and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from lrdif.udc.degrade import (
    UDCConfig,
    UDCSimulator,
    _fft_size,
    linear_to_srgb,
    poisson_gaussian,
    snr_to_electrons,
    srgb_to_linear,
    stream_seed,
)
from lrdif.udc.optics import Optics

SMALL = Optics(grid=1024, oversample=3)  # fast PSF; the statistics tested do not depend on it


def simulator(**kwargs) -> UDCSimulator:
    return UDCSimulator(UDCConfig(optics=SMALL, **kwargs))


def faces(n: int, size: int = 48, rgb: bool = False, seed: int = 0) -> np.ndarray:
    """Smooth random images with structure at several scales (uint8)."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size, 3) if rgb else (n, size, size)
    coarse = rng.random((n, 6, 6, 3) if rgb else (n, 6, 6))
    up = np.kron(coarse, np.ones((size // 6, size // 6, 1) if rgb else (size // 6, size // 6)))
    noise = rng.random(shape)
    return np.clip(255 * (0.8 * up[:, :size, :size] + 0.2 * noise), 0, 255).astype(np.uint8)


def test_snr_levels_match_the_published_photon_counts() -> None:
    # reference-facts.md: L = 273 / 654 / 1608 / 4005 / 10024 give 24 / 28 / 32 / 36 / 40 dB
    for snr, photons in zip((24, 28, 32, 36, 40), (273, 654, 1608, 4005, 10024), strict=True):
        assert snr_to_electrons(snr, 4.87) == pytest.approx(photons, abs=1.0)
    assert UDCConfig(severity=0.0).snr_db == 40 and UDCConfig(severity=1.0).snr_db == 24
    assert UDCConfig().snr_db == 32


def test_srgb_round_trip() -> None:
    values = torch.linspace(0, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(values)), values)
    assert float(srgb_to_linear(torch.tensor(0.5))) == pytest.approx(0.214, abs=1e-3)


def test_mean_brightness_before_gain_follows_the_transmittance() -> None:
    sim = simulator(display="poled")  # colour cast: different T per channel
    flat = torch.full((4, 3, 32, 32), 0.3)
    electrons = sim.expose(sim.blur(flat))
    per_channel = electrons.mean(dim=(0, 2, 3)).double().numpy() / (sim.scene_photons * 0.3)
    np.testing.assert_allclose(per_channel, sim.transmittance, rtol=1e-4)
    noisy = sim.add_noise(electrons, [f"k{i}" for i in range(4)])
    measured = noisy.mean(dim=(0, 2, 3)).double().numpy() / (sim.scene_photons * 0.3)
    np.testing.assert_allclose(measured, sim.transmittance, rtol=0.01)
    # the gain restores brightness with one factor, so the colour cast stays
    out = sim.develop(noisy, grey=False).double().mean(dim=(0, 1, 2)).numpy()
    assert out[0] > out[1] > out[2]


def test_blur_conserves_light_and_centres_the_psf() -> None:
    sim = simulator()
    point = torch.zeros((1, 3, 48, 48))
    point[0, :, 24, 24] = 1.0
    blurred = sim.blur(point)[0].double().numpy()
    kernel, glare = sim.kernel(48, 48)
    r = kernel.shape[-1] // 2
    window = blurred[:, 24 - r : 24 + r + 1, 24 - r : 24 + r + 1]
    np.testing.assert_allclose(window, kernel + glare[:, None, None] / 48**2, atol=1e-6)
    flat = torch.rand((2, 3, 48, 48)).mul_(0.0).add_(0.42)
    torch.testing.assert_close(sim.blur(flat), flat, atol=2e-6, rtol=0)
    grey = torch.rand((3, 1, 40, 40))
    torch.testing.assert_close(sim.blur(grey), sim.blur(grey.expand(3, 3, 40, 40)))


@pytest.mark.parametrize("level", [40.0, 3000.0])
def test_noise_variance_follows_poisson_gaussian(level: float) -> None:
    sim = simulator()
    electrons = torch.full((16, 3, 64, 64), level)
    noisy = sim.add_noise(electrons, [f"img{i}.png" for i in range(16)]).double()
    read = sim.config.read_noise_e
    assert float(noisy.mean()) == pytest.approx(level, rel=0.005)
    assert float(noisy.var()) == pytest.approx(level + read**2, rel=0.02)


def test_noise_distribution_is_poisson_plus_gaussian() -> None:
    # Against the exact CDF of Poisson(lam) + N(0, 4.87^2) at a low count, where shot
    # noise is far from Gaussian in shape.
    lam, read = 3.0, 4.87
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    samples = poisson_gaussian(torch.full_like(z, lam), z, read).double().numpy()
    grid = np.linspace(-15, 25, 81)
    k = np.arange(40)
    exact = (stats.poisson.pmf(k, lam)[None] * stats.norm.cdf((grid[:, None] - k) / read)).sum(1)
    empirical = (samples[None, :] <= grid[:, None]).mean(1)
    assert np.abs(empirical - exact).max() < 0.004
    skew = stats.skew(poisson_gaussian(torch.full_like(z, 50.0), z, 2.0).numpy())
    assert skew == pytest.approx(50 / (50 + 4) ** 1.5, abs=0.02)  # Poisson's skewness shows


def test_full_well_clips() -> None:
    sim = simulator()
    noisy = sim.add_noise(torch.full((1, 3, 8, 8), 30000.0), ["a"])
    assert float(noisy.max()) == sim.config.full_well_e


def test_same_seed_and_key_give_the_same_image_whatever_the_batch() -> None:
    sim = simulator()
    images = faces(10)
    keys = [f"FER2013Train/fer{i:07d}.png" for i in range(10)]
    whole = sim.degrade(images, keys)
    one_by_one = np.concatenate(
        [sim.degrade(images[i : i + 1], keys[i : i + 1]) for i in range(10)]
    )
    reversed_order = sim.degrade(images[::-1].copy(), keys[::-1])[::-1]
    np.testing.assert_array_equal(whole, one_by_one)
    np.testing.assert_array_equal(whole, reversed_order)
    # a fresh simulator (another process) gives the same bytes
    np.testing.assert_array_equal(whole, simulator().degrade(images, keys))
    other_seed = simulator(seed=1).degrade(images, keys)
    assert (other_seed != whole).mean() > 0.3
    other_keys = sim.degrade(images, [k + "x" for k in keys])
    assert (other_keys != whole).mean() > 0.3
    assert stream_seed(0, "a") != stream_seed(1, "a") != stream_seed(0, "b")


def plain_blur(sim: UDCSimulator, linear: torch.Tensor) -> torch.Tensor:
    """``UDCSimulator.blur`` written plainly: ``np.pad`` (symmetric), one ``irfft2``."""
    height, width = linear.shape[-2:]
    kernel, glare = sim.kernel(height, width)
    r = kernel.shape[-1] // 2
    ph, pw = _fft_size(height + 2 * r), _fft_size(width + 2 * r)
    plane = np.zeros((3, ph, pw))
    plane[:, : 2 * r + 1, : 2 * r + 1] = kernel
    plane = np.roll(plane, (-r, -r), axis=(1, 2))  # kernel centre at (0, 0)
    spectrum = torch.fft.rfft2(torch.from_numpy(plane)).to(torch.complex64)
    padded = np.pad(linear.numpy(), ((0, 0), (0, 0), (r, r), (r, r)), mode="symmetric")
    spec = torch.fft.rfft2(torch.from_numpy(padded), s=(ph, pw)) * spectrum
    blurred = torch.fft.irfft2(spec, s=(ph, pw))[:, :, r : r + height, r : r + width]
    glare_t = torch.from_numpy(glare).float().view(3, 1, 1)
    return (blurred + glare_t * linear.mean(dim=(2, 3), keepdim=True)).clamp_min(0.0)


def plain_degrade(sim: UDCSimulator, images: np.ndarray, keys: list[str]) -> np.ndarray:
    """The model written as plainly as torch allows, op by op: the bytes ``degrade`` must give.

    :func:`plain_blur`, one fresh generator per image, clipping, and quantisation as
    counting the sRGB code boundaries at or below each pixel's electrons.
    """
    config = sim.config
    batch = torch.from_numpy(images)
    grey = batch.ndim == 3
    lut = srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255).float()
    linear = lut[batch.long()]
    linear = linear.unsqueeze(1) if grey else linear.permute(0, 3, 1, 2)
    gains = sim.transmittance / sim.mean_transmittance * sim.sensor_electrons
    electrons = plain_blur(sim, linear) * torch.from_numpy(gains).float().view(3, 1, 1)
    normals = torch.stack(
        [
            torch.randn(
                electrons.shape[1:],
                generator=torch.Generator().manual_seed(stream_seed(config.seed, key)),
            )
            for key in keys
        ]
    )
    noisy = poisson_gaussian(electrons, normals, config.read_noise_e)
    noisy = noisy.clamp(0.0, config.full_well_e).numpy()
    rgb = np.searchsorted(sim.code_boundaries, noisy, side="right")
    if grey and config.keep_grey:
        luma = (rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 32768) >> 16
        return luma.astype(np.uint8)
    return rgb.transpose(0, 2, 3, 1).astype(np.uint8)


@pytest.mark.parametrize(
    ("kwargs", "images"),
    [
        ({}, faces(12)),
        ({"display": "poled", "severity": 1.0, "seed": 3}, faces(5, size=36, rgb=True)),
        ({"keep_grey": False, "severity": 0.0}, faces(4, size=30)[:, :, :27].copy()),
    ],
)
def test_degrade_gives_the_bytes_of_the_plain_formulation(kwargs, images) -> None:
    # The batched path (one gather for the padding, irfft2 split so that only the kept
    # rows are transformed twice, one reseeded generator, table quantisation) must give
    # the plain formulation's bytes; a change that moves one must bump FORMULATION.
    sim = simulator(**kwargs)
    keys = [f"FER2013Train/fer{i:07d}.png" for i in range(len(images))]
    np.testing.assert_array_equal(sim.degrade(images, keys), plain_degrade(sim, images, keys))
    # the blur's floats: the same up to the last bits of a differently ordered FFT
    linear = torch.from_numpy(images).float().div_(255)
    linear = linear.unsqueeze(1) if linear.ndim == 3 else linear.permute(0, 3, 1, 2)
    torch.testing.assert_close(sim.blur(linear), plain_blur(sim, linear), rtol=0, atol=1e-6)


def test_quantisation_counts_code_boundaries_exactly() -> None:
    # At, just below and just above every boundary, at several exposures: the table
    # lookup of develop() equals rounding 255 * sRGB(e / L), i.e. the boundary count.
    for severity in (0.0, 0.5, 1.0):
        sim = simulator(severity=severity)
        bounds = sim.code_boundaries
        below, above = np.nextafter(bounds, -np.inf), np.nextafter(bounds, np.inf)
        rng = np.random.default_rng(0)
        spread = rng.uniform(-0.05, 1.2, 3000).astype(np.float32) * sim.sensor_electrons
        values = np.concatenate([bounds, below, above, spread, [0.0, -1.0]]).astype(np.float32)
        values = values[: len(values) // 3 * 3]
        codes = sim.develop(torch.from_numpy(values.reshape(1, 3, 1, -1).copy()), grey=False)
        got = codes.numpy().reshape(-1, 3).T.reshape(-1)
        np.testing.assert_array_equal(got, np.searchsorted(bounds, values, side="right"))
        half = np.float32(sim.sensor_electrons * 0.5)  # linear 0.5: sRGB 0.7354, code 188
        assert np.searchsorted(bounds, half, side="right") == 188


def test_grey_stays_grey_rgb_stays_rgb_and_types_are_kept() -> None:
    sim = simulator()
    grey, rgb = faces(3), faces(3, size=36, rgb=True)
    out_grey = sim.degrade(grey, ["a", "b", "c"])
    assert out_grey.shape == grey.shape and out_grey.dtype == np.uint8
    out_rgb = sim.degrade(torch.from_numpy(rgb), ["a", "b", "c"])
    assert isinstance(out_rgb, torch.Tensor) and out_rgb.shape == rgb.shape
    as_rgb = simulator(keep_grey=False).degrade(grey, ["a", "b", "c"])
    assert as_rgb.shape == (*grey.shape, 3)
    # grey output is PIL's luma of the RGB result, bit for bit
    expected = np.stack([np.asarray(Image.fromarray(im, "RGB").convert("L")) for im in as_rgb])
    np.testing.assert_array_equal(out_grey, expected)


def test_degradation_blurs_and_adds_noise_with_severity() -> None:
    images = faces(8)
    keys = [str(i) for i in range(8)]

    def error(severity: float) -> float:
        out = simulator(severity=severity).degrade(images, keys).astype(float)
        return float(np.abs(out - images).mean())

    mild, harsh = error(0.0), error(1.0)
    assert mild > 3  # the display alone changes the image
    assert harsh > mild
    # high frequencies lose energy (blur) at the mild setting
    out = simulator(severity=0.0).degrade(images, keys).astype(float)
    assert (
        np.abs(np.diff(out, axis=2)).mean() < np.abs(np.diff(images.astype(float), axis=2)).mean()
    )


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="severity"):
        UDCConfig(severity=1.5)
    with pytest.raises(ValueError, match="read_noise_e"):
        UDCConfig(read_noise_e=0.5)
    sim = simulator()
    with pytest.raises(ValueError, match="uint8"):
        sim.degrade(np.zeros((2, 8, 8), np.float32), ["a", "b"])
    with pytest.raises(ValueError, match="keys"):
        sim.degrade(np.zeros((2, 8, 8), np.uint8), ["a"])


def test_default_scale_and_glare_are_what_docs_udc_says() -> None:
    """docs/udc.md, "Scale": 12.5 sensor pixels per pixel at 48x48 with the default
    face_px 600, the whole 409-sensor-pixel PSF inside the 33-pixel kernel (no glare);
    glare only when the PSF outgrows the cap (112x112, or face_px 300 at 48x48)."""
    sim = UDCSimulator(UDCConfig(display="toled"))  # the default optics, as synthesize uses
    assert sim.config.face_px == 600.0 and sim.scale(48, 48) == 12.5
    kernel, glare = sim.kernel(48, 48)
    assert kernel.shape[-1] == 33 and np.all(glare == 0.0)
    _, glare = sim.kernel(112, 112)
    assert np.all(glare > 0) and glare.max() < 0.002
    half = UDCSimulator(UDCConfig(display="toled", face_px=300.0))
    assert half.scale(48, 48) == 6.25
    assert np.allclose(half.kernel(48, 48)[1], [0.033, 0.030, 0.022], atol=0.001)
