"""Confusion-matrix pictures and per-class accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torchmetrics.functional.classification import multiclass_accuracy


def per_class_accuracy(confusion: np.ndarray | torch.Tensor) -> np.ndarray:
    """Each class's accuracy (its recall) from a ``(true, predicted)`` count matrix; NaN for classes with no samples.

    Computed by torchmetrics from the samples the counts stand for, as the training metrics are.
    """
    counts = torch.as_tensor(np.asarray(confusion), dtype=torch.long)
    num = counts.shape[0]
    totals = counts.sum(dim=1)
    if not int(totals.sum()):
        return np.full(num, np.nan)
    classes = torch.arange(num)
    truth = classes.repeat_interleave(totals)
    predicted = classes.repeat(num).repeat_interleave(counts.flatten())
    accuracy = multiclass_accuracy(predicted, truth, num_classes=num, average=None).double()
    return torch.where(totals > 0, accuracy, torch.nan).numpy()


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str] | None = None,
                     title: str = "confusion matrix") -> Figure:
    """Row-normalised confusion matrix with counts; readable up to ~60 classes."""
    confusion = np.asarray(confusion)
    num = confusion.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(num)]
    totals = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)
    size = min(24.0, 3.0 + 0.35 * num)
    figure, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(num), names, rotation=90, fontsize=max(4, 9 - num // 15))
    ax.set_yticks(range(num), names, fontsize=max(4, 9 - num // 15))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if num <= 30:
        for i in range(num):
            for j in range(num):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if normalised[i, j] > 0.5 else "black")
    accuracy = np.trace(confusion) / max(1, confusion.sum())
    ax.set_title(f"{title} (top-1 {accuracy:.3f})")
    figure.tight_layout()
    return figure
