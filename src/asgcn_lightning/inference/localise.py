"""Temporal localisation: where in a long sequence which action happens, from sliding windows.

A recognition model classifies one action per sample, so a long recording is cut into windows of
``window`` frames every ``stride`` frames (the last one flush with the end), each classified like a
sample in evaluation. Consecutive windows with the same most probable class, each at least
``threshold`` sure, merge into one segment; a less sure window ends a segment and belongs to
none. Windows overlap, so each one owns the frames nearest to its centre: segment boundaries lie
half-way between the centres of the last window of one label and the first of the next, and the
segments never overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from asgcn_lightning.data.windows import window_starts
from asgcn_lightning.errors import UserError
from asgcn_lightning.inference.inputs import SkeletonInput
from asgcn_lightning.inference.model import LoadedModel


@dataclass
class Segment:
    """A stretch of frames ``[start_frame, end_frame)`` classified as one action."""

    label: str
    index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    confidence: float  # mean top probability of its windows
    windows: int


@dataclass
class Timeline:
    """Every window's probabilities and the segments merged from them."""

    name: str
    num_frames: int
    fps: float
    window: int
    stride: int
    threshold: float
    class_names: list[str]
    starts: list[int]
    ends: list[int]
    probabilities: np.ndarray  # (windows, classes)
    segments: list[Segment]

    def to_dict(self) -> dict[str, Any]:
        best = self.probabilities.argmax(axis=1)
        windows = [{"start_frame": s, "end_frame": e, "label": self.class_names[int(b)], "index": int(b),
                    "confidence": float(p[b])}
                   for s, e, b, p in zip(self.starts, self.ends, best, self.probabilities, strict=True)]
        return {"name": self.name, "num_frames": self.num_frames, "fps": self.fps, "window": self.window,
                "stride": self.stride, "threshold": self.threshold,
                "segments": [asdict(s) for s in self.segments], "windows": windows}


def owned_spans(starts: Sequence[int], ends: Sequence[int], length: int) -> list[tuple[int, int]]:
    """The frames each window owns: from half-way to the previous window's centre to half-way to the next."""
    centres = [(s + e) / 2 for s, e in zip(starts, ends, strict=True)]
    cuts = [0, *(round((a + b) / 2) for a, b in pairwise(centres)), length]
    return list(pairwise(cuts))


def merge_windows(starts: Sequence[int], ends: Sequence[int], probabilities: np.ndarray,
                  class_names: Sequence[str], threshold: float, fps: float, length: int) -> list[Segment]:
    """Runs of consecutive windows with the same top class, each at least ``threshold`` sure."""
    spans = owned_spans(starts, ends, length)
    best = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    segments: list[Segment] = []
    run: list[int] = []

    def close() -> None:
        if run:
            first, last = spans[run[0]][0], spans[run[-1]][1]
            label = int(best[run[0]])
            segments.append(Segment(class_names[label], label, first, last, first / fps, last / fps,
                                    float(confidence[run].mean()), len(run)))
            run.clear()

    for i in range(len(spans)):
        if confidence[i] < threshold:
            close()
            continue
        if run and best[run[-1]] != best[i]:
            close()
        run.append(i)
    close()
    return segments


def localise(model: LoadedModel, item: SkeletonInput, window: int, stride: int, threshold: float,
             batch_size: int = 32) -> Timeline:
    """Classify ``item`` in sliding windows and merge them into segments."""
    if window < 1 or stride < 1:
        raise UserError(f"localise.window ({window}) and localise.stride ({stride}) must be at least 1")
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"localise.threshold must be a probability in [0, 1], got {threshold}")
    length = len(item.sequence)
    starts = window_starts(length, window, stride)
    ends = [min(start + window, length) for start in starts]
    probabilities = model.probabilities([item.window(s, e) for s, e in zip(starts, ends, strict=True)],
                                             batch_size)
    segments = merge_windows(starts, ends, probabilities, model.class_names, threshold, item.fps, length)
    return Timeline(item.name, length, item.fps, window, stride, threshold, list(model.class_names), starts,
                    ends, probabilities, segments)
