"""Random states in every checkpoint, so ``ckpt_path=...`` continues with the numbers a run would have drawn."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RandomStateCheckpoint(L.Callback):
    """Save the global torch (CPU and CUDA), NumPy and Python random states with each checkpoint.

    Lightning restores weights, optimisers, schedulers and loop counters but not these states, so a
    resumed run would shuffle, augment and sample (Gumbel noise of the A-links) differently from
    the run it continues. They are restored before the first batch is drawn (Lightning loads
    callback states before it builds the data iterators), which makes a resume from an end-of-epoch
    checkpoint exact; docs/scaling.md says what a mid-epoch resume keeps. Rank 0's states are saved
    and every process gets them back: all ranks start from one seed and draw alike.
    """

    def state_dict(self) -> dict[str, Any]:
        return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        np.random.set_state(state_dict["numpy"])
        random.setstate(state_dict["python"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
