"""What the evaluation apps (cross-data-set, one-shot, ensembles, pictures) share: which samples, their
logits, classes named by the user, and the scores, all computed the same way (torchmetrics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix

from asgcn_lightning.data.datamodule import SkeletonDataModule, SkeletonDataset
from asgcn_lightning.errors import UserError

SAMPLE_SETS = ("test", "all")


def sample_set(datamodule: SkeletonDataModule, which: str) -> SkeletonDataset:
    """The split's held-out samples (``test``) or every sample of its classes in store order (``all``), with
    eval transforms. ``all`` needs no split: a store whose samples all fall on one side of it still evaluates."""
    if which not in SAMPLE_SETS:
        raise UserError(f"unknown sample set {which!r}; choose one of {list(SAMPLE_SETS)}")
    if which == "test":
        datamodule.setup()
        return datamodule.test_set
    return datamodule.unsplit_set()


@torch.no_grad()
def dataset_logits(network: torch.nn.Module, dataset: Dataset,
                   batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every sample of ``dataset``, in order (evaluation mode).

    The logits are those the test step scores (``forward_train``), so figures equal ``eval.py``'s.
    """
    network.eval()
    outputs, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        outputs.append(network.forward_train(x).logits)
        labels.append(y)
    return torch.cat(outputs), torch.cat(labels)


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is among the ``k`` highest scores."""
    num_class = scores.shape[1]
    return float(multiclass_accuracy(scores, labels, num_classes=num_class, top_k=min(k, num_class),
                                     average="micro"))


def confusion_matrix(predicted: torch.Tensor, truth: torch.Tensor, num_class: int) -> torch.Tensor:
    """Counts ``(true class, predicted class)`` of class indices."""
    return multiclass_confusion_matrix(predicted.long(), truth.long(), num_classes=num_class)


def resolve_class(item: Any, class_names: Sequence[str], what: str) -> int:
    """A class given by name or 1-based number → its 0-based index among ``class_names``."""
    names = list(class_names)
    if isinstance(item, str) and item in names:
        return names.index(item)
    if isinstance(item, int) or (isinstance(item, str) and item.isdigit()):
        if not 1 <= int(item) <= len(names):
            raise UserError(f"{what}: class number {item} is outside 1..{len(names)}")
        return int(item) - 1
    raise UserError(f"{what}: unknown class {item!r}; the classes are {names}")


def plain(node: Any) -> Any:
    """A config node as plain Python (dicts, lists), or the value itself."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
