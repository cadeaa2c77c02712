"""Spatial-temporal graph blocks: actional-structural graph convolution, temporal convolution, residual."""

from __future__ import annotations

import torch
from torch import nn


class ASGraphConv(nn.Module):
    """ASGC = SGC + λ·AGC from a single 1×1 convolution with ``out · (K + K_a)`` channels.

    SGC: one slice of ``out`` channels per S-link subset (``K``), aggregated with the fixed
    subsets times a learnable edge importance mask. AGC: one slice per real A-link type
    (``K_a``, "no link" excluded), aggregated with each sample's own normalised A-links. Both
    aggregations are single einsums, with no Python loop over subsets, types or persons; with
    ``num_alink_types=0`` the block is ST-GCN's graph convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, num_joints: int, num_subsets: int,
                 num_alink_types: int = 0, lambda_: float = 0.5, edge_importance: bool = True) -> None:
        super().__init__()
        self.out_channels, self.num_subsets, self.num_alink_types = out_channels, num_subsets, num_alink_types
        self.lambda_ = lambda_
        self.conv = nn.Conv2d(in_channels, out_channels * (num_subsets + num_alink_types), kernel_size=1)
        self.edge_importance = nn.Parameter(torch.ones(num_subsets, num_joints, num_joints),
                                            requires_grad=edge_importance)

    def forward(self, x: torch.Tensor, s_links: torch.Tensor,
                a_links: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C, T, V)``, S-links ``(K, V, V)``, A-links ``(B, K_a, V, V)`` → ``(B, C', T, V)``."""
        b, _, t, v = x.shape
        k = self.num_subsets
        y = self.conv(x).view(b, k + self.num_alink_types, self.out_channels, t, v)
        out = torch.einsum("bkctv,kvw->bctw", y[:, :k], s_links * self.edge_importance)
        if self.num_alink_types:
            if a_links is None:
                raise ValueError("this graph convolution has A-link channels but was given no A-links")
            out = out + self.lambda_ * torch.einsum("bkctv,bkvw->bctw", y[:, k:], a_links)
        return out


class TemporalConv(nn.Module):
    """Convolution over time for each joint separately, then batch norm."""

    def __init__(self, channels: int, kernel_size: int = 9, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, (kernel_size, 1), (stride, 1), ((kernel_size - 1) // 2, 0))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class Residual(nn.Module):
    """The shortcut of a block: identity, or a strided 1×1 convolution with batch norm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.project = None
        if in_channels != out_channels or stride != 1:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, (stride, 1)),
                                         nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.project is None else self.project(x)


class ASGCBlock(nn.Module):
    """ASGC → BN → ReLU → temporal conv (→ BN) → dropout, plus a residual, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_joints: int, num_subsets: int,
                 num_alink_types: int = 0, lambda_: float = 0.5, stride: int = 1, temporal_kernel: int = 9,
                 dropout: float = 0.5, residual: bool = True, edge_importance: bool = True) -> None:
        super().__init__()
        self.graph_conv = ASGraphConv(in_channels, out_channels, num_joints, num_subsets, num_alink_types,
                                      lambda_, edge_importance)
        self.bn = nn.BatchNorm2d(out_channels)
        self.temporal = TemporalConv(out_channels, temporal_kernel, stride)
        self.dropout = nn.Dropout(dropout)
        self.residual = Residual(in_channels, out_channels, stride) if residual else None

    def forward(self, x: torch.Tensor, s_links: torch.Tensor,
                a_links: torch.Tensor | None = None) -> torch.Tensor:
        y = torch.relu(self.bn(self.graph_conv(x, s_links, a_links)))
        y = self.dropout(self.temporal(y))
        if self.residual is not None:
            y = y + self.residual(x)
        return torch.relu(y)
