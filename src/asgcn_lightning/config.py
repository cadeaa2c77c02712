"""The Hydra configuration tree: where it lives, composing it outside a Hydra run, typed option groups,
and the ``${checkpoint_run:...}`` resolver that names an evaluation's folder after the checkpoint's run.

Importing this module registers the typed schemas (:mod:`asgcn_lightning.schemas`) that the YAML
files extend; every entry point imports it before Hydra composes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from asgcn_lightning.errors import UserError
from asgcn_lightning.schemas import register_schemas

register_schemas()

Settings = TypeVar("Settings")


def config_dir() -> str:
    """The ``configs/`` folder: ``$ASGCN_CONFIG_DIR``, else the one at the repository root."""
    candidates = [os.environ.get("ASGCN_CONFIG_DIR"), Path(__file__).resolve().parents[2] / "configs",
                  Path.cwd() / "configs"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.yaml").is_file():
            return str(Path(candidate).resolve())
    raise UserError("cannot find the configs/ folder; run from the repository root or set ASGCN_CONFIG_DIR")


def compose_config(config_name: str, overrides: Sequence[str] = (), output_dir: str | Path | None = None,
                   root_dir: str | Path | None = None) -> DictConfig:
    """The config ``python <config_name>.py <overrides>`` would run with, for code outside a Hydra run.

    Paths are relative to ``root_dir`` (default: the folder holding ``configs/``) and outputs go to
    ``output_dir``; the ``${hydra:...}`` values resolve as in a run, and the ``hydra`` node is
    dropped, as a task function never sees it either.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    configs = Path(config_dir())
    root = Path(root_dir) if root_dir else configs.parent
    output = Path(output_dir) if output_dir else root / "logs" / config_name
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name, overrides=[f"paths.root_dir={root}", f"paths.output_dir={output}", *overrides],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
def sets_on_command_line(key: str) -> bool:
    """Whether this command's own overrides set ``key`` (False outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return any(override.split("=", 1)[0].lstrip("+~") == key for override in HydraConfig.get().overrides.task)


def typed(schema: type[Settings], node: Any, name: str) -> Settings:
    """``node`` checked against the dataclass ``schema`` (unknown keys, wrong types): one line naming ``name``."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node or {}))
    except OmegaConfBaseException as error:
        message = str(error).splitlines()[0]
        raise UserError(f"{name}: {message}") from None


def checkpoint_run(ckpt_path: Any) -> str:
    """The name of the training run that wrote ``ckpt_path`` (the first of a list), for an evaluation's folder.

    Read from the checkpoint's model card; a checkpoint without one is named by its file.
    """
    if OmegaConf.is_list(ckpt_path) or isinstance(ckpt_path, list | tuple):
        ckpt_path = ckpt_path[0] if len(ckpt_path) else None
    if not ckpt_path:
        return "no_checkpoint"
    path = Path(str(ckpt_path))
    try:
        import torch

        # memory-mapped: only the small model card is read, not the weights the app loads afterwards
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        name = (checkpoint.get("model_card") or {}).get("run_name")
    except Exception:  # a missing or foreign file: the app itself says what is wrong with it
        name = None
    return str(name or path.stem)


def store_named_after(path: Any, prefix: str) -> str:
    """``<prefix>_<file stem>`` (``prefix`` alone without a file): one store per source file, none shared."""
    return f"{prefix}_{Path(str(path)).stem}" if path else prefix


if not OmegaConf.has_resolver("store_named_after"):
    OmegaConf.register_new_resolver("store_named_after", store_named_after)
if not OmegaConf.has_resolver("checkpoint_run"):
    OmegaConf.register_new_resolver("checkpoint_run", checkpoint_run)
