"""Detected people (OpenPose, Kinetics-skeleton, pyskl) → stored samples: windows, main people, centring.

2D coordinates are stored with the detector's confidence as the third channel and centred to
about ``[-0.5, 0.5]``; a missing joint is all zeros (:mod:`asgcn_lightning.data.tracking`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from asgcn_lightning.data.sources.writer import Item, Sample, Skipped
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.data.tracking import normalise_by_extent, normalise_by_image_size, select_main_people
from asgcn_lightning.data.windows import window_name, window_ranges


def count_bodies(sample: np.ndarray, has_confidence: bool = True) -> int:
    """People present in any frame of ``(T, M, V, C)``: a confident joint, or any non-zero one without scores."""
    present = sample[..., -1] > 0 if has_confidence else (sample != 0).any(axis=-1)
    return int(present.any(axis=(0, 2)).sum())


def people_windows(
    record: SampleRecord,
    tracks: np.ndarray,
    source: str,
    *,
    num_person: int,
    window: int | None,
    stride: int | None,
    image_size: tuple[float, float] | None,
) -> Iterator[Item]:
    """Windows of tracked people ``(T, K, V, 3)``, each with its ``num_person`` main people, centred.

    ``image_size`` (width, height) centres by the frame; without it each window is centred on its
    own people. A window in which nobody was detected is skipped.
    """
    if tracks.shape[1] == 0:
        yield Skipped(source, "nobody detected in any frame", label=record.label)
        return
    ranges = window_ranges(len(tracks), window, stride)
    for start, end in ranges:
        sample = select_main_people(tracks[start:end], num_person)
        bodies = count_bodies(sample)
        if bodies == 0:
            yield Skipped(f"{source}[{start}:{end}]", "nobody detected in this window", part_of=source,
                          label=record.label)
            continue
        with np.errstate(all="ignore"):  # absurd coordinates become inf here, which the store writer skips
            sample = (normalise_by_extent(sample) if image_size is None
                      else normalise_by_image_size(sample, image_size))
        yield Sample(replace(record, name=window_name(record.name, start, len(ranges)), bodies=bodies), sample,
                     source=source)
