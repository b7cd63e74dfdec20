"""Classification metrics from a confusion matrix (the numbers of the paper's tables, and more),
the batched inference that produces them, and the validation metrics of a split
(:func:`evaluate_split`); used by training (validation) and evaluation.

Everything derives from one integer confusion matrix ``cm`` of shape (K, K) where
``cm[i, j]`` counts samples of true class i predicted as class j. Conventions:

- accuracy = trace / total (the paper's "Acc. (%)", Tables 1-5);
- per-class recall = cm[i, i] / row sum, precision = cm[i, i] / column sum; a class
  never predicted has precision 0 (as scikit-learn's ``zero_division=0``);
- mean per-class accuracy and macro-F1 average over the classes *present* in the
  split (row sum > 0): a class with no test sample has no recall to average.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lrdif.data.splits import SplitData

# Models whose forward needs the true label even at evaluation (stage 1, Fig. 2a).
LABEL_CONDITIONED = frozenset({"lrdif_s1"})


def confusion_matrix(
    y_true: np.ndarray | torch.Tensor, y_pred: np.ndarray | torch.Tensor, num_classes: int
) -> np.ndarray:
    """(N,) true and predicted class indices -> int64 (K, K) counts, rows = true class."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} entries, y_pred {p.size}")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} holds a class index outside [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def summarize(cm: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Metrics of a (K, K) confusion matrix as a JSON-ready dict.

    Keys: ``accuracy``, ``mean_class_accuracy``, ``macro_f1`` (fractions in [0, 1]),
    ``num_samples``, ``per_class`` {name: {precision, recall, f1, support}},
    ``confusion_matrix`` (nested lists), ``class_names``.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix {cm.shape} does not match {k} class names")
    total = int(cm.sum())
    diag = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    recall = np.divide(diag, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(diag, predicted, out=np.zeros(k), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    return {
        "accuracy": float(diag.sum() / total) if total else 0.0,
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "num_samples": total,
        "class_names": list(class_names),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
    }


@torch.no_grad()
def run_model(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    landmarks: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
    bf16: bool = False,
    channels_last: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched inference in eval mode: uint8 images (N, C, H, W) -> float32 CPU logits (N, K)
    and features (N, D). ``labels`` go to the model only for stage 1 (it needs them, Eq. 1);
    ``landmarks`` (N, P, 2) or None. The model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    logits, features = [], []
    try:
        for start in range(0, len(images), batch_size):
            part = slice(start, start + batch_size)
            x = images[part].to(device).float().div_(255).contiguous(memory_format=fmt)
            with autocast:
                out = model(
                    x,
                    landmarks=None if landmarks is None else landmarks[part].to(device),
                    labels=None if labels is None else labels[part].to(device),
                )
            logits.append(out.logits.float().cpu())
            features.append(out.features.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(features)


def evaluate_split(
    model: torch.nn.Module, split: SplitData, *, batch_size: int, bf16: bool, channels_last: bool
) -> dict[str, Any]:
    """Validation metrics of ``model`` on ``split`` (eval mode, batched, no gradients).

    A stage 1 trained with label dropout is measured without the label: its image path,
    the one stage 2 inherits, is what selection should judge. Its accuracy with the label
    is added as ``with_label_accuracy``. A stage 1 without label dropout needs the label.
    """

    def split_summary(with_labels: bool) -> dict[str, Any]:
        logits, _ = run_model(
            model, split.images, landmarks=split.landmarks,
            labels=split.labels if with_labels else None,
            batch_size=batch_size, bf16=bf16, channels_last=channels_last,
        )
        pred = logits.argmax(1).cpu().numpy()
        cm = confusion_matrix(split.labels.cpu().numpy(), pred, len(split.class_names))
        return summarize(cm, split.class_names)

    conditioned = model.registry_name in LABEL_CONDITIONED
    label_free = not conditioned or model.config.label_dropout > 0
    summary = split_summary(with_labels=not label_free)
    if conditioned and label_free:
        summary["with_label_accuracy"] = split_summary(with_labels=True)["accuracy"]
    return summary
