"""Spatial transforms move coordinates only: on ``x, y, confidence`` samples the confidence stays a feature,
and a joint annotated with a confidence of 0 is kept, not taken for a missing one."""

from __future__ import annotations

import numpy as np
import pytest

from asgcn_lightning.data.transforms import (
    AlignSpineShoulders,
    CentreOnJoint,
    Compose,
    MinMaxNormalise,
    RandomRotate,
    RandomScale,
    Stream,
)
from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.layouts import NTU25


def two_d_with_confidence(seed: int = 0) -> np.ndarray:
    """``(T, M, V, 3)`` of x, y, confidence; joint 7 annotated with confidence 0, person 1 absent at frame 2."""
    rng = np.random.default_rng(seed)
    sample = rng.normal(size=(6, 2, 25, 3)).astype(np.float32)
    sample[..., 2] = rng.uniform(0.1, 1.0, size=(6, 2, 25))
    sample[:, :, 7, 2] = 0.0
    sample[2, 1] = 0.0
    return sample


SPATIAL = [RandomRotate(degrees=(30.0, 30.0, 30.0)), RandomScale(0.5, 1.5), CentreOnJoint(), MinMaxNormalise(),
           Stream("bone"), Stream("joint_motion")]


@pytest.mark.parametrize("transform", SPATIAL, ids=lambda t: f"{type(t).__name__}-{getattr(t, 'kind', '')}")
def test_spatial_transforms_leave_the_confidence_channel_untouched(transform: object) -> None:
    sample = two_d_with_confidence()
    out = Compose([transform], spatial_channels=2)(sample, NTU25, np.random.default_rng(1))
    if isinstance(transform, Stream) and transform.kind == "bone":
        child, parent = np.array(NTU25.bones).T
        np.testing.assert_allclose(out[..., child, 2], (sample[..., child, 2] + sample[..., parent, 2]) / 2)
    elif isinstance(transform, Stream):
        both = (np.abs(sample[1:, ..., :2]).sum(-1) > 0) & (np.abs(sample[:-1, ..., :2]).sum(-1) > 0)
        np.testing.assert_allclose(out[:-1, ..., 2], (sample[1:, ..., 2] + sample[:-1, ..., 2]) / 2 * both)
    else:
        np.testing.assert_array_equal(out[..., 2], sample[..., 2])
    assert not np.allclose(out[..., :2], sample[..., :2])  # the coordinates did move
    np.testing.assert_array_equal(out[2, 1], 0.0)  # the absent person stays absent


def test_a_2d_rotation_turns_in_the_image_plane_and_keeps_lengths() -> None:
    sample = two_d_with_confidence()
    out = RandomRotate(degrees=(30.0, 30.0, 30.0), spatial_channels=2)(sample, NTU25, np.random.default_rng(3))
    np.testing.assert_allclose(np.linalg.norm(out[..., :2], axis=-1), np.linalg.norm(sample[..., :2], axis=-1),
                               rtol=1e-5, atol=1e-6)


def test_a_zero_confidence_joint_with_coordinates_is_moved_like_the_others() -> None:
    sample = two_d_with_confidence()
    out = CentreOnJoint(spatial_channels=2)(sample, NTU25, np.random.default_rng(0))
    centre = sample[:, 0:1, NTU25.centre, :2]
    np.testing.assert_allclose(out[:, 0, 7, :2], sample[:, 0, 7, :2] - centre[:, 0])
    assert np.abs(out[:, 0, 7, :2]).sum() > 0


def test_three_spatial_channels_keep_the_3d_behaviour() -> None:
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(4, 1, 25, 3)).astype(np.float32)
    default = RandomScale(0.5, 1.5)(sample, NTU25, np.random.default_rng(5))
    explicit = Compose([RandomScale(0.5, 1.5)], spatial_channels=3)(sample, NTU25, np.random.default_rng(5))
    np.testing.assert_array_equal(default, explicit)
    assert not np.allclose(default[..., 2], sample[..., 2])  # z is a coordinate here
    with pytest.raises(UserError, match="3D coordinates"):
        AlignSpineShoulders(spatial_channels=2)(sample, NTU25, rng)
    with pytest.raises(UserError, match="spatial_channels=4"):
        RandomScale(spatial_channels=4)(sample, NTU25, rng)


def test_min_max_normalisation_spans_minus_one_to_one_over_the_observed_joints() -> None:
    rng = np.random.default_rng(0)
    sample = (rng.normal(size=(8, 2, 25, 3)) * [1.0, 2.0, 0.5] + [3.0, -1.0, 2.6]).astype(np.float32)
    sample[2, 1] = 0.0  # an absent second body
    sample[5, 0, 4] = 0.0  # a missed joint
    observed = np.abs(sample).sum(-1) > 0
    per_axis = MinMaxNormalise()(sample, NTU25, rng)
    assert per_axis.dtype == np.float32
    np.testing.assert_allclose(per_axis[observed].min(0), -1.0, atol=1e-6)
    np.testing.assert_allclose(per_axis[observed].max(0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(per_axis[~observed], 0.0)
    # one scale for all axes: the longest axis spans [-1, 1], shapes are kept (distances scale alike)
    kept = MinMaxNormalise(per_axis=False)(sample, NTU25, rng)
    extent = kept[observed].max(0) - kept[observed].min(0)
    np.testing.assert_allclose(extent.max(), 2.0, atol=1e-6)
    np.testing.assert_allclose(extent / extent.max(), np.ptp(sample[observed], 0) / np.ptp(sample[observed], 0).max(),
                               rtol=1e-5)
    np.testing.assert_allclose(kept[observed].max(0) + kept[observed].min(0), 0.0, atol=1e-6)
    np.testing.assert_array_equal(kept[~observed], 0.0)
