"""Temporal localisation as ``predict.py`` shows it: the segments as a table and the timeline as a picture.

The sliding-window computation itself is :mod:`asgcn_lightning.inference.localise`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from asgcn_lightning.inference.inputs import SkeletonInput
from asgcn_lightning.inference.localise import Timeline, localise
from asgcn_lightning.inference.model import LoadedModel
from asgcn_lightning.visual.timeline import save_timeline


@dataclass
class LocaliseSettings:
    """``localise.*`` of predict.yaml: sliding-window temporal localisation of long inputs."""

    enabled: bool = False
    window: int = 64        # frames per window (of the input, before the evaluation transforms)
    stride: int = 16        # frames between window starts
    threshold: float = 0.5  # windows less sure than this end a segment and belong to none
    batch_size: int = 32


def print_timeline(timeline: Timeline, console: Console) -> None:
    table = Table(title=f"{timeline.name}: {len(timeline.starts)} windows of {timeline.window} frames, "
                        f"stride {timeline.stride}")
    for column in ("action", "frames", "seconds", "confidence"):
        table.add_column(column, justify="left" if column == "action" else "right")
    for s in timeline.segments:
        table.add_row(s.label, f"{s.start_frame}–{s.end_frame}", f"{s.start_s:.2f}–{s.end_s:.2f}",
                      f"{s.confidence:.3f}")
    console.print(table)


def localise_input(model: LoadedModel, item: SkeletonInput, settings: LocaliseSettings, output: Path,
                   console: Console) -> dict[str, Any]:
    """Localise, print the segments, draw the timeline next to ``output``; returns the timeline as JSON data."""
    timeline = localise(model, item, settings.window, settings.stride, settings.threshold, settings.batch_size)
    print_timeline(timeline, console)
    picture = save_timeline(timeline, output.with_name(f"{output.stem}_{_safe(item.name)}_timeline.png"))
    console.print(f"timeline → {picture}", soft_wrap=True)
    return {**timeline.to_dict(), "picture": str(picture)}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
