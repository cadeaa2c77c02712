"""Checkpoints that are never half-written: save to a temporary file, fsync, then rename."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from asgcn_lightning.atomic import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """A killed process leaves either the previous checkpoint or the new one, never a torn file.

    The partial file a killed save leaves behind is removed by the next successful save of that
    checkpoint (when the process that wrote it no longer exists), so resumed runs do not collect them.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_file(path) as tmp:
            torch.save(checkpoint, tmp)

