"""The one loop that turns a source adapter's items into a prepared store.

Adapters never touch :class:`~asgcn_lightning.data.store.StoreWriter` themselves: they describe the
store (:class:`StoreSpec`) and yield :class:`Sample` and :class:`Skipped` items, so how samples are
checked, written, skipped and committed is decided here, once, for every source. One rule holds for
all of them: a sample that cannot be stored faithfully (non-finite once cast to float32, all zeros,
no frames) is skipped and listed with its reason; a preparation that loses too much of its input
(:mod:`~asgcn_lightning.data.sources.losses`), names a sample twice or leaves a split empty is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from asgcn_lightning.data.sources.losses import InputTally, current_loss_policy
from asgcn_lightning.data.store import SampleRecord, StoreWriter
from asgcn_lightning.errors import UserError, describe_error
from asgcn_lightning.schemas import LossPolicy
from asgcn_lightning.skeleton.layouts import Layout

TRAIN_SETUP, TEST_SETUP = 1, 2  # a source's own train/test partition, read by the ``predefined`` split
T = TypeVar("T")


@dataclass
class Sample:
    """One sample: its identity and frames ``(T, M, V, C)``; ``source``: the input it was cut from
    (default: the sample's own name), so the windows of one recording count as one input."""

    record: SampleRecord
    frames: np.ndarray
    source: str = ""


@dataclass
class Skipped:
    """A source file (or part of one) that gave no sample, and why.

    ``listed``: left out on purpose, not because it is broken: an official list says so, or its
    name is outside the source's naming convention; such files are counted, not lost.

    ``part_of``: the input this is a part of (a frame of a video, a window of a recording), which
    counts as lost only if nothing of it was stored; ``label``: the input's class, where known.
    """

    source: str | Path
    reason: str
    listed: bool = False
    part_of: str | None = None
    label: int | None = None


Item = Sample | Skipped


@dataclass
class StoreSpec:
    """What a store holds. ``class_names`` is read when the store is committed, so a source that
    learns its classes while reading (Kinetics-skeleton) fills the list in at the end of its items.
    ``splits``: the setup value of each of the source's own splits, by name; each must keep a sample."""

    dataset: str
    layout: Layout
    num_person: int
    channels: int
    source: str
    class_names: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    spatial_channels: int | None = None  # 2 for x, y, confidence; None: every channel up to the third is space


def read_or_skip(source: str | Path, read: Callable[[], T], *, part_of: str | None = None,
                 label: int | None = None) -> T | Skipped:
    """``read()``, or the :class:`Skipped` item saying why it failed: nothing one file holds stops a preparation."""
    try:
        return read()
    except Exception as error:  # any reader failure on one file is that file's problem
        return Skipped(source, describe_error(error), part_of=part_of, label=label)


def unstorable(frames: np.ndarray) -> str | None:
    """Why ``frames`` (already float32) cannot be stored faithfully; None when they can."""
    if frames.shape[0] < 1:
        return "no frames"
    if not np.isfinite(frames).all():
        frame = int(np.flatnonzero(~np.isfinite(frames).reshape(len(frames), -1).all(axis=1))[0])
        return f"frame {frame + 1}: a value is NaN or beyond the float32 range"
    if not frames.any():
        return "every joint is 0 0 0 in every frame (no skeleton data)"
    return None


def refuse_empty_classes(class_names: Sequence[str], labels: Iterable[int], where: str | Path) -> None:
    """A class of ``class_names`` that no input is labelled with is an error naming it (before any parsing)."""
    present = set(labels)
    empty = [name for index, name in enumerate(class_names) if index not in present]
    if empty:
        shown = ", ".join(map(repr, empty[:10])) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        raise UserError(f"{where}: no input for the class{'es' if len(empty) > 1 else ''} {shown}; "
                        "give each class its files or remove it")


class _Checks:
    """The writer's bookkeeping: inputs kept and lost, sample names and the setups that hold samples."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self.tally = InputTally()
        self.names: dict[str, tuple[str, int]] = {}  # sample name → (input, setup)

    def add_name(self, sample: Sample) -> None:
        record, source = sample.record, sample.source or sample.record.name
        other = self.names.get(record.name)
        if other is None:
            self.names[record.name] = (source, record.setup)
            return
        if other[1] != record.setup:
            raise UserError(f"sample {record.name!r} is in two splits (setup {other[1]} from {other[0]} and "
                            f"setup {record.setup} from {source}); a sample must be in one split only")
        raise UserError(f"two samples are named {record.name!r} ({other[0]} and {source}); sample names must be unique")

    def refusal(self, policy: LossPolicy) -> str | None:
        """Why the store must not be written under ``policy``: too much lost, or a split left empty."""
        if policy.accept:
            return None
        shortfalls = self.tally.shortfalls(policy, self.spec.class_names)
        kept = {setup for _, setup in self.names.values()}
        empty = [f"{name!r}" for name, setup in self.spec.splits.items() if setup not in kept]
        if empty:
            shortfalls.append(f"kept no sample of the split{'s' if len(empty) > 1 else ''} {', '.join(empty)}")
        if not shortfalls:
            return None
        causes = self.tally.largest_causes()
        return (f"the preparation {' and '.join(shortfalls)}{'; largest causes: ' + causes if causes else ''}. "
                "Fix or remove those inputs, or keep what was read with losses.accept=true")


def write_store(store_dir: str | Path, spec: StoreSpec, items: Iterable[Item]) -> Path:
    """Write every item to a new store at ``store_dir`` and commit it atomically; returns ``store_dir``.

    A failure, a refusal (see the module) or no usable sample leaves any previous store in place;
    the items' generator is closed either way, so an adapter's worker processes and open files are released.
    """
    checks = _Checks(spec)
    try:
        with StoreWriter(store_dir, dataset=spec.dataset, layout=spec.layout.name, num_person=spec.num_person,
                         num_joints=spec.layout.num_joints, channels=spec.channels, class_names=spec.class_names,
                         source=spec.source, layout_spec=spec.layout.to_spec(),
                         spatial_channels=spec.spatial_channels) as writer:
            for item in items:
                if isinstance(item, Sample):
                    _add(writer, checks, item)
                else:
                    writer.skip(item.source, item.reason, listed=item.listed)
                    if not item.listed:
                        checks.tally.skipped(item.part_of or str(item.source), item.reason, item.label,
                                             part=item.part_of is not None)
            writer.meta.class_names = list(spec.class_names)
            refusal = checks.refusal(current_loss_policy()) if checks.names else None
            if refusal:
                writer.fail(f"{writer.root}: {refusal}")
            return writer.commit()
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _add(writer: StoreWriter, checks: _Checks, sample: Sample) -> None:
    source = sample.source or sample.record.name
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is what the check below reports
        frames = np.asarray(sample.frames, dtype=np.float32)
    problem = None if frames.ndim != 4 else unstorable(frames)
    if problem:
        same = sample.record.name in (source, Path(source).stem)
        name = source if same else f"{source} ({sample.record.name})"
        writer.skip(name, problem)
        checks.tally.skipped(source, problem, sample.record.label, part=source != sample.record.name)
        return
    checks.add_name(sample)
    writer.add(sample.record, frames)
    checks.tally.stored(source, sample.record.label)
