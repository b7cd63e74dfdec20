"""benchmarks/ship_weights.py on a tiny trained stage 2: inference-only file, temperature
fitted on validation, same logits, model card with ECE."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread)

from lrdif.checkpoint import load_checkpoint, load_model
from lrdif.config import from_dict
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.predict.recognizer import Recognizer
from lrdif.train.config import TrainConfig
from lrdif.train.loop import train

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("ship_weights", BENCHMARKS / "ship_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stage2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ship")
    data = make_ferplus(base / "ferplus")
    train(from_dict(TrainConfig, toy_train_config("lrdif_s1", data, epochs=1)), base / "s1")
    config = toy_train_config("lrdif_s2", data, epochs=1)
    config["model"]["init_from"] = str(base / "s1" / "best.safetensors")
    train(from_dict(TrainConfig, config), base / "s2")
    return base / "s2" / "best.safetensors", data


def test_shipped_file_is_inference_only_calibrated_and_predicts_the_same(
    bench, stage2: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, data = stage2
    section = bench.training_data(checkpoint)
    assert section.root == str(data)
    model = bench.load_for_shipping(checkpoint, test_flip=False)
    calibration = bench.fit_calibration(model, section, tmp_path / "cache")
    assert calibration["temperature"] > 0 and calibration["num_samples"] == 16
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
    target = tmp_path / "shipped.safetensors"
    meta = bench.ship(checkpoint, model, target, calibration)
    assert target.stat().st_size < checkpoint.stat().st_size
    shipped = load_checkpoint(target)
    assert shipped.left_out == ("teacher",) and shipped.meta["calibration"] == calibration
    images = torch.rand(4, 1, 24, 24)
    with torch.inference_mode():
        assert torch.equal(load_model(target)(images).logits,
                           load_model(checkpoint)(images).logits)
    assert Recognizer(target, device="cpu").temperature == calibration["temperature"]
    results = bench.measure(target, {"toy": data}, calibration["temperature"])
    assert set(results["toy"]["calibration"]) >= {"ece_before", "ece_after"}
    text = bench.card(target, meta, results, {"toy": data}, "python ship_weights.py",
                      "`lrdif train toy`")
    assert f"T = {calibration['temperature']:.4f}" in text
    assert "left out" in text and "| toy (" in text


def test_a_file_over_the_limit_is_not_shipped(bench, stage2, tmp_path, monkeypatch) -> None:
    checkpoint, _ = stage2
    monkeypatch.setattr(bench, "MAX_BYTES", 1000)
    target = tmp_path / "shipped.safetensors"
    with pytest.raises(SystemExit, match="over the 0 MB limit"):
        bench.ship(checkpoint, bench.load_for_shipping(checkpoint, test_flip=False), target,
                   {"temperature": 1.0})
    assert not target.exists()


def test_test_flip_ships_the_mirror_averaged_model(bench, stage2, tmp_path) -> None:
    checkpoint, _ = stage2
    target = tmp_path / "flipped.safetensors"
    bench.ship(checkpoint, bench.load_for_shipping(checkpoint, test_flip=True), target,
               {"temperature": 1.0})
    shipped, plain = load_model(target), load_model(checkpoint)
    assert shipped.config.test_flip and not plain.config.test_flip
    images = torch.rand(4, 1, 24, 24)
    with torch.inference_mode():
        averaged = 0.5 * (plain(images).logits + plain(images.flip(-1)).logits)
        assert torch.allclose(shipped(images).logits, averaged, atol=1e-5)


def test_logit_adjustment_is_chosen_on_validation_and_shipped_in_the_logits(
    bench, stage2: tuple[Path, Path], tmp_path: Path
) -> None:
    """--logit-adjustment: tau from the validation split, -tau log(prior) stored as the
    model's logit_offset (so the file, the Recognizer and ONNX all include it), T fitted
    on the adjusted logits, the choice recorded in the calibration metadata."""
    checkpoint, _ = stage2
    model = bench.load_for_shipping(checkpoint, test_flip=False)
    calibration = bench.fit_calibration(model, bench.training_data(checkpoint),
                                        tmp_path / "cache", logit_adjustment=True)
    adjustment = calibration["logit_adjustment"]
    assert adjustment["tau"] in bench.choose_logit_adjustment.__globals__["TAUS"]
    assert abs(sum(adjustment["prior"]) - 1) < 1e-9
    offset = model.config.logit_offset
    expected = [-adjustment["tau"] * np.log(max(p, 1e-12)) for p in adjustment["prior"]]
    assert (list(offset) == pytest.approx(expected)) if adjustment["tau"] else offset == ()
    target = tmp_path / "shipped.safetensors"
    bench.ship(checkpoint, model, target, calibration)
    images = torch.rand(4, 1, 24, 24)
    with torch.inference_mode():
        shift = load_model(target)(images).logits - load_model(checkpoint)(images).logits
    assert torch.allclose(shift, torch.tensor(offset or [0.0]).expand_as(shift), atol=1e-5)
    card_line = bench._adjustment_line(adjustment)
    assert ("tau = " in card_line) if adjustment["tau"] else ("not kept" in card_line)


def test_a_backbone_classifier_ships_as_the_fast_model(bench, stage2, tmp_path) -> None:
    _, data = stage2
    config = toy_train_config("backbone", data, epochs=1)
    config["model"]["options"] = {"backbone": "mobilenetv2", "input_size": 32,
                                  "test_flip": False}
    train(from_dict(TrainConfig, config), tmp_path / "fast")
    checkpoint = tmp_path / "fast" / "best.safetensors"
    model = bench.load_for_shipping(checkpoint, test_flip=False)
    calibration = bench.fit_calibration(model, bench.training_data(checkpoint), tmp_path / "c")
    target = tmp_path / "fast_model.safetensors"
    meta = bench.ship(checkpoint, model, target, calibration)
    assert load_checkpoint(target).left_out == ()
    assert Recognizer(target, device="cpu").temperature == calibration["temperature"]
    results = bench.measure(target, {"toy": data}, calibration["temperature"])
    text = bench.card(target, meta, results, {"toy": data}, "python ship_weights.py",
                      "`lrdif train ship_fast`")
    assert text.startswith("# Model card: fast_model")
    assert "`mobilenetv2` backbone classifier" in text and "one pass per face" in text
    assert "teacher" not in text and "| toy (" in text
