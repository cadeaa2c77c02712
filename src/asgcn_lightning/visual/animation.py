"""Animated GIFs of skeleton sequences, for any joint layout (matplotlib draws, Pillow writes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.collections import LineCollection

from asgcn_lightning.skeleton.layouts import Layout

# 2D layouts of pose estimators: their y axis points down the image, so pictures flip it
IMAGE_LAYOUTS = frozenset({"openpose25", "coco18", "coco17"})
PERSON_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def image_coordinates(layout: Layout) -> bool:
    """Whether a layout's coordinates are image pixels (y down) rather than a y-up 3D frame."""
    return layout.name in IMAGE_LAYOUTS


def _bones(pose: np.ndarray, layout: Layout, axes: tuple[int, int]) -> list[np.ndarray]:
    present = np.abs(pose).sum(axis=-1) > 0
    return [pose[[a, b]][:, list(axes)] for a, b in layout.edges if present[a] and present[b]]


def animate_sequence(sequence: np.ndarray, layout: Layout, path: str | Path, *, fps: float = 15.0,
                     max_frames: int = 120, axes: tuple[int, int] = (0, 1), title: str = "",
                     flip_y: bool | None = None) -> Path:
    """Write a ``(T, M, V, C)`` sequence as an animated GIF; every person in its own colour.

    Long sequences are subsampled evenly to ``max_frames`` so the file stays small; the limits
    are those of the whole sequence, so the body moves in a fixed frame. ``flip_y`` defaults to
    :func:`image_coordinates` of the layout.
    """
    sequence = np.asarray(sequence, dtype=np.float32)
    if sequence.ndim != 4 or sequence.shape[2] != layout.num_joints:
        raise ValueError(f"expected a sequence (T, M, {layout.num_joints}, C), got shape {sequence.shape}")
    frames = np.unique(np.linspace(0, len(sequence) - 1, min(max_frames, len(sequence))).round().astype(int))
    coords = sequence[..., : max(axes) + 1]
    present = np.abs(sequence).sum(axis=-1) > 0
    points = coords[present][:, list(axes)] if present.any() else np.zeros((1, 2))
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.08 * max(float((high - low).max()), 1e-6)

    figure, ax = plt.subplots(figsize=(4, 4.4))
    ax.set_xlim(low[0] - margin, high[0] + margin)
    ax.set_ylim(low[1] - margin, high[1] + margin)
    if image_coordinates(layout) if flip_y is None else flip_y:
        ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.axis("off")
    collections = [ax.add_collection(LineCollection([], colors=PERSON_COLOURS[m % len(PERSON_COLOURS)],
                                                    linewidths=2)) for m in range(sequence.shape[1])]
    joints = ax.scatter([], [], s=8, color="black", zorder=3)
    caption = ax.set_title("", fontsize=9)

    def draw(frame: int) -> list[object]:
        visible = []
        for person, collection in enumerate(collections):
            collection.set_segments(_bones(sequence[frame, person], layout, axes))
            visible.append(coords[frame, person][present[frame, person]][:, list(axes)])
        stacked = np.concatenate(visible) if visible else np.zeros((0, 2))
        joints.set_offsets(stacked if len(stacked) else np.zeros((0, 2)))
        caption.set_text(f"{title}  frame {frame + 1}/{len(sequence)}".strip())
        return [*collections, joints, caption]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    animation = FuncAnimation(figure, draw, frames=frames, blit=False)
    animation.save(path, writer=PillowWriter(fps=fps), dpi=80)
    plt.close(figure)
    return path
