"""The UDC degradation model: blur and flare, attenuation and colour shift, sensor noise.

The paper synthesises UDC-RAF-DB, UDC-FERPlus and UDC-KDEF with a degradation model of
three modules (Sec. 4.2, after MPGNet): brightness attenuation, blur and noise. This is
a physical version of the same three modules, applied to ``uint8`` images in batches:

1. sRGB -> linear light (the blur and the noise act on light, not on gamma-coded values);
2. blur: FFT convolution with the display's PSF at image scale (:mod:`lrdif.udc.optics`),
   with symmetric padding, plus the PSF's far halo as uniform veiling glare;
3. attenuation: the display passes ``T_c`` of channel ``c``; the sensor collects
   ``x * L * T_c / T`` electrons for linear value ``x``, where ``T`` is the display's
   luminance-weighted transmittance and ``L`` the electrons of a white pixel;
4. noise: Poisson shot noise on those electrons, Gaussian read noise, full-well clip;
5. the camera's gain ``1 / L`` restores the brightness (one gain for all channels, so the
   display's colour cast stays), then linear -> sRGB and 8-bit quantisation.

``severity`` in [0, 1] sets ``L`` so that a white pixel has an SNR of 40 dB (0) to
24 dB (1), 32 dB by default. Every image's noise comes from its own random stream,
seeded by ``(seed, key)`` (key = the image's relative path), so the output of an image
does not depend on the batch it is in, the order, or the number of worker processes.
The physics and the defaults are explained in docs/udc.md.

Over 400 lines: one simulator, tuned and pinned byte for byte (``FORMULATION``); its
five stages share the config, the cached kernels, blur plans and quantiser tables, and
are read in order in :meth:`UDCSimulator.degrade`. The sRGB curves and the blur's FFT
plan are the parts that could move out.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lrdif.udc.displays import Display, resolve_display
from lrdif.udc.optics import Optics, crop_kernel, sensor_psf

#: Rec. 709 luminance weights of linear R, G, B: the display's transmittance as seen by
#: the camera's auto-exposure.
LUMINANCE = (0.2126, 0.7152, 0.0722)
#: Pixels (images x padded FFT area) per chunk of the batched blur: keeps chunks in cache.
CHUNK_PIXELS = 1 << 18


def srgb_to_linear(values: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 decoding of sRGB values in [0, 1]."""
    return torch.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055).pow(2.4))


def linear_to_srgb(values: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 encoding of linear values in [0, 1]."""
    curve = values.clamp_min(0.0031308).pow_(1 / 2.4).mul_(1.055).sub_(0.055)
    return torch.where(values <= 0.0031308, values * 12.92, curve)


#: Linear value of every 8-bit sRGB code (a numpy table: ``np.take`` is the fastest lookup).
_LINEAR_LUT = srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255).float().numpy()
#: Linear values where the 8-bit sRGB code steps from k to k + 1 (k = 0 .. 254): the
#: decoded half-codes. Quantisation is counting the boundaries at or below a value.
CODE_BOUNDARIES = srgb_to_linear((torch.arange(255, dtype=torch.float64) + 0.5) / 255).numpy()
#: Cells of the quantiser's lookup over [0, 1] linear; narrower than the closest two
#: boundaries (1 / (255 * 12.92), near black), so a cell holds at most one of them.
QUANTISER_CELLS = 8192
#: Version of the degradation's arithmetic, kept in every synthesize manifest: output made
#: by another formulation is refused rather than mixed (2: quantisation by boundaries).
FORMULATION = 2


def snr_to_electrons(snr_db: float, read_noise_e: float) -> float:
    """Electrons ``L`` of a white pixel with ``L / sqrt(L + read^2) = 10^(snr/20)``."""
    s2 = 10 ** (snr_db / 10)
    return (s2 + math.sqrt(s2 * s2 + 4 * s2 * read_noise_e**2)) / 2


def stream_seed(seed: int, key: str) -> int:
    """64-bit seed of one image's random stream, from the global seed and the image's key."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _fft_size(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3 and 5 (fast FFT lengths)."""
    m = n
    while True:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 1


def _symmetric_index(n: int, pad: int) -> torch.Tensor:
    """Indices of ``[-pad, n + pad)`` mirrored into ``[0, n)`` (edge repeated: ``cba|abcd|dcb``)."""
    m = torch.arange(-pad, n + pad) % (2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


@dataclass(frozen=True)
class _BlurPlan:
    """What the blur of one image size needs, computed once (:meth:`UDCSimulator._plan`).

    ``spectrum``: rfft2 of the kernel centred at (0, 0), transposed, ``(3, Pw // 2 + 1, Ph)``;
    ``glare``: ``(3, 1, 1)``; ``radius``: the kernel's; ``fft_shape``: ``(Ph, Pw)``;
    ``pad_index``: flat indices into ``H * W`` of the symmetrically padded image of
    ``padded_shape = (H + 2r, W + 2r)``, so that padding is one gather.
    """

    spectrum: torch.Tensor
    glare: torch.Tensor
    radius: int
    fft_shape: tuple[int, int]
    padded_shape: tuple[int, int]
    pad_index: torch.Tensor


def poisson_gaussian(mean: torch.Tensor, z: torch.Tensor, read_noise: float) -> torch.Tensor:
    """Samples of ``Poisson(mean) + Normal(0, read_noise^2)`` from standard normals ``z``.

    The Cornish-Fisher expansion of the sum's quantile at ``z``, from its cumulants
    (mean ``lam``, variance ``lam + read^2``, third and fourth cumulants ``lam``): with
    ``read_noise >= 2`` e- its CDF differs from the exact one by under 1e-4 (5.6e-6 at
    4.87 e-; docs/udc.md), because read noise smooths the Poisson lattice. One normal
    per pixel and a fixed function of it: batching cannot change an image's noise.
    """
    # lam + s x, with x = z + g1 (z^2 - 1) / 6 + g2 z (z^2 - 3) / 24 - g1^2 z (2 z^2 - 5) / 36,
    # skewness g1 = t / s and excess kurtosis g2 = t / var (t = lam / var), expands to
    # lam + s z + t (z^2 - 1) / 6 + (t / s) z [(z^2 - 3) / 24 - t (2 z^2 - 5) / 36]:
    # fewer passes over memory, the same numbers up to float rounding.
    lam = mean.clamp_min(0)
    var = lam + read_noise**2
    t = lam / var
    s = var.sqrt_()
    z2 = z * z
    tail = z2.mul(1 / 18).sub_(5 / 36)
    tail = torch.addcmul(z2.mul(1 / 24).sub_(1 / 8), t, tail, value=-1)
    tail.mul_(z).mul_(t).div_(s)
    out = torch.addcmul(lam, z, s).add_(tail)
    return out.add_(z2.sub_(1).mul_(t), alpha=1 / 6)


@dataclass(frozen=True, kw_only=True)
class UDCConfig:
    """Every parameter of the degradation (recorded in the synthesize manifest).

    ``display``: ``"toled"``, ``"poled"``, ``"rect"`` (square tile ``display_pitch_um``
    with one ``display_opening_um = (w, h)`` window) or a mask image file (one tile,
    ``display_pitch_um`` wide). ``face_px``: sensor pixels spanned by an image's longer
    side, which sets the PSF's scale (a 48-px FERPlus crop of a face 600 sensor pixels
    wide: one image pixel = 12.5 sensor pixels). ``severity``: 0 (40 dB) .. 1 (24 dB).
    ``keep_grey``: greyscale inputs come back greyscale (simulated in RGB, then PIL's
    luma), else as RGB with the display's colour cast.
    """

    display: str = "toled"
    display_pitch_um: float | None = None
    display_opening_um: tuple[float, float] | None = None
    severity: float = 0.5
    face_px: float = 600.0
    seed: int = 0
    read_noise_e: float = 4.87
    full_well_e: float = 15506.0
    keep_grey: bool = True
    optics: Optics = field(default_factory=Optics)

    def __post_init__(self) -> None:
        if not 0.0 <= self.severity <= 1.0:
            raise ValueError(f"severity must be in [0, 1] (40 .. 24 dB), not {self.severity}")
        if self.face_px <= 0:
            raise ValueError(f"face_px must be positive, not {self.face_px}")
        if self.read_noise_e < 2 or self.full_well_e <= 0:
            raise ValueError(
                "read_noise_e must be >= 2 (the noise sampler's accuracy bound) and "
                f"full_well_e > 0, got {self.read_noise_e} and {self.full_well_e}"
            )

    @property
    def snr_db(self) -> float:
        """SNR of a white pixel: 40 dB at severity 0, 24 dB at severity 1."""
        return 40.0 - 16.0 * self.severity


class UDCSimulator:
    """Turns clean ``uint8`` images into UDC images (Sec. 4.2's three modules, physically).

    >>> sim = UDCSimulator(UDCConfig(display="toled", severity=0.5))
    >>> udc = sim.degrade(images, keys)   # uint8 (N, H, W) or (N, H, W, 3) -> same

    The sensor PSF is computed on first use and cached; image-scale kernels and their
    spectra are cached per image size. The object pickles with its caches, so worker
    processes receive a ready simulator.
    """

    def __init__(self, config: UDCConfig | None = None) -> None:
        self.config = config if config is not None else UDCConfig()
        self.display: Display = resolve_display(
            self.config.display,
            pitch_um=self.config.display_pitch_um,
            opening_um=self.config.display_opening_um,
        )
        self.transmittance = self.display.transmittance  # (3,) R, G, B
        self.mean_transmittance = float(np.dot(LUMINANCE, self.transmittance))
        self.sensor_electrons = snr_to_electrons(self.config.snr_db, self.config.read_noise_e)
        per_channel = self.transmittance / self.mean_transmittance * self.sensor_electrons
        self._exposure = torch.from_numpy(per_channel).float().view(3, 1, 1)
        self._psf: np.ndarray | None = None
        self._boundaries: np.ndarray | None = None
        self._tables: tuple[np.float32, np.ndarray, np.ndarray] | None = None
        self._plans: dict[tuple[int, int], _BlurPlan] = {}

    # ------------------------------------------------------------------ optics

    @property
    def psf(self) -> np.ndarray:
        """``(3, n, n)`` PSF in sensor pixels (R, G, B), each sums to 1."""
        if self._psf is None:
            self._psf = sensor_psf(self.display, self.config.optics)
        return self._psf

    def scale(self, height: int, width: int) -> float:
        """Sensor pixels per image pixel for an ``height x width`` image."""
        return self.config.face_px / max(height, width)

    def kernel(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(kernel (3, k, k), glare (3,))`` at the scale of an ``height x width`` image.

        The kernel radius is capped at a third of the image's longer side; the energy
        beyond it is the glare (see :func:`lrdif.udc.optics.crop_kernel`).
        """
        return crop_kernel(
            self.psf, self.scale(height, width), max_radius=max(1, max(height, width) // 3)
        )

    @property
    def code_boundaries(self) -> np.ndarray:
        """``(255,)`` float32 electrons where the developed 8-bit code steps up by one."""
        if self._boundaries is None:
            self._boundaries = (CODE_BOUNDARIES * self.sensor_electrons).astype(np.float32)
        return self._boundaries

    def _quantiser(self) -> tuple[np.float32, np.ndarray, np.ndarray]:
        """``(cells per electron, code, upper)``: :meth:`develop`'s lookup tables.

        Electrons ``e`` fall in cell ``min(floor(e * cells per electron), cells)`` (float32,
        as :meth:`develop` computes it); ``code[i]`` counts the boundaries below the
        cell's first float, ``upper[i]`` is the next boundary (+inf if none). A cell holds
        at most one boundary, so ``code[i] + (e >= upper[i])`` is the exact count.
        """
        if self._tables is None:
            bounds = self.code_boundaries
            per_electron = np.float32(QUANTISER_CELLS / self.sensor_electrons)
            cells = np.arange(QUANTISER_CELLS + 1)

            def cell_of(e: np.ndarray) -> np.ndarray:
                return np.minimum(np.floor(e * per_electron), QUANTISER_CELLS)

            first = (cells / np.float64(per_electron)).astype(np.float32)
            for _ in range(4):  # move each guess to the cell's first float32
                first = np.where(cell_of(first) >= cells, np.nextafter(first, -np.inf), first)
                first = np.where(cell_of(first) < cells, np.nextafter(first, np.inf), first)
            first[0] = -np.inf  # negative electrons develop to black, as cell 0
            code = np.searchsorted(bounds, first, side="left")
            upper = np.append(bounds, np.float32(np.inf))
            following = np.append(upper, np.float32(np.inf))[code + 1]
            if not (cell_of(first) == cells)[1:].all() or (following[:-1] < first[1:]).any():
                raise AssertionError("quantiser cells must start exactly and hold <= 1 boundary")
            self._tables = (per_electron, code.astype(np.int32), upper[code])
        return self._tables

    def _plan(self, height: int, width: int) -> _BlurPlan:
        """The cached :class:`_BlurPlan` of ``height x width`` images."""
        if (height, width) not in self._plans:
            kernel, glare = self.kernel(height, width)
            r = kernel.shape[-1] // 2
            ph, pw = _fft_size(height + 2 * r), _fft_size(width + 2 * r)
            plane = torch.zeros((3, ph, pw), dtype=torch.float64)
            rows = torch.arange(-r, r + 1) % ph  # kernel centre at (0, 0): no shift
            cols = torch.arange(-r, r + 1) % pw
            plane[:, rows[:, None], cols[None, :]] = torch.from_numpy(kernel)
            pad_rows, pad_cols = _symmetric_index(height, r), _symmetric_index(width, r)
            self._plans[(height, width)] = _BlurPlan(
                spectrum=torch.fft.rfft2(plane).to(torch.complex64).mT.contiguous(),
                glare=torch.from_numpy(glare).float().view(3, 1, 1),
                radius=r,
                fft_shape=(ph, pw),
                padded_shape=(height + 2 * r, width + 2 * r),
                pad_index=(pad_rows[:, None] * width + pad_cols[None, :]).flatten(),
            )
        return self._plans[(height, width)]

    # ------------------------------------------------------------------ stages

    def blur(self, linear: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` linear light (C = 1 grey or 3) -> ``(N, 3, H, W)`` through the PSF.

        Symmetric padding by the kernel radius stands in for the scene around the crop;
        a grey input has one forward FFT shared by the three channels.
        """
        n, c, height, width = linear.shape
        plan = self._plan(height, width)
        padded = linear.reshape(n, c, height * width)[:, :, plan.pad_index]
        return self._blur_padded(padded.view(n, c, *plan.padded_shape), plan)

    def _blur_padded(self, padded: torch.Tensor, plan: _BlurPlan) -> torch.Tensor:
        """:meth:`blur` of images given padded, ``(N, C, H + 2r, W + 2r)``.

        The inverse FFT is ``irfft2`` in two steps (an inverse FFT over rows, then a real
        inverse FFT over columns), so that the second step runs only on the rows the crop
        keeps. Each step transforms the last, contiguous axis: the spectrum is
        transposed while it is multiplied, the kept rows transposed back (torch's
        transforms over a strided axis are several times slower).
        """
        r, (ph, pw) = plan.radius, plan.fft_shape
        height, width = padded.shape[-2] - 2 * r, padded.shape[-1] - 2 * r
        spec = torch.fft.rfft2(padded, s=(ph, pw)).mT  # (N, C, Pw//2+1, Ph), strided
        product = spec.new_empty((spec.shape[0], 3, *spec.shape[-2:]))  # contiguous
        torch.mul(spec, plan.spectrum, out=product)
        rows = torch.fft.ifft(product, dim=-1)[..., r : r + height].mT.contiguous()
        blurred = torch.fft.irfft(rows, n=pw, dim=-1)[..., r : r + width]
        scene = padded[..., r : r + height, r : r + width].mean(dim=(2, 3), keepdim=True)
        blurred = blurred + plan.glare * scene
        return blurred.clamp_min_(0.0)  # FFT round-off leaves tiny negatives

    def expose(self, blurred: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` linear light at the scene -> expected electrons behind the display."""
        return blurred.mul_(self._exposure)

    @property
    def scene_photons(self) -> float:
        """Photo-electrons a white pixel would collect without the display (``L / T``)."""
        return self.sensor_electrons / self.mean_transmittance

    def add_noise(self, electrons: torch.Tensor, keys: list[str]) -> torch.Tensor:
        """Shot + read noise on ``(N, 3, H, W)`` expected electrons; image i uses ``keys[i]``.

        Returns electrons clipped to ``[0, full_well_e]``.
        """
        if len(keys) != electrons.shape[0]:
            raise ValueError(f"{len(keys)} keys for {electrons.shape[0]} images")
        normals = torch.empty(electrons.shape)
        generator = torch.Generator()
        for i, key in enumerate(keys):  # one stream per image: order-free; reseeding restarts it
            generator.manual_seed(stream_seed(self.config.seed, key))
            normals[i].normal_(generator=generator)
        noisy = poisson_gaussian(electrons, normals, self.config.read_noise_e)
        return noisy.clamp_(0.0, self.config.full_well_e)

    def develop(self, electrons: torch.Tensor, grey: bool) -> torch.Tensor:
        """Gain ``1 / L``, linear -> sRGB, 8-bit: ``(N, 3, H, W)`` -> uint8 ``(N, H, W[, 3])``.

        A pixel's code is the number of :attr:`code_boundaries` at or below its electrons:
        rounding ``255 * sRGB(e / L)`` with the gain and the curve folded into the
        boundaries. A table lookup by cell and one comparison give that count exactly
        (a cell holds at most one boundary: :meth:`_quantiser`). ``grey``: PIL's ITU-R
        601 luma of the 8-bit RGB, bit for bit.
        """
        per_electron, code, upper = self._quantiser()
        values = electrons.numpy()
        cell = np.multiply(values, per_electron)
        index = np.clip(cell, 0, QUANTISER_CELLS, out=cell).astype(np.int32)
        rgb = code.take(index)
        rgb += values >= upper.take(index)
        if grey:
            luma = rgb[:, 0] * 19595
            luma += rgb[:, 1] * 38470
            luma += rgb[:, 2] * 7471
            luma += 32768
            return torch.from_numpy((luma >> 16).astype(np.uint8))
        return torch.from_numpy(rgb.transpose(0, 2, 3, 1).astype(np.uint8))

    # ------------------------------------------------------------------ whole model

    def degrade(self, images: np.ndarray | torch.Tensor, keys: list[str]) -> Any:
        """UDC versions of ``images``: uint8 ``(N, H, W)`` or ``(N, H, W, 3)``, numpy or torch.

        ``keys[i]`` names image i's random stream (a relative path or file name). The
        result has the input's type and shape (grey stays grey unless ``keep_grey`` is
        off, then ``(N, H, W, 3)``).
        """
        as_numpy = isinstance(images, np.ndarray)
        batch = torch.from_numpy(images) if as_numpy else images.cpu()
        if (
            batch.dtype != torch.uint8
            or batch.ndim not in (3, 4)
            or (batch.ndim == 4 and batch.shape[-1] != 3)
        ):
            raise ValueError(
                f"images must be uint8 (N, H, W) or (N, H, W, 3), got {tuple(batch.shape)} "
                f"{batch.dtype}"
            )
        keys = list(keys)
        if len(keys) != batch.shape[0]:
            raise ValueError(f"{len(keys)} keys for {batch.shape[0]} images")
        grey = batch.ndim == 3
        height, width = batch.shape[1:3]
        plan = self._plan(height, width)
        ph, pw = plan.fft_shape
        step = max(1, CHUNK_PIXELS // (ph * pw))  # chunks small enough to stay in cache
        parts = []
        for i in range(0, batch.shape[0], step):
            codes = batch[i : i + step].numpy()
            # pad the 8-bit codes (a quarter of the bytes), then look the padding up
            pixels = codes.reshape(len(codes), height * width, -1)  # (n, H * W, C)
            padded_codes = np.take(pixels, plan.pad_index.numpy(), axis=1).transpose(0, 2, 1)
            padded = torch.from_numpy(np.take(_LINEAR_LUT, padded_codes))  # (n, C, P)
            padded = padded.view(len(codes), -1, *plan.padded_shape)
            electrons = self.expose(self._blur_padded(padded, plan))
            electrons = self.add_noise(electrons, keys[i : i + step])
            parts.append(self.develop(electrons, grey and self.config.keep_grey))
        out = torch.cat(parts)
        return out.numpy() if as_numpy else out

    def describe(self) -> dict[str, Any]:
        """The derived physical numbers of this setting (for manifests and docs)."""
        return {
            "formulation": FORMULATION,
            "display": self.display.spec(),
            "transmittance_rgb": self.transmittance.tolist(),
            "mean_transmittance": self.mean_transmittance,
            "snr_db_white": self.config.snr_db,
            "sensor_electrons_white": self.sensor_electrons,
            "scene_photons_white": self.scene_photons,
        }
