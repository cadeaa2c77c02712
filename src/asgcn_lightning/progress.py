"""What long work shows while it runs: rich bars for preparations, and a training's progress.

On a terminal, training shows Lightning's rich bar. Written to a file or a pipe (cluster jobs, ``nohup``,
CI) a redrawn bar shows nothing until the end, so there it prints one plain line per epoch instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

Item = TypeVar("Item")

# per training stage, the metrics of an epoch line: the other stage's keep their last values in Lightning's
# metrics, which would show the AIM losses of the first epochs all through the main stage
STAGE_METRICS = {"aim": ("train/aim_loss", "val/aim_loss"),
                 "main": ("train/loss", "val/acc_top1", "val/loss")}
SAMPLES_PER_SEC = "perf/train_samples_per_sec"  # asgcn_lightning.throughput.Throughput


def console() -> Console:
    """Where preparations talk to the user: stderr, beside the progress bars. Lines are not wrapped at
    the width of a terminal that is not there, so paths stay whole in a log file."""
    return Console(stderr=True, soft_wrap=True)


def progress_bar() -> Progress:
    """A progress display with description, bar, done/total and time left; use as a context manager."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console())


def track(items: Iterable[Item], description: str, total: int | None = None) -> Iterator[Item]:
    """``items`` one by one, with a progress bar (``total`` for iterables without a length)."""
    with progress_bar() as bar:
        yield from bar.track(items, total=total, description=description)


def training_progress() -> ProgressBar:
    """The rich bar when standard output is a terminal, else :class:`EpochLines`."""
    return RichProgressBar() if sys.stdout.isatty() else EpochLines()


def split_sizes(datamodule: Any) -> dict[str, int]:
    """Samples per split of a set-up data module (``val/test`` where validation runs on the test split)."""
    train, val, test = (getattr(datamodule, name, None) for name in ("train_set", "val_set", "test_set"))
    sets = {"train": train} if val is test else {"train": train, "val": val}
    sets["val/test" if val is test else "test"] = test
    return {name: len(dataset) for name, dataset in sets.items() if dataset is not None}


def epoch_line(epoch: int, last_epoch: int, stage: str, step: int, metrics: dict[str, float],
               seconds_left: float) -> str:
    """``epoch 3/9 (main), step 120: train/loss 1.2, val/acc_top1 0.61, 95.3 samples/s; ETA 2:05``.

    Epochs count from 0, as in checkpoint names and the CSV log; only ``stage``'s metrics are shown.
    """
    shown = [f"{key} {metrics[key]:.4g}" for key in STAGE_METRICS.get(stage, STAGE_METRICS["main"]) if key in metrics]
    if SAMPLES_PER_SEC in metrics:
        shown.append(f"{metrics[SAMPLES_PER_SEC]:.1f} samples/s")
    minutes, seconds = divmod(round(max(seconds_left, 0.0)), 60)
    return (f"epoch {epoch}/{last_epoch}{f' ({stage})' if stage else ''}, step {step}: " + ", ".join(shown)
            + f"; ETA {minutes}:{seconds:02d}")


class EpochLines(ProgressBar):
    """One plain line per epoch on process 0 (:func:`epoch_line`), and the sizes of the data splits at the start."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = 0.0
        self._first_epoch = 0

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _print(self, trainer: L.Trainer, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(text, flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._first_epoch = time.monotonic(), trainer.current_epoch
        sizes = split_sizes(trainer.datamodule)
        if sizes:
            processes = f"{trainer.world_size} process{'es' if trainer.world_size > 1 else ''}"
            self._print(trainer, "samples: " + ", ".join(f"{name} {count}" for name, count in sizes.items())
                        + f"; {processes}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {}
        for name, value in trainer.callback_metrics.items():  # every logged metric, not only the bar's
            key = name.removesuffix("_epoch")
            if key not in metrics or name == key:
                metrics[key] = float(value)
        last_epoch = (trainer.max_epochs or 0) - 1
        done = trainer.current_epoch + 1 - self._first_epoch
        seconds_left = (time.monotonic() - self._start) / max(done, 1) * max(last_epoch - trainer.current_epoch, 0)
        self._print(trainer, epoch_line(trainer.current_epoch, last_epoch, str(getattr(pl_module, "stage", "")),
                                        trainer.global_step, metrics, seconds_left))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = sorted((key, float(value)) for key, value in trainer.callback_metrics.items()
                         if key.startswith("test/"))
        self._print(trainer, "test: " + ", ".join(f"{key} {value:.4g}" for key, value in metrics))
