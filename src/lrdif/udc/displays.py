"""Display masks of an under-display camera: the periodic pixel openings in front of the lens.

A display is one tile of ``pitch_um = (px, py)`` repeated over the pupil, with the
per-channel transmittance of the layers the light crosses inside an opening. Its
``coverage`` rasterises the mask for the pupil plane (exact area coverage), which
:func:`lrdif.udc.optics.fraunhofer_psf` turns into the PSF; its ``transmittance`` is the
light it removes, applied in :mod:`lrdif.udc.degrade`.

Presets and parametric masks are registered in :data:`lrdif.registry.DISPLAYS`
(``toled``, ``poled``, ``rect``, ``image``); :func:`resolve_display` maps a config's
``display`` to one. Lengths are in micrometres unless a name says otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lrdif.registry import DISPLAYS


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
