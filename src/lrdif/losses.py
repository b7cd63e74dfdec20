"""The losses of the paper: Eq. 13 (cross-entropy), Eq. 17 (L_kl on EPRs), Eq. 18 (total)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Eq. 13, averaged over the batch (the paper's sum over N divided by N).

    logits (B, K); targets (B,) class indices, or (B, K) class probabilities (e.g. the
    FERPlus vote distribution), where y_ic of Eq. 13 is the probability of class c.
    Computed in float32 so a reduced-precision forward keeps an exact loss.
    """
    if targets.ndim == 2:
        if targets.shape != logits.shape:
            raise ValueError(
                f"soft targets {tuple(targets.shape)} must match logits {tuple(logits.shape)}"
            )
        return F.cross_entropy(logits.float(), targets.float())
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must be (B,) indices or (B, K) probabilities for logits "
            f"{tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    return F.cross_entropy(logits.float(), targets.long())


def smoothed_targets(labels: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Label smoothing (Szegedy et al. 2016): labels (B,) or label distributions (B, K) ->
    (1 - eps) targets + eps / K, (B, K); with ``smoothing`` = 0 the labels themselves
    (the loss is then Eq. 13 exactly)."""
    if smoothing == 0:
        return labels
    targets = F.one_hot(labels, num_classes).float() if labels.ndim == 1 else labels.float()
    return targets * (1.0 - smoothing) + smoothing / num_classes


def logit_adjustment_offset(labels: Tensor, num_classes: int, tau: float) -> Tensor:
    """tau log(prior) (K,) of the logit-adjusted loss (Menon et al. 2021), the prior being
    the class frequencies of ``labels`` (N,); classes without a sample count once."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).clamp_min(1).double()
    return (tau * (counts / counts.sum()).log()).float()


def epr_kl(epr_teacher: Tensor, epr_student: Tensor, temperature: float = 1.0) -> Tensor:
    """Eq. 17: sum_i P(i) log(P(i) / Q(i)), P = softmax(Z / tau) of stage 1, Q =
    softmax(Z' / tau) of stage 2, over the C dimensions of the EPR, averaged over the batch.

    ``temperature`` tau = 1 is the paper's Eq. 17. A 128-d EPR of unit scale has an almost
    uniform softmax, so the KL barely moves; DiffIR's KL variant sharpens both with
    tau = 0.15, and the CPU recipes do the same.

    The printed Eq. 17 has Z_norm in both numerator and denominator (which is always
    0); the text defines the second as the stage-2 EPR, which is what is computed here.
    epr_teacher, epr_student: (B, C). The teacher is the target: no gradient flows to it.
    """
    if epr_teacher.shape != epr_student.shape or epr_teacher.ndim != 2:
        raise ValueError(
            f"EPRs must both be (B, C), got {tuple(epr_teacher.shape)} and "
            f"{tuple(epr_student.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"the KL temperature must be positive, got {temperature}")
    log_p = F.log_softmax(epr_teacher.detach().float() / temperature, dim=1)
    log_q = F.log_softmax(epr_student.float() / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def total_loss(ce: Tensor, kl: Tensor) -> Tensor:
    """Eq. 18: L_total = L_ce + L_kl."""
    return ce + kl
