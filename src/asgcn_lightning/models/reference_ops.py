"""Plain formulations of the optimised model operations, for the equivalence tests and the benchmark.

Each function takes a module of :mod:`asgcn_lightning.models` and recomputes what it does the way
the reference AS-GCN code writes it: time-major ``(B, C, T, V)`` feature maps, a 1×1 convolution
to ``out · K`` channels first and one aggregation einsum per S-link subset stack and A-link stack,
and link MLPs on the explicit ``[h_i, h_j, e_ij]`` concatenation of every joint pair. Same weights
must give the same outputs and gradients within float tolerance; nothing here is fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asgcn_lightning.models.aim import LinkEncoder, MotionDecoder, PairMLP
from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.models.blocks import ASGCBlock, ASGraphConv
from asgcn_lightning.models.heads import PredictionHead


def graph_conv(module: ASGraphConv, x: torch.Tensor, s_links: torch.Tensor,
               a_links: torch.Tensor | None) -> torch.Tensor:
    """ASGC on time-major ``x`` ``(B, C, T, V)``: convolve to ``out · (K + K_a)`` channels, then aggregate."""
    b, _, t, v = x.shape
    k = module.num_subsets
    y = F.conv2d(x, module.conv.weight, module.conv.bias).view(b, -1, module.out_channels, t, v)
    out = torch.einsum("bkctv,kvw->bctw", y[:, :k], s_links * module.edge_importance)
    if module.num_alink_types:
        out = out + module.lambda_ * torch.einsum("bkctv,bkvw->bctw", y[:, k:], a_links)
    return out


def block(module: ASGCBlock, x: torch.Tensor, s_links: torch.Tensor, a_links: torch.Tensor | None) -> torch.Tensor:
    """An ASGC block on time-major ``x``, without dropout (compare with ``dropout=0`` or in eval mode)."""
    y = torch.relu(module.bn(graph_conv(module.graph_conv, x, s_links, a_links)))
    temporal = module.temporal
    kernel, stride = temporal.conv.weight.shape[2], temporal.stride
    y = temporal.bn(F.conv2d(y, temporal.conv.weight, temporal.conv.bias, (stride, 1), ((kernel - 1) // 2, 0)))
    if module.residual is not None:
        if module.residual.project is None:
            y = y + x
        else:
            conv, bn = module.residual.project
            y = y + bn(F.conv2d(x, conv.weight, conv.bias, (stride, 1)))
    return torch.relu(y)


def features(network: ASGCN, bodies: torch.Tensor, a_links: torch.Tensor | None) -> torch.Tensor:
    """Time-major backbone features ``(N·M, C', T', V)`` of bodies ``(N·M, C, T, V)``."""
    b, c, t, v = bodies.shape
    x = network.data_bn(bodies.permute(0, 3, 1, 2).reshape(b, v * c, t)).view(b, v, c, t).permute(0, 2, 3, 1)
    for module in network.blocks:
        x = block(module, x, network.s_links, a_links)
    return x


def logits(network: ASGCN, x: torch.Tensor) -> torch.Tensor:
    """Class logits of inputs ``(N, C, T, V, M)``: mean over time, joints and persons, then the classifier."""
    bodies = network.bodies(x)
    pooled = features(network, bodies, network.alink_weights(bodies)).mean(dim=(2, 3))
    return network.head.fc(pooled.view(x.shape[0], x.shape[-1], -1).mean(dim=1))


def prediction(head: PredictionHead, features: torch.Tensor, recent: torch.Tensor, s_links: torch.Tensor,
               a_links: torch.Tensor | None) -> torch.Tensor:
    """Future poses ``(B, P, C, V)`` from time-major features and the last observed poses ``(B, C, K, V)``."""
    for module in head.blocks:
        features = block(module, features, s_links, a_links)
    last_pose = recent[:, :, -1]
    offsets = [recent[:, :, k] - last_pose for k in range(recent.shape[2] - 1)]
    trajectory = torch.stack([*offsets, last_pose], dim=2).flatten(1, 2)[:, :, None]  # channel c·K + frame k
    pooled = torch.cat([features.mean(dim=2, keepdim=True), trajectory], dim=1)
    y = graph_conv(head.out_graph, pooled, s_links, a_links)
    displacement = head.out_conv(torch.relu(head.out_bn(y)))
    b, v = displacement.shape[0], displacement.shape[3]
    extrapolated = torch.stack([sum(weight * offset for weight, offset in zip(weights, offsets, strict=True))
                                for weights in head.extrapolation], dim=1)
    return last_pose[:, None] + extrapolated + displacement.view(b, head.predict_frames, head.coord_channels, v)


def pair_mlp(module: PairMLP, nodes: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
    """The link MLP on the explicit concatenation ``[h_i, h_j, e_ij]`` of every pair ``(sender i, receiver j)``."""
    b, v, f = nodes.shape
    parts = [nodes[:, :, None].expand(b, v, v, f), nodes[:, None, :].expand(b, v, v, f)]
    weights = [module.sender.weight, module.receiver.weight]
    if module.link is not None:
        parts.append(links)
        weights.append(module.link.weight)
    y = F.linear(torch.cat(parts, dim=-1), torch.cat(weights, dim=1), module.sender.bias)
    y = F.elu(module.fc2(F.elu(y)))
    return module.bn(y.reshape(-1, y.shape[-1])).view_as(y)


def link_encoder(module: LinkEncoder, trajectories: torch.Tensor) -> torch.Tensor:
    """A-link type logits ``(B, V, V, types)``; joints average the links from every *other* joint, one by one."""
    links = pair_mlp(module.link1, module.node1(trajectories))
    num = links.shape[1]
    incoming = torch.stack([sum(links[:, i, j] for i in range(num) if i != j) / max(num - 1, 1)
                            for j in range(num)], dim=1)
    return module.types(pair_mlp(module.link2, module.node2(incoming), links))


def motion_decoder(module: MotionDecoder, poses: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
    """The decoder's next-pose predictions, messages written per pair and link type as einsums."""
    b, frames, v, _ = poses.shape
    k, h = module.num_link_types, module.hidden
    weights = links / max(v - 1, 1)
    state = poses.new_zeros(b * v, h)
    current, predictions = poses[:, 0], []
    for step in range(frames - 1):
        if step % module.rollout == 0:
            current = poses[:, step]
        joints = state.view(b, v, h)
        pre = (module.sender(joints)[:, :, None] + module.receiver(joints)[:, None, :]).view(b, v, v, k, h)
        messages = torch.einsum("bijkh,kgh->bijkg", torch.tanh(pre), module.message_weight)
        messages = torch.tanh(messages + module.message_bias)
        incoming = torch.einsum("bijk,bijkg->bjg", weights, messages)
        state = module.cell(torch.cat([current, incoming], dim=-1).reshape(b * v, -1), state)
        current = current + module.out(state).view(b, v, -1)
        predictions.append(current)
    return torch.stack(predictions, dim=1)


def original_training_loss(network: ASGCN, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The original code's main-stage training loss, written as it computes it: the benchmark's baseline.

    One backbone pass over the observed frames (all but the last ``predict_frames``) feeds both heads;
    the frozen AIM runs its encoder on explicit joint pairs and its recurrent decoder, as the original's
    recognition stage does, though only the links are used; graph convolutions are convolve-then-aggregate
    on time-major maps. Same weights as ``network``; the A-links are the expected ones, normalised as
    ``network`` does.
    """
    aim, head = network.aim, network.predictor
    observed = x.shape[2] - network.predict_frames
    bodies = network.bodies(x[:, :, :observed])
    with torch.no_grad():
        poses = aim.resample(bodies)
        b, frames, v, c = poses.shape
        link_logits = link_encoder(aim.encoder, poses.permute(0, 2, 1, 3).reshape(b, v, frames * c))
        probabilities = aim.probabilities(link_logits)
        motion_decoder(aim.decoder, poses, probabilities[..., 1:])
        links = probabilities[..., 1:].permute(0, 3, 1, 2)
        a_links = links / links.sum(dim=2, keepdim=True).clamp(min=1.0)
    maps = features(network, bodies, a_links)
    pooled = maps.mean(dim=(2, 3)).view(x.shape[0], x.shape[-1], -1).mean(dim=1)
    predicted = prediction(head, maps, network.recent_frames(bodies), network.s_links, a_links)
    target = network.bodies(x[:, :, observed:]).transpose(1, 2)
    squared = (predicted - target).square().sum(dim=2)
    return F.cross_entropy(network.head.fc(pooled), labels) + network.prediction_weight * squared.mean()
