"""Output heads on top of the backbone features: action recognition and future pose prediction."""

from __future__ import annotations

import torch
from torch import nn

from asgcn_lightning.errors import UserError
from asgcn_lightning.models import noise
from asgcn_lightning.models.blocks import ASGCBlock, ASGraphConv, as_images


class RecognitionHead(nn.Module):
    """Global average pooling over time and joints, mean over persons, linear classifier."""

    def __init__(self, in_channels: int, num_class: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = dropout
        self.fc = nn.Linear(in_channels, num_class)

    def forward(self, features: torch.Tensor, num_person: int) -> torch.Tensor:
        """Joint-major ``features`` ``(N·M, V, C, T)`` → logits ``(N, num_class)``."""
        pooled = features.mean(dim=(1, 3))
        pooled = pooled.view(-1, num_person, pooled.shape[1]).mean(dim=1)
        return self.fc(noise.dropout(pooled, self.dropout, self.training))


class PredictionHead(nn.Module):
    """Future pose prediction: the next ``predict_frames`` poses of every body from backbone features.

    Six ASGC blocks (``in → hidden``, then ``hidden → hidden`` with strides 2, 2, 2, 2 and
    temporal kernels ``k, k, k, k, 3, 5``) shrink the time axis; the features are then averaged
    over the remaining time, so any window length works (the reference instead reaches length 1
    with an unpadded kernel, which only fits 300-frame windows). A last ASGC on those features plus
    the recent trajectory (the last observed pose and where the joint was in the ``trajectory_frames - 1``
    frames before, relative to it) gives ``predict_frames × C`` displacements per joint from the last
    pose, through BN → ReLU → 1×1 convolution. Time-pooled features alone cannot tell where the motion
    was heading at the end of the window, and two frames give only a noisy velocity: on the synthetic
    set the best linear predictor from the last 8 frames beats repeating the last frame where none
    from the last 2 does.

    Reference shape (backbone 256 channels, hidden 128, C=3, 10 frames, 9 S-link subsets and two
    A-link types, 25 joints): blocks with their edge importances 2,128,726, output ASGC
    ``(128 + 3·K) × 330 + 330 + 5,625``, output layers 990 and extrapolation ``10 × (K - 1)``: 2,179,901
    parameters with ``K = 2`` trajectory frames, 2,185,901 with the default 8. The reference's 2,190,211
    counts two further edge importance masks that its forward pass never uses.
    """

    def __init__(self, in_channels: int, coord_channels: int, num_joints: int, num_subsets: int,
                 predict_frames: int, hidden: int | None = None, num_alink_types: int = 0,
                 lambda_: float = 0.5, temporal_kernel: int = 9, dropout: float = 0.5,
                 edge_importance: bool = True, trajectory_frames: int = 8) -> None:
        super().__init__()
        if trajectory_frames < 2:
            raise UserError(f"trajectory_frames must be at least 2 (a pose and a motion), got {trajectory_frames}")
        self.trajectory_frames = trajectory_frames
        hidden = hidden or max(in_channels // 2, 1)
        self.predict_frames, self.coord_channels = predict_frames, coord_channels
        graph = {"num_joints": num_joints, "num_subsets": num_subsets, "num_alink_types": num_alink_types,
                 "lambda_": lambda_, "edge_importance": edge_importance}
        layers = [(in_channels, 1, temporal_kernel, True)]
        layers += [(hidden, 2, temporal_kernel, True)] * 3 + [(hidden, 2, 3, True), (hidden, 1, 5, False)]
        self.blocks = nn.ModuleList(
            ASGCBlock(width, hidden, stride=stride, temporal_kernel=kernel, dropout=dropout,
                      residual=residual, **graph)
            for width, stride, kernel, residual in layers
        )
        out = predict_frames * coord_channels
        self.out_graph = ASGraphConv(hidden + trajectory_frames * coord_channels, out, **graph)
        self.out_bn = nn.BatchNorm2d(out)
        self.out_conv = nn.Conv2d(out, out, kernel_size=1)
        # a learned linear extrapolation from the trajectory, shared by joints and coordinates; zero = repeat the
        # last pose. The features then only add what a linear filter of the recent motion cannot know.
        self.extrapolation = nn.Parameter(torch.zeros(predict_frames, trajectory_frames - 1))
        nn.init.normal_(self.out_conv.weight, std=1e-3)  # start near the repeat-the-last-pose baseline
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, features: torch.Tensor, recent: torch.Tensor, s_links: torch.Tensor,
                a_links: torch.Tensor | None) -> torch.Tensor:
        """Joint-major ``features`` ``(B, V, C', T')``, ``recent`` ``(B, C, trajectory_frames, V)`` (the last
        observed frames) → future poses ``(B, P, C, V)``."""
        for block in self.blocks:
            features = block(features, s_links, a_links)
        last_pose = recent[:, :, -1]
        offsets = recent[:, :, :-1] - last_pose[:, :, None]
        trajectory = torch.cat([offsets, last_pose[:, :, None]], dim=2)
        trajectory = trajectory.flatten(1, 2).transpose(1, 2)[..., None]
        pooled = torch.cat([features.mean(dim=3, keepdim=True), trajectory], dim=2)
        y = self.out_graph(pooled, s_links, a_links)
        displacement = self.out_conv(torch.relu_(self.out_bn(as_images(y))))
        b, v = y.shape[:2]
        displacement = displacement.view(b, v, self.predict_frames, self.coord_channels).permute(0, 2, 3, 1)
        return last_pose[:, None] + torch.einsum("pk,bckv->bpcv", self.extrapolation, offsets) + displacement
