"""Train/test splits over a store's index: by metadata (subject, camera, setup) or at random.

NTU's protocols are metadata splits — cross-subject trains on listed performers, cross-view on
cameras 2 and 3, cross-setup on even setups — and each data set's config supplies its own values.
As in the NTU literature, the held-out part serves as both validation and test set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asgcn_lightning.data.store import METADATA_KEYS
from asgcn_lightning.errors import UserError


class MetadataSplit:
    """Train on samples whose ``key`` (subject, camera, setup, replication) is in ``train_values``."""

    def __init__(self, name: str, key: str, train_values: Sequence[int] | None) -> None:
        if key not in METADATA_KEYS:
            raise UserError(f"split {name!r}: unknown metadata key {key!r}; use one of {list(METADATA_KEYS)}")
        if not train_values:
            raise UserError(f"split {name!r}: this data set defines no {name} training values "
                            f"(dataset.split_values.{name}); choose another split")
        self.name, self.key, self.train_values = name, key, [int(v) for v in train_values]

    def __call__(self, index: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        values = index[self.key]
        if (values < 0).all():
            raise UserError(f"split {self.name!r}: the data set has no {self.key} metadata; train it with split=random")
        train = np.isin(values, self.train_values)
        return np.flatnonzero(train), np.flatnonzero(~train)


class RandomSplit:
    """A seeded random split, stratified by label so every class with two or more samples is on both sides."""

    def __init__(self, name: str = "random", test_fraction: float = 0.2, seed: int = 0) -> None:
        if not 0 < test_fraction < 1:
            raise UserError(f"split {name!r}: test_fraction must be between 0 and 1, got {test_fraction}")
        self.name, self.test_fraction, self.seed = name, test_fraction, seed

    def __call__(self, index: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        test: list[np.ndarray] = []
        for label in np.unique(index["label"]):
            members = rng.permutation(np.flatnonzero(index["label"] == label))
            # at least one sample of a class on each side; a class with a single sample trains
            count = min(len(members) - 1, max(1, round(len(members) * self.test_fraction)))
            test.append(members[:count])
        is_test = np.zeros(len(index["label"]), dtype=bool)
        is_test[np.concatenate(test)] = True
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)
