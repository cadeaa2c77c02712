"""Learning-rate schedules with linear warm-up, as picklable callables for ``LambdaLR``.

They are objects rather than closures so that ``LambdaLR.state_dict`` stores them in checkpoints
and a resumed run continues on exactly the same curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupMultiStep:
    """Linear warm-up over ``warmup_epochs``, then ×``gamma`` at each milestone epoch."""

    def __init__(self, milestones: Sequence[int] = (50, 70, 90), gamma: float = 0.1, warmup_epochs: int = 0) -> None:
        self.milestones, self.gamma, self.warmup_epochs = sorted(milestones), gamma, warmup_epochs

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        return self.gamma ** sum(epoch >= m for m in self.milestones)


class WarmupCosine:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to ``min_factor`` at ``max_epochs``."""

    def __init__(self, max_epochs: int = 100, warmup_epochs: int = 0, min_factor: float = 0.0) -> None:
        self.max_epochs, self.warmup_epochs, self.min_factor = max_epochs, warmup_epochs, min_factor

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        span = max(1, self.max_epochs - self.warmup_epochs)
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_schedule(optimizer: Optimizer, schedule: WarmupMultiStep | WarmupCosine) -> LambdaLR:
    """A per-epoch ``LambdaLR`` following ``schedule``; Hydra configs build it with ``_partial_``."""
    return LambdaLR(optimizer, schedule)
