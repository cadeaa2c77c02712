"""Kinetics-skeleton (the ST-GCN release) → a COCO-18 store of (x, y, score), centred on the frame.

The release is one folder holding ``kinetics_train/`` and ``kinetics_val/`` (one JSON file per
clip) and their label files ``kinetics_{train,val}_label.json``; its two parts become setup 1 and
2, so ``split=predefined`` trains on the release's training part. A single folder of clips has no
partition (setup -1): it trains with ``split=random``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from asgcn_lightning.data.formats.kinetics_json import read_kinetics_clip, read_kinetics_labels
from asgcn_lightning.data.sources.people import people_windows
from asgcn_lightning.data.sources.writer import (
    TEST_SETUP,
    TRAIN_SETUP,
    Item,
    Skipped,
    StoreSpec,
    read_or_skip,
    write_store,
)
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.data.tracking import track_people
from asgcn_lightning.errors import UserError
from asgcn_lightning.progress import console, track
from asgcn_lightning.skeleton.layouts import COCO18

RELEASE_PARTS = (("train", TRAIN_SETUP), ("val", TEST_SETUP))
NO_PARTITION = -1
MAX_CLASS_INDEX = 100_000  # without num_classes, a label_index beyond this is a typo, not a class


def release_parts(root: Path, label_file: str | Path | None) -> list[tuple[Path, Path | None, int]]:
    """``(clip folder, label file or None, setup)`` of the release layout, or of one folder of clips."""
    present = [part for part, _ in RELEASE_PARTS if (root / f"kinetics_{part}").is_dir()]
    if len(present) == 1:
        raise UserError(f"{root}: kinetics_{present[0]}/ without its other half; the release has both "
                        "kinetics_train/ and kinetics_val/ (for one folder of clips, point dataset.root at it)")
    if present:
        parts = []
        for part, setup in RELEASE_PARTS:
            labels = root / f"kinetics_{part}_label.json"
            parts.append((root / f"kinetics_{part}", labels if labels.is_file() else None, setup))
        return parts
    return [(root, Path(label_file) if label_file else None, NO_PARTITION)]


def _clip_items(parts: list[tuple[Path, Path | None, int]], spec: StoreSpec,
                num_classes: int | None) -> Iterator[Item]:
    """Every clip's tracked people as one sample; the class names are filled in once all labels are seen."""
    seen_names: dict[int, str] = {}
    limit = num_classes or MAX_CLASS_INDEX + 1
    for folder, labels_path, setup in parts:
        table = read_kinetics_labels(labels_path) if labels_path else {}
        for path in track(sorted(folder.glob("*.json")), f"{spec.dataset}: {folder.name}"):
            clip = read_or_skip(path, lambda path=path: read_kinetics_clip(path))
            if isinstance(clip, Skipped):
                yield clip
                continue
            label, index, has_skeleton = table.get(clip.name, (clip.label, clip.label_index, True))
            if not has_skeleton:
                yield Skipped(path, "the label file marks this clip as having no skeleton", listed=True)
                continue
            if index is None or not 0 <= index < limit:
                yield Skipped(path, "no label_index in the clip or the label file" if index is None else
                              f"label_index {index} is outside the {limit} classes (dataset.prepare.num_classes)")
                continue
            seen_names.setdefault(index, label or f"class_{index}")
            record = SampleRecord(name=clip.name, label=index, setup=setup)
            windows = read_or_skip(path, lambda clip=clip, record=record, path=path: list(people_windows(
                record, track_people(clip.frames), str(path), num_person=spec.num_person, window=None, stride=None,
                image_size=(1.0, 1.0))), label=index)
            yield from [windows] if isinstance(windows, Skipped) else windows
    count = max(num_classes or 0, max(seen_names, default=-1) + 1)
    spec.class_names[:] = [seen_names.get(i, f"class_{i}") for i in range(count)]


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
    parts = release_parts(root, label_file)
    if parts[0][2] == NO_PARTITION:
        console().print(f"{root}: one folder of clips, without the release's kinetics_train/ and kinetics_val/, "
                        "so no train/val partition: train with split=random", soft_wrap=True)
    splits = {f"{folder.name}/": setup for folder, _, setup in parts if setup != NO_PARTITION}
    spec = StoreSpec(dataset="kinetics_skeleton", layout=COCO18, num_person=num_person, channels=3, source=str(root),
                     splits=splits, spatial_channels=2)
    return write_store(store_dir, spec, _clip_items(parts, spec, num_classes))
