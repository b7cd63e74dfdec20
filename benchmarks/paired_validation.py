"""Are two checkpoints' validation accuracies different beyond chance? A paired test.

    python benchmarks/paired_validation.py CHECKPOINT_A CHECKPOINT_B ROOT [ROOT ...] [--threads 2]

Both checkpoints read the validation split of each FERPlus-layout ROOT (clean FERPlus or a
``lrdif synthesize`` output). For each ROOT and for all of them pooled, prints each
model's accuracy, that of their two-model ensemble (the mean of their probabilities,
"A+B"), and the faces only one of them gets right; McNemar's z,
(only B - only A) / sqrt(only A + only B), says how far the difference is from what
the disagreements alone would give by chance (|z| < 2: no evidence either way).
"""

from __future__ import annotations

import argparse
import math

import torch

from lrdif.checkpoint import load_model
from lrdif.data.splits import DataSection, read_split, to_split_data
from lrdif.metrics import run_model


def mcnemar_z(only_a: int, only_b: int) -> float:
    """McNemar's statistic as a signed z: positive when B is right more often."""
    disagreements = only_a + only_b
    return 0.0 if disagreements == 0 else (only_b - only_a) / math.sqrt(disagreements)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint_a")
    parser.add_argument("checkpoint_b")
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [load_model(p, device="cpu") for p in (args.checkpoint_a, args.checkpoint_b)]
    pooled = {"faces": 0, "right A": 0, "right B": 0, "right A+B": 0, "only A": 0, "only B": 0}
    for root in args.roots:
        images, labels, classes = read_split(DataSection(root=root), "valid", limit=None)
        split = to_split_data(images, labels, classes, tuple(models[0].class_names),
                              landmarks=None, device=torch.device("cpu"), where=root)
        with torch.inference_mode():
            prob_a, prob_b = (run_model(m, split.images)[0].softmax(1) for m in models)
        right_a, right_b, right_ab = (p.argmax(1) == split.labels
                                      for p in (prob_a, prob_b, prob_a + prob_b))
        row = {"faces": len(split.labels), "right A": int(right_a.sum()),
               "right B": int(right_b.sum()), "right A+B": int(right_ab.sum()),
               "only A": int((right_a & ~right_b).sum()),
               "only B": int((right_b & ~right_a).sum())}
        pooled = {k: pooled[k] + row[k] for k in pooled}
        _print_row(root, row)
    if len(args.roots) > 1:
        _print_row("pooled", pooled)


def _print_row(name: str, row: dict[str, int]) -> None:
    acc_a, acc_b, acc_ab = (100 * row[f"right {k}"] / row["faces"] for k in ("A", "B", "A+B"))
    z = mcnemar_z(row["only A"], row["only B"])
    print(f"{name}: {row['faces']} faces, A {acc_a:.2f}, B {acc_b:.2f}, A+B {acc_ab:.2f}, "
          f"only A {row['only A']}, only B {row['only B']}, McNemar z {z:+.2f}", flush=True)


if __name__ == "__main__":
    main()
