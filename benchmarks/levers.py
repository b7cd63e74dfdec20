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

import numpy as np
import torch

from lrdif.checkpoint import load_checkpoint, load_model
from lrdif.data.splits import SplitData
from lrdif.evaluate.studies import (
    Evaluation,
    checkpoint_data_section,
    evaluate_model,
    load_eval_split,
    paired_bootstrap,
)
from lrdif.io import atomic_write, atomic_write_json, file_sha256
from lrdif.metrics import confusion_matrix, summarize
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
    test_flip: bool = False  # evaluate averaging each face and its mirror (LRDif option)


def _s1(set_: str, root: str, extra: str = "") -> str:
    return (f"lrdif train pretrained_token_s1 data.root={root} "
            f"model.options.image_encoder_kwargs.checkpoint={BACKBONE.format(set=set_)}"
            f"{extra}")


TOKEN = ("python benchmarks/ferplus.py full --recipe pretrained_token --work token "
         "--sets {set} --threads 1 --table5 S2-V1 S2-V3")
PRETRAINED = ("python benchmarks/ferplus.py full --recipe pretrained --work pretrained "
              "--sets {set} --threads 1")


def _backbone(set_: str, root: str) -> Row:
    return Row(set_, "backbone", "reference (evaluated with flip averaging)",
               f"pretrained/{set_}/backbone", f"lrdif train pretrained_backbone data.root={root}")


def _token_rows(set_: str) -> tuple[Row, ...]:
    """The rows both data sets have: the morning's LRDif, with and without flip averaging,
    and the E_I-token recipe (stage 1 label-free, S2-V3 with and without flip, S2-V1)."""
    return (
        Row(set_, "LRDif S2", "reference (the paper's fusion tokens)",
            f"pretrained/{set_}/ablation/S2-V3", PRETRAINED.format(set=set_), "backbone"),
        Row(set_, "LRDif S2, flip-averaged", "evaluation as the backbone's",
            f"pretrained/{set_}/ablation/S2-V3", "(the same run)", "backbone", test_flip=True),
        Row(set_, "LRDif S1 + E_I token, label-free", "B: E_I token (stage 1)",
            f"token/{set_}/lrdif_s1", TOKEN.format(set=set_), "backbone", label_free=True),
        Row(set_, "LRDif S2 + E_I token", "B: E_I features as a fusion token",
            f"token/{set_}/ablation/S2-V3", TOKEN.format(set=set_), "LRDif S2"),
        Row(set_, "LRDif S2 + E_I token, flip-averaged", "B + evaluation as the backbone's",
            f"token/{set_}/ablation/S2-V3", "(the same run)", "backbone", test_flip=True),
        Row(set_, "LRDif S2-V1 + E_I token", "B: E_I token, no diffusion (V1)",
            f"token/{set_}/ablation/S2-V1", "(the same command)", "LRDif S2 + E_I token"),
    )


def _head_row(set_: str, root: str, folder: str) -> Row:
    return Row(
        set_, "LRDif S2 + E_I token + E_I head, flip-averaged",
        "B: E_I's own classifier added to the logits", f"studies/{folder}/lrdif_s2",
        f"lrdif train pretrained_head_s1 data.root={root} model.options.image_encoder_kwargs."
        f"checkpoint={BACKBONE.format(set=set_)} --out RUN/lrdif_s1; lrdif train "
        f"pretrained_token_s2 data.root={root} model.init_from=RUN/lrdif_s1/best.safetensors "
        "--out RUN/lrdif_s2", "backbone")


LIGHT = ("'data.augment={crop_area: [1.0, 1.0], scale: [1.0, 1.0], rotate: 0, "
         "translate: 0.0833, erase: 0}'")  # flips and +-4-pixel shifts only


def _light_rows(set_: str, root: str, folder: str, size: str = "") -> tuple[Row, ...]:
    """The backbone and the E_I-head LRDif again with light augmentation (``size``: the
    backbone's input side when not 64, e.g. `` model.options.input_size=96``)."""
    run = f"benchmarks/work/studies/{folder}"
    encoder_size = size.replace("model.options.", "model.options.image_encoder_kwargs.")
    what = "light augmentation" + (f", {size.split('=')[1]}-px E_I" if size else "")
    backbone = f"backbone, {what}"
    return (
        Row(set_, backbone, "C: recipe" if not size else "B: E_I input size",
            f"studies/{folder}/backbone",
            f"lrdif train pretrained_backbone data.root={root} {LIGHT}{size} --out {run}/backbone",
            "backbone" if not size else "backbone, light augmentation"),
        Row(set_, f"LRDif S2 + E_I token + E_I head, flip-averaged, {what}",
            "the E_I-head recipe on this backbone", f"studies/{folder}/lrdif_s2",
            f"lrdif train pretrained_head_s1 data.root={root} {LIGHT}{encoder_size} "
            f"model.options.image_encoder_kwargs.checkpoint={run}/backbone/best.safetensors "
            f"--out {run}/lrdif_s1; lrdif train pretrained_token_s2 data.root={root} {LIGHT} "
            f"model.init_from={run}/lrdif_s1/best.safetensors --out {run}/lrdif_s2", backbone),
    )


ROWS = (
    _backbone("udc_toled", UDC),
    Row("udc_toled", "backbone + soft targets", "C: vote distributions as targets",
        "studies/udc_backbone_soft",
        f"lrdif train pretrained_backbone data.root={UDC} soft_targets=true", "backbone"),
    Row("udc_toled", "backbone + logit-adjusted loss", "C: class imbalance (tau 1)",
        "studies/udc_backbone_la",
        f"lrdif train pretrained_backbone data.root={UDC} logit_adjustment=1.0", "backbone"),
    *_token_rows("udc_toled"),
    Row("udc_toled", "LRDif S2 + E_I token + MediaPipe landmarks",
        "A: detected landmarks (learned maps where none)", "studies/udc_landmarks/lrdif_s2",
        f"{_s1('udc_toled', UDC, ' data.landmarks=mediapipe')} --out RUN/lrdif_s1; "
        f"lrdif train pretrained_token_s2 data.root={UDC} data.landmarks=mediapipe "
        "model.init_from=RUN/lrdif_s1/best.safetensors --out RUN/lrdif_s2",
        "LRDif S2 + E_I token"),
    Row("udc_toled", "backbone + logit-adjusted loss, no smoothing",
        "C: class imbalance (tau 1, label smoothing 0)", "studies/udc_backbone_la_nosmooth",
        f"lrdif train pretrained_backbone data.root={UDC} label_smoothing=0 "
        "logit_adjustment=1.0", "backbone"),
    _head_row("udc_toled", UDC, "udc_head"),
    *_light_rows("udc_toled", UDC, "udc_light"),
    *_light_rows("udc_toled", UDC, "udc_light96", " model.options.input_size=96"),
    Row("udc_toled", "backbone, light augmentation, square-root class sampling",
        "C: class-balanced sampler (q 0.5)", "studies/udc_light_sqrt/backbone",
        f"lrdif train pretrained_backbone data.root={UDC} {LIGHT} class_balance=0.5 "
        "--out benchmarks/work/studies/udc_light_sqrt/backbone", "backbone, light augmentation"),
    _backbone("clean", CLEAN),
    *_token_rows("clean"),
    _head_row("clean", CLEAN, "clean_head"),
    *_light_rows("clean", CLEAN, "clean_light"),
    *_light_rows("clean", CLEAN, "clean_light96", " model.options.input_size=96"),
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


def test_logits(row: Row, best: Path, cache: Path) -> Evaluation:
    """The run's test-split logits (and labels), computed once per checkpoint and setting
    and kept in ``cache`` (a .npz keyed by the checkpoint's SHA-256)."""
    key = f"{file_sha256(best)[:20]}_flip{int(row.test_flip)}_free{int(row.label_free)}"
    path = cache / f"{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            logits, labels = torch.from_numpy(stored["logits"]), torch.from_numpy(stored["labels"])
            classes = tuple(str(c) for c in stored["classes"])
    else:
        model = load_model(best)
        if row.test_flip:
            model.config.test_flip = True
        data = checkpoint_data_section(best, "ferplus", ROOTS[row.set])
        split = load_eval_split(data, "test", model, device=torch.device("cpu"),
                                cache_dir=best.parent / "landmarks")
        ev = evaluate_model(model, split, label_free=row.label_free)
        logits, labels, classes = ev.logits, split.labels.cpu(), split.class_names
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as handle:
            np.savez(handle, logits=logits.numpy(), labels=labels.numpy(),
                     classes=np.array(classes))
    cm = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), len(classes))
    split = SplitData(images=torch.empty(0), labels=labels, landmarks=None, class_names=classes)
    return Evaluation(summary=summarize(cm, classes), logits=logits, features=torch.empty(0),
                      split=split, model=None)


def measure(work: Path, recorded: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{set/label: row record} for every finished row, with paired differences. A row
    whose run folder is gone (ignored folders do not outlive a machine) keeps its
    ``recorded`` figures; its differences are the recorded ones too."""
    records: dict[str, dict[str, Any]] = {}
    evaluations: dict[str, Evaluation] = {}
    for row in ROWS:
        best = work / row.run / "best.safetensors"
        key = f"{row.set}/{row.label}"
        if not best.parent.is_dir() and "test" in recorded.get(key, {}):
            records[key] = {**recorded[key], "row": row.__dict__}
            continue
        planned = (load_checkpoint(best).meta.get("train_config", {}).get("epochs")
                   if best.is_file() else None)
        if planned is None or _selected_epoch(best.parent)["epochs"] < planned:
            records[key] = {"row": row.__dict__, "missing": True}  # not run, or unfinished
            continue
        ev = test_logits(row, best, work / "levers_cache")
        record = {"row": row.__dict__, "test": ev.summary, "selected": _selected_epoch(best.parent),
                  "commit": (load_checkpoint(best).meta.get("git_commit") or "-")[:12]}
        if row.against is not None and f"{row.set}/{row.against}" in evaluations:
            record["difference"] = paired_bootstrap(ev, evaluations[f"{row.set}/{row.against}"])
        evaluations[key] = ev
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
        "95% paired-bootstrap interval (2,000 resamplings of the test images). A row whose "
        "run folder is gone keeps the figures recorded when it was measured (its commit "
        "column says when it was trained).",
        "",
        "| set | row | lever | test acc. | mean class | macro-F1 | val acc. (epoch) | "
        "val mean class | difference vs | points [95% interval] | trained at |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | --- | --- | --- |",
    ]
    for r in records.values():
        row = r["row"]
        if r.get("missing"):
            lines.append(f"| {row['set']} | {row['label']} | {row['lever']} | not finished | "
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
    previous = RESULTS / "levers.json"
    records = measure(args.work, json.loads(previous.read_text()) if previous.is_file() else {})
    atomic_write_json(RESULTS / "levers.json", records)
    text = render(records)
    with atomic_write(RESULTS / "levers.md", "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
