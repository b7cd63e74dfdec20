"""A toy FERPlus: the FERPlus layout with images whose class is drawn into them.

Each grey PNG is noise plus a bright horizontal band at a class-dependent height (one of
:data:`CLASSES` heights), so a small model learns it in a few epochs. The tests train on
it, and the benchmarks measure throughput on it where the real FERPlus is absent.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lrdif.data.ferplus import FERPlus

SIZE = 24
CLASSES = 4  # neutral, happiness, surprise, sadness of FERPlus' 8


def band_image(label: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A (size, size) uint8 image of class ``label``: noise, and the class's band bright."""
    image = rng.integers(0, 60, (size, size)).astype(np.uint8)
    band = size // CLASSES
    image[label * band : (label + 1) * band, :] += 150
    return image


def make_ferplus(
    root: Path, sizes: dict[str, int] | None = None, seed: int = 0, size: int = SIZE
) -> Path:
    """FERPlus layout (label.csv with 10 vote columns + PNGs) under ``root``."""
    sizes = sizes or {"train": 48, "valid": 16, "test": 16}
    rng = np.random.default_rng(seed)
    for split, n in sizes.items():
        folder = root / FERPlus.folders[split]
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            label = i % CLASSES
            name = f"fer{i:07d}.png"
            cv2.imwrite(str(folder / name), band_image(label, rng, size))
            votes = ["0"] * 10
            votes[label] = "10"
            rows.append(",".join([name, '"(0, 0, 48, 48)"', *votes]))
        (folder / "label.csv").write_text("\n".join(rows) + "\n")
    return root
