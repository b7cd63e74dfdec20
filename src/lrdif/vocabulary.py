"""The words every layer of lrdif shares; this module imports nothing from lrdif (nor torch).

- ``__version__``: the package's version, written into checkpoints, manifests and exports;
- :data:`FERPLUS_CLASSES`: the eight FERPlus emotions, in the data set's vote order (the
  default classes of every model);
- :data:`IMAGE_MEAN`, :data:`IMAGE_STD`: every model normalises its [0, 1] images once with
  these constants (per channel), so the same checkpoint serves training, evaluation and ONNX;
- :class:`ModelOutput`: what every model in MODELS returns;
- :class:`CheckpointError`: weights (a file or a state dict) that a model cannot use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from torch import Tensor

__version__ = "0.1.0"

FERPLUS_CLASSES = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)  # fmt: skip

IMAGE_MEAN = 0.5
IMAGE_STD = 0.25


class ModelOutput(NamedTuple):
    """What every model in MODELS returns (a tuple, so tracing and ONNX export accept it).

    logits (B, K); features (B, D) before the classifier; epr (B, C) the EPR the
    UDCformer used (Z in stage 1, Z'_0 in stage 2); epr_teacher (B, C) the frozen
    stage-1 Z (stage 2, only when labels were given), else None.
    """

    logits: Tensor
    features: Tensor
    epr: Tensor | None
    epr_teacher: Tensor | None


class CheckpointError(ValueError):
    """A file that is not a usable lrdif checkpoint; the message says why and what to do."""
