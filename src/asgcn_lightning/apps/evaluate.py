"""Evaluate a checkpoint: ``python eval.py ckpt_path=<file.ckpt>`` prints a per-class table.

The run's own composed config (``.hydra/config.yaml`` beside its ``checkpoints/`` folder) is used
for the data set, split and model unless ``use_run_config=false``, so the same overrides need not
be repeated.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from asgcn_lightning.apps.components import build_datamodule, build_module, build_trainer
from asgcn_lightning.config import config_dir
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.models.module import ActionRecognitionModule
from asgcn_lightning.visual.confusion import per_class_accuracy

log = logging.getLogger(__name__)
RUN_KEYS = ("dataset", "split", "model")


def run_config_for(ckpt_path: Path) -> DictConfig | None:
    """The composed config saved by the training run that wrote ``ckpt_path``, if there is one."""
    for folder in (ckpt_path.parent.parent, ckpt_path.parent):
        candidate = folder / ".hydra" / "config.yaml"
        if candidate.is_file():
            return OmegaConf.load(candidate)
    return None


def sets_on_command_line(key: str) -> bool:
    """Whether this command's own overrides set ``key`` (False outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return any(override.split("=", 1)[0].lstrip("+~") == key for override in HydraConfig.get().overrides.task)


def adopt_run_config(cfg: DictConfig, ckpt_path: Path) -> bool:
    """Give ``cfg`` the data set, split and model of the run that wrote ``ckpt_path``; False if none is found.

    The data are then looked for where that run read them: its ``paths.data_dir`` when its training
    command set one (a plain value in the saved config), unless this command sets ``paths.data_dir`` too.
    """
    run_cfg = run_config_for(ckpt_path)
    if run_cfg is None:
        return False
    OmegaConf.set_struct(cfg, False)
    for key in RUN_KEYS:
        cfg[key] = run_cfg[key]
    run_paths = run_cfg.get("paths") or {}
    if ("data_dir" in run_paths and not OmegaConf.is_interpolation(run_paths, "data_dir")
            and not sets_on_command_line("paths.data_dir")):
        cfg.paths.data_dir = run_paths.data_dir
    return True


def load_weights(module: ActionRecognitionModule, ckpt_path: Path) -> None:
    """Load a checkpoint's weights, or say exactly which keys do not fit the configured model."""
    if not ckpt_path.is_file():
        raise UserError(f"{ckpt_path}: no such checkpoint")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        state = checkpoint["state_dict"]
    except Exception as error:  # a torn or foreign file: report it, do not dump a traceback
        raise UserError(f"{ckpt_path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        parts = [f"missing {head(missing)}" if missing else "",
                 f"unexpected {head(unexpected)}" if unexpected else "",
                 "shape differs for " + head([f"{k} {tuple(state[k].shape)}→{tuple(own[k].shape)}"
                                              for k in mismatched]) if mismatched else ""]
        raise UserError(f"{ckpt_path} does not match the configured model: " + "; ".join(p for p in parts if p))
    module.load_state_dict(state)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    if not cfg.get("ckpt_path"):
        raise UserError("give the checkpoint to evaluate: python eval.py ckpt_path=<file.ckpt>")
    ckpt_path = Path(cfg.ckpt_path)
    if cfg.get("use_run_config") and adopt_run_config(cfg, ckpt_path):
        log.info("using the training run's data set, split and model config")
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    load_weights(module, ckpt_path)
    trainer = build_trainer(cfg, loggers=[])
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    confusion = module.last_test_confusion.numpy()
    print_report(confusion, datamodule.class_names, results)
    output = Path(cfg.paths.output_dir) / "evaluation.json"
    output.write_text(json.dumps({"checkpoint": str(ckpt_path), "metrics": results,
                                  "confusion": confusion.tolist(), "class_names": datamodule.class_names},
                                 indent=1))
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
