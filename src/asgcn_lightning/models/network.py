"""The network contract between models and the LightningModule."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class NetworkOutput:
    """What a network returns in training and validation.

    ``losses`` are extra, already weighted terms added to the cross-entropy (e.g. the prediction
    head's L2); ``metrics`` are logged but not optimised (e.g. ``mpjpe``).
    """

    logits: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
