"""Turn per-frame 2D detections into a fixed number of people with stable identities.

Pose estimators such as OpenPose list the people of each frame in no particular order, so slot 0
may be the performer in one frame and a bystander in the next. Training needs the opposite: each
body slot follows one person. This is done in two steps:

1. :func:`track_people` links detections of consecutive frames into short-term *tracks* by
   greedy best-first matching on the mean distance of the joints both poses are confident about,
   measured in body sizes (so the rule holds for pixels and normalised units alike), plus a
   penalty for joints only one pose has, so a fragment (a lone head) does not steal a track;
2. :func:`select_main_people` ranks tracks by total joint confidence (long, well-seen and usually
   large people first) and chains tracks that do not overlap in time and start near where an
   earlier one ended into one *slot*, so a performer lost for a few frames stays in the same slot.

Arrays are ``(T, M, V, C)``; for 2D data C is (x, y, confidence) and a missing joint is all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _present(poses: np.ndarray, has_confidence: bool) -> np.ndarray:
    """Which joints hold data: any non-zero coordinate. A joint with coordinates and a confidence of 0 is
    annotated with low confidence, not missing: the confidence stays a feature the model weighs."""
    return (_coordinates(poses, has_confidence) != 0).any(axis=-1)


def _coordinates(poses: np.ndarray, has_confidence: bool) -> np.ndarray:
    return poses[..., :-1] if has_confidence else poses


def _size(coords: np.ndarray, mask: np.ndarray) -> float:
    """Body size: the diagonal of the bounding box of the joints in ``mask``."""
    if not mask.any():
        return 0.0
    points = coords[mask]
    return float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))


def _distance(a: np.ndarray, b: np.ndarray, min_confidence: float) -> tuple[float, float]:
    """Mean distance of the joints confident in both poses (centroids when they share none), and
    the share of their confident joints that only one of them has."""
    mask_a, mask_b = a[:, -1] >= min_confidence, b[:, -1] >= min_confidence
    common = mask_a & mask_b
    unmatched = 1.0 - common.sum() / max(int((mask_a | mask_b).sum()), 1)
    if common.any():
        return float(np.linalg.norm(a[common, :-1] - b[common, :-1], axis=-1).mean()), unmatched
    if not (mask_a.any() and mask_b.any()):
        return np.inf, unmatched
    return float(np.linalg.norm(a[mask_a, :-1].mean(axis=0) - b[mask_b, :-1].mean(axis=0))), unmatched


def track_people(
    frames: Sequence[np.ndarray],
    *,
    min_confidence: float = 0.05,
    gate: float = 0.5,
    max_gap: int = 10,
    mismatch_weight: float = 0.5,
) -> np.ndarray:
    """Link per-frame detections ``frames[t]`` of shape ``(P_t, V, 3)`` into tracks ``(T, K, V, 3)``.

    A detection can continue a track when its distance to the track's last pose, in units of the
    larger body size, is below ``gate``; pairs are taken cheapest first, the cost adding
    ``mismatch_weight`` times the share of joints only one of the two poses has. Tracks unseen
    for more than ``max_gap`` frames end; :func:`select_main_people` can chain them again.
    Detections with no joint above ``min_confidence`` are ignored. Tracks come out ordered by
    total confidence, highest first; an empty result has K = 0.
    """
    num_joints = next((f.shape[1] for f in frames if len(f)), 0)
    detections = [
        [person for person in np.asarray(f, dtype=np.float32) if (person[:, -1] >= min_confidence).any()]
        for f in frames
    ]
    sizes = [_size(p[:, :-1], p[:, -1] >= min_confidence) for people in detections for p in people]
    # partial detections (a lone arm) have a tiny box; never let the size unit collapse below this
    floor = 0.25 * float(np.median(sizes)) if sizes else 1.0
    tracks: list[dict[int, np.ndarray]] = []
    last_seen: list[int] = []
    for t, people in enumerate(detections):
        active = [k for k in range(len(tracks)) if t - last_seen[k] <= max_gap]
        candidates: list[tuple[float, int, int]] = []
        for k in active:
            previous = tracks[k][last_seen[k]]
            for col, person in enumerate(people):
                unit = max(_size(previous[:, :-1], previous[:, -1] >= min_confidence),
                           _size(person[:, :-1], person[:, -1] >= min_confidence), floor)
                distance, unmatched = _distance(previous, person, min_confidence)
                if distance / unit <= gate:
                    candidates.append((distance / unit + mismatch_weight * unmatched, k, col))
        # greedy, best pair first: an optimal assignment would rather pair two poor matches than
        # leave one good match alone when the other track has nothing near it
        matched: set[int] = set()
        continued: set[int] = set()
        for _, k, col in sorted(candidates):
            if k not in continued and col not in matched:
                tracks[k][t] = people[col]
                last_seen[k] = t
                continued.add(k)
                matched.add(col)
        for col, person in enumerate(people):
            if col not in matched:
                tracks.append({t: person})
                last_seen.append(t)
    result = np.zeros((len(frames), len(tracks), num_joints, 3), dtype=np.float32)
    for k, track in enumerate(tracks):
        for t, pose in track.items():
            result[t, k] = pose
    order = np.argsort(-result[..., -1].sum(axis=(0, 2)), kind="stable")
    return result[:, order]


def select_main_people(
    tracks: np.ndarray,
    num_person: int,
    *,
    has_confidence: bool = True,
    stitch_gate: float = 1.5,
) -> np.ndarray:
    """Keep the ``num_person`` main people of ``tracks`` ``(T, K, V, C)`` → ``(T, num_person, V, C)``.

    Tracks are taken in order of total confidence (joint count without a confidence channel).
    A track joins an existing slot when it does not overlap that slot in time and starts or ends
    within ``stitch_gate`` body sizes of it (the same person re-detected after a gap); otherwise
    it opens a new slot while fewer than ``num_person`` exist, and is dropped after that. Slots
    are ordered by total confidence, so slot 0 is the main performer. Missing entries are zero.
    """
    num_frames, _, num_joints, channels = tracks.shape
    present = _present(tracks, has_confidence)
    weight = tracks[..., -1] * present if has_confidence else present.astype(np.float32)
    alive = present.any(axis=-1)
    scores = weight.sum(axis=(0, 2))
    coords = _coordinates(tracks, has_confidence)
    slots: list[list[int]] = []
    occupied: list[np.ndarray] = []
    for k in np.argsort(-scores, kind="stable"):
        if not alive[:, k].any():
            continue
        free = [s for s in range(len(slots)) if not (occupied[s] & alive[:, k]).any()]
        gaps = [_boundary_distance(coords, present, alive, occupied[s], slots[s], k) for s in free]
        best = int(np.argmin(gaps)) if gaps else -1
        if best >= 0 and gaps[best] <= stitch_gate:
            slots[free[best]].append(int(k))
            occupied[free[best]] |= alive[:, k]
        elif len(slots) < num_person:
            slots.append([int(k)])
            occupied.append(alive[:, k].copy())
    slots.sort(key=lambda members: -scores[members].sum())
    result = np.zeros((num_frames, num_person, num_joints, channels), dtype=np.float32)
    for slot, members in enumerate(slots):
        for k in members:
            result[alive[:, k], slot] = tracks[alive[:, k], k]
    return result


def _boundary_distance(
    coords: np.ndarray, present: np.ndarray, alive: np.ndarray, slot_frames: np.ndarray,
    members: list[int], k: int,
) -> float:
    """Centroid distance, in body sizes, between track ``k`` and a slot at the nearest frames in time."""
    track_frames = np.flatnonzero(alive[:, k])
    slot_times = np.flatnonzero(slot_frames)
    before = slot_times[slot_times < track_frames[0]]
    after = slot_times[slot_times > track_frames[-1]]
    pairs = []
    if len(before):
        pairs.append((int(before[-1]), int(track_frames[0])))
    if len(after):
        pairs.append((int(after[0]), int(track_frames[-1])))
    best = np.inf
    for slot_t, track_t in pairs:
        owner = next(m for m in members if alive[slot_t, m])
        a_mask, b_mask = present[slot_t, owner], present[track_t, k]
        a, b = coords[slot_t, owner], coords[track_t, k]
        unit = max(_size(a, a_mask), _size(b, b_mask), 1e-6)
        best = min(best, float(np.linalg.norm(a[a_mask].mean(0) - b[b_mask].mean(0))) / unit)
    return best


def normalise_by_image_size(
    poses: np.ndarray, image_size: tuple[float, float], *, has_confidence: bool = True,
) -> np.ndarray:
    """Pixel (x, y) → centred on the image ``(width, height)`` and divided by its longer side; missing joints stay 0.

    The frame, not the body, stays the reference, so position in the frame stays informative; one
    scale for both axes keeps the body's proportions (a wide frame does not squash it), and the
    longer axis spans ``[-0.5, 0.5]``.
    """
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    out = np.array(poses, dtype=np.float32)
    present = _present(out, has_confidence)
    scale = float(max(width, height))
    out[..., 0] = (out[..., 0] - width / 2) / scale
    out[..., 1] = (out[..., 1] - height / 2) / scale
    out[~present] = 0
    return out


def normalise_by_extent(poses: np.ndarray) -> np.ndarray:
    """(x, y) centred on the box around all present joints and divided by its larger side.

    For footage whose image size is unknown: the result lies in about ``[-0.5, 0.5]`` like
    :func:`normalise_by_image_size`, but is relative to the people rather than the frame.
    """
    out = np.array(poses, dtype=np.float32)
    present = _present(out, has_confidence=True)
    if not present.any():
        return out
    points = out[..., :2][present]
    low, high = points.min(axis=0), points.max(axis=0)
    scale = max(float((high - low).max()), 1e-6)
    out[..., :2] = (out[..., :2] - (low + high) / 2) / scale
    out[~present] = 0
    return out
