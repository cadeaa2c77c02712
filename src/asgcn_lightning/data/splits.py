"""Train / validation / test splits over a store's index.

A split's protocol decides the test set — by metadata (subject, camera, setup: NTU's cross-subject
trains on listed performers, cross-view on cameras 2 and 3, cross-setup on even setups; each data
set's config supplies its values) or at random — and the validation set is then carved out of the
training side, so that choosing checkpoints, schedules and hyperparameters never looks at the test
set. The carve-out holds out whole subjects where the samples have subjects (a model is then
validated on people it has not seen, as it is tested), else a class-stratified share of samples;
it is seeded by the run seed. ``val_fraction=0`` validates on the test set, as much of the
literature does: comparable to published numbers, but the test score is then an optimistic one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from asgcn_lightning.data.store import METADATA_KEYS
from asgcn_lightning.errors import UserError


class Partition(NamedTuple):
    """Store rows of each part; ``val`` is ``test`` itself when the split validates on the test set."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def validates_on_test(self) -> bool:
        return self.val is self.test


class Split:
    """A protocol's training side and test set (:meth:`sides`), then the validation set carved from the former."""

    def __init__(self, name: str, val_fraction: float = 0.1, val_seed: int = 0) -> None:
        if not 0 <= val_fraction < 1:
            raise UserError(f"split.val_fraction must be at least 0 and below 1, got {val_fraction}")
        self.name, self.val_fraction, self.val_seed = name, float(val_fraction), int(val_seed)

    def sides(self, index: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the protocol's training side (training + validation) and of its test set."""
        raise NotImplementedError

    def __call__(self, index: dict[str, np.ndarray], used: np.ndarray | None = None) -> Partition:
        """The three parts; ``used`` (a mask over the rows, e.g. a class subset) limits them to those rows."""
        train_side, test = self.sides(index)
        if used is not None:
            train_side, test = train_side[used[train_side]], test[used[test]]
        if self.val_fraction == 0:
            return Partition(train_side, test, test)
        train, val = carve_validation(index, train_side, self.val_fraction, self.val_seed)
        return Partition(train, val, test)


class MetadataSplit(Split):
    """Train on samples whose ``key`` (subject, camera, setup, replication) is in ``train_values``."""

    def __init__(self, name: str, key: str, train_values: Sequence[int] | None, val_fraction: float = 0.1,
                 val_seed: int = 0) -> None:
        super().__init__(name, val_fraction, val_seed)
        if key not in METADATA_KEYS:
            raise UserError(f"split {name!r}: unknown metadata key {key!r}; use one of {list(METADATA_KEYS)}")
        if not train_values:
            raise UserError(f"split {name!r}: this data set defines no {name} training values "
                            f"(dataset.split_values.{name}); choose another split")
        self.key, self.train_values = key, [int(v) for v in train_values]

    def sides(self, index: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        values = index[self.key]
        if (values < 0).all():
            raise UserError(f"split {self.name!r}: the data set has no {self.key} metadata; train it with split=random")
        train = np.isin(values, self.train_values)
        return np.flatnonzero(train), np.flatnonzero(~train)


class RandomSplit(Split):
    """A seeded random test set, stratified by label so every class with two or more samples is on both sides.

    ``seed`` fixes the test set whatever the run seed, so runs with different seeds test on the same samples.
    """

    def __init__(self, name: str = "random", test_fraction: float = 0.2, seed: int = 0, val_fraction: float = 0.1,
                 val_seed: int = 0) -> None:
        super().__init__(name, val_fraction, val_seed)
        if not 0 < test_fraction < 1:
            raise UserError(f"split {name!r}: test_fraction must be between 0 and 1, got {test_fraction}")
        self.test_fraction, self.seed = test_fraction, seed

    def sides(self, index: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(len(index["label"]))
        train, test = stratified_holdout(index["label"], rows, self.test_fraction, self.seed)
        return train, test


def stratified_holdout(labels: np.ndarray, rows: np.ndarray, fraction: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` split into (kept, held out), about ``fraction`` of each class held out.

    At least one sample of a class with two or more is held out and at least one kept; a class with a
    single sample is kept. Both parts are in ascending order.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = [np.zeros(0, dtype=rows.dtype)]
    row_labels = labels[rows]
    for label in np.unique(row_labels):
        members = rng.permutation(rows[row_labels == label])
        count = min(len(members) - 1, max(1, round(len(members) * fraction)))
        held.append(members[:count])
    is_held = np.isin(rows, np.concatenate(held))
    return rows[~is_held], rows[is_held]


def carve_validation(index: dict[str, np.ndarray], train_side: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``train_side`` split into (train, validation): whole subjects where every sample has one, else by class
    (else, every class having a single sample, a random share).

    Subjects are drawn in a seeded order while each brings the validation set's size closer to
    ``fraction`` of the training side (a set of ten subjects validates on one at 10 %, not on two);
    at least one subject validates and at least one trains.
    """
    subjects = index["subject"][train_side] if "subject" in index else np.full(len(train_side), -1)
    present = np.unique(subjects)
    if len(present) < 2 or (present < 0).any():
        train, val = stratified_holdout(index["label"], train_side, fraction, seed)
        if len(val) == 0 and len(train_side) > 1:  # every class a single sample: a random share then
            held = np.random.default_rng(seed).permutation(train_side)[:max(1, round(fraction * len(train_side)))]
            train, val = train_side[~np.isin(train_side, held)], np.sort(held)
        return train, val
    order = np.random.default_rng(seed).permutation(present)
    counts = {subject: int((subjects == subject).sum()) for subject in present}
    target = fraction * len(train_side)
    chosen, count = [], 0
    for subject in order[:-1]:
        if chosen and abs(count + counts[subject] - target) >= abs(count - target):
            break
        chosen.append(subject)
        count += counts[subject]
    is_val = np.isin(subjects, chosen)
    return train_side[~is_val], train_side[is_val]
