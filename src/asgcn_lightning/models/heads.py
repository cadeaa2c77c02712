"""Output heads on top of the backbone features: action recognition and future pose prediction."""

from __future__ import annotations

import torch
from torch import nn

from asgcn_lightning.models.blocks import ASGCBlock, ASGraphConv, as_images


class RecognitionHead(nn.Module):
    """Global average pooling over time and joints, mean over persons, linear classifier."""

    def __init__(self, in_channels: int, num_class: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_class)

    def forward(self, features: torch.Tensor, num_person: int) -> torch.Tensor:
        """Joint-major ``features`` ``(N·M, V, C, T)`` → logits ``(N, num_class)``."""
        pooled = features.mean(dim=(1, 3))
        pooled = pooled.view(-1, num_person, pooled.shape[1]).mean(dim=1)
        return self.fc(self.dropout(pooled))


class PredictionHead(nn.Module):
    """Future pose prediction: the next ``predict_frames`` poses of every body from backbone features.

    Six ASGC blocks (``in → hidden``, then ``hidden → hidden`` with strides 2, 2, 2, 2 and
    temporal kernels ``k, k, k, k, 3, 5``) shrink the time axis; the features are then averaged
    over the remaining time, so any window length works (the reference instead reaches length 1
    with an unpadded kernel, which only fits 300-frame windows). A last ASGC on those features plus
    the last observed pose gives ``predict_frames × C`` displacements per joint from that pose,
    through BN → ReLU → 1×1 convolution.

    Reference shape (backbone 256 channels, hidden 128, C=3, 10 frames, 9 S-link subsets and two
    A-link types, 25 joints): blocks 2,094,976, their edge importances 6 × 5,625, output ASGC
    43,560 + 5,625 and output layers 990: 2,178,901 parameters. The reference's 2,190,211 counts
    two further edge importance masks that its forward pass never uses.
    """

    def __init__(self, in_channels: int, coord_channels: int, num_joints: int, num_subsets: int,
                 predict_frames: int, hidden: int | None = None, num_alink_types: int = 0,
                 lambda_: float = 0.5, temporal_kernel: int = 9, dropout: float = 0.5,
                 edge_importance: bool = True) -> None:
        super().__init__()
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
        # the output layer also sees the last pose and the last velocity: time-pooled features alone
        # cannot tell where the motion was heading at the end of the window
        self.out_graph = ASGraphConv(hidden + 2 * coord_channels, out, **graph)
        self.out_bn = nn.BatchNorm2d(out)
        self.out_conv = nn.Conv2d(out, out, kernel_size=1)
        nn.init.normal_(self.out_conv.weight, std=1e-3)  # start near the repeat-the-last-pose baseline
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, features: torch.Tensor, last_poses: torch.Tensor, s_links: torch.Tensor,
                a_links: torch.Tensor | None) -> torch.Tensor:
        """Joint-major ``features`` ``(B, V, C', T')``, ``last_poses`` ``(B, C, 2, V)`` (the two last observed
        frames) → future poses ``(B, P, C, V)``."""
        for block in self.blocks:
            features = block(features, s_links, a_links)
        last_pose = last_poses[:, :, -1]
        velocity = last_poses[:, :, -1] - last_poses[:, :, 0]
        recent = torch.cat([last_pose, velocity], dim=1).transpose(1, 2)[..., None]
        pooled = torch.cat([features.mean(dim=3, keepdim=True), recent], dim=2)
        y = self.out_graph(pooled, s_links, a_links)
        displacement = self.out_conv(torch.relu_(self.out_bn(as_images(y))))
        b, v = y.shape[:2]
        displacement = displacement.view(b, v, self.predict_frames, self.coord_channels).permute(0, 2, 3, 1)
        return last_pose[:, None] + displacement
