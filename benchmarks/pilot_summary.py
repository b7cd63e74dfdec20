"""Summarise the UDC-FERPlus pilot (benchmarks/pilot_udc_ferplus.sh) as Markdown and JSON.

    python benchmarks/pilot_summary.py [--work benchmarks/work/pilot]

Reads each run's metrics.jsonl (validation, per epoch) and test.json (``lrdif evaluate``
of its best-on-validation checkpoint) and writes benchmarks/results/pilot_udc_ferplus.md
and .json. Selection was on FER2013Valid; the test split is only reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

from lrdif.io import atomic_write, atomic_write_json

RUNS = {
    "s1": "LRDif stage 1 (label given: Table 5 S1)",
    "s2": "LRDif stage 2 (diffusion, L_total, inserted noise: S2-V3)",
    "s2_no_dm": "LRDif stage 2 without diffusion (S2-V1)",
    "resnet18": "ResNet-18, random init",
}
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/pilot"))
    args = parser.parse_args()
    rows, summary = [], {}
    for run, label in RUNS.items():
        metrics_file, test_file = args.work / run / "metrics.jsonl", args.work / run / "test.json"
        if not (metrics_file.is_file() and test_file.is_file()):
            rows.append(f"| {label} | not finished | | | | | |")
            continue
        epochs = [json.loads(line) for line in metrics_file.read_text().splitlines()]
        best = max(epochs, key=lambda e: e["val_accuracy"])  # first best, as training keeps
        test = json.loads(test_file.read_text())
        ips = sum(e["train_images_per_s"] for e in epochs) / len(epochs)
        summary[run] = {
            "test_accuracy": 100 * test["accuracy"],
            "test_mean_class_accuracy": 100 * test["mean_class_accuracy"],
            "test_macro_f1": 100 * test["macro_f1"],
            "best_val_accuracy": 100 * best["val_accuracy"], "best_epoch": best["epoch"],
            "epochs": len(epochs), "train_images_per_s": ips,
            "val_curve": [round(100 * e["val_accuracy"], 2) for e in epochs],
            "per_class_recall": {k: v["recall"] for k, v in test["per_class"].items()},
        }
        s = summary[run]
        rows.append(
            f"| {label} | {s['test_accuracy']:.2f} | {s['test_mean_class_accuracy']:.2f} | "
            f"{s['test_macro_f1']:.2f} | {s['best_val_accuracy']:.2f} (epoch {best['epoch']}) | "
            f"{ips:.0f} | {', '.join(f'{v:.1f}' for v in s['val_curve'])} |"
        )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    header = [
        "# UDC-FERPlus pilot (one 2-core session)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}; commit {commit}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs",
        "- commands: `EPOCHS=6 benchmarks/pilot_udc_ferplus.sh`, then "
        "`python benchmarks/pilot_summary.py`",
        "- data: FERPlus 8-class majority protocol, degraded by `lrdif synthesize` with the "
        "simulator defaults (toled, 32 dB, face_px 600, seed 0); train FER2013Train, "
        "selection FER2013Valid, report FER2013Test",
        "- budget: 6 epochs per run (the CPU recipes say 10), LRDif in the light geometry "
        "(UDCformer levels 12/6/3, conv E_I widths 16/32/64); ResNet-18 at the recipe's size",
        "- this is a pilot, not the benchmark of issue 4: fewer epochs, no clean-FERPlus column",
        "",
        "| method | test acc. % | test mean class acc. % | test macro-F1 % | best val. acc. % "
        "| train img/s | val. acc. per epoch % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    steps_file = args.work / "s2" / "steps.json"
    if steps_file.is_file():  # Fig. 6 analogue
        steps = json.loads(steps_file.read_text())["steps"]
        summary["s2_steps"] = {r["steps"]: 100 * r["accuracy"] for r in steps}
        rows += ["", "Stage 2, test accuracy by number of reverse-diffusion steps (trained T = 4):",
                 "", "| steps | " + " | ".join(str(r["steps"]) for r in steps) + " |",
                 "| --- |" + " ---: |" * len(steps),
                 "| test acc. % | " + " | ".join(f"{100 * r['accuracy']:.2f}" for r in steps)
                 + " |"]
    with atomic_write(RESULTS / "pilot_udc_ferplus.md", "w") as handle:
        handle.write("\n".join([*header, *rows]) + "\n")
    atomic_write_json(RESULTS / "pilot_udc_ferplus.json", summary)


if __name__ == "__main__":
    main()
