"""The one loop that turns a source adapter's items into a prepared store.

Adapters never touch :class:`~asgcn_lightning.data.store.StoreWriter` themselves: they describe the
store (:class:`StoreSpec`) and yield :class:`Sample` and :class:`Skipped` items, so how samples are
checked, written, skipped and committed is decided here, once, for every source.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asgcn_lightning.data.store import SampleRecord, StoreWriter
from asgcn_lightning.skeleton.layouts import Layout

TRAIN_SETUP, TEST_SETUP = 1, 2  # a source's own train/test partition, read by the ``predefined`` split


@dataclass
class Sample:
    """One sample: its identity and frames ``(T, M, V, C)``."""

    record: SampleRecord
    frames: np.ndarray


@dataclass
class Skipped:
    """A source file (or part of one) that gave no sample, and why; ``listed``: a list said to leave it out."""

    source: str | Path
    reason: str
    listed: bool = False


Item = Sample | Skipped


@dataclass
class StoreSpec:
    """What a store holds. ``class_names`` is read when the store is committed, so a source that
    learns its classes while reading (Kinetics-skeleton) fills the list in at the end of its items."""

    dataset: str
    layout: Layout
    num_person: int
    channels: int
    source: str
    class_names: list[str] = field(default_factory=list)


def write_store(store_dir: str | Path, spec: StoreSpec, items: Iterable[Item]) -> Path:
    """Write every item to a new store at ``store_dir`` and commit it atomically; returns ``store_dir``.

    A failure (or no usable sample) leaves any previous store in place; the items' generator is
    closed either way, so an adapter's worker processes and open files are released.
    """
    try:
        with StoreWriter(store_dir, dataset=spec.dataset, layout=spec.layout.name, num_person=spec.num_person,
                         num_joints=spec.layout.num_joints, channels=spec.channels, class_names=spec.class_names,
                         source=spec.source, layout_spec=spec.layout.to_spec()) as writer:
            for item in items:
                if isinstance(item, Skipped):
                    writer.skip(item.source, item.reason, listed=item.listed)
                else:
                    writer.add(item.record, item.frames)
            writer.meta.class_names = list(spec.class_names)
            return writer.commit()
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
