"""What both MADS folder layouts share: the options, mocap windows and the OpenPose store."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import chain
from pathlib import Path

import numpy as np

from asgcn_lightning.data.sources.openpose import OpenPoseVideo, choose_layout, openpose_video_items
from asgcn_lightning.data.sources.writer import Item, Sample, Skipped, StoreSpec, write_store
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.data.windows import window_name, window_ranges

MADS_LEVELS = ("category", "action")
MADS_SOURCES = ("openpose", "gt3d", "video")
MADS_LAYOUTS = ("tree", "release")


def mocap_windows(record: SampleRecord, sequence: np.ndarray, source: Path, *,
                  window: int | None, stride: int | None) -> Iterator[Item]:
    """One mocap sequence ``(T, 1, V, 3)`` cut into windows; windows without any captured joint are skipped."""
    ranges = window_ranges(len(sequence), window, stride)
    for start, end in ranges:
        sample = sequence[start:end]
        if not sample.any():
            yield Skipped(f"{source}[{start}:{end}]", "no captured joints in this window", part_of=str(source),
                          label=record.label)
            continue
        yield Sample(replace(record, name=window_name(record.name, start, len(ranges))), sample, source=str(source))


def write_openpose_store(
    store_dir: str | Path,
    root: Path,
    names: list[str],
    videos: list[OpenPoseVideo],
    skipped: Iterable[Skipped],
    *,
    num_person: int,
    window: int | None,
    stride: int | None,
    image_size: Sequence[float] | None,
) -> Path:
    """The store of MADS OpenPose videos, whichever folder layout they were found in."""
    spec = StoreSpec(dataset="mads", layout=choose_layout(videos, None, None), num_person=num_person, channels=3,
                     source=str(root), class_names=names, spatial_channels=2)
    return write_store(store_dir, spec, chain(skipped, openpose_video_items(
        videos, spec, window=window, stride=stride, image_size=image_size)))
