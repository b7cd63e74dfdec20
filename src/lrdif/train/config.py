"""The training config: what ``lrdif train CONFIG [key=value ...]`` reads.

A YAML file (or a packaged name such as ``cpu_s1``) is read into :class:`TrainConfig`
by :func:`lrdif.config.load_config`; unknown keys are errors. The resolved config is
stored in every checkpoint, so a run can be repeated from its checkpoint alone.

Stage 1 / baselines name a model and its architecture options; stage 2 names the
stage-1 checkpoint in ``model.init_from`` and the keyword options of
``LRDifStage2.from_stage1`` in ``model.stage2`` (paper Sec. 3.3: FPEN_S2, the
denoiser and the UDCformer are initialised from stage 1, FPEN_S1 is the frozen teacher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lrdif.config import ConfigError, load_config
from lrdif.data.splits import DataSection


@dataclass
class ModelSection:
    """Which model to train (a MODELS key) and how to build it."""

    name: str = "lrdif_s1"
    # Fields of the model's config dataclass. in_channels, image_size and class_names are
    # taken from the data when left out.
    options: dict[str, Any] = field(default_factory=dict)
    # The checkpoint the run starts from: stage 2's stage-1 file; for any other model a
    # checkpoint of that same model (fine-tuning it further, e.g. on new data).
    init_from: str | None = None
    # Stage 2 only: from_stage1's keyword options.
    stage2: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimSection:
    """Adam with (L2) weight decay, as in paper Sec. 4.2, and a per-step LR schedule."""

    lr: float = 3.5e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    # "step" schedule: multiply the LR by step_gamma every step_epochs epochs.
    step_epochs: int = 30
    step_gamma: float = 0.1
    grad_clip: float | None = None
    # AdamW (Loshchilov and Hutter 2019): weight decay applied to the weights, not the gradient.
    decoupled_weight_decay: bool = False
    # LR multipliers by parameter-name prefix, e.g. {"fpen_s1.image_encoder": 0.1} trains a
    # pretrained E_I ten times slower than the parts that start from scratch.
    lr_scale: dict[str, float] = field(default_factory=dict)
    # The fused Adam kernel (one launch for every parameter; CUDA's fastest). null: on CUDA
    # only, so CPU runs keep the default (for-each) update and its bytes.
    fused: bool | None = None
    # The learning rate for another batch size: lr is the peak LR at base_batch_size, and a
    # run at batch_size B trains at lr * (B / base_batch_size) ("linear": Goyal et al. 2017,
    # for SGD) or lr * sqrt(B / base_batch_size) ("sqrt": Malladi et al. 2022, the rule for
    # Adam); "none" leaves lr as given.
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    base_batch_size: int = 64


@dataclass
class DistillSection:
    """Knowledge distillation from a trained classifier that sees each training face's
    clean view (:mod:`lrdif.train.distill`); off while ``teacher`` is null."""

    # checkpoint of an image-only classifier with the model's classes, or a list of them:
    # an ensemble teacher, whose probabilities are the mean of its members'
    teacher: str | list[str] | None = None
    weight: float = 0.5  # w: targets = (1 - w) labels + w teacher probabilities

    def teacher_paths(self) -> list[str]:
        """The teacher's checkpoints: none, one, or the members of an ensemble teacher."""
        t = self.teacher
        return [] if not t else [t] if isinstance(t, str) else list(t)


@dataclass
class TrainConfig:
    """One training run: model, data, optimiser and loop settings."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    distill: DistillSection = field(default_factory=DistillSection)
    epochs: int = 100
    batch_size: int = 64  # global batch, split evenly across DDP ranks
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    bf16: bool = False  # bf16 autocast for the forward pass (GPU, or CPUs with AMX)
    channels_last: bool = True
    # Also save the resume state every N optimiser steps (0: at the end of each epoch only).
    save_every_steps: int = 0
    # Use only the first N training images (benchmarks and smoke runs); null: all.
    limit_train: int | None = None
    tensorboard: bool = False  # needs the `tensorboard` package
    # Training targets (1 - eps) one-hot + eps / K (Szegedy et al. 2016); 0: the labels.
    label_smoothing: float = 0.0
    # Train on the data set's label distributions (FERPlus: the crowd's votes) instead of
    # one-hot labels; selection and evaluation stay on the labels (the 8-class protocol).
    soft_targets: bool = False
    # tau of the logit-adjusted loss (Menon et al. 2021): the training loss sees
    # logits + tau log(prior), the prior being the training split's class frequencies, so
    # rare classes need larger margins; predictions use the plain logits. 0: plain loss.
    logit_adjustment: float = 0.0
    # Class-balanced sampling: an epoch draws its N images with replacement, each with
    # probability proportional to (its class's count)^-q; 0: every image once (loop.epoch_order).
    class_balance: float = 0.0
    # torch.compile the network a training step calls (CUDA: fuses the small kernels of
    # batch-norm, activations and attention; the first steps pay the compilation).
    compile: bool = False
    # Read the loss on the host after every step to stop at the first NaN (null: on CPU,
    # where reading is free). Off, the loss and accuracy sums stay on the device and are
    # read (and checked) once an epoch and at each resume save: no step waits for the GPU.
    check_every_step: bool | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.logit_adjustment < 0:
            raise ConfigError(f"logit_adjustment must be >= 0, got {self.logit_adjustment}")
        if not 0.0 <= self.class_balance <= 1.0:
            raise ConfigError(f"class_balance must be in [0, 1], got {self.class_balance}")
        if not 0.0 < self.distill.weight <= 1.0:
            raise ConfigError(f"distill.weight must be in (0, 1], got {self.distill.weight}")
        if self.optim.base_batch_size < 1:
            raise ConfigError(
                f"optim.base_batch_size must be >= 1, got {self.optim.base_batch_size}"
            )
        if self.save_every_steps < 0:
            raise ConfigError(f"save_every_steps must be >= 0, got {self.save_every_steps}")
        if self.model.name == "lrdif_s2" and not self.model.init_from:
            raise ConfigError("model.init_from: stage 2 (lrdif_s2) needs a stage-1 checkpoint")
        if self.model.name != "lrdif_s2" and self.model.stage2:
            raise ConfigError(f"model.stage2 applies to lrdif_s2 only, not {self.model.name!r}")


def load_train_config(name_or_path: str | Path, overrides: list[str] = ()) -> TrainConfig:  # type: ignore[assignment]
    """Read a training config file (or packaged config name) with ``key=value`` overrides."""
    return load_config(TrainConfig, name_or_path, list(overrides))
