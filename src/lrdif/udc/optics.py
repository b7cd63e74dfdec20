"""Optics of an under-display camera: display masks, the lens pupil and the Fraunhofer PSF.

The paper's degradation model (Sec. 4.2, after MPGNet) has a blur module; its weights are
not public, so the blur here is physical. A display in front of the lens is a periodic
mask of pixel openings; the point spread function of colour channel ``c`` is the
far-field (Fraunhofer) pattern of the pupil times the mask at that channel's wavelength,

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrdif.registry import DISPLAYS

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


# --------------------------------------------------------------------------- displays


def _periodic_overlap(lo: np.ndarray, hi: np.ndarray, a: float, b: float, p: float) -> np.ndarray:
    """Length of ``[lo, hi]`` covered by the periodic union of ``[a + k p, b + k p]``."""

    def covered(t: np.ndarray) -> np.ndarray:  # measure of the union within [0, t]
        period, rest = np.divmod(t, p)
        return period * (b - a) + np.clip(rest - a, 0.0, b - a)

    return covered(hi) - covered(lo)


class Display:
    """A periodic display mask in front of the lens: one tile of ``pitch_um = (px, py)``.

    Subclasses give the tile's openings; ``material`` is the per-channel (R, G, B)
    transmittance of the layers the light crosses inside an opening (substrate,
    encapsulation). ``coverage`` rasterises the mask for the pupil plane.
    """

    name: str
    pitch_um: tuple[float, float]
    material: tuple[float, float, float]

    def _check(self) -> None:
        if min(self.pitch_um) <= 0:
            raise ValueError(f"display {self.name!r}: pitch must be positive, got {self.pitch_um}")
        if not all(0 < m <= 1 for m in self.material):
            raise ValueError(f"display {self.name!r}: material transmittance must be in (0, 1]")

    @property
    def open_ratio(self) -> float:
        """Open area / tile area."""
        raise NotImplementedError

    @property
    def transmittance(self) -> np.ndarray:
        """``(3,)`` share of the light per channel (R, G, B) that passes the display."""
        return self.open_ratio * np.asarray(self.material, dtype=np.float64)

    def coverage(self, x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
        """``(len(y), len(x))`` open share of square cells of side ``cell`` centred at (x, y).

        Exact area coverage, so edges are anti-aliased however coarse the pupil sampling.
        """
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """JSON description of the mask (PSF cache key and manifest entry)."""
        return {
            "name": self.name,
            "pitch_um": list(self.pitch_um),
            "material": list(self.material),
            "open_ratio": self.open_ratio,
            "transmittance_rgb": self.transmittance.tolist(),
        }


@dataclass(frozen=True, kw_only=True)
class RectDisplay(Display):
    """Openings are disjoint rectangles ``(x0, y0, x1, y1)`` inside the tile (um)."""

    name: str
    pitch_um: tuple[float, float]
    openings: tuple[tuple[float, float, float, float], ...]
    material: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        self._check()
        px, py = self.pitch_um
        if not self.openings:
            raise ValueError(f"display {self.name!r}: a mask needs at least one opening")
        for x0, y0, x1, y1 in self.openings:
            if not (0 <= x0 < x1 <= px and 0 <= y0 < y1 <= py):
                raise ValueError(
                    f"display {self.name!r}: opening {(x0, y0, x1, y1)} is not inside the "
                    f"{px} x {py} um tile"
                )

    @property
    def open_ratio(self) -> float:
        area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in self.openings)
        return area / (self.pitch_um[0] * self.pitch_um[1])

    def coverage(self, x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
        px, py = self.pitch_um
        out = np.zeros((len(y), len(x)))
        for x0, y0, x1, y1 in self.openings:  # each rectangle is separable in x and y
            cx = _periodic_overlap(x - cell / 2, x + cell / 2, x0, x1, px) / cell
            cy = _periodic_overlap(y - cell / 2, y + cell / 2, y0, y1, py) / cell
            out += np.outer(cy, cx)
        return np.clip(out, 0.0, 1.0)  # disjoint openings: only round-off can leave [0, 1]

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "openings_um": [list(o) for o in self.openings]}


@dataclass(frozen=True, eq=False, kw_only=True)
class ImageDisplay(Display):
    """The tile is a greyscale image ``(h, w)`` in [0, 1] (1 open, 0 opaque) spanning the pitch.

    Its pixels are constant patches, so :meth:`coverage` integrates them exactly through
    a periodic summed-area table.
    """

    name: str
    pitch_um: tuple[float, float]
    tile: np.ndarray
    source: str
    material: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        self._check()
        if self.tile.ndim != 2 or self.tile.size == 0:
            raise ValueError(f"display {self.source}: the tile must be a 2-D image")
        if float(self.tile.max()) <= 0:
            raise ValueError(f"display {self.source}: the mask image is all opaque (all 0)")

    @property
    def open_ratio(self) -> float:
        return float(self.tile.mean())

    def _integral(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``(len(y), len(x))`` integral of the periodic tile over ``[0, x] x [0, y]``, um^2."""
        h, w = self.tile.shape
        px, py = self.pitch_um
        sat = np.zeros((h + 1, w + 1))
        sat[1:, 1:] = self.tile.cumsum(0).cumsum(1) * (px / w) * (py / h)
        qx, rx = np.divmod(x * w / px, w)  # whole tiles, position inside the tile (pixels)
        qy, ry = np.divmod(y * h / py, h)

        def at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            # bilinear in the summed-area table = exact for piecewise-constant pixels
            r0 = np.minimum(rows.astype(int), h - 1)
            c0 = np.minimum(cols.astype(int), w - 1)
            fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
            return (
                sat[r0][:, c0] * (1 - fr) * (1 - fc)
                + sat[r0 + 1][:, c0] * fr * (1 - fc)
                + sat[r0][:, c0 + 1] * (1 - fr) * fc
                + sat[r0 + 1][:, c0 + 1] * fr * fc
            )

        row_band = at(ry, np.array([float(w)]))  # (ny, 1): full tile width, height ry
        col_band = at(np.array([float(h)]), rx)  # (1, nx): full tile height, width rx
        return (
            qy[:, None] * qx[None, :] * sat[h, w]
            + qx[None, :] * row_band
            + qy[:, None] * col_band
            + at(ry, rx)
        )

    def coverage(self, x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
        half = cell / 2
        integral = (
            self._integral(x + half, y + half)
            - self._integral(x - half, y + half)
            - self._integral(x + half, y - half)
            + self._integral(x - half, y - half)
        )
        return np.clip(integral / cell**2, 0.0, 1.0)

    def spec(self) -> dict[str, Any]:
        digest = hashlib.sha256(np.ascontiguousarray(self.tile, np.float64).tobytes()).hexdigest()
        return {
            **super().spec(),
            "source": self.source,
            "tile_shape": list(self.tile.shape),
            "tile_sha256": digest,
        }


@DISPLAYS.register("toled")
def toled() -> RectDisplay:
    """Transparent OLED (the 150-DPI prototype of published UDC work): open ratio 0.208.

    A 168 um tile with one 84 x 70 um window: the published tile size and open ratio
    (about 0.207), drawn as one rectangle. The window's glass is taken as clear.
    """
    return RectDisplay(
        name="toled", pitch_um=(168.0, 168.0), openings=((42.0, 49.0, 126.0, 119.0),)
    )


@DISPLAYS.register("poled")
def poled() -> RectDisplay:
    """Pentile OLED: small openings on a diagonal (quincunx) lattice behind polyimide.

    A 100 um tile with two 30 x 30 um holes at half-pitch offsets (open ratio 0.18); the
    yellow polyimide substrate passes (0.22, 0.17, 0.09) of R, G, B, so the display
    passes about 3% of the light (luminance-weighted), with a warm colour cast. The small
    holes spread light over a wide envelope: much stronger blur than ``toled``.
    """
    return RectDisplay(
        name="poled",
        pitch_um=(100.0, 100.0),
        openings=((10.0, 10.0, 40.0, 40.0), (60.0, 60.0, 90.0, 90.0)),
        material=(0.22, 0.17, 0.09),
    )


@DISPLAYS.register("rect")
def rect_display(*, pitch_um: float, opening_um: tuple[float, float]) -> RectDisplay:
    """A square tile of side ``pitch_um`` with one centred ``(w, h)`` opening, clear glass."""
    w, h = opening_um
    if not (0 < w <= pitch_um and 0 < h <= pitch_um):
        raise ValueError(f"rect display: opening {w} x {h} um must fit in the {pitch_um} um pitch")
    x0, y0 = (pitch_um - w) / 2, (pitch_um - h) / 2
    return RectDisplay(
        name=f"rect-{pitch_um:g}-{w:g}x{h:g}",
        pitch_um=(pitch_um, pitch_um),
        openings=((x0, y0, x0 + w, y0 + h),),
    )


@DISPLAYS.register("image")
def image_display(*, path: str | Path, pitch_um: float) -> ImageDisplay:
    """One display tile read from a greyscale image (255 open, 0 opaque) of side ``pitch_um``."""
    from lrdif.data.images import read_image

    tile = read_image(Path(path), mode="L").astype(np.float64) / 255.0
    height_um = float(pitch_um) * tile.shape[0] / tile.shape[1]  # square image pixels
    return ImageDisplay(
        name=Path(path).stem, pitch_um=(float(pitch_um), height_um), tile=tile, source=str(path)
    )


def resolve_display(
    spec: str,
    *,
    pitch_um: float | None = None,
    opening_um: tuple[float, float] | None = None,
) -> Display:
    """``"toled"``/``"poled"`` (presets), ``"rect"`` (needs pitch and opening), or an image path.

    For an image, ``pitch_um`` is the physical width of the tile it shows.
    """
    if spec == "rect":
        if pitch_um is None or opening_um is None:
            raise ValueError("display 'rect' needs pitch_um and opening_um (w, h)")
        return rect_display(pitch_um=pitch_um, opening_um=opening_um)
    if spec in DISPLAYS and spec != "image":
        if pitch_um is not None or opening_um is not None:
            raise ValueError(f"display {spec!r} is a preset; pitch and opening are fixed")
        return DISPLAYS.build(spec)
    path = Path(spec)
    if path.is_file():
        if pitch_um is None:
            raise ValueError(
                f"display image {path}: give the tile's pitch in um (display_pitch_um)"
            )
        if opening_um is not None:
            raise ValueError(f"display image {path}: the image sets the openings, not opening_um")
        return image_display(path=path, pitch_um=pitch_um)
    presets = [n for n in DISPLAYS.names() if n not in ("rect", "image")]
    raise ValueError(
        f"display {spec!r} is neither a preset {presets}, 'rect', nor an existing image file"
    )


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
