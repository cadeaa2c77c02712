"""What a preparation kept and lost, per input, and whether that is too much to write the store.

An *input* is what one sample (or one recording cut into windows) comes from: a source file, a
video, an entry of an archive. A skipped frame or window is part of its input, so an input is lost
only when nothing of it was stored. The policy (:class:`~asgcn_lightning.schemas.LossPolicy`) is
the caller's, not the source's: the prepare command sets it around the adapters with
:func:`loss_policy`, and every store written inside follows it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from asgcn_lightning.schemas import LossPolicy

_POLICY: ContextVar[LossPolicy] = ContextVar("loss_policy", default=LossPolicy())  # noqa: B039 - never mutated
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])", re.IGNORECASE)
CAUSES_SHOWN = 3


@contextmanager
def loss_policy(policy: LossPolicy) -> Iterator[None]:
    """Preparations inside the block follow ``policy``."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def current_loss_policy() -> LossPolicy:
    return _POLICY.get()


def cause_of(reason: str) -> str:
    """A skip reason with its numbers (line, frame, value) replaced, so equal causes count together."""
    return _NUMBER.sub("#", reason)


@dataclass
class InputTally:
    """Inputs that gave a stored sample, and the reasons (and classes, where known) of those that did not."""

    kept: set[str] = field(default_factory=set)
    kept_labels: Counter[int] = field(default_factory=Counter)
    problems: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # input → (reason, label)
    whole: set[str] = field(default_factory=set)  # inputs skipped as a whole, not only in parts

    def stored(self, source: str, label: int) -> None:
        self.kept.add(source)
        self.kept_labels[label] += 1

    def skipped(self, source: str, reason: str, label: int | None, *, part: bool) -> None:
        """A skipped input, or a skipped part of one; the reason for the whole input is the one reported."""
        known_reason, known_label = self.problems.get(source, (None, None))
        if known_reason is None or (not part and source not in self.whole):
            known_reason = reason
        self.problems[source] = (known_reason, known_label if label is None else label)
        if not part:
            self.whole.add(source)

    def lost(self) -> dict[str, tuple[str, int | None]]:
        return {source: problem for source, problem in self.problems.items() if source not in self.kept}

    def shortfalls(self, policy: LossPolicy, class_names: Sequence[str]) -> list[str]:
        """What was lost beyond ``policy`` (more inputs than the share allows, whole classes); empty if nothing."""
        lost = self.lost()
        total = len(lost) + len(self.kept)
        if not lost:
            return []
        classes = sorted({label for _, label in lost.values() if label is not None} - set(self.kept_labels))
        share = len(lost) / total
        shortfalls = []
        if share > policy.max_skipped_share:
            shortfalls.append(f"lost {len(lost)} of {total} inputs ({share:.1%}; at most "
                              f"{policy.max_skipped_share:.0%} may be)")
        if classes:
            names = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in classes]
            shortfalls.append(f"lost every input of the class{'es' if len(names) > 1 else ''} "
                              + ", ".join(map(repr, names[:10])) + (f" and {len(names) - 10} more" if len(names) > 10
                                                                     else ""))
        return shortfalls

    def largest_causes(self) -> str:
        """The most frequent reasons inputs were lost (alike but for numbers), counted, each shown by an example."""
        lost = self.lost()
        causes = Counter(cause_of(reason) for reason, _ in lost.values())
        example = {cause_of(reason): (source, reason) for source, (reason, _) in reversed(lost.items())}
        return "; ".join(f"{count} × {example[cause][1]} ({example[cause][0]}{' and others' if count > 1 else ''})"
                         for cause, count in causes.most_common(CAUSES_SHOWN))
