"""Eq. 13 (cross-entropy), Eq. 17 (L_kl between softmax-normalised EPRs), Eq. 18."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from lrdif.losses import cross_entropy, epr_kl, total_loss


def _log_softmax_np(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_cross_entropy_hard_and_soft_targets() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 8, generator=gen)
    labels = torch.randint(0, 8, (6,), generator=gen)
    logp = _log_softmax_np(logits.double().numpy())
    expected = -logp[np.arange(6), labels.numpy()].mean()
    assert cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    # One-hot probabilities give the same value; a vote distribution its own reference.
    one_hot = torch.nn.functional.one_hot(labels, 8).float()
    assert cross_entropy(logits, one_hot).item() == pytest.approx(expected, rel=1e-5)
    votes = torch.rand(6, 8, generator=gen)
    votes = votes / votes.sum(1, keepdim=True)
    expected_soft = -(votes.double().numpy() * logp).sum(1).mean()
    assert cross_entropy(logits, votes).item() == pytest.approx(expected_soft, rel=1e-5)
    with pytest.raises(ValueError, match="soft targets"):
        cross_entropy(logits, votes[:, :7])


def test_epr_kl_matches_an_independent_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    z_teacher = 3 * torch.randn(5, 64, generator=gen)
    z_student = 3 * torch.randn(5, 64, generator=gen)
    p = softmax(z_teacher.double().numpy(), axis=1)
    q = softmax(z_student.double().numpy(), axis=1)
    expected = rel_entr(p, q).sum(axis=1).mean()  # sum_i p_i log(p_i / q_i), batch mean
    assert epr_kl(z_teacher, z_student).item() == pytest.approx(expected, rel=1e-5)
    # Not symmetric: the teacher's distribution weights the log ratio.
    assert epr_kl(z_student, z_teacher).item() != pytest.approx(expected, rel=1e-3)


def test_epr_kl_is_zero_for_equal_inputs_and_positive_otherwise() -> None:
    z = torch.randn(4, 32)
    assert epr_kl(z, z.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # Softmax ignores a constant shift per row: still the same distribution.
    assert epr_kl(z, z + 5.0).item() == pytest.approx(0.0, abs=1e-6)
    assert epr_kl(z, z.flip(1)).item() > 1e-3


def test_epr_kl_gradient_reaches_the_student_only() -> None:
    teacher = torch.randn(3, 16, requires_grad=True)
    student = torch.randn(3, 16, requires_grad=True)
    epr_kl(teacher, student).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="EPRs"):
        epr_kl(torch.zeros(3, 16), torch.zeros(3, 8))


def test_total_is_the_sum() -> None:
    ce, kl = torch.tensor(1.25), torch.tensor(0.5)
    assert total_loss(ce, kl).item() == pytest.approx(1.75)


def test_epr_kl_temperature_divides_both_eprs() -> None:
    gen = torch.Generator().manual_seed(2)
    z_teacher, z_student = torch.randn(4, 32, generator=gen), torch.randn(4, 32, generator=gen)
    sharp = epr_kl(z_teacher, z_student, temperature=0.15)
    assert sharp.item() == pytest.approx(epr_kl(z_teacher / 0.15, z_student / 0.15).item())
    assert sharp > epr_kl(z_teacher, z_student)  # sharper distributions, larger divergence
    with pytest.raises(ValueError, match="temperature"):
        epr_kl(z_teacher, z_student, temperature=0.0)


def test_smoothed_targets() -> None:
    from lrdif.losses import smoothed_targets

    labels = torch.tensor([0, 2])
    assert smoothed_targets(labels, 4, 0.0) is labels
    t = smoothed_targets(labels, 4, 0.2)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert torch.allclose(t[0], torch.tensor([0.85, 0.05, 0.05, 0.05]))


def test_smoothed_targets_of_label_distributions() -> None:
    from lrdif.losses import smoothed_targets

    votes = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]])
    assert smoothed_targets(votes, 4, 0.0) is votes
    t = smoothed_targets(votes, 4, 0.2)
    assert torch.allclose(t[0], torch.tensor([0.45, 0.45, 0.05, 0.05]))
    assert torch.allclose(t.sum(1), torch.ones(2))


def test_logit_adjustment_offset_is_tau_log_prior() -> None:
    from lrdif.losses import logit_adjustment_offset

    labels = torch.tensor([0, 0, 0, 1])  # class 2 unseen: counted once
    offset = logit_adjustment_offset(labels, 3, 2.0)
    expected = 2.0 * torch.log(torch.tensor([3.0, 1.0, 1.0]) / 5.0)
    assert torch.allclose(offset, expected)
    # the adjusted loss asks more of the rare class: a larger loss for it at equal logits
    logits = torch.zeros(1, 3)
    rare = torch.nn.functional.cross_entropy(logits + offset, torch.tensor([1]))
    common = torch.nn.functional.cross_entropy(logits + offset, torch.tensor([0]))
    assert rare > common
