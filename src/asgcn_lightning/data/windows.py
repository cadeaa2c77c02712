"""Cutting recordings into windows: ``window`` frames every ``stride`` frames, no tail lost.

Preparers cut long recordings into samples with it, the video tools cut clips, and temporal
localisation slides the model along a recording; all three follow the same convention.
"""

from __future__ import annotations

import math

from asgcn_lightning.errors import UserError


def window_starts(length: int, window: int | None, stride: int | None) -> list[int]:
    """First frames of the windows cut from a sequence of ``length`` frames.

    ``window=None`` (or a sequence no longer than the window) gives the whole sequence as one
    sample. Otherwise windows start every ``stride`` frames (default: ``window``, no overlap), plus
    one window flush with the end when the stride does not land there, so no tail is lost.
    """
    if window is None or length <= window:
        return [0]
    if window < 1 or (stride is not None and stride < 1):
        raise UserError(f"window ({window}) and stride ({stride}) must be at least 1")
    stride = stride or window
    count = 1 + math.ceil((length - window) / stride)
    return [min(i * stride, length - window) for i in range(count)]


def window_ranges(length: int, window: int | None, stride: int | None) -> list[tuple[int, int]]:
    """``[start, end)`` of every window (see :func:`window_starts`)."""
    return [(start, length if window is None else min(start + window, length))
            for start in window_starts(length, window, stride)]


def window_name(name: str, start: int, count: int) -> str:
    """A window's sample name: the recording's own when it is the only window, else ``<name>@<start>``."""
    return name if count == 1 else f"{name}@{start:06d}"
