"""Where a training run came from, recorded in its checkpoints: the resolved config, the
data, the source tree's git commit and the UDC manifest of its data set.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import lrdif
from lrdif.config import to_dict
from lrdif.io import file_sha256
from lrdif.train.config import TrainConfig


def git_commit() -> str | None:
    """The source tree's commit (``-dirty`` with uncommitted changes), or None outside git."""
    here = Path(lrdif.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def udc_manifest(root: str | Path) -> dict[str, Any] | None:
    """The manifest ``lrdif synthesize`` left in a data set's root (its UDC parameters,
    seed, PSF checksums), or None for data it did not make."""
    from lrdif.udc.synthesize import INFO_DIR, MANIFEST

    path = Path(root) / INFO_DIR / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable UDC manifest ({exc})") from exc


def mixed_roots(root: str | Path, options: dict[str, Any]) -> list[str]:
    """Every root of a ``mixed`` data section: ``root``, then ``options["roots"]``."""
    return [str(root), *(str(r) for r in options.get("roots", []))]


def run_meta(config: TrainConfig, *, world_size: int, num_train: int, num_val: int
             ) -> dict[str, Any]:
    """The metadata every checkpoint of a run carries (each epoch adds its own figures)."""
    d, teacher = config.data, config.distill.teacher
    teacher_sha256 = [file_sha256(p) for p in config.distill.teacher_paths()]
    return {
        "train_config": to_dict(config),
        "dataset": {"name": d.dataset, "root": str(d.root), "options": d.options,
                    "train_split": d.train_split, "val_split": d.val_split,
                    "num_train": num_train, "num_val": num_val, "landmarks": d.landmarks},
        "udc_manifest": udc_manifest(d.root),
        **({"udc_manifests": {str(r): udc_manifest(r) for r in mixed_roots(d.root, d.options)}}
           if d.dataset == "mixed" else {}),
        # the teacher's file, not just its path: its targets shaped every step
        **({"distill_teacher_sha256": teacher_sha256[0] if isinstance(teacher, str)
            else teacher_sha256} if teacher else {}),
        "git_commit": git_commit(),
        "world_size": world_size,
    }
