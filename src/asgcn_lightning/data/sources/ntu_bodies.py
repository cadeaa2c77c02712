"""NTU RGB+D bodies: telling the performers from Kinect's spurious bodies, and joining their tracks.

The raw files hold every body Kinect tracked, including spurious ones fitted to furniture or
sensor noise. :func:`actor_sequence` turns a parsed file into at most two actors: implausible tracks
are removed *before* anything is ranked, because a noise body often jitters more than a performer
who stands still, so a motion-energy rule alone would keep the noise (see :func:`spurious_reason`).
"""

from __future__ import annotations

import numpy as np

from asgcn_lightning.data.formats.ntu_skeleton import BodyTrack, NtuSkeletonFile
from asgcn_lightning.errors import DataFormatError
from asgcn_lightning.skeleton.layouts import NTU25

NUM_PERSON = 2

# Body denoising thresholds, from the geometry of people versus Kinect's spurious bodies.
MIN_TRACK_FRACTION = 0.1  # flickering detections last a few frames; an actor is there most of the clip
MIN_HEIGHT_M = 0.6  # vertical extent of a person, even seated or a child, is above ~0.75 m
MAX_WIDTH_RATIO = 1.3  # a person with arms spread is about as wide as tall; wider is an object


def spurious_reason(body: BodyTrack, num_frames: int) -> str | None:
    """Why a body track is not a person, or None when it is plausible.

    Kinect fits skeletons to objects (a chair, a bag) next to the performer: these stay in view as
    long as the performer but are tiny (under ``MIN_HEIGHT_M`` from lowest to highest joint) or lie
    flat (wider than ``MAX_WIDTH_RATIO`` times their height), and their joints jitter, so they can
    out-move a performer who is nearly still. Medians over the track ignore a few odd frames (a
    fall, a crouch).
    """
    if len(body) < MIN_TRACK_FRACTION * num_frames:
        return f"short track ({len(body)} of {num_frames} frames)"
    extent = np.ptp(body.xyz, axis=1)  # (frames, xyz) spread over the joints
    height = float(np.median(extent[:, 1]))
    if height < MIN_HEIGHT_M:
        return f"tiny (median height {height:.2f} m)"
    width_ratio = float(np.median(extent[:, 0] / np.maximum(extent[:, 1], 1e-6)))
    if width_ratio > MAX_WIDTH_RATIO:
        return f"flat (median width/height {width_ratio:.2f})"
    return None


def motion_energy(body: BodyTrack) -> float:
    """Total variance of the joint positions over the track (m²): how much the body moves."""
    return float(np.var(body.xyz, axis=0).sum())


def select_actors(skeleton: NtuSkeletonFile, max_actors: int = NUM_PERSON) -> list[list[BodyTrack]]:
    """Tracks per actor slot, most active actor first.

    Plausible tracks are ranked by motion energy (all tracks if none is plausible, so a sample is
    never emptied). Kinect often gives one person a new bodyID mid-clip, and those fragments belong
    to the same actor: each track joins a slot it does not overlap in time — of several, the one
    whose body is nearest where the track begins or ends — or opens a new slot, or is dropped once
    ``max_actors`` slots are taken.
    """
    plausible = [body for body in skeleton.bodies if spurious_reason(body, skeleton.num_frames) is None]
    candidates = sorted(plausible or skeleton.bodies, key=motion_energy, reverse=True)
    slots: list[list[BodyTrack]] = []
    occupied: list[np.ndarray] = []
    for body in candidates:
        free = [i for i, used in enumerate(occupied) if not used[body.frames].any()]
        if free:
            best = min(free, key=lambda i: _distance_across_the_gap(body, slots[i]))
            slots[best].append(body)
            occupied[best][body.frames] = True
        elif len(slots) < max_actors:
            slots.append([body])
            occupied.append(np.zeros(skeleton.num_frames, dtype=bool))
            occupied[-1][body.frames] = True
    return slots


def _distance_across_the_gap(body: BodyTrack, slot: list[BodyTrack]) -> float:
    """Metres between the body's centre and the slot's at the slot's frame nearest in time to the body."""
    best_gap, distance = np.inf, np.inf
    for track in slot:
        for own, other in ((0, -1), (-1, 0)):  # the body after the track, or before it
            gap = abs(int(body.frames[own]) - int(track.frames[other]))
            if gap < best_gap:
                best_gap = gap
                distance = float(np.linalg.norm(body.xyz[own].mean(axis=0) - track.xyz[other].mean(axis=0)))
    return distance


def actor_sequence(skeleton: NtuSkeletonFile, max_actors: int = NUM_PERSON) -> tuple[np.ndarray, int]:
    """Frames ``(T, max_actors, 25, 3)`` float32 of the selected actors and how many there are.

    Absent actors are zeros; frames where no selected actor is present are dropped.
    """
    if not skeleton.bodies:
        raise DataFormatError(skeleton.path, "no body in any frame")
    slots = select_actors(skeleton, max_actors)
    frames = np.zeros((skeleton.num_frames, max_actors, NTU25.num_joints, 3), dtype=np.float32)
    present = np.zeros(skeleton.num_frames, dtype=bool)
    for actor, slot in enumerate(slots):
        for body in slot:
            frames[body.frames, actor] = body.xyz
            present[body.frames] = True
    return frames[present], len(slots)
