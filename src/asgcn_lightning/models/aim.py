"""The A-link inference module (AIM): actional links between joints, inferred from their motion.

An encoder passes messages joint → link → joint → link (two rounds) over every directed joint pair
and gives each pair a categorical distribution over A-link types, type 0 meaning "no link". In
training the links are sampled with a straight-through Gumbel-softmax; a recurrent decoder then
has to predict the next pose from the sampled links, and the AIM objective is the decoder's
Gaussian negative log-likelihood plus the KL divergence to a sparse prior over link types.

All pair computations run on a ``V × V`` grid by broadcasting (``[b, i, j]`` is the link from
sender ``i`` to receiver ``j``, the convention of the S-links). A first linear layer on the
concatenation ``[h_i, h_j, e_ij]`` is computed as ``W_s h_i + W_r h_j + W_e e_ij``, so the ``V²``
concatenations are never built and no one-hot relation matrices are needed.

Parameter count of the reference (3 coordinates × 50 frames in, hidden 128, 3 link types):
encoder 185,475 (node MLP 36,096, link MLP 49,664, node MLP 33,280, link MLP with skip 66,048,
type logits 387) and decoder 232,451 (messages 98,816 for the two real link types, GRU cell on
pose + messages 100,224, output MLP 33,411): 417,926, the reference's 417,798 within 0.1 %.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from asgcn_lightning.errors import UserError
from asgcn_lightning.models.noise import gumbel_softmax_hard
from asgcn_lightning.models.reduction import mean_per_sample


def default_prior(num_types: int, none: float = 0.95) -> tuple[float, ...]:
    """The reference sparse prior: ``none`` on "no link", the rest shared by the real link types."""
    return (none, *[(1.0 - none) / (num_types - 1)] * (num_types - 1))


def _batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Batch norm over the last (feature) dimension of a tensor of any rank."""
    return bn(x.reshape(-1, x.shape[-1])).view_as(x)


class NodeMLP(nn.Module):
    """Two ELU layers and batch norm: the joint update of the encoder."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(in_features, hidden), nn.Linear(hidden, out_features)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _batch_norm(self.bn, F.elu(self.fc2(F.elu(self.fc1(x)))))


class PairMLP(nn.Module):
    """:class:`NodeMLP` on every directed joint pair ``(sender i, receiver j)`` and optional link features.

    Same parameters as an MLP on ``[h_i, h_j, e_ij]``; the first layer is split per part and
    broadcast over the grid, which costs ``V`` instead of ``V²`` projections of the joint features.
    """

    def __init__(self, node_features: int, link_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.sender = nn.Linear(node_features, hidden)
        self.receiver = nn.Linear(node_features, hidden, bias=False)
        self.link = nn.Linear(link_features, hidden, bias=False) if link_features else None
        self.fc2 = nn.Linear(hidden, out_features)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, nodes: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        """``nodes`` ``(B, V, F)``, ``links`` ``(B, V, V, F')`` → ``(B, V, V, out)``."""
        y = self.sender(nodes)[:, :, None] + self.receiver(nodes)[:, None, :]
        if self.link is not None:
            y = y + self.link(links)
        return _batch_norm(self.bn, F.elu(self.fc2(F.elu(y))))


class LinkEncoder(nn.Module):
    """Joint trajectories ``(B, V, F)`` → A-link type logits ``(B, V, V, types)``.

    The second link update sees the first one as a skip connection, so pair evidence from the
    raw trajectories is not lost in the averaging over senders.
    """

    def __init__(self, in_features: int, hidden: int, num_types: int) -> None:
        super().__init__()
        self.node1 = NodeMLP(in_features, hidden, hidden)
        self.link1 = PairMLP(hidden, 0, hidden, hidden)
        self.node2 = NodeMLP(hidden, hidden, hidden)
        self.link2 = PairMLP(hidden, hidden, hidden, hidden)
        self.types = nn.Linear(hidden, num_types)

    def forward(self, trajectories: torch.Tensor) -> torch.Tensor:
        num = trajectories.shape[1]
        others = 1.0 - torch.eye(num, device=trajectories.device, dtype=trajectories.dtype)
        links = self.link1(self.node1(trajectories))
        incoming = torch.einsum("bijf,ij->bjf", links, others) / max(num - 1, 1)
        links = self.link2(self.node2(incoming), links)
        return self.types(links)


class MotionDecoder(nn.Module):
    """Predicts each next pose from the current one and the messages along the A-links.

    Each real link type has its own message MLP on the (sender, receiver) hidden states; a GRU
    cell takes the pose and the incoming messages and keeps each joint's own hidden state, so a
    joint without links (most of them, under the sparse prior) still models its own motion. The
    "no link" type sends nothing. Every ``rollout`` steps the true pose is fed in; in between the
    decoder runs on its own predictions, which forces it to rely on the links over several steps.
    """

    def __init__(self, channels: int, hidden: int, num_link_types: int, rollout: int) -> None:
        super().__init__()
        self.hidden, self.num_link_types, self.rollout = hidden, num_link_types, rollout
        self.sender = nn.Linear(hidden, num_link_types * hidden)
        self.receiver = nn.Linear(hidden, num_link_types * hidden, bias=False)
        bound = hidden ** -0.5  # nn.Linear's default initialisation, per link type
        weight = torch.empty(num_link_types, hidden, hidden).uniform_(-bound, bound)
        self.message_weight = nn.Parameter(weight)
        self.message_bias = nn.Parameter(torch.empty(num_link_types, hidden).uniform_(-bound, bound))
        self.cell = nn.GRUCell(channels + hidden, hidden)
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))

    def forward(self, poses: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
        """``poses`` ``(B, F, V, C)``, ``links`` ``(B, V, V, real types)`` → predicted frames 1..F-1."""
        b, frames, v, _ = poses.shape
        k, h = self.num_link_types, self.hidden
        # link type outermost, (k, b, i, j, ...): each type's messages are one matrix product, no permuted copy
        weights = (links / max(v - 1, 1)).permute(3, 0, 1, 2)[..., None]  # mean over possible senders
        state = poses.new_zeros(b * v, h)
        current = poses[:, 0]
        predictions = []
        for step in range(frames - 1):
            if step % self.rollout == 0:
                current = poses[:, step]
            joints = state.view(b, v, h)
            sender = self.sender(joints).view(b, v, k, h).permute(2, 0, 1, 3)
            receiver = self.receiver(joints).view(b, v, k, h).permute(2, 0, 1, 3)
            pre = torch.tanh(sender[:, :, :, None] + receiver[:, :, None, :]).view(k, -1, h)
            messages = torch.baddbmm(self.message_bias[:, None], pre, self.message_weight.transpose(1, 2))
            incoming = (torch.tanh(messages).view(k, b, v, v, h) * weights).sum(dim=(0, 2))
            state = self.cell(torch.cat([current, incoming], dim=-1).reshape(b * v, -1), state)
            current = current + self.out(state).view(b, v, -1)
            predictions.append(current)
        return torch.stack(predictions, dim=1)


class AIM(nn.Module):
    """A-link inference module: encoder, Gumbel-softmax link sampling, decoder and the AIM loss.

    The encoder reads each joint's whole trajectory, linearly resampled to ``input_frames`` frames
    so that any window length gives the same fixed-size input (the reference reads 50 frames).
    Coordinates are used as they come, not through the backbone's data batch norm, because the
    AIM is pretrained on its own before the backbone learns anything.
    """

    def __init__(self, in_channels: int = 3, num_types: int = 3, hidden: int = 128, input_frames: int = 50,
                 prior: Sequence[float] | None = None, tau: float = 0.5, variance: float = 5e-5,
                 rollout: int = 10) -> None:
        super().__init__()
        if num_types < 2:
            raise UserError(f"num_alink_types must be at least 2 (no link and a link type), got {num_types}")
        if input_frames < 2:
            raise UserError(f"aim_input_frames must be at least 2, got {input_frames}")
        prior = tuple(prior) if prior is not None else default_prior(num_types)
        if len(prior) != num_types or min(prior) <= 0 or abs(sum(prior) - 1.0) > 1e-4:
            raise UserError(f"the A-link prior must be {num_types} positive probabilities that sum to 1, "
                            f"got {prior}")
        self.num_types, self.input_frames = num_types, input_frames
        self.tau, self.variance = tau, variance
        self.register_buffer("log_prior", torch.tensor(prior).log(), persistent=False)
        self.encoder = LinkEncoder(input_frames * in_channels, hidden, num_types)
        self.decoder = MotionDecoder(in_channels, hidden, num_types - 1, rollout)

    def resample(self, bodies: torch.Tensor) -> torch.Tensor:
        """Bodies ``(B, C, T, V)`` → poses ``(B, F, V, C)`` at ``F = input_frames`` evenly spaced times."""
        b, c, t, v = bodies.shape
        series = bodies.permute(0, 1, 3, 2).reshape(b, c * v, t)
        series = F.interpolate(series, size=self.input_frames, mode="linear", align_corners=True)
        return series.view(b, c, v, self.input_frames).permute(0, 3, 2, 1)

    def logits(self, poses: torch.Tensor) -> torch.Tensor:
        """Poses ``(B, F, V, C)`` → link type logits ``(B, V, V, types)``; the diagonal is meaningless."""
        b, frames, v, c = poses.shape
        return self.encoder(poses.permute(0, 2, 1, 3).reshape(b, v, frames * c))

    def _self_pairs(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``(V, V, 1)`` for pairs of two different joints, and "no link" on a joint to itself."""
        v = like.shape[1]
        eye = torch.eye(v, device=like.device, dtype=like.dtype)[..., None]
        none = F.one_hot(torch.zeros((), dtype=torch.long, device=like.device), self.num_types).to(like.dtype)
        return 1.0 - eye, eye * none

    def links(self, logits: torch.Tensor, sample: bool) -> torch.Tensor:
        """One-hot link types ``(B, V, V, types)``: a straight-through Gumbel sample or the most probable one.

        A joint is never A-linked to itself; its own features reach it through the S-links.
        """
        if sample:
            chosen = gumbel_softmax_hard(logits, self.tau)
        else:
            chosen = F.one_hot(logits.argmax(-1), self.num_types).to(logits.dtype)
        others, none = self._self_pairs(logits)
        return chosen * others + none

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Link type probabilities ``(B, V, V, types)``, each pair summing to 1 over types."""
        others, none = self._self_pairs(logits)
        return logits.softmax(-1) * others + none

    def loss(self, bodies: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction NLL, KL to the prior and MSE per joint, each the mean over ``samples`` of the
        sample's mean over its bodies (``bodies`` holds ``samples × persons`` rows, persons adjacent).

        Bodies that are all zero (an absent second person) are left out of every term.
        """
        poses = self.resample(bodies)
        logits = self.logits(poses)
        links = self.links(logits, sample=self.training)
        predicted = self.decoder(poses, links[..., 1:])
        target = poses[:, 1:]
        present = (bodies.abs().flatten(1).amax(1) > 0).to(bodies.dtype)
        joints = poses.shape[2]
        squared = (predicted - target).square()
        nll = squared.sum(dim=(1, 2, 3)) / (2 * self.variance * joints)
        log_p = logits.log_softmax(-1)
        others, _ = self._self_pairs(logits)
        kl = (log_p.exp() * (log_p - self.log_prior) * others).sum(dim=(1, 2, 3)) / joints
        mse = squared.detach().mean(dim=(1, 2, 3))
        return tuple(mean_per_sample(term, present, samples) for term in (nll, kl, mse))
