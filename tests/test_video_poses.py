"""Video → BODY_25 skeletons with the built-in BlazePose backend, on real photos and videos.

Tests that run the backend need the optional ``[video]`` extra and skip without it; the mapping,
size and clip arithmetic are checked without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from asgcn_lightning.data.formats.openpose_json import layout_of_frame, read_openpose_folder, read_openpose_frame
from asgcn_lightning.data.pose_backend import BLAZEPOSE_LANDMARKS, blazepose_to_body25, import_video_dependency
from asgcn_lightning.data.sources.losses import loss_policy
from asgcn_lightning.data.sources.mads import prepare_mads
from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.data.video import clip_ranges, output_size, parse_size, probe_video, read_frames, split_video
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.schemas import LossPolicy
from asgcn_lightning.skeleton.layouts import OPENPOSE25

J = OPENPOSE25.index


@pytest.fixture(scope="module")
def cv2():
    pytest.importorskip("mediapipe", reason="the optional [video] extra is not installed")
    return pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def photo_poses(cv2, fixtures_dir: Path) -> dict[str, np.ndarray]:
    from asgcn_lightning.data.pose_backend import BlazePoseBody25

    with BlazePoseBody25(static_image=True) as backend:
        return {name: backend(cv2.imread(str(fixtures_dir / "images" / name))) for name in ("astronaut.png",
                                                                                           "messi5.jpg")}


@pytest.fixture(scope="module")
def ta_chi_clips(cv2, fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """ta_chi.mp4 (300 frames) cut into 4 s clips overlapping by 1 s, and into 1 s clips."""
    out = tmp_path_factory.mktemp("clips")
    video = fixtures_dir / "video" / "ta_chi.mp4"
    return {"4s": split_video(video, out / "4s", clip_seconds=4, overlap_seconds=1),
            "1s": split_video(video, out / "1s", clip_seconds=1)}


# -- without the backend ----------------------------------------------------------------------------
def test_mapping_makes_midpoints_shares_toes_and_drops_joints_outside_the_frame() -> None:
    landmarks = np.zeros((BLAZEPOSE_LANDMARKS, 3), np.float32)
    landmarks[:, :2], landmarks[:, 2] = 0.5, 0.9
    landmarks[11], landmarks[12] = (0.6, 0.2, 0.8), (0.4, 0.4, 0.7)  # left, right shoulder
    landmarks[31] = (0.25, 0.75, 0.6)  # left foot index
    landmarks[25] = (0.5, 1.3, 0.9)  # left knee below the frame
    landmarks[26] = (0.5, 0.5, 0.01)  # right knee barely visible
    body = blazepose_to_body25(landmarks, width=200, height=100)
    np.testing.assert_allclose(body[J("neck")], (100, 30, 0.7), rtol=1e-6)
    np.testing.assert_allclose(body[J("left_shoulder")], (120, 20, 0.8), rtol=1e-6)
    np.testing.assert_allclose(body[J("left_big_toe")], body[J("left_small_toe")])
    np.testing.assert_allclose(body[J("left_big_toe")], (50, 75, 0.6), rtol=1e-6)
    assert not body[J("left_knee")].any() and not body[J("right_knee")].any()
    assert body[J("mid_hip")][2] == pytest.approx(0.9)


def test_sizes_and_clip_windows() -> None:
    assert parse_size("340x256") == (340, 256) and parse_size("340X-1") == (340, -1)
    for bad in ("340", "ax256", "0x256", "-1x-1"):
        with pytest.raises(UserError, match="size"):
            parse_size(bad)
    assert clip_ranges(300, 30, None) == [(0, 300)]
    assert clip_ranges(300, 30, 4, 1) == [(0, 120), (90, 210), (180, 300)]
    assert clip_ranges(100, 30, 5) == [(0, 100)]  # shorter than one clip: the whole video
    with pytest.raises(UserError, match="overlap"):
        clip_ranges(300, 30, 2, 2)


def test_a_missing_extra_is_named_with_the_install_command() -> None:
    with pytest.raises(UserError, match=r"no_such_video_module.*\[video\]"):
        import_video_dependency("no_such_video_module")


# -- the backend on real photos and videos ----------------------------------------------------------
def test_upper_body_photo_finds_face_and_shoulders_but_not_the_legs(photo_poses: dict[str, np.ndarray]) -> None:
    people = photo_poses["astronaut.png"]
    assert people.shape == (1, 25, 3)
    for joint in ("nose", "left_eye", "right_eye", "neck", "left_shoulder", "right_shoulder"):
        assert people[0, J(joint), 2] > 0.5, joint
    for joint in ("left_knee", "right_knee", "left_ankle", "right_ankle"):
        assert people[0, J(joint), 2] < 0.5, joint
    assert people[0, J("nose"), 1] < people[0, J("neck"), 1]  # image y grows downwards


def test_full_body_photo_finds_most_joints(photo_poses: dict[str, np.ndarray]) -> None:
    people = photo_poses["messi5.jpg"]
    assert people.shape == (1, 25, 3) and (people[0, :, 2] > 0.5).sum() >= 22
    assert people[0, J("nose"), 1] < people[0, J("mid_hip"), 1] < people[0, J("left_ankle"), 1]


def test_written_frames_read_back_unchanged(photo_poses: dict[str, np.ndarray], tmp_path: Path) -> None:
    from asgcn_lightning.data.video_poses import openpose_frame

    for name, people in [*photo_poses.items(), ("nobody", np.zeros((0, 25, 3), np.float32))]:
        path = tmp_path / f"{Path(name).stem}_000000000000_keypoints.json"
        path.write_text(json.dumps(openpose_frame(people)))
        np.testing.assert_allclose(read_openpose_frame(path).reshape(people.shape), people, atol=1e-3)


def test_split_video_keeps_frame_rate_and_frame_counts(ta_chi_clips: dict[str, list[Path]]) -> None:
    assert [p.name for p in ta_chi_clips["4s"]] == [f"ta_chi_clip{k:03d}.mp4" for k in range(3)]
    assert len(ta_chi_clips["1s"]) == 10
    for path in ta_chi_clips["4s"]:
        info = probe_video(path)
        assert (info.width, info.height) == (340, 256) and info.fps == pytest.approx(29.97, abs=0.01)
        assert sum(1 for _ in read_frames(info)) == 120
    small = probe_video(ta_chi_clips["1s"][0])
    assert output_size(small, (170, -1)) == (170, 128)
    assert {frame.shape for frame in read_frames(small, (170, -1))} == {(128, 170, 3)}


def test_cli_writes_an_openpose_folder_per_clip(ta_chi_clips: dict[str, list[Path]], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from asgcn_lightning.data.video_poses import main

    video = ta_chi_clips["4s"][0]  # the first 120 frames of ta_chi.mp4
    main([str(video), "--out", str(tmp_path), "--clip-seconds", "1.5", "--overlap", "0.5"])
    assert "120 frames at 29.970 fps, 340x256" in capsys.readouterr().out
    # 45-frame clips every 30 frames, the last flush with the end: starts 0, 30, 60, 75
    clips = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in clips] == [f"ta_chi_clip000_clip{k:03d}" for k in range(4)]
    frames = []
    for folder in clips:
        (name, sequence), = read_openpose_folder(folder).items()
        assert name == folder.name and len(sequence) == 45
        frames += sequence
    with_body = [f for f in frames if layout_of_frame(f) == "openpose25"]
    assert len(with_body) > 0.8 * len(frames)
    assert all(0 <= f[0, J("neck"), 0] < 340 and 0 <= f[0, J("neck"), 1] < 256 for f in with_body)


def test_bad_video_files_are_named(cv2, fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from asgcn_lightning.data.video_poses import main

    (tmp_path / "notes.mp4").write_text("not a video at all\n")
    (tmp_path / "empty.avi").touch()
    cases = {tmp_path / "notes.mp4": "not a video", tmp_path / "empty.avi": "empty file",
             fixtures_dir / "images" / "astronaut.png": "still image", tmp_path / "absent.mp4": "no such"}
    for path, problem in cases.items():
        with pytest.raises(DataFormatError, match=problem) as caught:
            probe_video(path)
        assert caught.value.path == str(path)
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "notes.mp4"), "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2 and f"{tmp_path / 'notes.mp4'}: not a video" in capsys.readouterr().err


def test_video_folder_preparer_and_its_cache(ta_chi_clips: dict[str, list[Path]], tmp_path: Path) -> None:
    from asgcn_lightning.data.sources.video_folder import prepare_video_folder
    from asgcn_lightning.data.video_poses import PoseSettings, videos_to_openpose

    root = tmp_path / "videos"
    for label, clip in (("push", 0), ("wave", 5)):
        (root / label).mkdir(parents=True)
        shutil.copy(ta_chi_clips["1s"][clip], root / label)
    (root / "push" / "broken.mp4").write_text("not a video")
    with pytest.raises(UserError, match=r"lost 1 of 3 inputs .*1 × not a video FFmpeg .* can decode"):
        prepare_video_folder(tmp_path / "store", root=root, size=(340, 256))
    with loss_policy(LossPolicy(accept=True)):  # the poses of the two videos are reused from the cache
        store = SkeletonStore(prepare_video_folder(tmp_path / "store", root=root, size=(340, 256)))
    assert "not a video" in store.meta.skipped[0]["reason"]
    assert store.meta.class_names == ["push", "wave"] and store.meta.layout == "openpose25"
    assert len(store) == 2 and store.frame_shape == (1, 25, 3)
    assert sorted(store.record(i).name for i in range(2)) == ["push/ta_chi_clip000", "wave/ta_chi_clip005"]
    assert all(len(store.sequence(i)) == 30 for i in range(2))
    assert np.abs(store.sequence(0)[..., :2]).max() <= 0.5  # centred by the frame
    again, failed = videos_to_openpose(root, tmp_path / "store_openpose", PoseSettings(size=(340, 256),
                                                                                       folder_per_clip=False))
    assert [r.reused for r in again] == [True, True]
    assert failed == [(root / "push" / "broken.mp4", "not a video FFmpeg (through OpenCV) can decode")]


def test_mads_from_videos(ta_chi_clips: dict[str, list[Path]], tmp_path: Path) -> None:
    root = tmp_path / "mads"
    for category, clip, performer in (("Jazz", 1, 2), ("Tai-chi", 2, 4)):
        (root / category / "Step" / "cam1").mkdir(parents=True)
        shutil.copy(ta_chi_clips["1s"][clip], root / category / "Step" / "cam1" / f"P{performer}_take1.mp4")
    store = SkeletonStore(prepare_mads(tmp_path / "store", root=root, source="video", window=20, stride=10))
    assert store.meta.class_names == ["Jazz", "Tai-chi"] and len(store) == 4  # windows at 0 and 10 of 30 frames
    assert set(store.index["subject"].tolist()) == {2, 4} and set(store.index["camera"].tolist()) == {1}
