"""One-shot and few-shot recognition: ``python -m asgcn_lightning.apps.oneshot ckpt_path=<ckpt> [oneshot.*=...]``.

The model (ideally trained in embedding mode on auxiliary classes, see
:mod:`asgcn_lightning.models.embedding` and ``experiment=oneshot_*``) embeds every evaluation
sample; a class is represented by the mean of its exemplars' L2-normalised embeddings
(re-normalised), and a query takes the class of highest cosine similarity. Two protocols
(``oneshot.protocol``):

* ``kshot`` — any prepared data set: for each of ``draws`` seeded random draws, ``k`` exemplars per
  evaluation class, every other sample of the pool a query; top-1 accuracy and macro precision,
  recall and F1, mean ± standard deviation over the draws, for each ``k`` in ``shots``. The
  evaluation classes default to those the model was not trained on (all classes if it saw all).
* ``ntu120`` — the NTU RGB+D 120 one-shot protocol (Liu et al., TPAMI 2019): the 20 novel classes
  A1, A7, ..., A115, each with its one listed exemplar; every other sample of these classes is a
  query. The model is trained on the other 100 classes (``experiment=oneshot_ntu120``).

Writes ``oneshot.json`` into the run folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from asgcn_lightning.apps.components import apply_process_settings
from asgcn_lightning.config import config_dir, typed
from asgcn_lightning.data.datamodule import SkeletonDataset
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.inference import load_model
from asgcn_lightning.inference.evaluation import resolve_class, sample_set
from asgcn_lightning.models.embedding import embeddings

log = logging.getLogger(__name__)
PROTOCOLS = ("kshot", "ntu120")
METRICS = ("accuracy", "precision", "recall", "f1")

# NTU RGB+D 120 one-shot protocol: every sixth action is novel, with the exemplar the dataset's authors list
NTU120_ONESHOT_CLASSES = tuple(range(1, 121, 6))
NTU120_ONESHOT_EXEMPLARS = (
    "S001C003P008R001A001", "S001C003P008R001A007", "S001C003P008R001A013", "S001C003P008R001A019",
    "S001C003P008R001A025", "S001C003P008R001A031", "S001C003P008R001A037", "S001C003P008R001A043",
    "S001C003P008R001A049", "S001C003P008R001A055", "S018C003P008R001A061", "S018C003P008R001A067",
    "S018C003P008R001A073", "S018C003P008R001A079", "S018C003P008R001A085", "S018C003P008R001A091",
    "S018C003P008R001A097", "S018C003P008R001A103", "S018C003P008R001A109", "S018C003P008R001A115",
)


# -- metrics and classification --------------------------------------------------------------------------
def few_shot_metrics(predicted: np.ndarray, truth: np.ndarray, num_class: int) -> dict[str, float]:
    """Top-1 accuracy and macro precision, recall and F1 over the classes present in ``truth``.

    A class never predicted has precision 0, as has F1 where precision and recall are both 0.
    """
    predicted_t, truth_t = torch.as_tensor(predicted, dtype=torch.long), torch.as_tensor(truth, dtype=torch.long)
    present = torch.bincount(truth_t, minlength=num_class) > 0
    per_class = {name: metric(predicted_t, truth_t, num_classes=num_class, average="none", zero_division=0)
                 for name, metric in (("precision", multiclass_precision), ("recall", multiclass_recall),
                                      ("f1", multiclass_f1_score))}
    accuracy = multiclass_accuracy(predicted_t, truth_t, num_classes=num_class, average="micro")
    return {"accuracy": float(accuracy), **{name: float(values[present].mean()) for name, values in per_class.items()}}


def prototypes(embedded: torch.Tensor, labels: np.ndarray, num_class: int) -> torch.Tensor:
    """Per class, the re-normalised mean of its exemplars' embeddings ``(num_class, D)``."""
    sums = torch.zeros(num_class, embedded.shape[1], dtype=embedded.dtype)
    sums.index_add_(0, torch.from_numpy(labels), embedded)
    return torch.nn.functional.normalize(sums, dim=1)


def nearest_prototype(queries: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """The class of largest cosine similarity for each (L2-normalised) query."""
    return (queries @ classes.T).argmax(dim=1).numpy()


def draw_support(labels: np.ndarray, shots: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``shots`` random exemplars per class and the remaining samples (queries), as index arrays."""
    support = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) <= shots:
            raise UserError(f"class {label} has {len(members)} evaluation samples; {shots}-shot needs at least "
                            f"{shots + 1} (use oneshot.samples=all or fewer shots)")
        support.append(rng.choice(members, shots, replace=False))
    support = np.sort(np.concatenate(support))
    return support, np.setdiff1d(np.arange(len(labels)), support)


def episode(embedded: torch.Tensor, labels: np.ndarray, support: np.ndarray, query: np.ndarray,
            num_class: int) -> dict[str, float]:
    """Classify the queries by the supports' prototypes and score them."""
    classes = prototypes(embedded[support], labels[support], num_class)
    return few_shot_metrics(nearest_prototype(embedded[query], classes), labels[query], num_class)


def kshot(embedded: torch.Tensor, labels: np.ndarray, num_class: int, shots: Sequence[int], draws: int,
          seed: int) -> dict[int, dict[str, Any]]:
    """For each ``k``: the metrics of every draw and their mean and standard deviation."""
    results = {}
    for k in shots:
        rng = np.random.default_rng([seed, k])
        results[int(k)] = summarise([episode(embedded, labels, *draw_support(labels, k, rng), num_class)
                                     for _ in range(draws)])
    return results


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Every draw's metrics and, per metric, their mean and (population) standard deviation."""
    return {"draws": runs, **{m: {"mean": float(np.mean([r[m] for r in runs])),
                                  "std": float(np.std([r[m] for r in runs]))} for m in METRICS}}


def ntu120_support(names: Sequence[str], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """The protocol's exemplar of each novel class (labels 0..19 in A1, A7, ... order) and the queries.

    An exemplar missing from the store is replaced by the first sample of its class in name order,
    a fixed rule; the replacements are returned (``{listed: used}``) and reported.
    """
    position = {name: i for i, name in enumerate(names)}
    support, replaced = [], {}
    for label, exemplar in enumerate(NTU120_ONESHOT_EXEMPLARS):
        if exemplar in position and labels[position[exemplar]] == label:
            support.append(position[exemplar])
            continue
        members = np.flatnonzero(labels == label)
        if not len(members):
            raise UserError(f"no sample of class A{NTU120_ONESHOT_CLASSES[label]:03d} in the store")
        first = min(members, key=lambda i: names[i])
        support.append(int(first))
        replaced[exemplar] = names[first]
    support = np.array(sorted(support))
    return support, np.setdiff1d(np.arange(len(labels)), support), replaced


# -- the app ------------------------------------------------------------------------------------------------
def embed_dataset(network: torch.nn.Module, dataset: SkeletonDataset,
                  batch_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """L2-normalised embeddings (float64, for exact prototype sums) and labels of every sample, in order."""
    network.eval()
    outputs, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        outputs.append(embeddings(network, x))
        labels.append(y)
    return torch.cat(outputs).double(), torch.cat(labels).numpy()


def evaluation_classes(run_classes: Sequence[str], store_classes: Sequence[str], wanted: Any) -> list[int]:
    """1-based store class numbers to evaluate: ``wanted``, else those the model did not train on, else all."""
    if wanted:
        return sorted(resolve_class(item, store_classes, "oneshot.classes") + 1 for item in wanted)
    novel = [i + 1 for i, name in enumerate(store_classes) if name not in run_classes]
    if not novel:
        log.info("the model was trained on every class of the store: evaluating few-shot on seen classes")
    return novel or list(range(1, len(store_classes) + 1))


@dataclass
class OneShotSettings:
    """``oneshot.*`` of oneshot.yaml."""

    protocol: str = "kshot"     # kshot (random exemplars) | ntu120 (the 20 novel classes, listed exemplars)
    classes: list[Any] | None = None  # kshot: evaluation classes (names or 1-based numbers); null: those not trained on
    samples: str = "test"       # kshot: exemplars and queries from the held-out side (test) or every sample (all)
    shots: list[int] = field(default_factory=lambda: [1, 5])  # kshot: exemplars per class
    draws: int = 10             # kshot: random exemplar draws per k (mean ± std reported)
    seed: int = 0


def oneshot(cfg: DictConfig) -> dict[str, Any]:
    apply_process_settings(cfg)
    if not cfg.get("ckpt_path"):
        raise UserError("give the model: ckpt_path=<file.ckpt>")
    settings = typed(OneShotSettings, cfg.get("oneshot"), "oneshot")
    if settings.protocol not in PROTOCOLS:
        raise UserError(f"oneshot.protocol {settings.protocol!r}: choose one of {list(PROTOCOLS)}")
    model = load_model(cfg.ckpt_path)
    store_dir = cfg.get("store_dir")
    whole = model.datamodule(store_dir, classes=None)
    whole.setup()
    store_classes = whole.class_names
    if settings.protocol == "ntu120":
        if len(store_classes) != 120:
            raise UserError(f"oneshot.protocol=ntu120 needs the NTU RGB+D 120 store (120 classes); "
                            f"{whole.dataset_name} has {len(store_classes)}")
        classes, pool = list(NTU120_ONESHOT_CLASSES), "all"
        seen = [store_classes[c - 1] for c in classes if store_classes[c - 1] in model.class_names]
        if seen:
            raise UserError(f"the model was trained on novel classes of the protocol ({seen[:3]}...); train it on "
                            "the other 100 classes (experiment=oneshot_ntu120)")
    else:
        classes = evaluation_classes(model.class_names, store_classes, settings.classes)
        pool = settings.samples
    datamodule = model.datamodule(store_dir, classes=classes)
    samples = sample_set(datamodule, pool)
    embedded, labels = embed_dataset(model.network, samples, int(cfg.get("batch_size", 64)))
    num_class = datamodule.num_class
    result: dict[str, Any] = {"checkpoint": str(cfg.ckpt_path), "protocol": settings.protocol,
                              "classes": datamodule.class_names, "samples": len(labels), "pool": pool}
    if settings.protocol == "ntu120":
        names = [str(n) for n in datamodule.store.index["name"][samples.indices]]
        support, query, replaced = ntu120_support(names, labels)
        if replaced:
            log.warning("exemplars missing from the store, replaced by their class's first sample: %s", replaced)
        result.update(replaced=replaced, results={1: summarise([episode(embedded, labels, support, query,
                                                                          num_class)])})
    else:
        result["results"] = kshot(embedded, labels, num_class, settings.shots, settings.draws, settings.seed)
    report(result)
    output = Path(cfg.paths.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "oneshot.json").write_text(json.dumps(result, indent=1))
    Console().print(f"results → {output / 'oneshot.json'}", soft_wrap=True)
    return result


def report(result: dict[str, Any]) -> None:
    table = Table(title=f"{result['protocol']}: {len(result['classes'])} classes, {result['samples']} samples "
                        f"({result['pool']})")
    table.add_column("shots", justify="right")
    for metric in METRICS:
        table.add_column(metric if metric != "accuracy" else "top-1", justify="right")
    for k, scores in result["results"].items():
        table.add_row(str(k), *(f"{scores[m]['mean']:.3f} ± {scores[m]['std']:.3f}" for m in METRICS))
    Console().print(table)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="oneshot")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    oneshot(cfg)


if __name__ == "__main__":
    main()
