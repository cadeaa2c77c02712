"""The user's checkout of the acceptance tests, and the real files the documents' placeholders stand for.

``Workspace.result(command)`` runs a registered command once (after the commands it needs) and keeps
what it did, so one trained checkpoint, one prepared store serve every command that needs them.
"""

from __future__ import annotations

import pickle
import re
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
from acceptance import Done, checkpoint_epoch, finished_training, make_checkout, run_command
from command_registry import (
    DEFAULT,
    EVAL,
    KICKS,
    REGISTRY,
    STREAMS,
    SWEEP,
    TINY,
    TRAIN_OPENPOSE,
)
from conftest import FIXTURES_DIR


class Workspace:
    """A user's checkout; ``result(command)`` runs a registered command once and keeps what it did."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkout = make_checkout(root)
        self.sources = root / "sources"  # stands in for the documents' /data/...
        self.sources.mkdir()
        self._results: dict[str, Done] = {}
        self._resources: dict[str, str] = {}
        venv_bin = self.checkout / ".venv" / "bin"  # `make setup` has been run: the project's interpreter
        venv_bin.mkdir(parents=True)
        for tool in ("python", "ruff"):
            (venv_bin / tool).write_text(f'#!/bin/sh\nexec {Path(sys.executable).parent / tool} "$@"\n')
            (venv_bin / tool).chmod(0o755)
        (self.checkout / ".venv" / ".installed").touch()

    def resolve(self, text: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda match: self.resource(match.group(1)), text)

    def invocation(self, command: str) -> str:
        how = REGISTRY[command]
        line = command
        for documented, replacement in how.subs.items():
            assert documented in line, f"{documented!r} is not in {command!r}"
            line = line.replace(documented, self.resolve(replacement))
        return " ".join([line, *how.shrink])

    def result(self, command: str) -> Done:
        """What ``command`` did; two documented commands that become the same command line run once."""
        how = REGISTRY[command]
        for earlier in how.after:
            self.result(earlier)
        line = self.invocation(command)
        if line not in self._results:
            env = {key: self.resolve(value) for key, value in getattr(how, "env", {}).items()}
            self._results[line] = run_command(line, self.checkout, env=env)
        return self._results[line]

    def resource(self, name: str) -> str:
        if name not in self._resources:
            self._resources[name] = str(getattr(self, f"_{name}")())
        return self._resources[name]

    # what the placeholders stand for
    def _tiny_run(self) -> Path:
        run_dir = finished_training(self.result(TINY))
        self.tiny_last_epoch = checkpoint_epoch(run_dir / "checkpoints" / "last.ckpt")  # before any resume in place
        return run_dir

    def _tiny_ckpt(self) -> Path:
        return Path(self.resource("tiny_run")) / "checkpoints" / "last.ckpt"

    def _tiny_time(self) -> str:
        return Path(self.resource("tiny_run")).name

    def _tiny_wandb_run(self) -> Path:
        return next((Path(self.resource("tiny_run")) / "wandb").glob("offline-run-*"))

    def _default_ckpt(self) -> Path:
        return finished_training(self.result(DEFAULT)) / "checkpoints" / "last.ckpt"

    def _openpose_ckpt(self) -> Path:
        return finished_training(self.result(TRAIN_OPENPOSE)) / "checkpoints" / "last.ckpt"

    def _evaluation_json(self) -> Path:
        return self.result(EVAL).run_dir("eval/runs") / "evaluation.json"

    def _sweep_dir(self) -> Path:
        done = self.result(SWEEP)
        assert done.returncode == 0, done.output()
        return done.new_dirs[0].parent

    def _oneshot_run(self) -> Path:
        return finished_training(self.result(
            "python train.py experiment=oneshot_natops dataset.root=<folder> torch_threads=1"))

    def _stream_ckpts(self) -> str:
        paths = [finished_training(self.result(STREAMS)) / "checkpoints" / "last.ckpt"]  # $s = joint
        for stream in ("bone", "joint_motion", "bone_motion"):
            line = STREAMS.replace("$s", stream).replace("<folder>", self.resource("natops_root"))
            done = run_command(" ".join([line, *REGISTRY[STREAMS].shrink]), self.checkout)
            paths.append(finished_training(done) / "checkpoints" / "last.ckpt")
        return "[" + ",".join(map(str, paths)) + "]"

    def _home(self) -> Path:
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        return home

    def _ntu_raw(self) -> Path:
        """The 60 real NTU files (subject 1, setup 1), again as subject 3 (xsub test) and setup 2 (xset train)."""
        raw = self.sources / "ntu"
        raw.mkdir()
        for skeleton in sorted((FIXTURES_DIR / "ntu" / "skeletons").glob("*.skeleton")):
            for name in (skeleton.name, skeleton.name.replace("P001", "P003"), skeleton.name.replace("S001", "S002")):
                (raw / name).symlink_to(skeleton)
        return raw

    def _openpose_tree(self) -> Path:
        """The 20 real kicks in class folders by kick type (curl / laces), as ``root/<class>/<video>_*.json``."""
        labels = np.load(KICKS / "labels.npy", allow_pickle=True)
        root = self.sources / "json"
        for row in labels:
            kind = "laces" if int(row[4]) else "curl"
            (root / kind).mkdir(parents=True, exist_ok=True)
            for frame in (KICKS / "json").glob(f"Kick_{int(row[0])}_*_keypoints.json"):
                (root / kind / frame.name).symlink_to(frame)
        return root

    def _mads_tree(self) -> Path:
        return mads_tree(self.sources / "MADS", recordings={1: 3, 2: 3, 3: 4})  # 5 + 5 windows, 7 held out

    def _video_tree(self) -> Path:
        root = self.sources / "videos"
        for kind, name in (("tai_chi", "ta_chi.mp4"), ("weightlifting", "clean_and_jerk.mp4")):
            (root / kind).mkdir(parents=True)
            (root / kind / name).symlink_to(FIXTURES_DIR / "video" / name)
        return root

    def _pyskl_pickle(self) -> Path:
        """A pyskl 3D annotation pickle of the real NTU files: subject 1 as xsub_train, a copy as xsub_val."""
        from asgcn_lightning.data.formats.ntu_skeleton import read_ntu_skeleton
        from asgcn_lightning.data.sources.ntu_bodies import actor_sequence

        annotations, split = [], {"xsub_train": [], "xsub_val": []}
        for skeleton in sorted((FIXTURES_DIR / "ntu" / "skeletons").glob("*.skeleton"))[:12]:
            frames, _ = actor_sequence(read_ntu_skeleton(skeleton))
            label = int(skeleton.stem[-3:]) - 1
            for part, name in (("xsub_train", skeleton.stem), ("xsub_val", skeleton.stem.replace("P001", "P003"))):
                annotations.append({"frame_dir": name, "label": label, "total_frames": len(frames),
                                    "keypoint": np.ascontiguousarray(frames.transpose(1, 0, 2, 3))})
                split[part].append(name)
        path = self.sources / "ntu60_3danno.pkl"
        path.write_bytes(pickle.dumps({"split": split, "annotations": annotations}))
        return path

    def _kinetics_release(self) -> Path:
        root = self.sources / "kinetics-skeleton"
        clips = sorted((FIXTURES_DIR / "kinetics_skeleton").glob("*.json"))
        for part, chosen in (("kinetics_train", clips[:4]), ("kinetics_val", clips[4:])):
            (root / part).mkdir(parents=True)
            for clip in chosen:
                (root / part / clip.name).symlink_to(clip)
        return root

    def _kinetics_clips(self) -> Path:
        return FIXTURES_DIR / "kinetics_skeleton"  # one folder of clips, no train/val partition

    def _natops_root(self) -> Path:
        return FIXTURES_DIR / "natops"

    def _nw_ucla_raw(self) -> Path:
        """The real Northwestern-UCLA release, extracted: its ``all_sqe`` folder of 1,484 JSON sequences."""
        with tarfile.open(FIXTURES_DIR / "nw_ucla" / "NW-UCLA.tar.xz") as tar:
            tar.extractall(self.sources, filter="data")
        return self.sources / "NW-UCLA" / "all_sqe"

    def _clip(self) -> Path:
        shutil.copy(FIXTURES_DIR / "video" / "ta_chi.mp4", self.checkout / "clip.mp4")
        return Path("clip.mp4")

    def _long_video(self) -> Path:
        shutil.copy(FIXTURES_DIR / "video" / "clean_and_jerk.mp4", self.checkout / "long.mp4")
        return Path("long.mp4")

    def _kick_video(self) -> Path:
        shutil.copy(KICKS / "video" / "kick_01.mp4", self.checkout / "kick_01.mp4")
        return Path("kick_01.mp4")

    def _kick_01_json(self) -> Path:
        folder = self.sources / "kick_01_json"
        folder.mkdir()
        for frame in (KICKS / "json").glob("Kick_1_*_keypoints.json"):
            (folder / frame.name).symlink_to(frame)
        return folder


def mads_tree(root: Path, recordings: dict[int, int], truncated: int = 1) -> Path:
    """A MADS ``layout=tree`` of real OpenPose kicks: ``root/<Category>/<Action>/cam<k>/P<p>_<frame>_keypoints.json``.

    ``recordings[k]`` kicks are filed under camera ``k``, the category being the kick type (curl or
    laces, alternating) and each kick a performer ``P<p>`` of action ``Kick``. Every kick gives two
    60-frame windows (stride 30 over its 88-90 frames) except the first ``truncated`` of each camera,
    cut to 60 frames (one window), so each camera holds ``2 × recordings[k] - truncated`` windows.
    """
    kick = 1
    for camera, count in recordings.items():
        for index in range(count):
            category = ("Curl", "Laces")[index % 2]
            folder = root / category / "Kick" / f"cam{camera}"
            folder.mkdir(parents=True, exist_ok=True)
            frames = sorted((KICKS / "json").glob(f"Kick_{kick}_*_keypoints.json"))
            for frame in frames[:60] if index < truncated else frames:
                number = frame.name.split("_")[2]
                (folder / f"P{kick}_{number}_keypoints.json").symlink_to(frame)
            kick += 1
    return root


