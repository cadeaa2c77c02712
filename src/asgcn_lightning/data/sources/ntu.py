"""NTU RGB+D 60/120: sample names, standard splits, the official lists, and the store preparation.

Each ``.skeleton`` file is parsed (:mod:`~asgcn_lightning.data.formats.ntu_skeleton`) and reduced
to its actors (:mod:`~asgcn_lightning.data.sources.ntu_bodies`) in worker processes.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from importlib import resources
from pathlib import Path

import numpy as np

from asgcn_lightning.data.classes import resolve_classes
from asgcn_lightning.data.formats.ntu_skeleton import read_ntu_skeleton
from asgcn_lightning.data.sources.ntu_bodies import NUM_PERSON, actor_sequence
from asgcn_lightning.data.sources.writer import Item, Sample, Skipped, StoreSpec, read_or_skip, write_store
from asgcn_lightning.data.store import SampleRecord, SkeletonStore
from asgcn_lightning.errors import UserError
from asgcn_lightning.progress import console, track
from asgcn_lightning.shutdown import die_with_parent
from asgcn_lightning.skeleton.layouts import NTU25

EDITIONS = (60, 120)
NTU60_SETUPS = 17  # NTU-60 is setups S001-S017 and actions A001-A060; NTU-120 adds S018-S032, A061-A120

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


# -- preparation ------------------------------------------------------------------------------------
def _prepare_file(path: str) -> tuple[np.ndarray | None, int, str]:
    """Worker: one file → (frames, actors, "") or (None, 0, problem) for a file that cannot be read."""
    with np.errstate(all="ignore"):  # absurd values overflow to inf, which the store writer reports
        result = read_or_skip(path, lambda: actor_sequence(read_ntu_skeleton(path)))
    if isinstance(result, Skipped):
        return None, 0, result.reason
    frames, actors = result
    return frames, actors, ""


def _results(paths: list[str], num_workers: int,
             cleanup: contextlib.ExitStack) -> Iterator[tuple[np.ndarray | None, int, str]]:
    """``_prepare_file`` over ``paths`` in order, in ``num_workers`` processes when more than one."""
    if num_workers <= 1 or len(paths) <= 1:
        return map(_prepare_file, paths)
    executor = ProcessPoolExecutor(num_workers, initializer=die_with_parent)  # none outlives a killed preparation
    # On an error, running chunks finish and the rest are cancelled: a multiprocessing.Pool would
    # kill its workers, and one killed while sending a result leaves a lock held and the pool hung.
    cleanup.callback(executor.shutdown, wait=True, cancel_futures=True)
    # chunks amortise the inter-process round trips; small enough to keep the progress bar moving
    return executor.map(_prepare_file, paths, chunksize=max(1, min(32, len(paths) // (16 * num_workers))))


def _ntu_items(paths: Sequence[Path], edition: int, wanted: set[int], subset: bool, num_workers: int) -> Iterator[Item]:
    """Skipped files first (bad names, the official list, duplicates), then every parsed sample in order."""
    missing = official_missing_samples(edition)
    jobs: list[tuple[Path, SampleRecord]] = []
    seen: dict[str, Path] = {}
    outside = 0
    for path in paths:
        name = path.name.split(".")[0]
        try:
            info = parse_ntu_name(name)
        except UserError:
            yield Skipped(path, "file name is not an NTU sample name (SsssCcccPpppRrrrAaaa)", listed=True)
            continue
        if info["action"] - 1 not in wanted or (edition == 60 and info["setup"] > NTU60_SETUPS):
            outside += 1
        elif name in missing:
            yield Skipped(path, MISSING_REASON, listed=True)
        elif name in seen:
            yield Skipped(path, f"duplicate of {seen[name]}", part_of=str(seen[name]))
        else:
            seen[name] = path
            jobs.append((path, SampleRecord(name=name, label=info["action"] - 1, subject=info["subject"],
                                            camera=info["camera"], setup=info["setup"],
                                            replication=info["replication"])))
    if outside:
        console().print(f"ignoring {outside} files outside NTU-{edition}{' or the class subset' if subset else ''}")
    with contextlib.ExitStack() as cleanup:
        results = _results([str(path) for path, _ in jobs], num_workers, cleanup)
        try:
            for (path, record), (frames, actors, problem) in track(zip(jobs, results, strict=True),
                                                                   f"parsing NTU-{edition} skeletons", total=len(jobs)):
                if frames is None:
                    yield Skipped(path, problem, label=record.label)
                else:
                    record.bodies = actors
                    yield Sample(record, frames, source=str(path))
        except BrokenProcessPool:  # a worker killed from outside (the kernel's out-of-memory killer, kill)
            raise UserError("a parse worker process was killed from outside (out of memory?), so the preparation "
                            "stopped; the previous store is unchanged") from None


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
    wanted = set(resolve_classes(classes, class_names)) if classes else set(range(edition))
    spec = StoreSpec(dataset=f"ntu{edition}", layout=NTU25, num_person=NUM_PERSON, channels=3, source=str(raw),
                     class_names=class_names)
    write_store(store_dir, spec, _ntu_items(paths, edition, wanted, bool(classes), num_workers))
    return SkeletonStore(store_dir)
