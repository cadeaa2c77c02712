"""The one way to load a trained model: :func:`load_model` reads a checkpoint and its model card.

Every app (eval, predict, demo, export, the evaluation apps, the pictures) goes through it, so a
sample is always preprocessed as evaluation did and a checkpoint copied alone anywhere still works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from asgcn_lightning.data.datamodule import SkeletonDataModule
from asgcn_lightning.data.transforms import Compose, Stream
from asgcn_lightning.errors import UserError
from asgcn_lightning.models.card import ModelCard, card_of, read_checkpoint
from asgcn_lightning.models.module import ActionRecognitionModule
from asgcn_lightning.skeleton.layouts import Layout


@dataclass
class LoadedModel:
    """A trained network in evaluation mode with everything needed to feed it raw sequences."""

    module: ActionRecognitionModule
    card: ModelCard
    layout: Layout
    transform: Compose   # the evaluation transforms, then the input stream
    ckpt_path: Path
    session: Any = None  # an onnxruntime.InferenceSession when the ONNX backend is selected

    @property
    def network(self) -> nn.Module:
        return self.module.network

    @property
    def class_names(self) -> list[str]:
        return list(self.card.class_names)

    @property
    def num_class(self) -> int:
        return len(self.card.class_names)

    @property
    def num_person(self) -> int:
        return self.card.num_person

    @property
    def in_channels(self) -> int:
        return self.card.in_channels

    @property
    def stream(self) -> str:
        return self.card.stream

    def model_input(self, sequence: np.ndarray) -> np.ndarray:
        """One ``(T, M, V, C)`` sequence → the network's ``(C, T', V, M)`` input (evaluation transforms)."""
        transformed = self.transform(np.array(sequence, dtype=np.float32), self.layout, np.random.default_rng(0))
        return np.ascontiguousarray(transformed.transpose(3, 0, 2, 1))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, classes)`` of model inputs ``(N, C, T, V, M)``, from PyTorch or onnxruntime."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.session is not None:
            return self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]
        with torch.inference_mode():
            return self.network(torch.from_numpy(batch)).numpy()

    def probabilities(self, sequences: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``(N, classes)`` of raw ``(T, M, V, C)`` sequences."""
        out = []
        for first in range(0, len(sequences), batch_size):
            batch = np.stack([self.model_input(s) for s in sequences[first:first + batch_size]])
            logits = np.asarray(self.logits(batch), dtype=np.float32)
            out.append(torch.softmax(torch.from_numpy(logits), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_class), np.float32)

    def datamodule(self, store_dir: str | Path | None = None, **overrides: Any) -> SkeletonDataModule:
        """The data the model was trained on (its card's data module), prepared or checked, with its stream.

        ``store_dir`` points at the prepared data where they are now (a checkpoint moved to another
        machine); ``overrides`` replace other arguments of the data module (e.g. ``classes``).
        """
        settings = dict(self.card.data)
        settings["layout"] = self.card.layout  # the skeleton the network reads, a variant of the stored one
        settings["given_settings"] = []  # the store's preparation settings apply, whatever the run's config said
        settings.update(overrides)
        if store_dir is not None:
            settings["store_dir"] = str(store_dir)
        datamodule: SkeletonDataModule = instantiate(settings, _recursive_=True)  # its stream included
        datamodule.prepare_data()
        return datamodule


def check_weights(module: nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Say exactly which keys of ``state`` do not fit ``module``, in one line, instead of a traceback."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if not (missing or unexpected or mismatched):
        return

    def head(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    parts = [f"missing {head(missing)}" if missing else "",
             f"unexpected {head(unexpected)}" if unexpected else "",
             "shape differs for " + head([f"{k} {tuple(state[k].shape)}→{tuple(own[k].shape)}"
                                          for k in mismatched]) if mismatched else ""]
    raise UserError(f"{where} does not match the model: " + "; ".join(p for p in parts if p))


def load_weights(module: nn.Module, ckpt_path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's weights into ``module``, or say exactly which keys do not fit; returns the checkpoint."""
    checkpoint = read_checkpoint(ckpt_path)
    check_weights(module, checkpoint["state_dict"], ckpt_path)
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint


def build_from_card(card: ModelCard) -> ActionRecognitionModule:
    """The module and network a card describes, with fresh weights."""
    layout = card.skeleton
    network = instantiate(card.model["network"], _partial_=True)(
        num_class=len(card.class_names), layout=layout, in_channels=card.in_channels, num_person=card.num_person,
        spatial_channels=card.spatial_channels)
    settings = {key: value for key, value in card.model.items() if key != "network"}
    module = instantiate(settings, _partial_=True)(network=network, class_names=card.class_names)
    module.model_card = card.to_dict()
    return module


def load_model(ckpt_path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The trained model of ``ckpt_path`` in evaluation mode, with its layout, classes and evaluation transforms.

    Its logits come from PyTorch; :func:`asgcn_lightning.inference.exporting.onnx_session` gives it an
    onnxruntime session on its ONNX export instead.
    """
    ckpt_path = Path(ckpt_path)
    checkpoint = read_checkpoint(ckpt_path)
    card = card_of(checkpoint, ckpt_path)
    module = build_from_card(card)
    check_weights(module, checkpoint["state_dict"], ckpt_path)
    module.load_state_dict(checkpoint["state_dict"])
    module.to(device).eval()
    transforms = [instantiate(node) for node in card.eval_transforms]
    if card.stream != "joint":
        transforms.append(Stream(card.stream))
    return LoadedModel(module, card, card.skeleton, Compose(transforms, card.spatial_channels), ckpt_path)
