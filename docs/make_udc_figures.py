"""Make the UDC figures of docs/udc.md and the README (run from the repository root).

    .venv/bin/python docs/make_udc_figures.py

Writes docs/figures/psf_toled.png, psf_poled.png (PSF per channel at sensor and image
scale), udc_grid.png (clean vs UDC at three severities and both displays) and
udc_face_px.png (the scale parameter). The face is the public-domain NASA portrait
shipped in lrdif/assets; no data-set image goes into the repository.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lrdif.data.images import convert_mode, read_image
from lrdif.io import atomic_write_bytes
from lrdif.udc.degrade import UDCConfig, UDCSimulator
from lrdif.udc.synthesize import grid_figure, psf_figure

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
PORTRAIT = ROOT / "src" / "lrdif" / "assets" / "astronaut.jpg"


def test_images() -> list[np.ndarray]:
    """A FERPlus-like 48x48 grey face, a 112x112 RGB face, and a dark scene with lights."""
    portrait = read_image(PORTRAIT)
    face = portrait[40:232, 160:352]  # the face, square
    grey48 = cv2.resize(convert_mode(face, "L"), (48, 48), interpolation=cv2.INTER_AREA)
    rgb112 = cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA)
    y, x = np.mgrid[:112, :112]
    night = np.stack([8 + 20 * y / 112, 10 + 16 * x / 112, 30 + 10 * y / 112], -1)
    for cy, cx, s in ((30, 30, 2), (60, 80, 3), (85, 40, 1), (25, 90, 1)):
        night[cy - s : cy + s + 1, cx - s : cx + s + 1] = 255  # street lights, saturated
    return [grey48, rgb112, night.astype(np.uint8)]


def degrade_all(config: UDCConfig, images: list[np.ndarray]) -> list[np.ndarray]:
    simulator = UDCSimulator(config)
    return [simulator.degrade(im[None], [f"figure{i}"])[0] for i, im in enumerate(images)]


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    for display in ("toled", "poled"):
        simulator = UDCSimulator(UDCConfig(display=display))
        atomic_write_bytes(FIGURES / f"psf_{display}.png", psf_figure(simulator, 48, 48))

    images = test_images()
    rows = [("clean", images)]
    for severity in (0.0, 0.5, 1.0):
        config = UDCConfig(severity=severity)
        rows.append((f"toled {config.snr_db:g} dB", degrade_all(config, images)))
    rows.append(("poled 32 dB", degrade_all(UDCConfig(display="poled"), images)))
    title = f"clean vs UDC, face_px {UDCConfig().face_px:g}: 48 px grey, 112 px RGB, lights"
    atomic_write_bytes(FIGURES / "udc_grid.png", grid_figure(rows, title))

    rows = [("clean", images)]
    for face_px in (300.0, 600.0, 900.0):
        rows.append((f"face {face_px:g} px", degrade_all(UDCConfig(face_px=face_px), images)))
    atomic_write_bytes(
        FIGURES / "udc_face_px.png",
        grid_figure(rows, "toled 32 dB: PSF scale set by face_px"),
    )


if __name__ == "__main__":
    main()
