"""Which joints and frames a trained network looks at, per class: gradient saliency on the input.

For a sample of class ``c`` the importance of joint ``v`` at frame ``t`` is the gradient of the
class-``c`` logit with respect to that joint's coordinates, each scaled by how much the coordinate
varies over the samples, ``‖σ[:, v] ⊙ ∂z_c / ∂x[:, t, v, m]‖`` summed over persons: how strongly
a typical move of that joint then would change the network's vote for the class. The scaling
matters: a coordinate the preprocessing pins (the centre joint is always 0) has a tiny variance,
which the network's input batch norm turns into a huge but meaningless raw gradient. Only the
network contract (``forward``) is used,
so it works for every model and layout. Per class the maps of its samples are averaged and
scaled to a maximum of 1; the per-joint score (the mean over frames) is drawn on a neutral
skeleton, the median pose of the samples as the network sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from asgcn_lightning.skeleton.layouts import Layout
from asgcn_lightning.visual.animation import image_coordinates
from asgcn_lightning.visual.skeleton import draw_pose


def saliency(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Per-sample importance ``(N, T, V)`` of inputs ``(N, C, T, V, M)`` for each sample's class in ``labels``.

    The network runs in evaluation mode (deterministic A-links, batch-norm statistics of training)
    and its training flag is restored afterwards.
    """
    present = inputs.abs().sum(dim=1, keepdim=True) > 0  # (N, 1, T, V, M): absent people do not count
    count = present.sum(dim=(0, 2, 4)).clamp(min=1)
    mean = (inputs * present).sum(dim=(0, 2, 4)) / count
    spread = (((inputs - mean[None, :, None, :, None]) * present).square().sum(dim=(0, 2, 4)) / count).sqrt()
    was_training = network.training
    network.eval()
    maps = []
    try:
        for first in range(0, len(inputs), batch_size):
            x = inputs[first:first + batch_size].detach().clone().requires_grad_(True)
            y = labels[first:first + batch_size].long()
            with torch.enable_grad():
                network(x).gather(1, y[:, None]).sum().backward()
            scaled = x.grad * spread[None, :, None, :, None]
            maps.append(scaled.norm(dim=1).sum(dim=-1).numpy())  # channels → norm, persons → sum
            network.zero_grad(set_to_none=True)
    finally:
        network.train(was_training)
    return np.concatenate(maps)


def class_importance(maps: np.ndarray, labels: np.ndarray, num_class: int) -> np.ndarray:
    """Mean map ``(classes, T, V)`` of each class's samples, scaled to a maximum of 1 (zeros without samples)."""
    out = np.zeros((num_class, *maps.shape[1:]), dtype=np.float32)
    for c in range(num_class):
        members = maps[labels == c]
        if len(members):
            mean = members.mean(axis=0)
            out[c] = mean / max(float(mean.max()), 1e-12)
    return out


def neutral_pose(inputs: torch.Tensor | np.ndarray) -> np.ndarray:
    """The median pose ``(V, C)`` of the first person over every sample and frame where a joint is present."""
    first = np.asarray(inputs)[:, :, :, :, 0].transpose(0, 2, 3, 1)  # (N, T, V, C)
    poses = first.reshape(-1, *first.shape[2:])
    present = np.abs(poses).sum(axis=-1) > 0
    pose = np.zeros(poses.shape[1:], dtype=np.float32)
    for joint in range(poses.shape[1]):
        if present[:, joint].any():
            pose[joint] = np.median(poses[present[:, joint], joint], axis=0)
    return pose


def importance_figure(importance: np.ndarray, pose: np.ndarray, layout: Layout, class_names: Sequence[str],
                      axes: tuple[int, int] = (0, 1), columns: int = 5) -> Figure:
    """Per class: the neutral skeleton with joints coloured and sized by importance, and a joints × frames map."""
    num_class = len(class_names)
    columns = min(columns, num_class)
    rows = -(-num_class // columns)
    figure = plt.figure(figsize=(2.6 * columns, 5.2 * rows))
    grid = figure.add_gridspec(2 * rows, columns, height_ratios=[1.4, 1] * rows)
    colours = plt.get_cmap("inferno")
    flip = image_coordinates(layout)
    points = pose[:, list(axes)]
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.12 * max(float((high - low).max()), 1e-6)
    for c, name in enumerate(class_names):
        row, column = divmod(c, columns)
        body = figure.add_subplot(grid[2 * row, column])
        per_joint = importance[c].mean(axis=0)
        per_joint = per_joint / max(float(per_joint.max()), 1e-12)
        draw_pose(body, pose, layout, color="lightgray", axes=axes)
        body.scatter(points[:, 0], points[:, 1], s=20 + 160 * per_joint, c=per_joint, cmap=colours, vmin=0, vmax=1,
                     zorder=4, edgecolors="black", linewidths=0.4)
        body.set_xlim(low[0] - margin, high[0] + margin)
        body.set_ylim(low[1] - margin, high[1] + margin)
        if flip:
            body.invert_yaxis()
        body.set_aspect("equal")
        body.axis("off")
        body.set_title(name, fontsize=9)
        heat = figure.add_subplot(grid[2 * row + 1, column])
        heat.imshow(importance[c].T, aspect="auto", cmap=colours, vmin=0, vmax=1, origin="lower")
        heat.set_xlabel("frame", fontsize=7)
        heat.set_ylabel("joint", fontsize=7)
        heat.tick_params(labelsize=6)
    figure.suptitle("joint importance per class (input gradient × coordinate spread)")
    figure.tight_layout()
    return figure


def save_importance(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, layout: Layout,
                    class_names: Sequence[str], path: str | Path) -> Path:
    """Compute the per-class importance of ``inputs`` (their true ``labels``) and write the figure as PNG."""
    maps = saliency(network, inputs, labels)
    importance = class_importance(maps, np.asarray(labels), len(class_names))
    figure = importance_figure(importance, neutral_pose(inputs), layout, class_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
