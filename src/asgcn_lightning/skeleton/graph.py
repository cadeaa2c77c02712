"""Structural links (S-links): normalised adjacency subsets built from a joint layout.

The AS-GCN paper extends ST-GCN's one-hop graph to high-order links up to ``max_hop`` hops. Each
hop is split by the "spatial" partition into links whose sender is nearer to or farther from the
centre joint than the receiver, so ``max_hop=L`` gives ``1 + 2L`` subsets (9 for L=4, 3 for ST-GCN's L=1).

Two rules build that split (``rule``):

* ``modern`` (default), as the papers describe it: the distance to the centre is the full hop count, so
  every link of every hop order is sorted by direction; a sender as near to the centre as the receiver
  joins the nearer senders.
* ``original``, as the original AS-GCN/ST-GCN code builds it: the distance to the centre counts only up
  to ``max_hop`` hops, so all joints beyond that are "equally far" and their links all fall into the first
  subset of their hop; the first subset holds senders at least as far from the centre as the receiver,
  the second the nearer ones; and layouts the original code defines with other bones use those
  (:data:`~asgcn_lightning.skeleton.layouts.ORIGINAL_VARIANTS`: NTU's tip–thumb–hand chain).

Both rules normalise the same way: each receiver averages over all its senders within ``max_hop`` hops.
"""

from __future__ import annotations

import numpy as np

from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.layouts import ORIGINAL_VARIANTS, Layout

PARTITIONS = ("spatial", "distance", "uniform")
SLINK_RULES = ("modern", "original")


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


def slink_layout(layout: Layout, rule: str = "modern") -> Layout:
    """The layout whose bones the S-links follow: the original code's variant of it under ``rule="original"``."""
    if rule not in SLINK_RULES:
        raise UserError(f"unknown S-link rule {rule!r}; choose one of {list(SLINK_RULES)}")
    return ORIGINAL_VARIANTS.get(layout.name, layout) if rule == "original" else layout


def structural_links(layout: Layout, max_hop: int = 1, partition: str = "spatial",
                     rule: str = "modern") -> np.ndarray:
    """The S-link subsets, shape ``(K, V, V)``, float32.

    Entry ``[k, i, j]`` is the weight with which joint ``i`` sends features to joint ``j`` in
    subset ``k``; every column sums to 1 over all subsets (each receiver averages its senders).
    """
    if max_hop < 1:
        raise UserError(f"max_hop must be at least 1, got {max_hop}")
    if partition not in PARTITIONS:
        raise UserError(f"unknown graph partition {partition!r}; choose one of {list(PARTITIONS)}")
    layout = slink_layout(layout, rule)
    num = layout.num_joints
    hops = hop_distances(num, layout.edges, max_hop)
    reachable = np.isfinite(hops).astype(np.float64)
    normalised = reachable / reachable.sum(axis=0)[None, :]

    if partition == "uniform":
        return normalised[None].astype(np.float32)
    by_hop = [np.where(hops == hop, normalised, 0.0) for hop in range(max_hop + 1)]
    if partition == "distance":
        return np.stack(by_hop).astype(np.float32)

    if rule == "original":
        from_centre = hops[:, layout.centre]
        first = from_centre[:, None] >= from_centre[None, :]  # inf >= inf: beyond max_hop counts as a tie
    else:
        from_centre = hop_distances(num, layout.edges, num)[:, layout.centre]
        first = from_centre[:, None] <= from_centre[None, :]
    subsets = [by_hop[0]]
    for hop in range(1, max_hop + 1):
        subsets.append(np.where(first, by_hop[hop], 0.0))
        subsets.append(np.where(~first, by_hop[hop], 0.0))
    return np.stack(subsets).astype(np.float32)
