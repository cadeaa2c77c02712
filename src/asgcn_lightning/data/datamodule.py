"""One LightningDataModule for every data set: a prepared store, a split, transforms, a class subset."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler

from asgcn_lightning.data.classes import resolve_classes
from asgcn_lightning.data.provenance import differing_arguments, prepare_store, stale_store_message
from asgcn_lightning.data.sampling import NO_LABEL, STAND_IN, EvaluationSampler, GlobalBatchSampler
from asgcn_lightning.data.splits import Partition
from asgcn_lightning.data.store import META_FILE, SkeletonStore
from asgcn_lightning.data.transforms import Compose, Stream
from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.layouts import Layout

log = logging.getLogger(__name__)

Split = Callable[[dict[str, np.ndarray], np.ndarray], Partition]


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """Under DDP, each evaluation sample on exactly one process; None (Lightning's plain order) in one process.

    Lightning's default DistributedSampler pads the last batches by repeating samples so that every
    process gets as many, and the synced metrics then count those samples twice. Lightning keeps a
    sampler that is already distributed, so this one is used as it is.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return EvaluationSampler(dataset)


class SkeletonDataset(Dataset):
    """Samples of a store as ``(C, T, V, M)`` float tensors with (remapped) integer labels.

    Indexed by position, a sample seeds its transform's random draws from itself, so it looks the
    same in every evaluation. Indexed by ``(position, seed)``, as :class:`GlobalBatchSampler` yields
    training samples, it draws from that seed: new every epoch, yet the same whichever process,
    worker or (resumed) run loads it.
    """

    def __init__(self, store: SkeletonStore, indices: np.ndarray, labels: np.ndarray, layout: Layout,
                 transform: Compose) -> None:
        self.store, self.indices, self.labels = store, indices, labels
        self.layout, self.transform = layout, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, int]:
        """``(sample, label)``; a training item also carries its seed, which the model's noise draws from.

        The evaluation stand-in is the first sample, labelled :data:`NO_LABEL`.
        """
        if item == STAND_IN:
            return self[0][0], NO_LABEL
        position, seed = item if isinstance(item, tuple) else (item, int(self.indices[item]))
        rng = np.random.default_rng(seed)
        sequence = self.transform(self.store.sequence(int(self.indices[position])), self.layout, rng)
        sample = torch.from_numpy(sequence).permute(3, 0, 2, 1).contiguous()
        if isinstance(item, tuple):
            return sample, int(self.labels[position]), seed
        return sample, int(self.labels[position])


class SkeletonDataModule(L.LightningDataModule):
    """Train/val/test/predict loaders over a prepared store; a ``configs/dataset/*.yaml`` option builds it.

    ``prepare`` (a callable taking ``store_dir``) builds the store when ``auto_prepare`` is set and
    it is missing — used for the embedded synthetic set. Real data sets are prepared once by the
    user with ``python -m asgcn_lightning.prepare``; a missing store is then a clear error, and so is
    a store prepared with other settings than the ones this command gives: settings it leaves at
    their defaults are the store's (split names, persons, layout need no repeating).
    ``given_settings`` names the preparation settings the command gives itself (``None``: all).
    ``split`` gives the train / validation / test rows (:mod:`asgcn_lightning.data.splits`).
    ``layout`` (``dataset.layout``) is the stored skeleton or a variant of it (other bones, same
    joints); ``None``: the store's. ``stream`` ends both pipelines (joints, bones or their motion),
    so training, evaluation and ensembles read the same input. ``source_settings`` are the rest of
    the data set's config node (persons, window, split values, the source's folders): the prepare
    step, the split and the transforms read them by interpolation, and the prepared store's meta is
    what loading uses.
    """

    def __init__(
        self,
        store_dir: str | Path,
        split: Split,
        name: str = "dataset",
        classes: Sequence[int | str] | None = None,
        train_transforms: Sequence[Any] = (),
        eval_transforms: Sequence[Any] = (),
        stream: str | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        prepare: Callable[..., Any] | None = None,
        auto_prepare: bool = False,
        prepare_command: str | None = None,
        pin_memory: bool = False,
        seed: int = 0,
        layout: str | dict[str, Any] | None = None,
        given_settings: Sequence[str] | None = None,
        **source_settings: Any,
    ) -> None:
        super().__init__()
        self.store_dir = Path(store_dir)
        self.requested_layout = OmegaConf.to_container(layout) if isinstance(layout, DictConfig) else layout
        self.split, self.dataset_name = split, name
        self.classes = list(classes) if classes else None
        streams = [Stream(stream)] if stream else []
        self.train_transform = Compose([*train_transforms, *streams])
        self.eval_transform = Compose([*eval_transforms, *streams])
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self._prepare, self.auto_prepare = prepare, auto_prepare
        self.prepare_command = prepare_command or f"python -m asgcn_lightning.prepare dataset={name}"
        self.store: SkeletonStore | None = None
        self._reported: set[str] = set()  # what the log has said already: setup and checks run more than once
        self.given_settings = None if given_settings is None else set(given_settings)

    # -- preparation --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if (self.store_dir / META_FILE).is_file() and not self._stale():
            return
        if not (self.auto_prepare and self._prepare is not None):
            raise UserError(f"no prepared {self.dataset_name} data at {self.store_dir}; prepare it first with "
                            f"`{self.prepare_command}` (see the README)")
        self.store_dir.parent.mkdir(parents=True, exist_ok=True)
        # several processes (DDP ranks, sweep jobs) may start at once: one generates, the rest wait
        with FileLock(str(self.store_dir) + ".lock"):
            if not (self.store_dir / META_FILE).is_file() or self._stale():
                prepare_store(self._prepare, self.store_dir)

    def _stale(self) -> bool:
        """Whether the store was prepared with other settings: rebuilt when automatic, else an error.

        A prepared (not automatic) store keeps the settings it was prepared with: only a setting this
        command gives itself (``given_settings``) and that differs is an error.
        """
        differences = differing_arguments(self.store_dir, self._prepare) if self._prepare else {}
        if self.auto_prepare:
            return bool(differences)
        given = {key: values for key, values in differences.items()
                 if key == "preparer" or self.given_settings is None or key in self.given_settings}
        if given:
            raise UserError(stale_store_message(self.store_dir, self._prepare, self.prepare_command,
                                                differences=given))
        if differences:
            kept = "; ".join(f"{key}={recorded!r} (now {now!r})" for key, (recorded, now) in differences.items())
            self._report(f"{self.store_dir}: using the settings it was prepared with ({kept})")
        return False

    def _open(self) -> SkeletonStore:
        if self.store is None:
            self.prepare_data()
            self.store = SkeletonStore(self.store_dir)
            source = self.store.meta.class_names
            self.source_labels = resolve_classes(self.classes, source) if self.classes else list(range(len(source)))
            self.class_names = [source[label] for label in self.source_labels]
            self.layout = self.store.layout(self.requested_layout)
            # spatial transforms move the store's coordinates only (x, y of x, y, confidence)
            self.train_transform = Compose(self.train_transform.transforms, self.spatial_channels)
            self.eval_transform = Compose(self.eval_transform.transforms, self.spatial_channels)
        return self.store

    # -- what the model needs to know ---------------------------------------------------------------
    @property
    def num_class(self) -> int:
        self._open()
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self._open().meta.channels

    @property
    def spatial_channels(self) -> int | None:
        """Coordinates among the input channels (2 for x, y, confidence); None: every channel up to the third."""
        return self._open().meta.spatial_channels

    @property
    def num_person(self) -> int:
        return self._open().meta.num_person

    # -- splits ---------------------------------------------------------------------------------------
    def _labels(self) -> np.ndarray:
        """Every stored sample's label among the chosen classes (0..K-1), -1 for samples of other classes."""
        store = self._open()
        remap = np.full(len(store.meta.class_names), -1, dtype=np.int64)
        remap[self.source_labels] = np.arange(len(self.source_labels))
        return remap[store.index["label"]]

    def setup(self, stage: str | None = None) -> None:
        store = self._open()
        labels = self._labels()
        keep = labels >= 0
        partition = self.split(store.index, keep)  # validation carved from the chosen classes' samples
        train, val, test = partition
        name = getattr(self.split, "name", self.split)
        if len(train) == 0 or len(val) == 0 or len(test) == 0:
            raise UserError(f"split {name!r} leaves {len(train)} training, {len(val)} validation and {len(test)} test "
                            f"samples in {self.store_dir}; choose another split, split.val_fraction or class subset")
        self.train_set = SkeletonDataset(store, train, labels[train], self.layout, self.train_transform)
        self.test_set = SkeletonDataset(store, test, labels[test], self.layout, self.eval_transform)
        self.val_set = self.test_set if partition.validates_on_test else \
            SkeletonDataset(store, val, labels[val], self.layout, self.eval_transform)
        self._report(f"{self.dataset_name} split {name}: train {len(train)}, validation {len(val)}, "
                     f"test {len(test)} samples")
        if partition.validates_on_test:
            self._report("split.val_fraction=0: validating on the test set, so checkpoint choice, schedules and "
                         "sweeps see it and its score is optimistic (comparable to the literature only)",
                         logging.WARNING)

    def _report(self, message: str, level: int = logging.INFO) -> None:
        """Log ``message`` once (on process 0)."""
        if message not in self._reported:
            self._reported.add(message)
            _log(level, message)

    def unsplit_set(self) -> SkeletonDataset:
        """Every sample of the chosen classes in store order, with eval transforms: for evaluations that need
        no split (a foreign model, few-shot pools), so a store whose samples all fall on one side still serves."""
        labels = self._labels()
        indices = np.flatnonzero(labels >= 0)
        return SkeletonDataset(self._open(), indices, labels[indices], self.layout, self.eval_transform)

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        # a generator of its own: starting worker processes then draws nothing from the global random
        # stream, which a resumed run (new workers) and the uninterrupted one (persistent workers) must share
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        sampler = GlobalBatchSampler(self.train_set, self.batch_size, self.seed)
        if self.trainer is not None:
            # Lightning creates the first iterator (and worker processes fetch ahead) before it sets the epoch
            # of the sampler: a resumed run would start with epoch 0's order
            sampler.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return self._loader(self.train_set, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, evaluation_sampler(self.val_set))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, evaluation_sampler(self.test_set))

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


@rank_zero_only
def _log(level: int, message: str) -> None:
    log.log(level, message)
