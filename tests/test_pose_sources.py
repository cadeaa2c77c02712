"""Pose-file readers, tracking, and the OpenPose, pyskl and NATOPS adapters, on the real fixtures where they exist."""

from __future__ import annotations

import collections
import csv
import importlib
import inspect
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from pose_helpers import expected_windows, skipped_reasons

from asgcn_lightning.data.formats.openpose_json import (
    group_frame_files,
    layout_of_frame,
    read_openpose_frame,
)
from asgcn_lightning.data.formats.pyskl_pickle import load_pyskl_pickle
from asgcn_lightning.data.formats.uea_ts import read_ts
from asgcn_lightning.data.sources.losses import loss_policy
from asgcn_lightning.data.sources.natops import prepare_natops
from asgcn_lightning.data.sources.openpose import prepare_openpose_folder
from asgcn_lightning.data.sources.pyskl import prepare_pyskl
from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.data.tracking import (
    normalise_by_extent,
    normalise_by_image_size,
    select_main_people,
    track_people,
)
from asgcn_lightning.data.windows import window_starts
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.schemas import LossPolicy
from asgcn_lightning.skeleton.layouts import make_layout

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dataset"


# -- OpenPose JSON ----------------------------------------------------------------------------------
def test_every_soccer_kick_frame_parses(kicks: Path) -> None:
    files = sorted(kicks.glob("*.json"))
    people_per_frame = collections.Counter()
    for path in files:
        people = read_openpose_frame(path)
        people_per_frame[len(people)] += 1
        if len(people):
            assert people.shape[1:] == (25, 3) and layout_of_frame(people) == "openpose25"
    assert len(files) == 1785
    assert people_per_frame == {0: 409, 1: 1247, 2: 115, 3: 14}
    videos, stray = group_frame_files(files)
    assert not stray and len(videos) == 20
    assert {len(v) for v in videos.values()} == {88, 89, 90}
    assert videos["Kick_1"][0].name == "Kick_1_000000000000_keypoints.json"


def test_single_image_with_hands_reads(fixtures_dir: Path) -> None:
    (path,) = (fixtures_dir / "openpose" / "single_image").glob("*.json")
    people = read_openpose_frame(path)
    assert people.shape == (1, 25, 3)
    assert people[0, 0, 0] == pytest.approx(328.099) and people[0, 0, 2] == pytest.approx(0.75994)


@pytest.mark.parametrize(("content", "problem"), [
    ("", "empty file"),
    ("{not json", "not valid JSON"),
    ('{"version": 1.3}', "no 'people' list"),
    ('{"people": [{"pose_keypoints_2d": [1, 2, 3, 4]}]}', "4 pose keypoint values"),
    ('{"people": [{"pose_keypoints_2d": ["a", "b", "c"]}]}', "3 pose keypoint values"),
    ('{"people": [{"face_keypoints_2d": []}]}', "no 'pose_keypoints_2d'"),
])
def test_bad_openpose_json_names_file_and_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "clip_000000000000_keypoints.json"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=problem) as error:
        read_openpose_frame(path)
    assert str(path) in str(error.value)


def test_coco18_frames_are_recognised(tmp_path: Path) -> None:
    path = tmp_path / "a_000000000000_keypoints.json"
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 54}]}))
    assert layout_of_frame(read_openpose_frame(path)) == "coco18"


# -- tracking ---------------------------------------------------------------------------------------
def _mean_joint_step(a: np.ndarray, b: np.ndarray) -> float | None:
    common = (a[:, 2] >= 0.05) & (b[:, 2] >= 0.05)
    if common.sum() < 5:
        return None
    points = a[a[:, 2] >= 0.05, :2]
    size = float(np.linalg.norm(points.max(0) - points.min(0)))
    return float(np.linalg.norm(a[common, :2] - b[common, :2], axis=-1).mean()) / size


def test_tracking_keeps_the_performer_in_slot_zero(kick_videos: dict[str, list[np.ndarray]]) -> None:
    covered = detected = 0
    for video, frames in kick_videos.items():
        main = select_main_people(track_people(frames), 2)
        for t, people in enumerate(frames):
            # a slot holds one detection as it was, never a mix of two people
            for slot in range(2):
                if main[t, slot, :, 2].any():
                    assert any(np.array_equal(main[t, slot], p) for p in people), (video, t)
            if t and (step := _mean_joint_step(main[t - 1, 0], main[t, 0])) is not None:
                assert step < 0.5, f"{video} frame {t}: slot 0 jumped {step:.2f} body sizes"
        has_people = np.array([len(p) > 0 for p in frames])
        in_slot = main[:, 0, :, 2].any(axis=1)
        assert in_slot[has_people].mean() > 0.7, video
        covered, detected = covered + in_slot.sum(), detected + has_people.sum()
    assert covered / detected > 0.9


def test_tracking_identity_survives_shuffled_detections(kick_videos: dict[str, list[np.ndarray]]) -> None:
    rng = np.random.default_rng(0)
    performer = [p[0] if len(p) else None for p in kick_videos["Kick_7"]]
    frames, truth = [], np.zeros((len(performer), 2, 25, 3), np.float32)
    for t, pose in enumerate(performer):
        if pose is None:
            frames.append(np.zeros((0, 25, 3), np.float32))
            continue
        bystander = pose.copy()
        bystander[:, 0] += 700 * (pose[:, 2] > 0)
        bystander[:, 2] *= 0.5
        truth[t] = pose, bystander
        frames.append(np.stack([pose, bystander])[rng.permutation(2)])
    np.testing.assert_array_equal(select_main_people(track_people(frames), 2), truth)


def test_normalisation_keeps_missing_joints_zero() -> None:
    poses = np.array([[[[960.0, 540.0, 0.9], [0.0, 0.0, 0.0], [1920.0, 0.0, 0.5]]]], np.float32)
    by_image = normalise_by_image_size(poses, (1920, 1080))  # centred on the image, divided by its longer side
    np.testing.assert_allclose(by_image[0, 0], [[0.0, 0.0, 0.9], [0, 0, 0], [0.5, -0.28125, 0.5]])
    # annotated with confidence 0: low confidence, not missing; its coordinates stay
    low = normalise_by_image_size(np.array([[[[480.0, 1080.0, 0.0]]]], np.float32), (1920, 1080))
    np.testing.assert_allclose(low[0, 0], [[-0.25, 0.28125, 0.0]])
    # box (960, 0)-(1920, 540): centre (1440, 270), larger side 960
    by_extent = normalise_by_extent(poses)
    np.testing.assert_allclose(by_extent[0, 0], [[-0.5, 0.28125, 0.9], [0, 0, 0], [0.5, -0.28125, 0.5]])


def test_window_starts_cover_the_tail() -> None:
    assert window_starts(90, 30, 15) == [0, 15, 30, 45, 60]
    assert window_starts(89, 30, 15) == [0, 15, 30, 45, 59]
    assert window_starts(20, 30, 15) == [0]
    assert window_starts(90, None, None) == [0]
    assert window_starts(100, 40, None) == [0, 40, 60]


# -- OpenPose folder preparer -----------------------------------------------------------------------
def test_openpose_folder_with_labels_csv_and_windows(
    tmp_path: Path, fixtures_dir: Path, kicks: Path, kick_videos: dict[str, list[np.ndarray]],
) -> None:
    table = np.load(fixtures_dir / "openpose" / "soccer_kicks" / "labels.npy", allow_pickle=True)
    directions = {f"Kick_{row[0]}": ["left", "centre", "right"][row[2]] for row in table}
    labels = tmp_path / "labels.csv"
    labels.write_text("video,label\n" + "".join(f"{v},{d}\n" for v, d in directions.items()))
    store = SkeletonStore(prepare_openpose_folder(tmp_path / "store", root=kicks, labels=labels,
                                                  image_size=(1920, 1080), window=30, stride=15))
    assert store.meta.class_names == ["centre", "left", "right"]
    assert store.meta.layout == "openpose25" and store.frame_shape == (2, 25, 3)
    assert len(store) == sum(expected_windows(f, 30, 15) for f in kick_videos.values())
    for i in range(len(store)):
        record, sample = store.record(i), store.sequence(i)
        assert store.meta.class_names[record.label] == directions[record.name.split("@")[0]]
        assert len(sample) == 30 and record.bodies >= 1
        assert np.abs(sample[..., :2]).max() <= 0.5
    assert all("nobody detected" in reason for reason in skipped_reasons(store).values())


def test_openpose_class_folders_record_bad_files(tmp_path: Path, kicks: Path) -> None:
    root = tmp_path / "raw"
    for label, kick in (("curl", "Kick_1"), ("laces", "Kick_2")):
        (root / label).mkdir(parents=True)
        for path in kicks.glob(f"{kick}_*.json"):
            shutil.copy(path, root / label / path.name)
    (root / "laces" / "Kick_2_000000000050_keypoints.json").write_text("")
    (root / "laces" / "Kick_2_000000000051_keypoints.json").write_text(
        json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 30}]}))
    (root / "laces" / "notes.json").write_text("{}")
    store = SkeletonStore(prepare_openpose_folder(tmp_path / "store", root=root))
    assert store.meta.class_names == ["curl", "laces"]
    assert [store.record(i).name for i in range(len(store))] == ["curl/Kick_1", "laces/Kick_2"]
    assert [len(store.sequence(i)) for i in range(len(store))] == [90, 90]
    skipped = skipped_reasons(store)
    assert "empty file" in skipped[str(root / "laces" / "Kick_2_000000000050_keypoints.json")]
    assert "30 pose keypoint values" in skipped[str(root / "laces" / "Kick_2_000000000051_keypoints.json")]
    assert "does not follow" in skipped[str(root / "laces" / "notes.json")]
    # the bad frames stay in the sequence as empty frames, keeping its timing
    assert not store.sequence(1)[50:52].any()


def test_openpose_folder_needs_classes_or_labels(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no class sub-folders"):
        prepare_openpose_folder(tmp_path / "store", root=tmp_path)
    with pytest.raises(UserError, match="needs the folder"):
        prepare_openpose_folder(tmp_path / "store", root=None)


# -- pyskl ------------------------------------------------------------------------------------------
def _pyskl_file(path: Path, dimensions: int, rng: np.random.Generator) -> dict[str, object]:
    joints = 17 if dimensions == 2 else 25
    annotations = []
    for i in range(6):
        people, frames = 1 + i % 3, 20 + i
        keypoint = rng.uniform(10, 400, (people, frames, joints, dimensions)).astype(np.float32)
        annotation = {"frame_dir": f"S001C001P00{i}R001A00{i % 3 + 1}", "label": i % 3, "keypoint": keypoint,
                      "total_frames": frames, "img_shape": (480, 640)}
        if dimensions == 2:
            annotation["keypoint_score"] = rng.uniform(0.1, 1, (people, frames, joints)).astype(np.float16)
        annotations.append(annotation)
    names = [a["frame_dir"] for a in annotations]
    content = {"split": {"xsub_train": names[:4], "xsub_val": names[4:]}, "annotations": annotations}
    path.write_bytes(pickle.dumps(content))
    return content


@pytest.mark.parametrize("dimensions", [2, 3])
def test_pyskl_pickle_round_trips(tmp_path: Path, dimensions: int) -> None:
    content = _pyskl_file(tmp_path / "anno.pkl", dimensions, np.random.default_rng(dimensions))
    loaded = load_pyskl_pickle(tmp_path / "anno.pkl")
    assert loaded.splits["xsub_val"] == [a.frame_dir for a in loaded.annotations[4:]]
    # 3D as stored in the file (the default centres it: tests/test_pickle_input.py)
    with loss_policy(LossPolicy(accept=True)):
        store = SkeletonStore(prepare_pyskl(tmp_path / "store", path=tmp_path / "anno.pkl", split_train="xsub_train",
                                            split_test="xsub_val", normalise=dimensions == 2))
    assert store.meta.channels == 3 and len(store) == 6
    assert store.meta.layout == ("coco17" if dimensions == 2 else "ntu25")
    assert store.index["setup"].tolist() == [1, 1, 1, 1, 2, 2]
    make_layout(**(store.meta.layout_spec or {"name": store.meta.layout}))
    for i, raw in enumerate(content["annotations"]):
        keypoint = raw["keypoint"]
        if dimensions == 2:
            score = raw["keypoint_score"].astype(np.float32)
            keypoint = np.concatenate([(keypoint - [320, 240]) / 640, score[..., None]], axis=-1)
            # with three people, the two with the highest total score are kept, best first
            order = np.argsort(-score.sum(axis=(1, 2)), kind="stable")[:2]
        else:
            order = np.arange(min(2, len(keypoint)))
        expected = np.zeros((keypoint.shape[1], 2, *keypoint.shape[2:]), np.float32)
        expected[:, :len(order)] = keypoint[order].transpose(1, 0, 2, 3)
        assert store.record(i).name == raw["frame_dir"] and store.record(i).label == raw["label"]
        np.testing.assert_allclose(store.sequence(i), expected, rtol=1e-5, atol=1e-6)


def test_pyskl_bad_input(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"\x80\x04\x95garbage that is not a pickle")
    with pytest.raises(DataFormatError, match="not a readable pickle") as error:
        load_pyskl_pickle(corrupt)
    assert str(corrupt) in str(error.value)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"annotations": [1, 2, 3]})[:-5])
    with pytest.raises(DataFormatError, match="not a readable pickle"):
        load_pyskl_pickle(truncated)
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataFormatError, match="'annotations' list"):
        load_pyskl_pickle(wrong)
    content = _pyskl_file(tmp_path / "anno.pkl", 2, np.random.default_rng(0))
    with pytest.raises(UserError, match="no split 'xset_train'"):
        prepare_pyskl(tmp_path / "store", path=tmp_path / "anno.pkl", split_train="xset_train",
                      split_test="xsub_val")
    content["annotations"][1]["keypoint"] = content["annotations"][1]["keypoint"][:, :, :10]
    content["annotations"][1]["keypoint_score"] = content["annotations"][1]["keypoint_score"][:, :, :10]
    (tmp_path / "anno.pkl").write_bytes(pickle.dumps(content))
    with loss_policy(LossPolicy(accept=True)):
        store = SkeletonStore(prepare_pyskl(tmp_path / "store", path=tmp_path / "anno.pkl",
                                            split_train="xsub_train", split_test="xsub_val"))
    assert len(store) == 5 and "10 joints" in skipped_reasons(store)[f"{tmp_path / 'anno.pkl'}:S001C001P001R001A002"]


def test_pyskl_trains_from_the_cli_config_and_refuses_a_store_of_other_splits(
    tmp_path: Path, compose, one_thread,
) -> None:
    from asgcn_lightning.apps.train import train
    from asgcn_lightning.prepare import prepare

    _pyskl_file(tmp_path / "anno.pkl", 3, np.random.default_rng(3))
    common = ["dataset=pyskl", f"dataset.path={tmp_path / 'anno.pkl'}", f"dataset.store_dir={tmp_path / 'store'}",
              "dataset.window=16", "dataset.num_workers=0", "dataset.batch_size=2",
              "split=predefined", "model=tiny", "trainer=cpu", "logger=csv", "trainer.max_epochs=1",
              "torch_threads=1"]
    cfg = compose([*common, "dataset.split_train=xsub_train", "dataset.split_test=xsub_val"])
    store = prepare(cfg)  # what `python -m asgcn_lightning.prepare dataset=pyskl dataset.path=...` runs
    assert collections.Counter(store.index["setup"].tolist()) == {1: 4, 2: 2}
    metrics = train(cfg)
    assert {"train/loss", "val/acc_top1"} <= set(metrics)
    with open(Path(cfg.paths.output_dir) / "per_class_test.csv") as handle:
        assert sum(int(row["samples"]) for row in csv.DictReader(handle)) == 2  # the pickle's xsub_val
    swapped = compose([*common, "dataset.split_train=xsub_val", "dataset.split_test=xsub_train"])
    with pytest.raises(UserError, match=r"prepared with other settings \(split_test xsub_val there, "
                                        r"xsub_train now; split_train xsub_train there, xsub_val now\): add "
                                        r"`dataset.prepare.split_test=xsub_val dataset.prepare.split_train=xsub_train`"
                                        r".*python -m asgcn_lightning.prepare dataset=pyskl"):
        train(swapped)


# -- UEA NATOPS -------------------------------------------------------------------------------------
def test_natops_converts_to_360_samples(tmp_path: Path, fixtures_dir: Path) -> None:
    store = SkeletonStore(prepare_natops(tmp_path / "store", root=fixtures_dir / "natops"))
    assert len(store) == 360 and store.frame_shape == (1, 8, 3)
    assert set(store.index["length"].tolist()) == {51}
    assert store.meta.class_names == ["I have command", "All clear", "Not clear", "Spread wings", "Fold wings",
                                      "Lock wings"]  # the signals the archive's labels 1.0..6.0 stand for
    assert collections.Counter(store.index["setup"].tolist()) == {1: 180, 2: 180}
    assert collections.Counter(store.index["label"].tolist()) == {label: 60 for label in range(6)}
    layout = make_layout(**store.meta.layout_spec)
    assert layout.num_joints == 8 and layout.parents.count(-1) == 1  # one connected skeleton
    # channel order: hand tip left x, y, z is the first joint of the first sample
    raw = read_ts(fixtures_dir / "natops" / "NATOPS_TRAIN.ts")
    np.testing.assert_allclose(store.sequence(0)[:, 0, 0], raw.series[0][:3].T)
    np.testing.assert_allclose(store.sequence(0)[:, 0, 7], raw.series[0][21:24].T)


@pytest.mark.parametrize(("data", "problem", "label"), [
    ("1,2,3:4,5,6:1.0", "line 5: 2 channels, expected 3", "1.0"),
    ("1,2,3:4,5,6:7,8,x:1.0", "line 5, channel 3: non-numeric", "1.0"),
    ("1,2,3:4,5,6:7,8,9:7.0", "line 5: class '7.0' is not one of", None),
    ("1,2,3:4,5:7,8,9:1.0", "line 5: channels have different lengths", "1.0"),
])
def test_a_malformed_ts_line_costs_its_sample_only(tmp_path: Path, data: str, problem: str,
                                                   label: str | None) -> None:
    path = tmp_path / "bad.ts"
    path.write_text(f"@dimensions 3\n@classLabel true 1.0 2.0\n@data\n1,2:3,4:5,6:2.0\n{data}\n7,8:9,1:2,3:1.0\n")
    parsed = read_ts(path)
    assert [rejected.ordinal for rejected in parsed.rejected] == [1] and parsed.ordinals == [0, 2]
    assert parsed.rejected[0].reason.startswith(problem) and parsed.rejected[0].label == label
    assert parsed.labels == ["2.0", "1.0"]
    np.testing.assert_array_equal(parsed.series[1], [[7, 8], [9, 1], [2, 3]])


def test_ts_without_data_section(tmp_path: Path) -> None:
    path = tmp_path / "bad.ts"
    path.write_text("@problemName x\n@classLabel true 1 2\n")
    with pytest.raises(DataFormatError, match="no @data"):
        read_ts(path)


def test_natops_with_one_malformed_line_loses_that_sample_only(tmp_path: Path, fixtures_dir: Path) -> None:
    root = tmp_path / "natops"
    root.mkdir()
    shutil.copy(fixtures_dir / "natops" / "NATOPS_TEST.ts", root)
    lines = (fixtures_dir / "natops" / "NATOPS_TRAIN.ts").read_text(errors="replace").splitlines()
    first = next(number for number, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    tenth = first + 9
    lines[tenth] = lines[tenth].replace(",", ",x,", 1)  # a non-numeric value in the 10th sample's first channel
    (root / "NATOPS_TRAIN.ts").write_text("\n".join(lines) + "\n")
    store = SkeletonStore(prepare_natops(tmp_path / "store", root=root))
    assert len(store) == 359 and collections.Counter(store.index["setup"].tolist()) == {1: 179, 2: 180}
    names = set(store.index["name"].tolist())
    assert "train_009" not in names and {"train_008", "train_010", "train_179"} <= names  # names stay the files'
    reason = skipped_reasons(store)[f"{root / 'NATOPS_TRAIN.ts'}:sample 10"]
    assert reason.startswith(f"line {tenth + 1}, channel 1: non-numeric"), reason


def test_natops_with_a_malformed_file_records_it(tmp_path: Path, fixtures_dir: Path) -> None:
    root = tmp_path / "natops"
    root.mkdir()
    shutil.copy(fixtures_dir / "natops" / "NATOPS_TRAIN.ts", root)
    (root / "NATOPS_TEST.ts").write_text("@classLabel true 1.0\n@data\n1,2:3,4:1.0\n")
    with pytest.raises(UserError, match=r"no sample of the split 'NATOPS_TEST\.ts'; .*1 × 2 channels, expected 24"):
        prepare_natops(tmp_path / "store", root=root)
    with loss_policy(LossPolicy(accept=True)):
        store = SkeletonStore(prepare_natops(tmp_path / "store", root=root))
    assert len(store) == 180 and set(store.index["setup"].tolist()) == {1}
    assert "channels, expected 24" in skipped_reasons(store)[str(root / "NATOPS_TEST.ts")]
    with pytest.raises(UserError, match=r"missing NATOPS_TRAIN\.ts"):
        prepare_natops(tmp_path / "other", root=tmp_path)


# -- configs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["openpose_folder", "kinetics_skeleton", "pyskl", "mads", "natops"])
def test_dataset_config_matches_its_preparer(name: str) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    assert cfg["name"] == name
    assert {"store_dir", "layout", "num_person", "classes", "split_values", "prepare"} <= set(cfg)
    module, function = cfg["prepare"]["_target_"].rsplit(".", 1)
    parameters = inspect.signature(getattr(importlib.import_module(module), function)).parameters
    assert set(cfg["prepare"]) - {"_target_", "_partial_", "_convert_"} <= set(parameters)
    if cfg["layout"] and "joints" in cfg["layout"]:
        assert make_layout(**cfg["layout"]).num_joints == len(cfg["layout"]["joints"])
