"""Models the tests train on real machinery (a real store, the Trainer, checkpoints, the run's saved config)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import lightning as L
import numpy as np
import torch
from conftest import REPO_ROOT
from omegaconf import OmegaConf

from asgcn_lightning.apps.train import train
from asgcn_lightning.config import compose_config


class KillAtStep(L.Callback):
    """SIGKILLs its own process right after global step ``step``: a crash at a known point of an epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def user_folder(tmp_path: Path, data_dir: Path) -> Path:
    """A folder like a user's checkout: ``train.py``, and ``data/`` the test session's prepared store. Commands run
    there keep their default paths (logs/, data/), so a test adds no path or sweep-folder override."""
    folder = tmp_path / "checkout"
    folder.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "train.py", folder)
    (folder / "data").symlink_to(data_dir)
    return folder


def train_kick_model(kicks: Path, run_dir: Path, store_dir: Path | None = None, epochs: int = 2) -> Path:
    """A ``model=tiny`` BODY_25 checkpoint on the 20 real soccer kicks (curl or laces), in seconds.

    The run's config is saved where a Hydra run keeps it, so the apps load the checkpoint like any
    user's; the bench's demo model is the same run started with ``train.py``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    table = np.load(kicks / "labels.npy", allow_pickle=True)  # column 4: kick type, 0 curl / 1 laces
    labels = run_dir / "kick_labels.csv"
    labels.write_text("video,label\n" + "".join(f"Kick_{row[0]},{('curl', 'laces')[row[4]]}\n" for row in table))
    cfg = compose_config("train", [
        "model=tiny", "dataset=openpose_folder", f"dataset.root={kicks / 'json'}", f"dataset.labels={labels}",
        f"dataset.store_dir={store_dir or run_dir / 'store'}", "dataset.num_person=1", "dataset.auto_prepare=true",
        "dataset.num_workers=0", "split=random", f"trainer.max_epochs={epochs}", "test_after_fit=false",
        "trainer=cpu", "+trainer.enable_model_summary=false", "logger=csv",
        "torch_threads=1"],
        run_dir, REPO_ROOT)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    threads = torch.get_num_threads()
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)  # train() sets torch_threads for the whole process
    return run_dir / "checkpoints" / "last.ckpt"
