"""Kinetics-skeleton clips: the ST-GCN authors' JSON with OpenPose COCO-18 poses per frame.

Each clip file holds ``data[]`` entries ``{frame_index (1-based), skeleton: [{pose: 36 values
x, y normalised to the frame, score: 18 values}]}`` plus ``label`` and ``label_index``. The release
also ships a label file per split, ``{video_id: {has_skeleton, label, label_index}}``, which is
read by :func:`read_kinetics_labels`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asgcn_lightning.errors import DataFormatError

KINETICS_JOINTS = 18
# numbering gaps become empty frames, so a clip's length is its largest frame_index: bounded, so that
# one absurd number cannot make a clip of a billion frames (the release's clips hold 300)
MAX_FRAME_INDEX = 100_000


@dataclass
class KineticsClip:
    """One clip: per-frame people ``(P, 18, 3)`` with x, y in [0, 1] and the OpenPose score."""

    name: str
    frames: list[np.ndarray]
    label: str | None
    label_index: int | None


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DataFormatError(path, f"cannot read the file ({error})") from None
    if not text.strip():
        raise DataFormatError(path, "empty file, expected Kinetics-skeleton JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFormatError(path, f"not valid JSON ({error})") from None
    except RecursionError:
        raise DataFormatError(path, "JSON nested too deeply to be a Kinetics-skeleton file") from None


def read_kinetics_clip(path: str | Path) -> KineticsClip:
    """Read one clip; frames missing from ``data`` (numbering gaps) become empty frames."""
    path = Path(path)
    content = _load_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise DataFormatError(path, "not a Kinetics-skeleton clip: no 'data' list at the top level")
    by_index: dict[int, np.ndarray] = {}
    for entry in content["data"]:
        try:
            index = int(entry["frame_index"])
            people = [_person(entry_person) for entry_person in entry["skeleton"]]
        except (KeyError, TypeError, ValueError) as error:
            raise DataFormatError(path, f"bad frame entry {str(entry)[:80]!r} ({error})") from None
        if not 1 <= index <= MAX_FRAME_INDEX:
            raise DataFormatError(path, f"frame_index {index} is outside 1..{MAX_FRAME_INDEX}")
        by_index[index] = np.stack(people) if people else np.zeros((0, KINETICS_JOINTS, 3), np.float32)
    length = max(by_index, default=0)
    empty = np.zeros((0, KINETICS_JOINTS, 3), np.float32)
    label_index = content.get("label_index")
    label = content.get("label")
    return KineticsClip(
        name=path.stem,
        frames=[by_index.get(i, empty) for i in range(1, length + 1)],
        label=None if label is None else str(label),
        label_index=None if label_index is None else class_index(path, label_index),
    )


def class_index(path: Path, value: Any) -> int:
    """A ``label_index`` that is an integer (``3`` or ``3.0``, never ``2.7`` or ``true``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float)
                                                                         and not value.is_integer()):
        raise DataFormatError(path, f"label_index {value!r} is not an integer")
    return int(value)


def _person(entry: dict[str, Any]) -> np.ndarray:
    pose = np.asarray(entry["pose"], dtype=np.float32)
    score = np.asarray(entry["score"], dtype=np.float32)
    if pose.shape != (2 * KINETICS_JOINTS,) or score.shape != (KINETICS_JOINTS,):
        raise ValueError(f"pose has {pose.size} values and score {score.size}, expected 36 and 18")
    if not (np.isfinite(pose).all() and np.isfinite(score).all()):
        raise ValueError("NaN or infinite values")
    return np.concatenate([pose.reshape(KINETICS_JOINTS, 2), score[:, None]], axis=1)


def read_kinetics_labels(path: str | Path) -> dict[str, tuple[str, int, bool]]:
    """A split's label file as ``{video_id: (label, label_index, has_skeleton)}``."""
    path = Path(path)
    content = _load_json(path)
    if not isinstance(content, dict):
        raise DataFormatError(path, "not a Kinetics label file: expected an object keyed by video id")
    labels: dict[str, tuple[str, int, bool]] = {}
    for video, info in content.items():
        try:
            has_skeleton = bool(info.get("has_skeleton", True))
            labels[video] = (str(info["label"]), class_index(path, info["label_index"]), has_skeleton)
        except (KeyError, TypeError, AttributeError):
            raise DataFormatError(path, f"entry {video!r} lacks 'label'/'label_index'") from None
    return labels
