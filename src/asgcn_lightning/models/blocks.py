"""Spatial-temporal graph blocks: actional-structural graph convolution, temporal convolution, residual.

Feature maps are joint-major, ``(B, V, C, T)``: joint, channel, time. In this layout both halves of
the graph convolution are large matrix products with no permuted copy (see :class:`ASGraphConv`),
the temporal convolution is a convolution over a batch of ``B·V`` joint series, and batch norm
sees a ``(B·V, C, 1, T)`` view whose statistics are the reference's. Parameters keep the shapes
of the reference's time-major ``(B, C, T, V)`` network (temporal kernels ``k × 1``), so weights
are interchangeable with it and with :mod:`asgcn_lightning.models.reference_ops`.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from asgcn_lightning.models.noise import dropout_mask


def as_images(x: torch.Tensor) -> torch.Tensor:
    """Joint-major ``(B, V, C, T)`` → the ``(B·V, C, 1, T)`` view that convolutions and batch norm take."""
    b, v, c, t = x.shape
    return x.view(b * v, c, 1, t)


# Below this many frames the per-joint mixing products are too thin for a batched matrix product
# (a matrix-vector product at one frame); a 1×1 convolution, which reorders into its own blocked
# layout, is then several times faster. Both compute the same sums.
MIN_BMM_FRAMES = 16
_buffers = threading.local()


def _wide_buffer(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Reusable memory for the ``K``-times-wide intermediates of :class:`_AggregateMix`.

    Each lives within one forward or backward call, so one buffer per thread and dtype serves
    them all. A fresh CPU tensor of this size would cost about as much again in page faults (the
    kernel zero-fills every page on first touch) as the product that fills it; CUDA's caching
    allocator reuses memory by itself.
    """
    if like.device.type != "cpu":
        return like.new_empty(shape)
    buffers = _buffers.__dict__.setdefault("by_dtype", {})
    buffer = buffers.get(like.dtype)
    if buffer is None or buffer.numel() < math.prod(shape):
        with torch.inference_mode(False):  # an inference tensor could not be written outside inference mode
            buffer = buffers[like.dtype] = torch.empty(math.prod(shape), dtype=like.dtype)
    return buffer[: math.prod(shape)].view(shape)


def _aggregate(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``z[b, (w, k), (c, t)] = Σ_v rows[b, (w, k), v] x[b, v, c, t]``, one ``(W·K, V) @ (V, C·T)`` per sample.

    Seen as ``(B·W, K·C, T)``, ``z`` holds for each receiving joint the ``(k, c)`` rows that the
    channel mixing multiplies.
    """
    b, v, c, t = x.shape
    z = _wide_buffer((b, rows.shape[1], c * t), x)
    return torch.bmm(rows.expand(b, -1, -1), x.view(b, v, c * t), out=z)


def _mix(weight: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Channel mixing ``(C', K·C) @ z[i]`` for every ``i`` of ``z`` ``(N, K·C, T)`` → ``(N, C', T)``."""
    n, _, t = z.shape
    if t >= MIN_BMM_FRAMES:
        return torch.bmm(weight.expand(n, *weight.shape), z)
    return F.conv2d(z[:, :, None], weight[..., None, None]).view(n, -1, t)


def _mix_backward(grad: torch.Tensor, z: torch.Tensor, weight: torch.Tensor,
                  need_z: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Gradients of :func:`_mix` with respect to ``z`` (if ``need_z``, written over ``z``) and ``weight``."""
    n, _, t = z.shape
    if t >= MIN_BMM_FRAMES:
        grad_weight = torch.addbmm(weight.new_zeros(weight.shape), grad, z.transpose(1, 2))
        return (torch.bmm(weight.t().expand(n, -1, -1), grad, out=z) if need_z else None), grad_weight
    grad_z, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad[:, :, None], z[:, :, None], weight[..., None, None], None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1,
        (need_z, True, False))
    return (grad_z.view(z.shape) if need_z else None), grad_weight.view(weight.shape)


class _AggregateMix(torch.autograd.Function):
    """``out[b, w] = weight @ z[b, w] + bias[b, w]`` with ``z[b, w, (k, c), t] = Σ_v rows[b, (w, k), v] x[b, v, c, t]``.

    Two products: the aggregation ``(W·K, V) @ (V, C·T)`` per sample and the channel mixing
    ``(C', K·C) @ (K·C, T)`` per receiving joint; ``z`` comes out of the first already in the
    order the second needs. ``z`` has ``K`` (9 + 2 in the reference) times the channels of the
    input, so instead of keeping it for the backward pass, where it would dominate the training
    memory, the backward pass recomputes it: one aggregation, about a tenth of the block's FLOPs.
    Under autocast both passes compute in the autocast dtype, as the built-in products would.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, rows, weight)
        ctx.bias_shape, ctx.bias_dtype = bias.shape, bias.dtype
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        b, _, _, t = x.shape
        z = _aggregate(x.to(dtype), rows.to(dtype)).view(b * bias.shape[1], -1, t)
        return _mix(weight.to(dtype), z).view(b, bias.shape[1], -1, t).add_(bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, rows, weight = ctx.saved_tensors
        need_x, need_rows, need_weight, need_bias = ctx.needs_input_grad
        b, v, c, t = x.shape
        dtype = grad.dtype  # the forward pass's compute dtype
        series, rows_, weight_ = x.to(dtype), rows.to(dtype), weight.to(dtype)
        z = _aggregate(series, rows_).view(b * grad.shape[1], -1, t)
        grad_z, grad_weight = _mix_backward(grad.reshape(z.shape[0], -1, t), z, weight_, need_x or need_rows)
        grad_x = grad_rows = grad_bias = None
        if grad_z is not None:
            grad_z = grad_z.view(b, rows.shape[1], c * t)
            if need_x:
                # a batched product over the shared rows: matmul would fold the batch into one thin
                # product and copy grad_z transposed to do so, which costs more than the product
                grad_x = torch.bmm(rows_.transpose(1, 2).expand(b, -1, -1), grad_z).view(x.shape).to(x.dtype)
            if need_rows:
                grad_rows = torch.matmul(grad_z, series.view(b, v, c * t).transpose(1, 2))
                grad_rows = grad_rows.sum_to_size(rows.shape).to(rows.dtype)
        if need_bias:
            grad_bias = grad.sum(3, keepdim=True).sum_to_size(ctx.bias_shape).to(ctx.bias_dtype)
        return grad_x, grad_rows, grad_weight.to(weight.dtype) if need_weight else None, grad_bias


class ASGraphConv(nn.Module):
    """ASGC = SGC + λ·AGC: one 1×1 convolution slice of ``out`` channels per S-link subset (``K``)
    and per real A-link type (``K_a``, "no link" excluded).

    SGC aggregates with the fixed subsets times a learnable edge importance mask, AGC with each
    sample's own normalised A-links. Aggregating first and mixing channels second (``W_k (x A_k)``
    instead of the reference's ``(W_k x) A_k``, the same sum) makes the intermediate ``K + K_a``
    times the *input* channels, not the output ones: fewer FLOPs wherever a block widens (6.7×
    fewer for the 3-channel input block), and all subsets and link types go through two matrix
    products with no Python loop and no copy. The convolution bias, aggregated by the links too, is added
    per receiving joint. With ``num_alink_types=0`` the block is ST-GCN's graph convolution.

    ``conv`` holds the weights in the reference's layout (``out · (K + K_a)`` output channels,
    subset-major), so checkpoints and parameter counts are the reference's.
    """

    def __init__(self, in_channels: int, out_channels: int, num_joints: int, num_subsets: int,
                 num_alink_types: int = 0, lambda_: float = 0.5, edge_importance: bool = True) -> None:
        super().__init__()
        self.out_channels, self.num_subsets, self.num_alink_types = out_channels, num_subsets, num_alink_types
        self.lambda_ = lambda_
        self.conv = nn.Conv2d(in_channels, out_channels * (num_subsets + num_alink_types), kernel_size=1)
        self.edge_importance = nn.Parameter(torch.ones(num_subsets, num_joints, num_joints),
                                            requires_grad=edge_importance)

    def links(self, s_links: torch.Tensor, a_links: torch.Tensor | None) -> torch.Tensor:
        """All aggregation matrices ``(B or 1, K + K_a, V, W)``: weighted S-links, then λ·A-links."""
        structural = (s_links * self.edge_importance)[None]
        if not self.num_alink_types:
            return structural
        if a_links is None:
            raise ValueError("this graph convolution has A-link channels but was given no A-links")
        structural = structural.expand(a_links.shape[0], -1, -1, -1)
        return torch.cat([structural, self.lambda_ * a_links.to(structural.dtype)], dim=1)

    def forward(self, x: torch.Tensor, s_links: torch.Tensor,
                a_links: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, V, C, T)``, S-links ``(K, V, V)``, A-links ``(B, K_a, V, V)`` → ``(B, V, C', T)``."""
        links = self.links(s_links, a_links)
        n, k, v, w = links.shape
        rows = links.permute(0, 3, 1, 2).reshape(n, w * k, v)
        weight = self.conv.weight.view(k, self.out_channels, -1).transpose(0, 1).reshape(self.out_channels, -1)
        bias = torch.einsum("kc,nkw->nwc", self.conv.bias.view(k, self.out_channels), links.sum(2))
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            # exporters and compilers trace plain products: the same sums without the custom Function's buffers
            b, _, c, t = x.shape
            z = torch.matmul(rows, x.reshape(b, v, c * t)).view(b * w, k * c, t)
            return torch.matmul(weight, z).view(b, w, self.out_channels, t) + bias[..., None]
        return _AggregateMix.apply(x, rows, weight, bias[..., None])


class TemporalConv(nn.Module):
    """Convolution over time for each joint separately, then batch norm."""

    def __init__(self, channels: int, kernel_size: int = 9, stride: int = 1) -> None:
        super().__init__()
        self.stride, self.padding = stride, (kernel_size - 1) // 2
        self.conv = nn.Conv2d(channels, channels, (kernel_size, 1))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Joint-major ``(B, V, C, T)`` → ``(B, V, C, T / stride)``."""
        weight = self.conv.weight.view(*self.conv.weight.shape[:2], 1, -1)  # time is the images' last axis
        frames, padding = x.shape[-1], self.padding
        if frames <= padding:
            # Taps that can only meet the zero padding are dropped (same output, same positions): on a
            # CPU, oneDNN's bf16 weight gradient of a 1-frame input under a 3-tap kernel comes out
            # non-finite now and then (the prediction head's last blocks), which would poison training.
            weight, padding = weight[..., padding - frames + 1:padding + frames], frames - 1
        y = self.bn(F.conv2d(as_images(x), weight, self.conv.bias, (1, self.stride), (0, padding)))
        return y.view(*x.shape[:3], -1)


class Residual(nn.Module):
    """The shortcut of a block: identity, or a 1×1 convolution strided in time, with batch norm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.project = None
        if in_channels != out_channels or stride != 1:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, (1, stride)),
                                         nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Joint-major ``(B, V, C, T)`` → ``(B, V, C', T / stride)``."""
        if self.project is None:
            return x
        y = self.project(as_images(x))
        return y.view(*x.shape[:2], *y.shape[1::2])


class ASGCBlock(nn.Module):
    """ASGC → BN → ReLU → temporal conv (→ BN) → dropout, plus a residual, then ReLU.

    The ReLUs and the residual sum run in place on tensors no backward pass needs (batch norm
    keeps its input, not its output), and dropout, fused with the residual sum, keeps a one-byte
    mask (``F.dropout`` keeps a float one on a CPU): a training step holds about four activations
    per block instead of eight.
    """

    def __init__(self, in_channels: int, out_channels: int, num_joints: int, num_subsets: int,
                 num_alink_types: int = 0, lambda_: float = 0.5, stride: int = 1, temporal_kernel: int = 9,
                 dropout: float = 0.5, residual: bool = True, edge_importance: bool = True) -> None:
        super().__init__()
        self.graph_conv = ASGraphConv(in_channels, out_channels, num_joints, num_subsets, num_alink_types,
                                      lambda_, edge_importance)
        self.bn = nn.BatchNorm2d(out_channels)
        self.temporal = TemporalConv(out_channels, temporal_kernel, stride)
        self.dropout = dropout
        self.residual = Residual(in_channels, out_channels, stride) if residual else None

    def forward(self, x: torch.Tensor, s_links: torch.Tensor,
                a_links: torch.Tensor | None = None) -> torch.Tensor:
        """Joint-major ``(B, V, C, T)`` → ``(B, V, C', T / stride)``."""
        y = self.graph_conv(x, s_links, a_links)
        y = self.temporal(torch.relu_(self.bn(as_images(y))).view(y.shape))
        shortcut = None if self.residual is None else self.residual(x)
        if self.training and self.dropout > 0:
            keep = dropout_mask(y, self.dropout)  # rand >= p: 3× faster than bernoulli_ on a CPU
            scale = 1.0 / (1.0 - self.dropout) if self.dropout < 1 else 0.0
            y = y.mul_(keep).mul_(scale) if shortcut is None else torch.addcmul(shortcut, y, keep, value=scale)
        elif shortcut is not None:
            y = y.add_(shortcut)
        return torch.relu_(y)
