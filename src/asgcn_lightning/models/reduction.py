"""Losses and metrics as means over samples, so that the shards of a batch add up to the whole batch.

The training step weighs each process's loss by its share of the global batch's samples, and
evaluation weighs each batch's numbers by its sample count. Both are exact only for a mean over
samples. A mean over the bodies or joints present in a batch would weigh a sample by how many
of them it has relative to the rest of *its* batch, which changes when the batch is split over
processes; each sample's own mean over its present entries, averaged over samples, does not.
"""

from __future__ import annotations

import torch


def mean_per_sample(values: torch.Tensor, present: torch.Tensor, samples: int) -> torch.Tensor:
    """The mean over ``samples`` of each sample's mean of ``values`` over its ``present`` entries.

    ``values`` and ``present`` (0/1) share a shape whose first dimension holds the rows of each
    sample adjacent (``samples × persons`` bodies). A sample with no present entry counts as 0.
    """
    total = (values * present).reshape(samples, -1).sum(dim=1)
    count = present.reshape(samples, -1).sum(dim=1).clamp(min=1.0)
    return (total / count).mean()
