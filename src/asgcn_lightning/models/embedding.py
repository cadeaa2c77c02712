"""Embedding mode of AS-GCN for one-shot and few-shot recognition (after Sabater et al., CVPRW 2021).

A novel action is recognised by comparing the embedding of a query with those of a few exemplars,
so the network has to map sequences to a space where cosine similarity means "same action",
whatever the performer's size, position or the camera distance:

* :class:`MotionDescriptor` normalises each pose (relative to the layout's centre joint, scaled by
  the sample's mean joint distance from it) and appends the joints' frame-to-frame motion, taken
  before centring so whole-body motion (a jump, a step) is kept: ``C`` input channels become ``2C``;
* an :class:`~asgcn_lightning.models.asgcn.ASGCN` backbone on the descriptor ends in a linear
  projection to ``embedding_dim`` (its own classifier layer, sized ``embedding_dim``), and the
  embedding is that projection, L2-normalised;
* training uses a cosine classifier on the auxiliary classes (normalised-softmax, "NormFace"):
  logits are ``scale · cos(embedding, class weight)``. Cross-entropy on it pulls samples towards
  their class direction and away from the others on the unit sphere — the geometry in which
  novel classes are then compared — with no pair or triplet mining; the network keeps the
  project's contract (``forward`` → logits, ``head.fc``), so ``train.py`` trains it unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.models.network import NetworkOutput
from asgcn_lightning.skeleton.layouts import Layout, make_layout


class MotionDescriptor(nn.Module):
    """``(N, C, T, V, M)`` → ``(N, 2C, T, V, M)``: normalised pose, then scaled motion.

    Absent joints and persons (exactly zero) stay zero. The centre is the layout's centre joint, or
    the mean of the observed joints in frames where the centre joint is missing.
    """

    def __init__(self, centre: int) -> None:
        super().__init__()
        self.centre = centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        present = (x.abs().sum(dim=1, keepdim=True) > 0).to(x.dtype)
        count = present.sum(dim=3, keepdim=True)
        mean = (x * present).sum(dim=3, keepdim=True) / count.clamp(min=1.0)
        centre = torch.where(present[:, :, :, self.centre:self.centre + 1] > 0,
                             x[:, :, :, self.centre:self.centre + 1], mean)
        relative = (x - centre) * present
        scale = relative.norm(dim=1, keepdim=True).sum(dim=(2, 3, 4), keepdim=True) \
            / present.sum(dim=(2, 3, 4), keepdim=True).clamp(min=1.0)
        scale = scale.clamp(min=1e-6)
        both = present[:, :, 1:] * present[:, :, :-1]
        motion = F.pad((x[:, :, 1:] - x[:, :, :-1]) * both, (0, 0, 0, 0, 0, 1))
        return torch.cat([relative, motion], dim=1) / scale


class CosineClassifier(nn.Module):
    """Logits ``scale · cos(embedding, w_k)``; ``fc`` holds the class directions (the contract's ``head.fc``)."""

    def __init__(self, embedding_dim: int, num_class: int, scale: float) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_dim, num_class, bias=False)
        self.scale = scale

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(embedding, dim=1), F.normalize(self.fc.weight, dim=1))


class EmbeddingNetwork(nn.Module):
    """AS-GCN in embedding mode: descriptor → backbone → L2-normalised embedding → cosine classifier.

    ``backbone_kwargs`` are :class:`ASGCN`'s (``channels``, ``use_alinks`` ...), so an experiment turns
    any model config into embedding mode by setting ``model.network._target_`` to this class and
    adding ``embedding_dim`` / ``cosine_scale``. The A-link and prediction side tasks run on the
    descriptor and pass through unchanged.
    """

    def __init__(self, num_class: int, layout: Layout | dict[str, Any], in_channels: int = 3, num_person: int = 2,
                 embedding_dim: int = 128, cosine_scale: float = 16.0, **backbone_kwargs: Any) -> None:
        super().__init__()
        layout = layout if isinstance(layout, Layout) else make_layout(**layout)
        self.in_channels, self.num_person = in_channels, num_person
        self.descriptor = MotionDescriptor(layout.centre)
        self.backbone = ASGCN(num_class=embedding_dim, layout=layout, in_channels=2 * in_channels,
                              num_person=num_person, **backbone_kwargs)
        self.head = CosineClassifier(embedding_dim, num_class, cosine_scale)

    # the module's view of the A-link stage is the backbone's
    @property
    def aim(self) -> nn.Module | None:
        return self.backbone.aim

    @property
    def detach_alinks(self) -> bool:
        return self.backbone.detach_alinks

    @detach_alinks.setter
    def detach_alinks(self, value: bool) -> None:
        self.backbone.detach_alinks = value

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings ``(N, embedding_dim)`` of inputs ``(N, C, T, V, M)``."""
        return F.normalize(self.backbone(self.descriptor(x)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def forward_train(self, x: torch.Tensor) -> NetworkOutput:
        out = self.backbone.forward_train(self.descriptor(x))
        return NetworkOutput(logits=self.head(out.logits), losses=out.losses, metrics=out.metrics)

    def aim_loss(self, x: torch.Tensor) -> NetworkOutput:
        return self.backbone.aim_loss(self.descriptor(x))


@torch.no_grad()
def embeddings(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """L2-normalised embeddings of any network of the contract: its own ``embed``, else the classifier's input.

    For a plain classifier that is the pooled backbone feature ``head.fc`` sees, so one-shot
    evaluation also works on checkpoints that were not trained in embedding mode.
    """
    if hasattr(network, "embed"):
        return network.embed(x)
    captured: list[torch.Tensor] = []
    handle = network.head.fc.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        network(x)
    finally:
        handle.remove()
    return F.normalize(captured[0], dim=1)
