"""Display masks (lrdif.udc.displays) and the Fraunhofer PSF (lrdif.udc.optics) against the
optics they model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lrdif.registry import DISPLAYS
from lrdif.udc.displays import ImageDisplay, RectDisplay, image_display, resolve_display
from lrdif.udc.optics import Optics, crop_kernel, fraunhofer_psf, psf_checksums, sensor_psf

# A smaller pupil FFT than the default keeps these tests fast; the properties tested do
# not depend on the field of view (about 341 sensor pixels here).
SMALL = Optics(grid=1024, oversample=3)


def first_minimum_um(profile: np.ndarray, sample_um: float) -> float:
    """Radius of the first minimum of a radial profile from the axis (parabolic sub-sample)."""
    inner = np.flatnonzero((profile[1:-1] < profile[:-2]) & (profile[1:-1] <= profile[2:]))
    i = int(inner[0]) + 1
    left, mid, right = profile[i - 1 : i + 2]
    return float((i + 0.5 * (left - right) / (left - 2 * mid + right)) * sample_um)


@pytest.mark.parametrize("wavelength_nm", [470.0, 530.0, 610.0])
def test_bare_lens_is_the_airy_pattern(wavelength_nm: float) -> None:
    # reference-facts.md: first dark ring at 1.22 lambda f / D = 1.6 um at 530 nm, so it is
    # sampled at 0.25 um, where it spans several samples.
    optics = Optics()
    sample = 0.25
    psf = fraunhofer_psf(
        None, optics=optics, wavelength_nm=wavelength_nm, sample_um=sample, grid=2048
    )
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    c = psf.shape[0] // 2
    assert psf[c, c] == psf.max()
    expected = (
        1.22 * wavelength_nm * 1e-3 * optics.focal_length_mm * 1e3 / (optics.aperture_mm * 1e3)
    )
    for profile in (psf[c, c:], psf[c:, c], psf[c, c::-1]):  # right, down, left
        assert abs(first_minimum_um(profile, sample) - expected) <= sample
    # the ring is dark: far below the peak
    ring = round(expected / sample)
    assert psf[c, c + ring - 1 : c + ring + 2].min() < 0.01 * psf[c, c]


def test_display_orders_sit_at_f_lambda_over_pitch() -> None:
    # 10 mm * 530 nm / 168 um = 31.5 um (reference-facts.md, "Worked numbers")
    sample = 0.5
    psf = fraunhofer_psf(
        DISPLAYS.build("toled"), optics=Optics(), wavelength_nm=530.0, sample_um=sample, grid=1024
    )
    c = psf.shape[0] // 2
    row = psf[c, c + 10 : c + 100]  # along x, beyond the central order
    peak_um = (10 + int(np.argmax(row))) * sample
    assert abs(peak_um - 31.55) <= sample


@pytest.mark.parametrize("name", ["toled", "poled"])
def test_sensor_psf_sums_to_one_per_channel_and_is_centred(name: str) -> None:
    psf = sensor_psf(DISPLAYS.build(name), SMALL)
    assert psf.shape[0] == 3 and psf.shape[1] == psf.shape[2] and psf.shape[1] % 2 == 1
    np.testing.assert_allclose(psf.sum(axis=(1, 2)), 1.0, atol=1e-9)
    assert (psf >= 0).all()
    c = psf.shape[1] // 2
    for channel in psf:
        assert np.unravel_index(channel.argmax(), channel.shape) == (c, c)
        np.testing.assert_allclose(channel, channel[::-1, ::-1], atol=1e-9)  # real mask: I(-u)=I(u)


def energy_radius(psf: np.ndarray, fraction: float = 0.5) -> float:
    """Radius (pixels) of the centred disc holding ``fraction`` of the PSF's energy.

    (Diffraction tails fall as 1/r^2, so second moments depend on the field of view;
    encircled energy does not.)
    """
    n = psf.shape[-1]
    y, x = np.mgrid[:n, :n] - n // 2
    radius = np.hypot(x, y).ravel()
    order = np.argsort(radius, kind="stable")
    energy = np.cumsum(psf.ravel()[order]) / psf.sum()
    return float(np.interp(fraction, energy, radius[order]))


@pytest.mark.parametrize("name", ["toled", "poled"])
def test_longer_wavelengths_blur_more(name: str) -> None:
    psf = sensor_psf(DISPLAYS.build(name), SMALL)
    for fraction in (0.5, 0.8):
        red, green, blue = (energy_radius(p, fraction) for p in psf)
        assert red > green > blue
        # diffraction angles scale with the wavelength (up to the pixel grid)
        assert red / blue == pytest.approx(610 / 470, rel=0.12)


def test_bare_lens_rings_also_scale_with_wavelength() -> None:
    rings = [
        first_minimum_um(
            fraunhofer_psf(None, optics=Optics(), wavelength_nm=w, sample_um=0.25, grid=2048)[
                1024, 1024:
            ],
            0.25,
        )
        for w in (610.0, 530.0, 470.0)
    ]
    assert rings[0] > rings[1] > rings[2]


def test_presets_transmittance() -> None:
    toled, poled = DISPLAYS.build("toled"), DISPLAYS.build("poled")
    assert toled.open_ratio == pytest.approx(0.207, abs=0.005)  # published T-OLED open ratio
    np.testing.assert_allclose(toled.transmittance, toled.open_ratio)  # colour-neutral
    luminance = float(np.dot([0.2126, 0.7152, 0.0722], poled.transmittance))
    assert 0.025 < luminance < 0.035  # "about 3% transmission"
    red, green, blue = poled.transmittance
    assert red > green > blue  # polyimide: a warm colour cast
    # P-OLED blurs more than T-OLED (reference-facts.md)
    assert energy_radius(sensor_psf(poled, SMALL)[1]) > 2 * energy_radius(
        sensor_psf(toled, SMALL)[1]
    )


def test_rect_coverage_is_exact_area() -> None:
    display = RectDisplay(name="t", pitch_um=(10.0, 8.0), openings=((1.0, 2.0, 4.5, 7.0),))
    x = np.arange(200) * 0.7 + 0.35  # cells of 0.7 um over 14 tiles in x
    y = np.arange(160) * 0.7 + 0.35
    cov = display.coverage(x, y, 0.7)
    assert ((cov >= 0) & (cov <= 1)).all()
    # 140 um x 112 um = 14 x 14 whole tiles: mean coverage is the open ratio exactly
    assert cov.mean() == pytest.approx(display.open_ratio, abs=1e-12)
    assert display.open_ratio == pytest.approx(3.5 * 5.0 / 80.0)


def test_image_mask_matches_the_same_rect_mask(tmp_path) -> None:
    # The T-OLED tile drawn as a 168 x 168 image (1 um per pixel) is the same display.
    tile = np.zeros((168, 168), np.uint8)
    tile[49:119, 42:126] = 255
    path = tmp_path / "tile.png"
    Image.fromarray(tile).save(path)
    from_image = image_display(path=path, pitch_um=168.0)
    assert isinstance(from_image, ImageDisplay)
    rect = DISPLAYS.build("toled")
    assert from_image.open_ratio == pytest.approx(rect.open_ratio)
    x = np.linspace(-300, 300, 211)
    np.testing.assert_allclose(from_image.coverage(x, x, 2.9), rect.coverage(x, x, 2.9), atol=1e-9)
    np.testing.assert_allclose(sensor_psf(from_image, SMALL), sensor_psf(rect, SMALL), atol=1e-9)
    assert resolve_display(str(path), pitch_um=168.0).spec()["tile_sha256"]


def test_resolve_display_errors_are_clear(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"neither a preset .*toled"):
        resolve_display("oled-9000")
    with pytest.raises(ValueError, match="needs pitch_um and opening_um"):
        resolve_display("rect", pitch_um=60.0)
    path = tmp_path / "mask.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(path)
    with pytest.raises(ValueError, match="pitch"):
        resolve_display(str(path))
    with pytest.raises(ValueError, match="preset"):
        resolve_display("toled", pitch_um=50.0)
    with pytest.raises(ValueError, match="must fit"):
        resolve_display("rect", pitch_um=60.0, opening_um=(70.0, 10.0))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    with pytest.raises(ValueError, match="all opaque"):
        resolve_display(str(path), pitch_um=60.0)
    rect = resolve_display("rect", pitch_um=60.0, opening_um=(30.0, 20.0))
    assert rect.open_ratio == pytest.approx(600 / 3600)


def test_crop_kernel_conserves_energy_and_scales_with_face_size() -> None:
    psf = sensor_psf(DISPLAYS.build("toled"), SMALL)
    small_face, small_glare = crop_kernel(psf, scale=300 / 48, max_radius=16)
    big_face, big_glare = crop_kernel(psf, scale=150 / 48, max_radius=16)
    for kernel, glare in ((small_face, small_glare), (big_face, big_glare)):
        assert kernel.shape[-1] % 2 == 1
        np.testing.assert_allclose(kernel.sum(axis=(1, 2)) + glare, 1.0, atol=1e-9)
        assert (glare >= 0).all()
    # a face spanning fewer sensor pixels sees the same PSF larger in image pixels
    assert energy_radius(big_face[1], 0.6) > 1.5 * energy_radius(small_face[1], 0.6)
    # 16 sensor px between orders -> about 2.5 image px at 6.25 sensor px per image px
    c = small_face.shape[-1] // 2
    row = small_face[1, c, c + 1 : c + 5]
    assert int(np.argmax(row)) + 1 in (2, 3)


def test_point_stays_a_point_under_area_resampling() -> None:
    point = np.zeros((3, 41, 41))
    point[:, 20, 20] = 1.0
    kernel, glare = crop_kernel(point, scale=4.0, max_radius=5)
    assert kernel.shape == (3, 1, 1)
    np.testing.assert_allclose(kernel[:, 0, 0], 1.0)
    np.testing.assert_allclose(glare, 0.0, atol=1e-12)


def test_checksums_identify_the_setting() -> None:
    a = psf_checksums(sensor_psf(DISPLAYS.build("toled"), SMALL))
    b = psf_checksums(sensor_psf(DISPLAYS.build("poled"), SMALL))
    assert set(a) == {"R", "G", "B"} and a != b
    assert a == psf_checksums(sensor_psf(DISPLAYS.build("toled"), SMALL))


def test_optics_validation() -> None:
    with pytest.raises(ValueError, match="odd"):
        Optics(oversample=4)
    with pytest.raises(ValueError, match="raise grid"):
        fraunhofer_psf(None, optics=Optics(), wavelength_nm=530.0, sample_um=2.0, grid=128)
