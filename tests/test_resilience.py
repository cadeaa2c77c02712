"""Runs that never hang and never lose an epoch: signals, dead or out-of-step processes, last.ckpt, exact resume.

Every run is ``python train.py`` started as a user starts it, in a folder of its own (logs/ land there),
with real DDP over gloo between CPU processes where processes are involved.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import psutil
import pytest
import torch
import torch.distributed as dist
from conftest import REPO_ROOT
from helpers import user_folder

SHORT = ["model=tiny", "torch_threads=1", "logger=csv", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2"]


def _start(folder: Path, *overrides: str, log: str = "run.log") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "train.py", *overrides], cwd=folder, env=env,
                            stdout=(folder / log).open("w"), stderr=subprocess.STDOUT)


def _run_dirs(folder: Path) -> list[Path]:
    return sorted(path.parent for path in (folder / "logs" / "train" / "runs").glob("*/*/.hydra"))


def _wait_for(path_glob: str, folder: Path, process: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(path_glob))
        if found:
            return found[0]
        assert process.poll() is None, (folder / "run.log").read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no {path_glob} after {timeout} s")


def _epochs(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


class OutOfStep(L.Callback):
    """At global step ``step`` process ``rank`` enters a collective the other processes never enter."""

    def __init__(self, step: int, rank: int = 1) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            dist.all_reduce(torch.zeros(1))


def test_last_ckpt_is_the_latest_epoch_also_after_a_better_earlier_one(tmp_path, data_dir):
    """``save_top_k: 1, save_last: true``: last.ckpt is rewritten after every epoch, not only with a new best.

    Ranking by the lowest epoch number makes epoch 0 the best one for good, so the later epochs save
    no top-k checkpoint: last.ckpt must still be the end of the last epoch, and resume from there.
    """
    folder = user_folder(tmp_path, data_dir)
    process = _start(folder, *SHORT, "trainer.max_epochs=3", "callbacks.model_checkpoint.monitor=epoch",
                     "callbacks.model_checkpoint.mode=min")
    assert process.wait(timeout=400) == 0, (folder / "run.log").read_text()[-3000:]
    (run,) = _run_dirs(folder)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 12)
    assert [path.name.split("-")[0] for path in (run / "checkpoints").glob("epoch*.ckpt")] == ["epoch000"]


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["cpu", "ddp_sim"])
def test_sigkill_after_the_first_checkpoint_then_resume_ends_like_the_uninterrupted_run(trainer, tmp_path, data_dir):
    """Killed in the middle of epoch 1 and resumed from last.ckpt: every later number equals the run that never
    stopped, with data-loader worker processes (new ones in the resumed run, persistent ones in the other)."""
    common = [*SHORT, "trainer.max_epochs=3", f"trainer={trainer}"]
    full_folder, killed_folder = user_folder(tmp_path / "full", data_dir), user_folder(tmp_path / "killed", data_dir)
    full = _start(full_folder, *common)
    killed = _start(killed_folder, *common, "+callbacks.kill={_target_:helpers.KillAtStep,step:6}")
    assert killed.wait(timeout=400) == -signal.SIGKILL, (killed_folder / "run.log").read_text()[-3000:]
    assert full.wait(timeout=400) == 0, (full_folder / "run.log").read_text()[-3000:]
    # model=tiny has no AIM: every parameter trains in every step, and DDP is not told to search for unused ones
    assert "find_unused_parameters" not in (full_folder / "run.log").read_text()
    (killed_run,) = _run_dirs(killed_folder)
    last = torch.load(killed_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (0, 4), "killed in epoch 1: last.ckpt is the end of epoch 0"
    resumed = _start(killed_folder, *common, f"ckpt_path={killed_run / 'checkpoints' / 'last.ckpt'}", log="resumed.log")
    assert resumed.wait(timeout=400) == 0, (killed_folder / "resumed.log").read_text()[-3000:]
    resumed_run = next(run for run in _run_dirs(killed_folder) if run != killed_run)
    (full_run,) = _run_dirs(full_folder)
    for key in ("val/loss", "val/acc_top1", "train/loss_epoch"):
        assert _epochs(resumed_run, key) == _epochs(full_run, key)[1:], key
    assert _epochs(resumed_run, "test/acc_top1") == _epochs(full_run, "test/acc_top1")


def _children(process: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "dead_rank", "out_of_step"])
def test_a_stopped_dead_or_out_of_step_process_ends_the_whole_ddp_run(how, tmp_path, data_dir):
    """SIGTERM to the first process, SIGKILL of the second, or a collective only one process enters: the run
    ends with an error well within the collective timeout, and no process of it is left behind."""
    folder = user_folder(tmp_path, data_dir)
    extra = {"sigterm": [], "dead_rank": [],
             "out_of_step": ["+callbacks.desync={_target_:test_resilience.OutOfStep,step:2}"]}[how]
    process = _start(folder, "model=tiny", "trainer=ddp_sim", "trainer.max_epochs=100", "trainer.strategy.timeout_s=30",
                     "logger=csv", *extra)
    if how == "out_of_step":
        _wait_for("logs/train/runs/*/*/.hydra", folder, process)
    else:
        _wait_for("logs/train/runs/*/*/checkpoints/last.ckpt", folder, process)
    workers = _children(process)
    started = time.monotonic()
    if how == "sigterm":
        process.send_signal(signal.SIGTERM)
    elif how == "dead_rank":
        rank_one = [child for child in workers
                    if child.ppid() == process.pid and child.environ().get("LOCAL_RANK") == "1"]
        assert rank_one, "the second DDP process was not found"
        rank_one[0].kill()
    code = process.wait(timeout=180)
    output = (folder / "run.log").read_text()
    assert code != 0, output[-3000:]
    assert time.monotonic() - started < 120, "must end within the 30 s collective timeout plus shutdown"
    if how == "sigterm":
        assert "stopped by SIGTERM" in output or code in (1, 128 + signal.SIGTERM), output[-3000:]
    elif how == "dead_rank":  # the launcher sees its worker die and ends the others
        assert "terminated with code -9" in output, output[-3000:]
    else:  # one line that says what happened, not a traceback
        assert "the training processes lost each other" in output and "Traceback" not in output, output[-3000:]
    deadline = time.monotonic() + 30
    while any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in workers):
        assert time.monotonic() < deadline, f"left behind: {[child.pid for child in workers if child.is_running()]}"
        time.sleep(0.5)


def test_a_process_asked_for_its_stacks_prints_where_every_thread_is():
    """What the first process does when the others lost it: their stacks show which was stuck, and where."""
    from asgcn_lightning.shutdown import print_stacks_of

    code = ("import sys, time; from asgcn_lightning.shutdown import stop_on_signals\n"
            "def stuck_in_a_data_loader():\n    print('ready', flush=True); time.sleep(60)\n"
            "stop_on_signals(); stuck_in_a_data_loader()")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    printed: list[str] = []
    try:
        assert process.stdout.readline() == "ready\n"
        print_stacks_of([process.pid], wait_s=0.0)
        for line in process.stderr:  # waits for the dump, however busy the machine (the process sleeps 60 s)
            printed.append(line)
            if "stuck_in_a_data_loader" in line:
                break
        assert process.poll() is None, "the stacks are printed; the process itself goes on"
    finally:
        process.kill()
        process.communicate(timeout=30)
    assert "most recent call first" in "".join(printed) and "stuck_in_a_data_loader" in printed[-1], printed
    print_stacks_of([process.pid], wait_s=0.0)  # a process that has ended already is passed over


def test_the_mission_command_runs_one_process_per_gpu_where_there_are_gpus(monkeypatch):
    """``python train.py dataset=mads split=xview trainer.devices=4`` composes to DDP over 4 devices of the
    machine's accelerator: CUDA (one process per GPU, NCCL) where GPUs exist, CPU processes over gloo else."""
    from lightning.pytorch.strategies import DDPStrategy

    from asgcn_lightning.config import compose_config
    from asgcn_lightning.distributed import process_count, training_strategy

    cfg = compose_config("train", ["dataset=mads", "split=xview", "trainer.devices=4"])
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.num_nodes) == ("auto", 4, 1)
    strategy = cfg.trainer.strategy
    for gpus in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpus=gpus: gpus)
        built = training_strategy(strategy.devices, strategy.num_nodes, strategy.accelerator, strategy.start_method,
                                  strategy.process_group_backend, strategy.find_unused_parameters, strategy.timeout_s)
        assert isinstance(built, DDPStrategy) and process_count(4, 1, "auto") == 4
        assert built._process_group_backend is None  # Lightning picks nccl for CUDA devices, gloo for CPUs
        assert built._timeout.total_seconds() == (1800 if gpus else 300)
    assert training_strategy(1, 1, "auto") == "auto"  # one process: no DDP at all


def test_two_sweeps_started_in_the_same_second_get_folders_of_their_own(tmp_path, data_dir):
    folder = user_folder(tmp_path, data_dir)
    sweep = ["-m", "model.optimizer.lr=0.05", *SHORT, "trainer.max_epochs=1"]
    runs = [_start(folder, *sweep, log=f"sweep{n}.log") for n in range(2)]
    for n, run in enumerate(runs):
        assert run.wait(timeout=400) == 0, (folder / f"sweep{n}.log").read_text()[-3000:]
    sweeps = sorted((folder / "logs" / "train" / "multiruns").glob("*"))
    assert len(sweeps) == 2, sweeps
    for sweep_dir in sweeps:  # each with its job and the summary written after it
        assert (sweep_dir / "0" / "metrics.json").is_file() and (sweep_dir / "sweep_summary.json").is_file()
