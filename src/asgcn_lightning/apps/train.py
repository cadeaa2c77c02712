"""Training entry point: ``python train.py [overrides]`` (also ``-m`` for sweeps)."""

from __future__ import annotations

import logging

import hydra
import lightning as L
from omegaconf import DictConfig

from asgcn_lightning.apps.components import build_datamodule, build_loggers, build_module, build_trainer
from asgcn_lightning.config import config_dir
from asgcn_lightning.errors import UserError, exit_on_user_error

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) one configuration; returns the final metrics of the run."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    trainer = build_trainer(cfg, build_loggers(cfg))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test_after_fit"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    log.info("final metrics: %s", {k: round(v, 4) for k, v in sorted(metrics.items())})
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Hydra entry; returns the optimised metric for sweepers (``optimized_metric`` in the config)."""
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if name and name not in metrics:
        raise UserError(f"optimized_metric {name!r} was not logged; logged metrics are {sorted(metrics)}")
    return metrics[name] if name else None


if __name__ == "__main__":
    main()
