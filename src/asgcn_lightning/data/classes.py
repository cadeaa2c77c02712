"""Class subsets: which of a data set's classes a run uses, named by 1-based number or by name."""

from __future__ import annotations

from collections.abc import Sequence

from asgcn_lightning.errors import UserError


def resolve_classes(wanted: Sequence[int | str], class_names: Sequence[str]) -> list[int]:
    """Class subset as 0-based source labels; ints are 1-based class numbers (NTU's A001 = 1)."""
    labels: list[int] = []
    for item in wanted:
        if isinstance(item, str) and not item.isdigit():
            if item not in class_names:
                raise UserError(f"unknown class {item!r}; the data set's classes are {list(class_names)}")
            labels.append(list(class_names).index(item))
        else:
            number = int(item)
            if not 1 <= number <= len(class_names):
                raise UserError(f"class number {number} is outside 1..{len(class_names)}")
            labels.append(number - 1)
    if len(set(labels)) != len(labels):
        raise UserError(f"class subset {list(wanted)} names a class twice")
    return sorted(labels)
