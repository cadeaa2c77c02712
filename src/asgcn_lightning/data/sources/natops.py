"""UEA NATOPS (``NATOPS_TRAIN.ts`` and ``NATOPS_TEST.ts``) → one 8-joint xyz store (layout ``natops8``)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from asgcn_lightning.data.formats.uea_ts import TsData, read_ts
from asgcn_lightning.data.sources.writer import (
    TEST_SETUP,
    TRAIN_SETUP,
    Item,
    Sample,
    Skipped,
    StoreSpec,
    read_or_skip,
    write_store,
)
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.skeleton.layouts import NATOPS8

NATOPS_FILES = {"NATOPS_TRAIN.ts": TRAIN_SETUP, "NATOPS_TEST.ts": TEST_SETUP}
# the archive labels the signals 1.0..6.0; their meaning is in its description (Ghouaiel et al., UEA archive)
NATOPS_SIGNALS = {"1.0": "I have command", "2.0": "All clear", "3.0": "Not clear", "4.0": "Spread wings",
                  "5.0": "Fold wings", "6.0": "Lock wings"}
_NATOPS_CHANNEL = re.compile(r"^(\d+)\.\s*(.+?),\s*([XYZ]) coordinate", re.IGNORECASE)


def _check_natops_header(path: Path, comments: Sequence[str]) -> None:
    """When the header lists the channels, they must be the sensors of ``natops8``, in its order."""
    channels = [m for m in map(_NATOPS_CHANNEL.match, comments) if m]
    if not channels:
        return
    joints = []
    for match in channels[::3]:
        words = match[2].lower().split()
        joints.append("_".join([words[-1], *words[:-1]]))
    if tuple(joints) != NATOPS8.joints:
        raise DataFormatError(path, f"header lists the sensors as {joints}, expected {list(NATOPS8.joints)}")


def _read_natops(path: Path) -> TsData:
    data = read_ts(path)
    _check_natops_header(data.path, data.comments)
    if data.class_labels is None or data.labels is None:
        raise DataFormatError(data.path, "no @classLabel; NATOPS is a classification set")
    if data.channels not in (None, 3 * NATOPS8.num_joints):
        raise DataFormatError(data.path, f"{data.channels} channels, expected {3 * NATOPS8.num_joints}")
    return data


def _natops_items(parsed: dict[str, TsData], problems: list[Skipped],
                  class_labels: list[str]) -> Iterator[Item]:
    yield from problems
    for name, data in parsed.items():
        if data.class_labels != class_labels:
            yield Skipped(data.path, f"@classLabel {data.class_labels} differs from {class_labels}")
            continue
        split = "train" if NATOPS_FILES[name] == TRAIN_SETUP else "test"
        for rejected in data.rejected:
            label = None if rejected.label is None else class_labels.index(rejected.label)
            yield Skipped(f"{data.path}:sample {rejected.ordinal + 1}", rejected.reason, label=label)
        for i, series, label in zip(data.ordinals, data.series, data.labels or [], strict=True):
            if not np.isfinite(series).all():
                yield Skipped(f"{data.path}:sample {i + 1}", "missing values", label=class_labels.index(label))
                continue
            frames = series.reshape(NATOPS8.num_joints, 3, -1).transpose(2, 0, 1)[:, None]
            yield Sample(SampleRecord(name=f"{split}_{i:03d}", label=class_labels.index(label),
                                      setup=NATOPS_FILES[name]), frames, source=f"{data.path}:sample {i + 1}")


def prepare_natops(store_dir: str | Path, *, root: str | Path | None) -> Path:
    """UEA NATOPS (``NATOPS_TRAIN.ts`` and ``NATOPS_TEST.ts`` in ``root``) → one 8-joint xyz store.

    The 24 channels are 8 sensors x (x, y, z) in the header's order (layout ``natops8``; the elbows
    are joined directly because no torso sensor exists). Training samples get ``setup = 1`` and
    test samples ``setup = 2``, so the ``predefined`` split reproduces the archive's 180/180
    partition. Classes are the ``@classLabel`` values in order (labels their 0-based positions), named by the
    signal they stand for (``1.0`` is "I have command"); labels the archive does not describe keep their text.
    """
    if root is None:
        raise UserError("prepare_natops needs the folder holding NATOPS_TRAIN.ts and NATOPS_TEST.ts")
    root = Path(root)
    missing = [name for name in NATOPS_FILES if not (root / name).is_file()]
    if missing:
        raise UserError(f"{root}: missing {', '.join(missing)} (the UEA archive's NATOPS files)")
    parsed: dict[str, TsData] = {}
    problems: list[Skipped] = []
    for name in NATOPS_FILES:
        data = read_or_skip(root / name, lambda name=name: _read_natops(root / name))
        if isinstance(data, Skipped):
            problems.append(data)
        else:
            parsed[name] = data
    class_labels = next((d.class_labels for d in parsed.values() if d.class_labels), [])
    spec = StoreSpec(dataset="natops", layout=NATOPS8, num_person=1, channels=3, source=str(root),
                     class_names=[NATOPS_SIGNALS.get(label, label) for label in class_labels],
                     splits=dict(NATOPS_FILES))
    return write_store(store_dir, spec, _natops_items(parsed, problems, class_labels))
