"""The one progress display of long preparations (rich, on stderr so piped output stays clean)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

Item = TypeVar("Item")


def console() -> Console:
    """Where preparations talk to the user: stderr, beside the progress bars."""
    return Console(stderr=True)


def progress_bar() -> Progress:
    """A progress display with description, bar, done/total and time left; use as a context manager."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console())


def track(items: Iterable[Item], description: str, total: int | None = None) -> Iterator[Item]:
    """``items`` one by one, with a progress bar (``total`` for iterables without a length)."""
    with progress_bar() as bar:
        yield from bar.track(items, total=total, description=description)
