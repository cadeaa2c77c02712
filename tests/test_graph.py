"""S-links: hop distances, partitions and normalisation on every built-in layout."""

import numpy as np
import pytest

from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.graph import hop_distances, structural_links
from asgcn_lightning.skeleton.layouts import BUILTIN_LAYOUTS, NTU25, make_layout


@pytest.mark.parametrize("layout", BUILTIN_LAYOUTS.values(), ids=BUILTIN_LAYOUTS.keys())
@pytest.mark.parametrize(("max_hop", "subsets"), [(1, 3), (2, 5), (4, 9)])
def test_spatial_partition_has_1_plus_2L_subsets_and_normalised_columns(layout, max_hop, subsets):
    links = structural_links(layout, max_hop=max_hop)
    assert links.shape == (subsets, layout.num_joints, layout.num_joints)
    np.testing.assert_allclose(links.sum(axis=(0, 1)), 1.0, rtol=1e-6)
    assert (links >= 0).all()


def test_hop_distances_on_ntu_follow_the_skeleton():
    hops = hop_distances(25, NTU25.edges, max_hop=25)
    left_hand, right_hand = NTU25.index("left_hand"), NTU25.index("right_hand")
    # hand → wrist → elbow → shoulder → spine_shoulder → shoulder → elbow → wrist → hand
    assert hops[left_hand, right_hand] == 8
    assert np.isinf(hop_distances(25, NTU25.edges, max_hop=4)[left_hand, right_hand])


def test_links_beyond_one_hop_reach_two_hop_neighbours_only_with_higher_order():
    head, spine = NTU25.index("head"), NTU25.index("spine_shoulder")
    assert structural_links(NTU25, 1).sum(axis=0)[head, spine] == 0
    assert structural_links(NTU25, 2).sum(axis=0)[head, spine] > 0


def test_custom_layout_by_joint_names_and_clear_errors():
    layout = make_layout("arm", joints=["shoulder", "elbow", "wrist"], edges=[["shoulder", "elbow"], [1, 2]],
                         centre="shoulder")
    assert layout.edges == ((0, 1), (1, 2)) and layout.parents == (-1, 0, 1)
    with pytest.raises(UserError, match="unknown joint 'hand'"):
        make_layout("arm", joints=["shoulder", "elbow"], edges=[["shoulder", "hand"]])
    with pytest.raises(UserError, match="unknown layout 'ntu26'"):
        make_layout("ntu26")
    # a config that merges {name: ntu25} into another layout's joints must not build a 17-joint "ntu25"
    with pytest.raises(UserError, match="'ntu25' is built in with 25 other joints"):
        make_layout("ntu25", joints=[f"j{i}" for i in range(17)], edges=[[0, 1]])
    assert make_layout("ntu25", joints=NTU25.joints, edges=NTU25.edges).edges == NTU25.edges
