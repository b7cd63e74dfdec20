"""benchmarks/predict_accuracy.py: the 7-class comparison with fer and lrdif's 8-class score."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lrdif.data.ferplus import FERPlus

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports its sibling ferplus.py
    spec = importlib.util.spec_from_file_location("predict_accuracy",
                                                  BENCHMARKS / "predict_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_hot(rows: int, cols: int, hot: list[int], value: float = 0.9) -> np.ndarray:
    out = np.full((rows, cols), (1 - value) / (cols - 1), np.float32)
    out[np.arange(rows), hot] = value
    return out


def test_contempt_left_out_and_classes_matched_by_name(bench):
    classes = FERPlus.CLASS_NAMES  # neutral, happiness, ..., fear, contempt
    # Images: happiness, anger, contempt, sadness.
    labels = np.array([classes.index(c) for c in ("happiness", "anger", "contempt", "sadness")])
    # lrdif (a model ordering its classes differently) puts contempt on top for every image;
    # its runner-up is right for images 0 and 1, wrong (fear) for image 3.
    model = ("contempt", "fear", "sadness", "anger", "happiness", "neutral", "surprise",
             "disgust")  # fmt: skip
    lrdif = one_hot(4, 8, [0, 0, 0, 0], value=0.6)
    for row, runner_up in enumerate(("happiness", "anger", "neutral", "fear")):
        lrdif[row, model.index(runner_up)] = 0.3
    # fer (its own class order) is right on images 0 and 3, says happy on image 1.
    fer = one_hot(4, 7, [FER_CLASSES.index(c) for c in ("happy", "happy", "sad", "sad")])

    out = bench.seven_class(labels, classes, lrdif, model, fer, FER_CLASSES)

    assert out["class_names"] == list(classes[:7])
    assert (out["images"], out["left_out"]) == (3, 1)
    assert out["lrdif"]["num_samples"] == out["fer"]["num_samples"] == 3
    assert out["lrdif"]["accuracy"] == pytest.approx(2 / 3)
    assert out["fer"]["accuracy"] == pytest.approx(2 / 3)
    assert out["lrdif"]["per_class"]["sadness"]["recall"] == 0.0
    assert out["lrdif"]["per_class"]["anger"]["recall"] == 1.0
    assert out["fer"]["per_class"]["sadness"]["recall"] == 1.0
    assert out["fer"]["per_class"]["anger"]["recall"] == 0.0
    # Over all 8 classes lrdif's contempt guesses count: only the contempt image is right.
    eight = bench.eight_class(labels, classes, lrdif, model, "test data")
    assert eight["accuracy"] == pytest.approx(1 / 4)
    assert eight["num_samples"] == 4


def test_unknown_fer_class_is_an_error(bench):
    labels = np.zeros(2, np.int64)
    fer_classes = (*FER_CLASSES[:-1], "calm")
    with pytest.raises(ValueError, match="calm"):
        bench.seven_class(labels, FERPlus.CLASS_NAMES, one_hot(2, 8, [0, 0]),
                          FERPlus.CLASS_NAMES, one_hot(2, 7, [0, 0]), fer_classes)


def test_calibration_and_lrdif_alone_render(bench):
    """Without fer the report holds lrdif's 8-class metrics with ECE before and after its
    temperature, and the page renders without fer's rows."""
    classes = FERPlus.CLASS_NAMES
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (2000, 8))
    calibrated = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = (calibrated.cumsum(axis=1) < rng.random((2000, 1))).sum(axis=1).clip(0, 7)
    logits = 3.0 * z  # over-confident by a factor 3: T = 3 calibrates it
    probs = calibrated
    eight = bench.eight_class(labels, classes, probs, classes, "data", logits=logits,
                              temperature=3.0)
    cal = eight["calibration"]
    assert cal["temperature"] == 3.0 and cal["ece_after"] < cal["ece_before"]
    assert cal["nll_after"] < cal["nll_before"]
    seven = bench.seven_class(labels, classes, probs, classes, None)
    assert "fer" not in seven and 0 <= seven["lrdif"]["ece"] <= 1
    report = {"command": "python x", "date": "d", "commit": "c", "machine": "m", "limit": None,
              "fer": None,
              "weights": {"path": "w", "model": "lrdif_s2", "sha256": "0" * 64,
                          "class_names": list(classes), "temperature": 3.0},
              "data": {"clean": {"eight_class": eight, "seven_class": seven}}}
    page = bench.render(report)
    assert "fer: not measured" in page and "| clean | lrdif (lrdif_s2) |" in page
    assert f"{100 * cal['ece_before']:.2f} | {100 * cal['ece_after']:.2f}" in page
    assert "| clean | fer |" not in page
