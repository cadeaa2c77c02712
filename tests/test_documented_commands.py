"""Every command line of README.md and docs/*.md, run as a user types it, in a checkout of its own.

How each is run is in ``command_registry.REGISTRY``; ``test_every_documented_command_is_in_the_registry``
fails when the documents and the registry drift apart.

The mission's command, ``python train.py dataset=mads split=xview trainer.devices=4``, runs verbatim
(plus the shrinking overrides) on a MADS store prepared by the README's command from real OpenPose
kicks, sized so that no split divides evenly over the processes: 4 gloo processes must run to the
end with the default callbacks, progress bar and loggers, and end with the numbers of one process
that trains on the same global batches: the processes split every global batch without repeating
samples, BatchNorm is synchronised, random draws come with the samples, and evaluation counts
every held-out sample once. Only the order of float32 additions differs.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from acceptance import SMALL, clear_failure, finished_training, metrics, run_command
from command_registry import REGISTRY, Fails, NotRun
from conftest import REPO_ROOT
from documented import documented_commands
from user_workspace import Workspace


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("user"))


#: runs that several tests need and that take long enough to make once per worker (pytest -n): the tiny
#: model's few seconds are cheaper to repeat than to keep a worker waiting for its group
SHARED_RUNS = {"default_ckpt": "default", "evaluation_json": "default", "openpose_ckpt": "openpose",
               "sweep_dir": "sweep", "oneshot_run": "oneshot", "stream_ckpts": "streams"}
PRODUCERS = {"python train.py": "default", "python train.py dataset=openpose_folder split=random": "openpose",
             "python train.py -m model.optimizer.lr=0.05,0.1 split=xsub,xview": "sweep",
             "python train.py experiment=oneshot_natops dataset.root=<folder> torch_threads=1": "oneshot",
             "python train.py experiment=natops model=tiny stream=$s dataset.root=<folder> torch_threads=1": "streams"}


def shared_run(command: str) -> str:
    """The expensive run (or prepared store) ``command`` needs: tests that share one run in one worker (pytest -n)."""
    if command in PRODUCERS:
        return PRODUCERS[command]
    how = REGISTRY[command]
    for value in getattr(how, "subs", {}).values():
        for name in re.findall(r"\{(\w+)\}", value):
            if name in SHARED_RUNS:
                return SHARED_RUNS[name]
    after = getattr(how, "after", ())
    return shared_run(after[0]) if after else command


def _params() -> list:
    params = []
    for command, how in REGISTRY.items():
        marks = [pytest.mark.acceptance, pytest.mark.xdist_group(shared_run(command))]
        if getattr(how, "slow", False):
            marks.append(pytest.mark.slow)
        if getattr(how, "xfail", ""):
            marks.append(pytest.mark.xfail(strict=True, reason=how.xfail))
        params.append(pytest.param(command, marks=marks, id=command[:90]))
    return params


def test_every_documented_command_is_in_the_registry():
    documented = documented_commands(REPO_ROOT)
    missing = sorted(set(documented) - set(REGISTRY))
    stale = sorted(set(REGISTRY) - set(documented))
    assert not missing, "documented commands no acceptance test runs (add them to REGISTRY):\n" + "\n".join(
        f"{documented[command]}: {command}" for command in missing)
    assert not stale, "REGISTRY commands no longer in README.md or docs/*.md:\n" + "\n".join(stale)


def test_the_extractor_reads_blocks_comments_continuations_and_readme_tables():
    from documented import block_commands, inline_commands

    text = ("Run\n\n```bash\npython train.py a=1   # note\nmake x && make y\nls -l\n"
            "python -m m b=2 \\\n    c=3\n```\n\n    torchrun --x train.py \\\n      d=4\n\n"
            "| a | `python train.py e=5` | `asgcn x` |\n")
    assert block_commands(text) == ["python train.py a=1", "make x && make y", "python -m m b=2 c=3",
                                    "torchrun --x train.py d=4"]
    assert inline_commands(text) == ["python train.py e=5"]


@pytest.mark.parametrize("command", _params())
def test_documented_command(command: str, workspace: Workspace) -> None:
    how = REGISTRY[command]
    if isinstance(how, NotRun):
        pytest.skip(how.reason)
    done = workspace.result(command)
    if isinstance(how, Fails):
        clear_failure(done, how.names, how.prefix)
    else:
        how.check(done, workspace)


@pytest.mark.acceptance
def test_last_ckpt_holds_the_last_epoch(workspace: Workspace) -> None:
    """The 2-epoch tiny run: last.ckpt is epoch 1 whichever epoch was best."""
    workspace.resource("tiny_run")
    assert workspace.tiny_last_epoch == 1


# -- the mission's command -------------------------------------------------------------------------------

MISSION = "python train.py dataset=mads split=xview trainer.devices=4"
PREPARE_MADS = "python -m asgcn_lightning.prepare dataset=mads dataset.root=/data/MADS"
PER_PROCESS_BATCH = 16  # dataset.batch_size of configs/dataset/mads.yaml: per process
DDP_TIMEOUT_S = 240  # 4 interpreters on 2 cores, one training step, validation and test; a hang ends here
UNIT_ROUNDOFF = 2.0**-24  # float32


def float32_tolerance(checkpoint: Path, samples: int) -> float:
    """Relative bound on how far two summation orders can move the mean loss of ``samples`` samples.

    An inner product of length k computed in float32 in any order is within γ_k ≈ k·u (relative to
    the sum of the absolute terms) of the exact one (Higham, Accuracy and Stability of Numerical
    Algorithms, §3.1); to first order these add up over the layers, whose reduction lengths are the
    fan-ins of the network's weights, and the mean over the samples adds γ_n.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    fan_ins = sum(int(np.prod(tensor.shape[1:])) for tensor in state.values() if tensor.ndim >= 2)
    return (fan_ins + samples) * UNIT_ROUNDOFF


def store_counts(store: Path) -> dict[int, int]:
    """Samples per camera of a prepared store."""
    with np.load(store / "index.npz") as index:
        cameras, counts = np.unique(index["camera"], return_counts=True)
    return dict(zip(cameras.tolist(), counts.tolist(), strict=True))


def samples_seen(run_dir: Path, split: str) -> int:
    with open(run_dir / f"per_class_{split}.csv") as handle:
        return sum(int(row["samples"]) for row in csv.DictReader(handle))


def split_sizes(run_dir: Path) -> dict[str, int]:
    """The split's sizes as the run announced them, before any process saw a sample."""
    log = (run_dir / "train.log").read_text()
    found = re.search(r"split \w+: train (\d+), validation (\d+), test (\d+) samples", log)
    assert found, "the run names its split sizes"
    return dict(zip(("train", "val", "test"), map(int, found.groups()), strict=True))


def each_sample_once(run_dir: Path) -> None:
    """Validation and test counted every sample of their split exactly once: none repeated, none dropped."""
    sizes = split_sizes(run_dir)
    assert sizes["train"] + sizes["val"] == 10 and sizes["test"] == 7, sizes
    assert {split: samples_seen(run_dir, split) for split in ("val", "test")} == {"val": sizes["val"], "test": 7}


@pytest.fixture(scope="module")
def mads_store(workspace: Workspace) -> Path:
    done = workspace.result(PREPARE_MADS)
    assert done.returncode == 0, done.output()
    store = workspace.checkout / "data" / "mads"
    counts = store_counts(store)
    train, held_out = counts[1] + counts[2], counts[3]
    assert (train, held_out) == (10, 7), counts
    for processes in (2, 3, 4):  # no split (nor the store) divides evenly over the processes
        assert held_out % processes and (train + held_out) % processes, (processes, counts)
        assert train % processes or processes == 2
    return store


@pytest.mark.acceptance
@pytest.mark.slow
@pytest.mark.xdist_group(PREPARE_MADS)
def test_the_mission_command_runs_four_processes_to_the_end(workspace: Workspace, mads_store: Path) -> None:
    done = run_command(" ".join([MISSION, *SMALL]), workspace.checkout, timeout=DDP_TIMEOUT_S)
    run_dir = finished_training(done)
    each_sample_once(run_dir)  # the validation split (carved from cameras 1-2) is smaller than 4 processes
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "devices: 4" in config and "enable_progress_bar: true" in config and "progress_bar:" in config

    # the same checkpoint evaluated by one process: the synced metrics of 4 uneven shards, to float32 order
    best = next((run_dir / "checkpoints").glob("epoch*.ckpt"))
    evaluated = run_command(f"python eval.py ckpt_path={best} torch_threads=1", workspace.checkout)
    assert evaluated.returncode == 0, evaluated.output()
    one = json.loads((evaluated.run_dir("eval/runs") / "evaluation.json").read_text())["metrics"]
    four = metrics(run_dir)
    assert four["test/acc_top1"] == one["test/acc_top1"], (four, one)  # counts of correct samples
    tolerance = float32_tolerance(best, samples=7)
    assert four["test/loss"] == pytest.approx(one["test/loss"], rel=tolerance), (four, one, tolerance)

    # one process trained on the same global batches ends with the same numbers. To first order each
    # optimiser step adds at most one more forward-backward's rounding to the evaluation's: one step here.
    single = run_command(" ".join([MISSION.replace("trainer.devices=4", "trainer.devices=1"), *SMALL,
                                   f"dataset.batch_size={4 * PER_PROCESS_BATCH}"]), workspace.checkout)
    single_dir = finished_training(single)
    each_sample_once(single_dir)
    alone, steps = metrics(single_dir), 1
    for split in ("val", "test"):
        assert four[f"{split}/acc_top1"] == alone[f"{split}/acc_top1"], (split, four, alone)
        assert four[f"{split}/loss"] == pytest.approx(alone[f"{split}/loss"], rel=(1 + steps) * tolerance), split


@pytest.mark.acceptance
def test_the_mission_command_asks_for_one_gpu_per_process_where_there_are_gpus() -> None:
    """Composition only (no GPU here): the command line as typed, without a trainer=gpu/ddp the user did not type."""
    from conftest import CONFIG_DIR
    from hydra import compose, initialize_config_dir

    import asgcn_lightning.config  # noqa: F401 -- registers the typed schemas the configs extend, as the entry points do

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=MISSION.split()[2:])
    assert cfg.trainer.devices == 4 and cfg.dataset.batch_size == PER_PROCESS_BATCH
    assert cfg.trainer.accelerator in ("auto", "gpu"), cfg.trainer.accelerator
