"""Any folder of OpenPose per-frame JSON → a store of (x, y, confidence) samples.

Also the reading of OpenPose videos that the MADS and video-folder adapters share: frame files →
tracked people → windows (:mod:`~asgcn_lightning.data.sources.people`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from asgcn_lightning.data.formats.openpose_json import (
    OPENPOSE_LAYOUTS,
    group_frame_files,
    layout_of_frame,
    read_openpose_frame,
)
from asgcn_lightning.data.sources.people import people_windows
from asgcn_lightning.data.sources.writer import Item, Skipped, StoreSpec, write_store
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.data.tracking import track_people
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.progress import track
from asgcn_lightning.skeleton.layouts import Layout

STRAY_REASON = "name does not follow <video>_<frame:012d>_keypoints.json"


@dataclass
class OpenPoseVideo:
    """One OpenPose-processed video: its frame files and the identity its samples get."""

    files: list[Path]
    record: SampleRecord


def grouped_videos(folder: Path, prefix: str) -> tuple[list[tuple[str, str, list[Path]]], list[Path]]:
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


def detect_layout(videos: Sequence[OpenPoseVideo]) -> Layout:
    """The body model of the first readable frame that has people in it."""
    for video in videos:
        for path in video.files:
            try:
                layout = layout_of_frame(read_openpose_frame(path))
            except DataFormatError:
                continue
            if layout is not None:
                return OPENPOSE_LAYOUTS[layout]
    raise UserError("no person detected in any OpenPose file; nothing to prepare")


def _video_frames(video: OpenPoseVideo, layout: Layout, skipped: list[Skipped]) -> list[np.ndarray]:
    """Per-frame detections; a bad frame file is noted in ``skipped`` and counts as an empty frame."""
    frames = []
    for path in video.files:
        try:
            people = read_openpose_frame(path)
            if len(people) and people.shape[1] != layout.num_joints:
                raise DataFormatError(path, f"{people.shape[1]} joints per person, the data set uses "
                                            f"{layout.num_joints} ({layout.name})")
        except DataFormatError as error:
            skipped.append(Skipped(path, f"{error.problem}; frame left empty"))
            people = np.zeros((0, layout.num_joints, 3), np.float32)
        frames.append(people)
    return frames


def openpose_video_items(
    videos: Sequence[OpenPoseVideo],
    spec: StoreSpec,
    *,
    window: int | None,
    stride: int | None,
    image_size: Sequence[float] | None,
) -> Iterator[Item]:
    """Every video's frames tracked into people and cut into windows (see :func:`people_windows`)."""
    size = None if image_size is None else (float(image_size[0]), float(image_size[1]))
    for video in track(videos, f"{spec.dataset}: tracking people"):
        skipped: list[Skipped] = []
        frames = _video_frames(video, spec.layout, skipped)
        yield from skipped
        yield from people_windows(video.record, track_people(frames), video.record.name, num_person=spec.num_person,
                                  window=window, stride=stride, image_size=size)


def read_label_table(path: Path) -> dict[str, str]:
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


Entries = list[tuple[str, list[Path], str]]  # (sample name, frame files, label) of each video


def _labelled_entries(root: Path, labels: str | Path,
                      class_names: Sequence[str] | None) -> tuple[list[str], Entries, list[Skipped]]:
    """Class names, ``(sample name, frame files, label)`` and the skipped, for files labelled by a CSV."""
    label_path = Path(labels) if Path(labels).exists() or Path(labels).is_absolute() else root / labels
    table = read_label_table(label_path)
    names = _class_names_for(table.values(), class_names)
    found, stray = grouped_videos(root, "")
    skipped = [Skipped(path, STRAY_REASON) for path in stray]
    skipped += [Skipped(name, "no row in the labels CSV") for name, video, _ in found if video not in table]
    missing = sorted(set(table) - {video for _, video, _ in found})
    skipped += [Skipped(f"{label_path}:{video}", "listed in the labels CSV but no JSON files found")
                for video in missing]
    entries = [(name, files, table[video]) for name, video, files in found if video in table]
    return names, entries, skipped


def _folder_entries(root: Path, class_names: Sequence[str] | None) -> tuple[list[str], Entries, list[Skipped]]:
    """Class names, ``(sample name, frame files, label)`` and the skipped, for one sub-folder per class."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{root}: no class sub-folders; put each class in its own folder or give "
                        "labels=<CSV of video,label>")
    names = _class_names_for([p.name for p in folders], class_names)
    entries: Entries = []
    skipped: list[Skipped] = []
    for folder in folders:
        found, stray = grouped_videos(folder, folder.name)
        skipped += [Skipped(path, STRAY_REASON) for path in stray]
        entries += [(name, files, folder.name) for name, _, files in found]
    return names, entries, skipped


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
    if layout is not None and layout not in OPENPOSE_LAYOUTS:
        raise UserError(f"layout {layout!r}: OpenPose output is one of {sorted(OPENPOSE_LAYOUTS)}")
    names, entries, skipped = (_folder_entries(root, class_names) if labels is None
                               else _labelled_entries(root, labels, class_names))
    videos: list[OpenPoseVideo] = []
    for name, files, label in entries:
        index = names.index(label) if label in names else int(label) if label.isdigit() else -1
        if not 0 <= index < len(names):
            skipped.append(Skipped(name, f"label {label!r} is not one of the classes {names}"))
            continue
        videos.append(OpenPoseVideo(files, SampleRecord(name=name, label=index)))
    if not videos:
        raise UserError(f"{root}: no labelled OpenPose videos found (<video>_<frame:012d>_keypoints.json)")
    spec = StoreSpec(dataset=dataset, layout=OPENPOSE_LAYOUTS[layout] if layout else detect_layout(videos),
                     num_person=num_person, channels=3, source=str(root), class_names=names)
    return write_store(store_dir, spec, chain(skipped, openpose_video_items(
        videos, spec, window=window, stride=stride, image_size=image_size)))
