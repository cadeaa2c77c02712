"""Preparers for pose data that does not come from a Kinect: OpenPose output, Kinetics-skeleton,
pyskl pickles, MADS and UEA NATOPS. Each reads its source, writes a prepared store
(:mod:`asgcn_lightning.data.store`) and records every unusable source file as skipped, with the
reason, instead of stopping: one corrupt frame must not cost a night's preparation.

Split convention: where a source defines its own train/test partition (pyskl splits, the NATOPS
files, the Kinetics-skeleton train/val folders) training samples get ``setup = 1`` and test
samples ``setup = 2``, so the ``predefined`` split (training ``setup`` values ``[1]``) reproduces it.

2D coordinates are stored with the detector's confidence as the third channel and centred to
about ``[-0.5, 0.5]``; a missing joint is all zeros (:mod:`asgcn_lightning.data.tracking`).
"""

from __future__ import annotations

import csv
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track

from asgcn_lightning.data.formats.kinetics_json import (
    KINETICS_JOINTS,
    read_kinetics_clip,
    read_kinetics_labels,
)
from asgcn_lightning.data.formats.openpose_json import (
    JOINTS_BY_LAYOUT,
    group_frame_files,
    layout_of_frame,
    read_openpose_frame,
)
from asgcn_lightning.data.formats.pyskl_pickle import COCO17_SPEC, load_pyskl_pickle
from asgcn_lightning.data.formats.uea_ts import read_ts
from asgcn_lightning.data.store import SampleRecord, StoreWriter
from asgcn_lightning.data.tracking import (
    normalise_by_extent,
    normalise_by_image_size,
    select_main_people,
    track_people,
)
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.skeleton.layouts import MADS15, MADS19, NATOPS8, Layout, make_layout

TRAIN_SETUP, TEST_SETUP = 1, 2

# NATOPS channel order from the archive's header: 8 sensors x (x, y, z). There is no torso sensor,
# so the two elbows are linked directly as the "torso" edge to keep the graph connected.
NATOPS_SPEC: dict[str, Any] = NATOPS8.to_spec()
NATOPS_FILES = {"NATOPS_TRAIN.ts": TRAIN_SETUP, "NATOPS_TEST.ts": TEST_SETUP}
_NATOPS_CHANNEL = re.compile(r"^(\d+)\.\s*(.+?),\s*([XYZ]) coordinate", re.IGNORECASE)

MADS_LEVELS = ("category", "action")
MADS_SOURCES = ("openpose", "gt3d", "video")
_MADS_CAMERA = re.compile(r"^(?:cam|c)(\d+)$", re.IGNORECASE)
_MADS_PERFORMER = re.compile(r"^P(\d+)(?:_|$)", re.IGNORECASE)
MADS_LAYOUTS = ("tree", "release")
# data folder of the official release → the archive it comes in (MADS_multiview.zip, MADS_depth.zip)
MADS_RELEASE_FOLDERS = {"multi_view_data": "MADS_multiview", "depth_data": "MADS_depth"}
MADS_GT_VARIABLE = "GTpose2"
MADS_GT_LAYOUTS = {layout.num_joints: layout for layout in (MADS15, MADS19)}
_MADS_RELEASE_VIDEO = re.compile(r"^(?P<sequence>.+)_C(?P<camera>\d+)$", re.IGNORECASE)
_MADS_RELEASE_PART = re.compile(r"^(?P<sequence>.+)_(?:C\d+|Left|Right|GT)$", re.IGNORECASE)


def _progress(items: Sequence[Any], description: str) -> Iterable[Any]:
    return track(items, description=description, console=Console(stderr=True), transient=False)


def window_starts(length: int, window: int | None, stride: int | None) -> list[int]:
    """First frames of the windows cut from a sequence of ``length`` frames.

    ``window=None`` (or a sequence no longer than the window) gives the whole sequence as one
    sample. Otherwise windows start every ``stride`` frames (default: ``window``, no overlap), plus
    one window flush with the end when the stride does not land there, so no tail is lost.
    """
    if window is None or length <= window:
        return [0]
    if window < 1 or (stride is not None and stride < 1):
        raise UserError(f"window ({window}) and stride ({stride}) must be at least 1")
    stride = stride or window
    count = 1 + math.ceil((length - window) / stride)
    return [min(i * stride, length - window) for i in range(count)]


def _bodies(sample: np.ndarray, has_confidence: bool = True) -> int:
    present = sample[..., -1] > 0 if has_confidence else (sample != 0).any(axis=-1)
    return int(present.any(axis=(0, 2)).sum())


# -- OpenPose folders -------------------------------------------------------------------------------
@dataclass
class _Video:
    """One OpenPose-processed video: its frame files and the identity its samples get."""

    files: list[Path]
    record: SampleRecord


def _grouped_videos(folder: Path, prefix: str) -> tuple[list[tuple[str, str, list[Path]]], list[Path]]:
    """``(sample name, video name, frame files)`` for every video below ``folder``, and stray files."""
    grouped: dict[Path, list[Path]] = {}
    for path in sorted(folder.rglob("*.json")):
        grouped.setdefault(path.parent, []).append(path)
    videos: list[tuple[str, str, list[Path]]] = []
    stray: list[Path] = []
    for parent, paths in grouped.items():
        by_video, unmatched = group_frame_files(paths)
        stray += unmatched
        relative = parent.relative_to(folder).as_posix()
        for video, files in by_video.items():
            parts = [p for p in (prefix, "" if relative == "." else relative, video) if p]
            videos.append(("/".join(parts), video, files))
    return videos, stray


def _detect_layout(videos: Sequence[_Video]) -> str:
    """The body model of the first readable frame that has people in it."""
    for video in videos:
        for path in video.files:
            try:
                layout = layout_of_frame(read_openpose_frame(path))
            except DataFormatError:
                continue
            if layout is not None:
                return layout
    raise UserError("no person detected in any OpenPose file; nothing to prepare")


def _read_video(writer: StoreWriter, video: _Video) -> list[np.ndarray]:
    """Per-frame detections; a bad frame file is recorded as skipped and counts as an empty frame."""
    frames = []
    for path in video.files:
        try:
            people = read_openpose_frame(path)
            if len(people) and people.shape[1] != writer.meta.num_joints:
                raise DataFormatError(path, f"{people.shape[1]} joints per person, the data set uses "
                                            f"{writer.meta.num_joints} ({writer.meta.layout})")
        except DataFormatError as error:
            writer.skip(path, f"{error.problem}; frame left empty")
            people = np.zeros((0, writer.meta.num_joints, 3), np.float32)
        frames.append(people)
    return frames


def _write_windows(
    writer: StoreWriter,
    record: SampleRecord,
    tracks: np.ndarray,
    source: str,
    *,
    window: int | None,
    stride: int | None,
    image_size: tuple[float, float] | None,
) -> None:
    """Cut windows from tracked people ``(T, K, V, 3)``; keep the main ones, normalise and store."""
    if tracks.shape[1] == 0:
        writer.skip(source, "nobody detected in any frame")
        return
    starts = window_starts(len(tracks), window, stride)
    for start in starts:
        end = len(tracks) if window is None else start + window
        sample = select_main_people(tracks[start:end], writer.meta.num_person)
        bodies = _bodies(sample)
        if bodies == 0:
            writer.skip(f"{source}[{start}:{end}]", "nobody detected in this window")
            continue
        sample = normalise_by_extent(sample) if image_size is None else normalise_by_image_size(sample, image_size)
        name = record.name if len(starts) == 1 else f"{record.name}@{start:06d}"
        writer.add(SampleRecord(name=name, label=record.label, subject=record.subject, camera=record.camera,
                                setup=record.setup, replication=record.replication, bodies=bodies), sample)


def _write_openpose_videos(
    writer: StoreWriter,
    videos: Sequence[_Video],
    *,
    window: int | None,
    stride: int | None,
    image_size: tuple[float, float] | None,
) -> None:
    for video in _progress(videos, f"{writer.meta.dataset}: tracking people"):
        frames = _read_video(writer, video)
        _write_windows(writer, video.record, track_people(frames), video.record.name, window=window,
                       stride=stride, image_size=image_size)


def _read_label_table(path: Path) -> dict[str, str]:
    """``video,label`` rows (an optional header row is recognised by its ``label`` column)."""
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataFormatError(path, f"cannot read the labels CSV ({error})") from None
    if rows and rows[0][-1].strip().lower() == "label":
        rows = rows[1:]
    table: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataFormatError(path, f"row {number}: expected 'video,label', got {','.join(row)[:60]!r}")
        table[row[0].strip()] = row[1].strip()
    if not table:
        raise DataFormatError(path, "no 'video,label' rows")
    return table


def _class_names_for(labels: Iterable[str], class_names: Sequence[str] | None) -> list[str]:
    """Given names, else 0-based indices when every label is an integer, else sorted names."""
    if class_names:
        return [str(name) for name in class_names]
    values = sorted(set(labels))
    if all(v.isdigit() for v in values):
        return [str(i) for i in range(max(int(v) for v in values) + 1)]
    return values


def prepare_openpose_folder(
    store_dir: str | Path,
    *,
    root: str | Path | None,
    labels: str | Path | None = None,
    image_size: Sequence[float] | None = None,
    num_person: int = 2,
    window: int | None = None,
    stride: int | None = None,
    class_names: Sequence[str] | None = None,
    layout: str | None = None,
    dataset: str = "openpose_folder",
) -> Path:
    """Any folder of OpenPose per-frame JSON → a store of (x, y, confidence) samples.

    Two layouts are read: ``root/<class>/**/<video>_<frame:012d>_keypoints.json`` (class names are
    the sub-folders, sorted) or, with ``labels``, files anywhere below ``root`` and a CSV of
    ``video,label`` rows (integer labels are 0-based class indices, anything else a class name).
    ``image_size`` ``(width, height)`` centres pixels by the frame; without it each sample is
    centred on its own people. ``window``/``stride`` cut long recordings into overlapping samples.
    ``layout`` (``openpose25`` or ``coco18``) is detected from the keypoint count when not given.
    """
    if root is None:
        raise UserError("prepare_openpose_folder needs the folder of OpenPose output (dataset.root=...)")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder of OpenPose output")
    if layout is not None and layout not in JOINTS_BY_LAYOUT:
        raise UserError(f"layout {layout!r}: OpenPose output is one of {sorted(JOINTS_BY_LAYOUT)}")
    stray: list[Path] = []
    unlabelled: list[tuple[str, str]] = []
    if labels is not None:
        label_path = Path(labels) if Path(labels).exists() or Path(labels).is_absolute() else root / labels
        table = _read_label_table(label_path)
        names = _class_names_for(table.values(), class_names)
        found, stray = _grouped_videos(root, "")
        labelled = [(name, video, files) for name, video, files in found if video in table]
        unlabelled = [(name, "no row in the labels CSV") for name, video, _ in found if video not in table]
        missing = sorted(set(table) - {video for _, video, _ in found})
        unlabelled += [(f"{label_path}:{video}", "listed in the labels CSV but no JSON files found")
                       for video in missing]
        entries = [(name, files, table[video]) for name, video, files in labelled]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise UserError(f"{root}: no class sub-folders; put each class in its own folder or give "
                            "labels=<CSV of video,label>")
        names = _class_names_for([p.name for p in folders], class_names)
        entries = []
        for folder in folders:
            found, more_stray = _grouped_videos(folder, folder.name)
            stray += more_stray
            entries += [(name, files, folder.name) for name, _, files in found]
    videos: list[_Video] = []
    for name, files, label in entries:
        index = names.index(label) if label in names else int(label) if label.isdigit() else -1
        if not 0 <= index < len(names):
            unlabelled.append((name, f"label {label!r} is not one of the classes {names}"))
            continue
        videos.append(_Video(files, SampleRecord(name=name, label=index)))
    if not videos:
        raise UserError(f"{root}: no labelled OpenPose videos found (<video>_<frame:012d>_keypoints.json)")
    layout = layout or _detect_layout(videos)
    with StoreWriter(store_dir, dataset=dataset, layout=layout, num_person=num_person,
                     num_joints=JOINTS_BY_LAYOUT[layout], channels=3, class_names=names,
                     source=str(root)) as writer:
        for path in stray:
            writer.skip(path, "name does not follow <video>_<frame:012d>_keypoints.json")
        for name, reason in unlabelled:
            writer.skip(name, reason)
        _write_openpose_videos(writer, videos, window=window, stride=stride,
                               image_size=None if image_size is None else (image_size[0], image_size[1]))
        return writer.commit()


# -- Kinetics-skeleton ------------------------------------------------------------------------------
def prepare_kinetics_skeleton(
    store_dir: str | Path,
    *,
    root: str | Path | None,
    label_file: str | Path | None = None,
    num_person: int = 2,
    num_classes: int | None = None,
) -> Path:
    """Kinetics-skeleton clips → a COCO-18 store of (x, y, score), centred on the frame.

    ``root`` is either the release folder holding ``kinetics_train/`` and ``kinetics_val/`` (with
    their ``kinetics_{train,val}_label.json``), stored as setup 1 and 2, or a single folder of clip
    files (setup -1), labelled by ``label_file`` when given, else by each clip's own label. Clips
    whose label file entry says ``has_skeleton: false`` are skipped. People are tracked across
    frames and the ``num_person`` main ones kept. Labels keep the release's ``label_index``, so
    ``num_classes`` (400 for Kinetics-400) defaults to the highest index seen plus one.
    """
    if root is None:
        raise UserError("prepare_kinetics_skeleton needs the folder of clips (dataset.root=...)")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder of Kinetics-skeleton clips")
    parts: list[tuple[Path, Path | None, int]] = []
    if (root / "kinetics_train").is_dir() and (root / "kinetics_val").is_dir():
        for split, setup in (("train", TRAIN_SETUP), ("val", TEST_SETUP)):
            labels = root / f"kinetics_{split}_label.json"
            parts.append((root / f"kinetics_{split}", labels if labels.is_file() else None, setup))
    else:
        parts.append((root, Path(label_file) if label_file else None, -1))
    seen_names: dict[int, str] = {}
    with StoreWriter(store_dir, dataset="kinetics_skeleton", layout="coco18", num_person=num_person,
                     num_joints=KINETICS_JOINTS, channels=3, class_names=[], source=str(root)) as writer:
        for folder, labels_path, setup in parts:
            table = read_kinetics_labels(labels_path) if labels_path else {}
            clips = sorted(folder.glob("*.json"))
            for path in _progress(clips, f"kinetics_skeleton: {folder.name}"):
                try:
                    clip = read_kinetics_clip(path)
                except DataFormatError as error:
                    writer.skip(path, error.problem)
                    continue
                label, index, has_skeleton = table.get(clip.name, (clip.label, clip.label_index, True))
                if not has_skeleton:
                    writer.skip(path, "the label file marks this clip as having no skeleton")
                    continue
                if index is None or index < 0:
                    writer.skip(path, "no label_index in the clip or the label file")
                    continue
                seen_names.setdefault(index, label or f"class_{index}")
                record = SampleRecord(name=clip.name, label=index, setup=setup)
                _write_windows(writer, record, track_people(clip.frames), str(path), window=None, stride=None,
                               image_size=(1.0, 1.0))
        count = max(num_classes or 0, max(seen_names, default=-1) + 1)
        # labels are known only once every clip has been read, and clips do not all fit in memory
        writer.meta.class_names = [seen_names.get(i, f"class_{i}") for i in range(count)]
        return writer.commit()


# -- pyskl ------------------------------------------------------------------------------------------
def _pyskl_layout(layout: dict[str, Any] | None, num_joints: int, dimensions: int) -> dict[str, Any]:
    if layout is None:
        body25 = "ntu25" if dimensions == 3 else "openpose25"
        defaults = {17: COCO17_SPEC, 18: {"name": "coco18"}, 25: {"name": body25}}
        if num_joints not in defaults:
            raise UserError(f"pyskl data with {num_joints} joints: give its layout "
                            "(name, joints, edges, centre)")
        layout = defaults[num_joints]
    built = make_layout(**layout)
    if built.num_joints != num_joints:
        raise UserError(f"layout {built.name!r} has {built.num_joints} joints, the pyskl data {num_joints}")
    return dict(layout)


def prepare_pyskl(
    store_dir: str | Path,
    *,
    path: str | Path | None,
    split_train: str,
    split_test: str,
    num_person: int = 2,
    layout: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    normalise: bool = True,
) -> Path:
    """A pyskl / mmaction2 annotation pickle → a store holding both splits.

    Training samples (``split[split_train]``) get ``setup = 1`` and test samples
    (``split[split_test]``) ``setup = 2``: the ``predefined`` split, which trains on setup 1,
    then reproduces the pickle's own partition. Samples in neither split are left out.

    2D keypoints get the ``keypoint_score`` as third channel and, with ``normalise`` and an
    ``img_shape``, are centred by the image size; 3D keypoints are stored as they are. The layout
    defaults by joint count (17 COCO-17, 18 COCO-18, 25 NTU for 3D). The pickle is trusted input
    (unpickling can run code): it is loaded only from the ``path`` the user gives.
    """
    if path is None:
        raise UserError("prepare_pyskl needs the annotation pickle (dataset.path=...)")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such pyskl annotation file")
    splits, annotations = load_pyskl_pickle(path)
    for wanted in (split_train, split_test):
        if wanted not in splits:
            raise UserError(f"{path}: no split {wanted!r}; the file has {sorted(splits)}")
    if not annotations:
        raise DataFormatError(path, "no annotations")
    setups = {name: TEST_SETUP for name in splits[split_test]}
    setups.update({name: TRAIN_SETUP for name in splits[split_train]})
    first = annotations[0]
    num_joints, dimensions = first.keypoint.shape[2], first.keypoint.shape[3]
    has_score = dimensions == 2 and first.score is not None
    spec = _pyskl_layout(layout, num_joints, dimensions)
    count = max(a.label for a in annotations) + 1
    names = list(class_names) if class_names else [f"class_{i}" for i in range(count)]
    with StoreWriter(store_dir, dataset="pyskl", layout=spec["name"], num_person=num_person,
                     num_joints=num_joints, channels=dimensions + has_score, class_names=names,
                     source=str(path), layout_spec=spec if "joints" in spec else None) as writer:
        for annotation in _progress(annotations, "pyskl: annotations"):
            source = f"{path}:{annotation.frame_dir}"
            if annotation.frame_dir not in setups:
                continue
            shape = annotation.keypoint.shape
            if shape[2:] != (num_joints, dimensions) or has_score != (annotation.score is not None):
                scores = "with" if annotation.score is not None else "without"
                writer.skip(source, f"keypoint shape {shape} {scores} scores differs from the first "
                                    "annotation's")
                continue
            if not 0 <= annotation.label < len(names):
                writer.skip(source, f"label {annotation.label} is outside the {len(names)} classes")
                continue
            sample = select_main_people(annotation.frames(), num_person, has_confidence=has_score)
            bodies = _bodies(sample, has_score)
            if bodies == 0:
                writer.skip(source, "no keypoints")
                continue
            if dimensions == 2 and normalise and annotation.img_shape is not None:
                height, width = annotation.img_shape
                sample = normalise_by_image_size(sample, (width, height), has_confidence=has_score)
            writer.add(SampleRecord(name=annotation.frame_dir, label=annotation.label,
                                    setup=setups[annotation.frame_dir], bodies=bodies), sample)
        return writer.commit()


# -- MADS -------------------------------------------------------------------------------------------
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
        return _prepare_mads_release(store_dir, root, level=level, window=window, stride=stride, source=source,
                                     num_person=num_person, image_size=image_size, gt_layout=gt_layout)
    if source == "video":  # imported here: video_poses builds on this module
        from asgcn_lightning.data.video_poses import openpose_tree_from_videos

        root = openpose_tree_from_videos(root, store_dir, size=image_size)
    names, actions = _mads_actions(root, level)
    if source == "gt3d":
        return _prepare_mads_gt3d(store_dir, root, names, actions, level=level, window=window, stride=stride,
                                  gt_layout=gt_layout)
    videos: list[_Video] = []
    stray: list[tuple[Path, str]] = []
    for category, action in actions:
        label = names.index(category if level == "category" else f"{category}/{action.name}")
        for camera_dir in sorted(p for p in action.iterdir() if p.is_dir() and p.name != "gt3d"):
            camera = _MADS_CAMERA.match(camera_dir.name)
            if camera is None:
                stray.append((camera_dir, "camera folder is not named cam<k>"))
                continue
            grouped, unmatched = group_frame_files(camera_dir.glob("*.json"))
            stray += [(p, "name does not follow <video>_<frame:012d>_keypoints.json") for p in unmatched]
            for video, files in grouped.items():
                performer = _MADS_PERFORMER.match(video)
                name = f"{category}/{action.name}/{camera_dir.name}/{video}"
                if performer is None:
                    stray.append((camera_dir / video, "video name does not start with P<performer>"))
                    continue
                record = SampleRecord(name=name, label=label, subject=int(performer[1]),
                                      camera=int(camera[1]))
                videos.append(_Video(files, record))
    if not videos:
        raise UserError(f"{root}: no OpenPose output in <Category>/<Action>/cam<k>/P<p>_*_keypoints.json")
    return _write_mads_openpose(store_dir, root, names, videos, stray, num_person=num_person, window=window,
                                stride=stride, image_size=image_size)


def _write_mads_openpose(
    store_dir: str | Path,
    root: Path,
    names: list[str],
    videos: list[_Video],
    stray: list[tuple[Path, str]],
    *,
    num_person: int,
    window: int | None,
    stride: int | None,
    image_size: Sequence[float] | None,
) -> Path:
    """The store of MADS OpenPose videos, whichever folder layout they were found in."""
    layout = _detect_layout(videos)
    with StoreWriter(store_dir, dataset="mads", layout=layout, num_person=num_person,
                     num_joints=JOINTS_BY_LAYOUT[layout], channels=3, class_names=names,
                     source=str(root)) as writer:
        for path, reason in stray:
            writer.skip(path, reason)
        _write_openpose_videos(writer, videos, window=window, stride=stride,
                               image_size=None if image_size is None else (image_size[0], image_size[1]))
        return writer.commit()


def _write_gt_windows(
    writer: StoreWriter, record: SampleRecord, sequence: np.ndarray, source: Path, *,
    window: int | None, stride: int | None,
) -> None:
    """Cut one mocap sequence ``(T, 1, V, 3)`` into windows; windows without any captured joint are skipped."""
    for start in window_starts(len(sequence), window, stride):
        sample = sequence[start:start + (window or len(sequence))]
        if not sample.any():
            writer.skip(f"{source}[{start}:{start + len(sample)}]", "no captured joints in this window")
            continue
        name = record.name if window is None or len(sequence) <= window else f"{record.name}@{start:06d}"
        writer.add(replace(record, name=name), sample)


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
    with StoreWriter(store_dir, dataset="mads", layout=layout.name, num_person=1,
                     num_joints=layout.num_joints, channels=3, class_names=names, source=str(root),
                     layout_spec=dict(gt_layout) if gt_layout.get("joints") else None) as writer:
        for category, action, path in _progress(files, "mads: ground truth"):
            performer = _MADS_PERFORMER.match(path.stem)
            if performer is None:
                writer.skip(path, "file name does not start with P<performer>")
                continue
            try:
                joints = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as error:
                writer.skip(path, f"cannot read it as .npy ({error})")
                continue
            if joints.ndim != 3 or joints.shape[1:] != (layout.num_joints, 3) or len(joints) == 0:
                writer.skip(path, f"shape {joints.shape}, expected (T, {layout.num_joints}, 3)")
                continue
            sequence = np.nan_to_num(joints.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)[:, None]
            label = names.index(category if level == "category" else f"{category}/{action.name}")
            record = SampleRecord(name=f"{category}/{action.name}/gt3d/{path.stem}", label=label,
                                  subject=int(performer[1]))
            _write_gt_windows(writer, record, sequence, path, window=window, stride=stride)
        return writer.commit()


# -- MADS, as released ------------------------------------------------------------------------------
def _mads_release_folder(root: Path, source: str) -> Path:
    """The data folder of the release that ``source`` reads, below ``root`` or ``root`` itself.

    OpenPose output and videos come from ``multi_view_data``; the ground truth from whichever of
    ``multi_view_data`` and ``depth_data`` (in this order) holds ``*_GT.mat`` files.
    """
    wanted = ("multi_view_data",) if source in ("openpose", "video") else tuple(MADS_RELEASE_FOLDERS)
    looked: list[Path] = []
    for name in wanted:
        archive = MADS_RELEASE_FOLDERS[name]
        candidates = [root] if root.name == name else [root / archive / "MADS" / name, root / archive / name,
                                                       root / "MADS" / name, root / name]
        looked += candidates
        for folder in candidates:
            if folder.is_dir() and (source != "gt3d" or any(_is_mads_gt(p) for p in folder.rglob("*.mat"))):
                return folder
    what = "the multi-view videos or their OpenPose output" if source != "gt3d" else "*_GT.mat ground truth"
    raise UserError(f"{root}: no MADS release folder with {what} (source={source}); looked for "
                    f"{', '.join(str(p) for p in looked)}. Point dataset.root at the unzipped release "
                    "(holding MADS_multiview/ or MADS_depth/), or use prepare.layout=tree")


def _is_mads_gt(path: Path) -> bool:
    return path.suffix.lower() == ".mat" and path.stem.lower().endswith("_gt")


def _mads_sequence(category: str, stem: str) -> str | None:
    """The routine a release file belongs to (``<Category>_<seq>_<part>`` → ``<seq>``); None if unnamed."""
    match = _MADS_RELEASE_PART.match(stem)
    if match is None:
        return None
    sequence, prefix = match["sequence"], f"{category}_"
    if sequence.lower().startswith(prefix.lower()) and len(sequence) > len(prefix):
        return sequence[len(prefix):]
    return sequence  # a file not named after its folder keeps its whole name


def _mads_release_classes(categories: Sequence[Path], level: str, seen: Iterable[tuple[str, str]]) -> list[str]:
    """Category names, or every ``<Category>/<seq>`` that a video, JSON folder or GT file names.

    Sequences come from all the files of the release, not only those being prepared, so stores of
    the same release made from different sources share their action classes.
    """
    from asgcn_lightning.data.video import VIDEO_SUFFIXES  # imported here: video builds on this module

    if level == "category":
        return [c.name for c in categories]
    pairs = set(seen)
    for category in categories:
        for entry in (p for p in category.iterdir() if not p.name.startswith(".")):
            is_part = entry.is_dir() or entry.suffix.lower() in VIDEO_SUFFIXES or _is_mads_gt(entry)
            sequence = _mads_sequence(category.name, entry.name if entry.is_dir() else entry.stem)
            if is_part and sequence is not None:
                pairs.add((category.name, sequence))
    return [f"{c}/{s}" for c, s in sorted(pairs)]


def _mads_release_categories(folder: Path) -> list[Path]:
    categories = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not categories:
        raise UserError(f"{folder}: no <Category>/ folders (Tai-chi, Karate, Jazz, Hip-hop, Sports)")
    return categories


def _prepare_mads_release(
    store_dir: str | Path,
    root: Path,
    *,
    level: str,
    window: int | None,
    stride: int | None,
    source: str,
    num_person: int,
    image_size: Sequence[float] | None,
    gt_layout: dict[str, Any] | None,
) -> Path:
    folder = _mads_release_folder(root, source)
    if source == "gt3d":
        return _prepare_mads_release_gt3d(store_dir, folder, level=level, window=window, stride=stride,
                                          gt_layout=gt_layout)
    if source == "video":  # the JSON lands flat in a mirror of the category folders, which reads the same
        from asgcn_lightning.data.video_poses import openpose_tree_from_videos

        folder = openpose_tree_from_videos(folder, store_dir, size=image_size)
    categories = _mads_release_categories(folder)
    found: list[tuple[SampleRecord, str, list[Path]]] = []  # (identity, sequence, frame files)
    stray: list[tuple[Path, str]] = []
    taken: set[str] = set()
    for subject, category in enumerate(categories, start=1):  # one performer per category
        grouped, unmatched = _grouped_videos(category, "")
        stray += [(p, "name does not follow <video>_<frame:012d>_keypoints.json") for p in unmatched]
        for relative, video, files in grouped:
            camera, sequence = _MADS_RELEASE_VIDEO.match(video), _mads_sequence(category.name, video)
            if camera is None or sequence is None:
                stray.append((category / relative, "video name does not end in _C<camera>"))
            elif video in taken:
                stray.append((category / relative, "a video of this name was already read from another folder"))
            else:
                taken.add(video)
                record = SampleRecord(name=f"{category.name}/{video}", label=-1, subject=subject,
                                      camera=int(camera["camera"]) + 1)  # stored 1-based: C0 → 1
                found.append((record, sequence, files))
    names = _mads_release_classes(categories, level,
                                  [(r.name.split("/")[0], sequence) for r, sequence, _ in found])
    videos = []
    for record, sequence, files in found:
        category = record.name.split("/")[0]
        record.label = names.index(category if level == "category" else f"{category}/{sequence}")
        videos.append(_Video(files, record))
    if not videos:
        raise UserError(f"{folder}: no OpenPose output in <Category>/<Category>_<seq>_C<k>/"
                        "<Category>_<seq>_C<k>_<frame:012d>_keypoints.json; run OpenPose on the videos "
                        "(openpose --video <X>.avi --write_json <X>/) or use prepare.source=video")
    return _write_mads_openpose(store_dir, folder, names, videos, stray, num_person=num_person, window=window,
                                stride=stride, image_size=image_size)


def _read_mads_gt(path: Path) -> np.ndarray:
    """``GTpose2`` of a MADS ``*_GT.mat``: one joints x 3 cell per frame (mm) → ``(T, V, 3)`` metres, lost → 0.

    An empty cell is a frame whose capture was lost entirely, kept as an all-missing frame.
    """
    from scipy.io import loadmat  # imported here: only the MADS ground truth needs scipy
    from scipy.io.matlab import MatReadError

    try:
        content = loadmat(path, variable_names=[MADS_GT_VARIABLE])
    except NotImplementedError:  # scipy's answer to the HDF5-based format
        raise DataFormatError(path, "a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it in MATLAB "
                                    "with save(..., '-v7')") from None
    except (MatReadError, OSError, ValueError, TypeError, EOFError, zlib.error) as error:
        raise DataFormatError(path, f"not a readable MATLAB file ({error})") from None
    if MADS_GT_VARIABLE not in content:
        raise DataFormatError(path, f"no {MADS_GT_VARIABLE} variable (the MADS ground truth)")
    cells = content[MADS_GT_VARIABLE]
    if cells.dtype != object:
        raise DataFormatError(path, f"{MADS_GT_VARIABLE} is a {cells.shape} {cells.dtype} array, expected a cell "
                                    "array of one joints x 3 array per frame")
    frames: list[np.ndarray | None] = []
    shape: tuple[int, ...] | None = None
    for number, cell in enumerate(cells.flat, start=1):
        try:
            joints = np.asarray(cell, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataFormatError(path, f"frame {number} of {MADS_GT_VARIABLE} is not numeric") from None
        if joints.size == 0:
            frames.append(None)
            continue
        if joints.ndim != 2 or joints.shape[1] != 3:
            raise DataFormatError(path, f"frame {number} of {MADS_GT_VARIABLE} is a {joints.shape} array, "
                                        "expected joints x 3")
        shape = shape or joints.shape
        if joints.shape != shape:
            raise DataFormatError(path, f"frame {number} of {MADS_GT_VARIABLE} has {joints.shape[0]} joints, "
                                        f"the frames before it {shape[0]}")
        frames.append(joints)
    if shape is None:
        raise DataFormatError(path, f"{MADS_GT_VARIABLE} holds no captured frame")
    empty = np.full(shape, np.nan)
    sequence = np.stack([empty if f is None else f for f in frames]).astype(np.float32) / 1000.0
    return np.nan_to_num(sequence, nan=0.0, posinf=0.0, neginf=0.0)


def _layout_spec(layout: Layout) -> dict[str, Any]:
    """A layout as the store's ``layout_spec``, so the store describes its own skeleton."""
    return {"name": layout.name, "joints": list(layout.joints), "edges": [list(e) for e in layout.edges],
            "centre": layout.centre, "spine": None if layout.spine is None else list(layout.spine),
            "shoulders": None if layout.shoulders is None else list(layout.shoulders)}


def _prepare_mads_release_gt3d(
    store_dir: str | Path,
    folder: Path,
    *,
    level: str,
    window: int | None,
    stride: int | None,
    gt_layout: dict[str, Any] | None,
) -> Path:
    categories = _mads_release_categories(folder)
    read: list[tuple[int, str, Path, np.ndarray | str]] = []
    for subject, category in enumerate(categories, start=1):
        for path in sorted(p for p in category.rglob("*.mat") if _is_mads_gt(p)):
            try:
                read.append((subject, category.name, path, _read_mads_gt(path)))
            except DataFormatError as error:
                read.append((subject, category.name, path, error.problem))
    if gt_layout is not None:
        layout, spec = make_layout(**gt_layout), dict(gt_layout) if gt_layout.get("joints") else None
    else:
        counts = [item.shape[1] for *_, item in read if isinstance(item, np.ndarray)]
        known = [MADS_GT_LAYOUTS[n] for n in counts if n in MADS_GT_LAYOUTS]
        if not known:
            problems = [f"{path}: {item if isinstance(item, str) else f'{item.shape[1]} joints'}"
                        for *_, path, item in read[:3]] or ["no such files"]
            raise UserError(f"{folder}: no readable MADS ground truth ({MADS_GT_VARIABLE} of 15 or 19 joints in "
                            "<Category>/<Category>_<seq>_GT.mat; give gt_layout for another skeleton): "
                            + "; ".join(problems))
        layout = known[0]
        spec = _layout_spec(layout)
    names = _mads_release_classes(categories, level, [])
    with StoreWriter(store_dir, dataset="mads", layout=layout.name, num_person=1, num_joints=layout.num_joints,
                     channels=3, class_names=names, source=str(folder), layout_spec=spec) as writer:
        for subject, category, path, item in _progress(read, "mads: ground truth"):
            if isinstance(item, str):
                writer.skip(path, item)
                continue
            if item.shape[1] != layout.num_joints:
                writer.skip(path, f"{item.shape[1]} joints per frame; the store's layout {layout.name} has "
                                  f"{layout.num_joints} (prepare the other release folder on its own)")
                continue
            sequence = _mads_sequence(category, path.stem) or path.stem
            label = names.index(category if level == "category" else f"{category}/{sequence}")
            record = SampleRecord(name=f"{category}/{path.stem}", label=label, subject=subject)
            _write_gt_windows(writer, record, item[:, None], path, window=window, stride=stride)
        return writer.commit()


# -- UEA NATOPS -------------------------------------------------------------------------------------
def _check_natops_header(path: Path, comments: Sequence[str]) -> None:
    """When the header lists the channels, they must be in the order :data:`NATOPS_SPEC` assumes."""
    channels = [m for m in map(_NATOPS_CHANNEL.match, comments) if m]
    if not channels:
        return
    joints = []
    for match in channels[::3]:
        words = match[2].lower().split()
        joints.append("_".join([words[-1], *words[:-1]]))
    if joints != NATOPS_SPEC["joints"]:
        raise DataFormatError(path, f"header lists the sensors as {joints}, expected {NATOPS_SPEC['joints']}")


def prepare_natops(store_dir: str | Path, *, root: str | Path | None) -> Path:
    """UEA NATOPS (``NATOPS_TRAIN.ts`` and ``NATOPS_TEST.ts`` in ``root``) → one 8-joint xyz store.

    The 24 channels are 8 sensors x (x, y, z) in the header's order; the layout travels with the
    store as ``layout_spec`` (:data:`NATOPS_SPEC`; the elbows are joined directly because no torso
    sensor exists). Training samples get ``setup = 1`` and test samples ``setup = 2``, so the
    ``predefined`` split reproduces the archive's 180/180 partition. Class names are the
    ``@classLabel`` values; labels are their 0-based positions.
    """
    if root is None:
        raise UserError("prepare_natops needs the folder holding NATOPS_TRAIN.ts and NATOPS_TEST.ts")
    root = Path(root)
    missing = [name for name in NATOPS_FILES if not (root / name).is_file()]
    if missing:
        raise UserError(f"{root}: missing {', '.join(missing)} (the UEA archive's NATOPS files)")
    parsed = {}
    problems: list[tuple[Path, str]] = []
    for name in NATOPS_FILES:
        try:
            data = read_ts(root / name)
            _check_natops_header(data.path, data.comments)
            if data.class_labels is None or data.labels is None:
                raise DataFormatError(data.path, "no @classLabel; NATOPS is a classification set")
            if data.series[0].shape[0] != 3 * len(NATOPS_SPEC["joints"]):
                raise DataFormatError(data.path, f"{data.series[0].shape[0]} channels, expected 24")
            parsed[name] = data
        except DataFormatError as error:
            problems.append((root / name, error.problem))
    class_labels = next((d.class_labels for d in parsed.values() if d.class_labels), [])
    num_joints = len(NATOPS_SPEC["joints"])
    with StoreWriter(store_dir, dataset="natops", layout=NATOPS_SPEC["name"], num_person=1,
                     num_joints=num_joints, channels=3, class_names=class_labels, source=str(root),
                     layout_spec=NATOPS_SPEC) as writer:
        for path, problem in problems:
            writer.skip(path, problem)
        for name, data in parsed.items():
            if data.class_labels != class_labels:
                writer.skip(data.path, f"@classLabel {data.class_labels} differs from {class_labels}")
                continue
            split = "train" if NATOPS_FILES[name] == TRAIN_SETUP else "test"
            for i, (series, label) in enumerate(zip(data.series, data.labels or [], strict=True)):
                if not np.isfinite(series).all():
                    writer.skip(f"{data.path}:sample {i + 1}", "missing values")
                    continue
                frames = series.reshape(num_joints, 3, -1).transpose(2, 0, 1)[:, None]
                writer.add(SampleRecord(name=f"{split}_{i:03d}", label=class_labels.index(label),
                                        setup=NATOPS_FILES[name]), frames)
        return writer.commit()
