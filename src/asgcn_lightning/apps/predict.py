"""Classify skeleton sequences with a trained checkpoint: ``python predict.py ckpt_path=<ckpt> input=<what>``.

``input`` is a sample of the model's prepared store (``store:<index>`` or ``store:<sample name>``), an
NTU ``.skeleton`` file, a folder of OpenPose per-frame JSON (every video in it is classified) or a
video file (poses from the built-in BlazePose backend); see :mod:`asgcn_lightning.inference.inputs`.
The checkpoint supplies the joint layout, the class names and the evaluation transforms, so a sample
is preprocessed exactly as in evaluation. With ``localise.enabled=true`` long inputs are also cut
into sliding windows and turned into a timeline of action segments.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from asgcn_lightning.apps.components import apply_process_settings
from asgcn_lightning.apps.localise import LocaliseSettings, localise_input
from asgcn_lightning.config import compose_config, config_dir, typed
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.inference import LoadedModel, load_model
from asgcn_lightning.inference.exporting import onnx_session
from asgcn_lightning.inference.inputs import PoseSettings, SkeletonInput, read_inputs

__all__ = ["compose_config", "load_recogniser", "predict"]  # compose_config: bench.py still imports it from here


def load_recogniser(cfg: DictConfig, backend: str = "torch", onnx_path: str | Path | None = None) -> LoadedModel:
    """The model of a predict/demo config (``ckpt_path``), on PyTorch or ONNX (``backend``)."""
    if not cfg.get("ckpt_path"):
        raise UserError("give the trained model: ckpt_path=<run>/checkpoints/last.ckpt")
    if backend not in ("torch", "onnx"):
        raise UserError(f"backend={backend!r}: choose torch or onnx")
    model = load_model(cfg.ckpt_path)
    if backend == "onnx":  # the ONNX export next to the checkpoint, exported when missing or older than it
        model.session = onnx_session(model, onnx_path)
    return model


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` most probable classes, most probable first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"rank": rank, "index": int(i), "class": class_names[i], "probability": float(probabilities[i])}
            for rank, i in enumerate(order, start=1)]


def classify(model: LoadedModel, item: SkeletonInput, k: int) -> dict[str, Any]:
    """The whole sequence as one sample: its top-``k`` classes."""
    probabilities = model.probabilities([item.window()])[0]
    result: dict[str, Any] = {"input": item.source, "name": item.name, "frames": len(item.sequence),
                              "fps": item.fps, "top_k": top_k(probabilities, model.class_names, k)}
    if item.label is not None:
        result["true_class"] = item.label
    return result


def print_prediction(result: dict[str, Any], console: Console) -> None:
    truth = f", true class: {result['true_class']}" if "true_class" in result else ""
    table = Table(title=result["name"], caption=f"{result['frames']} frames{truth}")
    for column in ("rank", "class", "probability"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in result["top_k"]:
        table.add_row(str(row["rank"]), row["class"], f"{row['probability']:.3f}")
    console.print(table)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Classify (and optionally localise actions in) every sequence ``cfg.input`` names; writes JSON."""
    if OmegaConf.is_missing(cfg, "input") or cfg.input in (None, ""):
        raise UserError("give what to classify: input=store:<index> | <file.skeleton> | <OpenPose folder> | <video>")
    apply_process_settings(cfg)
    pose = typed(PoseSettings, cfg.get("pose"), "pose")
    localise = typed(LocaliseSettings, cfg.get("localise"), "localise")
    model = load_recogniser(cfg, cfg.get("backend", "torch"), cfg.get("onnx_path"))
    console = Console()
    results = []
    output = Path(cfg.output)
    for item in read_inputs(cfg.input, model, pose, float(cfg.get("fps") or 0) or None, cfg.get("store_dir")):
        result = classify(model, item, int(cfg.top_k))
        print_prediction(result, console)
        if localise.enabled:
            result["timeline"] = localise_input(model, item, localise, output, console)
        results.append(result)
    report = {"checkpoint": str(model.ckpt_path), "layout": model.layout.name,
              "class_names": model.class_names, "predictions": results}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    console.print(f"predictions → {output}", soft_wrap=True)
    return report


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
