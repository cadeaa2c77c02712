"""A user's checkout in a temporary folder, and the documented commands run in it as a user types them.

The checkout holds the repository's tracked files (the thin entry points, configs, Makefile) and a
``../shared/fixtures`` beside it, as in a development session; commands run through ``bash`` with the
interpreter's ``bin/`` first on ``PATH`` (an activated virtual environment), so ``python``,
``torchrun`` and ``wandb`` are the installed ones, and ``logs/`` and ``data/`` land in the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from conftest import FIXTURES_DIR, REPO_ROOT

#: what every training command may add: one epoch of two batches, one thread (the suite shares 2 cores)
SHRINK = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
          "trainer.limit_test_batches=2", "torch_threads=1")
#: the same for commands that choose no model: the narrow S-links model
SMALL = (*SHRINK, "model=tiny")
TIMEOUT_S = 300


@dataclass
class Done:
    """A finished command: what was run, its exit status and output, and the run folders it created."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    new_dirs: list[Path] = field(default_factory=list)

    def output(self) -> str:
        return f"$ {self.command}\nexit {self.returncode}\n{self.stdout[-3000:]}\n{self.stderr[-5000:]}"

    def run_dir(self, kind: str = "train/runs") -> Path:
        """The one run folder this command created under ``logs/<kind>/``."""
        found = [path for path in self.new_dirs if f"/logs/{kind}/" in str(path)]
        assert len(found) == 1, f"expected one new logs/{kind} folder, got {found}\n{self.output()}"
        return found[0]


def run_folders(checkout: Path) -> set[Path]:
    """Every run folder (a folder with ``.hydra/``) under ``logs/``."""
    return {path.parent for path in (checkout / "logs").glob("**/.hydra")}


def run_command(command: str, cwd: Path, timeout: float = TIMEOUT_S, env: dict[str, str] | None = None) -> Done:
    """``command`` through bash in ``cwd``; on time-out its whole process group is SIGKILLed (DDP ignores TERM)."""
    before = run_folders(cwd)
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException as interrupted:  # a test time-out or Ctrl+C: leave no process group behind
        os.killpg(process.pid, signal.SIGKILL)
        if not isinstance(interrupted, subprocess.TimeoutExpired):
            raise
        stdout, stderr = process.communicate()
        tail = f"{stdout[-2000:]}\n{stderr[-4000:]}"
        raise AssertionError(f"`{command}` did not end within {timeout} s\n{tail}") from None
    new = sorted(run_folders(cwd) - before)
    return Done(command, process.returncode, stdout, stderr, new)


def make_checkout(root: Path) -> Path:
    """``root/checkout``: the tracked files of the repository, with ``root/shared/fixtures`` beside it."""
    checkout = root / "checkout"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name)
    (root / "shared").mkdir()
    (root / "shared" / "fixtures").symlink_to(FIXTURES_DIR, target_is_directory=True)
    return checkout


def clear_failure(done: Done, names: str, prefix: str = "error: ") -> None:
    """The command stopped with one ``error:`` line (``prefix``) matching ``names`` and no traceback."""
    assert done.returncode != 0, done.output()
    assert "Traceback" not in done.stderr, done.output()
    lines = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1 and re.search(names, lines[0], flags=re.I), done.output()


def metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def finished_training(done: Done, epochs: int = 1) -> Path:
    """A training run that ended normally: its folder, with checkpoints, metrics and the offline W&B run."""
    assert done.returncode == 0, done.output()
    run_dir = done.run_dir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file(), sorted(run_dir.rglob("*"))
    numbers = metrics(run_dir)
    for key in ("val/acc_top1", "test/acc_top1"):  # best/val/...: not where an experiment keeps the last epoch
        assert 0.0 <= numbers[key] <= 1.0, (key, numbers)
    assert numbers["val/loss"] > 0 and numbers["test/loss"] > 0
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert len(rows) > 1 and "val/acc_top1" in rows[0]
    assert list((run_dir / "wandb").glob("offline-run-*")), "the default logger writes an offline W&B run"
    return run_dir


def checkpoint_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
