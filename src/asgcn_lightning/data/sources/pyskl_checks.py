"""Whole-file checks of a pyskl pickle: names, splits and labels that no per-sample skip can repair.

Each refuses the file in one line that names the offending samples, splits or labels (the first few,
with their count), since storing it would train on silently wrong classes or partitions.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

from asgcn_lightning.data.formats.pyskl_pickle import PysklAnnotation, PysklContent, UnusableAnnotation
from asgcn_lightning.errors import UserError

SHOWN = 5  # names quoted in a message; the rest are counted


def _some(names: Sequence[object]) -> str:
    shown = ", ".join(str(n) for n in names[:SHOWN])
    return shown + (f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else "")


def check_names(path: Path, content: PysklContent) -> None:
    """Every annotation names its own sample: a duplicate ``frame_dir`` would be two samples under one name."""
    counts = collections.Counter(a.frame_dir if isinstance(a, PysklAnnotation) else a.name
                                 for a in content.annotations if not isinstance(a, UnusableAnnotation) or a.named)
    duplicates = [name for name, count in counts.items() if count > 1]
    if duplicates:
        raise UserError(f"{path}: {len(duplicates)} frame_dir name(s) used by more than one annotation: "
                        f"{_some(duplicates)}; every sample needs its own name")


def _pairs(splits: dict[str, list[str]]) -> list[tuple[str, str]]:
    """``(<x>train, <x>val | <x>test)`` pairs in the file's order."""
    return [(name, name[:-len("train")] + held_out) for name in splits if name.endswith("train")
            for held_out in ("val", "test") if name[:-len("train")] + held_out in splits]


def choose_splits(path: Path, splits: dict[str, list[str]], train: str | None,
                  test: str | None) -> tuple[str, str]:
    """The train and test split names: the given ones, else the file's first ``<x>train``/``<x>val`` pair."""
    if not splits:
        raise UserError(f"{path}: no 'split' dict naming the train and test samples; add one, e.g. "
                        "{'split': {'train': [frame_dir, ...], 'test': [...]}, 'annotations': [...]}")
    if train is None or test is None:
        pairs = [(a, b) for a, b in _pairs(splits) if train in (None, a) and test in (None, b)]
        if not pairs:
            raise UserError(f"{path}: cannot tell its train and test splits among {sorted(splits)}; "
                            "give dataset.split_train=<name> dataset.split_test=<name>")
        train, test = pairs[0]
    for option, wanted in (("split_train", train), ("split_test", test)):
        if wanted not in splits:
            raise UserError(f"{path}: no split {wanted!r} (dataset.{option}); the file has {sorted(splits)}")
    if train == test:
        raise UserError(f"dataset.split_train and dataset.split_test are both {train!r}: train and test must differ")
    both = sorted(set(splits[train]) & set(splits[test]))
    if both:
        raise UserError(f"{path}: {len(both)} sample(s) in both {train!r} and {test!r}: {_some(both)}")
    for name in (train, test):
        if not splits[name]:
            raise UserError(f"{path}: split {name!r} lists no samples")
    return train, test


def check_split_members(path: Path, content: PysklContent, train: str, test: str) -> None:
    """Every name the two splits list has an annotation (usable or not): else the split is not this file's."""
    annotated = {a.frame_dir if isinstance(a, PysklAnnotation) else a.name for a in content.annotations}
    for name in (train, test):
        missing = [member for member in content.splits[name] if member not in annotated]
        if missing:
            raise UserError(f"{path}: split {name!r} lists {len(missing)} sample(s) without an annotation: "
                            f"{_some(missing)}")


def check_labels(path: Path, annotations: Sequence[PysklAnnotation], names: Sequence[str] | None) -> list[str]:
    """The class names: ``names`` (one per label), else ``class_<i>`` for labels that are exactly 0..N-1.

    Labels must be whole numbers from 0; without names, every class up to the largest label must have
    samples, so one stray label (59 among 0-3, or 10^8) is refused instead of making empty classes.
    """
    fractional = [f"{a.frame_dir} ({a.label_text})" for a in annotations if a.label is None]
    if fractional:
        raise UserError(f"{path}: labels must be whole numbers from 0; {len(fractional)} are not: {_some(fractional)}")
    negative = [f"{a.frame_dir} ({a.label})" for a in annotations if a.label < 0]
    if negative:
        raise UserError(f"{path}: labels must be whole numbers from 0; {len(negative)} are negative: "
                        f"{_some(negative)}")
    if names is not None:
        outside = [f"{a.frame_dir} ({a.label})" for a in annotations if a.label >= len(names)]
        if outside:
            raise UserError(f"{path}: {len(outside)} label(s) outside the {len(names)} class names: {_some(outside)}")
        return list(names)
    present = sorted({int(a.label) for a in annotations})
    if present and present[-1] + 1 != len(present):
        highest = next(a for a in annotations if a.label == present[-1])
        gaps: list[int] = []  # the first few missing labels, found without walking up to the largest one
        for before, label in zip([-1, *present[:-1]], present, strict=True):
            gaps.extend(range(before + 1, min(label, before + 1 + SHOWN - len(gaps))))
        raise UserError(f"{path}: labels are not 0..N-1: label {present[-1]} ({highest.frame_dir}) among "
                        f"{len(present)} labels present leaves {present[-1] + 1 - len(present)} classes without "
                        f"samples (labels {', '.join(map(str, gaps))}...); fix the labels, or name every class with "
                        f"dataset.class_names=[...] (one name per label)")
    return [f"class_{label}" for label in range(len(present))]
