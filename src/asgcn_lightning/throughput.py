"""Training throughput in samples per second, logged once per epoch (CSV, W&B, TensorBoard alike)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class Throughput(L.Callback):
    """``perf/train_samples_per_sec``: samples of all processes over the wall time of the epoch's batches.

    The clock runs from the epoch start to the end of its last training batch, so data loading
    counts and validation (which Lightning runs after that batch) does not. On GPUs the last batch
    is waited for, as kernels run asynchronously. Samples are summed over the DDP processes, so the
    number is the run's, comparable between device counts.
    """

    def __init__(self, name: str = "perf/train_samples_per_sec") -> None:
        self.name = name
        self._samples, self._end = 0, 0.0
        self._start: float | None = None  # None until this epoch's first batch (or epoch start) is seen

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples, self._start = 0, time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._start is None:  # resumed inside an epoch: Lightning does not start that epoch again
            self._samples, self._start = 0, time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._samples += len(batch[0])
        if batch_idx + 1 >= trainer.num_training_batches and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        start, self._start = self._start, None
        if not self._samples or start is None:
            return
        samples = trainer.strategy.reduce(torch.tensor(float(self._samples), device=pl_module.device),
                                          reduce_op="sum")
        pl_module.log(self.name, float(samples) / max(self._end - start, 1e-9), on_step=False, on_epoch=True)
