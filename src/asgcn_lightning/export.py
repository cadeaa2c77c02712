"""Export the recognition network: ``python -m asgcn_lightning.export ckpt_path=<ckpt> format=onnx|torchscript``.

The network is exported in evaluation mode, so an AS-GCN infers its A-links deterministically
(the most probable link type, no Gumbel sampling) and the exported model maps skeletons
``(N, C, T, V, M)`` to logits ``(N, classes)`` exactly as :meth:`forward` does. ``T``, ``V`` and
``M`` are fixed to what the run's evaluation transforms produce (a fixed-length window), which is
also what lets tracing follow the network's shape-dependent code paths.

ONNX goes through PyTorch's TorchScript-based exporter (fast, and it needs only the ``onnx``
package) and keeps the batch size ``N`` free. TorchScript is a trace of the network's
``torch.export`` graph and takes one sample per call (``N = 1``). After writing, the exported
model is run (onnxruntime for ONNX) on real samples of the run's data set, or random ones without
it, and its logits compared with eager PyTorch: an export that does not match is an error.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console

from asgcn_lightning.apps.components import apply_process_settings
from asgcn_lightning.apps.predict import Recogniser, load_recogniser
from asgcn_lightning.config import config_dir
from asgcn_lightning.data.store import META_FILE, SkeletonStore
from asgcn_lightning.errors import UserError, exit_on_user_error

log = logging.getLogger(__name__)
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT_NAME, OUTPUT_NAME = "skeletons", "logits"


def default_path(recogniser: Recogniser, fmt: str) -> Path:
    """``<checkpoint>.onnx`` / ``<checkpoint>.torchscript.pt`` next to the checkpoint."""
    return recogniser.ckpt_path.with_suffix(FORMATS[fmt])


def example_batch(recogniser: Recogniser, size: int = 4) -> torch.Tensor:
    """Model inputs ``(size, C, T, V, M)``: the first samples of the run's store, else random skeletons."""
    store_dir = Path(recogniser.cfg.dataset.store_dir)
    if (store_dir / META_FILE).is_file():
        store = SkeletonStore(store_dir)
        sequences = [store.sequence(i) for i in range(min(size, len(store)))]
    else:
        spec = recogniser.spec
        rng = np.random.default_rng(0)
        sequences = [rng.normal(0, 0.3, (64, spec.num_person, spec.layout.num_joints, spec.in_channels))
                     .astype(np.float32) for _ in range(size)]
    return torch.from_numpy(np.stack([recogniser.model_input(s) for s in sequences]))


def export_model(recogniser: Recogniser, fmt: str, path: str | Path | None = None,
                 example: torch.Tensor | None = None) -> Path:
    """Write the network in ``fmt`` (``onnx`` or ``torchscript``) and return the file."""
    if fmt not in FORMATS:
        raise UserError(f"format={fmt!r}: choose one of {sorted(FORMATS)}")
    path = Path(path) if path else default_path(recogniser, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example_batch(recogniser) if example is None else example
    network = recogniser.network.eval()
    partial = path.with_name(f".{path.name}.partial")  # a killed export never leaves a file that looks complete
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer warns about branches on tensor shapes: T, V and M are fixed by design (module docstring)
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(network, (example,), str(partial), dynamo=False, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        else:
            # TorchScript cannot hold Python autograd Functions (the graph blocks use one); torch.export
            # first turns the network into plain ATen operations, which the tracer then records with
            # the sizes of one sample: the TorchScript model classifies one sample per call
            program = torch.export.export(network, (example[:1],))
            torch.jit.save(torch.jit.trace(program.module(), example[:1], check_trace=False), str(partial))
    partial.replace(path)
    return path


def onnx_runtime(path: str | Path) -> Any:
    """An onnxruntime CPU session of ``path`` using as many threads as PyTorch does."""
    try:
        import onnxruntime
    except ImportError as error:
        raise UserError(f"the ONNX backend needs onnxruntime ({error}); pip install -e '.[dev]'") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable models
        raise UserError(f"{path}: not a loadable ONNX model ({error})") from None


def onnx_session(recogniser: Recogniser, onnx_path: str | Path | None = None) -> Any:
    """A session on the recogniser's ONNX export, exporting it first when missing or older than the checkpoint."""
    path = Path(onnx_path) if onnx_path else default_path(recogniser, "onnx")
    if not path.is_file() or path.stat().st_mtime < recogniser.ckpt_path.stat().st_mtime:
        if onnx_path:
            raise UserError(f"{path}: no ONNX model here, or it is older than {recogniser.ckpt_path}; export it "
                            f"with python -m asgcn_lightning.export ckpt_path={recogniser.ckpt_path}")
        log.info("exporting %s to ONNX for the onnx backend", recogniser.ckpt_path)
        export_model(recogniser, "onnx", path)
    return onnx_runtime(path)


def exported_logits(path: str | Path, fmt: str, batch: torch.Tensor) -> np.ndarray:
    """Logits of an exported model on ``batch``: onnxruntime for ONNX, ``torch.jit.load`` for TorchScript."""
    if fmt == "onnx":
        session = onnx_runtime(path)
        return session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    model = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return torch.cat([model(batch[i:i + 1]) for i in range(len(batch))]).numpy()


def parity(recogniser: Recogniser, path: str | Path, fmt: str, batch: torch.Tensor) -> float:
    """Largest absolute difference between the exported model's and eager PyTorch's logits on ``batch``."""
    with torch.no_grad():
        eager = recogniser.network.eval()(batch).numpy()
    return float(np.abs(exported_logits(path, fmt, batch) - eager).max())


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export, then check parity on a batch of another size than the one traced (the batch axis is free)."""
    apply_process_settings(cfg)
    fmt = str(cfg.get("format", "onnx"))
    recogniser = load_recogniser(cfg)
    batch = example_batch(recogniser, 5)
    path = export_model(recogniser, fmt, cfg.get("export_path"), batch[:2])
    difference = parity(recogniser, path, fmt, batch)
    tolerance = float(cfg.get("parity_tolerance", 1e-4))
    if difference > tolerance:
        raise UserError(f"{path}: the exported model's logits differ from PyTorch's by {difference:.3g} "
                        f"(tolerance {tolerance:g}); the export is not usable")
    Console().print(f"{fmt} model → {path} (max |logit difference| vs PyTorch on {len(batch)} samples: "
                    f"{difference:.2e})")
    return {"path": str(path), "format": fmt, "max_abs_difference": difference}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
