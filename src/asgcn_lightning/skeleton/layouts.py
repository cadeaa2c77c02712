"""Skeleton joint layouts: joint names, bones and the joints that normalisation needs.

A layout is data, not code: the built-in ones (NTU Kinect v2 and the original AS-GCN code's variant of
it, Kinect v1, OpenPose BODY_25, COCO-18, COCO-17, NATOPS, the MADS motion capture) are defined here,
and any other skeleton comes from config through :func:`make_layout`, so a custom data set trains
without code changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asgcn_lightning.errors import UserError


@dataclass(frozen=True)
class Layout:
    """A skeleton: ``V`` named joints, undirected bones between them and a centre joint.

    ``spine`` (lower, upper) and ``shoulders`` (right, left) name the joints used to centre and
    rotate a body into a canonical frame; they are optional for layouts without a torso.
    """

    name: str
    joints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    centre: int
    spine: tuple[int, int] | None = None
    shoulders: tuple[int, int] | None = None
    parents: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        num = len(self.joints)
        if num == 0:
            raise UserError(f"layout {self.name!r}: it has no joints")
        if len(set(self.joints)) != num:
            raise UserError(f"layout {self.name!r}: joint names are not unique")
        for a, b in self.edges:
            if not (0 <= a < num and 0 <= b < num) or a == b:
                raise UserError(f"layout {self.name!r}: edge ({a}, {b}) is not between two of its {num} joints")
        extra = [self.centre, *(self.spine or ()), *(self.shoulders or ())]
        if any(not 0 <= j < num for j in extra):
            raise UserError(f"layout {self.name!r}: centre/spine/shoulder joints must be in 0..{num - 1}")
        object.__setattr__(self, "parents", parents_from_root(num, self.edges, self.centre))

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def bones(self) -> tuple[tuple[int, int], ...]:
        """(child, parent) pairs towards the centre; the bone stream subtracts parent from child."""
        return tuple((j, p) for j, p in enumerate(self.parents) if p >= 0)

    def to_spec(self) -> dict[str, Any]:
        """Plain data that :func:`make_layout` turns back into this layout (stores and checkpoints keep it)."""
        spec: dict[str, Any] = {"name": self.name, "joints": list(self.joints),
                                "edges": [list(edge) for edge in self.edges], "centre": self.centre}
        if self.spine is not None:
            spec["spine"] = list(self.spine)
        if self.shoulders is not None:
            spec["shoulders"] = list(self.shoulders)
        return spec

    def index(self, joint: str) -> int:
        try:
            return self.joints.index(joint)
        except ValueError:
            raise UserError(f"layout {self.name!r} has no joint {joint!r}; it has {list(self.joints)}") from None


def parents_from_root(num: int, edges: Sequence[tuple[int, int]], root: int) -> tuple[int, ...]:
    """Breadth-first parents from ``root``; joints not connected to it get -1 (their own root)."""
    neighbours: list[list[int]] = [[] for _ in range(num)]
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    parents = [-2] * num
    parents[root] = -1
    queue = [root]
    for joint in queue:
        for other in neighbours[joint]:
            if parents[other] == -2:
                parents[other] = joint
                queue.append(other)
    return tuple(-1 if p == -2 else p for p in parents)


def _one_based(pairs: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((a - 1, b - 1) for a, b in pairs)


NTU25 = Layout(
    name="ntu25",
    joints=(
        "spine_base", "spine_mid", "neck", "head",
        "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot",
        "right_hip", "right_knee", "right_ankle", "right_foot",
        "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
    ),
    edges=_one_based([
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
        (20, 19), (22, 8), (23, 8), (24, 12), (25, 12),
    ]),
    centre=20,
    spine=(0, 20),
    shoulders=(8, 4),
)

# NTU as the original AS-GCN code joins it: hand tip – thumb – hand (22–23–8, 24–25–12) instead of tip and
# thumb each on the hand. The same joints, so it reads the same data; model=asgcn builds its S-links from it.
NTU25_ASGCN = Layout(
    name="ntu25_asgcn",
    joints=NTU25.joints,
    edges=_one_based([
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
        (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
    ]),
    centre=NTU25.centre,
    spine=NTU25.spine,
    shoulders=NTU25.shoulders,
)

OPENPOSE25 = Layout(
    name="openpose25",
    joints=(
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
        "left_elbow", "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle",
        "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
        "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    ),
    edges=(
        (0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (10, 11),
        (8, 12), (12, 13), (13, 14), (0, 15), (15, 17), (0, 16), (16, 18), (14, 19), (19, 20),
        (14, 21), (11, 22), (22, 23), (11, 24),
    ),
    centre=1,
    spine=(8, 1),
    shoulders=(2, 5),
)

COCO18 = Layout(
    name="coco18",
    joints=(
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
        "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
        "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
    ),
    edges=(
        (4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5), (8, 2),
        (5, 1), (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14),
    ),
    centre=1,
    shoulders=(2, 5),
)


# COCO-17 (the keypoints of COCO, HRNet and the pyskl 2D annotations): no neck, so the nose is the centre.
COCO17 = Layout(
    name="coco17",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    edges=(
        (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (0, 6), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
        (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
    ),
    centre=0,
    shoulders=(6, 5),
)

# Kinect v1 (Northwestern-UCLA, MSR Action3D, UTKinect...): 20 joints, limbs from the shoulder and hip centres.
KINECT20 = Layout(
    name="kinect20",
    joints=(
        "hip_centre", "spine", "shoulder_centre", "head",
        "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot",
        "right_hip", "right_knee", "right_ankle", "right_foot",
    ),
    edges=(
        (0, 1), (1, 2), (2, 3), (2, 4), (4, 5), (5, 6), (6, 7), (2, 8), (8, 9), (9, 10), (10, 11),
        (0, 12), (12, 13), (13, 14), (14, 15), (0, 16), (16, 17), (17, 18), (18, 19),
    ),
    centre=2,
    spine=(0, 2),
    shoulders=(8, 4),
)

# UEA NATOPS: 8 hand and arm sensors, no torso, so the elbows are joined directly.
NATOPS8 = Layout(
    name="natops8",
    joints=("left_hand_tip", "right_hand_tip", "left_elbow", "right_elbow",
            "left_wrist", "right_wrist", "left_thumb", "right_thumb"),
    edges=((2, 4), (4, 0), (4, 6), (3, 5), (5, 1), (5, 7), (2, 3)),
    centre=2,
)


def _named(joints: Sequence[str], pairs: Sequence[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    return tuple((joints.index(a), joints.index(b)) for a, b in pairs)


# MADS motion capture (Zhang et al. 2017), joints in the order of its GTpose2 ground truth: 15 in the
# multi-view release, 19 (with feet and hands) in the depth release. Limbs hang from the neck and pelvis.
_MADS15_JOINTS = (
    "neck", "pelvis", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle",
    "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist", "head",
)
MADS15 = Layout(
    name="mads15",
    joints=_MADS15_JOINTS,
    edges=_named(_MADS15_JOINTS, [
        ("neck", "pelvis"), ("neck", "head"),
        ("pelvis", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
        ("pelvis", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
        ("neck", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
        ("neck", "right_shoulder"), ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ]),
    centre=_MADS15_JOINTS.index("pelvis"),
    spine=(_MADS15_JOINTS.index("pelvis"), _MADS15_JOINTS.index("neck")),
    shoulders=(_MADS15_JOINTS.index("right_shoulder"), _MADS15_JOINTS.index("left_shoulder")),
)

_MADS19_JOINTS = (
    "neck", "pelvis", "left_hip", "left_knee", "left_ankle", "left_foot", "right_hip", "right_knee",
    "right_ankle", "right_foot", "left_shoulder", "left_elbow", "left_wrist", "left_hand", "right_shoulder",
    "right_elbow", "right_wrist", "right_hand", "head",
)
MADS19 = Layout(
    name="mads19",
    joints=_MADS19_JOINTS,
    edges=_named(_MADS19_JOINTS, [
        ("neck", "pelvis"), ("neck", "head"),
        ("pelvis", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("left_ankle", "left_foot"),
        ("pelvis", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
        ("right_ankle", "right_foot"),
        ("neck", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
        ("left_wrist", "left_hand"),
        ("neck", "right_shoulder"), ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
        ("right_wrist", "right_hand"),
    ]),
    centre=_MADS19_JOINTS.index("pelvis"),
    spine=(_MADS19_JOINTS.index("pelvis"), _MADS19_JOINTS.index("neck")),
    shoulders=(_MADS19_JOINTS.index("right_shoulder"), _MADS19_JOINTS.index("left_shoulder")),
)

BUILTIN_LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (NTU25, NTU25_ASGCN, KINECT20, OPENPOSE25, COCO18, COCO17, NATOPS8, MADS15, MADS19)
}

# the bones the original AS-GCN code uses for a layout where they differ from ours (its COCO-18 equals ours)
ORIGINAL_VARIANTS: dict[str, Layout] = {NTU25.name: NTU25_ASGCN}


def make_layout(
    name: str,
    joints: Sequence[str] | None = None,
    edges: Sequence[Sequence[int | str]] | None = None,
    centre: int | str = 0,
    spine: Sequence[int | str] | None = None,
    shoulders: Sequence[int | str] | None = None,
) -> Layout:
    """A built-in layout by name, or a custom one when ``joints`` and ``edges`` are given.

    Edges and special joints may be given by joint name or by 0-based index.
    """
    if joints is None:
        if name not in BUILTIN_LAYOUTS:
            raise UserError(f"unknown layout {name!r}; built-in layouts are {sorted(BUILTIN_LAYOUTS)} "
                            "(or give joints and edges for a custom one)")
        return BUILTIN_LAYOUTS[name]
    names = tuple(str(j) for j in joints)
    if name in BUILTIN_LAYOUTS and names != BUILTIN_LAYOUTS[name].joints:
        raise UserError(f"layout {name!r} is built in with {BUILTIN_LAYOUTS[name].num_joints} other joints; "
                        f"name a custom layout differently, or give only {{name: {name}}}")

    def resolve(joint: int | str) -> int:
        if isinstance(joint, str) and not joint.lstrip("-").isdigit():
            if joint not in names:
                raise UserError(f"layout {name!r}: unknown joint {joint!r} (joints are {list(names)})")
            return names.index(joint)
        return int(joint)

    def resolve_pair(pair: Sequence[int | str] | None) -> tuple[int, int] | None:
        return None if pair is None else (resolve(pair[0]), resolve(pair[1]))

    return Layout(
        name=name,
        joints=names,
        edges=tuple((resolve(a), resolve(b)) for a, b in (edges or ())),
        centre=resolve(centre),
        spine=resolve_pair(spine),
        shoulders=resolve_pair(shoulders),
    )
