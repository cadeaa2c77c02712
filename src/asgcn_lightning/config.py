"""Where the Hydra configuration tree lives, for the entry points inside the package."""

from __future__ import annotations

import os
from pathlib import Path

from asgcn_lightning.errors import UserError


def config_dir() -> str:
    """The ``configs/`` folder: ``$ASGCN_CONFIG_DIR``, else the one at the repository root."""
    candidates = [os.environ.get("ASGCN_CONFIG_DIR"), Path(__file__).resolve().parents[2] / "configs",
                  Path.cwd() / "configs"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.yaml").is_file():
            return str(Path(candidate).resolve())
    raise UserError("cannot find the configs/ folder; run from the repository root or set ASGCN_CONFIG_DIR")
