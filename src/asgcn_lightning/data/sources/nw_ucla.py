"""Northwestern-UCLA Multiview Action 3D (the GCN literature's ``all_sqe/*.json``) → one Kinect v1 store.

Each sequence is one JSON file ``a<action>_s<subject>_e<take>_v<view>.json`` holding
``{"file_name", "skeletons": frames x 20 joints x (x, y, z), "label": 1..10}``. The name carries
everything the splits need, so subject, view and take are stored per sample (``subject``,
``camera``, ``replication``): cross-view trains on views 1 and 2, cross-subject on listed subjects,
and a validation set can be carved out by subject.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from asgcn_lightning.data.sources.writer import Item, Sample, Skipped, StoreSpec, write_store
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.errors import UserError
from asgcn_lightning.progress import track
from asgcn_lightning.skeleton.layouts import KINECT20

# the ten actions of the release (a07 and a10 were never distributed), in label order 1..10
NW_UCLA_ACTIONS: dict[int, str] = {
    1: "pick up with one hand", 2: "pick up with two hands", 3: "drop trash", 4: "walk around",
    5: "sit down", 6: "stand up", 8: "donning", 9: "doffing", 11: "throw", 12: "carry",
}
NW_UCLA_XVIEW_TRAIN_VIEWS = (1, 2)
NW_UCLA_XSUB_TRAIN_SUBJECTS = (1, 2, 3, 4, 5, 6, 7)
_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_v(\d+)")


def parse_nw_ucla_name(name: str) -> dict[str, int]:
    """Action, subject, take and view of ``a<action>_s<subject>_e<take>_v<view>`` (a bare name or a path)."""
    stem = Path(name).name.split(".")[0]
    match = _NAME.fullmatch(stem)
    if match is None:
        raise UserError(f"{name!r} is not a Northwestern-UCLA sequence name (a<action>_s<subject>_e<take>_v<view>)")
    action, subject, take, view = map(int, match.groups())
    return {"action": action, "subject": subject, "take": take, "view": view}


def read_nw_ucla_sequence(path: Path) -> tuple[np.ndarray, int]:
    """Frames ``(T, 1, 20, 3)`` and the file's 1-based label; ``ValueError`` says what is wrong with it."""
    try:
        content = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not readable JSON ({error})") from None
    if not isinstance(content, dict) or "skeletons" not in content or "label" not in content:
        raise ValueError("no 'skeletons' and 'label' keys")
    try:
        frames = np.asarray(content["skeletons"], dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError("'skeletons' is not a frames x joints x 3 array") from None
    if frames.ndim != 3 or frames.shape[1:] != (KINECT20.num_joints, 3) or len(frames) == 0:
        raise ValueError(f"'skeletons' has shape {frames.shape}, expected (frames >= 1, 20, 3)")
    if not np.isfinite(frames).all():
        raise ValueError("non-finite coordinates")
    label = content["label"]
    if not isinstance(label, int) or isinstance(label, bool):
        raise ValueError(f"label {label!r} is not an integer")
    return frames[:, None], label


def _nw_ucla_items(paths: Sequence[Path]) -> Iterator[Item]:
    labels = {action: position + 1 for position, action in enumerate(NW_UCLA_ACTIONS)}
    for path in track(paths, "reading Northwestern-UCLA sequences", total=len(paths)):
        try:
            info = parse_nw_ucla_name(path.stem)
        except UserError:
            yield Skipped(path, "file name is not a sequence name (a<action>_s<subject>_e<take>_v<view>)")
            continue
        if info["action"] not in labels:
            yield Skipped(path, f"action a{info['action']:02d} is not one of the release's ten")
            continue
        try:
            frames, label = read_nw_ucla_sequence(path)
        except ValueError as error:
            yield Skipped(path, str(error))
            continue
        if label != labels[info["action"]]:
            yield Skipped(path, f"label {label} contradicts action a{info['action']:02d} "
                                f"(label {labels[info['action']]})")
            continue
        yield Sample(SampleRecord(name=path.stem, label=label - 1, subject=info["subject"], camera=info["view"],
                                  replication=info["take"]), frames)


def prepare_nw_ucla(store_dir: str | Path, *, raw_dir: str | Path | None) -> Path:
    """Read every ``*.json`` sequence in ``raw_dir`` (the release's ``all_sqe``, or the folder above it) into a
    one-person store.

    Coordinates are kept as recorded (Kinect v1 camera space, metres), layout ``kinect20``. Labels are
    the file's 1..10 less one, checked against the action in the name; the view is stored as
    ``camera`` (1-3), the subject (1-10) as ``subject`` and the take as ``replication``.
    """
    if raw_dir is None:
        raise UserError("dataset.raw_dir is not set: pass dataset.raw_dir=<the all_sqe folder of NW-UCLA JSON files>")
    raw = Path(raw_dir).expanduser()
    if not raw.is_dir():
        raise UserError(f"{raw}: dataset.raw_dir is not a folder (it should hold the all_sqe/*.json sequences)")
    if not any(raw.glob("*.json")) and (raw / "all_sqe").is_dir():
        raw = raw / "all_sqe"  # the extracted archive's top folder
    paths = sorted(raw.glob("*.json"))
    if not paths:
        raise UserError(f"{raw}: no .json files (expected the release's sequences, like a01_s01_e00_v01.json)")
    spec = StoreSpec(dataset="nw_ucla", layout=KINECT20, num_person=1, channels=3, source=str(raw),
                     class_names=list(NW_UCLA_ACTIONS.values()))
    return write_store(store_dir, spec, _nw_ucla_items(paths))
