"""The embedded default data set: procedurally generated NTU-layout skeleton actions.

Nothing is downloaded: a seeded generator poses a 25-joint Kinect-v2 body with simple forward
kinematics. Classes differ in which limbs move and how (waving, kicking, squatting, ...); every
sample has subject (body size, tempo), camera (view angle), setup (distance, height) and
replication metadata plus per-sample amplitude, phase and sensor noise, so cross-subject,
cross-view and cross-setup splits mean the same thing as on NTU RGB+D.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from asgcn_lightning.data.sources.writer import Sample, StoreSpec, write_store
from asgcn_lightning.data.store import SampleRecord, SkeletonStore
from asgcn_lightning.progress import track
from asgcn_lightning.skeleton.layouts import NTU25, parents_from_root

# Rest pose in metres, y up, x to the body's left, z forward (towards the camera at yaw 0).
_REST = {
    "spine_base": (0.0, 0.95, 0.0), "spine_mid": (0.0, 1.20, 0.0), "spine_shoulder": (0.0, 1.42, 0.0),
    "neck": (0.0, 1.50, 0.0), "head": (0.0, 1.65, 0.02),
    "left_shoulder": (0.18, 1.40, 0.0), "left_elbow": (0.20, 1.12, 0.0), "left_wrist": (0.21, 0.88, 0.0),
    "left_hand": (0.21, 0.80, 0.0), "left_hand_tip": (0.21, 0.72, 0.0), "left_thumb": (0.18, 0.80, 0.04),
    "right_shoulder": (-0.18, 1.40, 0.0), "right_elbow": (-0.20, 1.12, 0.0),
    "right_wrist": (-0.21, 0.88, 0.0), "right_hand": (-0.21, 0.80, 0.0),
    "right_hand_tip": (-0.21, 0.72, 0.0), "right_thumb": (-0.18, 0.80, 0.04),
    "left_hip": (0.09, 0.92, 0.0), "left_knee": (0.10, 0.50, 0.02), "left_ankle": (0.10, 0.08, 0.0),
    "left_foot": (0.10, 0.02, 0.10),
    "right_hip": (-0.09, 0.92, 0.0), "right_knee": (-0.10, 0.50, 0.02), "right_ankle": (-0.10, 0.08, 0.0),
    "right_foot": (-0.10, 0.02, 0.10),
}
_KINEMATIC_ROOT = "spine_base"

# Per class: which joint rotates, about which body axis, and how its angle moves over phase φ∈[0, 2π·cycles].
Motion = tuple[str, str, Callable[[np.ndarray], np.ndarray]]


def _wave(side: str) -> list[Motion]:
    return [(f"{side}_shoulder", "z", lambda p: np.full_like(p, 2.5 if side == "left" else -2.5)),
            (f"{side}_elbow", "z", lambda p: (0.6 if side == "left" else -0.6) * np.sin(p))]


ACTIONS: dict[str, list[Motion]] = {
    "wave right hand": _wave("right"),
    "wave left hand": _wave("left"),
    "raise both arms": [("left_shoulder", "z", lambda p: 1.4 * (1 - np.cos(p))),
                        ("right_shoulder", "z", lambda p: -1.4 * (1 - np.cos(p)))],
    "clap": [("left_shoulder", "x", lambda p: np.full_like(p, -1.4)),
             ("right_shoulder", "x", lambda p: np.full_like(p, -1.4)),
             ("left_shoulder", "y", lambda p: -0.5 * (1 + np.sin(p))),
             ("right_shoulder", "y", lambda p: 0.5 * (1 + np.sin(p)))],
    "kick right leg": [("right_hip", "x", lambda p: -1.1 * np.clip(np.sin(p), 0, None)),
                       ("right_knee", "x", lambda p: 0.9 * np.clip(np.sin(p + 0.8), 0, None))],
    "squat": [("left_hip", "x", lambda p: -0.8 * (1 - np.cos(p))),
              ("right_hip", "x", lambda p: -0.8 * (1 - np.cos(p))),
              ("left_knee", "x", lambda p: 1.6 * (1 - np.cos(p))),
              ("right_knee", "x", lambda p: 1.6 * (1 - np.cos(p))),
              ("spine_base", "lift", lambda p: -0.22 * (1 - np.cos(p)))],
    "bow": [("spine_mid", "x", lambda p: -0.45 * (1 - np.cos(p)))],
    "jump": [("spine_base", "lift", lambda p: 0.25 * np.clip(np.sin(p), 0, None)),
             ("left_shoulder", "z", lambda p: 0.6 * np.clip(np.sin(p), 0, None)),
             ("right_shoulder", "z", lambda p: -0.6 * np.clip(np.sin(p), 0, None))],
    "punch": [("right_shoulder", "x", lambda p: -1.5 + 0.1 * np.sin(p)),
              ("right_elbow", "x", lambda p: -1.4 * (0.5 + 0.5 * np.cos(p))),
              ("left_shoulder", "x", lambda p: -1.5 + 0.1 * np.cos(p)),
              ("left_elbow", "x", lambda p: -1.4 * (0.5 - 0.5 * np.cos(p)))],
    "march in place": [("left_hip", "x", lambda p: -0.7 * np.clip(np.sin(p), 0, None)),
                       ("left_knee", "x", lambda p: 1.2 * np.clip(np.sin(p), 0, None)),
                       ("right_hip", "x", lambda p: -0.7 * np.clip(-np.sin(p), 0, None)),
                       ("right_knee", "x", lambda p: 1.2 * np.clip(-np.sin(p), 0, None)),
                       ("left_shoulder", "x", lambda p: 0.4 * np.sin(p)),
                       ("right_shoulder", "x", lambda p: -0.4 * np.sin(p))],
}

XSUB_TRAIN_SUBJECTS = [1, 2, 3, 4, 5, 6, 7, 8]
XVIEW_TRAIN_CAMERAS = [2, 3]
XSET_TRAIN_SETUPS = [2]
_CAMERA_YAW = {1: 0.0, 2: np.pi / 4, 3: -np.pi / 4}  # like NTU: front, two 45° views


def _rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(T, 3, 3)`` about a body axis for per-frame angles."""
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(angle), np.zeros_like(angle)
    rows = {
        "x": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def _subtrees() -> dict[int, np.ndarray]:
    """For each joint, the joints it carries (itself and its descendants) in a tree rooted at the pelvis."""
    parents = parents_from_root(NTU25.num_joints, NTU25.edges, NTU25.index(_KINEMATIC_ROOT))
    masks = {}
    for joint in range(NTU25.num_joints):
        mask = np.zeros(NTU25.num_joints, dtype=bool)
        for other in range(NTU25.num_joints):
            walk = other
            while walk >= 0 and walk != joint:
                walk = parents[walk]
            mask[other] = walk == joint
        masks[joint] = mask
    return masks


class SyntheticSkeletons:
    """Deterministic generator of the synthetic action set (same seed → same data, bit for bit)."""

    def __init__(self, num_subjects: int = 12, num_cameras: int = 3, num_setups: int = 2,
                 num_replications: int = 1, noise: float = 0.012, seed: int = 0) -> None:
        self.num_subjects, self.num_cameras = num_subjects, num_cameras
        self.num_setups, self.num_replications = num_setups, num_replications
        self.noise, self.seed = noise, seed
        self._rest = np.array([_REST[name] for name in NTU25.joints], dtype=np.float64)
        self._subtree = _subtrees()

    @property
    def class_names(self) -> list[str]:
        return list(ACTIONS)

    def records(self) -> list[SampleRecord]:
        return [
            SampleRecord(
                name=f"S{setup:03d}C{camera:03d}P{subject:03d}R{rep:03d}A{label + 1:03d}",
                label=label, subject=subject, camera=camera, setup=setup, replication=rep, bodies=1,
            )
            for setup in range(1, self.num_setups + 1)
            for camera in range(1, self.num_cameras + 1)
            for subject in range(1, self.num_subjects + 1)
            for rep in range(1, self.num_replications + 1)
            for label in range(len(ACTIONS))
        ]

    def sample(self, record: SampleRecord, num_person: int = 2) -> np.ndarray:
        """One sequence ``(T, num_person, 25, 3)`` in camera coordinates; persons after the first are 0."""
        key = (self.seed, record.subject, record.camera, record.setup, record.replication, record.label)
        rng = np.random.default_rng(key)
        subject_rng = np.random.default_rng((self.seed, record.subject))
        scale = subject_rng.uniform(0.85, 1.15)
        tempo = subject_rng.uniform(0.8, 1.25)
        length = int(rng.integers(48, 81))
        cycles = tempo * rng.uniform(1.5, 2.5)
        phase = np.linspace(0, 2 * np.pi * cycles, length) + rng.uniform(0, 2 * np.pi)
        amplitude = rng.uniform(0.75, 1.2)

        pose = np.broadcast_to(self._rest * scale, (length, *self._rest.shape)).copy()
        for joint_name, axis, angle_of in ACTIONS[self.class_names[record.label]]:
            joint = NTU25.index(joint_name)
            angle = amplitude * angle_of(phase)
            if axis == "lift":
                pose[:, :, 1] += scale * angle[:, None]
                continue
            mask = self._subtree[joint]
            pivot = pose[:, joint:joint + 1, :]
            rotated = np.einsum("tij,tvj->tvi", _rotation(axis, angle), pose[:, mask, :] - pivot)
            pose[:, mask, :] = rotated + pivot

        # setup moves the camera farther and higher; camera turns the view around the body
        distance = 2.6 + 0.8 * (record.setup - 1) + rng.uniform(-0.2, 0.2)
        yaw = _CAMERA_YAW.get(record.camera, 0.0) + rng.uniform(-0.15, 0.15)
        view = _rotation("y", np.array([yaw]))[0]
        camera_height = 0.9 + 0.3 * (record.setup - 1)
        world = pose + np.array([rng.uniform(-0.3, 0.3), 0.0, 0.0])
        coords = world @ view.T
        coords[..., 1] -= camera_height
        coords[..., 2] = distance - coords[..., 2]
        coords += rng.normal(0.0, self.noise, coords.shape)

        sequence = np.zeros((length, num_person, NTU25.num_joints, 3), dtype=np.float32)
        sequence[:, 0] = coords
        return sequence


def prepare_synthetic(store_dir: str | Path, *, num_subjects: int = 12, num_cameras: int = 3,
                      num_setups: int = 2, num_replications: int = 1, noise: float = 0.012,
                      num_person: int = 2, seed: int = 0) -> SkeletonStore:
    """Generate the synthetic set into a prepared store (a few seconds, with a progress bar)."""
    generator = SyntheticSkeletons(num_subjects, num_cameras, num_setups, num_replications, noise, seed)
    spec = StoreSpec(dataset="synthetic", layout=NTU25, num_person=num_person, channels=3,
                     source=f"procedural, seed {seed}", class_names=generator.class_names)
    samples = (Sample(record, generator.sample(record, num_person))
               for record in track(generator.records(), "generating synthetic skeletons"))
    return SkeletonStore(write_store(store_dir, spec, samples))
