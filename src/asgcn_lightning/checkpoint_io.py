"""Checkpoints that are never half-written: save to a temporary file, fsync, then rename."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from asgcn_lightning.atomic import orphans


class AtomicCheckpointIO(TorchCheckpointIO):
    """A killed process leaves either the previous checkpoint or the new one, never a torn file.

    The partial file a killed save leaves behind is removed by the next successful save of that
    checkpoint (when the process that wrote it no longer exists), so resumed runs do not collect them.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        for leftover in orphans(path.parent, f".{path.name}.tmp-"):
            leftover.unlink(missing_ok=True)

