"""Any folder of OpenPose per-frame JSON → a store of (x, y, confidence) samples.

Also the reading of OpenPose videos that the MADS and video-folder adapters share: frame files →
tracked people → windows (:mod:`~asgcn_lightning.data.sources.people`).
"""

from __future__ import annotations

import csv
from collections import Counter
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
from asgcn_lightning.data.sources.writer import Item, Skipped, StoreSpec, read_or_skip, write_store
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.data.tracking import track_people
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.progress import track
from asgcn_lightning.skeleton.layouts import Layout

STRAY_REASON = "name does not follow <video>_<frame:012d>_keypoints.json"


@dataclass
class OpenPoseVideo:
    """One OpenPose-processed video: its frame files, the identity its samples get, and its body
    model (``openpose25``/``coco18``, None until :func:`choose_layout` looked, or when nobody is in it)."""

    files: list[Path]
    record: SampleRecord
    layout: str | None = None


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


def _video_layout(video: OpenPoseVideo) -> str | None:
    """The body model of the video's first readable frame with people in it."""
    for path in video.files:
        people = read_or_skip(path, lambda path=path: read_openpose_frame(path))
        if not isinstance(people, Skipped) and len(people):
            return layout_of_frame(people)
    return None


def choose_layout(videos: Sequence[OpenPoseVideo], given: str | None, option: str | None) -> Layout:
    """The body model of the store: ``given``, else the one most videos use; each video's is noted on it.

    Every video is looked at, so the alphabetically first one cannot decide for the rest; videos of
    another body model are skipped by :func:`openpose_video_items`. A tie is an error naming ``option``.
    """
    for video in track(videos, "finding each video's body model"):
        video.layout = _video_layout(video)
    counts = Counter(video.layout for video in videos if video.layout is not None)
    if given is not None:
        return OPENPOSE_LAYOUTS[given]
    if not counts:
        raise UserError("no person detected in any OpenPose file; nothing to prepare")
    ranked = counts.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        choice = (f"say which to keep with {option}={ranked[0][0]} or {option}={ranked[1][0]}" if option
                  else "remove the videos of one of them")
        raise UserError(f"as many videos are {ranked[0][0]} as {ranked[1][0]} ({ranked[0][1]} each); {choice}")
    return OPENPOSE_LAYOUTS[ranked[0][0]]


def _video_frames(video: OpenPoseVideo, layout: Layout, skipped: list[Skipped]) -> list[np.ndarray]:
    """Per-frame detections; a bad frame file is noted in ``skipped`` and counts as an empty frame."""
    frames = []
    for path in video.files:
        people = read_or_skip(path, lambda path=path: read_openpose_frame(path), part_of=video.record.name,
                              label=video.record.label)
        if not isinstance(people, Skipped) and len(people) and people.shape[1] != layout.num_joints:
            people = Skipped(path, f"{people.shape[1]} joints per person, the data set uses {layout.num_joints} "
                                   f"({layout.name})", part_of=video.record.name, label=video.record.label)
        if isinstance(people, Skipped):
            people.reason += "; frame left empty"
            skipped.append(people)
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
    """Every video's frames tracked into people and cut into windows (see :func:`people_windows`).

    A video of another body model than the store's is skipped whole.
    """
    size = None if image_size is None else (float(image_size[0]), float(image_size[1]))
    for video in track(videos, f"{spec.dataset}: tracking people"):
        name, label = video.record.name, video.record.label
        if video.layout not in (None, spec.layout.name):
            yield Skipped(name, f"{video.layout} keypoints, the store holds {spec.layout.name} (the body model of "
                                "most videos, or the one asked for)", label=label)
            continue
        skipped: list[Skipped] = []
        frames = _video_frames(video, spec.layout, skipped)
        yield from skipped
        windows = read_or_skip(name, lambda video=video, frames=frames, name=name: list(people_windows(
            video.record, track_people(frames), name, num_person=spec.num_person, window=window, stride=stride,
            image_size=size)), label=label)
        yield from [windows] if isinstance(windows, Skipped) else windows


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
        video, label = row[0].strip(), row[1].strip()
        if table.setdefault(video, label) != label:
            raise DataFormatError(path, f"row {number}: video {video!r} is labelled {table[video]!r} and {label!r}")
    if not table:
        raise DataFormatError(path, "no 'video,label' rows")
    return table


MAX_CLASS_INDEX = 100_000  # an integer label beyond this is a typo, not a class: refused before any list is built


def _class_names_for(labels: Iterable[str], class_names: Sequence[str] | None, where: Path) -> list[str]:
    """Given names, else 0-based indices when every label is an integer, else sorted names.

    Integer labels must cover ``0..max`` without gaps: a class that no video has is refused.
    """
    if class_names:
        return [str(name) for name in class_names]
    values = sorted(set(labels))
    if all(v.isdigit() for v in values):
        indices = {int(v) for v in values}
        if max(indices) > MAX_CLASS_INDEX:
            raise UserError(f"{where}: label {max(indices)} is not a plausible 0-based class index; "
                            "give dataset.prepare.class_names or use class names as labels")
        empty = sorted(set(range(max(indices) + 1)) - indices)
        if empty:
            raise UserError(f"{where}: integer labels are 0-based class indices, but no video has the "
                            f"label{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty[:20]))}"
                            f"{' …' if len(empty) > 20 else ''}; number the classes without gaps")
        return [str(i) for i in range(max(indices) + 1)]
    return values


Entries = list[tuple[str, list[Path], str]]  # (sample name, frame files, label) of each video


def _labelled_entries(root: Path, labels: str | Path,
                      class_names: Sequence[str] | None) -> tuple[list[str], Entries, list[Skipped]]:
    """Class names, ``(sample name, frame files, label)`` and the skipped, for files labelled by a CSV."""
    label_path = Path(labels) if Path(labels).exists() or Path(labels).is_absolute() else root / labels
    table = read_label_table(label_path)
    names = _class_names_for(table.values(), class_names, label_path)
    found, stray = grouped_videos(root, "")
    skipped = [Skipped(path, STRAY_REASON, listed=True) for path in stray]
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
    names = _class_names_for([p.name for p in folders], class_names, root)
    entries: Entries = []
    skipped: list[Skipped] = []
    empty: list[str] = []
    for folder in folders:
        found, stray = grouped_videos(folder, folder.name)
        skipped += [Skipped(path, STRAY_REASON, listed=True) for path in stray]
        entries += [(name, files, folder.name) for name, _, files in found]
        if not found:
            empty.append(folder.name)
    if empty:
        raise UserError(f"{root}: the class folder{'s' if len(empty) > 1 else ''} {', '.join(map(repr, empty))} "
                        "hold no OpenPose JSON (<video>_<frame:012d>_keypoints.json); fill or remove them")
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
    left_out: Sequence[tuple[Path, str]] = (),
) -> Path:
    """Any folder of OpenPose per-frame JSON → a store of (x, y, confidence) samples.

    Two layouts are read: ``root/<class>/**/<video>_<frame:012d>_keypoints.json`` (class names are
    the sub-folders, sorted) or, with ``labels``, files anywhere below ``root`` and a CSV of
    ``video,label`` rows (integer labels are 0-based class indices, anything else a class name).
    ``image_size`` ``(width, height)`` centres pixels by the frame; without it each sample is
    centred on its own people. ``window``/``stride`` cut long recordings into overlapping samples.
    ``layout`` (``openpose25`` or ``coco18``) is, when not given, the body model most videos use;
    videos of the other one are skipped and listed. ``left_out``: ``(file, problem)`` of sources
    that never became JSON (undecodable videos), listed and counted with the rest.
    """
    if root is None:
        raise UserError("prepare_openpose_folder needs the folder of OpenPose output (dataset.root=...)")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder of OpenPose output")
    if image_size is not None and (len(image_size) != 2 or not all(0 < float(v) < float("inf") for v in image_size)):
        raise UserError(f"image_size {list(image_size)}: give the videos' [width, height] in pixels, both positive")
    if layout is not None and layout not in OPENPOSE_LAYOUTS:
        raise UserError(f"layout {layout!r}: OpenPose output is one of {sorted(OPENPOSE_LAYOUTS)}")
    names, entries, skipped = (_folder_entries(root, class_names) if labels is None
                               else _labelled_entries(root, labels, class_names))
    skipped += [Skipped(path, problem) for path, problem in left_out]
    videos: list[OpenPoseVideo] = []
    for name, files, label in entries:
        index = names.index(label) if label in names else int(label) if label.isdigit() else -1
        if not 0 <= index < len(names):
            skipped.append(Skipped(name, f"label {label!r} is not one of the classes {names}"))
            continue
        videos.append(OpenPoseVideo(files, SampleRecord(name=name, label=index)))
    if not videos:
        raise UserError(f"{root}: no labelled OpenPose videos found (<video>_<frame:012d>_keypoints.json)")
    spec = StoreSpec(dataset=dataset, layout=choose_layout(videos, layout, "dataset.prepare.layout"),
                     num_person=num_person, channels=3, source=str(root), class_names=names,
                     spatial_channels=2)
    return write_store(store_dir, spec, chain(skipped, openpose_video_items(
        videos, spec, window=window, stride=stride, image_size=image_size)))
