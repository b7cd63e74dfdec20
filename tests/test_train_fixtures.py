"""Tiny data sets and configs shared by the training, evaluation and distributed tests.

The data is the toy FERPlus of :mod:`lrdif.data.toy`: 24x24 grey PNGs whose class is drawn
into the image, so a small model can learn it in a few epochs and "the loss goes down" is
a meaningful check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml

from lrdif.data.toy import CLASSES, SIZE, band_image, make_ferplus


def make_folder_dataset(root: Path, classes: tuple[str, ...], per_class: int = 2) -> Path:
    """Class-per-folder layout ``root/test/<class>/*.png`` (the "folder" reader)."""
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        folder = root / "test" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / f"{i}.png"), band_image(c % CLASSES, rng))
    return root


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def subprocess_env() -> dict[str, str]:
    """Environment of a child ``python -m lrdif``: one thread (the same arithmetic in every
    run, and no oversubscription of a small CI machine), the package importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return env


PYTHON = sys.executable


def test_tiny_ferplus_tree_reads_back(tmp_path: Path) -> None:
    import lrdif.data  # noqa: F401
    from lrdif.registry import DATASETS

    root = make_ferplus(tmp_path / "fer", {"train": 8})
    images, labels = DATASETS.build("ferplus", root=root, split="train").load_all()
    assert images.shape == (8, SIZE, SIZE)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    # the class band is the brightest part of each image
    bands = images.reshape(8, CLASSES, -1).mean(axis=2).argmax(axis=1)
    assert bands.tolist() == labels.tolist()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a loaded CI machine OpenMP's
    spin-waiting makes a 2-thread step much slower than a 1-thread one. Importing this
    fixture into a test module applies it to every test there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
