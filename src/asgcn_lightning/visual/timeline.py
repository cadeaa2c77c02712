"""A timeline strip of localised actions: the segments on top, each window's class probabilities below."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from asgcn_lightning.inference.localise import Timeline

MAX_CURVES = 6  # more lines than this are unreadable; the classes that ever lead are drawn first


def class_colour(index: int) -> tuple[float, float, float, float]:
    """A stable colour per class index, the same in every picture of a run."""
    return plt.get_cmap("tab10")(index % 10)


def timeline_figure(timeline: Timeline, title: str = "") -> Figure:
    """Segments as coloured bars over time (seconds), and the probability of the leading classes."""
    fps = timeline.fps or 1.0
    figure, (strip, curves) = plt.subplots(2, 1, figsize=(12, 3.6), sharex=True,
                                           gridspec_kw={"height_ratios": [1, 2]})
    end = timeline.num_frames / fps
    strip.broken_barh([(0, end)], (0, 1), facecolors="whitesmoke")
    for segment in timeline.segments:
        width = segment.end_s - segment.start_s
        strip.broken_barh([(segment.start_s, width)], (0, 1), facecolors=class_colour(segment.index),
                          edgecolor="white")
        if width > 0.06 * end:
            strip.text(segment.start_s + width / 2, 0.5, f"{segment.label}\n{segment.confidence:.2f}",
                       ha="center", va="center", fontsize=8)
    strip.set_yticks([])
    strip.set_ylim(0, 1)
    strip.set_title(title or f"{timeline.name}: {len(timeline.segments)} segments "
                             f"(window {timeline.window}, stride {timeline.stride} frames)", fontsize=10)

    centres = (np.asarray(timeline.starts) + np.asarray(timeline.ends)) / 2 / fps
    probabilities = timeline.probabilities
    leaders = list(dict.fromkeys(int(i) for i in probabilities.argmax(axis=1)))
    others = [int(i) for i in np.argsort(-probabilities.max(axis=0)) if int(i) not in leaders]
    for index in (leaders + others)[:MAX_CURVES]:
        curves.plot(centres, probabilities[:, index], marker=".", color=class_colour(index),
                    label=timeline.class_names[index])
    curves.axhline(timeline.threshold, color="gray", linestyle="--", linewidth=1, label="threshold")
    curves.set_ylim(0, 1.02)
    curves.set_xlim(0, end)
    curves.set_ylabel("probability")
    curves.set_xlabel("seconds" if timeline.fps else "frames")
    curves.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return figure


def save_timeline(timeline: Timeline, path: str | Path, title: str = "") -> Path:
    """Write :func:`timeline_figure` as a PNG and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = timeline_figure(timeline, title)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
