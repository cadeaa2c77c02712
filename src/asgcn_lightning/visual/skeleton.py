"""Drawing skeletons of any layout: single poses and frame strips of a sequence."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from asgcn_lightning.skeleton.layouts import Layout


def draw_pose(ax: Axes, pose: np.ndarray, layout: Layout, color: str = "tab:blue",
              axes: tuple[int, int] = (0, 1)) -> None:
    """Draw one body ``(V, C)`` projected on two coordinate ``axes``; all-zero joints are skipped."""
    present = np.abs(pose).sum(axis=-1) > 0
    u, v = pose[:, axes[0]], pose[:, axes[1]]
    for a, b in layout.edges:
        if present[a] and present[b]:
            ax.plot([u[a], u[b]], [v[a], v[b]], color=color, linewidth=2)
    ax.scatter(u[present], v[present], s=10, color="black", zorder=3)


def sequence_strip(sequence: np.ndarray, layout: Layout, num_frames: int = 6, title: str = "",
                   axes: tuple[int, int] = (0, 1)) -> Figure:
    """A row of evenly spaced frames of a ``(T, M, V, C)`` sequence, every person in its own colour."""
    length = sequence.shape[0]
    frames = np.linspace(0, length - 1, num_frames).round().astype(int)
    figure, panels = plt.subplots(1, num_frames, figsize=(2 * num_frames, 2.6), squeeze=False)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    valid = sequence[np.abs(sequence).sum(-1) > 0]
    low, high = (valid.min(0), valid.max(0)) if len(valid) else (np.zeros(3), np.ones(3))
    for panel, frame in zip(panels[0], frames, strict=True):
        for person in range(sequence.shape[1]):
            if np.abs(sequence[frame, person]).sum() > 0:
                draw_pose(panel, sequence[frame, person], layout, colours[person % len(colours)], axes)
        panel.set_xlim(low[axes[0]] - 0.1, high[axes[0]] + 0.1)
        panel.set_ylim(low[axes[1]] - 0.1, high[axes[1]] + 0.1)
        panel.set_aspect("equal")
        panel.set_title(f"t={frame}", fontsize=8)
        panel.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
