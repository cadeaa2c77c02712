"""Pictures that inform: A-link strength on a legend's scale, curves in a grid with log axes where values span
orders of magnitude, per-class accuracy as torchmetrics computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.skeleton.layouts import make_layout
from asgcn_lightning.visual.alinks import alink_figure, alink_probabilities, link_scale
from asgcn_lightning.visual.confusion import per_class_accuracy
from asgcn_lightning.visual.curves import curves_figure, grid_shape, spans_orders_of_magnitude

TINY = {"channels": (16, 16), "strides": (1, 1), "max_hop": 2, "dropout": 0.0, "aim_hidden": 16,
        "aim_input_frames": 12, "aim_rollout": 4, "predict_frames": 4}


def test_alink_arrows_are_coloured_and_weighted_by_probability_with_a_legend():
    layout = make_layout("ntu25")
    torch.manual_seed(0)
    network = ASGCN(4, layout, num_person=1, **TINY)
    sample = torch.randn(3, 24, layout.num_joints, 1)
    figure = alink_figure(network, sample, top_k=8)
    *panels, legend = figure.axes
    assert legend.get_ylabel() == "link probability (colour and width)"
    probabilities = alink_probabilities(network, sample)[0]
    for kind, panel in enumerate(panels, start=1):
        arrows = [text.arrow_patch for text in panel.texts if text.arrow_patch is not None]
        assert len(arrows) == 8
        drawn = np.sort(np.where(~np.eye(layout.num_joints, dtype=bool), probabilities[..., kind], 0).ravel())[-8:]
        widths = [arrow.get_linewidth() for arrow in arrows]  # weakest first, the strongest drawn on top
        assert widths == sorted(widths) and widths[-1] > widths[0]
        # the darkest red is the most probable link; colours follow the legend's colour map
        lightness = [sum(to_rgba(arrow.get_edgecolor())[:3]) for arrow in arrows]
        assert lightness == sorted(lightness, reverse=True)
        assert drawn[0] >= legend.get_ylim()[0] - 1e-9 and drawn[-1] <= legend.get_ylim()[1] + 1e-9


def test_link_scale_spreads_the_drawn_range_and_widens_a_flat_one():
    scale = link_scale(np.array([0.30, 0.32, 0.40]))
    assert (scale.vmin, scale.vmax) == (0.30, 0.40) and scale(0.35) == pytest.approx(0.5)
    flat = link_scale(np.array([0.25, 0.25]))
    assert flat.vmax - flat.vmin == pytest.approx(0.01) and flat(0.25) == pytest.approx(0.5)


def test_curves_are_a_grid_with_log_axes_where_values_span_orders_of_magnitude():
    steps = [10.0, 20.0, 30.0, 40.0]
    series = {"train/aim_loss_epoch": list(zip(steps, [9.0e4, 3.0e3, 40.0, 2.0], strict=True)),
              "val/aim_loss": list(zip(steps, [3.0e4, 1.0e3, 20.0, 1.5], strict=True)),
              "train/loss_epoch": list(zip(steps, [1.8, 1.5, 1.2, 1.0], strict=True)),
              "val/acc_top1": list(zip(steps, [0.2, 0.4, 0.5, 0.6], strict=True)),
              "lr-SGD": list(zip(steps, [0.1, 0.1, 0.01, 0.01], strict=True)),
              "train/mpjpe": list(zip(steps, [0.3, 0.2, 0.1, 0.08], strict=True))}
    figure = curves_figure(series)
    shown = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert set(shown) == {"A-link inference", "loss", "accuracy", "learning rate", "other"}
    assert shown["A-link inference"].get_yscale() == "log"
    assert {shown[name].get_yscale() for name in ("loss", "accuracy", "learning rate", "other")} == {"linear"}
    width, height = figure.get_size_inches()
    assert width / height < 2.5  # a grid (2 × 3), not a strip of five panels
    assert grid_shape(5) == (2, 3) and grid_shape(2) == (1, 2) and grid_shape(7) == (3, 3)
    assert spans_orders_of_magnitude([1e-4, 1e-1]) and not spans_orders_of_magnitude([0.0, 1e5])


def test_per_class_accuracy_is_each_class_recall_and_nan_without_samples():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    accuracy = per_class_accuracy(confusion)
    assert accuracy[0] == 0.75 and np.isnan(accuracy[1]) and accuracy[2] == 0.5
    assert np.isnan(per_class_accuracy(np.zeros((2, 2), dtype=int))).all()
