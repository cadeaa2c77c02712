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
from helpers import user_folder
from omegaconf import OmegaConf

QUIET = ["test_after_fit=false"]


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

def test_three_ddp_cpu_processes_train_the_one_process_model_with_uneven_shards(data_dir, tmp_path):
    """3 gloo processes × batch 10 against 1 process × batch 30: the same model, to float64 rounding.

    The complete AS-GCN at toy size (main stage), its A-links Gumbel-sampled while it trains, with
    dropout. Five classes with 30 % held out for testing leave 221 training samples, whose last
    global batch of 11 is split 4, 4 and 3 over the processes, and validation (29) and test (110)
    shards of unequal sizes, so both the batch split (no repeated samples, losses weighted by each
    process's share) and the evaluation shards (each sample once) are uneven. BatchNorm is
    synchronised (the default of several processes), and augmentation, dropout and Gumbel draws come
    with the samples: nothing differs but the order of float additions. In float64
    (``trainer.precision=64-true``) that order changes results by a few units of 2.2e-16 per
    operation, far below 1e-6 relative after the 20 steps, while any real difference (one repeated
    sample, unsynchronised statistics, one other dropout mask) moves the numbers by more than 1e-4.
    """
    common = ["model=asgcn_tiny", "model.aim.pretrain_epochs=0", "model.network.dropout=0.5", "split=random",
              "dataset.classes=[1,2,3,4,5]", "split.test_fraction=0.3", "trainer.max_epochs=2", "logger=csv",
              "torch_threads=1", "test_after_fit=true", "trainer.precision=64-true", "trainer=ddp_sim"]
    one = _popen(_train_command(data_dir, tmp_path / "one", *common, "trainer.devices=1", "dataset.batch_size=30"),
                 tmp_path / "one.log")
    three = _popen(_train_command(data_dir, tmp_path / "three", *common, "trainer.devices=3", "dataset.batch_size=10"),
                   tmp_path / "three.log")
    for process, name in ((one, "one"), (three, "three")):
        process.wait(timeout=600)
        _check(process, (tmp_path / f"{name}.log").read_text())
    one_rows, three_rows = _rows(tmp_path / "one"), _rows(tmp_path / "three")
    for key in ("val/loss", "val/acc_top1", "test/loss", "test/acc_top1"):
        assert _last(three_rows, key) == pytest.approx(_last(one_rows, key), rel=1e-6), key
    seen = {}
    for run in ("one", "three"):  # every validation and test sample counted exactly once over the processes
        for split in ("val", "test"):
            with open(tmp_path / run / f"per_class_{split}.csv") as handle:
                seen[run, split] = sum(int(row["samples"]) for row in csv.DictReader(handle))
    assert seen["one", "test"] == seen["three", "test"] == 110, seen
    assert seen["one", "val"] == seen["three", "val"] == 29, seen


class AimSnapshots(L.Callback):
    """Saves this process's AIM parameters after every training epoch as ``aim-<rank>-<epoch>.pt`` in ``dirpath``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parameters = {name: value.detach().clone() for name, value in pl_module.network.aim.named_parameters()}
        torch.save(parameters, self.dirpath / f"aim-{trainer.global_rank}-{trainer.current_epoch}.pt")


@pytest.mark.parametrize("mode", ["frozen", "finetune", "separate"])
def test_every_aim_mode_trains_under_ddp_across_the_stage_boundary(mode, data_dir, tmp_path):
    """One AIM step, then one main step, on 2 gloo processes: no unused-parameter error, processes in step.

    The processes are forked and told their rank as torchrun would (Lightning launches nothing),
    which skips two interpreter starts per mode; the popen launch is the test above.
    """
    cfg = compose_config("train", [
        "model=asgcn_tiny", f"model.aim.mode={mode}", "model.aim.pretrain_epochs=1", "trainer=ddp_sim", "logger=csv",
        "torch_threads=1", *QUIET, "trainer.max_epochs=2", "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "dataset.batch_size=4",
        f"+callbacks.aim={{_target_:test_scale.AimSnapshots,dirpath:{tmp_path}}}"], tmp_path / "run", data_dir)
    _run_ranks(_train_worker, cfg)
    assert [float(r["stage"]) for r in _rows(tmp_path / "run") if r.get("stage")] == [0.0, 1.0]
    aim = {(rank, epoch): torch.load(tmp_path / f"aim-{rank}-{epoch}.pt") for rank in (0, 1) for epoch in (0, 1)}
    for name in aim[0, 0]:
        for epoch in (0, 1):  # gradients all-reduced in both stages (separate: both backward passes of a step)
            assert torch.equal(aim[0, epoch][name], aim[1, epoch][name]), f"{name} differs between the processes"
    changed = [name for name in aim[0, 0] if not torch.equal(aim[0, 0][name], aim[0, 1][name])]
    assert bool(changed) == (mode != "frozen"), changed  # the main stage trains the AIM unless it is frozen


def _train_worker(rank: int, port: int, cfg: object) -> None:
    from asgcn_lightning.apps.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank), NODE_RANK="0")
    train(cfg)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_ranks(worker: object, *args: object, timeout: float = 120) -> None:
    """``worker(rank, port, *args)`` in 2 forked processes (one gloo group); fails if one fails or hangs.

    Forked, the processes start at once with everything imported; each sets one thread, as a forked
    child must not use the parent's thread pool.
    """
    import torch.multiprocessing as mp

    context = mp.start_processes(worker, args=(_free_port(), *args), nprocs=2, start_method="fork", join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the processes did not finish within {timeout} s")


def test_popen_ddp_inside_a_sweep_is_refused_and_spawn_allowed(compose):
    from asgcn_lightning.apps.components import build_trainer
    from asgcn_lightning.apps.train import check_sweep_launch, train
    from asgcn_lightning.errors import UserError

    cfg = compose(["model=tiny", "trainer=ddp_sim", "logger=csv", "hydra.mode=MULTIRUN", *QUIET])
    with pytest.raises(UserError, match="start_method=spawn"):
        train(cfg)  # refused before any process is launched
    cfg.trainer.strategy.start_method = "spawn"
    check_sweep_launch(build_trainer(cfg, loggers=[]))


def test_torchrun_with_a_sweep_is_refused(compose, monkeypatch):
    from asgcn_lightning.apps.train import train
    from asgcn_lightning.errors import UserError

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # what torchrun sets in every process it starts
    with pytest.raises(UserError, match=r"torchrun starts train\.py once per process"):
        train(compose(["model=tiny", "logger=csv", "hydra.mode=MULTIRUN", *QUIET]))


def test_ddp_evaluation_sees_every_sample_exactly_once(tmp_path):
    """An odd number of evaluation samples over 2 processes: no sample repeated to even them out; a process
    left without a sample evaluates a stand-in that no metric counts."""
    from asgcn_lightning.data.sources.synthetic import prepare_synthetic

    prepare_synthetic(tmp_path / "syn", num_subjects=3, num_cameras=1, num_setups=1)
    _run_ranks(_evaluation_shard_worker, tmp_path / "syn")


def _evaluation_shard_worker(rank: int, port: int, store_dir: Path) -> None:
    import torch.distributed as dist

    from asgcn_lightning.data.datamodule import SkeletonDataModule, evaluation_sampler
    from asgcn_lightning.data.sampling import NO_LABEL, STAND_IN
    from asgcn_lightning.data.splits import MetadataSplit
    from asgcn_lightning.models.module import NO_LABEL as IGNORED_BY_METRICS

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    module = SkeletonDataModule(store_dir, MetadataSplit("xsub", "subject", [1, 2]), classes=[1, 2, 3], batch_size=2)
    module.setup()
    assert len(module.test_set) == 3
    mine = list(iter(module.test_dataloader().sampler))
    shards: list[list[int]] = [[], []]
    dist.all_gather_object(shards, mine)
    assert sorted(shards[0] + shards[1]) == [0, 1, 2] and len(shards[0]) == 2 and len(shards[1]) == 1
    # fewer samples than processes: the second process evaluates a stand-in, labelled so no metric counts it
    alone = list(iter(evaluation_sampler(torch.utils.data.Subset(module.test_set, [0]))))
    assert alone == ([0] if rank == 0 else [STAND_IN])
    assert module.test_set[STAND_IN][1] == NO_LABEL == IGNORED_BY_METRICS
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_equals_batchnorm_over_the_global_batch():
    """Forward, input and weight gradients and running statistics of 2 processes × 8 = one BatchNorm over 16."""
    _run_ranks(_sync_batchnorm_worker)


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


def test_every_process_resumes_its_own_random_states():
    _run_ranks(_random_state_worker)


def _random_state_worker(rank: int, port: int) -> None:
    import random

    import numpy as np
    import torch.distributed as dist

    from asgcn_lightning.resume import RandomStateCheckpoint

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    callback = RandomStateCheckpoint()

    def draw() -> tuple[list[float], float, float]:
        return torch.rand(3).tolist(), float(np.random.rand()), random.random()

    L.seed_everything(rank, verbose=False)  # the processes' streams differ, as after unequal shards
    saved = callback.state_dict()  # a collective, like every checkpoint save under DDP
    assert len(saved["ranks"]) == 2
    expected = draw()
    draws: list[object] = [None, None]
    dist.all_gather_object(draws, expected)
    assert draws[0] != draws[1]
    L.seed_everything(99, verbose=False)
    callback.load_state_dict(saved)
    assert draw() == expected, "each process continues its own streams"
    callback.load_state_dict({"ranks": saved["ranks"][:1]})  # saved by 1 process: rank 0's for every process
    assert draw() == draws[0]
    dist.destroy_process_group()


def test_ddp_configs_and_learning_rate_scaling(compose):
    from hydra.utils import instantiate

    from asgcn_lightning.apps.components import build_datamodule, build_module, resolve_lr_scaling

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
    assert resolve_lr_scaling(cfg) == 1.0  # auto on a machine without GPUs: one CPU process
    cfg = compose(["trainer.devices=auto"])
    assert resolve_lr_scaling(cfg) == 1.0  # rule none: nothing to count
    assert compose(["trainer=ddp_spawn"]).trainer.strategy.start_method == "spawn"


# -- sweeps -------------------------------------------------------------------------------------------

def _wandb_runs(run_dir: Path) -> list[dict]:
    """The offline W&B runs under ``run_dir``, read from the run files: group, name, tags, the logged
    config, the logged history keys and the last version of each logged table."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    runs = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/*.wandb")):
        store, run, config, keys, tables = DataStore(), {}, {}, set(), {}
        store.open_for_scan(str(path))
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = {"group": record.run.run_group, "name": record.run.display_name, "tags": list(record.run.tags)}
            elif kind == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
            elif kind == "history":
                for item in record.history.item:
                    keys.add(item.key or "/".join(item.nested_key))
                    if list(item.nested_key[1:]) == ["path"] and item.value_json.endswith('.table.json"'):
                        tables[item.nested_key[0]] = json.loads((path.parent / "files" / json.loads(
                            item.value_json)).read_text())
        runs.append({**run, "config": config, "keys": keys, "tables": tables})
    return runs


def test_optuna_sweep_of_ddp_jobs_through_the_aim_stage_runs_and_summarises(data_dir, tmp_path):
    """``hparams_search=optuna_lr``: 2 trials, each real DDP (2 spawned gloo workers) through the AIM stage.

    Spawned workers (start_method=spawn) are what makes DDP safe inside a sweep: each job starts
    and ends its own workers (see test_popen_ddp_inside_a_sweep_is_refused_and_spawn_allowed).
    """
    folder = user_folder(tmp_path, data_dir)
    command = [sys.executable, "train.py", "hparams_search=optuna_lr", "hydra.sweeper.n_trials=2", *QUIET,
               "model=asgcn_tiny", "trainer=ddp_sim", "trainer.strategy.start_method=spawn",
               "torch_threads=1", "logger=csv", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
               "trainer.limit_val_batches=2", "dataset.batch_size=4"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
    _check(result, result.stdout + result.stderr)
    (sweep,) = (folder / "logs" / "train" / "multiruns").glob("*")
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    values = [json.loads((sweep / job / "metrics.json").read_text())["best/val/acc_top1"] for job in ("0", "1")]
    assert results.best_value == max(values)  # each trial reported its best checkpoint's score

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
    folder = user_folder(tmp_path, data_dir)
    command = [sys.executable, "train.py", "-m", *QUIET, "model=tiny", "trainer.max_epochs=2",
               "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "model.optimizer.lr=0.05,0.1"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=180)
    _check(result, result.stdout + result.stderr)
    (sweep,) = (folder / "logs" / "train" / "multiruns").glob("*")
    assert (sweep / "sweep_summary.json").is_file()  # written by the sweep itself after its last job

    from asgcn_lightning.apps.sweep_summary import main as summary_main

    summary_main([str(sweep)])
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["swept"] for job in summary["jobs"]] == [{"model.optimizer.lr": "0.05"}, {"model.optimizer.lr": "0.1"}]
    assert all(job["status"] == "ok" for job in summary["jobs"])
    for job in summary["jobs"]:  # the best epoch's accuracy (the best checkpoint's), as the sweeper got it
        accuracies = [float(r["val/acc_top1"]) for r in _rows(Path(job["dir"])) if r.get("val/acc_top1")]
        assert job["value"] == pytest.approx(max(accuracies), abs=1e-7)
    runs = [run for job in ("0", "1") for run in _wandb_runs(sweep / job)]  # one offline W&B run per job
    assert len(runs) == 2 and {run["group"] for run in runs} == {"synthetic-xsub-tiny"}
    assert [run["name"] for run in runs] == ["synthetic-xsub-tiny #0", "synthetic-xsub-tiny #1"]
    assert [run["config"]["model"]["optimizer"]["lr"] for run in runs] == [0.05, 0.1]  # the composed config
    for run in runs:
        assert run["tags"] == ["synthetic", "xsub", "tiny"]
        assert run["config"]["trainer"]["max_epochs"] == 2 and run["config"]["experiment_name"] == "synthetic-xsub-tiny"
        assert {"perf/train_samples_per_sec", "lr-SGD", "val/acc_top1", "val/loss"} <= run["keys"]
        table = run["tables"]["val/per_class_accuracy"]
        assert table["columns"] == ["class", "samples", "accuracy"] and len(table["data"]) == 10
        assert sum(row[1] for row in table["data"]) == 32  # the 2 validation batches of 16


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
    # a run's best checkpoint scored better than its last epoch: its score is what the sweeper got
    (tmp_path / "2" / "metrics.json").write_text(json.dumps({"val/acc_top1": 0.55, "best/val/acc_top1": 0.66,
                                                             "val/loss": 0.45}))
    summary_main([str(tmp_path)])
    printed = capsys.readouterr().out
    assert "best: job 1 val/acc_top1 = 0.7200 model.optimizer.lr=0.1 split=xsub" in " ".join(printed.split())
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert summary["common_overrides"] == {"model": "tiny"}
    assert summary["per_override"]["split"]["xsub"] == {"jobs": 2, "mean": pytest.approx(0.665), "best": 0.72}
    assert summary["jobs"][2]["value"] == 0.66
    assert summary["per_override"]["model.optimizer.lr"]["0.1"]["jobs"] == 1  # the failed job is left out
    assert summary["jobs"][3]["status"].startswith("no metrics.json")

    summary_main([str(tmp_path), "--metric", "val/loss", "--mode", "min", "--json", str(tmp_path / "loss.json")])
    assert json.loads((tmp_path / "loss.json").read_text())["best"]["name"] == "1"


def test_the_sweeper_gets_the_best_checkpoints_score_not_the_last_epochs(monkeypatch, capsys):
    from asgcn_lightning.apps import train as train_app

    monkeypatch.setattr(train_app, "train", lambda cfg: {"val/acc_top1": 0.5, "best/val/acc_top1": 0.75,
                                                         "val/loss": 1.2})
    assert train_app.main(OmegaConf.create({"optimized_metric": "val/acc_top1"})) == 0.75  # hydra passes a cfg through
    assert train_app.main(OmegaConf.create({"optimized_metric": "val/loss"})) == 1.2  # not what checkpoints rank by
    with pytest.raises(SystemExit):
        train_app.main(OmegaConf.create({"optimized_metric": "val/mpjpe"}))
    assert "optimized_metric 'val/mpjpe' was not logged" in capsys.readouterr().err


def test_slurm_launcher_asks_for_one_task_per_gpu_on_every_node(tmp_path, monkeypatch):
    """The sbatch script the launcher submits, written by submitit itself to a fake ``sbatch`` (nothing submitted).

    Only waiting for the jobs' results is faked (``SlurmJob.results``, a public method); a real run
    would poll ``sacct`` until the cluster has run them.
    """
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    sbatch = f'#!/bin/sh\ncp "$1" {tmp_path / "submitted.sh"}\necho "Submitted batch job 4242"\n'
    for name, script in (("srun", "#!/bin/sh\n"), ("sbatch", sbatch)):  # submitit looks for srun to detect SLURM
        (fake_bin / name).write_text(script)
        (fake_bin / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                          "trainer.num_nodes=2", "hydra.launcher.partition=gpu",
                                          f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # as the sweep's own callback does before the launcher starts
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    monkeypatch.setattr(submitit.SlurmJob, "results", lambda job: [f"done {job.job_id}"])
    assert launcher.launch([["model.optimizer.lr=0.05"], ["model.optimizer.lr=0.1"]], initial_job_idx=0) == \
        ["done 4242_0", "done 4242_1"]  # one array job, a task per sweep job
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=1440",
                 "--signal=USR2@120", "--array=0-1%2"):  # array_parallelism 8, capped at the 2 jobs
        assert f"#SBATCH {line}\n" in script
    assert "srun" in script and "submitit.core._submit" in script


# -- checkpoints ----------------------------------------------------------------------------------------

class StopAfterEpoch(L.Callback):
    """Ends the fit cleanly after epoch ``epoch``: a run stopped at a known epoch boundary."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def _best_checkpoints(run_dir: Path) -> dict:
    """The best-checkpoint state in a run's last.ckpt: score, file name and the ranked files' names."""
    callbacks = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    state = next(value for key, value in callbacks.items() if key.startswith("StageAwareModelCheckpoint"))
    return {"score": float(state["best_model_score"]), "file": Path(state["best_model_path"]).name,
            "ranked": sorted(Path(path).name for path in state["best_k_models"])}


def test_resume_after_sigkill_mid_epoch_ends_like_the_uninterrupted_run(data_dir, tmp_path):
    """AS-GCN: 1 AIM epoch and 3 main epochs, SIGKILLed in the middle of epoch 2, resumed in another folder.

    ``ckpt_path=<last.ckpt>`` (the end of epoch 1) gives the same final metrics, to float equality,
    in the main stage, and keeps the ranking of the best checkpoints (all kept, ``save_top_k=-1``,
    so the epoch-1 checkpoint of the killed run has to stay in it). The training transforms stay
    random (crop, rotation) and the data order shuffled: both replay because they are functions of
    (seed, epoch, position), and the resumed run must start the sampler at the checkpoint's epoch.
    """
    from asgcn_lightning.apps.train import train

    overrides = ["model=asgcn_tiny", "model.aim.pretrain_epochs=1", "logger=csv", "torch_threads=1", *QUIET,
                 "trainer.max_epochs=4", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                 "callbacks.model_checkpoint.save_top_k=-1"]
    killed = tmp_path / "killed"  # one optimiser step per batch: step 8 is the 2nd batch of epoch 2
    process = subprocess.Popen(_train_command(data_dir, killed, *overrides, "+callbacks.kill={_target_:"
                                              "helpers.KillAtStep,step:8}"), cwd=REPO_ROOT,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests")},
                               stdout=(tmp_path / "killed.log").open("w"), stderr=subprocess.STDOUT)
    uninterrupted = train(compose_config("train", overrides, tmp_path / "full", data_dir))  # meanwhile
    assert process.wait(timeout=240) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-4000:]
    last = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 6), "killed in epoch 2: last.ckpt is the end of epoch 1"

    resumed = train(compose_config("train", [*overrides, f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}"],
                                   tmp_path / "resumed", data_dir))
    for key in ("val/loss", "val/acc_top1", "val/mpjpe", "train/loss_epoch", "lr-SGD"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-6, abs=1e-7), key
    assert [float(r["stage"]) for r in _rows(tmp_path / "full") if r.get("stage")] == [0.0, 1.0, 1.0, 1.0]
    assert [float(r["stage"]) for r in _rows(tmp_path / "resumed") if r.get("stage")] == [1.0, 1.0]
    assert _last(_rows(tmp_path / "resumed"), "step") == _last(_rows(tmp_path / "full"), "step")
    best = _best_checkpoints(tmp_path / "full")
    assert len(best["ranked"]) == 3 and best["score"] == resumed["best/val/acc_top1"]
    assert _best_checkpoints(tmp_path / "resumed") == best  # exact: the same validations
    assert not list((tmp_path / "resumed" / "checkpoints").glob("epoch001-*")), "epoch 1 stays in the killed run"


def test_a_resume_into_another_folder_keeps_the_best_checkpoints_that_still_exist(tmp_path):
    from asgcn_lightning.callbacks import StageAwareModelCheckpoint

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    files = {old / f"epoch00{epoch}.ckpt": torch.tensor(score) for epoch, score in ((1, 0.5), (2, 0.7), (3, 0.8))}
    for path in list(files)[:2]:  # epoch 3's file was deleted since
        path.touch()
    previous = StageAwareModelCheckpoint(dirpath=old, monitor="val/acc_top1", mode="max", save_top_k=3)
    previous.best_k_models = {str(path): score for path, score in files.items()}
    previous.best_model_path, previous.best_model_score = str(old / "epoch003.ckpt"), torch.tensor(0.8)
    resumed = StageAwareModelCheckpoint(dirpath=new, monitor="val/acc_top1", mode="max", save_top_k=1)
    with pytest.warns(UserWarning, match="no longer exist"):
        resumed.load_state_dict(previous.state_dict())
    assert resumed.best_model_score == pytest.approx(0.7) and resumed.best_model_path == str(old / "epoch002.ckpt")
    assert list(resumed.best_k_models) == [str(old / "epoch002.ckpt")]  # save_top_k=1 here
    assert resumed.kth_best_model_path == str(old / "epoch002.ckpt")
    # the old run's files are never removed when a better one replaces them: locally (Lightning) nor remotely
    remote = StageAwareModelCheckpoint(dirpath="memory://new/checkpoints")
    assert not remote._should_remove_checkpoint(None, "memory://old/checkpoints/a.ckpt", "memory://new/checkpoints/b")
    assert remote._should_remove_checkpoint(None, "memory://new/checkpoints/a.ckpt", "memory://new/checkpoints/b")


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


def test_bf16_mixed_and_thread_count_on_cpu_and_16_mixed_refused_there(compose):
    from asgcn_lightning.apps.components import build_trainer
    from asgcn_lightning.apps.train import train
    from asgcn_lightning.errors import UserError

    threads = torch.get_num_threads()
    wanted = 2 if threads == 1 else 1  # another count than the current one, or the check shows nothing
    try:
        cfg = compose(["model=tiny", "logger=csv", *QUIET, "trainer.precision=bf16-mixed", f"torch_threads={wanted}",
                       "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                       "+callbacks.dtypes={_target_:test_scale.ActivationDtypes}"])
        metrics = train(cfg)
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(threads)
    assert ActivationDtypes.seen == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()) and metrics["val/loss"] > 0
    assert metrics["perf/train_samples_per_sec"] > 0
    assert compose(["trainer=gpu"]).trainer.precision == "16-mixed"  # fp16 autocast: GPUs only, composed here
    # Lightning would train in bf16-mixed instead, with a warning only
    with pytest.raises(UserError, match=r"16-mixed .* needs a GPU; on CPUs use trainer\.precision=bf16-mixed"):
        build_trainer(compose(["trainer=ddp", "trainer.accelerator=cpu"]), loggers=[])


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
    train(compose_config("train", [*overrides, "trainer.max_epochs=3", "+callbacks.stop={_target_:"
                                   "test_scale.StopAfterEpoch,epoch:0}"], tmp_path / "aim", data_dir))
    assert [float(r["stage"]) for r in _rows(tmp_path / "aim") if r.get("stage")] == [0.0]
    resumed = train(compose_config("train", [*overrides, "trainer.max_epochs=3",
                                             f"ckpt_path={tmp_path / 'aim' / 'checkpoints' / 'last.ckpt'}"],
                                   tmp_path / "resumed", data_dir))
    assert [float(r["stage"]) for r in _rows(tmp_path / "resumed") if r.get("stage")] == [1.0, 1.0]
    for key in ("val/loss", "val/acc_top1", "val/mpjpe", "train/loss_epoch", "lr-SGD"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-6, abs=1e-7), key

