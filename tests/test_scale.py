"""Scaling out and keeping every run: DDP, sweeps, SLURM, W&B extras, exact resume, speed switches.

The training runs are real (``python train.py`` subprocesses where processes are launched or
killed) with toy models and a few batches; numbers in the assertions are from those runs.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from conftest import CONFIG_DIR, REPO_ROOT, compose_config
from omegaconf import OmegaConf

QUIET = ["dataset.num_workers=0", "trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null",
         "test_after_fit=false"]
STEP_CHECKPOINTS = ("+callbacks.step_checkpoint={_target_:lightning.pytorch.callbacks.ModelCheckpoint,"
                    "dirpath:${paths.output_dir}/checkpoints/steps,every_n_train_steps:2,save_top_k:-1}")


def _train_command(data_dir: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "train.py", f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *QUIET,
            *overrides]


def _check(process: subprocess.Popen | subprocess.CompletedProcess, output: str = "") -> None:
    assert process.returncode == 0, f"exit {process.returncode}:\n{output[-4000:]}"


def _popen(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def _last(rows: list[dict[str, str]], key: str) -> float:
    return [float(row[key]) for row in rows if row.get(key)][-1]


# -- DDP ----------------------------------------------------------------------------------------------

def test_two_ddp_cpu_processes_match_one_process_with_the_same_global_batch(data_dir, tmp_path):
    """2 gloo processes × batch 8 against 1 process × batch 16: same validation loss and accuracy.

    Both runs use the DDP strategy so that both draw the epoch's order from Lightning's seeded
    DistributedSampler (1 replica vs 2: the same 16 samples per step); augmentation is off
    (train transforms = eval transforms) and BatchNorm is synchronised (trainer.sync_batchnorm,
    on CPU through asgcn_lightning.distributed). What remains is float summation order, which 20
    steps at lr 0.2 amplify to ~1e-3 of the loss and 2-3 of 240 samples; without sync_batchnorm the
    runs differ by ~4 % (2.192 vs 2.104) and by 0.2 in accuracy, so the tolerances below do catch a
    broken DDP setup.
    """
    common = ["model=tiny", "logger=csv", "torch_threads=1", "dataset.train_transforms=${dataset.eval_transforms}",
              "trainer=ddp_sim", "trainer.sync_batchnorm=true", "trainer.max_epochs=1",
              "trainer.limit_train_batches=20", "model.optimizer.lr=0.2"]
    one = _popen(_train_command(data_dir, tmp_path / "one", *common, "trainer.devices=1", "dataset.batch_size=16"),
                 tmp_path / "one.log")
    two = _popen(_train_command(data_dir, tmp_path / "two", *common, "trainer.devices=2", "dataset.batch_size=8"),
                 tmp_path / "two.log")
    for process, name in ((one, "one"), (two, "two")):
        process.wait(timeout=240)
        _check(process, (tmp_path / f"{name}.log").read_text())
    one_rows, two_rows = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    numbers = {key: (_last(one_rows, key), _last(two_rows, key)) for key in ("val/loss", "val/acc_top1")}
    assert numbers["val/loss"][1] == pytest.approx(numbers["val/loss"][0], rel=5e-3), numbers
    assert numbers["val/acc_top1"][1] == pytest.approx(numbers["val/acc_top1"][0], abs=0.03), numbers
    assert numbers["val/acc_top1"][0] > 0.3, f"the model must have learned something to compare: {numbers}"
    # every validation sample counted exactly once over both processes (no padding, synced confusion matrix)
    for run in ("one", "two"):
        with open(tmp_path / run / "per_class_val.csv") as handle:
            assert sum(int(row["samples"]) for row in csv.DictReader(handle)) == 240
    assert _last(two_rows, "perf/train_samples_per_sec") > 0


def test_popen_ddp_inside_a_sweep_is_refused_and_spawn_allowed(compose):
    from asgcn_lightning.apps.components import build_trainer
    from asgcn_lightning.apps.train import check_sweep_launch, train
    from asgcn_lightning.errors import UserError

    cfg = compose(["model=tiny", "trainer=ddp_sim", "logger=csv", "hydra.mode=MULTIRUN", *QUIET])
    with pytest.raises(UserError, match="start_method=spawn"):
        train(cfg)  # refused before any process is launched
    cfg.trainer.strategy.start_method = "spawn"
    check_sweep_launch(build_trainer(cfg, loggers=[]))


def test_ddp_evaluation_sees_every_sample_exactly_once(tmp_path):
    """An odd number of validation samples over 2 processes: no sample repeated to even them out."""
    import torch.multiprocessing as mp

    from asgcn_lightning.data.synthetic import prepare_synthetic

    prepare_synthetic(tmp_path / "syn", num_subjects=3, num_cameras=1, num_setups=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_evaluation_shard_worker, args=(port, tmp_path / "syn"), nprocs=2, start_method="fork")


def _evaluation_shard_worker(rank: int, port: int, store_dir: Path) -> None:
    import torch.distributed as dist

    from asgcn_lightning.data.datamodule import SkeletonDataModule, unrepeated_sampler
    from asgcn_lightning.data.splits import MetadataSplit

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    module = SkeletonDataModule(store_dir, MetadataSplit("xsub", "subject", [1, 2]), classes=[1, 2, 3], batch_size=2)
    module.setup()
    assert len(module.test_set) == 3
    mine = list(iter(module.val_dataloader().sampler))
    shards: list[list[int]] = [[], []]
    dist.all_gather_object(shards, mine)
    assert sorted(shards[0] + shards[1]) == [0, 1, 2] and len(shards[0]) == 2 and len(shards[1]) == 1
    # fewer samples than processes: one would get none and miss the epoch-end sync, so Lightning pads
    assert unrepeated_sampler(torch.utils.data.Subset(module.test_set, [0])) is None
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_equals_batchnorm_over_the_global_batch():
    """Forward, input and weight gradients and running statistics of 2 processes × 8 = one BatchNorm over 16."""
    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free port for the process group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_sync_batchnorm_worker, args=(port,), nprocs=2, start_method="fork")


def _sync_batchnorm_worker(rank: int, port: int) -> None:
    import torch.distributed as dist
    from torch import nn

    from asgcn_lightning.distributed import CPUSyncBatchNorm, SyncBatchNormPlugin

    torch.set_num_threads(1)  # a forked child must not use the parent's thread pool
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    x, weights = torch.randn(16, 4, 5, 3) * 3 + 1, torch.randn(16, 4, 5, 3)
    reference = nn.BatchNorm2d(4)
    nn.init.uniform_(reference.weight)
    nn.init.uniform_(reference.bias)
    synced = SyncBatchNormPlugin(accelerator="cpu").apply(nn.Sequential(nn.BatchNorm2d(4)))
    assert isinstance(synced[0], CPUSyncBatchNorm)
    synced[0].load_state_dict(reference.state_dict())
    full = x.clone().requires_grad_()
    expected = reference(full)
    (expected * weights).mean().backward()
    shard = slice(8 * rank, 8 * rank + 8)
    part = x[shard].clone().requires_grad_()
    output = synced(part)
    (output * weights[shard]).mean().backward()  # each process's loss is its local mean, as in DDP
    weight_grad = synced[0].weight.grad.clone()
    dist.all_reduce(weight_grad)
    torch.testing.assert_close(output, expected[shard].detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(part.grad / 2, full.grad[shard], rtol=0, atol=1e-8)
    torch.testing.assert_close(weight_grad / 2, reference.weight.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(synced[0].running_var, reference.running_var, rtol=0, atol=1e-6)
    torch.testing.assert_close(synced[0].running_mean, reference.running_mean, rtol=0, atol=1e-6)
    dist.destroy_process_group()


def test_ddp_configs_and_learning_rate_scaling(compose):
    from hydra.utils import instantiate

    from asgcn_lightning.apps.components import build_datamodule, build_module, resolve_lr_scaling
    from asgcn_lightning.errors import UserError

    cfg = compose(["model=asgcn_tiny", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                   "trainer.sync_batchnorm=true", "lr_scaling.rule=linear", "dataset.batch_size=16"])
    assert cfg.trainer.strategy.find_unused_parameters and cfg.trainer.precision == "16-mixed"
    plugin = instantiate(cfg.trainer.plugins[1])
    assert plugin.enabled and not plugin.on_cpu  # PyTorch's own SyncBatchNorm on GPUs
    main_lr, aim_lr = cfg.model.optimizer.lr, cfg.model.aim.optimizer.lr
    assert resolve_lr_scaling(cfg) == 8.0 and cfg.lr_scaling.global_batch_size == 128
    assert (cfg.model.optimizer.lr, cfg.model.aim.optimizer.lr) == (8 * main_lr, 8 * aim_lr)
    module = build_module(cfg, build_datamodule(cfg))
    assert module.optimizer_factory.keywords["lr"] == 8 * main_lr  # the optimiser gets the scaled rate

    cfg = compose(["model=tiny", "trainer=ddp_sim", "trainer.devices=4", "lr_scaling.rule=sqrt",
                   "lr_scaling.base_batch_size=8", "dataset.batch_size=8"])
    assert resolve_lr_scaling(cfg) == pytest.approx(2.0) and instantiate(cfg.trainer.plugins[1]).on_cpu
    cfg = compose(["trainer.devices=auto", "lr_scaling.rule=linear"])
    with pytest.raises(UserError, match=r"set trainer\.devices to a number"):
        resolve_lr_scaling(cfg)
    cfg = compose(["trainer.devices=auto"])
    assert resolve_lr_scaling(cfg) == 1.0  # rule none: nothing to count
    assert compose(["trainer=ddp_spawn"]).trainer.strategy.start_method == "spawn"


# -- sweeps -------------------------------------------------------------------------------------------

def _wandb_runs(run_dir: Path) -> list[dict]:
    """Group, name and logged keys of the offline W&B runs under ``run_dir`` (read from the run files)."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    runs = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/*.wandb")):
        store, run, keys = DataStore(), {}, set()
        store.open_for_scan(str(path))
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "run":
                run = {"group": record.run.run_group, "name": record.run.display_name}
            elif record.WhichOneof("record_type") == "history":
                keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        runs.append({**run, "keys": keys})
    return runs


def test_optuna_sweep_of_ddp_jobs_through_the_aim_stage_runs_and_summarises(data_dir, tmp_path):
    """``hparams_search=optuna_lr``: 2 trials, each real DDP (2 spawned gloo workers) through the AIM stage.

    Spawned workers (start_method=spawn) are what makes DDP safe inside a sweep: each job starts
    and ends its own workers (see test_popen_ddp_inside_a_sweep_is_refused_and_spawn_allowed).
    """
    sweep = tmp_path / "sweep"
    command = [sys.executable, "train.py", "hparams_search=optuna_lr", "hydra.sweeper.n_trials=2",
               f"hydra.sweep.dir={sweep}", f"paths.data_dir={data_dir}", *QUIET, "model=asgcn_tiny",
               "trainer=ddp_sim", "trainer.strategy.start_method=spawn", "trainer.sync_batchnorm=true",
               "torch_threads=1", "logger=csv", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
               "trainer.limit_val_batches=2", "dataset.batch_size=4"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    _check(result, result.stdout + result.stderr)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    values = [json.loads((sweep / job / "metrics.json").read_text())["val/acc_top1"] for job in ("0", "1")]
    assert results.best_value == max(values)

    for job in ("0", "1"):  # AIM stage (epoch 0) then main stage, both under DDP
        rows = _rows(sweep / job)
        assert [float(r["stage"]) for r in rows if r.get("stage")] == [0.0, 1.0]
        assert any(r.get("train/aim_loss_epoch") for r in rows) and any(r.get("val/acc_top1") for r in rows)
        assert all(_last(rows, key) > 0 for key in ("lr-Adam", "lr-SGD", "perf/train_samples_per_sec"))

    from asgcn_lightning.apps.sweep_summary import main as summary_main

    summary_main([str(sweep)])
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["metric"] == "val/acc_top1" and summary["mode"] == "max"
    assert summary["best"]["value"] == max(values)
    assert set(summary["per_override"]) == {"model.optimizer.lr", "model.optimizer.weight_decay"}


def test_basic_sweeper_multirun_groups_jobs_in_wandb_and_leaves_metrics_for_the_summary(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "train.py", "-m", f"hydra.sweep.dir={sweep}", f"paths.data_dir={data_dir}", *QUIET,
               "model=tiny", "logger=default", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
               "trainer.limit_val_batches=2", "model.optimizer.lr=0.05,0.1"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    _check(result, result.stdout + result.stderr)

    from asgcn_lightning.apps.sweep_summary import main as summary_main

    summary_main([str(sweep)])
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["swept"] for job in summary["jobs"]] == [{"model.optimizer.lr": "0.05"}, {"model.optimizer.lr": "0.1"}]
    assert all(job["status"] == "ok" for job in summary["jobs"])
    for job in summary["jobs"]:
        assert job["value"] == _last(_rows(Path(job["dir"])), "val/acc_top1")
    runs = [run for job in ("0", "1") for run in _wandb_runs(sweep / job)]  # one offline W&B run per job
    assert len(runs) == 2 and {run["group"] for run in runs} == {"synthetic-xsub-tiny"}
    assert [run["name"] for run in runs] == ["synthetic-xsub-tiny #0", "synthetic-xsub-tiny #1"]
    for run in runs:
        assert {"perf/train_samples_per_sec", "lr-SGD", "val/acc_top1", "val/loss"} <= run["keys"]


def test_sweep_summary_tables_and_json(tmp_path, capsys):
    from asgcn_lightning.apps.sweep_summary import main as summary_main

    results = {(0.05, "xsub"): 0.61, (0.1, "xsub"): 0.72, (0.05, "xview"): 0.55, (0.1, "xview"): None}
    for number, ((lr, split), value) in enumerate(results.items()):
        job = tmp_path / str(number)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model=tiny\n- model.optimizer.lr={lr}\n- split={split}\n")
        (job / ".hydra" / "config.yaml").write_text("optimized_metric: val/acc_top1\n")
        if value is not None:  # job 3 failed: no metrics.json
            (job / "metrics.json").write_text(json.dumps({"val/acc_top1": value, "val/loss": 1 - value}))
    summary_main([str(tmp_path)])
    printed = capsys.readouterr().out
    assert "best: job 1 val/acc_top1 = 0.7200 model.optimizer.lr=0.1 split=xsub" in " ".join(printed.split())
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert summary["common_overrides"] == {"model": "tiny"}
    assert summary["per_override"]["split"]["xsub"] == {"jobs": 2, "mean": pytest.approx(0.665), "best": 0.72}
    assert summary["per_override"]["model.optimizer.lr"]["0.1"]["jobs"] == 1  # the failed job is left out
    assert summary["jobs"][3]["status"].startswith("no metrics.json")

    summary_main([str(tmp_path), "--metric", "val/loss", "--mode", "min", "--json", str(tmp_path / "loss.json")])
    assert json.loads((tmp_path / "loss.json").read_text())["best"]["name"] == "1"


def test_slurm_launcher_asks_for_one_task_per_gpu_on_every_node(tmp_path, monkeypatch):
    """The sbatch script the launcher would submit, built by submitit itself (``srun`` faked, nothing submitted)."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                          "trainer.num_nodes=2", "hydra.launcher.partition=gpu",
                                          f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.root_dir={REPO_ROOT}"],
                      return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    scripts = []

    class Job:
        def results(self) -> list[str]:
            return ["done"]

    def submit(executor: submitit.AutoExecutor, function: object, *job_args: list) -> list[Job]:
        scripts.append(executor._executor._make_submission_file_text("python -u train.py", "0"))
        return [Job() for _ in job_args[0]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit)
    assert launcher.launch([["model.optimizer.lr=0.05"], ["model.optimizer.lr=0.1"]], initial_job_idx=0) == \
        ["done", "done"]
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=1440",
                 "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in scripts[0]


# -- checkpoints ----------------------------------------------------------------------------------------

def test_resume_after_sigkill_mid_epoch_ends_like_the_uninterrupted_run(data_dir, tmp_path):
    """SIGKILL in the middle of epoch 1, ``ckpt_path=<last.ckpt>``: the same final metrics, to float equality.

    The training transforms stay random (crop, rotation) and the data order is shuffled from the
    global RNG: only with the random states restored from the checkpoint do both replay.
    """
    from asgcn_lightning.apps.train import train

    overrides = ["model=tiny", "logger=csv", *QUIET, "trainer.max_epochs=3", "trainer.limit_train_batches=4",
                 "trainer.limit_val_batches=3"]
    uninterrupted = train(compose_config("train", overrides, tmp_path / "full", data_dir))

    killed = tmp_path / "killed"
    process = _popen(_train_command(data_dir, killed, *overrides, STEP_CHECKPOINTS), tmp_path / "killed.log")
    deadline = time.monotonic() + 180
    while not list((killed / "checkpoints" / "steps").glob("epoch=1-step=6.ckpt")):
        assert process.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "no mid-epoch checkpoint within 180 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    last = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (0, 4), "killed in epoch 1: last.ckpt is the end of epoch 0"

    resumed = train(compose_config("train", [*overrides, f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}"],
                                   tmp_path / "resumed", data_dir))
    for key in ("val/loss", "val/acc_top1", "train/loss_epoch", "lr-SGD"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-6, abs=1e-7), key
    assert _last(_rows(tmp_path / "resumed"), "step") == _last(_rows(tmp_path / "full"), "step")


def _write_versions_forever(kind: str, path: Path) -> None:
    """Save version 1, 2, 3, ... of an 8 MB checkpoint to ``path`` until killed."""
    from asgcn_lightning.checkpoint_io import AtomicCheckpointIO

    torch.set_num_threads(1)  # a forked child must not use the parent's thread pool
    save = AtomicCheckpointIO().save_checkpoint if kind == "atomic" else torch.save
    version = 0
    while True:
        version += 1
        save({"version": version, "weights": torch.full((2_000_000,), float(version))}, path)


def _kill_while_writing(kind: str, path: Path) -> None:
    """SIGKILL the writer while it writes a new version of ``path`` (after a complete one exists)."""
    import multiprocessing

    process = multiprocessing.get_context("fork").Process(target=_write_versions_forever, args=(kind, path))
    process.start()
    deadline, complete = time.monotonic() + 60, False
    while True:
        assert process.is_alive() and time.monotonic() < deadline
        size = path.stat().st_size if path.is_file() else 0
        complete = complete or size > 8_000_000
        if kind == "atomic" and complete and any(path.parent.glob(f".{path.name}.tmp-{process.pid}")):
            break
        if kind == "plain" and complete and size < 4_000_000:  # early in rewriting the 8 MB
            break
    os.kill(process.pid, signal.SIGKILL)
    process.join()


def test_a_checkpoint_write_killed_midway_never_leaves_a_torn_last_ckpt(tmp_path):
    from asgcn_lightning.checkpoint_io import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    for _ in range(3):
        _kill_while_writing("atomic", path)
        checkpoint = torch.load(path, weights_only=False)  # the previous complete version
        assert torch.equal(checkpoint["weights"], torch.full((2_000_000,), float(checkpoint["version"])))
    assert len(list(tmp_path.glob(".last.ckpt.tmp-*"))) == 3, "each killed save left its partial file"
    AtomicCheckpointIO().save_checkpoint({"version": 0}, path)
    assert not list(tmp_path.glob(".last.ckpt.tmp-*")), "the next save removes the partial files of dead writers"
    # the same kill during a plain torch.save leaves a torn file: the test does hit a write
    plain = tmp_path / "plain.ckpt"
    _kill_while_writing("plain", plain)
    with pytest.raises(Exception):  # noqa: B017 - torch reports a torn zip in several ways
        torch.load(plain, weights_only=False)


# -- speed switches -------------------------------------------------------------------------------------

class ActivationDtypes(L.Callback):
    """Records the dtype of the classifier's output in training steps (bf16 under CPU autocast)."""

    seen: ClassVar[set[torch.dtype]] = set()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.network.head.fc.register_forward_hook(lambda module, args, out: self.seen.add(out.dtype))


def test_bf16_mixed_and_thread_count_on_cpu(compose):
    from asgcn_lightning.apps.train import train

    threads = torch.get_num_threads()
    try:
        cfg = compose(["model=tiny", "logger=csv", *QUIET, "trainer.precision=bf16-mixed", "torch_threads=1",
                       "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                       "+callbacks.dtypes={_target_:test_scale.ActivationDtypes}"])
        metrics = train(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert ActivationDtypes.seen == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()) and metrics["val/loss"] > 0
    assert metrics["perf/train_samples_per_sec"] > 0
    assert compose(["trainer=gpu"]).trainer.precision == "16-mixed"  # fp16 autocast: GPUs only, composed here


def test_compile_switch_compiles_the_training_step_and_keeps_checkpoint_keys(compose):
    import torch._dynamo.utils

    from asgcn_lightning.apps.components import build_datamodule, build_module
    from asgcn_lightning.apps.train import train

    small = ["model=tiny", "model.network.channels=[8]", "model.network.strides=[1]", "logger=csv", *QUIET]
    cfg = compose([*small, "model.compile=true", "+trainer.fast_dev_run=1"])
    torch._dynamo.utils.counters.clear()
    metrics = train(cfg)  # runs either way
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    module = build_module(cfg, build_datamodule(cfg))
    keys = set(module.state_dict())
    module.configure_model()
    assert set(module.state_dict()) == keys, "compiled and plain checkpoints must load into each other"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0, "nothing was compiled"


def test_resume_at_the_aim_stage_boundary_continues_in_the_main_stage_exactly(data_dir, tmp_path):
    """A run stopped after its AIM stage and resumed from last.ckpt ends like the run that never stopped."""
    from asgcn_lightning.apps.train import train

    overrides = ["model=asgcn_tiny", "model.aim.pretrain_epochs=1", "logger=csv", "torch_threads=1", *QUIET,
                 "trainer.limit_train_batches=3", "trainer.limit_val_batches=2"]
    uninterrupted = train(compose_config("train", [*overrides, "trainer.max_epochs=3"], tmp_path / "full", data_dir))
    train(compose_config("train", [*overrides, "trainer.max_epochs=1"], tmp_path / "aim", data_dir))
    assert [float(r["stage"]) for r in _rows(tmp_path / "aim") if r.get("stage")] == [0.0]
    resumed = train(compose_config("train", [*overrides, "trainer.max_epochs=3",
                                             f"ckpt_path={tmp_path / 'aim' / 'checkpoints' / 'last.ckpt'}"],
                                   tmp_path / "resumed", data_dir))
    assert [float(r["stage"]) for r in _rows(tmp_path / "resumed") if r.get("stage")] == [1.0, 1.0]
    for key in ("val/loss", "val/acc_top1", "val/mpjpe", "train/loss_epoch", "lr-SGD"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-6, abs=1e-7), key

