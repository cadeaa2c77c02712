"""Pictures of the A-links an AS-GCN infers for one sample: the strongest links of each type on the body."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure

from asgcn_lightning.errors import UserError
from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.visual.animation import image_coordinates
from asgcn_lightning.visual.skeleton import draw_pose


def alink_probabilities(network: ASGCN, sample: torch.Tensor | np.ndarray) -> np.ndarray:
    """Link type probabilities ``(M, V, V, types)`` of one sample ``(C, T, V, M)``, in evaluation mode.

    The network's training flag is restored afterwards, so this is safe to call from a callback.
    """
    parameter = next(network.parameters())  # its dtype too: float64 under trainer.precision=64-true
    x = torch.as_tensor(np.asarray(sample), dtype=parameter.dtype)[None]
    device = parameter.device
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            return network.alink_probabilities(x.to(device))[0].cpu().numpy()
    finally:
        network.train(was_training)


def drawn_frame(sample: np.ndarray, person: int, frame: int | None = None) -> int:
    """The frame of a ``(C, T, V, M)`` sample the body is drawn at: ``frame``, else the one nearest the
    middle where ``person`` is present (people enter and leave a video; an empty frame draws nothing).
    """
    if not 0 <= person < sample.shape[3]:
        raise UserError(f"person {person}: this sample has persons 0..{sample.shape[3] - 1}")
    present = np.flatnonzero(np.abs(sample[:, :, :, person]).sum(axis=(0, 2)) > 0)
    if frame is not None:
        if frame not in present:
            raise UserError(f"person {person} is absent from frame {frame} of this sample")
        return frame
    if not len(present):
        raise UserError(f"person {person} is absent from every frame of this sample")
    middle = sample.shape[1] // 2
    return int(present[np.argmin(np.abs(present - middle))])


def alink_figure(network: ASGCN, sample: torch.Tensor | np.ndarray, person: int = 0, top_k: int | None = None,
                 frame: int | None = None, axes: tuple[int, int] = (0, 1), title: str = "") -> Figure:
    """One panel per real A-link type: the body at ``frame`` (default: see :func:`drawn_frame`) with
    arrows from sender to receiver for the ``top_k`` most probable links of that type (default: as
    many as the layout has joints). Colour and width give the link's probability on one scale for
    every panel, spread over the drawn links' range (near-uniform probabilities would otherwise all
    look alike), with a colour bar as the legend. Image layouts (y down) are drawn head up.
    """
    sample = np.asarray(sample, dtype=np.float32)
    if sample.ndim != 4:
        raise UserError(f"an A-link picture needs one sample (C, T, V, M), got shape {sample.shape}")
    frame = drawn_frame(sample, person, frame)
    pose = sample[:, frame, :, person].T
    probabilities = alink_probabilities(network, sample)[person]
    num_joints, num_types = probabilities.shape[0], probabilities.shape[-1]
    top_k = min(top_k or num_joints, num_joints * (num_joints - 1))
    off_diagonal = ~np.eye(num_joints, dtype=bool)

    figure, panels = plt.subplots(1, num_types - 1, figsize=(4 * (num_types - 1) + 1.2, 4.4), squeeze=False)
    strengths = [np.where(off_diagonal, probabilities[..., kind], 0.0) for kind in range(1, num_types)]
    drawn = [np.argsort(strength, axis=None)[::-1][:top_k] for strength in strengths]
    scale = link_scale(np.concatenate([strength.ravel()[links] for strength, links in zip(strengths, drawn,
                                                                                            strict=True)]))
    colours = LinearSegmentedColormap.from_list("alinks", plt.get_cmap("Reds")(np.linspace(0.3, 1.0, 256)))
    shown = pose[np.abs(pose).sum(axis=-1) > 0][:, list(axes)]  # joints the estimator missed are zeros
    low, high = shown.min(0), shown.max(0)
    margin = 0.1 * max(float((high - low).max()), 1e-6)
    for kind, panel, strength, strongest in zip(range(1, num_types), panels[0], strengths, drawn, strict=True):
        draw_pose(panel, pose, network.layout, color="lightgray", axes=axes)
        # weakest first, so the strong links are drawn on top
        for sender, receiver in zip(*np.unravel_index(strongest[::-1], strength.shape), strict=True):
            level = float(scale(strength[sender, receiver]))
            panel.annotate("", xy=pose[receiver, list(axes)], xytext=pose[sender, list(axes)],
                           arrowprops={"arrowstyle": "->", "color": colours(level),
                                       "lw": 0.6 + 2.4 * level, "shrinkA": 2, "shrinkB": 2})
        panel.set_xlim(low[0] - margin, high[0] + margin)
        panel.set_ylim(low[1] - margin, high[1] + margin)
        if image_coordinates(network.layout):
            panel.invert_yaxis()
        panel.set_aspect("equal")
        panel.set_title(f"A-link type {kind}: top {top_k}", fontsize=9)
        panel.axis("off")
    figure.suptitle(f"{title or f'A-links of person {person} ({network.layout.name})'}, frame {frame}")
    figure.tight_layout(rect=(0, 0, 1 - 1.0 / figure.get_figwidth(), 1))
    legend = figure.add_axes((1 - 0.85 / figure.get_figwidth(), 0.15, 0.18 / figure.get_figwidth(), 0.65))
    bar = figure.colorbar(ScalarMappable(norm=scale, cmap=colours), cax=legend)
    bar.set_label("link probability (colour and width)")
    bar.ax.set_yticks(np.linspace(scale.vmin, scale.vmax, 5))
    bar.ax.set_ylim(scale.vmin, scale.vmax)
    return figure


def link_scale(drawn: np.ndarray) -> Normalize:
    """Probabilities → 0..1 over the range of the drawn links (a range of at least 0.01, within 0..1)."""
    low, high = float(drawn.min()), float(drawn.max())
    if high - low < 0.01:
        middle = min(max((low + high) / 2, 0.005), 0.995)
        low, high = middle - 0.005, middle + 0.005
    return Normalize(vmin=low, vmax=high, clip=True)


def save_alink_figure(network: ASGCN, sample: torch.Tensor | np.ndarray, path: str | Path, person: int = 0,
                      top_k: int | None = None, frame: int | None = None, axes: tuple[int, int] = (0, 1),
                      title: str = "") -> Path:
    """Write :func:`alink_figure` as a PNG and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = alink_figure(network, sample, person, top_k, frame, axes, title)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
