"""The project's Lightning callbacks: checkpoints, lockstep metrics, signals, confusion and A-links
(progress: :mod:`asgcn_lightning.progress`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path, PurePosixPath
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from asgcn_lightning.atomic import atomic_file, write_atomically
from asgcn_lightning.errors import UserError
from asgcn_lightning.shutdown import reinstall_stop_handlers
from asgcn_lightning.visual.confusion import confusion_figure, per_class_accuracy


class StageAwareModelCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` is every epoch's end, with epochs that lack the metric and resumes.

    Checkpoints are written when the training epoch has ended (after validation and the epoch's
    learning-rate step), so a resume continues exactly where the uninterrupted run went on.
    ``last.ckpt`` is rewritten after every epoch: Lightning alone rewrites it only when a top-k
    checkpoint is saved, which would leave it at the best epoch rather than the latest.
    During AIM pretraining there is no classifier metric yet: those epochs refresh ``last.ckpt``
    (so a resume inside the AIM stage works) but do not compete for "best".

    The best score is also put into ``trainer.callback_metrics`` as ``best/<monitor>`` (what
    ``train.py`` gives a sweeper): from there it reaches the main process of a spawned DDP run,
    to which Lightning sends back only the best checkpoint's path.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_on_train_epoch_end", True)
        super().__init__(*args, **kwargs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` unless this step's state was just saved (as top-k and last together)."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if self.monitor is not None and self.monitor not in monitor_candidates:
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self.best_model_score is not None:
            trainer.callback_metrics[f"best/{self.monitor}"] = self.best_model_score.detach().clone()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the best checkpoints' ranking when the resumed run writes into another folder.

        Lightning drops it then ("dirpath has changed"), so the first validation after the resume
        would become the new "best" however bad it is. The old run's files keep competing (scores
        and paths); those deleted since are left out, since a score without its file would leave the
        run without a best checkpoint. Files outside this run's folder are never deleted, so a better
        checkpoint of the resumed run does not remove the old run's.
        """
        previous_dir = state_dict.get("dirpath", self.dirpath)
        if previous_dir == self.dirpath or state_dict.get("monitor") != self.monitor or self.save_top_k == 0:
            super().load_state_dict(state_dict)
            return
        scores = state_dict.get("best_k_models", {})
        kept = {path: score for path, score in scores.items() if self._fs.exists(path)}
        if len(kept) < len(scores):
            rank_zero_warn(f"best checkpoints of the resumed run no longer exist, left out of the ranking: "
                           f"{sorted(set(scores) - set(kept))}")
        ranked = sorted(kept, key=lambda path: float(kept[path]), reverse=self.mode == "max")
        self.best_k_models = {path: kept[path] for path in ranked[: self.save_top_k if self.save_top_k > 0 else None]}
        if self.best_k_models:
            self.best_model_path, self.kth_best_model_path = ranked[0], list(self.best_k_models)[-1]
            self.best_model_score, self.kth_value = kept[ranked[0]], kept[self.kth_best_model_path]
            rank_zero_info(f"resumed from {previous_dir}: its best {self.monitor} {float(self.best_model_score):.4f}"
                           f" ({self.best_model_path}) stays the score to beat")

    def _should_remove_checkpoint(self, trainer: L.Trainer, previous: str, current: str) -> bool:
        # Lightning keeps files outside this run's folder on local disks only; the ranking kept by
        # load_state_dict may name another run's files on remote storage too
        inside = PurePosixPath(str(previous)).is_relative_to(PurePosixPath(str(self.dirpath)))
        return inside and super()._should_remove_checkpoint(trainer, previous, current)


class EpochMetricsInLockstep(L.Callback):
    """Compute the epoch's logged metrics on every process at once, before any callback reads them.

    Reading epoch-level metrics computes them, and computing a synced value (``sync_dist``, a
    torchmetrics metric) is a collective. A reader on one process only (the progress bar of rank 0,
    a rank-zero report) would enter it alone while the other processes are in the next collective,
    and the run would hang. This callback must come first; the trainer builder puts it there.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.callback_metrics  # noqa: B018 -- the read computes (and caches) the values on every process


class StopOnSignal(L.Callback):
    """Keep SIGTERM/SIGINT stopping the run while Lightning runs a stage (it installs handlers of its own).

    Lightning's SIGTERM handler broadcasts over the process group from inside the signal handler,
    which can meet another collective in flight and hang the run; see :mod:`asgcn_lightning.shutdown`.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reinstall_stop_handlers()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reinstall_stop_handlers()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reinstall_stop_handlers()


def tested_epoch(trainer: L.Trainer, pl_module: L.LightningModule) -> int | None:
    """The epoch whose weights a test measures, counted from 0 as in checkpoint names and epoch lines.

    A checkpoint's own epoch when the test loaded one; after a fit, the last epoch trained (the
    Trainer's counter has moved on to the next); ``None`` for a model that was never trained here.
    """
    if trainer.ckpt_path:
        return getattr(pl_module, "checkpoint_epoch", None)
    return trainer.current_epoch - 1 if trainer.current_epoch else None


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
        epoch = trainer.current_epoch if stage == "val" else tested_epoch(trainer, pl_module)
        figure = confusion_figure(matrix, names, title=stage if epoch is None else f"{stage}, epoch {epoch}")
        with atomic_file(self.dirpath / f"confusion_{stage}.png") as tmp:
            figure.savefig(tmp, dpi=100, format="png")
        accuracy = per_class_accuracy(matrix)
        rows = [[name, int(matrix[i].sum()), float(accuracy[i])] for i, name in enumerate(names)]
        table = io.StringIO()
        csv.writer(table).writerows([["class", "samples", "accuracy"], *rows])
        write_atomically(self.dirpath / f"per_class_{stage}.csv", table.getvalue())
        for logger in trainer.loggers:
            if isinstance(logger, L.pytorch.loggers.WandbLogger):
                logger.log_image(key=f"{stage}/confusion_matrix", images=[figure])
                logger.log_table(key=f"{stage}/per_class_accuracy", columns=["class", "samples", "accuracy"],
                                 data=rows)
        plt.close(figure)


class ALinkReport(L.Callback):
    """After each validation, draw the A-links the model infers for one fixed validation sample.

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
        dataset = getattr(trainer.datamodule, "val_set", None)
        if trainer.sanity_checking or not trainer.is_global_zero or dataset is None:
            return
        if getattr(network, "aim", None) is None:
            return
        from asgcn_lightning.visual.alinks import alink_figure

        sample, label = dataset[self.sample_index % len(dataset)]  # evaluation samples draw nothing at random
        names = pl_module.class_names or []
        title = f"A-links, epoch {trainer.current_epoch}: a sample of {names[label] if names else label}"
        try:
            figure = alink_figure(network, sample.cpu(), top_k=self.top_k, title=title)
        except UserError as error:  # e.g. the person is absent from every frame: a picture is not worth a run
            rank_zero_warn(f"A-link picture skipped: {error}")
            return
        with atomic_file(self.dirpath / "alinks_val.png") as tmp:
            figure.savefig(tmp, dpi=100, format="png")
        for logger in trainer.loggers:
            if isinstance(logger, L.pytorch.loggers.WandbLogger):
                logger.log_image(key="val/alinks", images=[figure])
        plt.close(figure)
