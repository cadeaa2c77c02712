"""Random states in every checkpoint, so ``ckpt_path=...`` continues with the numbers a run would have drawn."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class RandomStateCheckpoint(L.Callback):
    """Save the global torch (CPU and CUDA), NumPy and Python random states of every process with each checkpoint.

    Lightning restores weights, optimisers, schedulers and loop counters but not these states, so a
    resumed run would shuffle, augment and sample (Gumbel noise of the A-links) differently from
    the run it continues. They are restored before the first batch is drawn (Lightning loads
    callback states before it builds the data iterators), which makes a resume from an end-of-epoch
    checkpoint exact; docs/scaling.md says what a mid-epoch resume keeps.

    Under DDP the processes' states differ (each draws for its own shard, and validation shards
    may differ in size), so each process's state is gathered into the checkpoint (Lightning builds
    a checkpoint's contents on every process) and each gets its own back. A resume with another
    process count has no state per process: every process then gets rank 0's.
    """

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                 "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        states = [state]
        if _distributed():
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("ranks", [state_dict])  # checkpoints before per-process states held rank 0's
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
        if len(states) != world_size:
            rank_zero_warn(f"the checkpoint holds the random states of {len(states)} processes, this run has "
                           f"{world_size}: every process continues from rank 0's")
        state = states[rank] if len(states) == world_size else states[0]
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
