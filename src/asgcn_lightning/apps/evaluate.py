"""Evaluate a checkpoint: ``python eval.py ckpt_path=<file.ckpt>`` prints a per-class table and writes JSON.

The checkpoint says which model it is and which data it was trained on (its model card), so the
test split of that data set is evaluated without repeating the training command's overrides;
``store_dir=<folder>`` points at the prepared data where they are now.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from asgcn_lightning.apps.components import apply_process_settings, build_trainer
from asgcn_lightning.config import config_dir
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.inference import load_model
from asgcn_lightning.visual.confusion import per_class_accuracy

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """The model's own test step over the test split of its data; returns the test metrics."""
    if not cfg.get("ckpt_path"):
        raise UserError("give the checkpoint to evaluate: python eval.py ckpt_path=<file.ckpt>")
    apply_process_settings(cfg)
    model = load_model(cfg.ckpt_path)
    datamodule = model.datamodule(cfg.get("store_dir"))
    trainer = build_trainer(cfg, loggers=[])
    results = trainer.test(model.module, datamodule=datamodule, verbose=False)[0]
    confusion = model.module.last_test_confusion.numpy()
    print_report(confusion, model.class_names, results)
    output = Path(cfg.paths.output_dir) / "evaluation.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"checkpoint": str(model.ckpt_path), "store_dir": str(datamodule.store_dir),
                                  "metrics": results, "confusion": confusion.tolist(),
                                  "class_names": model.class_names}, indent=1))
    Console().print(f"evaluation → {output}", soft_wrap=True)
    return results


def print_report(confusion: np.ndarray, class_names: list[str], metrics: dict[str, float]) -> None:
    table = Table(title="per-class accuracy (test split)")
    for column in ("#", "class", "samples", "accuracy"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for i, (name, accuracy) in enumerate(zip(class_names, per_class_accuracy(confusion), strict=True)):
        table.add_row(str(i), name, str(int(confusion[i].sum())), f"{accuracy:.3f}")
    console = Console()
    console.print(table)
    console.print(", ".join(f"{k} = {v:.4f}" for k, v in sorted(metrics.items())))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
