"""The Kinetics-skeleton adapter on the real clips, and the README's commands on both folder layouts."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from pose_helpers import skipped_reasons

from asgcn_lightning.data.formats.kinetics_json import read_kinetics_clip
from asgcn_lightning.data.sources.kinetics import prepare_kinetics_skeleton
from asgcn_lightning.data.sources.losses import loss_policy
from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.errors import UserError
from asgcn_lightning.schemas import LossPolicy

# what the README's commands are run with here: a small model, one epoch, one thread
SHRINK = ["model=tiny", "trainer.max_epochs=1", "torch_threads=1"]


def release_tree(root: Path, clips: list[Path], has_skeleton: bool = True) -> Path:
    """The ST-GCN release layout: kinetics_{train,val}/ of clip files and their label JSON, 4 clips to train."""
    for i, path in enumerate(clips):
        part = "train" if i < 4 else "val"
        (root / f"kinetics_{part}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / f"kinetics_{part}" / path.name)
    for part in ("train", "val"):
        table = {}
        for path in sorted((root / f"kinetics_{part}").glob("*.json")):
            content = json.loads(path.read_text())
            table[path.stem] = {"has_skeleton": has_skeleton or path.name != clips[-1].name, "label": content["label"],
                                "label_index": content["label_index"]}
        (root / f"kinetics_{part}_label.json").write_text(json.dumps(table))
    return root


def test_kinetics_clips_read_and_prepare(tmp_path: Path, fixtures_dir: Path) -> None:
    folder = fixtures_dir / "kinetics_skeleton"
    clips = {p.stem: read_kinetics_clip(p) for p in sorted(folder.glob("*.json"))}
    assert len(clips) == 7
    first = clips["__NrybzYzUg"]
    assert (first.label, first.label_index, len(first.frames)) == ("abseiling", 0, 299)
    assert first.frames[2].shape == (1, 18, 3) and len(first.frames[0]) == 0
    assert max(len(f) for f in clips["__PYrzYbzKE"].frames) == 11
    store = SkeletonStore(prepare_kinetics_skeleton(tmp_path / "store", root=folder, num_classes=400))
    assert len(store) == 7 and len(store.meta.class_names) == 400
    assert store.meta.class_names[335] == "strumming guitar"
    for i in range(len(store)):
        clip = clips[store.record(i).name]
        assert store.record(i).label == clip.label_index and len(store.sequence(i)) == len(clip.frames)
        # centred on the frame; OpenPose places a few joints just outside it (x up to 1.02 in the clips)
        assert np.abs(store.sequence(i)[..., :2]).max() < 0.6 and store.record(i).setup == -1


def test_kinetics_release_layout_splits_and_skips(tmp_path: Path, fixtures_dir: Path) -> None:
    clips = sorted((fixtures_dir / "kinetics_skeleton").glob("*.json"))
    release_tree(tmp_path, clips, has_skeleton=False)
    (tmp_path / "kinetics_train" / "broken.json").write_text('{"data": [{"frame_index": 1}]}')
    with loss_policy(LossPolicy(accept=True)):  # one clip of seven is broken
        store = SkeletonStore(prepare_kinetics_skeleton(tmp_path / "store", root=tmp_path))
    assert collections.Counter(store.index["setup"].tolist()) == {1: 4, 2: 2}
    skipped = skipped_reasons(store)
    assert "bad frame entry" in skipped[str(tmp_path / "kinetics_train" / "broken.json")]
    assert "no skeleton" in skipped[str(tmp_path / "kinetics_val" / clips[6].name)]


def test_half_a_release_is_named(tmp_path: Path, fixtures_dir: Path) -> None:
    release_tree(tmp_path, sorted((fixtures_dir / "kinetics_skeleton").glob("*.json")))
    shutil.rmtree(tmp_path / "kinetics_val")
    with pytest.raises(UserError, match="kinetics_train/ without its other half"):
        prepare_kinetics_skeleton(tmp_path / "store", root=tmp_path)


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_readme_commands_train_on_the_release_and_point_a_single_folder_to_a_random_split(
    tmp_path: Path, fixtures_dir: Path,
) -> None:
    """``prepare dataset=kinetics_skeleton dataset.root=...`` then ``train.py dataset=kinetics_skeleton split=...``."""
    clips = sorted((fixtures_dir / "kinetics_skeleton").glob("*.json"))
    release = release_tree(tmp_path / "kinetics-skeleton", clips)
    work = tmp_path / "work"  # the folder the commands run in: data/ and logs/ go below it
    work.mkdir()
    prepared = _run(work, "-m", "asgcn_lightning.prepare", "dataset=kinetics_skeleton", f"dataset.root={release}")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    store = SkeletonStore(work / "data" / "kinetics_skeleton")
    assert collections.Counter(store.index["setup"].tolist()) == {1: 4, 2: 3}
    trained = _run(work, str(REPO_ROOT / "train.py"), "dataset=kinetics_skeleton", "split=predefined", *SHRINK)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (checkpoint,) = work.glob("logs/train/runs/kinetics_skeleton-predefined-tiny/*/checkpoints/last.ckpt")
    assert checkpoint.is_file()

    single = _run(work, "-m", "asgcn_lightning.prepare", "dataset=kinetics_skeleton",
                  f"dataset.root={fixtures_dir / 'kinetics_skeleton'}")
    assert single.returncode == 0 and "train with split=random" in single.stderr
    refused = _run(work, str(REPO_ROOT / "train.py"), "dataset=kinetics_skeleton", "split=predefined", *SHRINK)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "split 'predefined': the data set has no setup metadata; train it with split=random" in refused.stderr
