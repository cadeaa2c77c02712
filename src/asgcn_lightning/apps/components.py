"""Build the data module, LightningModule, loggers, callbacks and Trainer from a composed config.

Shared by train, evaluate and predict so that all three build exactly the same objects.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from asgcn_lightning.data.datamodule import SkeletonDataModule
from asgcn_lightning.models.module import ActionRecognitionModule


def build_datamodule(cfg: DictConfig) -> SkeletonDataModule:
    """The data module, with its store prepared (synthetic) or checked (real data sets)."""
    datamodule: SkeletonDataModule = instantiate(cfg.datamodule)
    datamodule.prepare_data()
    return datamodule


def build_module(cfg: DictConfig, datamodule: SkeletonDataModule) -> ActionRecognitionModule:
    """The model, sized by the data: ``num_class``, joint layout, channels and persons come from it."""
    # partial instantiation: live objects (the layout, the network) never pass through OmegaConf
    network = instantiate(cfg.model.network, _partial_=True)(
        num_class=datamodule.num_class, layout=datamodule.layout,
        in_channels=datamodule.in_channels, num_person=datamodule.num_person)
    module = instantiate(cfg.model, _partial_=True, network=None)
    return module(network=network, class_names=datamodule.class_names)


def build_loggers(cfg: DictConfig) -> list[Any]:
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values() if node is not None]
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def build_trainer(cfg: DictConfig, loggers: list[Any] | None = None) -> L.Trainer:
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    return instantiate(cfg.trainer, logger=loggers if loggers is not None else False, callbacks=callbacks)
