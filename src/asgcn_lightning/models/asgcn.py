"""The AS-GCN network: data normalisation, AS-GCN blocks over S- and A-links, recognition and prediction.

Parameter counts of the reference configuration (NTU-60: 25 joints, C=3, 60 classes, L=4 so 9
S-link subsets, 3 A-link types, λ=0.5, 10 predicted frames):

* backbone + recognition 4,797,267 — the S-links-only network (4,368,211) plus, in every block,
  ``out × 2`` more output channels of the one ASGC 1×1 convolution, one slice per real A-link
  type (429,056); identical to the reference;
* prediction head 2,185,901 (reference 2,190,211, see :class:`~asgcn_lightning.models.heads.PredictionHead`);
* AIM 417,926 (reference 417,798, see :mod:`asgcn_lightning.models.aim`);
* total 7,401,094 (reference 7,405,276, −0.06 %).

The ablations of the paper are constructor arguments of the same code: ST-GCN
(``max_hop=1, use_alinks=False, prediction_head=False``), S-links only (``use_alinks=False``),
A-links only (``use_slinks=False``), with or without the prediction head, and any number of
A-link types, λ or hop distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from asgcn_lightning.errors import UserError
from asgcn_lightning.models.aim import AIM
from asgcn_lightning.models.blocks import ASGCBlock
from asgcn_lightning.models.heads import PredictionHead, RecognitionHead
from asgcn_lightning.models.network import NetworkOutput
from asgcn_lightning.models.reduction import mean_per_sample
from asgcn_lightning.skeleton.graph import structural_links
from asgcn_lightning.skeleton.layouts import Layout, make_layout

# l2: the paper's squared error in input units; relative_l2: divided by that of repeating the last frame,
# so one weight means the same in metres, pixels or millimetres
PREDICTION_LOSSES = ("l2", "relative_l2")
# relative_l2 divides by the larger of its batch's repeat-last error and a running mean of it: a batch
# whose bodies all end at rest has a near-zero error of its own, and dividing by that alone blows up
BASELINE_MOMENTUM = 0.1
# how the backbone uses the AIM's output: expected = the link-type probabilities, the same graph in training
# and evaluation; sampled = a Gumbel-softmax sample in training and the most probable type in evaluation
ALINK_MODES = ("expected", "sampled")
# mean: each receiver averages over its linked senders; original: over itself and them, then × 0.1 (the original code)
ALINK_NORMALISATIONS = ("mean", "original")
ORIGINAL_ALINK_SCALE = 0.1
# what the classifier sees: the whole window (as deployed), or the frames the prediction head observes
CLASSIFIER_INPUTS = ("window", "observed")


class ASGCN(nn.Module):
    """Skeleton sequences ``(N, C, T, V, M)`` → class logits, with the A-link and prediction side tasks.

    Persons share all weights and are averaged before the classifier. ``num_class``, the joint
    layout and the input channels come from the data module, so any data set and class subset works.

    ``slinks`` is the rule that builds the S-links (:mod:`asgcn_lightning.skeleton.graph`): ``modern``
    as the papers describe the partition, ``original`` exactly as the original code builds it.

    With ``use_slinks=False`` (A-links only) the S-links shrink to each joint's link to itself: a
    joint is never A-linked to itself, so without it a joint would lose its own features.

    The prediction head observes the first ``T - predict_frames`` frames of the window and predicts
    the last ``predict_frames``; the classifier sees the whole window (:meth:`forward`). Both share one
    backbone pass over the window: the prediction head gets only the output frames whose temporal
    receptive field ends before the predicted frames (:meth:`observed_output_frames`), which are the
    frames a pass over the observed frames alone computes, so the "future" is not in its input. Where
    the window is too short for any such frame, the side task has a backbone pass of its own over the
    observed frames. ``classifier_input="observed"`` restores the original code's single pass: the
    classifier sees only the observed frames, in training and in :meth:`forward` alike. Either way
    training, evaluation and deployment classify the same input the same way.

    ``spatial_channels`` of the ``in_channels`` are coordinates (the first ones; 2 for ``x, y,
    confidence``); the prediction error and the predicted poses count those only. ``None``: all.
    """

    def __init__(
        self,
        num_class: int,
        layout: Layout | dict[str, Any],
        in_channels: int = 3,
        num_person: int = 2,
        channels: Sequence[int] = (64, 64, 64, 128, 128, 128, 256, 256, 256),
        strides: Sequence[int] = (1, 1, 1, 2, 1, 1, 2, 1, 1),
        max_hop: int = 4,
        partition: str = "spatial",
        slinks: str = "modern",
        temporal_kernel: int = 9,
        dropout: float = 0.5,
        edge_importance: bool = True,
        use_slinks: bool = True,
        use_alinks: bool = True,
        num_alink_types: int = 3,
        lambda_: float = 0.5,
        aim_hidden: int = 128,
        aim_input_frames: int = 50,
        prior: Sequence[float] | None = None,
        gumbel_tau: float = 0.5,
        alinks: str = "expected",
        alink_normalisation: str = "mean",
        aim_variance: float = 5e-5,
        aim_rollout: int = 10,
        prediction_head: bool = True,
        predict_frames: int = 10,
        prediction_weight: float = 0.01,
        prediction_loss: str = "l2",
        prediction_channels: int | None = None,
        prediction_trajectory_frames: int = 8,
        classifier_input: str = "window",
        spatial_channels: int | None = None,
    ) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise UserError(f"channels ({len(channels)}) and strides ({len(strides)}) need one entry per "
                            "block")
        if not (use_slinks or use_alinks):
            raise UserError("use_slinks and use_alinks are both false; a network needs at least one")
        if prediction_head and predict_frames < 1:
            raise UserError(f"predict_frames must be at least 1, got {predict_frames}")
        if alinks not in ALINK_MODES:
            raise UserError(f"alinks must be one of {ALINK_MODES}, got {alinks!r}")
        if alink_normalisation not in ALINK_NORMALISATIONS:
            raise UserError(f"alink_normalisation must be one of {ALINK_NORMALISATIONS}, got {alink_normalisation!r}")
        if classifier_input not in CLASSIFIER_INPUTS:
            raise UserError(f"classifier_input must be one of {CLASSIFIER_INPUTS}, got {classifier_input!r}")
        if prediction_loss not in PREDICTION_LOSSES:
            raise UserError(f"prediction_loss must be one of {PREDICTION_LOSSES}, got {prediction_loss!r}")
        if spatial_channels is not None and not 1 <= spatial_channels <= in_channels:
            raise UserError(f"spatial_channels must be between 1 and in_channels ({in_channels}), "
                            f"got {spatial_channels}")
        self.layout = layout if isinstance(layout, Layout) else make_layout(**layout)
        self.num_person, self.in_channels = num_person, in_channels
        self.spatial_channels = in_channels if spatial_channels is None else spatial_channels
        num_joints = self.layout.num_joints
        if use_slinks:
            links = torch.from_numpy(structural_links(self.layout, max_hop, partition, rule=slinks))
        else:
            links = torch.eye(num_joints)[None]
        self.register_buffer("s_links", links, persistent=False)
        # the running repeat-last error of relative_l2; not saved: a resumed run re-learns it in a few steps
        self.register_buffer("baseline_scale", torch.zeros(()), persistent=False)
        self.detach_alinks, self.alinks, self.alink_normalisation = True, alinks, alink_normalisation
        self.aim = AIM(in_channels, num_alink_types, aim_hidden, aim_input_frames, prior, gumbel_tau,
                       aim_variance, aim_rollout) if use_alinks else None
        graph = {"num_joints": num_joints, "num_subsets": links.shape[0], "lambda_": lambda_,
                 "num_alink_types": num_alink_types - 1 if use_alinks else 0,
                 "edge_importance": edge_importance}

        self.data_bn = nn.BatchNorm1d(in_channels * num_joints)
        widths = [in_channels, *channels]
        self.blocks = nn.ModuleList(
            ASGCBlock(widths[i], widths[i + 1], stride=strides[i], temporal_kernel=temporal_kernel,
                      dropout=0.0 if i == 0 else dropout, residual=i > 0, **graph)
            for i in range(len(channels))
        )
        self.head = RecognitionHead(widths[-1], num_class)
        self.predict_frames, self.prediction_weight = predict_frames, prediction_weight
        self.prediction_loss, self.classifier_input = prediction_loss, classifier_input
        self.predictor = PredictionHead(widths[-1], self.spatial_channels, predict_frames=predict_frames,
                                        hidden=prediction_channels, temporal_kernel=temporal_kernel,
                                        dropout=dropout, trajectory_frames=prediction_trajectory_frames,
                                        **graph) if prediction_head else None

    # -- pieces ------------------------------------------------------------------------------------
    @staticmethod
    def bodies(x: torch.Tensor) -> torch.Tensor:
        """Input ``(N, C, T, V, M)`` → one body per row ``(N·M, C, T, V)``, persons of a sample adjacent."""
        n, c, t, v, m = x.shape
        return x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)

    def alink_weights(self, bodies: torch.Tensor) -> torch.Tensor | None:
        """Normalised A-links ``(N·M, K_a, V, V)`` of the real link types, or ``None`` without A-links.

        ``alinks="expected"`` weights each link by its probability, so training and evaluation see the
        same graph; with ``"sampled"``, training sees Gumbel samples (about ``1 - prior[0]`` of all pairs
        linked) but evaluation the most probable type (often no link at all from a young AIM), a shift
        that held the synthetic default at 0.41–0.56 validation accuracy (0.87–0.89 with ``expected``).
        Each receiver averages over its linked senders, so the AGC output has the scale of one
        neighbour's features however many links a joint has (a joint without links gets zero).
        ``alink_normalisation="original"`` is the original code's: each link type plus a link of every
        joint to itself, averaged per receiver and scaled by 0.1, so a joint with few links mostly
        passes on its own features.
        """
        if self.aim is None:
            return None
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_alinks):
            logits = self.aim.logits(self.aim.resample(bodies))
            if self.alinks == "expected":
                links = self.aim.probabilities(logits)
            else:
                links = self.aim.links(logits, sample=self.training)
            links = links[..., 1:].permute(0, 3, 1, 2)
            if self.alink_normalisation == "original":
                links = links + torch.eye(links.shape[-1], dtype=links.dtype, device=links.device)
                return ORIGINAL_ALINK_SCALE * links / links.sum(dim=2, keepdim=True)
            return links / links.sum(dim=2, keepdim=True).clamp(min=1.0)

    def alink_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """A-link type probabilities ``(N, M, V, V, types)`` of an input; ``[..., i, j, k]`` is i → j."""
        if self.aim is None:
            raise UserError("this network has no A-links (use_alinks is false)")
        n, m = x.shape[0], x.shape[-1]
        probabilities = self.aim.probabilities(self.aim.logits(self.aim.resample(self.bodies(x))))
        return probabilities.view(n, m, *probabilities.shape[1:])

    def features(self, bodies: torch.Tensor, a_links: torch.Tensor | None) -> torch.Tensor:
        """Joint-major backbone features ``(N·M, V, C', T')`` of bodies ``(N·M, C, T, V)``.

        Joint-major is the layout of the blocks (see :mod:`~asgcn_lightning.models.blocks`); the
        data batch norm already needs it.
        """
        b, c, t, v = bodies.shape
        x = self.data_bn(bodies.permute(0, 3, 1, 2).reshape(b, v * c, t)).view(b, v, c, t)
        for block in self.blocks:
            x = block(x, self.s_links, a_links)
        return x

    def recent_frames(self, bodies: torch.Tensor) -> torch.Tensor:
        """The prediction head's trajectory input: the last observed frames ``(N·M, C, K, V)`` of ``bodies``,
        the first frame repeated in front when fewer were observed (no motion before the window)."""
        frames = self.predictor.trajectory_frames
        missing = frames - bodies.shape[2]
        if missing > 0:
            bodies = torch.cat([bodies[:, :, :1].expand(-1, -1, missing, -1), bodies], dim=2)
        return bodies[:, :, -frames:]

    # -- the network contract ----------------------------------------------------------------------
    def classified_frames(self, x: torch.Tensor) -> torch.Tensor:
        """The frames the classifier sees: the whole window, or (``classifier_input="observed"``, the
        original code's choice) the window less the ``predict_frames`` the prediction head predicts."""
        if self.classifier_input == "observed" and self.predictor is not None:
            return x[:, :, : x.shape[2] - self.predict_frames]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classified_frames(x)
        bodies = self.bodies(x)
        return self.head(self.features(bodies, self.alink_weights(bodies)), x.shape[-1])

    def forward_train(self, x: torch.Tensor) -> NetworkOutput:
        """The logits of :meth:`forward` with the prediction side task's weighted loss and its metrics.

        One backbone pass feeds both heads: over the window (``classifier_input="window"``), the
        prediction head taking the output frames that see only the observed frames, or over the observed
        frames (``"observed"``, the original code's training pass). A window too short for any such
        frame gives the side task a second pass over the observed frames.
        """
        if self.predictor is None:
            return NetworkOutput(logits=self(x))
        observed = self._observed_length(x)
        num_person = x.shape[-1]
        if self.classifier_input == "observed":
            bodies, a_links, features = self._observed_pass(x)
            side = self._prediction_terms(x, bodies, a_links, features)
            return NetworkOutput(logits=self.head(features, num_person), losses=side.losses, metrics=side.metrics)
        bodies = self.bodies(x)
        a_links = self.alink_weights(bodies)
        features = self.features(bodies, a_links)
        clean = self.observed_output_frames(observed)
        if clean > 0:
            side = self._prediction_terms(x, bodies[:, :, :observed], a_links, features[..., :clean].contiguous())
        else:
            side = self._prediction_terms(x, *self._observed_pass(x))
        return NetworkOutput(logits=self.head(features, num_person), losses=side.losses, metrics=side.metrics)

    def prediction(self, x: torch.Tensor) -> NetworkOutput:
        """The prediction side task of :meth:`forward_train` alone (no logits).

        Losses: the weighted prediction loss; metrics: the prediction error ``mpjpe`` and that of repeating
        the last observed frame (in input units, spatial channels only). Targets are the last
        ``predict_frames`` frames; joints whose coordinates are exactly zero there (absent persons, missed
        detections) count in neither.
        """
        if self.predictor is None:
            return NetworkOutput(logits=x.new_zeros(0))
        out = self.forward_train(x)
        return NetworkOutput(logits=x.new_zeros(0), losses=out.losses, metrics=out.metrics)

    def observed_output_frames(self, observed: int) -> int:
        """How many leading backbone output frames depend on the first ``observed`` input frames only.

        An output frame ``j`` of a temporal convolution (stride ``s``, padding ``p``) reads input frames
        up to ``s·j + p``; the graph convolutions, batch norms and residuals stay within a frame.
        """
        last = observed - 1
        for block in self.blocks:
            last = (last - block.temporal.padding) // block.temporal.stride
        return max(last + 1, 0)

    def _observed_length(self, x: torch.Tensor) -> int:
        t = x.shape[2]
        if t < self.predict_frames + 2:
            raise UserError(f"a window of {t} frames is too short to predict {self.predict_frames} frames "
                            "(use longer windows or a smaller predict_frames)")
        return t - self.predict_frames

    def _observed_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Bodies, A-links and backbone features of the observed frames (all but the last ``predict_frames``)."""
        bodies = self.bodies(x[:, :, : self._observed_length(x)])
        a_links = self.alink_weights(bodies)
        return bodies, a_links, self.features(bodies, a_links)

    def _prediction_terms(self, x: torch.Tensor, bodies: torch.Tensor, a_links: torch.Tensor | None,
                          features: torch.Tensor) -> NetworkOutput:
        spatial = self.spatial_channels
        predicted = self.predictor(features, self.recent_frames(bodies[:, :spatial]), self.s_links, a_links)
        target = self.bodies(x[:, :spatial, x.shape[2] - self.predict_frames:]).transpose(1, 2)
        valid = (target.abs().sum(dim=2) > 0).to(x.dtype)
        samples = x.shape[0]
        squared = (predicted - target).square().sum(dim=2)
        loss = mean_per_sample(squared, valid, samples)
        mpjpe = mean_per_sample(squared.detach().sqrt(), valid, samples)
        # the "repeat the last observed frame" baseline the prediction head has to beat
        baseline = (bodies[:, :spatial, -1:].transpose(1, 2) - target).detach().square().sum(dim=2)
        if self.prediction_loss == "relative_l2":
            loss = loss / self._baseline_denominator(mean_per_sample(baseline, valid, samples))
        baseline_mpjpe = mean_per_sample(baseline.sqrt(), valid, samples)
        return NetworkOutput(logits=x.new_zeros(0), losses={"prediction": self.prediction_weight * loss},
                             metrics={"mpjpe": mpjpe, "mpjpe_repeat_last": baseline_mpjpe})

    def _baseline_denominator(self, batch_scale: torch.Tensor) -> torch.Tensor:
        """The larger of this batch's repeat-last error and its running mean (updated while training)."""
        if self.training:
            with torch.no_grad():
                unset = self.baseline_scale == 0
                self.baseline_scale.copy_(torch.where(
                    unset, batch_scale, torch.lerp(self.baseline_scale, batch_scale, BASELINE_MOMENTUM)))
        return torch.maximum(batch_scale, self.baseline_scale).clamp(min=1e-12)

    def aim_loss(self, x: torch.Tensor) -> NetworkOutput:
        """The AIM objective on the whole window: ``nll + kl``, plus the reconstruction MSE as a metric."""
        if self.aim is None:
            raise UserError("this network has no A-link inference module (use_alinks is false)")
        nll, kl, mse = self.aim.loss(self.bodies(x), samples=x.shape[0])
        return NetworkOutput(logits=x.new_zeros(0), losses={"nll": nll, "kl": kl}, metrics={"aim_mse": mse})
