"""Multi-stream score fusion: ``python -m asgcn_lightning.apps.ensemble ckpt_paths=[a.ckpt,...] weights=[...]``.

Each checkpoint is one stream model of the same experiment — trained with ``dataset.stream`` set to
``joint``, ``bone``, ``joint_motion`` or ``bone_motion`` (``stream=<kind>``) — and its run's
checkpoint says which stream it reads, so every member sees its own stream of the same test samples.
The fused score of a sample is ``Σ_i w_i · softmax(logits_i)`` (``fuse=softmax``: members trained
separately have differently scaled logits, probabilities do not) or ``Σ_i w_i · logits_i``
(``fuse=logits``, as 2s-AGCN / MS-G3D). ``weights`` default to equal; the four-stream weights of
CTR-GCN are ``[0.6, 0.6, 0.4, 0.4]`` for joint, bone, joint motion, bone motion (the motion
streams are individually weaker). Each member's top-1 is ``eval.py``'s figure for its checkpoint
(the same test-step logits); top-5 is reported only with more than five classes, where it is not
trivially 1. Writes ``ensemble.json`` into the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from asgcn_lightning.apps.components import apply_process_settings
from asgcn_lightning.config import config_dir
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.inference import load_model
from asgcn_lightning.inference.evaluation import dataset_logits, plain, sample_set, top_k_accuracy

FUSIONS = ("softmax", "logits")
TOP5_MIN_CLASSES = 6  # with five classes or fewer every label is among the top five


def fuse(logits: list[torch.Tensor], weights: list[float], how: str = "softmax") -> torch.Tensor:
    """Weighted sum of the members' probabilities (``softmax``) or raw logits (``logits``)."""
    if how not in FUSIONS:
        raise UserError(f"unknown fuse {how!r}; choose one of {list(FUSIONS)}")
    if len(weights) != len(logits):
        raise UserError(f"{len(weights)} weights for {len(logits)} checkpoints; give one weight per checkpoint")
    if any(w < 0 for w in weights) or not any(weights):
        raise UserError(f"weights {weights}: need non-negative weights, not all zero")
    scores = [torch.softmax(x.double(), dim=1) if how == "softmax" else x.double() for x in logits]
    return sum(w * s for w, s in zip(weights, scores, strict=True))


def accuracies(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1, and top-5 where there are enough classes for it to mean something."""
    result = {"top1": top_k_accuracy(scores, labels, 1)}
    if scores.shape[1] >= TOP5_MIN_CLASSES:
        result["top5"] = top_k_accuracy(scores, labels, 5)
    return result


def ensemble(cfg: DictConfig) -> dict[str, Any]:
    apply_process_settings(cfg)
    paths = [str(p) for p in plain(cfg.get("ckpt_paths")) or []]
    if len(paths) < 2:
        raise UserError("give at least two checkpoints: ckpt_paths=[<joint>.ckpt,<bone>.ckpt,...]")
    weights = [float(w) for w in plain(cfg.get("weights")) or [1.0] * len(paths)]
    members, logits, reference = [], [], None
    for path in paths:
        model = load_model(path)
        datamodule = model.datamodule(cfg.get("store_dir"))
        test_set = sample_set(datamodule, "test")
        identity = (str(datamodule.store_dir), test_set.indices.tolist(), model.class_names)
        if reference is None:
            reference = identity
        elif identity != reference:
            raise UserError(f"{path} was evaluated on other test samples or classes than {paths[0]}; an ensemble "
                            "fuses models of one data set, split and class subset")
        member_logits, labels = dataset_logits(model.network, test_set, int(cfg.get("batch_size", 64)))
        logits.append(member_logits)
        members.append({"checkpoint": path, "stream": model.stream, **accuracies(member_logits, labels)})
    fused = fuse(logits, weights, cfg.get("fuse", "softmax"))
    result = {"members": members, "weights": weights, "fuse": cfg.get("fuse", "softmax"),
              "fused": accuracies(fused, labels), "samples": len(labels), "num_class": int(fused.shape[1])}
    report(result)
    output = Path(cfg.paths.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "ensemble.json").write_text(json.dumps(result, indent=1))
    Console().print(f"results → {output / 'ensemble.json'}", soft_wrap=True)
    return result


def report(result: dict[str, Any]) -> None:
    table = Table(title=f"stream ensemble: {result['samples']} test samples, {result['num_class']} classes "
                        f"(fuse={result['fuse']})")
    metrics = [m for m in ("top1", "top5") if m in result["fused"]]
    for column in ("stream", "weight", *(f"top-{m[3:]}" for m in metrics), "checkpoint"):
        table.add_column(column, justify="left" if column in ("stream", "checkpoint") else "right")
    for member, weight in zip(result["members"], result["weights"], strict=True):
        table.add_row(member["stream"], f"{weight:g}", *(f"{member[m]:.4f}" for m in metrics), member["checkpoint"])
    table.add_row("fused", f"{np.sum(result['weights']):g}", *(f"{result['fused'][m]:.4f}" for m in metrics), "")
    Console().print(table)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="ensemble")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    ensemble(cfg)


if __name__ == "__main__":
    main()
