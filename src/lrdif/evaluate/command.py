"""``lrdif evaluate CKPT --dataset ferplus --data DIR --split test [--json out.json]
[--tsne] [--steps 1,2,4,8,16] [--out DIR]``.

Prints accuracy, mean per-class accuracy, macro-F1 and per-class precision/recall;
writes the confusion-matrix figure (and with ``--tsne`` the t-SNE figure of the features,
paper Fig. 4/5; with ``--steps`` the accuracy-vs-iterations curve, Fig. 6) into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lrdif.io import atomic_write_json

TSNE_MAX_POINTS = 3000  # t-SNE is O(N log N) but slow on 2 cores beyond a few thousand


def _steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--steps {text!r}: expected integers like 1,2,4,8"
        ) from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: expected positive integers")
    return steps


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a .safetensors file made by lrdif train")
    parser.add_argument("--dataset", default="ferplus", help="DATASETS key (default ferplus)")
    parser.add_argument("--data", type=Path, required=True, help="the data set's root folder")
    parser.add_argument("--split", default="test", help="split to measure (default test)")
    parser.add_argument("--json", type=Path, default=None, help="write all metrics as JSON here")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for figures (default: <checkpoint folder>/eval-<split>)")
    parser.add_argument("--tsne", action="store_true", help="t-SNE figure of the features")
    parser.add_argument("--steps", type=_steps, default=None, metavar="1,2,4,8,16",
                        help="stage 2: accuracy with each number of reverse-diffusion steps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def main(args: argparse.Namespace) -> int:
    from lrdif.checkpoint import CheckpointError
    from lrdif.config import ConfigError
    from lrdif.data.base import LayoutError
    from lrdif.data.images import ImageError

    try:
        report = evaluate(args)
    except (CheckpointError, ConfigError, LayoutError, ImageError, ImportError, KeyError,
            ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"lrdif evaluate: error: {message}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation of ``args``; returns the JSON report (also written to --json)."""
    from lrdif.evaluate import plots
    from lrdif.evaluate.studies import (
        checkpoint_data_section,
        evaluate_checkpoint,
        steps_curve,
        subsample,
    )

    out = args.out or args.checkpoint.parent / f"eval-{args.split}"
    data = checkpoint_data_section(args.checkpoint, args.dataset, args.data)
    ev = evaluate_checkpoint(args.checkpoint, data, args.split, device=args.device,
                             batch_size=args.batch_size, cache_dir=out / "landmarks")
    names = ev.split.class_names
    report: dict[str, Any] = {
        "checkpoint": str(args.checkpoint), "model": ev.model.registry_name,
        "dataset": args.dataset, "data": str(args.data), "split": args.split,
        **ev.summary, "figures": {},
    }
    cm_path = plots.plot_confusion_matrix(
        ev.summary["confusion_matrix"], names, out / "confusion_matrix.png",
        title=f"{ev.model.registry_name} on {args.dataset} {args.split}",
    )
    report["figures"]["confusion_matrix"] = str(cm_path)
    if args.tsne:
        labels = ev.split.labels.cpu().numpy()
        pick = subsample(labels, TSNE_MAX_POINTS)
        embedding = plots.tsne_embedding(ev.features.numpy()[pick])
        report["figures"]["tsne"] = str(plots.plot_tsne(
            embedding, labels[pick], names, out / "tsne.png",
            title=f"t-SNE of {ev.model.registry_name} features ({args.split}, {len(pick)} faces)",
        ))
    if args.steps:
        rows = steps_curve(ev.model, ev.split, args.steps, batch_size=args.batch_size)
        report["steps"] = rows
        report["figures"]["steps"] = str(plots.plot_steps_curve(
            [r["steps"] for r in rows], [r["accuracy"] for r in rows], out / "steps.png",
            trained_steps=ev.model.config.diffusion.timesteps,
        ))
    if args.json:
        atomic_write_json(args.json, report)
    return report


def format_report(report: dict[str, Any]) -> str:
    """A readable summary of a report of :func:`evaluate`."""
    lines = [
        f"{report['model']} on {report['dataset']} {report['split']} "
        f"({report['num_samples']} images)",
        f"  accuracy            {100 * report['accuracy']:6.2f} %",
        f"  mean class accuracy {100 * report['mean_class_accuracy']:6.2f} %",
        f"  macro-F1            {report['macro_f1']:6.4f}",
        "  class         precision  recall   support",
    ]
    for name, c in report["per_class"].items():
        lines.append(f"  {name:<12} {c['precision']:9.3f} {c['recall']:7.3f} {c['support']:9d}")
    for row in report.get("steps", []):
        lines.append(f"  diffusion steps {row['steps']:>3}: accuracy {100 * row['accuracy']:.2f} %")
    lines += [f"  {k}: {v}" for k, v in report["figures"].items()]
    return "\n".join(lines)


__all__ = ["configure_parser", "evaluate", "format_report", "main"]
