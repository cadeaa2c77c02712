"""The prepared store: every data set, whatever its source format, ends up in this one layout.

A store is a folder holding

* ``frames.f32`` — all sequences back to back, float32, shape ``(total_frames, M, V, C)``, read
  through a memory map so a 114 k-sample NTU-120 store never has to fit in RAM;
* ``index.npz`` — one row per sample: name, offset and length into ``frames.f32``, label and the
  metadata that splits use (subject, camera, setup, replication), number of bodies;
* ``meta.json`` — data set name, joint layout, class names, shapes, and the source files that were
  skipped with the reason (never dropped silently); ``skipped.tsv`` lists the same as a log.

:class:`StoreWriter` builds the folder under a temporary name and renames it into place only after
everything is flushed, so a killed preparation never leaves a store that looks complete; the next
preparation removes what a killed one left (and puts the previous store back if it was killed
between the two renames).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from asgcn_lightning import progress
from asgcn_lightning.atomic import fsync_file, recover_folder, replace_folder, temporary_sibling, write_atomically
from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.layouts import Layout, make_layout

FORMAT_VERSION = 1
FRAMES_FILE = "frames.f32"
INDEX_FILE = "index.npz"
META_FILE = "meta.json"
SKIPPED_FILE = "skipped.tsv"
# how a source came to be skipped: a problem with the file, or a list that says to leave it out
PROBLEM, LISTED = "problem", "listed"
SUMMARY_PROBLEMS = 100  # malformed files named one by one in the printed summary (all are in skipped.tsv)
METADATA_KEYS = ("subject", "camera", "setup", "replication")


@dataclass
class SampleRecord:
    """One sample's identity; metadata that a data set does not have stays -1."""

    name: str
    label: int
    subject: int = -1
    camera: int = -1
    setup: int = -1
    replication: int = -1
    bodies: int = 1


@dataclass
class StoreMeta:
    """What a store holds; written last, so its presence marks a complete store.

    ``layout_spec`` is the full skeleton (joints, edges, centre...), so a store, and every run
    trained on it, describes its own layout whatever the config says.
    """

    dataset: str
    layout: str
    num_person: int
    num_joints: int
    channels: int
    class_names: list[str]
    num_samples: int = 0
    total_frames: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    source: str = ""
    layout_spec: dict[str, Any] | None = None
    spatial_channels: int | None = None  # coordinates among the channels (2: x, y, confidence); None: up to 3
    created: str = ""
    format_version: int = FORMAT_VERSION


class StoreWriter:
    """Append samples one by one, then :meth:`commit` atomically.

    Use as a context manager: leaving the block with an exception removes the temporary folder and
    leaves any previous store at ``root`` untouched. ``layout`` names a built-in layout, or a
    custom one described by ``layout_spec``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        dataset: str,
        layout: str,
        num_person: int,
        num_joints: int,
        channels: int,
        class_names: Sequence[str],
        source: str = "",
        layout_spec: dict[str, Any] | None = None,
        spatial_channels: int | None = None,
    ) -> None:
        self.root = Path(root)
        built = make_layout(**(layout_spec or {"name": layout}))
        if built.name != layout or built.num_joints != num_joints:
            raise ValueError(f"store {self.root}: layout {built.name} has {built.num_joints} joints, "
                             f"the store is declared as {layout} with {num_joints}")
        self.meta = StoreMeta(
            dataset=dataset,
            layout=layout,
            num_person=num_person,
            num_joints=num_joints,
            channels=channels,
            class_names=list(class_names),
            source=source,
            layout_spec=built.to_spec(),
            spatial_channels=spatial_channels,
        )
        self._tmp = temporary_sibling(self.root)
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            recover_folder(self.root)
            if self._tmp.exists():
                shutil.rmtree(self._tmp)
            self._tmp.mkdir()
            self._frames = open(self._tmp / FRAMES_FILE, "wb")  # noqa: SIM115 - closed in commit/abort
        except OSError as error:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise UserError(f"{self.root}: cannot write the store there ({error.strerror or error})") from None
        self._records: list[SampleRecord] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._committed = False

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.meta.num_person, self.meta.num_joints, self.meta.channels)

    def add(self, record: SampleRecord, frames: np.ndarray) -> None:
        """Append one sample, ``frames`` of shape ``(T, M, V, C)`` with ``T >= 1``."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 4 or frames.shape[1:] != self.frame_shape or frames.shape[0] < 1:
            raise ValueError(f"sample {record.name}: frames have shape {frames.shape}, "
                             f"expected (T>=1, {', '.join(map(str, self.frame_shape))})")
        if not np.isfinite(frames).all():
            raise ValueError(f"sample {record.name}: frames contain NaN or infinity")
        self._offsets.append(self.meta.total_frames)
        self._lengths.append(frames.shape[0])
        self._records.append(record)
        self._frames.write(np.ascontiguousarray(frames).tobytes())
        self.meta.total_frames += frames.shape[0]

    def skip(self, source: str | Path, reason: str, *, listed: bool = False) -> None:
        """Record a source file that could not be used, with the reason (reported, never silent).

        ``listed``: left out because a list says so (e.g. the official missing-skeleton list), not
        because the file is broken; the summary counts those instead of naming each one.
        """
        self.meta.skipped.append({"file": str(source), "reason": reason, "kind": LISTED if listed else PROBLEM})

    def _skipped_log(self) -> str:
        return "".join(f"{item['file']}\t{item['reason']}\n" for item in self.meta.skipped)

    def commit(self) -> Path:
        """Flush everything and move the finished store into place; returns ``root``."""
        if not self._records:
            first = "; ".join(f"{Path(item['file']).name}: {item['reason']}" for item in self.meta.skipped[:3])
            self.fail(f"{self.root}: no usable samples to store", f"first: {first}")
        self._frames.flush()
        os.fsync(self._frames.fileno())
        self._frames.close()
        columns: dict[str, np.ndarray] = {
            "name": np.array([r.name for r in self._records]),
            "offset": np.array(self._offsets, dtype=np.int64),
            "length": np.array(self._lengths, dtype=np.int32),
        }
        for key in ("label", *METADATA_KEYS, "bodies"):
            columns[key] = np.array([getattr(r, key) for r in self._records], dtype=np.int32)
        with open(self._tmp / INDEX_FILE, "wb") as handle:
            np.savez(handle, **columns)
        fsync_file(self._tmp / INDEX_FILE)
        if self.meta.skipped:
            (self._tmp / SKIPPED_FILE).write_text(self._skipped_log())
        self.meta.num_samples = len(self._records)
        self.meta.created = time.strftime("%Y-%m-%dT%H:%M:%S")
        (self._tmp / META_FILE).write_text(json.dumps(asdict(self.meta), indent=1))
        fsync_file(self._tmp / META_FILE)
        replace_folder(self._tmp, self.root)
        self._committed = True
        return self.root

    def fail(self, message: str, detail: str = "") -> NoReturn:
        """Give up: remove what was written, keep any previous store, and raise a :class:`UserError`.

        The skipped sources are listed beside the store (``<store>.skipped.tsv``), so the reasons
        survive the failed preparation; the message says where.
        """
        self.abort()
        if self.meta.skipped:
            log = self.root.parent / f"{self.root.name}.{SKIPPED_FILE}"
            write_atomically(log, self._skipped_log())
            message += f" ({len(self.meta.skipped)} source files skipped, all listed in {log}"
            message += f"; {detail})" if detail else ")"
        raise UserError(message)

    def abort(self) -> None:
        if not self._frames.closed:
            self._frames.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or not self._committed:
            self.abort()


class SkeletonStore:
    """Read-only view of a prepared store; sequences are read lazily from the memory map."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise UserError(f"{self.root}: no prepared data set here (missing {META_FILE})")
        try:
            raw = json.loads(meta_path.read_text())
            self.meta = StoreMeta(**raw)
        except (json.JSONDecodeError, TypeError) as error:
            raise UserError(f"{meta_path}: unreadable store metadata ({error})") from None
        if self.meta.format_version != FORMAT_VERSION:
            raise UserError(f"{self.root}: store format {self.meta.format_version}, this version reads "
                            f"{FORMAT_VERSION}; prepare the data set again")
        with np.load(self.root / INDEX_FILE) as index:
            self.index: dict[str, np.ndarray] = {key: index[key] for key in index.files}
        frames_path = self.root / FRAMES_FILE
        expected = self.meta.total_frames * int(np.prod(self.frame_shape)) * 4
        if frames_path.stat().st_size != expected:
            raise UserError(f"{frames_path}: {frames_path.stat().st_size} bytes, expected {expected}; "
                            "the store is damaged, prepare it again")
        self._frames: np.memmap | None = None

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.meta.num_person, self.meta.num_joints, self.meta.channels)

    @property
    def frames(self) -> np.memmap:
        # opened on first use so that each data-loader worker maps the file itself
        if self._frames is None:
            self._frames = np.memmap(self.root / FRAMES_FILE, dtype=np.float32, mode="r",
                                     shape=(self.meta.total_frames, *self.frame_shape))
        return self._frames

    def __len__(self) -> int:
        return len(self.index["name"])

    def sequence(self, i: int) -> np.ndarray:
        """Sample ``i`` as an array ``(T, M, V, C)`` (a copy, safe to modify)."""
        start = int(self.index["offset"][i])
        return np.array(self.frames[start:start + int(self.index["length"][i])])

    def layout(self, requested: str | dict[str, Any] | None = None,
               otherwise: str = "leave dataset.layout out to use the store's, or prepare the data again with that "
                                "layout") -> Layout:
        """The stored skeleton, or ``requested`` (``dataset.layout``) if it is a variant of it.

        A variant has the stored joints, in the stored order, and may join them by other bones or
        centre them elsewhere (``ntu25_asgcn``: the original AS-GCN hand bones); any other layout
        would read the stored joints as other ones, which is refused naming both and saying what to
        do ``otherwise``.
        """
        stored = make_layout(**(self.meta.layout_spec or {"name": self.meta.layout}))
        if stored.num_joints != self.meta.num_joints:
            raise UserError(f"{self.root}: layout {stored.name} has {stored.num_joints} joints, "
                            f"the stored data {self.meta.num_joints}")
        if requested is None:
            return stored
        spec = {"name": requested} if isinstance(requested, str) else dict(requested)
        try:
            wanted = make_layout(**spec)
        except TypeError as error:
            raise UserError(f"dataset.layout={spec}: {error}; give {{name: ..., joints: [...], edges: [...]}}") \
                from None
        except UserError as error:
            raise UserError(f"dataset.layout: {error}") from None
        if wanted.joints != stored.joints:
            raise UserError(f"dataset.layout={wanted.name} ({wanted.num_joints} joints) is not the layout of the "
                            f"prepared store {self.root}: {stored.name} ({stored.num_joints} joints); {otherwise}")
        return wanted

    def record(self, i: int) -> SampleRecord:
        fields = {key: int(self.index[key][i]) for key in ("label", *METADATA_KEYS, "bodies")}
        return SampleRecord(name=str(self.index["name"][i]), **fields)

    def __getstate__(self) -> dict[str, Any]:
        # the memory map is reopened in each worker process rather than pickled
        state = self.__dict__.copy()
        state["_frames"] = None
        return state


def _files(count: int, noun: str = "file") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def print_prepare_summary(store: SkeletonStore, console: Any = None) -> None:
    """Tell the user what a preparation produced and which source files it skipped, and why.

    Files skipped because a list says so are counted per reason; broken files are named one by one
    (the first :data:`SUMMARY_PROBLEMS`), so the few truncated files of a 114 k-file download are not
    hidden behind the hundreds of listed ones.
    """
    console = console or progress.console()
    meta = store.meta
    console.print(f"[bold]{meta.dataset}[/]: {meta.num_samples} samples, {meta.total_frames} frames, "
                  f"{len(meta.class_names)} classes, layout {meta.layout} → {store.root}")
    if not meta.skipped:
        return
    console.print(f"[yellow]{_files(len(meta.skipped), 'source file')} skipped[/] "
                  f"(listed in {store.root / SKIPPED_FILE}):")
    listed = Counter(item["reason"] for item in meta.skipped if item.get("kind") == LISTED)
    for reason, count in listed.most_common():
        console.print(f"  {_files(count)} {reason}")
    problems = [item for item in meta.skipped if item.get("kind") != LISTED]
    if problems:
        console.print(f"  {_files(len(problems))} unusable:")
    for item in problems[:SUMMARY_PROBLEMS]:
        console.print(f"    {item['file']}: {item['reason']}")
    if len(problems) > SUMMARY_PROBLEMS:
        console.print(f"    … and {len(problems) - SUMMARY_PROBLEMS} more in {store.root / SKIPPED_FILE}")
