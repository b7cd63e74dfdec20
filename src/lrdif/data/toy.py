"""A toy FERPlus: the FERPlus layout with images whose class is drawn into them.

Each grey PNG is noise plus a bright horizontal band at a class-dependent height (one of
:data:`CLASSES` heights), so a small model learns it in a few epochs. The tests train on
it, and the benchmarks measure throughput on it where the real FERPlus is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# Tiny architectures for the toy data: seconds per epoch on one CPU thread.
TINY_LRDIF = {
    "epr_dim": 16,
    "label_encoder": "learned",
    "label_encoder_kwargs": {"dim": 8},
    "image_encoder_kwargs": {"widths": [8, 16], "blocks": [1, 1]},
    "udcformer": {
        "dims": [8, 16, 32], "dt_heads": [1, 1, 2], "dt_blocks": [1, 1, 1],
        "dil_heads": [1, 2, 2], "fusion_dim": 16, "fusion_depth": 1, "fusion_heads": 2,
    },
}
TINY_RESNET = {"widths": [8, 16, 16, 16], "blocks": [1, 1, 1, 1]}


def toy_train_config(model: str, data_root: Path, **top: Any) -> dict[str, Any]:
    """A training config (a dict for ``TrainConfig``) for the toy data: a tiny model
    (:data:`TINY_LRDIF`, :data:`TINY_RESNET`), batches of 8, 2 epochs; ``top`` overrides
    top-level keys (dicts are merged one level deep)."""
    section: dict[str, Any] = {"name": model}
    if model == "lrdif_s1":
        section["options"] = TINY_LRDIF
    elif model == "resnet18":
        section["options"] = TINY_RESNET
    config = {
        "model": section,
        "data": {"dataset": "ferplus", "root": str(data_root)},
        "epochs": 2,
        "batch_size": 8,
        "optim": {"lr": 3e-3},
        "device": "cpu",
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config
