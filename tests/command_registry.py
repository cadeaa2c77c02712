"""Every command line of README.md and docs/*.md, and how the acceptance tests run it.

``REGISTRY`` maps each documented command (exactly as the documents print it, see ``documented.py``)
to how it is run: which placeholders (``<ckpt>``, ``/data/...``) become which real files, which
shrinking overrides are appended (epochs, batches, width, one thread: never launchers, callbacks,
progress bars, loggers or paths), and what the command must deliver, or, where this machine lacks
the hardware or service, the one-line error it must stop with. Commands that cannot run within the
suite's time budget say so as a skip with the reason (``NotRun``), never silently. One entry per
command: when a document changes a command, change its key here.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from acceptance import SHRINK, SMALL, Done, checkpoint_epoch, finished_training, metrics
from conftest import FIXTURES_DIR

if TYPE_CHECKING:
    from user_workspace import Workspace

KICKS = FIXTURES_DIR / "openpose" / "soccer_kicks"


@dataclass(frozen=True)
class Runs:
    """Run the command (placeholders substituted, ``shrink`` appended) and ``check`` what it delivered."""

    check: Callable[[Done, Workspace], None]
    subs: dict[str, str] = field(default_factory=dict)  # documented text → replacement ("{resource}" resolved)
    shrink: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # documented commands that must have run first (a prepared store, a run)
    xfail: str = ""  # a known product bug: the test must fail until it is fixed (strict)
    slow: bool = False


@dataclass(frozen=True)
class Fails:
    """The command needs what this machine lacks; it must stop with one ``error:`` line naming it."""

    names: str  # regex the error line must match
    prefix: str = "error: "  # how the program marks its error line (the project's UserError: "error: ")
    subs: dict[str, str] = field(default_factory=dict)
    shrink: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    xfail: str = ""
    slow: bool = False
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NotRun:
    """Not run by the suite, for the stated reason (reported as a skip)."""

    reason: str


# -- checks ---------------------------------------------------------------------------------------------

def trained(done: Done, ws: Workspace) -> None:
    finished_training(done)


def printed_config(done: Done, ws: Workspace) -> None:
    assert done.returncode == 0, done.output()
    assert "_target_: asgcn_lightning.data.datamodule.SkeletonDataModule" in done.stdout
    assert "_target_: lightning.pytorch.Trainer" in done.stdout
    assert not done.new_dirs, "--cfg job only prints"


def resumed_from(epoch: int) -> Callable[[Done, Workspace], None]:
    """A resumed run in a new folder: it trains from ``epoch`` (the one after the checkpoint's) on."""
    def check(done: Done, ws: Workspace) -> None:
        run_dir = finished_training(done)
        with open(run_dir / "csv" / "metrics.csv") as handle:
            epochs = {int(row["epoch"]) for row in csv.DictReader(handle) if row.get("epoch")}
        assert min(epochs) == epoch, f"trained epochs {sorted(epochs)}, expected {epoch} first"
    return check


def evaluated(done: Done, ws: Workspace) -> None:
    assert done.returncode == 0, done.output()
    result = json.loads((done.run_dir("eval/runs") / "evaluation.json").read_text())
    assert 0.0 <= result["metrics"]["test/acc_top1"] <= 1.0, result


def prepared(done: Done, ws: Workspace, store: str | None = None) -> None:
    assert done.returncode == 0, done.output()
    store = store or re.search(r"dataset=(\w+)", done.command).group(1)
    meta = json.loads((ws.checkout / "data" / store / "meta.json").read_text())
    assert meta["num_samples"] > 0, meta


def prepared_pickle(done: Done, ws: Workspace) -> None:
    """A pickle's store is named after the file: two pickles never share one."""
    prepared(done, ws, store="pyskl_ntu60_3danno")


def predicted(done: Done, ws: Workspace, output: str | None = None, top_k: int = 5) -> None:
    assert done.returncode == 0, done.output()
    path = ws.checkout / output if output else done.run_dir("predict/runs") / "predictions.json"
    result = json.loads(path.read_text())
    assert result["predictions"], result
    for prediction in result["predictions"]:
        assert len(prediction["top_k"]) == min(top_k, len(result["class_names"]))
        assert 0.0 <= prediction["top_k"][0]["probability"] <= 1.0
        assert prediction["top_k"][0]["class"] in result["class_names"]


def localised(done: Done, ws: Workspace) -> None:
    predicted(done, ws)
    run_dir = done.run_dir("predict/runs")
    timeline = json.loads((run_dir / "predictions.json").read_text())["predictions"][0]["timeline"]
    assert timeline["windows"] and "segments" in timeline
    assert list(run_dir.glob("predictions_*_timeline.png"))


def pose_files(folder: str, frames: int) -> Callable[[Done, Workspace], None]:
    """One OpenPose JSON per video frame, in ``folder/<video>/``, with people in some of them."""
    def check(done: Done, ws: Workspace) -> None:
        assert done.returncode == 0, done.output()
        files = sorted((ws.checkout / folder).glob("*/*_keypoints.json"))
        assert len(files) == frames, (len(files), files[:3])
        assert any(json.loads(path.read_text())["people"] for path in files), "nobody found in any frame"
    return check


def demo_ran(done: Done, ws: Workspace, video: bool = True) -> None:
    assert done.returncode == 0, done.output()
    run_dir = done.run_dir("demo/runs")
    result = json.loads((run_dir / "demo.json").read_text())
    assert result["classifications"], result.keys()
    assert bool(list(run_dir.glob("*_demo.mp4"))) == video


def exported(suffix: str) -> Callable[[Done, Workspace], None]:
    def check(done: Done, ws: Workspace) -> None:
        assert done.returncode == 0, done.output()
        ckpt = Path(ws.resource("tiny_ckpt"))
        target = ws.checkout / suffix if "/" not in suffix and "export_path" in done.command else \
            ckpt.with_name(ckpt.stem + suffix)
        assert target.is_file() and target.stat().st_size > 10_000, target
    return check


def wrote(relative: str) -> Callable[[Done, Workspace], None]:
    def check(done: Done, ws: Workspace) -> None:
        assert done.returncode == 0, done.output()
        path = ws.checkout / relative
        assert path.is_file() and path.stat().st_size > 1000, path
    return check


def summarised(done: Done, ws: Workspace) -> None:
    assert done.returncode == 0, done.output()
    summary = json.loads((Path(ws.resource("sweep_dir")) / "sweep_summary.json").read_text())
    assert len(summary["jobs"]) == 4 and summary["best"], summary


def swept(jobs: int) -> Callable[[Done, Workspace], None]:
    def check(done: Done, ws: Workspace) -> None:
        assert done.returncode == 0, done.output()
        job_dirs = [path for path in done.new_dirs if "/logs/train/multiruns/" in str(path)]
        assert len(job_dirs) == jobs, job_dirs
        for job in job_dirs:
            assert 0.0 <= metrics(job)["best/val/acc_top1"] <= 1.0
        summaries = {job.parent / "sweep_summary.json" for job in job_dirs}  # written by the sweep after its last job
        assert len(summaries) == 1 and all(path.is_file() for path in summaries), summaries
    return check


def cross_evaluated(done: Done, ws: Workspace) -> None:
    assert done.returncode == 0, done.output()
    run_dir = next(path for path in done.new_dirs if "/logs/cross_eval/" in str(path))
    result = json.loads((run_dir / "cross_eval.json").read_text())
    assert 0.0 <= result["accuracy"] <= 1.0, result


def continued_in_place(epoch: int) -> Callable[[Done, Workspace], None]:
    """``hydra.run.dir=<run> ckpt_path=last``: no new folder, and the run's last.ckpt is now epoch ``epoch``."""
    def check(done: Done, ws: Workspace) -> None:
        assert done.returncode == 0, done.output()
        assert not done.new_dirs, done.new_dirs
        assert checkpoint_epoch(Path(ws.resource("tiny_run")) / "checkpoints" / "last.ckpt") == epoch
    return check


def app_result(done: Done, name: str) -> dict:
    """The JSON an app wrote into the one run folder it created."""
    assert done.returncode == 0, done.output()
    assert len(done.new_dirs) == 1, done.new_dirs
    return json.loads((done.new_dirs[0] / name).read_text())


def ensembled(weights: list[float] | None) -> Callable[[Done, Workspace], None]:
    def check(done: Done, ws: Workspace) -> None:
        result = app_result(done, "ensemble.json")
        assert [member["stream"] for member in result["members"]] == ["joint", "bone", "joint_motion", "bone_motion"]
        assert result["weights"] == weights if weights else len(set(result["weights"])) == 1, result["weights"]
        assert 0.0 <= result["fused"]["top1"] <= 1.0 and result["samples"] > 0, result
    return check


def few_shot(done: Done, ws: Workspace) -> None:
    result = app_result(done, "oneshot.json")
    assert sorted(result["results"]) == ["1", "5"], result["results"].keys()
    assert result["samples"] > 0 and result["classes"], result


def in_output(pattern: str) -> Callable[[Done, Workspace], None]:
    def check(done: Done, ws: Workspace) -> None:
        assert done.returncode == 0, done.output()
        assert re.search(pattern, done.stdout + done.stderr), done.output()
    return check


def make_dry_run(target: str, recipe: str) -> Callable[[Done, Workspace], None]:
    """``make -n``: the target's recipe is the documented command (the venv is already set up)."""
    def check(done: Done, ws: Workspace) -> None:
        assert done.returncode == 0, done.output()
        assert recipe in done.stdout, done.output()
    return check


# -- the registry: every documented command and how it is run --------------------------------------------

TINY = "python train.py model=tiny trainer.max_epochs=2"
DEFAULT = "python train.py"
PREPARE_NTU = "python -m asgcn_lightning.prepare dataset=ntu60 dataset.raw_dir=/data/nturgb+d_skeletons"
PREPARE_KINETICS = "python -m asgcn_lightning.prepare dataset=kinetics_skeleton dataset.root=/data/kinetics-skeleton"
PREPARE_OPENPOSE = "python -m asgcn_lightning.prepare dataset=openpose_folder dataset.root=/data/json"
TRAIN_OPENPOSE = "python train.py dataset=openpose_folder split=random"
EVAL = "python eval.py ckpt_path=logs/train/runs/.../checkpoints/last.ckpt"
SWEEP = "python train.py -m model.optimizer.lr=0.05,0.1 split=xsub,xview"
RESUME_TINY = ("python train.py <the run's overrides> "
               "ckpt_path=logs/train/runs/<experiment>/<time>/checkpoints/last.ckpt")
STREAMS = "python train.py experiment=natops model=tiny stream=$s dataset.root=<folder> torch_threads=1"
NATOPS = {"<folder>": "{natops_root}"}
# what "..." stands for in docs/transfer.md's transfer lines: a NATOPS training, its store made from the archive
NATOPS_TRAINING = {"...": "dataset=natops split=predefined dataset.root={natops_root} model=tiny"}
TINY_SHRINK = tuple(o for o in SHRINK if not o.startswith("trainer.max_epochs"))
#: the default AS-GCN: one A-link epoch, then one main epoch (a run that ends in the AIM stage has no val/acc_top1)
DEFAULT_SHRINK = ("model.aim.pretrain_epochs=1", "trainer.max_epochs=2", *TINY_SHRINK)
CKPT = {"<ckpt>": "{tiny_ckpt}"}
POSE_CKPT = {"<ckpt>": "{openpose_ckpt}"}
PREPARE_NW_UCLA = "python -m asgcn_lightning.prepare dataset=nw_ucla dataset.raw_dir=<folder of all_sqe JSON>"
BENCH = "the benchmark measures minutes of training and the demo on full-size inputs: beyond the suite's budget"

REGISTRY: dict[str, Runs | Fails | NotRun] = {
    # README: quick start and development
    "make setup && make train": Runs(make_dry_run("train", ".venv/bin/python train.py"),
                                     subs={"make setup && make train": "make -n setup train"}),
    "make test": Runs(make_dry_run("test", ".venv/bin/python -m pytest"), subs={"make test": "make -n test"}),
    "make acceptance": Runs(
        make_dry_run("acceptance", ".venv/bin/python -m pytest -q -n 2 --dist loadgroup -m acceptance"),
        subs={"make acceptance": "make -n acceptance"}),
    "make train": Runs(make_dry_run("train", ".venv/bin/python train.py"), subs={"make train": "make -n train"}),
    "make setup": Runs(in_output(r"Nothing to be done|is up to date")),
    "make bench": Runs(make_dry_run("bench", ".venv/bin/python -m bench --fixtures"),
                       subs={"make bench": "make -n bench"}),
    "make lint": Runs(in_output(r"All checks passed")),
    # README: training
    DEFAULT: Runs(trained, shrink=DEFAULT_SHRINK, slow=True),
    "python train.py dataset=synthetic split=xview trainer=cpu model=tiny": Runs(trained, shrink=SHRINK),
    "python train.py dataset=ntu60 split=xsub model=asgcn trainer=gpu": Fails(
        r"gpu", shrink=SHRINK, after=(PREPARE_NTU,)),
    "python train.py dataset=ntu60 dataset.classes=[1,8,16,23,24]": Runs(trained, shrink=SMALL, after=(PREPARE_NTU,)),
    "python train.py -m model.optimizer.lr=0.05,0.1": Runs(swept(2), shrink=SMALL),
    "python train.py --cfg job": Runs(printed_config),
    "python train.py ckpt_path=logs/train/runs/.../checkpoints/last.ckpt": Runs(
        resumed_from(2), subs={"logs/train/runs/.../checkpoints/last.ckpt": "{default_ckpt}"},
        shrink=(*DEFAULT_SHRINK, "trainer.max_epochs=3"), slow=True),
    EVAL: Runs(evaluated, subs={"logs/train/runs/.../checkpoints/last.ckpt": "{default_ckpt}"},
               shrink=("trainer.limit_test_batches=2", "torch_threads=1")),
    TINY: Runs(trained, shrink=TINY_SHRINK),
    # README: data sets (prepare, then train)
    PREPARE_NTU: Runs(prepared, subs={"/data/nturgb+d_skeletons": "{ntu_raw}"}),
    "python train.py dataset=ntu60 split=xsub": Runs(trained, shrink=SMALL, after=(PREPARE_NTU,)),
    "python -m asgcn_lightning.prepare dataset=ntu120 dataset.raw_dir=/data/ntu120_skeletons": Runs(
        prepared, subs={"/data/ntu120_skeletons": "{ntu_raw}"}),
    "python train.py dataset=ntu120 split=xset": Runs(
        trained, shrink=SMALL,
        after=("python -m asgcn_lightning.prepare dataset=ntu120 dataset.raw_dir=/data/ntu120_skeletons",)),
    PREPARE_OPENPOSE: Runs(prepared, subs={"/data/json": "{openpose_tree}"}),
    TRAIN_OPENPOSE: Runs(trained, shrink=SMALL, after=(PREPARE_OPENPOSE,)),
    "python -m asgcn_lightning.prepare dataset=video_folder dataset.root=/data/videos": Runs(
        prepared, subs={"/data/videos": "{video_tree}"}, slow=True),
    "python train.py dataset=video_folder split=random": Runs(
        trained, shrink=SMALL, slow=True,
        after=("python -m asgcn_lightning.prepare dataset=video_folder dataset.root=/data/videos",)),
    "python -m asgcn_lightning.prepare dataset=mads dataset.root=/data/MADS": Runs(
        prepared, subs={"/data/MADS": "{mads_tree}"}),
    "python train.py dataset=mads split=xview": Runs(
        trained, shrink=SMALL, after=("python -m asgcn_lightning.prepare dataset=mads dataset.root=/data/MADS",)),
    "python -m asgcn_lightning.prepare dataset=pyskl dataset.path=/data/ntu60_3danno.pkl": Runs(
        prepared_pickle, subs={"/data/ntu60_3danno.pkl": "{pyskl_pickle}"}),
    "python train.py dataset=pyskl dataset.path=/data/ntu60_3danno.pkl split=predefined": Runs(
        trained, subs={"/data/ntu60_3danno.pkl": "{pyskl_pickle}"}, shrink=SMALL,
        after=("python -m asgcn_lightning.prepare dataset=pyskl dataset.path=/data/ntu60_3danno.pkl",)),
    PREPARE_KINETICS: Runs(
        prepared, subs={"/data/kinetics-skeleton": "{kinetics_release}"}),
    "python train.py dataset=kinetics_skeleton split=predefined": Runs(
        trained, shrink=SMALL, after=(PREPARE_KINETICS,)),
    "python train.py dataset=natops split=predefined dataset.root=<folder>": Runs(trained, subs=NATOPS, shrink=SMALL),
    PREPARE_NW_UCLA: Runs(prepared, subs={"<folder of all_sqe JSON>": "{nw_ucla_raw}"}),
    "python train.py experiment=nw_ucla": Runs(trained, shrink=SHRINK, after=(PREPARE_NW_UCLA,)),
    "python train.py experiment=nw_ucla stream=<stream>": Runs(trained, subs={"<stream>": "bone_motion"},
                                                              shrink=SHRINK, after=(PREPARE_NW_UCLA,)),
    "python -m asgcn_lightning.prepare dataset=kinetics_skeleton dataset.root=/data/my_clips": Runs(
        prepared, subs={"/data/my_clips": "{kinetics_clips}"}),
    "python train.py dataset=kinetics_skeleton split=random": Runs(
        trained, shrink=SMALL,
        after=("python -m asgcn_lightning.prepare dataset=kinetics_skeleton dataset.root=/data/my_clips",)),
    "python -m asgcn_lightning.data.video_poses <video|folder> --out <dir>": Runs(
        pose_files("poses", frames=90),
        subs={"<video|folder>": "{kick_video}", "<dir>": "poses"}, slow=True),
    "python -m asgcn_lightning.visual ...": NotRun(
        "a summary of the `python -m asgcn_lightning.visual` commands of docs/apps.md, each run there"),
    # docs/apps.md: predict, localise, demo, export, pictures
    "python predict.py ckpt_path=<ckpt> input=store:12": Runs(predicted, subs=CKPT),
    "python predict.py ckpt_path=<ckpt> input=store:S001C001P003R001A006": Runs(predicted, subs=CKPT),
    "python predict.py ckpt_path=<ckpt> input=/data/S001C001P001R001A024.skeleton": Runs(
        predicted, subs={**CKPT, "/data/": f"{FIXTURES_DIR}/ntu/skeletons/"}),
    "python predict.py ckpt_path=<ckpt> input=/data/openpose_json/": Runs(
        predicted, subs={**POSE_CKPT, "/data/openpose_json/": f"{KICKS}/json/"}),
    "python predict.py ckpt_path=<ckpt> input=clip.mp4 top_k=3": Runs(
        lambda done, ws: predicted(done, ws, top_k=3), subs={**POSE_CKPT, "clip.mp4": "{clip}"}, slow=True),
    "python predict.py ckpt_path=<ckpt> input=store:12 output=pred.json backend=onnx": Runs(
        lambda done, ws: predicted(done, ws, output="pred.json"), subs=CKPT),
    "python predict.py ckpt_path=<ckpt> input=long.mp4 localise.enabled=true localise.window=64 localise.stride=16 "
    "localise.threshold=0.5": Runs(localised, subs={**POSE_CKPT, "long.mp4": "{long_video}"}, slow=True),
    "python demo.py ckpt_path=<ckpt> input=clip.mp4": Runs(demo_ran, subs={**POSE_CKPT, "clip.mp4": "{clip}"},
                                                        slow=True),
    "python demo.py ckpt_path=<ckpt> input=kick_01.mp4 poses=/data/kick_01_json/": Runs(
        demo_ran, subs={**POSE_CKPT, "kick_01.mp4": "{kick_video}", "/data/kick_01_json/": "{kick_01_json}"},
        slow=True),
    "python demo.py ckpt_path=<ckpt> input=0 display=true": Fails(r"input=0: cannot open this camera", subs=POSE_CKPT),
    "python demo.py ckpt_path=<ckpt> input=rtsp://host/stream output=live.mp4 backend=onnx": Fails(
        r"rtsp://host/stream", subs=POSE_CKPT),
    "python demo.py ckpt_path=<ckpt> input=clip.mp4 realtime=true output=none": Runs(
        lambda done, ws: demo_ran(done, ws, video=False), subs={**POSE_CKPT, "clip.mp4": "{clip}"}, slow=True),
    "python -m asgcn_lightning.export ckpt_path=<ckpt> format=onnx": Runs(exported(".onnx"), subs=CKPT),
    "python -m asgcn_lightning.export ckpt_path=<ckpt> format=torchscript": Runs(
        exported(".torchscript.pt"), subs=CKPT),
    "python -m asgcn_lightning.export ckpt_path=<ckpt> export_path=model.onnx parity_tolerance=1e-5": Runs(
        wrote("model.onnx"), subs=CKPT),
    "python -m asgcn_lightning.visual animate store:7 --store data/synthetic --out sample7.gif": Runs(
        wrote("sample7.gif"), after=(TINY,)),
    "python -m asgcn_lightning.visual animate /data/openpose_json --video Kick_3": Runs(
        wrote("logs/visual/animate.gif"), subs={"/data/openpose_json": f"{KICKS}/json"}),
    "python -m asgcn_lightning.visual alinks store:3 --ckpt <asgcn ckpt> --out alinks.png": Runs(
        wrote("alinks.png"), subs={"<asgcn ckpt>": "{default_ckpt}"}),
    "python -m asgcn_lightning.visual importance --ckpt <ckpt> --per-class 16": Runs(
        wrote("logs/visual/importance.png"), subs=CKPT),
    "python -m asgcn_lightning.visual confusion --ckpt <ckpt>": Runs(wrote("logs/visual/confusion.png"), subs=CKPT),
    "python -m asgcn_lightning.visual confusion --evaluation logs/eval/runs/<experiment>/<time>/evaluation.json": Runs(
        wrote("logs/visual/confusion.png"),
        subs={"logs/eval/runs/<experiment>/<time>/evaluation.json": "{evaluation_json}"}),
    "python -m asgcn_lightning.visual curves logs/train/runs/<experiment>/<time> --wandb": Runs(
        wrote("logs/visual/curves.png"), subs={"logs/train/runs/<experiment>/<time>": "{tiny_run}"}),
    # docs/performance.md: the benchmark
    "python -m bench --fixtures <folder>": NotRun(BENCH),
    "python -m bench --quick --fixtures <folder>": NotRun(BENCH),
    "python -m bench.busy 2": NotRun(BENCH),
    # docs/scaling.md
    "python train.py model=asgcn dataset=ntu60 trainer=ddp trainer.devices=4": Fails(
        r"gpu", shrink=SHRINK,
        after=(PREPARE_NTU,)),
    "torchrun --nnodes=2 --nproc-per-node=4 --node-rank=<0|1> --master-addr=<host0> --master-port=29500 train.py "
    "trainer=ddp trainer.devices=4 trainer.num_nodes=2 hydra.run.dir=/shared/logs/train/runs/my-run "
    "paths.data_dir=/shared/data": NotRun(
        "node 0 waits for node 1 in torchrun's rendezvous (its own time-out: 15 min) before train.py starts; "
        "no second node here"),
    "python train.py -m hydra/launcher=slurm trainer=ddp trainer.devices=4 trainer.num_nodes=2 "
    "hydra.launcher.partition=<partition> [hydra.launcher.account=<account>] [sweep overrides]": Fails(
        r"sbatch|slurm", subs={"<partition>": "gpu", " [hydra.launcher.account=<account>]": "",
                               "[sweep overrides]": "model.optimizer.lr=0.05,0.1"}, shrink=SHRINK),
    SWEEP: Runs(swept(4), shrink=SMALL, slow=True),
    "python train.py hparams_search=optuna_lr [hydra.sweeper.n_trials=30]": Runs(
        swept(2), subs={"[hydra.sweeper.n_trials=30]": "hydra.sweeper.n_trials=2"}, shrink=SMALL,
        slow=True),
    "python -m asgcn_lightning.apps.sweep_summary logs/train/multiruns/<time> "
    "[--metric val/loss --mode min]": Runs(
        summarised, subs={"logs/train/multiruns/<time>": "{sweep_dir}",
                          "[--metric val/loss --mode min]": "--metric val/loss --mode min"}),
    "wandb login": Fails(r"api key|login", prefix="Error: ", env={"HOME": "{home}"}),  # no terminal, no server
    "wandb sync logs/train/runs/<experiment>/<time>/wandb/offline-run-*": Fails(
        r"No API key configured", prefix="Error: ", subs={"logs/train/runs/<experiment>/<time>": "{tiny_run}"},
        env={"HOME": "{home}"}),
    "wandb sync logs/train/multiruns/<time>/*/wandb/offline-run-*": Fails(
        r"No API key configured", prefix="Error: ", subs={"logs/train/multiruns/<time>": "{sweep_dir}"},
        env={"HOME": "{home}"}),
    "wandb sync --project <project> --entity <team> <run folders>": Fails(
        r"No API key configured", prefix="Error: ",
        subs={"<project>": "asgcn-test", "<team>": "nobody", "<run folders>": "{tiny_wandb_run}"},
        env={"HOME": "{home}"}),
    RESUME_TINY: Runs(
        resumed_from(2), subs={"<the run's overrides>": "model=tiny",
                       "logs/train/runs/<experiment>/<time>/checkpoints/last.ckpt": "{tiny_ckpt}"},
        shrink=("trainer.max_epochs=3", *TINY_SHRINK)),
    "python train.py <the run's overrides> hydra.run.dir=<the run folder> ckpt_path=last": Runs(
        continued_in_place(2), subs={"<the run's overrides>": "model=tiny", "<the run folder>": "{tiny_run}"},
        shrink=("trainer.max_epochs=3", *TINY_SHRINK), after=(RESUME_TINY,)),
    # docs/transfer.md
    "python train.py model=tiny": Runs(trained, shrink=("trainer.max_epochs=2", *TINY_SHRINK)),  # = TINY, run once
    "python train.py dataset=natops split=predefined dataset.root=<folder> model=tiny transfer=finetune "
    "transfer.checkpoint=logs/train/runs/synthetic-xsub-tiny/<time>/checkpoints/last.ckpt "
    "transfer.freeze=[data_bn,blocks.0] transfer.backbone_lr_scale=0.1": Runs(
        trained, subs={"<time>": "{tiny_time}", **NATOPS}, shrink=SHRINK),
    "python train.py experiment=natops torch_threads=1 +dataset.eval_transforms.0.num_clips=5": Runs(
        trained, subs={"torch_threads=1": "dataset.root={natops_root} torch_threads=1"}, shrink=SHRINK),
    "python train.py ... transfer=feature_extraction transfer.checkpoint=<ckpt>": Runs(
        trained, subs={**NATOPS_TRAINING, **CKPT}, shrink=SHRINK),
    "python train.py ... transfer=architecture_only transfer.checkpoint=<ckpt>": Runs(
        trained, subs={**NATOPS_TRAINING, **CKPT}, shrink=SHRINK),
    "python -m asgcn_lightning.apps.cross_eval ckpt_path=<synthetic ckpt> dataset.classes=[1,2,6,7] "
    "'label_map={wave right hand: wave, wave left hand: wave, squat: squat}' "
    "'target_map={wave right hand: wave, wave left hand: wave, squat: squat}'": Runs(
        cross_evaluated, subs={"<synthetic ckpt>": "{tiny_ckpt}"}),
    "python -m asgcn_lightning.prepare dataset=ntu60 dataset.raw_dir=<folder of .skeleton files>": Runs(
        prepared, subs={"<folder of .skeleton files>": "{ntu_raw}"}),
    "python -m asgcn_lightning.apps.cross_eval mapping=synthetic_to_ntu60 ckpt_path=<synthetic ckpt>": Runs(
        cross_evaluated, subs={"<synthetic ckpt>": "{tiny_ckpt}"}, after=(PREPARE_NTU,)),
    "python -m asgcn_lightning.apps.ensemble ckpt_paths=[<joint>,<bone>,<joint_motion>,<bone_motion>] "
    "weights=[0.6,0.6,0.4,0.4]": Runs(ensembled([0.6, 0.6, 0.4, 0.4]), subs={
        "[<joint>,<bone>,<joint_motion>,<bone_motion>]": "{stream_ckpts}"}, slow=True),
    "python train.py experiment=oneshot_natops dataset.root=<folder> torch_threads=1": Runs(
        trained, subs=NATOPS, shrink=SHRINK),
    "python -m asgcn_lightning.apps.oneshot ckpt_path=<run>/checkpoints/last.ckpt oneshot.shots=[1,5]": Runs(
        few_shot, subs={"<run>": "{oneshot_run}"}),
    STREAMS: Runs(trained, subs={"$s": "joint", **NATOPS}, shrink=SHRINK, slow=True),
    "python -m asgcn_lightning.apps.ensemble ckpt_paths=[<joint>,<bone>,<joint_motion>,<bone_motion>]": Runs(
        ensembled(None), subs={"[<joint>,<bone>,<joint_motion>,<bone_motion>]": "{stream_ckpts}"},
        slow=True),
    "python -m asgcn_lightning.apps.ensemble ckpt_paths=[...] weights=[0.6,0.6,0.4,0.4]": Runs(
        ensembled([0.6, 0.6, 0.4, 0.4]), subs={"[...]": "{stream_ckpts}"}, slow=True),
}


