"""What a training run reports: metrics.jsonl, TensorBoard scalars, a console line an epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lrdif.config import ConfigError
from lrdif.io import atomic_write
from lrdif.train.config import TrainConfig
from lrdif.train.state import Progress

METRICS_FILE = "metrics.jsonl"


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl, one row per epoch. Rewritten whole from the saved history, so a
    killed-and-resumed run has no duplicates."""
    with atomic_write(path, "w") as handle:
        for record in history:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def open_tensorboard(config: TrainConfig, out_dir: Path) -> Any:
    """A SummaryWriter under ``out_dir/tensorboard`` with ``tensorboard: true``, else None."""
    if not config.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(
            "tensorboard: true needs the tensorboard package (pip install tensorboard)"
        ) from exc
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


def log_epoch(writer: Any, epoch: int, record: dict[str, Any], progress: Progress) -> None:
    """The epoch's figures to TensorBoard (``writer``, or None) and one line to the console."""
    if writer is not None:
        for key, value in record.items():
            if key not in ("epoch", "step"):
                writer.add_scalar(key, value, epoch + 1)
        writer.flush()
    tqdm.write(
        f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f} | val acc {record['val_accuracy']:.4f} "
        f"(best {progress.best_val_accuracy:.4f} @ {progress.best_epoch})"
    )
