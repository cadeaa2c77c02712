"""Export the recognition network: ``python -m asgcn_lightning.export ckpt_path=<ckpt> format=onnx|torchscript``.

How the network is written is :mod:`asgcn_lightning.inference.exporting`. After writing, the exported
model is run (onnxruntime for ONNX) on real samples of the model's data set, or random ones without
them, and its logits compared with eager PyTorch: an export that does not match is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console

from asgcn_lightning.apps.components import apply_process_settings
from asgcn_lightning.config import config_dir
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.inference import LoadedModel, load_model
from asgcn_lightning.inference.exporting import example_batch, export_model, exported_logits

__all__ = ["example_batch", "export", "export_model", "parity"]


def parity(model: LoadedModel, path: str | Path, fmt: str, batch: torch.Tensor) -> float:
    """Largest absolute difference between the exported model's and eager PyTorch's logits on ``batch``."""
    with torch.no_grad():
        eager = model.network.eval()(batch).numpy()
    return float(np.abs(exported_logits(path, fmt, batch) - eager).max())


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export, then check parity on a batch of another size than the one traced (the batch axis is free)."""
    apply_process_settings(cfg)
    if not cfg.get("ckpt_path"):
        raise UserError("give the trained model: ckpt_path=<run>/checkpoints/last.ckpt")
    fmt = str(cfg.get("format", "onnx"))
    model = load_model(cfg.ckpt_path)
    batch = example_batch(model, 5)
    path = export_model(model, fmt, cfg.get("export_path"), batch[:2])
    difference = parity(model, path, fmt, batch)
    tolerance = float(cfg.get("parity_tolerance", 1e-4))
    if difference > tolerance:
        raise UserError(f"{path}: the exported model's logits differ from PyTorch's by {difference:.3g} "
                        f"(tolerance {tolerance:g}); the export is not usable")
    Console().print(f"{fmt} model → {path} (max |logit difference| vs PyTorch on {len(batch)} samples: "
                    f"{difference:.2e})", soft_wrap=True)
    return {"path": str(path), "format": fmt, "max_abs_difference": difference}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
