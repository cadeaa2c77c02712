"""OpenPose per-frame JSON output: one file per video frame, any number of people in each.

OpenPose writes ``<video>_<frame:012d>_keypoints.json`` for every frame of a video, each holding
``people[].pose_keypoints_2d`` as flat ``x, y, confidence`` triples in pixels; a joint it did not
find is ``0, 0, 0``. The body model is told apart by the length: 75 values for BODY_25, 54 for
COCO-18. People carry no identity across frames, so sequences still need tracking
(:mod:`asgcn_lightning.data.tracking`).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asgcn_lightning.errors import DataFormatError
from asgcn_lightning.skeleton.layouts import COCO18, OPENPOSE25, Layout

FRAME_NAME = re.compile(r"^(?P<video>.+)_(?P<frame>\d{12})_keypoints\.json$")
OPENPOSE_LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (OPENPOSE25, COCO18)}
LAYOUT_BY_LENGTH = {3 * layout.num_joints: name for name, layout in OPENPOSE_LAYOUTS.items()}


def read_openpose_frame(path: str | Path) -> np.ndarray:
    """The people of one frame as ``(P, V, 3)`` float32 (x, y, confidence); ``(0, 0, 3)`` for nobody.

    Raises :class:`DataFormatError` for an empty or invalid file and for keypoint lists that are
    neither BODY_25 nor COCO-18, so a preparer can skip the file and say why.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DataFormatError(path, f"cannot read the file ({error})") from None
    if not text.strip():
        raise DataFormatError(path, "empty file, expected OpenPose JSON with a 'people' list")
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFormatError(path, f"not valid JSON ({error})") from None
    except RecursionError:
        raise DataFormatError(path, "JSON nested too deeply to be OpenPose output") from None
    if not isinstance(content, dict) or not isinstance(content.get("people"), list):
        raise DataFormatError(path, "not OpenPose output: no 'people' list at the top level")
    people = [_person_keypoints(path, i, person) for i, person in enumerate(content["people"])]
    if not people:
        return np.zeros((0, 0, 3), dtype=np.float32)
    lengths = {len(p) for p in people}
    if len(lengths) > 1:
        raise DataFormatError(path, f"people have different keypoint counts {sorted(lengths)}")
    return np.stack(people).reshape(len(people), -1, 3)


def _person_keypoints(path: Path, index: int, person: Any) -> np.ndarray:
    # OpenPose before 1.2 called the list 'pose_keypoints'; both spell the same triples
    if not isinstance(person, dict):
        raise DataFormatError(path, f"person {index} is not an object")
    values = person.get("pose_keypoints_2d", person.get("pose_keypoints"))
    if not isinstance(values, list):
        raise DataFormatError(path, f"person {index} has no 'pose_keypoints_2d' list")
    if len(values) not in LAYOUT_BY_LENGTH:
        raise DataFormatError(path, f"person {index} has {len(values)} pose keypoint values, expected 75 "
                                    "(BODY_25) or 54 (COCO-18)")
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataFormatError(path, f"person {index} has non-numeric pose keypoints") from None
    if not np.isfinite(array).all():
        raise DataFormatError(path, f"person {index} has NaN or infinite pose keypoints")
    return array


def layout_of_frame(people: np.ndarray) -> str | None:
    """``'openpose25'`` or ``'coco18'`` for a frame from :func:`read_openpose_frame`; None if empty."""
    if len(people) == 0:
        return None
    return LAYOUT_BY_LENGTH[people.shape[1] * 3]


def group_frame_files(paths: Iterable[str | Path]) -> tuple[dict[str, list[Path]], list[Path]]:
    """Group per-frame files into videos by their name, frames in order.

    Returns ``{video: [frame files]}`` and the files whose name does not follow
    ``<video>_<frame:012d>_keypoints.json`` (the caller decides whether to skip them). Gaps in the
    frame numbers are kept as they are: the sequence is the files in order.
    """
    videos: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    unmatched: list[Path] = []
    for path in map(Path, paths):
        match = FRAME_NAME.match(path.name)
        if match is None:
            unmatched.append(path)
        else:
            videos[match["video"]].append((int(match["frame"]), path))
    grouped = {video: [p for _, p in sorted(frames)] for video, frames in sorted(videos.items())}
    return grouped, sorted(unmatched)


def read_openpose_folder(folder: str | Path) -> dict[str, list[np.ndarray]]:
    """Every video in one folder of OpenPose output, as ``{video: [per-frame (P, V, 3) arrays]}``.

    Strict: the first bad file raises :class:`DataFormatError`; preparers that must go on past bad
    files read frame by frame instead.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(folder, "no such folder")
    grouped, _ = group_frame_files(folder.glob("*_keypoints.json"))
    return {video: read_openpose_sequence(files) for video, files in grouped.items()}


def read_openpose_sequence(files: Sequence[Path]) -> list[np.ndarray]:
    """The frames of one video; all frames with people must use the same body model."""
    frames = [read_openpose_frame(path) for path in files]
    joints = {f.shape[1] for f in frames if len(f)}
    if len(joints) > 1:
        first = next(p for p, f in zip(files, frames, strict=True) if len(f) and f.shape[1] != min(joints))
        raise DataFormatError(first, f"mixes body models within one video ({sorted(joints)} joints)")
    return frames
