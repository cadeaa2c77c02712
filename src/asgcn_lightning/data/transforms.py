"""Per-sample transforms, composed from config.

Every transform is a callable ``(sequence, layout, rng) -> sequence`` on a float32 array
``(T, M, V, C)``; an all-zero body (an absent second actor, a missed detection) stays all zero.

The first ``spatial_channels`` channels are coordinates (x, y, z or x, y), any further ones features
such as a detector's confidence. Transforms of space (:class:`SpatialTransform`) move the coordinates
only; a joint is missing when its coordinates are all zero, whatever its confidence, so a joint
annotated with a confidence of 0 is kept and moved like any other. :class:`Compose` hands the
store's number of spatial channels to every spatial transform of a list that does not set its own.
Two families are provided: the reference AS-GCN/ST-GCN behaviour (:class:`PadRepeat` to 300
frames, :class:`CentreOnJoint`, :class:`AlignSpineShoulders`) and modern windowing
(:class:`UniformSample`, :class:`RandomCropResize`) with augmentation, :class:`MinMaxNormalise` and input
streams.

Multi-clip testing: an evaluation :class:`UniformSample` with ``num_clips=k`` yields ``k`` clips of a
sample; :class:`Compose` runs the transforms after it on every clip and lays the clips side by side
on the person axis, ``(T, k·M, V, C)``, which the LightningModule splits again and whose class
probabilities it averages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.layouts import Layout


class Transform(Protocol):
    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray: ...


def _present(sequence: np.ndarray, spatial: int) -> np.ndarray:
    """Mask ``(T, M, V, 1)`` of joints that were observed: coordinates not exactly zero."""
    return np.abs(sequence[..., :spatial]).sum(axis=-1, keepdims=True) > 0


class SpatialTransform:
    """A transform that acts on coordinates: the first ``spatial_channels`` channels, the rest left as they are.

    ``None`` until :class:`Compose` (from the store) or the config sets it means every channel, up to 3,
    is a coordinate: right for 3D and plain 2D data, not for 2D with a confidence channel.
    """

    spatial_channels: int | None = None

    def spatial(self, sequence: np.ndarray) -> int:
        channels = sequence.shape[-1]
        if self.spatial_channels is None:
            return min(3, channels)
        if not 1 <= self.spatial_channels <= min(3, channels):
            raise UserError(f"{type(self).__name__}: spatial_channels={self.spatial_channels} does not fit "
                            f"samples with {channels} channels (1 to {min(3, channels)} coordinates)")
        return self.spatial_channels


def _resample(sequence: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of the sequence at fractional frame ``positions``."""
    low = np.floor(positions).astype(int).clip(0, len(sequence) - 1)
    high = (low + 1).clip(max=len(sequence) - 1)
    weight = (positions - low)[:, None, None, None].astype(np.float32)
    return sequence[low] * (1 - weight) + sequence[high] * weight


class PadRepeat:
    """Reference behaviour: repeat the sequence until it fills ``length`` frames, then truncate."""

    def __init__(self, length: int = 300) -> None:
        self.length = length

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        repeats = -(-self.length // len(sequence))
        return np.concatenate([sequence] * repeats)[: self.length]


class UniformSample:
    """Modern windowing: ``length`` frames evenly spread over the whole sequence.

    With ``jitter`` each frame is drawn at random inside its segment (training); without, the
    segment centres are used (evaluation, deterministic). ``num_clips=k`` (evaluation) gives ``k``
    clips whose frames sit at the fractions ``(i + 0.5) / k`` of every segment, ``i = 0..k-1``: the
    same uniform coverage at ``k`` evenly spaced phases, deterministic; one clip is the segment centres.
    """

    def __init__(self, length: int = 64, jitter: bool = False, num_clips: int = 1) -> None:
        if num_clips < 1:
            raise UserError(f"UniformSample: num_clips must be at least 1, got {num_clips}")
        if jitter and num_clips > 1:
            raise UserError("UniformSample: num_clips > 1 is for evaluation, without jitter")
        self.length, self.jitter, self.num_clips = length, jitter, num_clips

    def _sample(self, sequence: np.ndarray, offset: np.ndarray) -> np.ndarray:
        edges = np.linspace(0, len(sequence), self.length + 1)
        positions = np.minimum(edges[:-1] + offset * (edges[1:] - edges[:-1]), len(sequence) - 1)
        return _resample(sequence, positions)

    def clips(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> list[np.ndarray]:
        """The ``num_clips`` clips of a sequence, each ``(length, M, V, C)``."""
        if self.num_clips == 1:
            return [self(sequence, layout, rng)]
        return [self._sample(sequence, np.full(self.length, (i + 0.5) / self.num_clips))
                for i in range(self.num_clips)]

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        offset = rng.uniform(0, 1, self.length) if self.jitter else np.full(self.length, 0.5)
        return self._sample(sequence, offset)


class RandomCropResize:
    """Crop a random ``scale`` fraction of the sequence and resize it to ``length`` frames."""

    def __init__(self, length: int = 64, scale: Sequence[float] = (0.5, 1.0)) -> None:
        self.length, self.scale = length, tuple(scale)

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        total = len(sequence)
        span = max(1.0, rng.uniform(*self.scale) * total)
        start = rng.uniform(0, total - span) if total > span else 0.0
        positions = np.minimum(start + np.linspace(0, span - 1, self.length).clip(min=0), total - 1)
        return _resample(sequence, positions)


class CentreOnJoint(SpatialTransform):
    """Subtract the first actor's ``joint`` (per frame, or its first-frame position) from every body."""

    def __init__(self, joint: str | int | None = None, per_frame: bool = True,
                 spatial_channels: int | None = None) -> None:
        self.joint, self.per_frame, self.spatial_channels = joint, per_frame, spatial_channels

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        spatial = self.spatial(sequence)
        joint = layout.centre if self.joint is None else (
            layout.index(self.joint) if isinstance(self.joint, str) else int(self.joint))
        centre = sequence[:, 0:1, joint:joint + 1, :spatial]
        if not self.per_frame:
            observed = np.flatnonzero(np.abs(centre).sum(axis=(1, 2, 3)) > 0)
            centre = centre[observed[:1]] if len(observed) else np.zeros_like(centre[:1])
        out = sequence.copy()
        out[..., :spatial] = (sequence[..., :spatial] - centre) * _present(sequence, spatial)
        return out


def _rotation_between(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The rotation matrix that turns unit vector ``source`` onto ``target`` (Rodrigues)."""
    axis = np.cross(source, target)
    sin, cos = np.linalg.norm(axis), float(np.dot(source, target))
    if sin < 1e-8:
        return np.eye(3) if cos > 0 else -np.eye(3)
    axis = axis / sin
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + sin * skew + (1 - cos) * skew @ skew


class AlignSpineShoulders(SpatialTransform):
    """Reference behaviour: rotate so the first actor's spine points up (+y) and shoulders along x.

    Uses the first frame where the actor is observed; needs a layout with ``spine`` and
    ``shoulders`` and 3D coordinates.
    """

    def __init__(self, spatial_channels: int | None = None) -> None:
        self.spatial_channels = spatial_channels

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        if layout.spine is None or layout.shoulders is None:
            raise UserError(f"AlignSpineShoulders needs a layout with spine and shoulders; {layout.name} has none")
        if self.spatial(sequence) != 3:
            raise UserError("AlignSpineShoulders needs 3D coordinates (3 spatial channels)")
        observed = np.flatnonzero(np.abs(sequence[:, 0, :, :3]).sum(axis=(1, 2)) > 0)
        if not len(observed):
            return sequence
        body = sequence[observed[0], 0, :, :3].astype(np.float64)
        spine = body[layout.spine[1]] - body[layout.spine[0]]
        if np.linalg.norm(spine) < 1e-8:
            return sequence
        first = _rotation_between(spine / np.linalg.norm(spine), np.array([0.0, 1.0, 0.0]))
        shoulders = first @ (body[layout.shoulders[1]] - body[layout.shoulders[0]])
        shoulders[1] = 0.0  # only the turn about the (now vertical) spine is left to fix
        if np.linalg.norm(shoulders) < 1e-8:
            rotation = first
        else:
            rotation = _rotation_between(shoulders / np.linalg.norm(shoulders), np.array([1.0, 0.0, 0.0])) @ first
        out = sequence.copy()
        out[..., :3] = (sequence[..., :3] @ rotation.T.astype(np.float32)) * _present(sequence, 3)
        return out


class RandomRotate(SpatialTransform):
    """Augmentation: one random rotation per sample, up to ``degrees`` about x, y and z.

    2D coordinates turn in the image plane only, up to the ``z`` angle (a turn about x or y would
    need the depth that 2D poses lack); 1D coordinates are left as they are.
    """

    def __init__(self, degrees: Sequence[float] = (15.0, 15.0, 15.0), spatial_channels: int | None = None) -> None:
        self.degrees = np.radians(np.asarray(degrees, dtype=np.float64))
        self.spatial_channels = spatial_channels

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        ax, ay, az = rng.uniform(-self.degrees, self.degrees)
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        spatial = self.spatial(sequence)
        if spatial == 3:
            rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
            ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
            rotation = rz @ ry @ rx
        else:
            rotation = rz[:spatial, :spatial] if spatial == 2 else np.eye(1)
        out = sequence.copy()
        out[..., :spatial] = sequence[..., :spatial] @ rotation.T.astype(np.float32)
        return out


class RandomScale(SpatialTransform):
    """Augmentation: scale coordinates by a random factor per axis in ``[low, high]``."""

    def __init__(self, low: float = 0.9, high: float = 1.1, spatial_channels: int | None = None) -> None:
        self.low, self.high, self.spatial_channels = low, high, spatial_channels

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        spatial = self.spatial(sequence)
        factor = np.ones(sequence.shape[-1], dtype=np.float32)
        factor[:spatial] = rng.uniform(self.low, self.high, spatial)
        return sequence * factor


class MinMaxNormalise(SpatialTransform):
    """Map the observed coordinates of the whole sample into ``[-1, 1]``, per axis or with one scale.

    Removes where the sequence is and how big it is, but keeps how the body moves within it (a walk
    stays a path). ``per_axis`` stretches every axis to the full range on its own, which, after a
    random rotation, varies the body's proportions as an augmentation; ``per_axis=False`` keeps the
    aspect ratio (the longest axis spans ``[-1, 1]``, the others are centred), the choice for
    image coordinates. Missing joints stay zero.
    """

    def __init__(self, per_axis: bool = True, spatial_channels: int | None = None) -> None:
        self.per_axis, self.spatial_channels = per_axis, spatial_channels

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        spatial = self.spatial(sequence)
        present = _present(sequence, spatial)
        observed = sequence[..., :spatial][present[..., 0]]  # (joints observed anywhere, spatial)
        if not observed.size:
            return sequence
        low, high = observed.min(axis=0), observed.max(axis=0)
        half_range = (high - low) / 2 if self.per_axis else np.full(spatial, (high - low).max() / 2)
        half_range = np.where(half_range > 1e-8, half_range, 1.0).astype(np.float32)
        out = sequence.copy()
        out[..., :spatial] = (sequence[..., :spatial] - (low + high) / 2) / half_range * present
        return out


STREAMS = ("joint", "bone", "joint_motion", "bone_motion")


class Stream(SpatialTransform):
    """Input stream: joints, bones (child minus parent), or the frame-to-frame motion of either.

    Differences are of coordinates; a further channel (a confidence) becomes the mean of the two
    joints or frames it joins, so it keeps saying how much the difference can be trusted.
    """

    def __init__(self, kind: str = "joint", spatial_channels: int | None = None) -> None:
        if kind not in STREAMS:
            raise UserError(f"unknown stream {kind!r}; choose one of {list(STREAMS)}")
        self.kind, self.spatial_channels = kind, spatial_channels

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        spatial = self.spatial(sequence)
        out = sequence
        if self.kind.startswith("bone"):
            out = np.zeros_like(sequence)
            for child, parent in layout.bones:
                out[:, :, child, :spatial] = sequence[:, :, child, :spatial] - sequence[:, :, parent, :spatial]
                out[:, :, child, spatial:] = (sequence[:, :, child, spatial:] + sequence[:, :, parent, spatial:]) / 2
            out *= _present(sequence, spatial)
        if self.kind.endswith("motion"):
            # only between two observed frames: a body entering or leaving is no motion
            present = _present(out, spatial)
            both = present[1:] & present[:-1]
            motion = np.zeros_like(out)
            motion[:-1, ..., :spatial] = (out[1:, ..., :spatial] - out[:-1, ..., :spatial]) * both
            motion[:-1, ..., spatial:] = (out[1:, ..., spatial:] + out[:-1, ..., spatial:]) / 2 * both
            out = motion
        return out


class Compose:
    """Apply transforms in order; the list comes straight from a Hydra config.

    From a transform that yields several clips (``UniformSample(num_clips=k)``, at most one) on, every
    later transform runs on each clip, and the clips come out side by side on the person axis.
    ``spatial_channels`` (the store's, e.g. 2 for ``x, y, confidence``) goes to every
    :class:`SpatialTransform` that has none of its own.
    """

    def __init__(self, transforms: Sequence[Transform] = (), spatial_channels: int | None = None) -> None:
        self.transforms = list(transforms)
        for transform in self.transforms:
            if isinstance(transform, SpatialTransform) and transform.spatial_channels is None:
                transform.spatial_channels = spatial_channels
        samplers = sum(getattr(t, "num_clips", 1) > 1 for t in self.transforms)
        if samplers > 1:
            raise UserError(f"{samplers} transforms sample several clips; at most one may set num_clips > 1")

    def __call__(self, sequence: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
        clips = [sequence]
        for transform in self.transforms:
            if getattr(transform, "num_clips", 1) > 1:
                clips = transform.clips(clips[0], layout, rng)
            else:
                clips = [transform(clip, layout, rng) for clip in clips]
        return np.ascontiguousarray(np.concatenate(clips, axis=1), dtype=np.float32)
