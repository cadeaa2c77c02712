"""Cross-data-set evaluation: ``python -m asgcn_lightning.apps.cross_eval ckpt_path=<ckpt> dataset=<target> ...``.

A model trained on one data set is evaluated on another whose classes only partly correspond. Both
sides are mapped onto common *evaluation labels*: ``label_map`` sends the model's classes there
(many-to-one allowed; classes left out are never predicted), ``target_map`` the target's classes
(default: each target class is its own label; classes left out are not evaluated). A sample's
prediction is the label with the largest summed probability, the softmax being taken over the
mapped model classes only — "unmapped" means the model may not answer with that class. Without
``label_map``, model classes go to target classes of the same name.

The model comes from its checkpoint (layout, classes, input stream: its model card, as in
``eval.py``); the target is this command's ``dataset``/``split`` (and class subset). The target's
samples go through its own eval transforms in its own layout, then :class:`ModelInput` re-indexes
their joints into the model's layout through ``joint_map`` (the joint mapping of transfer learning;
model joints without a target joint are zero, as an undetected joint is) and computes the model's
input stream — always the model's: a command setting another ``dataset.stream`` is refused. Writes
``cross_eval.json`` and ``confusion_cross.png`` into the run folder.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import matplotlib.pyplot as plt
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from asgcn_lightning.apps.components import apply_process_settings, build_datamodule
from asgcn_lightning.config import config_dir, sets_on_command_line
from asgcn_lightning.data.transforms import Stream
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.inference import load_model
from asgcn_lightning.inference.evaluation import (
    confusion_matrix,
    dataset_logits,
    plain,
    resolve_class,
    sample_set,
)
from asgcn_lightning.models.transfer import joint_mapping
from asgcn_lightning.skeleton.layouts import Layout
from asgcn_lightning.visual.confusion import confusion_figure, per_class_accuracy

log = logging.getLogger(__name__)
SAMPLE_SETS = ("test", "all")


# -- label mapping ------------------------------------------------------------------------------------------
@dataclass
class LabelMapping:
    """Model classes and target classes → evaluation labels (-1: unmapped)."""

    labels: list[str]
    source: np.ndarray
    target: np.ndarray


def label_mapping(source_classes: Sequence[str], target_classes: Sequence[str],
                  label_map: Mapping[Any, Any] | None = None,
                  target_map: Mapping[Any, Any] | None = None) -> LabelMapping:
    """Resolve the two maps; evaluation labels are ordered as the target classes.

    ``label_map`` keys are model classes, values evaluation labels (target classes by name or number
    when ``target_map`` is ``None``); ``None`` pairs classes of the same name.
    """
    if target_map is None:
        labels_of_target = list(target_classes)
    else:
        labels_of_target = [None] * len(target_classes)
        for item, label in target_map.items():
            labels_of_target[resolve_class(item, target_classes, "target_map")] = str(label)
    if label_map is None:
        label_map = {name: name for name in source_classes if name in labels_of_target}
        if not label_map:
            raise UserError(f"the model's classes {list(source_classes)} and the target's {list(target_classes)} "
                            "share no name; give label_map={model class: target class}")
    source = {}
    for item, label in label_map.items():
        if target_map is None:
            label = target_classes[resolve_class(label, target_classes, "label_map value")]
        elif str(label) not in labels_of_target:
            raise UserError(f"label_map: {label!r} is not an evaluation label of target_map "
                            f"({sorted({str(v) for v in target_map.values()})})")
        source[resolve_class(item, source_classes, "label_map")] = str(label)
    wanted = set(source.values())
    labels = list(dict.fromkeys(label for label in labels_of_target if label in wanted))
    index = {label: i for i, label in enumerate(labels)}
    return LabelMapping(
        labels=labels,
        source=np.array([index.get(source.get(c, ""), -1) for c in range(len(source_classes))]),
        target=np.array([index.get(label, -1) if label is not None else -1 for label in labels_of_target]))


def mapped_scores(logits: torch.Tensor, mapping: LabelMapping) -> torch.Tensor:
    """Per evaluation label, the summed probability of its model classes (softmax over mapped classes only)."""
    keep = torch.from_numpy(mapping.source >= 0)
    probabilities = torch.softmax(logits[:, keep].double(), dim=1)
    scores = torch.zeros(len(logits), len(mapping.labels), dtype=probabilities.dtype)
    return scores.index_add_(1, torch.from_numpy(mapping.source[mapping.source >= 0]), probabilities)


def mapped_confusion(logits: torch.Tensor, target: torch.Tensor, mapping: LabelMapping) -> tuple[np.ndarray, int]:
    """Confusion matrix over evaluation labels (rows true) and the number of target samples not evaluated."""
    truth = torch.from_numpy(mapping.target)[target]
    keep = truth >= 0
    predicted = mapped_scores(logits, mapping).argmax(dim=1)
    confusion = confusion_matrix(predicted[keep], truth[keep], len(mapping.labels)).numpy()
    return confusion, int((~keep).sum())


# -- the model's input -----------------------------------------------------------------------------------
class ModelInput:
    """Last eval transform of the target: its samples as the model reads them.

    Joints are re-indexed into the model's ``layout`` (``mapping``: ``{model joint: target joint}``;
    ``None`` for the same layout), model joints without a target joint are zero — as an undetected
    joint is — and so are bones touching them; persons are cut or zero-padded to the model's count;
    then the model's input ``stream`` is computed on the model's layout.
    """

    def __init__(self, mapping: dict[int, int] | None, layout: Layout, stream: str, num_person: int) -> None:
        self.mapping, self.layout, self.num_person = mapping, layout, num_person
        self.stream = Stream(stream)

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        frames, persons, _, channels = sequence.shape
        out = np.zeros((frames, self.num_person, self.layout.num_joints, channels), dtype=sequence.dtype)
        kept = min(persons, self.num_person)
        if self.mapping is None:
            out[:, :kept] = sequence[:, :kept]
            return self.stream(out, self.layout, rng)
        model_joints, target_joints = list(self.mapping), list(self.mapping.values())
        out[:, :kept, model_joints] = sequence[:, :kept][:, :, target_joints]
        out = self.stream(out, self.layout, rng)
        missing = np.ones(self.layout.num_joints, dtype=bool)
        missing[model_joints] = False
        if self.stream.kind.startswith("bone"):  # a bone to or from a missing joint is not observed either
            parents = np.array(self.layout.parents)
            missing |= (parents >= 0) & missing[np.maximum(parents, 0)]
        out[:, :, missing] = 0
        return out


def model_stream(stream: str, cfg: DictConfig) -> str:
    """The stream the model was trained on; a command asking for another one is an error, not a silent switch."""
    asked = OmegaConf.select(cfg, "dataset.stream") or "joint"
    if sets_on_command_line("dataset.stream") and asked != stream:
        raise UserError(f"dataset.stream={asked}: the model {cfg.ckpt_path} reads the {stream} stream and is always "
                        "fed it; drop the dataset.stream override")
    if asked != stream:
        log.info("the model reads the %s stream: the composed config's dataset.stream=%s does not apply", stream, asked)
    return stream


def input_mapping(model_layout: Layout, target_layout: Layout, spec: Any) -> dict[int, int] | None:
    """``{model joint: target joint}`` through ``joint_map`` (as transfer's), ``None`` when nothing moves."""
    if model_layout == target_layout and spec in (None, "name"):
        return None
    mapping = joint_mapping(target_layout, model_layout, spec, what="joint_map")
    zero = [model_layout.joints[j] for j in range(model_layout.num_joints) if j not in mapping]
    log.info("joint_map: %d of %d joints of the model's layout %s from the target's %s%s", len(mapping),
             model_layout.num_joints, model_layout.name, target_layout.name,
             f" (zero: {', '.join(zero)})" if zero else "")
    return mapping


# -- the app ------------------------------------------------------------------------------------------------
def cross_evaluate(cfg: DictConfig) -> dict[str, Any]:
    apply_process_settings(cfg)
    if not cfg.get("ckpt_path"):
        raise UserError("give the model: ckpt_path=<file.ckpt>")
    model = load_model(cfg.ckpt_path)
    stream = model_stream(model.stream, cfg)
    target_cfg = copy.deepcopy(cfg)
    with open_dict(target_cfg):
        target_cfg.dataset.stream = None  # computed by ModelInput, on the model's layout
    target = build_datamodule(target_cfg)
    if model.in_channels != target.in_channels:  # (opens the target's store)
        raise UserError(f"the model reads {model.in_channels} channels per joint, the target "
                        f"{target.dataset_name} has {target.in_channels}; channels cannot be mapped")
    model_layout, target_layout = model.layout, target.layout
    joints = input_mapping(model_layout, target_layout, plain(cfg.get("joint_map", "name")))
    target.eval_transform.transforms.append(ModelInput(joints, model_layout, stream, model.num_person))
    samples = sample_set(target, cfg.get("target_samples", "test"))
    mapping = label_mapping(model.class_names, target.class_names, plain(cfg.get("label_map")),
                            plain(cfg.get("target_map")))
    logits, labels = dataset_logits(model.network, samples, int(cfg.get("batch_size", 64)))
    confusion, ignored = mapped_confusion(logits, labels, mapping)
    if confusion.sum() == 0:
        raise UserError("no target sample has a mapped label; check label_map/target_map")
    accuracy = float(np.trace(confusion) / confusion.sum())
    identity = {name: name for name in model_layout.joints}
    result = {"checkpoint": str(cfg.ckpt_path), "target": target.dataset_name, "accuracy": accuracy,
              "evaluated": int(confusion.sum()), "ignored": ignored, "labels": mapping.labels,
              "model_classes": {name: mapping.labels[i] for name, i in
                                zip(model.class_names, mapping.source, strict=True) if i >= 0},
              "stream": stream,
              "joints": identity if joints is None else
              {model_layout.joints[m]: target_layout.joints[t] for m, t in sorted(joints.items())},
              "per_label_accuracy": dict(zip(mapping.labels, per_class_accuracy(confusion).tolist(), strict=True)),
              "confusion": confusion.tolist()}
    report(result)
    output = Path(cfg.paths.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "cross_eval.json").write_text(json.dumps(result, indent=1))
    figure = confusion_figure(confusion, mapping.labels, title=f"{target.dataset_name} via label map")
    figure.savefig(output / "confusion_cross.png", dpi=100)
    plt.close(figure)
    Console().print(f"results → {output / 'cross_eval.json'}\nconfusion matrix → {output / 'confusion_cross.png'}",
                    soft_wrap=True)
    return result


def report(result: dict[str, Any]) -> None:
    table = Table(title=f"cross-data-set evaluation on {result['target']}")
    for column in ("label", "samples", "accuracy"):
        table.add_column(column, justify="left" if column == "label" else "right")
    confusion = np.asarray(result["confusion"])
    for i, label in enumerate(result["labels"]):
        table.add_row(label, str(int(confusion[i].sum())), f"{result['per_label_accuracy'][label]:.3f}")
    console = Console()
    console.print(table)
    console.print(f"accuracy = {result['accuracy']:.4f} over {result['evaluated']} samples "
                  f"({result['ignored']} target samples of unmapped classes ignored)")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="cross_eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    cross_evaluate(cfg)


if __name__ == "__main__":
    main()
