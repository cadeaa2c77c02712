"""Lightning callbacks of the project: stage-aware checkpoints and confusion-matrix reports."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np

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
