"""Knowledge distillation from a clean-view teacher (Hinton et al. 2015).

A UDC picture hides what the clean one shows; a classifier trained on clean faces (the
teacher) knows, for every training face, how its clean view reads, ambiguity included
(a face between fear and surprise). The student is trained on the degraded view towards

    targets = (1 - w) y + w softmax(teacher(x_clean))

where ``y`` is the one-hot label (or the crowd's vote distribution with ``soft_targets``),
and label smoothing applies on top. An ensemble teacher (``distill.teacher`` a list of
checkpoints) teaches the mean of its members' probabilities. The clean view of a face:
for a ``mixed`` data set, the first root's image with the same relative path (the clean
FERPlus the other roots were synthesized from); for any other data set, the face itself
(plain distillation).
The teacher runs once, before training, with its own mirror averaging; the targets live
beside the labels in :class:`SplitData`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lrdif.checkpoint import load_model
from lrdif.config import ConfigError
from lrdif.data.mixed import MixedDataset
from lrdif.data.splits import DataSection, SplitData, open_split
from lrdif.metrics import LABEL_CONDITIONED, run_model
from lrdif.train.config import DistillSection


def clean_view_index(data: DataSection, split: str, *, limit: int | None = None) -> np.ndarray:
    """int64 (N,): the index, within ``split``'s images as :func:`read_split` decodes them,
    of each face's clean view (see the module docstring)."""
    ds = open_split(data, split, None)
    index = (ds.first_root_index() if isinstance(ds, MixedDataset)
             else np.arange(len(ds.samples), dtype=np.int64))
    n = len(index) if limit is None else min(limit, len(index))
    # the first root comes first, so a clean view always precedes its face: kept by any limit
    return index[:n]


def teacher_probabilities(
    teacher_path: str | Path, train: SplitData, views: np.ndarray, *, batch_size: int
) -> Tensor:
    """(N, K) float32 teacher probabilities of each training face from its clean view
    ``train.images[views]``, in the model's classes, on the training device."""
    teacher = load_model(teacher_path, device=train.images.device)
    if teacher.registry_name in LABEL_CONDITIONED:
        raise ConfigError(f"distill.teacher = {teacher_path}: a {teacher.registry_name!r} "
                          "model needs the label; the teacher must classify from the image")
    if tuple(teacher.class_names) != train.class_names:
        raise ConfigError(f"distill.teacher = {teacher_path} classifies "
                          f"{list(teacher.class_names)}, the model {list(train.class_names)}")
    unique, inverse = torch.from_numpy(views).unique(return_inverse=True)
    index = unique.to(train.images.device)
    with torch.inference_mode():
        logits, _ = run_model(
            teacher, train.images[index],
            landmarks=None if train.landmarks is None else train.landmarks[index],
            batch_size=batch_size,
        )
    return logits.softmax(dim=1)[inverse].to(train.images.device)


def distilled_targets(
    distill: DistillSection, train: SplitData, views: np.ndarray, *, batch_size: int
) -> Tensor:
    """(N, K) targets ``(1 - w) y + w p_teacher`` of the module docstring (``distill.teacher``
    set; ``p_teacher`` the mean over an ensemble's members)."""
    labels = (train.targets if train.targets is not None
              else F.one_hot(train.labels, len(train.class_names)).float())
    paths = distill.teacher_paths()
    teacher = sum(teacher_probabilities(p, train, views, batch_size=batch_size)
                  for p in paths) / len(paths)
    return (1.0 - distill.weight) * labels + distill.weight * teacher
