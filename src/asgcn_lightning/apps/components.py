"""Build the data module, LightningModule, loggers, callbacks and Trainer from a composed config.

Shared by train, evaluate and predict so that all three build exactly the same objects.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from asgcn_lightning.callbacks import EpochMetricsInLockstep, StopOnSignal
from asgcn_lightning.data.datamodule import SkeletonDataModule
from asgcn_lightning.distributed import process_count, runs_on_cpu
from asgcn_lightning.errors import UserError
from asgcn_lightning.memory import set_malloc_mmap_threshold
from asgcn_lightning.models.card import ModelCard
from asgcn_lightning.models.module import ActionRecognitionModule
from asgcn_lightning.models.transfer import prepare_transfer
from asgcn_lightning.resume import RandomStateCheckpoint
from asgcn_lightning.runtime import show_library_chatter
from asgcn_lightning.schemas import LrRule
from asgcn_lightning.shutdown import die_with_parent, stop_on_signals

LR_RULES = {LrRule.linear: lambda ratio: ratio, LrRule.sqrt: math.sqrt}  # factor from global batch / base batch


def apply_process_settings(cfg: DictConfig) -> None:
    """What every process of every entry point sets first: stop handling, threads, ``malloc_mmap_threshold``,
    and ``verbose`` (library chatter back, see :mod:`asgcn_lightning.runtime`).

    Threads are set per process: N DDP processes on one host would each default to all cores and
    oversubscribe them, so without ``torch_threads`` each CPU process gets an equal share. A DDP worker
    process started by the first one ends with it, whatever ended that one.
    """
    stop_on_signals()
    if cfg.get("verbose"):
        show_library_chatter()
    if os.environ.get("LOCAL_RANK", "0") != "0":
        die_with_parent()
    threads = cfg.get("torch_threads")
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="auto")
    if not threads and runs_on_cpu(accelerator):
        local = process_count(OmegaConf.select(cfg, "trainer.devices", default=1), 1, accelerator)
        threads = max(1, len(os.sched_getaffinity(0)) // local) if local > 1 else None
    if threads:
        torch.set_num_threads(int(threads))
    if cfg.get("malloc_mmap_threshold"):
        set_malloc_mmap_threshold(int(cfg.malloc_mmap_threshold))


def build_datamodule(cfg: DictConfig) -> SkeletonDataModule:
    """The data module of ``cfg.dataset``, with its store prepared (synthetic, NATOPS) or checked (the rest)."""
    datamodule: SkeletonDataModule = instantiate(cfg.dataset, given_settings=given_dataset_settings())
    datamodule.prepare_data()
    return datamodule


def given_dataset_settings() -> list[str] | None:
    """The data set settings this command sets itself (``dataset.<key>``, ``dataset.prepare.<key>``): those a
    prepared store must agree with; the others are the store's. ``None`` outside a Hydra command: all."""
    if not HydraConfig.initialized():
        return None
    keys = [override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task]
    return sorted({key.rsplit(".", 1)[-1] for key in keys
                   if key.startswith("dataset.prepare.") or (key.startswith("dataset.") and key.count(".") == 1)})


def build_module(cfg: DictConfig, datamodule: SkeletonDataModule) -> ActionRecognitionModule:
    """The model, sized by the data: ``num_class``, joint layout, channels and persons come from it."""
    transfer = prepare_transfer(cfg)  # -- transfer learning (docs/transfer.md): source checkpoint of transfer=<mode>
    # partial instantiation: live objects (the layout, the network) never pass through OmegaConf
    network = instantiate(cfg.model.network, _partial_=True)(
        num_class=datamodule.num_class, layout=datamodule.layout, in_channels=datamodule.in_channels,
        num_person=datamodule.num_person, spatial_channels=spatial_channels(cfg, datamodule))
    module = instantiate(cfg.model, _partial_=True, network=None)(network=network, class_names=datamodule.class_names)
    module.model_card = model_card(cfg, datamodule).to_dict()  # checkpoints carry what using them needs
    if transfer is not None:  # -- source weights, frozen modules, backbone learning rate
        transfer.apply(module, datamodule.layout)
    return module


def spatial_channels(cfg: DictConfig, datamodule: SkeletonDataModule) -> int | None:
    """The coordinates among the input channels: the model config's choice, else the store's."""
    chosen = OmegaConf.select(cfg, "model.network.spatial_channels")
    return int(chosen) if chosen is not None else datamodule.spatial_channels


def model_card(cfg: DictConfig, datamodule: SkeletonDataModule) -> ModelCard:
    """The facts a checkpoint of this run must carry (models/card.py), from the data module and the config."""
    data = OmegaConf.to_container(cfg.dataset, resolve=True)  # the data module's own config, stream included
    try:
        run_name = OmegaConf.select(cfg, "experiment_name")
    except Exception:  # ${hydra:...} outside a Hydra run: the name is informational
        run_name = None
    window = OmegaConf.select(cfg, "dataset.window")
    return ModelCard(layout=datamodule.layout.to_spec(), class_names=list(datamodule.class_names),
                     in_channels=datamodule.in_channels, num_person=datamodule.num_person,
                     spatial_channels=spatial_channels(cfg, datamodule),
                     stream=OmegaConf.select(cfg, "dataset.stream") or "joint",
                     eval_transforms=list(data.get("eval_transforms") or []),
                     window=int(window) if window is not None else None,
                     model=OmegaConf.to_container(cfg.model, resolve=True), data=data,
                     dataset_name=str(datamodule.dataset_name), store_dir=str(datamodule.store_dir),
                     run_name=run_name)


def build_loggers(cfg: DictConfig) -> list[Any]:
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values() if node is not None]
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def close_loggers(trainer: L.Trainer) -> None:
    """End the W&B run so its files are complete and the next run of a sweep starts a new one."""
    for logger in trainer.loggers:
        if isinstance(logger, L.pytorch.loggers.WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()


def check_trainer(cfg: DictConfig) -> None:
    """Refuse, before anything starts, a trainer this machine cannot run as asked."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.accelerator={accelerator}: this machine has no CUDA GPU that PyTorch can use; "
                        "leave trainer at its default (the machine's CPUs here) or run where GPUs are")
    if str(cfg.trainer.get("precision")) in ("16-mixed", "16") and runs_on_cpu(accelerator):
        # Lightning would warn and train in bf16-mixed instead: another run than the one asked for
        raise UserError("trainer.precision=16-mixed (fp16 autocast with loss scaling) needs a GPU; on CPUs use "
                        "trainer.precision=bf16-mixed")


def build_trainer(cfg: DictConfig, loggers: list[Any] | None = None) -> L.Trainer:
    check_trainer(cfg)
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress-bar callback then
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    if not loggers:  # Lightning refuses a learning-rate monitor with nowhere to log (logger=none)
        callbacks = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
    callbacks.insert(0, EpochMetricsInLockstep())  # not optional: without it a DDP run can hang
    callbacks.append(StopOnSignal())  # not optional: SIGTERM must stop a run, also one blocked in a collective
    callbacks.append(RandomStateCheckpoint())  # not optional: without it no resume is exact
    return instantiate(cfg.trainer, logger=loggers if loggers is not None else False, callbacks=callbacks)


def resolve_lr_scaling(cfg: DictConfig) -> float:
    """Scale the optimisers' learning rates for the global batch; returns the factor.

    The global batch is ``dataset.batch_size`` (per process) × processes; the configured rates are
    taken as tuned for ``lr_scaling.base_batch_size``. The resolved numbers are written back into
    the config, so the logged config and the checkpoint's hyperparameters show the rates in use.
    """
    scaling = cfg.get("lr_scaling")  # typed: asgcn_lightning.schemas.LrScalingConfig
    rule = LrRule(scaling.rule) if scaling is not None else LrRule.none
    if rule == LrRule.none:
        return 1.0
    trainer = cfg.trainer
    global_batch = int(cfg.dataset.batch_size) * process_count(trainer.devices, trainer.num_nodes, trainer.accelerator)
    factor = LR_RULES[rule](global_batch / int(scaling.base_batch_size))
    aim = cfg.model.get("aim") or {}
    with open_dict(cfg):
        for optimizer in (cfg.model.optimizer, aim.get("optimizer")):
            if optimizer is not None and optimizer.get("lr") is not None:
                optimizer.lr = float(optimizer.lr) * factor
        cfg.lr_scaling.global_batch_size = global_batch
        cfg.lr_scaling.factor = factor
    return factor
