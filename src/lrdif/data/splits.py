"""A data set's splits in memory, as training and evaluation use them.

:class:`DataSection` names the data (the ``data:`` section of a training config);
:func:`read_split` decodes one split once into uint8 arrays; :func:`to_split_data` puts it
on a device as uint8 NCHW with labels in the model's class indices (:class:`SplitData`);
:func:`split_landmarks` adds its landmarks from a LANDMARKS source, cached.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lrdif.data.base import FERDataset
from lrdif.data.landmarks import cache_landmarks
from lrdif.registry import DATASETS, LANDMARKS

_PARALLEL_DECODE = 4096  # images from which read_split decodes in worker processes


@dataclass
class DataSection:
    """The data set (a DATASETS key), its root folder, splits and landmark source."""

    dataset: str = "ferplus"
    root: str = "../shared/data/ferplus"
    options: dict[str, Any] = field(default_factory=lambda: {"label_mode": "majority"})
    train_split: str = "train"
    val_split: str = "valid"
    # "learned": the model's learned landmark queries, nothing computed; otherwise a
    # LANDMARKS detector run once over each split's images and cached under the run folder.
    landmarks: str = "learned"
    # Keyword options of lrdif.data.transforms' training augmentation.
    augment: dict[str, Any] = field(default_factory=dict)


@dataclass
class SplitData:
    """One split in memory: uint8 images (N, C, H, W), labels (N,) in the model's class
    indices, landmarks (N, P, 2) or None ("learned"), and label distributions (N, K) in
    the model's classes or None (soft targets off), all on the training device."""

    images: Tensor
    labels: Tensor
    landmarks: Tensor | None
    class_names: tuple[str, ...]
    targets: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


def read_split(
    data: DataSection, split: str, *, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Decode a split once: (uint8 (N, H, W[, 3]), int64 (N,), class names)."""
    ds = open_split(data, split, limit)
    # Decoding processes pay off on full data sets; tiny ones decode faster than a spawn.
    workers = min(os.cpu_count() or 1, 4) if len(ds.samples) >= _PARALLEL_DECODE else 0
    images, labels = ds.load_all(workers=workers)
    return images, labels, tuple(ds.class_names)


def read_label_distribution(
    data: DataSection, split: str, *, limit: int | None = None
) -> np.ndarray:
    """float32 (N, K) label distributions of the images :func:`read_split` returns, in the
    same order: normalised crowd votes where the data set has them (FERPlus), else one-hot."""
    return open_split(data, split, limit).label_distribution()


def open_split(data: DataSection, split: str, limit: int | None) -> FERDataset:
    """The data set reader of ``split``, listing its first ``limit`` samples (all: None)."""
    ds = DATASETS.build(data.dataset, root=data.root, split=split, **data.options)
    if limit is not None:
        ds.samples = ds.samples[:limit]
    return ds


def label_map(data_classes: tuple[str, ...], model_classes: tuple[str, ...], where: str) -> Tensor:
    """Index table taking a data set's class indices to the model's; unknown classes are errors."""
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        raise ValueError(
            f"{where}: the data set has class(es) {unknown} that the model does not know; "
            f"its classes are {list(model_classes)}"
        )
    return torch.tensor([model_classes.index(c) for c in data_classes], dtype=torch.int64)


def uint8_nchw(images: np.ndarray) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> uint8 (N, C, H, W) with channels_last memory (no copy)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    return (x.unsqueeze(-1) if x.ndim == 3 else x).permute(0, 3, 1, 2)


def to_split_data(
    images: np.ndarray,
    labels: np.ndarray,
    data_classes: tuple[str, ...],
    model_classes: tuple[str, ...],
    *,
    landmarks: np.ndarray | None,
    device: torch.device,
    where: str,
    targets: np.ndarray | None = None,
) -> SplitData:
    """Put a decoded split on ``device`` as uint8 NCHW, labels (and label distributions
    ``targets`` (N, K_data), when given) mapped to the model's classes."""
    mapping = label_map(data_classes, model_classes, where)
    model_targets = None
    if targets is not None:
        model_targets = torch.zeros(len(targets), len(model_classes))
        model_targets[:, mapping] = torch.from_numpy(targets).float()
        model_targets = model_targets.to(device)
    return SplitData(
        images=uint8_nchw(images).to(device),
        labels=mapping[torch.from_numpy(labels)].to(device),
        landmarks=None if landmarks is None else torch.from_numpy(landmarks).to(device),
        class_names=model_classes,
        targets=model_targets,
    )


def split_landmarks(
    source: str, images: np.ndarray, cache: Path, *, is_main: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> np.ndarray | None:
    """Landmarks of a split from a LANDMARKS detector, computed once and cached.

    Under DDP the main process (``is_main``) computes them; ``barrier`` makes the others
    wait for it, then they read its cache. ``"learned"`` computes nothing: the model's
    learned landmark maps serve every image.
    """
    if source == "learned":
        return None
    detector = LANDMARKS.build(source)
    if is_main:
        cache_landmarks(images, detector, cache)
    barrier()
    return cache_landmarks(images, detector, cache)
