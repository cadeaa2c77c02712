"""The model card: what a checkpoint carries so that it can be used without the run that wrote it.

A network's weights alone do not say how to feed it: the joint layout and its order, the class
names, the input channels and stream, the persons, the evaluation transforms (window length,
centring) and the network's own settings. The card holds all of them as plain data inside the
checkpoint (``checkpoint["model_card"]``), so a checkpoint copied alone to another machine still
predicts, exports and evaluates. The data module's config is kept too, so the evaluation apps can
open the data the model was trained on, where they still are (or where the user points them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.layouts import Layout, make_layout

CARD_KEY = "model_card"


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild a trained network and to feed it as its evaluation did."""

    layout: dict[str, Any]                # Layout.to_spec() of the joints the network reads
    class_names: list[str]                # in output order
    in_channels: int
    num_person: int
    stream: str                           # joint | bone | joint_motion | bone_motion (after the transforms)
    eval_transforms: list[dict[str, Any]]  # Hydra configs of the evaluation transforms, the stream not included
    window: int | None                    # frames per sample the evaluation transforms produce, where known
    model: dict[str, Any]                 # the model config (network + module settings), as trained
    data: dict[str, Any]                  # the data module's config: where the data were and how they were split
    dataset_name: str
    store_dir: str
    run_name: str | None = None           # the training run's experiment name: evaluations name their folders so
    spatial_channels: int | None = None   # leading input channels that are coordinates (2: x, y, confidence); None: all

    @property
    def skeleton(self) -> Layout:
        return make_layout(**self.layout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, content: dict[str, Any], where: str | Path) -> ModelCard:
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is not None}
        missing = sorted(required - set(content))
        if missing:
            raise UserError(f"{where}: its model card lacks {missing}; the checkpoint was written by another version")
        return cls(**{key: value for key, value in content.items() if key in names})


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The checkpoint's content (on the CPU), or one clear line when the file is missing or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a torn or foreign file: report it, do not dump a traceback
        raise UserError(f"{what} {path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict) or "state_dict" not in content:
        raise UserError(f"{what} {path}: not a checkpoint of this project (no state_dict)")
    return content


def card_of(checkpoint: dict[str, Any], path: str | Path) -> ModelCard:
    """The checkpoint's model card; checkpoints saved before cards existed are refused in one line."""
    content = checkpoint.get(CARD_KEY)
    if content is None:
        raise UserError(f"{path}: this checkpoint carries no model card (written by an older version); train it "
                        "again, or fine-tune from it with transfer=finetune, to get a self-describing checkpoint")
    return ModelCard.from_dict(content, path)
