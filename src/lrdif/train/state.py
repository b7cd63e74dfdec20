"""The resume state of a training run: where it stands (:class:`Progress`), its weights and
the optimiser's moments, in one atomic safetensors file (``resume.safetensors``).

With the seeding of :mod:`lrdif.train.loop` this is all a run needs to continue from any
saved step and end with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lrdif.checkpoint import load_state, save_state
from lrdif.config import ConfigError, to_dict
from lrdif.train.config import TrainConfig

RESUME_FILE = "resume.safetensors"


def check_run_folder(out: Path, resume: bool) -> None:
    """A new run needs a folder without one; ``resume`` needs its resume state."""
    resume_path = out / RESUME_FILE
    if resume and not resume_path.is_file():
        raise FileNotFoundError(f"--resume: {resume_path} does not exist (nothing to resume)")
    if not resume and (resume_path.exists() or (out / "last.safetensors").exists()):
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it, or choose another --out"
        )


@dataclass
class Progress:
    """Where a run stands; saved with the resume state (JSON)."""

    epoch: int = 0  # the epoch in progress, 0-based
    step_in_epoch: int = 0  # optimiser steps done in that epoch
    global_step: int = 0
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    # Running sums of the epoch in progress: loss terms x images, correct, images.
    sums: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list]:
    state = optimizer.state_dict()
    tensors = {
        f"optim.{index}.{key}": value
        for index, entry in state["state"].items()
        for key, value in entry.items()
    }
    return tensors, state["param_groups"]


def save_resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress,
    config: TrainConfig,
) -> None:
    """Weights, Adam moments, counters and the resolved config: one atomic safetensors file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    meta = {"progress": dataclasses.asdict(progress), "param_groups": groups,
            "config": to_dict(config)}
    save_state(path, tensors, meta)


def load_resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig
) -> Progress:
    """Restore what :func:`save_resume` wrote; the config must be the run's own."""
    tensors, meta = load_state(path)
    saved, now = meta["config"], to_dict(config)
    if saved != now:
        differ = sorted(_diff_keys(saved, now))
        raise ConfigError(
            f"{path}: --resume with a config that differs from the run's at {differ}; "
            "resume with the same config, or start a new run in another --out folder"
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return Progress(**meta["progress"])


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
