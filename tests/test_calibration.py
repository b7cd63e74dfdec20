"""Temperature scaling and ECE: known answers on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrdif.calibration import (
    calibration_summary,
    checkpoint_temperature,
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
)


def _sampled(true_temperature: float, n: int = 20000, k: int = 8, seed: int = 0):
    """Logits z and labels drawn from softmax(z / true_temperature): the model whose
    calibrated temperature is exactly ``true_temperature``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, (n, k))
    p = softmax(z, true_temperature).astype(np.float64)
    u = rng.random((n, 1))
    y = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), k - 1)
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_a_known_temperature(true_t: float) -> None:
    z, y = _sampled(true_t)
    fitted = fit_temperature(z, y)
    assert fitted == pytest.approx(true_t, rel=0.05)
    # The fit minimises the NLL: nearby temperatures are no better.
    assert nll(z, y, fitted) <= min(nll(z, y, 0.9 * fitted), nll(z, y, 1.1 * fitted))


def test_fit_accepts_tensors_and_numpy_alike() -> None:
    z, y = _sampled(2.0, n=2000)
    assert fit_temperature(torch.from_numpy(z).float(), torch.from_numpy(y)) == pytest.approx(
        fit_temperature(z, y), rel=1e-4)


def test_ece_of_perfectly_calibrated_data_is_about_zero() -> None:
    z, y = _sampled(1.0, n=50000)
    assert expected_calibration_error(softmax(z), y) < 0.01
    # The same data made over-confident (logits doubled) is clearly miscalibrated, and
    # temperature scaling fitted on it brings the ECE back down.
    summary = calibration_summary(2 * z, y, fit_temperature(2 * z, y))
    assert summary["ece_before"] > 0.05 and summary["ece_after"] < 0.01
    assert summary["temperature"] == pytest.approx(2.0, rel=0.05)
    assert summary["nll_after"] < summary["nll_before"]


def test_ece_hand_computed() -> None:
    # Two bins used: confidences 0.9 (right, wrong) and 0.6 (right): |0.5-0.9|*2/3 + |1-0.6|/3.
    p = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    y = np.array([0, 0, 0])
    assert expected_calibration_error(p, y, bins=10) == pytest.approx(0.4 * 2 / 3 + 0.4 / 3)
    assert expected_calibration_error(p, y, bins=1) == pytest.approx(abs(2 / 3 - 2.4 / 3))


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="labels of shape"):
        fit_temperature(np.zeros((3, 4)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="outside"):
        expected_calibration_error(np.full((2, 2), 0.5), np.array([0, 2]))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[0.0, math.nan]]), np.array([0]))


def test_checkpoint_temperature_reads_and_checks_the_metadata() -> None:
    assert checkpoint_temperature({}, "x.safetensors") == 1.0
    assert checkpoint_temperature({"calibration": {"temperature": 1.7}}, "x") == 1.7
    for bad in (0, -1.0, "2", None, math.inf):
        with pytest.raises(ValueError, match=r"x\.safetensors: meta\.calibration\.temperature"):
            checkpoint_temperature({"calibration": {"temperature": bad}}, "x.safetensors")
