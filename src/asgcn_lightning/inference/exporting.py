"""Writing a loaded model as ONNX or TorchScript, and running the ONNX file with onnxruntime.

The network is exported in evaluation mode, so an AS-GCN infers its A-links deterministically
(the most probable link type, no Gumbel sampling) and the exported model maps skeletons
``(N, C, T, V, M)`` to logits ``(N, classes)`` exactly as its ``forward`` does. ``T``, ``V`` and
``M`` are fixed to what the evaluation transforms produce (a fixed-length window), which is also
what lets tracing follow the network's shape-dependent code paths.

ONNX goes through PyTorch's TorchScript-based exporter (fast, and it needs only the ``onnx``
package) and keeps the batch size ``N`` free. TorchScript is a trace of the network's
``torch.export`` graph and takes one sample per call (``N = 1``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asgcn_lightning.data.store import META_FILE, SkeletonStore
from asgcn_lightning.errors import UserError
from asgcn_lightning.inference.model import LoadedModel

log = logging.getLogger(__name__)
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT_NAME, OUTPUT_NAME = "skeletons", "logits"


def default_path(model: LoadedModel, fmt: str) -> Path:
    """``<checkpoint>.onnx`` / ``<checkpoint>.torchscript.pt`` next to the checkpoint."""
    return model.ckpt_path.with_suffix(FORMATS[fmt])


def example_batch(model: LoadedModel, size: int = 4) -> torch.Tensor:
    """Model inputs ``(size, C, T, V, M)``: the first samples of the model's data where they are, else random ones."""
    store_dir = Path(model.card.store_dir)
    if (store_dir / META_FILE).is_file():
        store = SkeletonStore(store_dir)
        sequences = [store.sequence(i) for i in range(min(size, len(store)))]
    else:
        rng = np.random.default_rng(0)
        sequences = [rng.normal(0, 0.3, (model.card.window or 64, model.num_person, model.layout.num_joints,
                                         model.in_channels)).astype(np.float32) for _ in range(size)]
    return torch.from_numpy(np.stack([model.model_input(s) for s in sequences]))


def export_model(model: LoadedModel, fmt: str, path: str | Path | None = None,
                 example: torch.Tensor | None = None) -> Path:
    """Write the network in ``fmt`` (``onnx`` or ``torchscript``) and return the file."""
    if fmt not in FORMATS:
        raise UserError(f"format={fmt!r}: choose one of {sorted(FORMATS)}")
    path = Path(path) if path else default_path(model, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example_batch(model) if example is None else example
    network = model.network.eval()
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


def onnx_session(model: LoadedModel, onnx_path: str | Path | None = None) -> Any:
    """A session on the model's ONNX export, exporting it first when missing or older than the checkpoint."""
    path = Path(onnx_path) if onnx_path else default_path(model, "onnx")
    if not path.is_file() or path.stat().st_mtime < model.ckpt_path.stat().st_mtime:
        if onnx_path:
            raise UserError(f"{path}: no ONNX model here, or it is older than {model.ckpt_path}; export it "
                            f"with python -m asgcn_lightning.export ckpt_path={model.ckpt_path}")
        log.info("exporting %s to ONNX for the onnx backend", model.ckpt_path)
        export_model(model, "onnx", path)
    return onnx_runtime(path)


def exported_logits(path: str | Path, fmt: str, batch: torch.Tensor) -> np.ndarray:
    """Logits of an exported model on ``batch``: onnxruntime for ONNX, ``torch.jit.load`` for TorchScript."""
    if fmt == "onnx":
        session = onnx_runtime(path)
        return session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    model = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return torch.cat([model(batch[i:i + 1]) for i in range(len(batch))]).numpy()
