"""Typed schemas of the config nodes whose keys and choices are fixed: Hydra checks them while composing.

Registered in Hydra's ConfigStore under the ``schema`` group; a YAML file extends one through its
defaults list (``- /schema/transfer@_here_``), so an unknown key or a value outside an enum is
refused with the option's full name before anything runs. Choices are ``str`` enums: they compare
equal to their plain names, which is what the code and the saved run configs use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class TransferMode(str, Enum):
    """What a transfer takes from its source checkpoint (docs/transfer.md)."""

    feature_extraction = "feature_extraction"
    finetune = "finetune"
    architecture_only = "architecture_only"


class AimMode(str, Enum):
    """What the A-link inference module does in the main stage (models/module.py)."""

    frozen = "frozen"
    finetune = "finetune"
    separate = "separate"


class LrRule(str, Enum):
    """How the learning rates follow the global batch (docs/scaling.md)."""

    none = "none"
    linear = "linear"
    sqrt = "sqrt"


@dataclass
class TransferConfig:
    """``transfer=<mode>``: start the network from another run's checkpoint (``configs/transfer/``)."""

    mode: TransferMode = MISSING
    checkpoint: str = MISSING
    freeze: list[str] = field(default_factory=list)  # finetune only: network modules that do not train
    backbone_lr_scale: float = 1.0
    joint_map: Any = "name"  # name | index | {target joint: source joint}
    source_layout: Any | None = None  # {name, joints, edges, centre}
    strict: bool = True
    aim_pretrain_epochs: int | None = None


@dataclass
class AimConfig:
    """``model.aim``: the AIM pretraining stage and the AIM's part in the main stage."""

    pretrain_epochs: int = 0
    mode: AimMode = AimMode.frozen
    optimizer: Any | None = None
    scheduler: Any | None = None


@dataclass
class LrScalingConfig:
    """``lr_scaling``: learning rates for the global batch; ``global_batch_size``/``factor`` are filled in."""

    rule: LrRule = LrRule.none
    base_batch_size: int = MISSING
    global_batch_size: int | None = None
    factor: float | None = None


@dataclass
class LossPolicy:
    """``losses``: how much a preparation may lose before it fails instead of writing the store (docs/bad_input.md).

    A preparation fails when more than ``max_skipped_share`` of its inputs (source files, videos)
    give no sample, or when every input of a class is skipped; ``accept`` keeps the store anyway.
    """

    max_skipped_share: float = 0.05
    accept: bool = False


@dataclass
class SplitConfig:
    """``split``: what every split has (``configs/split/``); the validation set is carved from the training side."""

    _target_: str = MISSING
    name: str = MISSING
    val_fraction: float = 0.1  # share of the training side that validates; 0: validate on the test set
    val_seed: int = 0  # draws the validation subjects or samples (the run seed)


@dataclass
class MetadataSplitConfig(SplitConfig):
    """``split=xsub|xview|xset|predefined``: the training side by subject, camera or setup."""

    _target_: str = "asgcn_lightning.data.splits.MetadataSplit"
    key: str = MISSING
    train_values: Any = None  # list of ints; Any: it is an interpolation of dataset.split_values


@dataclass
class RandomSplitConfig(SplitConfig):
    """``split=random``: a class-stratified random test set, fixed by its own seed."""

    _target_: str = "asgcn_lightning.data.splits.RandomSplit"
    test_fraction: float = 0.2
    seed: int = 0


SCHEMAS = {"transfer": TransferConfig, "aim": AimConfig, "lr_scaling": LrScalingConfig, "losses": LossPolicy,
           "metadata_split": MetadataSplitConfig, "random_split": RandomSplitConfig}


def register_schemas() -> None:
    """Store the schemas as ``schema/<name>``; called on import of :mod:`asgcn_lightning.config`."""
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(group="schema", name=name, node=schema)
