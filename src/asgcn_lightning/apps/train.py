"""Training entry point: ``python train.py [overrides]`` (also ``-m`` for sweeps)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from asgcn_lightning.apps.components import (
    apply_process_settings,
    build_datamodule,
    build_loggers,
    build_module,
    build_trainer,
    check_trainer,
    close_loggers,
    resolve_lr_scaling,
)
from asgcn_lightning.atomic import write_atomically
from asgcn_lightning.config import config_dir
from asgcn_lightning.distributed import collective_failure
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.shutdown import print_stacks_of

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint (by validation) once; returns the final metrics of the run.

    The test split plays no part in training: checkpoints, schedules and sweeps see validation metrics
    only, and ``test/*`` is computed after the fit, on the checkpoint the validation chose.
    """
    apply_process_settings(cfg)
    check_trainer(cfg)
    check_validation_only(cfg)
    factor = resolve_lr_scaling(cfg)
    if factor != 1.0:
        log.info("lr_scaling %s: global batch %d, learning rates × %.4g", cfg.lr_scaling.rule,
                 cfg.lr_scaling.global_batch_size, factor)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    trainer = build_trainer(cfg, build_loggers(cfg))
    check_sweep_launch(trainer)
    check_epochs(trainer, module)
    with collective_failures_as_errors(trainer):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}  # best/<monitor>: see callbacks.py
    if cfg.get("test_after_fit"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        with collective_failures_as_errors(trainer):
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if best:
            log.info("tested the best checkpoint by validation: %s", best)
    summarise_in_wandb(trainer, metrics)
    close_loggers(trainer)
    if trainer.is_global_zero:  # what sweep_summary reads, whichever loggers the run had
        log.info("final metrics: %s", {k: round(v, 4) for k, v in sorted(metrics.items())})
        output = Path(cfg.paths.output_dir) / "metrics.json"
        write_atomically(output, json.dumps(metrics, indent=1, sort_keys=True))
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        # soft wrap: paths stay whole on one line also in a log file (no terminal width to wrap at)
        Console(soft_wrap=True).print(f"metrics → {output}" + (f"\nbest checkpoint → {best}" if best else ""),
                                      highlight=False)
    return metrics


def _monitors(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every ``monitor`` key of a plain config tree (callbacks, schedulers) with its value, by full name."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if key == "monitor" and isinstance(value, str):
            yield f"{path}{key}", value
        yield from _monitors(value, f"{path}{key}.")


def check_validation_only(cfg: DictConfig) -> None:
    """Refuse a run that would choose anything by the test split: it is scored once, after training."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    watched = [*_monitors(tree), ("optimized_metric", cfg.get("optimized_metric") or "")]
    for name, metric in watched:
        if str(metric).startswith("test/"):
            raise UserError(f"{name}={metric}: checkpoints, schedules, early stopping and sweeps follow validation "
                            f"metrics (val/...); the test split is scored once, on the best checkpoint, after "
                            f"training (use {metric.replace('test/', 'val/', 1)})")


def summarise_in_wandb(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """W&B's run summary shows the best validation score and the test metrics of the best checkpoint."""
    final = {key: value for key, value in metrics.items() if key.startswith(("best/", "test/"))}
    for logger in trainer.loggers:
        if isinstance(logger, L.pytorch.loggers.WandbLogger) and trainer.is_global_zero and final:
            logger.experiment.summary.update(final)


@contextmanager
def collective_failures_as_errors(trainer: L.Trainer) -> Iterator[None]:
    """A process that died, hung past the collective timeout or went out of step ends the run in one line."""
    try:
        yield
    except Exception as error:
        failure = collective_failure(error)
        if failure is None:
            raise
        print_stacks_of([process.pid for process in getattr(trainer.strategy.launcher, "procs", [])])
        raise UserError(f"process {trainer.global_rank} of {trainer.world_size}: the training processes lost each "
                        f"other ({failure}); the last complete epoch is in checkpoints/last.ckpt") from error


def check_epochs(trainer: L.Trainer, module: L.LightningModule) -> None:
    """Refuse a run that would end inside the A-link pretraining: it would train and test no classifier."""
    aim_epochs = getattr(module, "aim_pretrain_epochs", 0)
    if aim_epochs and trainer.max_epochs is not None and 0 <= trainer.max_epochs <= aim_epochs:
        raise UserError(f"trainer.max_epochs={trainer.max_epochs} ends the run inside the {aim_epochs} epochs of "
                        f"A-link "
                        f"pretraining (model.aim.pretrain_epochs), before the classifier trains: give "
                        f"trainer.max_epochs={aim_epochs + 1} or more")


def check_sweep_launch(trainer: L.Trainer) -> None:
    """Refuse the launches that run ``train.py`` many times inside ``-m``: each copy would run the whole sweep.

    Its copies would start their own sweeper (own Optuna study, own sweep folder) and only line up
    with the parent's jobs by luck; a job with another device count hangs. That is DDP that re-runs
    ``train.py`` (``start_method=popen``) and ``torchrun train.py -m``. Spawned workers
    (``start_method=spawn``) or tasks started by the SLURM launcher run one job each.
    """
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return
    if dist.is_torchelastic_launched():
        raise UserError("torchrun starts train.py once per process, and with -m each of them would run the whole "
                        "sweep; sweep with trainer=ddp_spawn on one machine or hydra/launcher=slurm on a cluster "
                        "(see docs/scaling.md)")
    launcher = trainer.strategy.launcher
    if isinstance(launcher, _SubprocessScriptLauncher) and launcher.num_processes > 1 \
            and not trainer.strategy.cluster_environment.creates_processes_externally:
        raise UserError("DDP with start_method=popen re-runs train.py, which inside a sweep (-m) runs the "
                        "whole sweep again; use trainer.strategy.start_method=spawn (trainer=ddp_spawn) or "
                        "hydra/launcher=slurm (see docs/scaling.md)")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Hydra entry; returns the optimised metric for sweepers (``optimized_metric`` in the config).

    For the metric the checkpoints are ranked by, that is the best checkpoint's score, not the last
    epoch's: the sweeper then compares the models the runs keep.
    """
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if name and name not in metrics:
        raise UserError(f"optimized_metric {name!r} was not logged; logged metrics are {sorted(metrics)}")
    return metrics.get(f"best/{name}", metrics[name]) if name else None


if __name__ == "__main__":
    main()
