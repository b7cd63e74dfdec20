"""The accuracy levers of issue 12 measured one at a time against the pretrained recipe.

    python benchmarks/levers.py [--work benchmarks/work] [--threads 1]

Each row is a finished run (its ``best.safetensors``, selected on FER2013Valid by the
training loop) measured on FER2013Test under the 8-class majority protocol; each lever
is compared with the run it changes by a 95% paired-bootstrap interval on the test
images. The runs and the commands that trained them are listed in :data:`ROWS`; rows
whose run is missing are reported as such. Writes ``benchmarks/results/levers.md`` and
``levers.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lrdif.checkpoint import load_checkpoint
from lrdif.evaluate.studies import (
    cached_summary,
    checkpoint_data_section,
    evaluate_checkpoint,
    paired_bootstrap,
)
from lrdif.io import atomic_write, atomic_write_json
from lrdif.train.provenance import git_commit

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
UDC = "benchmarks/work/pretrained/udc-ferplus-toled"
CLEAN = "../shared/data/ferplus"
BACKBONE = "benchmarks/work/pretrained/{set}/backbone/best.safetensors"


@dataclass(frozen=True)
class Row:
    """One measured run: ``run`` is a folder under ``--work``; ``against`` the row it
    changes (its label), for the paired difference; ``label_free`` measures a stage 1
    without its label (the image path stage 2 inherits)."""

    set: str
    label: str
    lever: str
    run: str
    command: str
    against: str | None = None
    label_free: bool = False


def _s1(set_: str, root: str, extra: str = "") -> str:
    return (f"lrdif train pretrained_token_s1 data.root={root} "
            f"model.options.image_encoder_kwargs.checkpoint={BACKBONE.format(set=set_)}"
            f"{extra}")


ROWS = (
    Row("udc_toled", "backbone", "reference", "pretrained/udc_toled/backbone",
        f"lrdif train pretrained_backbone data.root={UDC}"),
    Row("udc_toled", "backbone + soft targets", "C: vote distributions as targets",
        "studies/udc_backbone_soft",
        f"lrdif train pretrained_backbone data.root={UDC} soft_targets=true", "backbone"),
    Row("udc_toled", "backbone + logit-adjusted loss", "C: class imbalance (tau 1)",
        "studies/udc_backbone_la",
        f"lrdif train pretrained_backbone data.root={UDC} logit_adjustment=1.0", "backbone"),
    Row("udc_toled", "LRDif S2", "reference (paper's fusion tokens)",
        "pretrained/udc_toled/ablation/S2-V3",
        "python benchmarks/ferplus.py full --recipe pretrained --work pretrained "
        "--sets udc_toled --threads 1", "backbone"),
    Row("udc_toled", "LRDif S1 + E_I token, label-free", "B: E_I token (stage 1)",
        "token/udc_toled/lrdif_s1",
        "python benchmarks/ferplus.py full --recipe pretrained_token --work token "
        "--sets udc_toled --threads 1 --table5 S2-V1 S2-V3", "backbone", label_free=True),
    Row("udc_toled", "LRDif S2 + E_I token", "B: E_I features as a fusion token",
        "token/udc_toled/ablation/S2-V3",
        "python benchmarks/ferplus.py full --recipe pretrained_token --work token "
        "--sets udc_toled --threads 1 --table5 S2-V1 S2-V3", "LRDif S2"),
    Row("udc_toled", "LRDif S2-V1 + E_I token", "B: E_I token, no diffusion (V1)",
        "token/udc_toled/ablation/S2-V1",
        "(the same command)", "LRDif S2 + E_I token"),
    Row("udc_toled", "LRDif S2 + E_I token + MediaPipe landmarks",
        "A: detected landmarks (learned queries where none)",
        "studies/udc_landmarks/lrdif_s2",
        f"{_s1('udc_toled', UDC, ' data.landmarks=mediapipe')} --out RUN/lrdif_s1; "
        f"lrdif train pretrained_token_s2 data.root={UDC} data.landmarks=mediapipe "
        "model.init_from=RUN/lrdif_s1/best.safetensors --out RUN/lrdif_s2",
        "LRDif S2 + E_I token"),
    Row("clean", "backbone", "reference", "pretrained/clean/backbone",
        f"lrdif train pretrained_backbone data.root={CLEAN}"),
    Row("clean", "LRDif S2", "reference (paper's fusion tokens)",
        "pretrained/clean/ablation/S2-V3",
        "python benchmarks/ferplus.py full --recipe pretrained --work pretrained "
        "--sets clean --threads 1", "backbone"),
    Row("clean", "LRDif S1 + E_I token, label-free", "B: E_I token (stage 1)",
        "token/clean/lrdif_s1",
        "python benchmarks/ferplus.py full --recipe pretrained_token --work token "
        "--sets clean --threads 1 --table5 S2-V1 S2-V3", "backbone", label_free=True),
    Row("clean", "LRDif S2 + E_I token", "B: E_I features as a fusion token",
        "token/clean/ablation/S2-V3", "(the same command)", "LRDif S2"),
    Row("clean", "LRDif S2-V1 + E_I token", "B: E_I token, no diffusion (V1)",
        "token/clean/ablation/S2-V1", "(the same command)", "LRDif S2 + E_I token"),
)
ROOTS = {"udc_toled": UDC, "clean": CLEAN}


def _selected_epoch(run: Path) -> dict[str, Any]:
    """The validation record of the epoch the run selected (its best val accuracy)."""
    history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(history, key=lambda r: r["val_accuracy"])
    return {"epoch": best["epoch"], "epochs": len(history),
            "val_accuracy": best["val_accuracy"],
            "val_mean_class_accuracy": best.get("val_mean_class_accuracy"),
            "minutes": sum(r.get("epoch_time_s", 0.0) for r in history) / 60}


def measure(work: Path) -> dict[str, dict[str, Any]]:
    """{set/label: row record} for every finished row, with paired differences."""
    records: dict[str, dict[str, Any]] = {}
    evaluations: dict[str, Any] = {}
    for row in ROWS:
        run = work / row.run
        best = run / "best.safetensors"
        key = f"{row.set}/{row.label}"
        if not best.is_file():
            records[key] = {"row": row.__dict__, "missing": True}
            continue
        data = checkpoint_data_section(best, "ferplus", ROOTS[row.set])
        cache = run / "landmarks"
        test = cached_summary(best, data, "test", cache_dir=cache, label_free=row.label_free)
        record = {"row": row.__dict__, "test": test, "selected": _selected_epoch(run),
                  "commit": (load_checkpoint(best).meta.get("git_commit") or "-")[:12]}
        if row.against is not None and f"{row.set}/{row.against}" in evaluations:
            other = evaluations[f"{row.set}/{row.against}"]
            mine = evaluate_checkpoint(best, data, "test", cache_dir=cache,
                                       label_free=row.label_free)
            record["difference"] = paired_bootstrap(mine, other())
        evaluations[key] = (lambda b=best, d=data, c=cache, lf=row.label_free:
                            evaluate_checkpoint(b, d, "test", cache_dir=c, label_free=lf))
        records[key] = record
    return records


def render(records: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Accuracy levers (issue 12), one at a time", "",
        f"- Report: `python benchmarks/levers.py {' '.join(sys.argv[1:])}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='minutes')}, "
        f"commit {git_commit()}",
        "- Every run: one torch thread on the 2-core development machine, selected on "
        "FER2013Valid (best validation accuracy), measured on FER2013Test, 8-class majority "
        "labels. Differences: test accuracy of the row minus the row it changes, in points, "
        "95% paired-bootstrap interval (2,000 resamplings of the test images).",
        "",
        "| set | row | lever | test acc. | mean class | macro-F1 | val acc. (epoch) | "
        "val mean class | difference vs | points [95% interval] | trained at |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | --- | --- | --- |",
    ]
    for r in records.values():
        row = r["row"]
        if r.get("missing"):
            lines.append(f"| {row['set']} | {row['label']} | {row['lever']} | not run | "
                         "- | - | - | - | - | - | - |")
            continue
        t, s = r["test"], r["selected"]
        diff = r.get("difference")
        cell = "-" if diff is None else (f"{100 * diff['difference']:+.2f} "
                                         f"[{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}]")
        vmc = s["val_mean_class_accuracy"]
        lines.append(
            f"| {row['set']} | {row['label']} | {row['lever']} | {100 * t['accuracy']:.2f} | "
            f"{100 * t['mean_class_accuracy']:.2f} | {t['macro_f1']:.3f} | "
            f"{100 * s['val_accuracy']:.2f} ({s['epoch']}/{s['epochs']}) | "
            f"{'-' if vmc is None else f'{100 * vmc:.2f}'} | {row['against'] or '-'} | "
            f"{cell} | {r['commit']} |")
    lines += ["", "## Commands", ""]
    lines += [f"- {r['row']['set']} / {r['row']['label']}: `{r['row']['command']}` "
              f"(run folder `benchmarks/work/{r['row']['run']}`)" for r in records.values()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = measure(args.work)
    atomic_write_json(RESULTS / "levers.json", records)
    text = render(records)
    with atomic_write(RESULTS / "levers.md", "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
