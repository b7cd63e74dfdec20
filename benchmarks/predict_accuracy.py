"""Accuracy of an lrdif checkpoint and of the ``fer`` package on FERPlus test sets, side by side.

Issues 5 and 13: the shipped model next to ``fer`` on UDC-FERPlus (and clean FERPlus),
not timed; per data set lrdif's accuracy, mean class accuracy, macro-F1, per-class recall
and expected calibration error (ECE) before and after its temperature.

    python benchmarks/predict_accuracy.py --weights RUN/best.safetensors \\
        --data udc_toled=UDC_ROOT --data clean=../shared/data/ferplus \\
        --fer-python /tmp/fervenv/bin/python [--limit N]

Without ``--fer-python`` only lrdif is measured (the fer columns are left out).

Data: the test split (FER2013Test) of each root, read by lrdif's own FERPlus reader
(``DATASETS["ferplus"]``, ``label_mode="majority"``: 3,137 images on the full set) through
``lrdif.data.splits.read_split``, as ``lrdif evaluate`` reads it. ``--limit N`` keeps the
first N images that protocol keeps (a quick check, not a result).

lrdif: ``Recognizer.from_checkpoint(weights, device="cpu").predict(crops, detect=False)``,
the application path: each 48x48 grey crop is one face (its whole-image box, no margin,
so the crop reaches a 48x48 model unchanged). Its 8-class accuracy is over every image.

Calibration (lrdif.calibration): the probabilities ``Recognizer`` returns are
``softmax(logits / T)`` with the temperature ``T`` stored in the checkpoint (fitted on
validation by benchmarks/ship_weights.py; 1 when absent). ECE (15 equal-width confidence
bins) is reported before (``T = 1``) and after, with the NLL, on the 8 classes; in the
7-class comparison each model's probabilities over the shared classes, renormalised.

fer: its shipped default classifier (the quantised TFLite mini-Xception, 64x64 grey
input, FER2013's 7 classes angry, disgust, fear, happy, sad, surprise, neutral), run in
``--fer-python`` (fer pulls TensorFlow, kept out of lrdif's environment; bench_predict.py
shows the install):
``FER(mtcnn=False, offsets=(0, 0)).detect_emotions(bgr, face_rectangles=[(0, 0, 48, 48)])``
with ``bgr`` the grey crop repeated over 3 channels (fer's BGR-to-grey conversion gives the
crop back). What fer does with it (fer/fer.py, fer 25.10.3): pads the grey image by 40 px
of the mean of its bottom two rows, makes the rectangle square, grows it by ``offsets``
on every side, cuts it out of the padded image, resizes the cut to 64x64 (cv2 bilinear)
and scales it to [-1, 1]. With ``offsets=(0, 0)`` the cut is exactly the 48x48 crop, the
input fer's model was trained on (whole FER2013 images); fer's default ``(10, 10)`` would
add a 10-pixel band of flat padding around each face. ``detect_emotions`` rounds scores
to 2 decimals, so ties would fall to fer's first class: the script keeps the unrounded
output of fer's ``_classify_emotions`` (the same call, wrapped) for the argmax.

Seven-class comparison: fer has no contempt, so images whose majority label is contempt
are left out, and lrdif's prediction is its argmax over the 7 shared classes (its
contempt probability dropped). Class names map by meaning (angry = anger, happy =
happiness, sad = sadness). Reported for both: 7-class accuracy, macro-F1 over the 7
classes, per-class recall, the number of images.

Caveats for reading the numbers: fer's labels are FER2013's original single labels, not
the FER+ crowd majority scored here; its classifier credits Arriaga et al.'s
face_classification, whose FER2013 loader keeps the csv's order and holds out its last
20 % (PublicTest + PrivateTest, i.e. FER2013Valid + FER2013Test) for checkpoint
selection, so fer never trained on these test images but chose its checkpoint on them.

Writes ``--json`` and ``--md`` (default benchmarks/results/predict_accuracy.{json,md}).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ferplus import machine  # benchmarks/ferplus.py: a script's folder is on sys.path

from lrdif.calibration import calibration_summary, expected_calibration_error
from lrdif.data.splits import DataSection, label_map, read_split
from lrdif.io import atomic_write, atomic_write_json, portable_path, portable_paths
from lrdif.metrics import confusion_matrix, summarize
from lrdif.predict.recognizer import Recognizer
from lrdif.train.provenance import git_commit, udc_manifest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SPLIT = "test"
# fer's class names (fer.FER._get_labels) -> the FERPlus reader's.
FERPLUS_OF_FER = {
    "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
    "sad": "sadness", "surprise": "surprise", "neutral": "neutral",
}  # fmt: skip

FER_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from importlib.metadata import version
    from pathlib import Path
    import cv2, numpy as np, tensorflow as tf
    import fer
    from fer.fer import FER
    crops_path, out_path = sys.argv[1], sys.argv[2]
    crops = np.load(crops_path)  # (N, H, W) uint8 grey face crops
    detector = FER(mtcnn=False, offsets=(0, 0))  # shipped default classifier (TFLite)
    classify, raw = detector._classify_emotions, []
    def keep_raw(faces):  # fer rounds the scores it returns; keep them unrounded
        scores = np.asarray(classify(faces), dtype=np.float32)
        raw.append(scores)
        return scores
    detector._classify_emotions = keep_raw
    box = [(0, 0, crops.shape[2], crops.shape[1])]
    for i, crop in enumerate(crops):
        found = detector.detect_emotions(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR),
                                         face_rectangles=box)
        if len(found) != 1:
            sys.exit(f"fer returned {len(found)} faces for crop {i}; expected 1")
    np.save(out_path, np.concatenate(raw))
    model = Path(fer.__file__).parent / "data" / "emotion_model_quantized.tflite"
    labels = detector._get_labels()
    print(json.dumps({"fer": version("fer"), "tensorflow": tf.__version__,
                      "classes": [labels[i] for i in range(len(labels))],
                      "model_file": model.name,
                      "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
                      "offsets": [0, 0]}))
""")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lrdif_outputs(recognizer: Recognizer, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, H, W)`` uint8 face crops -> (calibrated probabilities ``(N, K)`` from
    ``Recognizer.predict``, raw logits ``(N, K)``), in the model's class order. The two
    paths must agree: ``softmax(logits / T)`` is checked against the probabilities."""
    records = recognizer.predict(list(crops), detect=False, progress=False)
    failed = [r for r in records if r["error"] is not None]
    if failed or len(records) != len(crops):
        raise RuntimeError(f"lrdif predict gave {len(records)} records for {len(crops)} crops; "
                           f"first failure: {failed[0]['error'] if failed else None}")
    names = recognizer.class_names
    probs = np.array([[r["emotions"][c] for c in names] for r in records], dtype=np.float32)
    logits = recognizer.logits(crops[:, None])
    again = torch.softmax(torch.from_numpy(logits) / recognizer.temperature, dim=1).numpy()
    if not np.allclose(again, probs, atol=1e-4):
        raise RuntimeError("Recognizer.predict's probabilities differ from softmax(logits / T) "
                           f"by {np.abs(again - probs).max():.2e}")
    return probs, logits


def fer_probabilities(python: str, crops: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """fer's unrounded 7-class scores ``(N, 7)`` (fer's class order) and its provenance."""
    with tempfile.TemporaryDirectory() as tmp:
        crops_path, out_path = Path(tmp) / "crops.npy", Path(tmp) / "scores.npy"
        np.save(crops_path, crops)
        result = subprocess.run([python, "-c", FER_SCRIPT, str(crops_path), str(out_path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"fer run with {python} failed:\n{result.stderr[-2000:]}")
        info = json.loads(result.stdout.strip().splitlines()[-1])
        scores = np.load(out_path)
    if scores.shape != (len(crops), len(info["classes"])):
        raise RuntimeError(f"fer gave scores of shape {scores.shape} for {len(crops)} crops")
    return scores, info


def eight_class(
    labels: np.ndarray, data_classes: tuple[str, ...], probs: np.ndarray,
    model_classes: tuple[str, ...], where: str, *, logits: np.ndarray | None = None,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """lrdif's metrics over every image, in the model's classes (as ``lrdif evaluate``);
    with ``logits``, also ``calibration``: ECE and NLL before (T = 1) and after ``temperature``."""
    truth = label_map(data_classes, model_classes, where).numpy()[labels]
    cm = confusion_matrix(truth, probs.argmax(axis=1), len(model_classes))
    out = summarize(cm, model_classes)
    if logits is not None:
        out["calibration"] = calibration_summary(logits, truth, temperature)
    return out


def seven_class(
    labels: np.ndarray, data_classes: tuple[str, ...], lrdif_probs: np.ndarray,
    lrdif_classes: tuple[str, ...], fer_scores: np.ndarray | None,
    fer_classes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Both models on the classes fer knows (all but contempt), in the data set's order.

    ``labels (N,)`` index ``data_classes``; ``lrdif_probs (N, K)`` follow ``lrdif_classes``,
    ``fer_scores (N, 7)`` follow ``fer_classes``. Images labelled with a class fer lacks
    are left out; each model's prediction is its argmax over the shared classes only, its
    ``ece`` that of its probabilities over them, renormalised. ``fer_scores=None``: lrdif only.
    """
    shared = tuple(c for c in data_classes if c in FERPLUS_OF_FER.values())
    missing = sorted(set(FERPLUS_OF_FER.values()) - set(shared))
    if missing:
        raise ValueError(f"the data set's classes {data_classes} lack {missing}")
    if fer_scores is not None and len(fer_classes) != fer_scores.shape[1]:
        raise ValueError(f"fer scores have {fer_scores.shape[1]} columns for {len(fer_classes)} "
                         "class names")
    unknown = [c for c in fer_classes if c not in FERPLUS_OF_FER]
    if unknown:
        raise ValueError(f"fer reported class(es) {unknown}; known: {sorted(FERPLUS_OF_FER)}")
    absent = [c for c in shared if c not in lrdif_classes]
    if absent:
        raise ValueError(f"the lrdif model has no class(es) {absent}; its: {lrdif_classes}")
    to_shared = np.array([shared.index(c) if c in shared else -1 for c in data_classes])
    truth = to_shared[labels]
    keep = truth >= 0
    fer_names = [FERPLUS_OF_FER[c] for c in fer_classes]
    columns = {"lrdif": lrdif_probs[:, [lrdif_classes.index(c) for c in shared]]}
    if fer_scores is not None:
        columns["fer"] = fer_scores[:, [fer_names.index(c) for c in shared]]
    out: dict[str, Any] = {"class_names": list(shared), "images": int(keep.sum()),
                           "left_out": int((~keep).sum())}
    for name, scores in columns.items():
        cm = confusion_matrix(truth[keep], scores[keep].argmax(axis=1), len(shared))
        out[name] = summarize(cm, shared)
        kept = scores[keep].astype(np.float64)
        total = kept.sum(axis=1, keepdims=True)
        out[name]["ece"] = (expected_calibration_error(kept / total, truth[keep])
                            if len(kept) and (total > 0).all() else None)
    return out


def parse_data(values: list[str]) -> dict[str, Path]:
    """``NAME=ROOT`` (or a bare ROOT, named by its folder) -> {name: root}."""
    out: dict[str, Path] = {}
    for value in values:
        name, _, root = value.rpartition("=")
        root_path = Path(root)
        name = name or root_path.resolve().name
        if name in out:
            raise SystemExit(f"--data: the name {name!r} is given twice")
        out[name] = root_path
    return out


def render(report: dict[str, Any]) -> str:
    """The markdown page: provenance, lrdif's 8-class metrics and calibration per data set,
    then the 7-class comparison with fer (when measured)."""
    first = next(iter(report["data"].values()))
    shared = first["seven_class"]["class_names"]
    classes = report["weights"]["class_names"]
    fer = report["fer"]
    w = report["weights"]
    lines = [
        "# Prediction accuracy: lrdif vs fer on FERPlus test sets",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}, commit {report['commit']}",
        f"- Machine: {report['machine']}",
        f"- lrdif: `{w['path']}` ({w['model']}, SHA-256 {w['sha256'][:16]}...), "
        f"`Recognizer.predict(crops, detect=False)`, temperature T = "
        f"{w.get('temperature', 1.0):.4g} from the checkpoint"
        + (" (none stored: uncalibrated)" if w.get("temperature", 1.0) == 1.0 else ""),
        (f"- fer {fer['fer']} (TensorFlow {fer['tensorflow']}), {fer['model_file']}, "
         f"`detect_emotions` on each whole crop, offsets {tuple(fer['offsets'])}") if fer
        else "- fer: not measured (no --fer-python)",
        f"- Data: split {SPLIT}, FERPlus majority labels"
        + (f", first {report['limit']} images (a check, not a result)" if report["limit"]
           else ""),
        "",
        "## lrdif, 8 classes",
        "",
        "ECE: 15 equal-width confidence bins; before = T 1, after = the checkpoint's T "
        "(fitted on validation, never on these test images). Mean class accuracy and "
        "macro-F1 over the classes present.",
        "",
        "| data | images | acc. % | mean class acc. % | macro-F1 % | "
        + " | ".join(f"recall {c} %" for c in classes)
        + " | ECE before % | ECE after % | NLL before | NLL after |",
        "| --- |" + " ---: |" * (len(classes) + 8),
    ]
    for name, entry in report["data"].items():
        e = entry["eight_class"]
        cal = e.get("calibration", {})
        recalls = " | ".join(f"{100 * e['per_class'][c]['recall']:.2f}" for c in classes)
        lines.append(
            f"| {name} | {e['num_samples']} | {100 * e['accuracy']:.2f} | "
            f"{100 * e['mean_class_accuracy']:.2f} | {100 * e['macro_f1']:.2f} | {recalls} | "
            f"{100 * cal['ece_before']:.2f} | {100 * cal['ece_after']:.2f} | "
            f"{cal['nll_before']:.4f} | {cal['nll_after']:.4f} |"
        )
    lines += [
        "",
        "## lrdif vs fer, 7 classes",
        "",
        "Images labelled contempt left out (fer has no contempt); each model's argmax over "
        "the 7 shared classes, its ECE on its probabilities over them, renormalised.",
        "",
        "| data | model | images (7-class) | 7-class acc. % | 7-class macro-F1 % | "
        + " | ".join(f"recall {c} %" for c in shared) + " | ECE % |",
        "| --- | --- |" + " ---: |" * (len(shared) + 4),
    ]
    label = {"lrdif": f"lrdif ({w['model']})", "fer": "fer"}
    for name, entry in report["data"].items():
        seven = entry["seven_class"]
        for model in ("lrdif", "fer"):
            if model not in seven:
                continue
            summary = seven[model]
            recalls = " | ".join(f"{100 * summary['per_class'][c]['recall']:.2f}" for c in shared)
            ece = "-" if summary.get("ece") is None else f"{100 * summary['ece']:.2f}"
            lines.append(
                f"| {name} | {label[model]} | {seven['images']} | "
                f"{100 * summary['accuracy']:.2f} | {100 * summary['macro_f1']:.2f} | "
                f"{recalls} | {ece} |"
            )
    if fer:
        lines += ["", "Caveat: fer's classifier was trained on FER2013's own single labels and "
                  "selected on FER2013's PublicTest + PrivateTest rows (FER2013Valid + "
                  "FER2013Test here); see the script's docstring."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, type=Path,
                        help="an lrdif checkpoint: stage-2 LRDif or a baseline")
    parser.add_argument("--data", required=True, action="append", metavar="[NAME=]ROOT",
                        help="a FERPlus-layout root (repeat for several data sets)")
    parser.add_argument("--fer-python",
                        help="a python with fer installed (without it, lrdif alone)")
    parser.add_argument("--limit", type=int, help="only the first N test images (a check)")
    parser.add_argument("--json", type=Path, default=RESULTS / "predict_accuracy.json")
    parser.add_argument("--md", type=Path, default=RESULTS / "predict_accuracy.md")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    torch.set_num_threads(args.threads)
    roots = parse_data(args.data)
    report: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name,
                               *(portable_paths(a, REPO) for a in sys.argv)]),
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "commit": git_commit(), "machine": machine(), "limit": args.limit, "split": SPLIT,
        "label_mode": "majority", "fer": None,
    }
    recognizer = Recognizer.from_checkpoint(args.weights, device="cpu")
    report["weights"] = {"path": portable_path(args.weights, REPO), "sha256": sha256(args.weights),
                         "model": recognizer.model.registry_name,
                         "class_names": list(recognizer.class_names),
                         "temperature": recognizer.temperature}
    report["data"] = {}
    for name, root in roots.items():
        data = DataSection(dataset="ferplus", root=str(root), options={"label_mode": "majority"})
        crops, labels, classes = read_split(data, SPLIT, limit=args.limit)
        if crops.ndim != 3:
            raise SystemExit(f"{root}: expected grey (N, H, W) crops, got {crops.shape}")
        probs, logits = lrdif_outputs(recognizer, crops)
        fer_scores = None
        if args.fer_python:
            fer_scores, report["fer"] = fer_probabilities(args.fer_python, crops)
        where = f"{root} (split {SPLIT})"
        report["data"][name] = {
            "root": portable_path(root, REPO),
            "udc_manifest": portable_paths(udc_manifest(root), REPO),
            "eight_class": eight_class(labels, classes, probs, recognizer.class_names, where,
                                       logits=logits, temperature=recognizer.temperature),
            "seven_class": seven_class(labels, classes, probs, recognizer.class_names,
                                       fer_scores, tuple((report["fer"] or {}).get("classes", ()))),
        }
        print(f"{name}: {len(crops)} images done", file=sys.stderr)
    atomic_write_json(args.json, report)
    text = render(report)
    with atomic_write(args.md, "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
