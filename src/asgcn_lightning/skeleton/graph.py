"""Structural links (S-links): normalised adjacency subsets built from a joint layout.

The AS-GCN paper extends ST-GCN's one-hop graph to high-order links up to ``max_hop`` hops. Each
hop is split by the "spatial" partition into joints closer to and farther from the centre joint
than the root, so ``max_hop=L`` gives ``1 + 2L`` subsets (9 for L=4, 3 for ST-GCN's L=1).
"""

from __future__ import annotations

import numpy as np

from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.layouts import Layout

PARTITIONS = ("spatial", "distance", "uniform")


def hop_distances(num_joints: int, edges: tuple[tuple[int, int], ...], max_hop: int) -> np.ndarray:
    """Shortest-path hop count between every pair of joints; ``inf`` beyond ``max_hop``."""
    adjacency = np.eye(num_joints, dtype=bool)
    for a, b in edges:
        adjacency[a, b] = adjacency[b, a] = True
    distance = np.full((num_joints, num_joints), np.inf)
    reach = np.eye(num_joints, dtype=bool)
    distance[reach] = 0
    step = adjacency.astype(np.int64)
    for hop in range(1, max_hop + 1):
        reach = (reach.astype(np.int64) @ step) > 0
        distance[reach & np.isinf(distance)] = hop
    return distance


def structural_links(layout: Layout, max_hop: int = 1, partition: str = "spatial") -> np.ndarray:
    """The S-link subsets, shape ``(K, V, V)``.

    Entry ``[k, i, j]`` is the weight with which joint ``i`` sends features to joint ``j`` in
    subset ``k``; every column sums to 1 over all subsets (each receiver averages its senders).
    """
    if max_hop < 1:
        raise UserError(f"max_hop must be at least 1, got {max_hop}")
    if partition not in PARTITIONS:
        raise UserError(f"unknown graph partition {partition!r}; choose one of {list(PARTITIONS)}")
    num = layout.num_joints
    hops = hop_distances(num, layout.edges, max_hop)
    reachable = np.isfinite(hops).astype(np.float64)
    degree = reachable.sum(axis=0)
    normalised = reachable / degree[None, :]

    if partition == "uniform":
        return normalised[None].astype(np.float32)
    by_hop = [np.where(hops == hop, normalised, 0.0) for hop in range(max_hop + 1)]
    if partition == "distance":
        return np.stack(by_hop).astype(np.float32)

    from_centre = hop_distances(num, layout.edges, num)[:, layout.centre]
    subsets = [by_hop[0]]
    for hop in range(1, max_hop + 1):
        # sender i relative to receiver j: at most as far from the centre, or farther
        closer = from_centre[:, None] <= from_centre[None, :]
        subsets.append(np.where(closer, by_hop[hop], 0.0))
        subsets.append(np.where(~closer, by_hop[hop], 0.0))
    return np.stack(subsets).astype(np.float32)
