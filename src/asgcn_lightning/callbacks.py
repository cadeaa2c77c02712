"""Lightning callbacks of the project: stage-aware checkpoints, confusion-matrix and A-link reports."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from asgcn_lightning.errors import UserError
from asgcn_lightning.visual.confusion import confusion_figure, per_class_accuracy


class StageAwareModelCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """ModelCheckpoint that tolerates epochs without the monitored metric.

    During AIM pretraining there is no classifier metric yet: those epochs still refresh
    ``last.ckpt`` (so a resume inside the AIM stage works) but do not compete for "best".
    """

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if self.monitor is not None and self.monitor not in monitor_candidates:
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)


class ConfusionMatrixReport(L.Callback):
    """After each validation (and the test), save the confusion matrix as PNG and per-class CSV.

    Written in ``dirpath`` as ``confusion_<stage>.png`` / ``per_class_<stage>.csv``; with a W&B
    logger the picture and a per-class table are logged too.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._report(trainer, pl_module, getattr(pl_module, "last_val_confusion", None), "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, getattr(pl_module, "last_test_confusion", None), "test")

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, confusion: object, stage: str) -> None:
        if confusion is None or not trainer.is_global_zero:
            return
        matrix = np.asarray(confusion)
        names = pl_module.class_names or [str(i) for i in range(matrix.shape[0])]
        self.dirpath.mkdir(parents=True, exist_ok=True)
        figure = confusion_figure(matrix, names, title=f"{stage}, epoch {trainer.current_epoch}")
        png = self.dirpath / f"confusion_{stage}.png"
        figure.savefig(png.with_suffix(".tmp.png"), dpi=100)
        png.with_suffix(".tmp.png").replace(png)
        accuracy = per_class_accuracy(matrix)
        rows = [[name, int(matrix[i].sum()), float(accuracy[i])] for i, name in enumerate(names)]
        with open(self.dirpath / f"per_class_{stage}.csv.tmp", "w", newline="") as handle:
            csv.writer(handle).writerows([["class", "samples", "accuracy"], *rows])
        (self.dirpath / f"per_class_{stage}.csv.tmp").replace(self.dirpath / f"per_class_{stage}.csv")
        for logger in trainer.loggers:
            if isinstance(logger, L.pytorch.loggers.WandbLogger):
                logger.log_image(key=f"{stage}/confusion_matrix", images=[figure])
                logger.log_table(key=f"{stage}/per_class_accuracy", columns=["class", "samples", "accuracy"],
                                 data=rows)
        plt.close(figure)


class ALinkReport(L.Callback):
    """After each validation, draw the A-links the model infers for one fixed held-out sample.

    The same sample every epoch, so the pictures show how the inferred links evolve. Saved as
    ``alinks_val.png`` in ``dirpath`` and, with a W&B logger, logged as ``val/alinks``. Models
    without an A-link inference module are skipped silently: the callback can stay in every config.
    """

    def __init__(self, dirpath: str | Path, sample_index: int = 0, top_k: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.sample_index = sample_index
        self.top_k = top_k

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        network = getattr(pl_module, "network", None)
        dataset = getattr(trainer.datamodule, "test_set", None)
        if trainer.sanity_checking or not trainer.is_global_zero or dataset is None:
            return
        if getattr(network, "aim", None) is None:
            return
        from asgcn_lightning.visual.alinks import alink_figure

        # reading a sample draws its augmentation seed from torch's RNG: keep training's stream untouched
        with torch.random.fork_rng(devices=[]):
            sample, label = dataset[self.sample_index % len(dataset)]
        names = pl_module.class_names or []
        title = f"A-links, epoch {trainer.current_epoch}: a sample of {names[label] if names else label}"
        try:
            figure = alink_figure(network, sample.cpu(), top_k=self.top_k, title=title)
        except UserError as error:  # e.g. nobody in the sample's middle frame: a picture is not worth a run
            rank_zero_warn(f"A-link picture skipped: {error}")
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        png = self.dirpath / "alinks_val.png"
        figure.savefig(png.with_suffix(".tmp.png"), dpi=100)
        png.with_suffix(".tmp.png").replace(png)
        for logger in trainer.loggers:
            if isinstance(logger, L.pytorch.loggers.WandbLogger):
                logger.log_image(key="val/alinks", images=[figure])
        plt.close(figure)
