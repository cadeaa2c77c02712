"""MADS (Martial Arts, Dancing and Sports) → windowed samples, from a hand-made tree or the release.

:func:`prepare_mads` is the data set's preparer; the official archives are read by
:mod:`~asgcn_lightning.data.sources.mads_release`, the hand-made tree of OpenPose output or
motion capture here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asgcn_lightning.data import video_poses
from asgcn_lightning.data.formats.openpose_json import group_frame_files
from asgcn_lightning.data.sources.mads_common import (
    MADS_LAYOUTS,
    MADS_LEVELS,
    MADS_SOURCES,
    mocap_windows,
    write_openpose_store,
)
from asgcn_lightning.data.sources.mads_release import prepare_mads_release
from asgcn_lightning.data.sources.openpose import STRAY_REASON, OpenPoseVideo
from asgcn_lightning.data.sources.writer import (
    Item,
    Skipped,
    StoreSpec,
    read_or_skip,
    refuse_empty_classes,
    write_store,
)
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.progress import track
from asgcn_lightning.skeleton.layouts import Layout, make_layout

_MADS_CAMERA = re.compile(r"^(?:cam|c)(\d+)$", re.IGNORECASE)
_MADS_PERFORMER = re.compile(r"^P(\d+)(?:_|$)", re.IGNORECASE)


def _mads_actions(root: Path, level: str) -> tuple[list[str], list[tuple[str, Path]]]:
    """Class names at ``level`` and ``(category, action folder)`` for every action."""
    categories = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    actions = [(c, a) for c in categories for a in sorted(p for p in c.iterdir() if p.is_dir())]
    if not actions:
        raise UserError(f"{root}: no <Category>/<Action>/ folders; see prepare_mads for the expected layout")
    names = [c.name for c in categories] if level == "category" else [f"{c.name}/{a.name}" for c, a in actions]
    return names, [(c.name, a) for c, a in actions]


def prepare_mads(
    store_dir: str | Path,
    *,
    root: str | Path | None,
    level: str = "category",
    window: int | None = 60,
    stride: int | None = 30,
    source: str = "openpose",
    num_person: int = 1,
    image_size: Sequence[float] | None = None,
    gt_layout: dict[str, Any] | None = None,
    layout: str = "tree",
) -> Path:
    """MADS (Martial Arts, Dancing and Sports) recordings → windowed samples.

    MADS cannot be downloaded automatically. ``layout='release'`` reads the official archives as
    unzipped (``root`` is the folder holding them, or ``multi_view_data``/``depth_data`` itself)::

        MADS_multiview/MADS/multi_view_data/<Category>/<Category>_<seq>_C<k>.avi    (cameras k = 0, 1, 2)
        MADS_multiview/MADS/multi_view_data/<Category>/<Category>_<seq>_GT.mat      (15 joints)
        MADS_depth/MADS/depth_data/<Category>/<Category>_<seq>_{Left,Right}.avi, _GT.mat   (19 joints)

    with ``source='openpose'`` reading what ``openpose --video <X>.avi --write_json <X>/`` writes
    next to each video::

        multi_view_data/<Category>/<Category>_<seq>_C<k>/<Category>_<seq>_C<k>_<frame:012d>_keypoints.json

    ``'video'`` pose-estimating the camera videos with BlazePose first, and ``'gt3d'`` reading the
    ``GTpose2`` motion capture of ``*_GT.mat`` (multi-view if it has any, else depth): millimetres
    → metres, lost joints → 0, layout ``mads15`` or ``mads19`` by joint count unless ``gt_layout``
    says otherwise; an unreadable or v7.3 file is recorded as skipped. Camera ``C<k>`` is stored as
    ``camera = k + 1`` (-1 for the ground truth); the one performer of each category as ``subject``
    = the category's 1-based position. ``level='action'`` labels by ``<Category>/<seq>``, each
    sequence being one recorded routine.

    ``layout='tree'`` reads OpenPose output (or mocap ground truth) arranged by hand as::

        root/<Category>/<Action>/cam<k>/P<p>[_<take>]_<frame:012d>_keypoints.json   (source='openpose')
        root/<Category>/<Action>/gt3d/P<p>[_<take>].npy                            (source='gt3d')

    ``<Category>`` is Tai-chi, Karate, Jazz, Hip-hop or Sports (any folder names work), each with
    its ``<Action>`` folders (6 per category, 30 in all). ``cam<k>`` (or ``C<k>``) is camera k,
    stored as ``camera``; the video name starts with ``P<p>``, the performer, stored as
    ``subject`` — so the xview and xsub splits work. ``gt3d/*.npy`` holds the motion-capture
    joints as float ``(T, V, 3)``, NaN where capture was lost (stored as missing joints); its
    ``gt_layout`` (name, joints, edges, centre) must be given, and its samples have camera -1.
    ``source='video'`` takes the videos themselves in place of the JSON (``cam<k>/P<p>[_<take>].mp4``)
    and pose-estimates them first with the built-in BlazePose backend (the ``[video]`` extra), resized
    to ``image_size`` when given (:func:`asgcn_lightning.data.video_poses.openpose_tree_from_videos`).

    ``level='category'`` labels by category (5 classes, sorted names), ``'action'`` by
    ``Category/Action`` (30). Each recording is cut into ``window``-frame samples every
    ``stride`` frames; OpenPose detections are tracked and the ``num_person`` main people kept.
    """
    if level not in MADS_LEVELS or source not in MADS_SOURCES or layout not in MADS_LAYOUTS:
        raise UserError(f"prepare_mads: level must be one of {MADS_LEVELS}, source one of {MADS_SOURCES} and "
                        f"layout one of {MADS_LAYOUTS}, got {level!r}, {source!r} and {layout!r}")
    if root is None:
        raise UserError("prepare_mads needs the MADS folder (dataset.root=...)")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such MADS folder")
    if layout == "release":
        return prepare_mads_release(store_dir, root, level=level, window=window, stride=stride, source=source,
                                     num_person=num_person, image_size=image_size, gt_layout=gt_layout)
    failed: list[tuple[Path, str]] = []
    if source == "video":
        root, failed = video_poses.openpose_tree_from_videos(root, store_dir, size=image_size)
    names, actions = _mads_actions(root, level)
    if source == "gt3d":
        return _prepare_mads_gt3d(store_dir, root, names, actions, level=level, window=window, stride=stride,
                                  gt_layout=gt_layout)
    videos: list[OpenPoseVideo] = []
    stray = [Skipped(path, problem) for path, problem in failed]
    for category, action in actions:
        label = names.index(category if level == "category" else f"{category}/{action.name}")
        for camera_dir in sorted(p for p in action.iterdir() if p.is_dir() and p.name != "gt3d"):
            camera = _MADS_CAMERA.match(camera_dir.name)
            if camera is None:
                stray.append(Skipped(camera_dir, "camera folder is not named cam<k>", listed=True))
                continue
            grouped, unmatched = group_frame_files(camera_dir.glob("*.json"))
            stray += [Skipped(p, STRAY_REASON, listed=True) for p in unmatched]
            for video, files in grouped.items():
                performer = _MADS_PERFORMER.match(video)
                name = f"{category}/{action.name}/{camera_dir.name}/{video}"
                if performer is None:
                    stray.append(Skipped(camera_dir / video, "video name does not start with P<performer>",
                                         listed=True))
                    continue
                record = SampleRecord(name=name, label=label, subject=int(performer[1]),
                                      camera=int(camera[1]))
                videos.append(OpenPoseVideo(files, record))
    if not videos:
        raise UserError(f"{root}: no OpenPose output in <Category>/<Action>/cam<k>/P<p>_*_keypoints.json")
    refuse_empty_classes(names, [video.record.label for video in videos], root)
    return write_openpose_store(store_dir, root, names, videos, stray, num_person=num_person, window=window,
                                stride=stride, image_size=image_size)


def _prepare_mads_gt3d(
    store_dir: str | Path,
    root: Path,
    names: list[str],
    actions: list[tuple[str, Path]],
    *,
    level: str,
    window: int | None,
    stride: int | None,
    gt_layout: dict[str, Any] | None,
) -> Path:
    if gt_layout is None:
        raise UserError("MADS ground truth needs gt_layout (name, joints, edges, centre) for its "
                        "motion-capture joints")
    layout = make_layout(**gt_layout)
    files = [(category, action, path) for category, action in actions
             for path in sorted((action / "gt3d").glob("*.npy"))]
    if not files:
        raise UserError(f"{root}: no ground truth in <Category>/<Action>/gt3d/P<p>*.npy")
    refuse_empty_classes(names, [names.index(c if level == "category" else f"{c}/{a.name}") for c, a, _ in files], root)
    spec = StoreSpec(dataset="mads", layout=layout, num_person=1, channels=3, source=str(root), class_names=names)
    return write_store(store_dir, spec, _gt3d_items(files, names, layout, level=level, window=window, stride=stride))


def _gt3d_items(files: list[tuple[str, Path, Path]], names: list[str], layout: Layout, *, level: str,
                window: int | None, stride: int | None) -> Iterator[Item]:
    for category, action, path in track(files, "mads: ground truth"):
        performer = _MADS_PERFORMER.match(path.stem)
        if performer is None:
            yield Skipped(path, "file name does not start with P<performer>", listed=True)
            continue
        label = names.index(category if level == "category" else f"{category}/{action.name}")
        joints = read_or_skip(path, lambda path=path: _read_npy(path), label=label)
        if isinstance(joints, Skipped):
            yield joints
            continue
        if joints.ndim != 3 or joints.shape[1:] != (layout.num_joints, 3) or len(joints) == 0:
            yield Skipped(path, f"shape {joints.shape}, expected (T, {layout.num_joints}, 3)", label=label)
            continue
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, which the store writer skips
            sequence = joints.astype(np.float32)[:, None]
        sequence[np.isnan(sequence)] = 0.0  # lost capture: a missing joint
        record = SampleRecord(name=f"{category}/{action.name}/gt3d/{path.stem}", label=label,
                              subject=int(performer[1]))
        yield from mocap_windows(record, sequence, path, window=window, stride=stride)


def _read_npy(path: Path) -> np.ndarray:
    """A numeric ``.npy`` array; pickled objects are refused (loading them could run code)."""
    try:
        joints = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataFormatError(path, f"cannot read it as .npy ({error})") from None
    if not np.issubdtype(joints.dtype, np.number):
        raise DataFormatError(path, f"a {joints.dtype} array, expected numbers")
    return joints
