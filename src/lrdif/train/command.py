"""``lrdif train CONFIG [key=value ...] [--resume] [--out DIR]``.

CONFIG is a YAML file or a packaged config name (``cpu_s1``, ``paper_s2``, ...; see
``src/lrdif/configs``). Overrides use dotted keys: ``optim.lr=1e-3 data.root=/data/fer``.
Under ``torchrun --nproc_per_node N -m lrdif train ...`` it trains with DDP.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lrdif.checkpoint import CheckpointError
from lrdif.config import ConfigError, resolve_config_path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file or packaged config name (e.g. cpu_s1)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-3"
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help="run folder for checkpoints and metrics (default: runs/<config name>)",
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from its last saved state (also after a kill)",
    )


def main(args: argparse.Namespace) -> int:
    from lrdif.data.base import LayoutError
    from lrdif.data.images import ImageError
    from lrdif.train.config import load_train_config
    from lrdif.train.loop import TrainingDiverged, train

    try:
        config = load_train_config(args.config, args.overrides)
        out = args.out or Path("runs") / resolve_config_path(args.config).stem
        result = train(config, out, resume=args.resume)
    except (ConfigError, CheckpointError, LayoutError, ImageError, TrainingDiverged,
            FileExistsError, FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"lrdif train: error: {message}", file=sys.stderr)
        return 1
    if result.history:
        print(
            f"best validation accuracy {result.best_val_accuracy:.4f} at epoch "
            f"{result.best_epoch}; checkpoints in {result.out_dir}"
        )
    return 0
