"""The MADS adapters: a hand-made tree of OpenPose output or mocap, and the official release layout."""

from __future__ import annotations

import collections
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from pose_helpers import expected_windows, skipped_reasons

from asgcn_lightning.data.sources.losses import loss_policy
from asgcn_lightning.data.sources.mads import prepare_mads
from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.data.windows import window_starts
from asgcn_lightning.errors import UserError
from asgcn_lightning.schemas import LossPolicy
from asgcn_lightning.skeleton.layouts import make_layout

MADS_TREE = {  # (category, action, camera) -> soccer kick used as its recording
    ("Jazz", "Step", 1): "Kick_1", ("Jazz", "Step", 2): "Kick_2",
    ("Jazz", "Turn", 1): "Kick_3", ("Jazz", "Turn", 2): "Kick_4",
    ("Karate", "Kick", 1): "Kick_5", ("Karate", "Kick", 2): "Kick_6",
    ("Karate", "Punch", 1): "Kick_7", ("Karate", "Punch", 2): "Kick_8",
}
MADS_PERFORMERS = {"Jazz": 3, "Karate": 1}


@pytest.fixture
def mads_root(tmp_path: Path, kicks: Path) -> Path:
    root = tmp_path / "mads"
    for (category, action, camera), kick in MADS_TREE.items():
        folder = root / category / action / f"cam{camera}"
        folder.mkdir(parents=True)
        for path in kicks.glob(f"{kick}_*.json"):
            frame = path.name[len(kick) + 1:]
            shutil.copy(path, folder / f"P{MADS_PERFORMERS[category]}_take1_{frame}")
    return root


@pytest.mark.parametrize("level", ["category", "action"])
def test_mads_from_openpose_tree(
    tmp_path: Path, mads_root: Path, kick_videos: dict[str, list[np.ndarray]], level: str,
) -> None:
    store = SkeletonStore(prepare_mads(tmp_path / "store", root=mads_root, level=level, window=30, stride=15))
    expected = {key: expected_windows(kick_videos[kick], 30, 15) for key, kick in MADS_TREE.items()}
    assert len(store) == sum(expected.values())
    actions = ["Jazz/Step", "Jazz/Turn", "Karate/Kick", "Karate/Punch"]
    names = ["Jazz", "Karate"] if level == "category" else actions
    assert store.meta.class_names == names and store.frame_shape == (1, 25, 3)
    found = collections.Counter()
    for i in range(len(store)):
        record = store.record(i)
        category, action, camera, _ = record.name.split("/")
        found[(category, action, int(camera[3:]))] += 1
        assert record.camera == int(camera[3:]) and record.subject == MADS_PERFORMERS[category]
        assert names[record.label] == (category if level == "category" else f"{category}/{action}")
        assert len(store.sequence(i)) == 30
    assert found == expected


def test_mads_ground_truth(tmp_path: Path, mads_root: Path) -> None:
    rng = np.random.default_rng(0)
    for category, action in (("Jazz", "Step"), ("Karate", "Punch")):
        joints = rng.normal(size=(100, 19, 3))
        joints[10:20] = np.nan
        (mads_root / category / action / "gt3d").mkdir()
        np.save(mads_root / category / action / "gt3d" / f"P{MADS_PERFORMERS[category]}.npy", joints)
    (mads_root / "Jazz" / "Step" / "gt3d" / "P3_bad.npy").write_text("not numpy")
    chain = {"name": "chain19", "joints": [f"j{i}" for i in range(19)],
             "edges": [[i, i + 1] for i in range(18)], "centre": 0}
    with pytest.raises(UserError, match="gt_layout"):
        prepare_mads(tmp_path / "store", root=mads_root, source="gt3d")
    with loss_policy(LossPolicy(accept=True)):  # P3_bad.npy
        store = SkeletonStore(prepare_mads(tmp_path / "store", root=mads_root, source="gt3d", gt_layout=chain,
                                           window=30, stride=15))
    assert len(store) == 2 * len(window_starts(100, 30, 15)) and store.frame_shape == (1, 19, 3)
    assert set(store.index["camera"].tolist()) == {-1} and set(store.index["subject"].tolist()) == {1, 3}
    assert not store.sequence(0)[10:20].any() and np.isfinite(store.sequence(0)).all()
    assert "cannot read" in skipped_reasons(store)[str(mads_root / "Jazz" / "Step" / "gt3d" / "P3_bad.npy")]
    assert make_layout(**store.meta.layout_spec).num_joints == 19


# -- MADS, as released ------------------------------------------------------------------------------
MADS_RELEASE = {  # (category, sequence, camera k of C<k>) -> soccer kick used as its recording
    ("Hip-hop", "Routine1", 0): "Kick_1", ("Hip-hop", "Routine1", 1): "Kick_2", ("Hip-hop", "Routine1", 2): "Kick_3",
    ("Hip-hop", "Routine2", 0): "Kick_4", ("Hip-hop", "Routine2", 1): "Kick_5", ("Hip-hop", "Routine2", 2): "Kick_6",
    ("Karate", "Kata1", 0): "Kick_7", ("Karate", "Kata1", 1): "Kick_8", ("Karate", "Kata1", 2): "Kick_9",
}
MADS_RELEASE_SUBJECTS = {"Hip-hop": 1, "Karate": 2}  # 1-based position of the category, one performer each


def _release_json(folder: Path, video: str, kick: str, kicks: Path) -> None:
    """What ``openpose --video <video>.avi --write_json <folder>`` writes, made from a real kick."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in kicks.glob(f"{kick}_*.json"):
        shutil.copy(path, folder / f"{video}_{path.name[len(kick) + 1:]}")


@pytest.fixture
def mads_release(tmp_path: Path, kicks: Path) -> Path:
    """The unzipped MADS_multiview.zip with OpenPose output beside each camera video."""
    root = tmp_path / "download"
    data = root / "MADS_multiview" / "MADS" / "multi_view_data"
    for (category, sequence, camera), kick in MADS_RELEASE.items():
        video = f"{category}_{sequence}_C{camera}"
        (data / category).mkdir(parents=True, exist_ok=True)
        (data / category / f"{video}.avi").write_bytes(b"")  # never opened for source=openpose
        _release_json(data / category / video, video, kick, kicks)
    return root


def _release_record(name: str) -> tuple[str, str, int]:
    """``<Category>/<Category>_<seq>_C<k>[@start]`` → (category, sequence, k)."""
    category, video = name.split("@")[0].split("/")
    stem, camera = video.rsplit("_C", 1)
    return category, stem[len(category) + 1:], int(camera)


@pytest.mark.parametrize("level", ["category", "action"])
def test_mads_release_from_openpose(
    tmp_path: Path, mads_release: Path, kicks: Path, kick_videos: dict[str, list[np.ndarray]], level: str,
) -> None:
    data = mads_release / "MADS_multiview" / "MADS" / "multi_view_data"
    (data / "Karate" / "Karate_Kata2_C0.avi").write_bytes(b"")  # a routine without OpenPose output yet
    (data / "Karate" / "Karate_calibration.mat").write_bytes(b"")  # neither a video nor ground truth
    _release_json(data / "Karate" / "Karate_Kata1_Left", "Karate_Kata1_Left", "Kick_10", kicks)
    store = SkeletonStore(prepare_mads(tmp_path / "store", root=mads_release, layout="release", level=level,
                                       window=30, stride=15))
    expected = {key: expected_windows(kick_videos[kick], 30, 15) for key, kick in MADS_RELEASE.items()}
    assert len(store) == sum(expected.values()) and store.frame_shape == (1, 25, 3)
    names = (["Hip-hop", "Karate"] if level == "category" else
             ["Hip-hop/Routine1", "Hip-hop/Routine2", "Karate/Kata1", "Karate/Kata2"])
    assert store.meta.class_names == names and store.meta.layout == "openpose25"
    found = collections.Counter()
    for i in range(len(store)):
        record = store.record(i)
        category, sequence, camera = _release_record(record.name)
        found[(category, sequence, camera)] += 1
        assert record.camera == camera + 1 and record.subject == MADS_RELEASE_SUBJECTS[category]
        assert names[record.label] == (category if level == "category" else f"{category}/{sequence}")
        assert len(store.sequence(i)) == 30
    assert found == expected
    assert set(store.index["camera"].tolist()) == {1, 2, 3}
    stray = str(data / "Karate" / "Karate_Kata1_Left" / "Karate_Kata1_Left")
    assert "does not end in _C<camera>" in skipped_reasons(store)[stray]
    # multi_view_data itself works as the root too
    again = SkeletonStore(prepare_mads(tmp_path / "again", root=data, layout="release", level=level,
                                       window=30, stride=15))
    assert len(again) == len(store) and again.meta.class_names == names


def _gt_cells(joints: np.ndarray) -> np.ndarray:
    """``(T, V, 3)`` as MATLAB's cell array of one V x 3 array per frame (what savemat writes as a cell)."""
    cells = np.empty((1, len(joints)), dtype=object)
    for t, frame in enumerate(joints):
        cells[0, t] = frame
    return cells


def test_mads_release_ground_truth(tmp_path: Path, mads_release: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    data = mads_release / "MADS_multiview" / "MADS" / "multi_view_data"
    truth = {}
    for category, sequence in (("Hip-hop", "Routine1"), ("Karate", "Kata1")):
        joints = rng.uniform(-1500, 1500, size=(100, 15, 3))  # millimetres
        joints[10:20] = np.nan  # capture lost
        joints[50, 3] = np.nan
        truth[category] = joints
        savemat(data / category / f"{category}_{sequence}_GT.mat", {"GTpose2": _gt_cells(joints)})
    savemat(data / "Karate" / "Karate_calib_C0.mat", {"K": np.eye(3)})  # calibration: ignored, not skipped
    (data / "Karate" / "Karate_Kata2_GT.mat").write_text("joints in a text file\n" * 20)
    savemat(data / "Hip-hop" / "Hip-hop_Routine2_GT.mat", {"pose": np.ones((4, 15, 3))})
    mixed = _gt_cells(rng.normal(size=(5, 15, 3)))
    mixed[0, 3] = np.ones((14, 3))
    savemat(data / "Hip-hop" / "Hip-hop_Routine3_GT.mat", {"GTpose2": mixed})
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116) + bytes(8) + b"\x00\x02IM"
    (data / "Karate" / "Karate_Kata3_GT.mat").write_bytes(header + b"\x89HDF\r\n\x1a\n" + bytes(64))

    with loss_policy(LossPolicy(accept=True)):  # four of the six files are broken
        store = SkeletonStore(prepare_mads(tmp_path / "store", root=mads_release, layout="release", source="gt3d",
                                           window=30, stride=15))
    assert store.meta.layout == "mads15" and store.frame_shape == (1, 15, 3)
    layout = make_layout(**store.meta.layout_spec)
    assert layout.num_joints == 15 and layout.joints[layout.centre] == "pelvis" and layout.parents.count(-1) == 1
    assert len(store) == 2 * len(window_starts(100, 30, 15)) and store.meta.class_names == ["Hip-hop", "Karate"]
    assert set(store.index["camera"].tolist()) == {-1} and set(store.index["subject"].tolist()) == {1, 2}
    first = store.index["name"].tolist().index("Hip-hop/Hip-hop_Routine1_GT@000000")
    expected = np.nan_to_num(truth["Hip-hop"][:30] / 1000.0).astype(np.float32)
    np.testing.assert_allclose(store.sequence(first)[:, 0], expected, rtol=1e-6)  # metres
    assert not store.sequence(first)[10:20].any() and np.isfinite(store.sequence(first)).all()
    skipped = skipped_reasons(store)
    assert "not a readable MATLAB file" in skipped[str(data / "Karate" / "Karate_Kata2_GT.mat")]
    assert "no GTpose2" in skipped[str(data / "Hip-hop" / "Hip-hop_Routine2_GT.mat")]
    assert "frame 4 of GTpose2 has 14 joints" in skipped[str(data / "Hip-hop" / "Hip-hop_Routine3_GT.mat")]
    assert "v7.3 (HDF5)" in skipped[str(data / "Karate" / "Karate_Kata3_GT.mat")]
    assert not any("calib" in path for path in skipped)

    # the action classes are the routines the release names, whatever the source
    with pytest.raises(UserError, match="lost every input of the classes 'Hip-hop/Routine2', 'Hip-hop/Routine3'"):
        prepare_mads(tmp_path / "actions", root=data, layout="release", source="gt3d", level="action", window=None)
    with loss_policy(LossPolicy(accept=True)):
        actions = SkeletonStore(prepare_mads(tmp_path / "actions", root=data, layout="release", source="gt3d",
                                             level="action", window=None))
    assert actions.meta.class_names == ["Hip-hop/Routine1", "Hip-hop/Routine2", "Hip-hop/Routine3",
                                        "Karate/Kata1", "Karate/Kata2", "Karate/Kata3"]
    assert [actions.meta.class_names[label] for label in actions.index["label"].tolist()] == [
        "Hip-hop/Routine1", "Karate/Kata1"]
    assert actions.index["length"].tolist() == [100, 100]

    # the depth release: 19 joints, found from the download folder once multi-view has no ground truth
    depth = mads_release / "MADS_depth" / "MADS" / "depth_data" / "Jazz"
    depth.mkdir(parents=True)
    savemat(depth / "Jazz_Dance1_GT.mat", {"GTpose2": _gt_cells(rng.uniform(-900, 900, size=(40, 19, 3)))})
    store19 = SkeletonStore(prepare_mads(tmp_path / "depth", root=depth.parent, layout="release", source="gt3d",
                                         window=None))
    assert store19.meta.layout == "mads19" and store19.frame_shape == (1, 19, 3) and len(store19) == 1
    assert make_layout(**store19.meta.layout_spec).joints[5] == "left_foot"
    assert np.abs(store19.sequence(0)).max() <= 0.9
    for path in data.rglob("*_GT.mat"):
        path.unlink()
    assert SkeletonStore(prepare_mads(tmp_path / "found", root=mads_release, layout="release", source="gt3d",
                                      window=None)).meta.layout == "mads19"

    # a given gt_layout overrides the one chosen by joint count
    chain = {"name": "chain19", "joints": [f"j{i}" for i in range(19)], "edges": [[i, i + 1] for i in range(18)],
             "centre": 0}
    custom = SkeletonStore(prepare_mads(tmp_path / "custom", root=depth.parent, layout="release", source="gt3d",
                                        gt_layout=chain, window=None))
    assert custom.meta.layout == "chain19" and custom.meta.layout_spec["joints"][0] == "j0"


def test_mads_release_folder_not_found(tmp_path: Path, mads_release: Path) -> None:
    root = tmp_path / "elsewhere"
    (root / "Jazz").mkdir(parents=True)
    with pytest.raises(UserError, match="multi_view_data") as error:
        prepare_mads(tmp_path / "store", root=root, layout="release")
    assert str(root) in str(error.value) and str(root / "MADS_multiview" / "MADS" / "multi_view_data") in str(
        error.value)
    with pytest.raises(UserError, match=r"_GT\.mat") as error:  # videos, but no ground truth anywhere
        prepare_mads(tmp_path / "store", root=mads_release, layout="release", source="gt3d")
    assert str(mads_release) in str(error.value)
    with pytest.raises(UserError, match="layout one of"):
        prepare_mads(tmp_path / "store", root=mads_release, layout="zip")


def test_mads_release_from_videos_routes_the_camera_videos(
    tmp_path: Path, mads_release: Path, kicks: Path, kick_videos: dict[str, list[np.ndarray]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """source=video pose-estimates multi_view_data's videos (stubbed here) and reads their flat JSON mirror."""
    import asgcn_lightning.data.video_poses as video_poses

    data = mads_release / "MADS_multiview" / "MADS" / "multi_view_data"
    calls = []

    def fake_tree(root: Path, store_dir: Path, *, size: object = None) -> tuple[Path, list[tuple[Path, str]]]:
        calls.append((Path(root), size))
        json_root = Path(store_dir).with_name(f"{Path(store_dir).name}_openpose")
        for (category, sequence, camera), kick in MADS_RELEASE.items():
            if (Path(root) / category / f"{category}_{sequence}_C{camera}.avi").is_file():
                _release_json(json_root / category, f"{category}_{sequence}_C{camera}", kick, kicks)
        return json_root, []

    monkeypatch.setattr(video_poses, "openpose_tree_from_videos", fake_tree)
    store = SkeletonStore(prepare_mads(tmp_path / "store", root=mads_release, layout="release", source="video",
                                       level="action", window=30, stride=15, image_size=(1920, 1080)))
    assert calls == [(data, (1920, 1080))]
    assert len(store) == sum(expected_windows(kick_videos[kick], 30, 15) for kick in MADS_RELEASE.values())
    assert store.meta.class_names == ["Hip-hop/Routine1", "Hip-hop/Routine2", "Karate/Kata1"]
    assert {_release_record(store.record(i).name)[2] + 1 == store.record(i).camera for i in range(len(store))} == {
        True}
    assert np.abs(store.sequence(0)[..., :2]).max() <= 0.5  # centred by the frame size


def test_mads_release_trains_from_the_cli_config(tmp_path: Path, mads_release: Path, compose, one_thread) -> None:
    from asgcn_lightning.apps.train import train
    from asgcn_lightning.prepare import prepare

    cfg = compose(["dataset=mads", f"dataset.root={mads_release}", f"dataset.store_dir={tmp_path / 'store'}",
                   "dataset.prepare.layout=release", "dataset.prepare.level=action", "dataset.window=30",
                   "dataset.prepare.window=30", "dataset.prepare.stride=15", "dataset.num_workers=0",
                   "split=xview", "model=tiny", "trainer=cpu", "logger=csv", "trainer.max_epochs=1",
                   "torch_threads=1"])
    store = prepare(cfg)  # what `python -m asgcn_lightning.prepare dataset=mads ...` runs
    assert store.meta.class_names == ["Hip-hop/Routine1", "Hip-hop/Routine2", "Karate/Kata1"]
    metrics = train(cfg)
    assert {"train/loss", "val/acc_top1"} <= set(metrics) and 0.0 <= metrics["val/acc_top1"] <= 1.0
    with open(Path(cfg.paths.output_dir) / "per_class_test.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class"] for row in rows] == store.meta.class_names
    assert sum(int(row["samples"]) for row in rows) == int((store.index["camera"] == 3).sum())  # C2 is held out
