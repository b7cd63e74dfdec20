"""Calibrated probabilities: temperature scaling (Guo et al., ICML 2017) and the expected
calibration error that measures it.

A classifier's softmax ``p = softmax(z)`` is often over-confident. Temperature scaling
divides the logits by one scalar ``T > 0`` fitted on held-out (validation) logits by
minimising the negative log-likelihood; the argmax, hence accuracy, is unchanged. The
fitted ``T`` ships in the checkpoint's metadata (``meta["calibration"]``, see
:func:`calibration_meta`) and :class:`lrdif.Recognizer` applies it.

ECE (Naeini et al. 2015; Guo et al. 2017): the confidences ``max_k p_k`` are put in
``n_bins`` equal-width bins over [0, 1]; ECE = sum over bins of
``(bin size / N) * |accuracy in bin - mean confidence in bin|``. 0 is perfect.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lrdif.vocabulary import CheckpointError

DEFAULT_BINS = 15  # Guo et al.'s choice
# The search range of 1/T: temperatures from 0.02 to 50 (a fit at an end is reported).
_BETA_RANGE = (0.02, 50.0)
_GOLDEN = (math.sqrt(5) - 1) / 2


def _as_tensor(x: np.ndarray | Tensor, dtype: torch.dtype) -> Tensor:
    return x.detach().cpu().to(dtype) if isinstance(x, Tensor) else torch.as_tensor(
        np.asarray(x), dtype=dtype)


def _check(logits: Tensor, labels: Tensor, what: str) -> None:
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"{what}: expected (N, K >= 2) scores, got {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"{what}: {logits.shape[0]} rows of scores but labels of shape "
                         f"{tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError(f"{what}: no samples")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"{what}: a label lies outside [0, {logits.shape[1]})")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{what}: scores hold NaN or infinity")


def nll(logits: np.ndarray | Tensor, labels: np.ndarray | Tensor, temperature: float = 1.0
        ) -> float:
    """Mean negative log-likelihood of ``labels (N,)`` under ``softmax(logits / T)``."""
    z = _as_tensor(logits, torch.float64)
    y = _as_tensor(labels, torch.int64)
    _check(z, y, "nll")
    return float(torch.nn.functional.cross_entropy(z / temperature, y))


def fit_temperature(logits: np.ndarray | Tensor, labels: np.ndarray | Tensor, *,
                    tolerance: float = 1e-6) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on ``labels``.

    ``logits (N, K)`` and ``labels (N,)`` are validation outputs (never the test split).
    The NLL is convex in ``beta = 1 / T`` (a log-sum-exp of linear functions minus a linear
    term), so a golden-section search on ``beta`` finds the global minimum to ``tolerance``.
    """
    z = _as_tensor(logits, torch.float64)
    y = _as_tensor(labels, torch.int64)
    _check(z, y, "fit_temperature")
    true_logit = z.gather(1, y[:, None])[:, 0]

    def loss(beta: float) -> float:
        return float((torch.logsumexp(beta * z, dim=1) - beta * true_logit).mean())

    lo, hi = _BETA_RANGE
    a, b = lo + (1 - _GOLDEN) * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > tolerance * max(1.0, lo):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - _GOLDEN) * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = loss(b)
    return 1.0 / ((lo + hi) / 2)


def softmax(logits: np.ndarray | Tensor, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / T)`` over the last axis as float32 numpy."""
    z = _as_tensor(logits, torch.float64)
    return torch.softmax(z / temperature, dim=-1).to(torch.float32).numpy()


def expected_calibration_error(probabilities: np.ndarray | Tensor, labels: np.ndarray | Tensor,
                               *, bins: int = DEFAULT_BINS) -> float:
    """ECE of ``probabilities (N, K)`` (rows summing to 1) against ``labels (N,)``: the
    support-weighted mean gap between accuracy and confidence over ``bins`` equal-width
    confidence bins (a confidence of exactly 0 falls in the first bin)."""
    p = _as_tensor(probabilities, torch.float64)
    y = _as_tensor(labels, torch.int64)
    _check(p, y, "expected_calibration_error")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    confidence, predicted = p.max(dim=1)
    correct = (predicted == y).to(torch.float64)
    # Bin i holds confidences in (i / bins, (i + 1) / bins].
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).to(torch.float64)
    gap = (torch.bincount(index, weights=correct, minlength=bins)
           - torch.bincount(index, weights=confidence, minlength=bins)).abs()
    return float(gap.sum() / count.sum())


def calibration_summary(logits: np.ndarray | Tensor, labels: np.ndarray | Tensor,
                        temperature: float, *, bins: int = DEFAULT_BINS) -> dict[str, float]:
    """ECE and NLL of ``logits`` on ``labels`` before (T = 1) and after temperature scaling."""
    return {
        "temperature": float(temperature),
        "ece_before": expected_calibration_error(softmax(logits), labels, bins=bins),
        "ece_after": expected_calibration_error(softmax(logits, temperature), labels,
                                                bins=bins),
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "bins": bins,
    }


def calibration_meta(temperature: float, *, fitted_on: str, num_samples: int,
                     nll_before: float, nll_after: float) -> dict[str, Any]:
    """The ``meta["calibration"]`` entry of a shipped checkpoint."""
    return {"temperature": float(temperature), "fitted_on": fitted_on,
            "num_samples": int(num_samples), "method": "temperature scaling, NLL",
            "nll_before": float(nll_before), "nll_after": float(nll_after)}


def checkpoint_temperature(meta: dict[str, Any], where: str) -> float:
    """The temperature in a checkpoint's ``meta`` (1.0 when it has none); ``where`` names
    the file in the :class:`CheckpointError` for a value that is not a finite positive
    number."""
    entry = meta.get("calibration")
    if entry is None:
        return 1.0
    value = entry.get("temperature") if isinstance(entry, dict) else None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise CheckpointError(f"{where}: meta.calibration.temperature must be a finite positive "
                         f"number, got {value!r}")
    return float(value)
