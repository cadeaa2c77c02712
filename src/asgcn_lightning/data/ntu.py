"""NTU RGB+D 60/120: sample names, standard splits, body denoising and store preparation.

The raw files hold every body Kinect tracked, including spurious ones fitted to furniture or
sensor noise. :func:`actor_sequence` turns a parsed file into at most two actors: implausible tracks
are removed *before* anything is ranked, because a noise body often jitters more than a performer
who stands still, so a motion-energy rule alone would keep the noise (see :func:`spurious_reason`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from asgcn_lightning.data.formats.ntu_skeleton import BodyTrack, NtuSkeletonFile, read_ntu_skeleton
from asgcn_lightning.data.store import SampleRecord, SkeletonStore, StoreWriter
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.skeleton.layouts import NTU25

EDITIONS = (60, 120)
NTU60_SETUPS = 17  # NTU-60 is setups S001-S017 and actions A001-A060; NTU-120 adds S018-S032, A061-A120
NUM_PERSON = 2

NTU60_XSUB_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
NTU120_XSUB_TRAIN_SUBJECTS = (
    *NTU60_XSUB_TRAIN_SUBJECTS, 45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81,
    82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
)
NTU_XVIEW_TRAIN_CAMERAS = (2, 3)
NTU120_XSET_TRAIN_SETUPS = tuple(range(2, 33, 2))
# the training values of each standard benchmark, and the sample field each one reads
SPLIT_VALUES: dict[int, dict[str, tuple[int, ...]]] = {
    60: {"xsub": NTU60_XSUB_TRAIN_SUBJECTS, "xview": NTU_XVIEW_TRAIN_CAMERAS},
    120: {"xsub": NTU120_XSUB_TRAIN_SUBJECTS, "xset": NTU120_XSET_TRAIN_SETUPS},
}
SPLIT_FIELDS = {"xsub": "subject", "xview": "camera", "xset": "setup"}

MISSING_LISTS = {60: "NTU_RGBD_samples_with_missing_skeletons.txt",
                 120: "NTU_RGBD120_samples_with_missing_skeletons.txt"}
MISSING_REASON = "on the official missing-skeleton list"

# Body denoising thresholds, from the geometry of people versus Kinect's spurious bodies.
MIN_TRACK_FRACTION = 0.1  # flickering detections last a few frames; an actor is there most of the clip
MIN_HEIGHT_M = 0.6  # vertical extent of a person, even seated or a child, is above ~0.75 m
MAX_WIDTH_RATIO = 1.3  # a person with arms spread is about as wide as tall; wider is an object

_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


def parse_ntu_name(name: str) -> dict[str, int]:
    """Setup, camera, subject (performer), replication and action of ``SsssCcccPpppRrrrAaaa``.

    Accepts a bare name, a file name or a path.
    """
    stem = Path(name).name.split(".")[0]
    match = _NAME.fullmatch(stem)
    if match is None:
        raise UserError(f"{name!r} is not an NTU sample name (SsssCcccPpppRrrrAaaa)")
    setup, camera, subject, replication, action = map(int, match.groups())
    return {"setup": setup, "camera": camera, "subject": subject, "replication": replication,
            "action": action}


def _resource_lines(filename: str) -> list[str]:
    text = resources.files("asgcn_lightning").joinpath("resources", "ntu", filename).read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def ntu_class_names(edition: int = 60) -> list[str]:
    """The official action names, ``A001`` first."""
    _check_edition(edition)
    return _resource_lines("class_names.txt")[:edition]


def official_missing_samples(edition: int = 60) -> set[str]:
    """Names on the dataset authors' list of samples with missing or incomplete skeletons."""
    _check_edition(edition)
    return {line for line in _resource_lines(MISSING_LISTS[edition]) if _NAME.fullmatch(line)}


def _check_edition(edition: int) -> None:
    if edition not in EDITIONS:
        raise UserError(f"NTU edition {edition!r}: choose 60 or 120")


# -- body denoising ---------------------------------------------------------------------------------
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


# -- preparation ------------------------------------------------------------------------------------
def _prepare_file(path: str) -> tuple[np.ndarray | None, int, str]:
    """Worker: one file → (frames, actors, "") or (None, 0, problem) for a malformed file."""
    try:
        frames, actors = actor_sequence(read_ntu_skeleton(path))
    except DataFormatError as error:
        return None, 0, error.problem
    return frames, actors, ""


def _results(paths: list[str], num_workers: int,
             cleanup: contextlib.ExitStack) -> Iterator[tuple[np.ndarray | None, int, str]]:
    """``_prepare_file`` over ``paths`` in order, in ``num_workers`` processes when more than one."""
    if num_workers <= 1 or len(paths) <= 1:
        return map(_prepare_file, paths)
    executor = ProcessPoolExecutor(num_workers)
    # On an error, running chunks finish and the rest are cancelled: a multiprocessing.Pool would
    # kill its workers, and one killed while sending a result leaves a lock held and the pool hung.
    cleanup.callback(executor.shutdown, wait=True, cancel_futures=True)
    # chunks amortise the inter-process round trips; small enough to keep the progress bar moving
    return executor.map(_prepare_file, paths, chunksize=max(1, min(32, len(paths) // (16 * num_workers))))


def prepare_ntu(
    store_dir: str | Path,
    *,
    raw_dir: str | Path | None,
    edition: int = 60,
    classes: Sequence[int | str] | None = None,
    num_workers: int | None = None,
) -> SkeletonStore:
    """Parse a folder of NTU ``.skeleton`` files (searched recursively) into a prepared store.

    Stores raw camera-space xyz of up to two actors per sample; labels are ``action - 1`` over the
    edition's classes even with a ``classes`` subset (1-based ids or names), so a store made for a
    subset reads the same way as a full one. Samples on the official missing-skeleton list and
    malformed files are recorded as skipped, with the reason. ``num_workers``: parsing processes,
    ``None`` for one per CPU core.
    """
    _check_edition(edition)
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    if raw_dir is None:
        raise UserError("dataset.raw_dir is not set: download the NTU RGB+D skeleton files and pass "
                        "dataset.raw_dir=<folder of .skeleton files>")
    raw = Path(raw_dir).expanduser()
    if not raw.is_dir():
        raise UserError(f"{raw}: NTU raw folder not found (dataset.raw_dir should hold the .skeleton files)")
    paths = sorted(raw.rglob("*.skeleton"), key=lambda p: (p.name, str(p)))
    if not paths:
        raise UserError(f"{raw}: no .skeleton files found "
                        "(expected the NTU files, like S001C001P001R001A001.skeleton)")
    class_names = ntu_class_names(edition)
    if classes:
        from asgcn_lightning.data.datamodule import resolve_classes  # deferred: imports torch

        wanted = set(resolve_classes(classes, class_names))
    else:
        wanted = set(range(edition))
    missing = official_missing_samples(edition)
    console = Console(stderr=True)

    with StoreWriter(store_dir, dataset=f"ntu{edition}", layout=NTU25.name, num_person=NUM_PERSON,
                     num_joints=NTU25.num_joints, channels=3, class_names=class_names,
                     source=str(raw)) as writer:
        jobs: list[tuple[Path, SampleRecord]] = []
        seen: dict[str, Path] = {}
        outside = 0
        for path in paths:
            name = path.name.split(".")[0]
            try:
                info = parse_ntu_name(name)
            except UserError:
                writer.skip(path, "file name is not an NTU sample name (SsssCcccPpppRrrrAaaa)")
                continue
            if info["action"] - 1 not in wanted or (edition == 60 and info["setup"] > NTU60_SETUPS):
                outside += 1
            elif name in missing:
                writer.skip(path, MISSING_REASON, listed=True)
            elif name in seen:
                writer.skip(path, f"duplicate of {seen[name]}")
            else:
                seen[name] = path
                jobs.append((path, SampleRecord(name=name, label=info["action"] - 1, subject=info["subject"],
                                                camera=info["camera"], setup=info["setup"],
                                                replication=info["replication"])))
        if outside:
            subset = " or the class subset" if classes else ""
            console.print(f"ignoring {outside} files outside NTU-{edition}{subset}")
        with contextlib.ExitStack() as cleanup:
            results = _results([str(path) for path, _ in jobs], num_workers, cleanup)
            progress = cleanup.enter_context(Progress(console=console))
            for (path, record), (frames, actors, problem) in progress.track(
                    zip(jobs, results, strict=True), total=len(jobs),
                    description=f"parsing NTU-{edition} skeletons"):
                if frames is None:
                    writer.skip(path, problem)
                else:
                    record.bodies = actors
                    writer.add(record, frames)
        writer.commit()
    return SkeletonStore(store_dir)
