"""MADS as released: the unzipped ``MADS_multiview`` / ``MADS_depth`` archives → a store.

``multi_view_data/<Category>/<Category>_<seq>_C<k>.avi`` (cameras k = 0, 1, 2) with the OpenPose
output of each video in ``<Category>_<seq>_C<k>/`` beside it, or the videos pose-estimated here;
or the ``GTpose2`` motion capture of ``<Category>_<seq>_GT.mat`` (15 joints multi-view, 19 depth).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asgcn_lightning.data import video_poses
from asgcn_lightning.data.formats.mads_gt import MADS_GT_VARIABLE, is_mads_gt, read_mads_gt
from asgcn_lightning.data.sources.mads_common import mocap_windows, write_openpose_store
from asgcn_lightning.data.sources.openpose import STRAY_REASON, OpenPoseVideo, grouped_videos
from asgcn_lightning.data.sources.writer import (
    Item,
    Skipped,
    StoreSpec,
    read_or_skip,
    refuse_empty_classes,
    write_store,
)
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.data.video import VIDEO_SUFFIXES
from asgcn_lightning.errors import UserError
from asgcn_lightning.progress import track
from asgcn_lightning.skeleton.layouts import MADS15, MADS19, Layout, make_layout

# data folder of the official release → the archive it comes in (MADS_multiview.zip, MADS_depth.zip)
MADS_RELEASE_FOLDERS = {"multi_view_data": "MADS_multiview", "depth_data": "MADS_depth"}
MADS_GT_LAYOUTS = {layout.num_joints: layout for layout in (MADS15, MADS19)}
_MADS_RELEASE_VIDEO = re.compile(r"^(?P<sequence>.+)_C(?P<camera>\d+)$", re.IGNORECASE)
_MADS_RELEASE_PART = re.compile(r"^(?P<sequence>.+)_(?:C\d+|Left|Right|GT)$", re.IGNORECASE)


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
            if folder.is_dir() and (source != "gt3d" or any(is_mads_gt(p) for p in folder.rglob("*.mat"))):
                return folder
    what = "the multi-view videos or their OpenPose output" if source != "gt3d" else "*_GT.mat ground truth"
    raise UserError(f"{root}: no MADS release folder with {what} (source={source}); looked for "
                    f"{', '.join(str(p) for p in looked)}. Point dataset.root at the unzipped release "
                    "(holding MADS_multiview/ or MADS_depth/), or use prepare.layout=tree")


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
    if level == "category":
        return [c.name for c in categories]
    pairs = set(seen)
    for category in categories:
        for entry in (p for p in category.iterdir() if not p.name.startswith(".")):
            is_part = entry.is_dir() or entry.suffix.lower() in VIDEO_SUFFIXES or is_mads_gt(entry)
            sequence = _mads_sequence(category.name, entry.name if entry.is_dir() else entry.stem)
            if is_part and sequence is not None:
                pairs.add((category.name, sequence))
    return [f"{c}/{s}" for c, s in sorted(pairs)]


def _mads_release_categories(folder: Path) -> list[Path]:
    categories = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not categories:
        raise UserError(f"{folder}: no <Category>/ folders (Tai-chi, Karate, Jazz, Hip-hop, Sports)")
    return categories


def prepare_mads_release(
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
    """The release below ``root`` → a store; see :func:`asgcn_lightning.data.sources.mads.prepare_mads`."""
    folder = _mads_release_folder(root, source)
    if source == "gt3d":
        return _prepare_mads_release_gt3d(store_dir, folder, level=level, window=window, stride=stride,
                                          gt_layout=gt_layout)
    failed: list[tuple[Path, str]] = []
    if source == "video":  # the JSON lands flat in a mirror of the category folders, which reads the same
        folder, failed = video_poses.openpose_tree_from_videos(folder, store_dir, size=image_size)
    categories = _mads_release_categories(folder)
    found: list[tuple[SampleRecord, str, list[Path]]] = []  # (identity, sequence, frame files)
    stray = [Skipped(path, problem) for path, problem in failed]
    taken: set[str] = set()
    for subject, category in enumerate(categories, start=1):  # one performer per category
        grouped, unmatched = grouped_videos(category, "")
        stray += [Skipped(p, STRAY_REASON, listed=True) for p in unmatched]
        for relative, video, files in grouped:
            camera, sequence = _MADS_RELEASE_VIDEO.match(video), _mads_sequence(category.name, video)
            if camera is None or sequence is None:
                stray.append(Skipped(category / relative, "video name does not end in _C<camera>", listed=True))
            elif video in taken:
                stray.append(Skipped(category / relative, "a video of this name was already read from another folder"))
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
        videos.append(OpenPoseVideo(files, record))
    if not videos:
        raise UserError(f"{folder}: no OpenPose output in <Category>/<Category>_<seq>_C<k>/"
                        "<Category>_<seq>_C<k>_<frame:012d>_keypoints.json; run OpenPose on the videos "
                        "(openpose --video <X>.avi --write_json <X>/) or use prepare.source=video")
    if level == "category":  # action classes are the release's, shared by the stores of all its sources
        refuse_empty_classes(names, [video.record.label for video in videos], folder)
    return write_openpose_store(store_dir, folder, names, videos, stray, num_person=num_person, window=window,
                                stride=stride, image_size=image_size)


def _gt_layout(folder: Path, read: list[tuple[int, str, Path, np.ndarray | str]],
               gt_layout: dict[str, Any] | None) -> Layout:
    """The given layout, else ``mads15`` or ``mads19``, whichever joint count most readable files have."""
    if gt_layout is not None:
        return make_layout(**gt_layout)
    counts = [item.shape[1] for *_, item in read if isinstance(item, np.ndarray)]
    known = Counter(n for n in counts if n in MADS_GT_LAYOUTS).most_common()
    if len(known) > 1 and known[0][1] == known[1][1]:
        raise UserError(f"{folder}: as many ground-truth files have 15 joints as 19; prepare the multi-view and "
                        "the depth release apart, or give gt_layout")
    if not known:
        problems = [f"{path}: {item if isinstance(item, str) else f'{item.shape[1]} joints'}"
                    for *_, path, item in read[:3]] or ["no such files"]
        raise UserError(f"{folder}: no readable MADS ground truth ({MADS_GT_VARIABLE} of 15 or 19 joints in "
                        "<Category>/<Category>_<seq>_GT.mat; give gt_layout for another skeleton): "
                        + "; ".join(problems))
    return MADS_GT_LAYOUTS[known[0][0]]


def _gt_items(read: list[tuple[int, str, Path, np.ndarray | str]], names: list[str], layout: Layout, *,
              level: str, window: int | None, stride: int | None) -> Iterator[Item]:
    for subject, category, path, item in track(read, "mads: ground truth"):
        sequence = _mads_sequence(category, path.stem) or path.stem
        label = names.index(category if level == "category" else f"{category}/{sequence}")
        if isinstance(item, str):
            yield Skipped(path, item, label=label)
            continue
        if item.shape[1] != layout.num_joints:
            yield Skipped(path, f"{item.shape[1]} joints per frame; the store's layout {layout.name} has "
                                f"{layout.num_joints} (prepare the other release folder on its own)", label=label)
            continue
        record = SampleRecord(name=f"{category}/{path.stem}", label=label, subject=subject)
        yield from mocap_windows(record, item[:, None], path, window=window, stride=stride)


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
        for path in sorted(p for p in category.rglob("*.mat") if is_mads_gt(p)):
            joints = read_or_skip(path, lambda path=path: read_mads_gt(path))
            read.append((subject, category.name, path, joints.reason if isinstance(joints, Skipped) else joints))
    layout = _gt_layout(folder, read, gt_layout)
    names = _mads_release_classes(categories, level, [])
    spec = StoreSpec(dataset="mads", layout=layout, num_person=1, channels=3, source=str(folder), class_names=names)
    return write_store(store_dir, spec, _gt_items(read, names, layout, level=level, window=window, stride=stride))
