"""Checkpoints that are never half-written, and read back with the one loader every app uses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from asgcn_lightning.atomic import atomic_file
from asgcn_lightning.errors import UserError


class AtomicCheckpointIO(TorchCheckpointIO):
    """A killed process leaves either the previous checkpoint or the new one, never a torn file.

    The partial file a killed save leaves behind is removed by the next successful save of that
    checkpoint (when the process that wrote it no longer exists), so resumed runs do not collect them.
    A checkpoint that cannot be loaded (``train.py ckpt_path=...``: missing, torn, not a PyTorch file) is
    one line naming the path and the cause, worded as :func:`~asgcn_lightning.models.card.read_checkpoint`
    words it for every app.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_file(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: str | Path, map_location: Callable | None = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if not Path(path).is_file():
            raise UserError(f"checkpoint {path}: no such file")
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except Exception as error:  # a torn or foreign file can fail in many ways: say which, in one line
            cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(f"checkpoint {path}: not a readable checkpoint ({type(error).__name__}: {cause})") from None
