"""What a user can hand a model, read in one place: a store sample, an NTU ``.skeleton`` file, a folder
of OpenPose per-frame JSON (every video in it) or a video (poses from the built-in BlazePose backend).

Pose input keeps pixel coordinates; each classified stretch is normalised on its own, as preparation
normalised each stored window, and by default the way the model's data set was prepared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asgcn_lightning.data.formats.ntu_skeleton import read_ntu_skeleton
from asgcn_lightning.data.formats.openpose_json import group_frame_files, layout_of_frame, read_openpose_sequence
from asgcn_lightning.data.sources.ntu_bodies import actor_sequence
from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.data.tracking import normalise_by_extent, normalise_by_image_size, select_main_people, track_people
from asgcn_lightning.data.video import VIDEO_SUFFIXES, output_size, probe_video, read_frames
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.inference.model import LoadedModel
from asgcn_lightning.skeleton.layouts import Layout, make_layout

NTU_FPS = 30.0  # Kinect v2 records skeletons at 30 frames per second
DEFAULT_VIDEO_SIZE = (-1, 256)  # the height the pose backend is fast at; the width keeps the aspect ratio
INPUT_KINDS = "store:<index or name>, a .skeleton file, a folder of OpenPose JSON or a video"
Normaliser = Callable[[np.ndarray], np.ndarray]


@dataclass
class PoseSettings:
    """``pose.*``: how skeletons are taken from OpenPose JSON or from video."""

    normalise: Any = "auto"   # auto (as the model's data set was prepared) | extent | frame | [width, height]
    size: Any = "auto"        # [width, height] video frames are resized to (-1 keeps the aspect ratio);
                              # auto: the data set's prepare.size, else [-1, 256]
    model_complexity: int = 1  # BlazePose model; 1 ships with mediapipe


@dataclass
class SkeletonInput:
    """One sequence, in the form a prepared store holds samples (before ``normalise``)."""

    name: str
    source: str
    sequence: np.ndarray  # (T, M, V, C)
    fps: float
    layout: Layout
    label: str | None = None
    normalise: Normaliser | None = field(default=None, repr=False)

    def window(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """Frames ``[start, end)`` ready for :meth:`LoadedModel.model_input`."""
        part = self.sequence[start:end]
        return self.normalise(part) if self.normalise is not None else part


# -- pose normalisation ---------------------------------------------------------------------------------
def prepared_image_size(prepare: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The frame size pose data were normalised by when prepared, or None when centred on the people."""
    prepare = prepare or {}
    size = prepare.get("image_size") or prepare.get("size")
    if size is None or min(float(v) for v in size) < 1:
        return None
    return float(size[0]), float(size[1])


def pose_normaliser(pose: PoseSettings, prepare: Mapping[str, Any] | None,
                    frame_size: tuple[float, float] | None) -> Normaliser:
    """How pixel poses are centred: as the data set was prepared (``prepare``), unless ``pose.normalise`` says.

    ``extent`` centres on the people's box; ``frame`` divides by the frame size (``frame_size``,
    else the image size the data set was prepared with); ``[width, height]`` gives that size.
    """
    choice = pose.normalise
    prepared = prepared_image_size(prepare)
    if choice == "auto":
        choice = "extent" if prepared is None else "frame"
    if choice == "extent":
        return normalise_by_extent
    if choice == "frame":
        size = frame_size or prepared
        if size is None:
            raise UserError("pose.normalise=frame needs the frame size: give pose.normalise=[width, height]")
    elif isinstance(choice, Sequence) and not isinstance(choice, str):
        size = tuple(choice)
    else:
        raise UserError(f"pose.normalise={choice!r}: choose auto, extent, frame or [width, height]")
    if len(size) != 2 or min(float(v) for v in size) <= 0:
        raise UserError(f"pose.normalise size {list(size)}: expected [width, height] in pixels")
    width, height = float(size[0]), float(size[1])
    return lambda poses: normalise_by_image_size(poses, (width, height))


def video_size(pose: PoseSettings, prepare: Mapping[str, Any] | None) -> tuple[int, int]:
    """Frame size for pose estimation: ``pose.size``, else the data set's ``prepare.size``, else height 256."""
    size = pose.size
    if size in (None, "auto"):
        size = (prepare or {}).get("size") or DEFAULT_VIDEO_SIZE
    return int(size[0]), int(size[1])


def people_to_sequence(frames: Sequence[np.ndarray], num_person: int, what: str | Path) -> np.ndarray:
    """Per-frame detections ``(P, V, 3)`` → the ``num_person`` main people ``(T, M, V, 3)``, tracked."""
    tracks = track_people(frames)
    if tracks.shape[1] == 0:
        raise UserError(f"{what}: nobody detected in any frame")
    return select_main_people(tracks, num_person)


def estimate_video_poses(path: str | Path, size: tuple[int, int], model_complexity: int = 1
                         ) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    """BlazePose people ``(P, 25, 3)`` of every frame, the frame rate and the pose frame size."""
    from asgcn_lightning.data.pose_backend import BlazePoseBody25  # imports mediapipe: only for video

    info = probe_video(path)
    with BlazePoseBody25(model_complexity=model_complexity) as backend:
        frames = [backend(frame) for frame in read_frames(info, size)]
    return frames, info.fps, output_size(info, size)


# -- the dispatch -------------------------------------------------------------------------------------------
def find_sample(store: SkeletonStore, key: str) -> int:
    """The index of ``store:<key>``: a sample index, or a sample name."""
    if key.isdigit():
        if not 0 <= int(key) < len(store):
            raise UserError(f"store:{key}: {store.root} holds samples 0..{len(store) - 1}")
        return int(key)
    names = [str(n) for n in store.index["name"]]
    if key not in names:
        raise UserError(f"store:{key}: no sample with that index or name in {store.root}")
    return names.index(key)


def read_skeletons(text: str, store_dir: str | Path | None = None, num_person: int = 2, fps: float = NTU_FPS,
                   pose: PoseSettings | None = None, prepare: Mapping[str, Any] | None = None
                   ) -> list[SkeletonInput]:
    """What ``text`` names, as sequences in their own layout; anything else is a clear error.

    ``store_dir`` is the prepared store of ``store:`` samples; ``prepare`` the preparation settings
    of the data the pose input should resemble (how it was normalised, the video frame size).
    """
    pose = pose or PoseSettings()
    text = str(text)
    if text.startswith("store:"):
        if store_dir is None:
            raise UserError(f"{text}: a store sample needs the prepared data folder it comes from")
        store = SkeletonStore(store_dir)
        index = find_sample(store, text.removeprefix("store:"))
        record = store.record(index)
        layout = make_layout(**(store.meta.layout_spec or {"name": store.meta.layout}))
        return [SkeletonInput(record.name, f"{store.root}[{index}]", store.sequence(index), fps, layout,
                              label=store.meta.class_names[record.label])]
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder (give {INPUT_KINDS})")
    if path.is_dir():
        return _openpose_inputs(path, num_person, fps, pose_normaliser(pose, prepare, None))
    if path.suffix.lower() == ".skeleton":
        sequence, _ = actor_sequence(read_ntu_skeleton(path), max_actors=num_person)
        return [SkeletonInput(path.stem, str(path), sequence, NTU_FPS, make_layout("ntu25"))]
    if path.suffix.lower() in VIDEO_SUFFIXES:
        frames, video_fps, frame_size = estimate_video_poses(path, video_size(pose, prepare), pose.model_complexity)
        return [SkeletonInput(path.stem, str(path), people_to_sequence(frames, num_person, path), video_fps,
                              make_layout("openpose25"), normalise=pose_normaliser(pose, prepare, frame_size))]
    raise UserError(f"{path}: unknown input kind; give {INPUT_KINDS} ({', '.join(VIDEO_SUFFIXES)})")


def _openpose_inputs(folder: Path, num_person: int, fps: float, normalise: Normaliser) -> list[SkeletonInput]:
    grouped, _ = group_frame_files(folder.glob("*_keypoints.json"))
    if not grouped:
        raise UserError(f"{folder}: no OpenPose files (<video>_<frame:012d>_keypoints.json) in this folder")
    inputs = []
    for video, files in grouped.items():
        frames = read_openpose_sequence(files)
        detected = next((layout_of_frame(f) for f in frames if len(f)), None)
        if detected is None:
            raise DataFormatError(files[0].parent / f"{video}_*", "nobody detected in any frame")
        sequence = people_to_sequence(frames, num_person, folder / video)
        inputs.append(SkeletonInput(video, str(folder / video), sequence, fps, make_layout(detected),
                                    normalise=normalise))
    return inputs


# -- for a model ------------------------------------------------------------------------------------------
def require_layout(layout: Layout | str, model: LoadedModel, what: str | Path) -> None:
    """Refuse input whose joints mean something else than the model's (e.g. OpenPose into an NTU model)."""
    theirs = make_layout(layout) if isinstance(layout, str) else layout
    ours = model.layout
    if theirs.name != ours.name:
        raise UserError(f"{what}: its skeletons are {theirs.name} ({theirs.num_joints} joints), but the model of "
                        f"{model.ckpt_path} was trained on {ours.name} ({ours.num_joints} joints); use a checkpoint "
                        f"trained on {theirs.name} data")


def read_inputs(text: str, model: LoadedModel, pose: PoseSettings | None = None, fps: float | None = None,
                store_dir: str | Path | None = None) -> list[SkeletonInput]:
    """What ``input=`` names, as sequences the model can read: ``store:`` samples come from the model's own
    prepared data (``store_dir`` where they are now), pose input is normalised as its data set was prepared."""
    inputs = read_skeletons(text, store_dir or model.card.store_dir, model.num_person, fps or NTU_FPS, pose,
                            model.card.data.get("prepare"))
    for item in inputs:
        require_layout(item.layout, model, item.source)
        if item.label is not None and item.label not in model.class_names:
            item.label += " (not among the model's classes)"
    return inputs
