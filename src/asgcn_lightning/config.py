"""Where the Hydra configuration tree lives, and composing it outside a Hydra run.

Importing this module registers the typed schemas (:mod:`asgcn_lightning.schemas`) that the YAML
files extend; every entry point imports it before Hydra composes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asgcn_lightning.errors import UserError
from asgcn_lightning.schemas import register_schemas

if TYPE_CHECKING:
    from omegaconf import DictConfig

register_schemas()


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
    from omegaconf import open_dict

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
