"""Optics of an under-display camera: the lens pupil and the Fraunhofer PSF of a display.

The paper's degradation model (Sec. 4.2, after MPGNet) has a blur module; its weights are
not public, so the blur here is physical. A display in front of the lens is a periodic
mask of pixel openings (:mod:`lrdif.udc.displays`); the point spread function of colour
channel ``c`` is the far-field (Fraunhofer) pattern of the pupil times the mask at that
channel's wavelength,

    PSF_c(u) = |FFT(pupil x mask)(u / (lambda_c f))|^2 / sum,     (docs/udc.md, "Blur")

sampled ``oversample`` times per sensor pixel, summed into sensor pixels
(:func:`sensor_psf`, ``(3, n, n)``), then resampled to the scale of a face crop
(:func:`crop_kernel`) through one explicit parameter: how many sensor pixels the crop's
longer side spans (``face_px``). Every PSF sums to 1 per channel; the light the display
removes is its transmittance (:attr:`Display.transmittance`), applied in
:mod:`lrdif.udc.degrade`.

Lengths are in micrometres unless a name says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lrdif.udc.displays import Display

#: Share of the PSF's energy an image-scale kernel keeps (when its size cap allows).
KERNEL_ENERGY = 0.999


@dataclass(frozen=True, kw_only=True)
class Optics:
    """Camera behind the display. Defaults: the published UDC simulators (reference-facts.md).

    ``oversample`` PSF samples per sensor pixel (odd, so one sample lies on the optical
    axis at a pixel's centre); ``grid`` is the FFT size of the pupil plane, which sets
    the PSF's field of view to about ``grid / oversample`` sensor pixels.
    """

    focal_length_mm: float = 10.0
    aperture_mm: float = 4.0
    pixel_pitch_um: float = 2.0
    wavelengths_nm: tuple[float, float, float] = (610.0, 530.0, 470.0)
    oversample: int = 5
    grid: int = 2048

    def __post_init__(self) -> None:
        if self.oversample < 1 or self.oversample % 2 == 0:
            raise ValueError(f"Optics.oversample must be odd and >= 1, not {self.oversample}")
        if self.grid < 64:
            raise ValueError(f"Optics.grid must be >= 64, not {self.grid}")
        if min(self.focal_length_mm, self.aperture_mm, self.pixel_pitch_um) <= 0:
            raise ValueError("Optics lengths must be positive")


# --------------------------------------------------------------------------- PSF


def fraunhofer_psf(
    display: Display | None,
    *,
    optics: Optics,
    wavelength_nm: float,
    sample_um: float,
    grid: int,
) -> np.ndarray:
    """``(grid, grid)`` far-field intensity on the sensor, sampled every ``sample_um``, sum 1.

    The optical axis is at ``[grid // 2, grid // 2]``. The pupil plane is sampled at
    ``dx = lambda f / (grid * sample_um)``, so the sensor sampling is exact and the field of
    view is ``lambda f / dx``. ``display=None`` is the bare lens (Airy pattern).
    """
    lam_f = wavelength_nm * 1e-3 * optics.focal_length_mm * 1e3  # um^2
    dx = lam_f / (grid * sample_um)
    radius = optics.aperture_mm * 1e3 / 2
    m = math.ceil(radius / dx) + 1
    if 2 * m + 1 > grid:
        raise ValueError(
            f"PSF grid {grid} at {sample_um} um cannot hold the {optics.aperture_mm} mm "
            f"aperture at {wavelength_nm} nm (needs > {2 * m + 1} samples); raise grid"
        )
    x = np.arange(-m, m + 1) * dx
    r = np.hypot(x[None, :], x[:, None])
    field = np.clip((radius - r) / dx + 0.5, 0.0, 1.0)  # anti-aliased circular pupil
    if display is not None:
        field = field * display.coverage(x, x, dx)
    # The field is real, so rfft2 gives half the spectrum; the other half is I(-u) = I(u).
    # Where the field sits in the plane only changes the spectrum's phase, not |.|^2.
    plane = torch.zeros((grid, grid), dtype=torch.float32)
    plane[: 2 * m + 1, : 2 * m + 1] = torch.from_numpy(field)
    half = torch.view_as_real(torch.fft.rfft2(plane)).square().sum(-1)  # (grid, grid//2+1)
    mirrored = half[(-torch.arange(grid)) % grid][:, 1 : grid - grid // 2].flip(1)
    intensity = torch.fft.fftshift(torch.cat([half, mirrored], dim=1)).double().numpy()
    return intensity / intensity.sum()


_PSF_CACHE: dict[str, np.ndarray] = {}


def psf_key(display: Display, optics: Optics) -> str:
    """Cache key of one setting: the display's spec and the optics, as JSON."""
    return json.dumps({"display": display.spec(), "optics": asdict(optics)}, sort_keys=True)


def sensor_psf(display: Display, optics: Optics) -> np.ndarray:
    """``(3, n, n)`` float64 PSF per channel (R, G, B) in sensor pixels, each sums to 1.

    The fine Fraunhofer pattern is summed over each pixel's area (``oversample`` x
    ``oversample`` samples); the axis lies at the centre of pixel ``[n // 2, n // 2]``.
    Computed once per (display, optics) and cached; the result is read-only.
    """
    key = psf_key(display, optics)
    if key not in _PSF_CACHE:
        o = optics.oversample
        centre = optics.grid // 2
        half = (centre - o // 2) // o  # whole pixels on each side of the axis pixel
        start = centre - half * o - o // 2
        size = (2 * half + 1) * o
        channels = []
        for wavelength in optics.wavelengths_nm:
            fine = fraunhofer_psf(
                display,
                optics=optics,
                wavelength_nm=wavelength,
                sample_um=optics.pixel_pitch_um / o,
                grid=optics.grid,
            )[start : start + size, start : start + size]
            pixels = fine.reshape(2 * half + 1, o, 2 * half + 1, o).sum(axis=(1, 3))
            channels.append(pixels / pixels.sum())
        psf = np.stack(channels)
        psf.setflags(write=False)
        _PSF_CACHE[key] = psf
    return _PSF_CACHE[key]


def _area_resampling(n_in: int, scale: float) -> np.ndarray:
    """``(n_out, n_in)``: input pixels (width 1) -> output pixels (width ``scale``) by overlap.

    Centres of the middle pixels coincide; every column sums to 1, so mass is conserved
    and a point stays a point when the input pixel falls inside one output pixel.
    """
    c_in = n_in // 2
    half_out = math.ceil((c_in + 0.5) / scale - 0.5)
    centres_out = np.arange(-half_out, half_out + 1) * scale
    centres_in = np.arange(n_in) - c_in
    lo = np.maximum(centres_out[:, None] - scale / 2, centres_in[None, :] - 0.5)
    hi = np.minimum(centres_out[:, None] + scale / 2, centres_in[None, :] + 0.5)
    return np.clip(hi - lo, 0.0, None)


def crop_kernel(
    psf: np.ndarray, scale: float, max_radius: int, energy: float = KERNEL_ENERGY
) -> tuple[np.ndarray, np.ndarray]:
    """A ``(3, n, n)`` sensor PSF at image scale: ``(kernel (3, k, k), glare (3,))``, odd k.

    ``scale`` = sensor pixels per image pixel (``face_px / max(H, W)``). The PSF is
    resampled by area overlap, then cut to the smallest centred square that holds
    ``energy`` of every channel, at most ``2 * max_radius + 1`` wide. The energy beyond
    the cut (the far halo of the display's sharp edges, mostly outside the crop) is
    returned as ``glare``: it falls on the image as a uniform veil proportional to the
    image's mean, so ``kernel.sum((1, 2)) + glare == 1`` per channel.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, not {scale}")
    a = _area_resampling(psf.shape[-1], scale)
    kernel = a @ psf @ a.T  # (3, n_out, n_out)
    n = kernel.shape[-1]
    c = n // 2
    y, x = np.mgrid[:n, :n]
    ring = np.maximum(abs(y - c), abs(x - c))  # Chebyshev radius: squares around the centre
    inside = np.stack([np.bincount(ring.ravel(), weights=k.ravel()) for k in kernel]).cumsum(1)
    inside /= inside[:, -1:]
    radius = min(int(np.argmax((inside >= energy).all(axis=0))), max_radius, c)
    kernel = kernel[:, c - radius : c + radius + 1, c - radius : c + radius + 1]
    kernel = kernel / psf.sum(axis=(1, 2))[:, None, None]
    return kernel, np.clip(1.0 - kernel.sum(axis=(1, 2)), 0.0, None)


def psf_checksums(psf: np.ndarray) -> dict[str, str]:
    """sha256 per channel of a ``(3, ...)`` PSF rounded to float32 (manifest, resume checks)."""
    return {
        name: hashlib.sha256(np.ascontiguousarray(p, np.float32).tobytes()).hexdigest()
        for name, p in zip("RGB", psf, strict=True)
    }
