"""S-links: hop distances, partitions and normalisation on every built-in layout; the original code's arrays."""

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.graph import PARTITIONS, SLINK_RULES, hop_distances, structural_links
from asgcn_lightning.skeleton.layouts import BUILTIN_LAYOUTS, COCO18, NTU25, NTU25_ASGCN, make_layout

# the layouts of the original code's arrays in reference/asgcn_slinks.npz, by their key prefix
REFERENCE_LAYOUTS = {"ntu": NTU25, "openpose": COCO18}


@pytest.fixture(scope="module")
def original_arrays(fixtures_dir: Path) -> dict[str, np.ndarray]:
    path = fixtures_dir / "reference" / "asgcn_slinks.npz"
    if not path.is_file():
        pytest.skip(f"the original code's S-link arrays are not at {path}")
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


@pytest.mark.parametrize("layout", BUILTIN_LAYOUTS.values(), ids=BUILTIN_LAYOUTS.keys())
@pytest.mark.parametrize(("max_hop", "subsets"), [(1, 3), (2, 5), (4, 9)])
@pytest.mark.parametrize("rule", SLINK_RULES)
def test_spatial_partition_has_1_plus_2L_subsets_and_normalised_columns(layout, max_hop, subsets, rule):
    links = structural_links(layout, max_hop=max_hop, rule=rule)
    assert links.shape == (subsets, layout.num_joints, layout.num_joints)
    np.testing.assert_allclose(links.sum(axis=(0, 1)), 1.0, rtol=1e-6)
    assert (links >= 0).all()


@pytest.mark.parametrize("layout_key", REFERENCE_LAYOUTS)
@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("max_hop", [1, 2, 3, 4])
def test_original_rule_builds_exactly_the_original_codes_arrays(original_arrays, layout_key, partition, max_hop):
    reference = original_arrays[f"{layout_key}_{partition}_L{max_hop}"]
    links = structural_links(REFERENCE_LAYOUTS[layout_key], max_hop, partition, rule="original")
    assert links.shape == reference.shape
    np.testing.assert_allclose(links, reference, rtol=1e-6, atol=1e-7)


def test_every_reference_array_is_compared(original_arrays):
    compared = {f"{key}_{partition}_L{hop}" for key in REFERENCE_LAYOUTS for partition in PARTITIONS
                for hop in range(1, 5)}
    assert compared == set(original_arrays)


def test_modern_rule_differs_from_the_original_where_it_means_to(original_arrays):
    """Same hops and normalisation; only the spatial split differs (full distance to the centre, other ties)."""
    for key, layout in REFERENCE_LAYOUTS.items():
        for hop in (1, 4):
            np.testing.assert_allclose(structural_links(NTU25_ASGCN if key == "ntu" else layout, hop, "distance"),
                                       original_arrays[f"{key}_distance_L{hop}"], rtol=1e-6, atol=1e-7)
            modern = structural_links(NTU25_ASGCN if key == "ntu" else layout, hop, "spatial")
            assert not np.allclose(modern, original_arrays[f"{key}_spatial_L{hop}"])
    # the original chain hand tip – thumb – hand: no tip–hand bone; ntu25 keeps ours unless the rule is original
    tip, hand = NTU25.index("left_hand_tip"), NTU25.index("left_hand")
    assert structural_links(NTU25, 1, "uniform", rule="original")[0, tip, hand] == 0
    assert structural_links(NTU25, 1, "uniform")[0, tip, hand] > 0
    assert structural_links(NTU25_ASGCN, 1, "uniform", rule="modern")[0, tip, hand] == 0


def test_reference_model_config_builds_the_original_slinks(original_arrays, compose):
    cfg = compose(["model=asgcn"])
    network = instantiate(cfg.model.network, _partial_=True)(num_class=60, layout=NTU25, in_channels=3)
    np.testing.assert_allclose(network.s_links.numpy(), original_arrays["ntu_spatial_L4"], rtol=1e-6, atol=1e-7)
    default = compose([])
    network = instantiate(default.model.network, _partial_=True)(num_class=60, layout=NTU25, in_channels=3)
    np.testing.assert_allclose(network.s_links.numpy(), structural_links(NTU25, 4))
    with pytest.raises(UserError, match="unknown S-link rule 'paper'"):
        structural_links(NTU25, 2, rule="paper")


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
