"""Figures of the evaluation: confusion matrix, t-SNE of features (paper Fig. 4/5),
accuracy against reverse-diffusion iterations (Fig. 6), learning curves.

matplotlib runs on the non-interactive Agg backend; every function writes one PNG
atomically and returns its path.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lrdif.io import atomic_write_bytes


def _save(fig: Any, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def plot_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str], path: str | Path, *, title: str = ""
) -> Path:
    """Row-normalised (recall per true class) confusion matrix, counts in each cell."""
    cm = np.asarray(cm, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    image = ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{rate[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center",
                    fontsize=7, color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix (accuracy {np.trace(cm) / max(cm.sum(), 1):.2%})")
    return _save(fig, path)


def tsne_embedding(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) t-SNE embedding (scikit-learn, the ``analysis`` extra)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as exc:
        raise ImportError(
            "--tsne needs scikit-learn: pip install 'lrdif[analysis]' (or scikit-learn)"
        ) from exc
    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(features, dtype=np.float32)
    )


def plot_tsne(
    embedding: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | Path,
    *, title: str = "t-SNE of the features",
) -> Path:
    """Scatter of a (N, 2) embedding coloured by true class (paper Fig. 4/5)."""
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
        pick = labels == c
        if pick.any():
            ax.scatter(embedding[pick, 0], embedding[pick, 1], s=5, color=cmap(c % 10),
                       label=f"{name} ({int(pick.sum())})", alpha=0.7)
    ax.legend(markerscale=3, fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return _save(fig, path)


def plot_steps_curve(
    steps: Sequence[int], accuracies: Sequence[float], path: str | Path, *, trained_steps: int
) -> Path:
    """Test accuracy against reverse-diffusion iterations (paper Fig. 6)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(list(steps), [100 * a for a in accuracies], marker="o")
    ax.axvline(trained_steps, color="grey", linestyle=":", label=f"trained T = {trained_steps}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(steps), [str(s) for s in steps])
    ax.set_xlabel("iterations of the reverse diffusion")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_learning_curves(runs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Training loss and validation accuracy per epoch of several runs (metrics.jsonl rows)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, history in runs.items():
        epochs = [r["epoch"] for r in history]
        left.plot(epochs, [r["train_loss"] for r in history], label=name)
        right.plot(epochs, [100 * r["val_accuracy"] for r in history], label=name)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    right.set_xlabel("epoch")
    right.set_ylabel("validation accuracy (%)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
