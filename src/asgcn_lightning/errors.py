"""User-facing errors: one clear line that names the file or option and the problem.

Code raises :class:`UserError` for anything a user can fix (bad path, bad option, corrupt file);
entry points catch it and print the message instead of a traceback. A file-system error that names
its path (an output folder below a regular file, no permission, a full disk) is such an error too,
wherever it is raised: entry points print it in one line as well.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

from asgcn_lightning.shutdown import RunStopped

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """An error caused by user input; its message is shown to the user as is."""


class DataFormatError(UserError):
    """A source file that does not follow its format; the message names the file and the problem."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def describe_error(error: BaseException) -> str:
    """One line for any exception a reader raised on one file."""
    if isinstance(error, DataFormatError):
        return error.problem
    if isinstance(error, RecursionError):
        return "nested too deeply to read (RecursionError)"
    if isinstance(error, MemoryError):
        return "too large to read into memory (MemoryError)"
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return f"cannot be read ({type(error).__name__}{': ' + text if text else ''})"


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or during, once each."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        yield error
        seen.add(id(error))
        error = error.__cause__ or error.__context__


def find_user_error(error: BaseException | None) -> UserError | None:
    """The :class:`UserError` behind ``error``, also when a library (Hydra's instantiate) wrapped it."""
    return next((cause for cause in _causes(error) if isinstance(cause, UserError)), None)


# what the bare strerror of these leaves unsaid when a folder was to be made or written in
_PATH_HINTS = {FileExistsError: "exists and is not a folder",
               NotADirectoryError: "a part of it is a file, not a folder"}


def find_path_error(error: BaseException | None) -> str | None:
    """``<path>: <cause>`` of the file-system error (one that names its path) behind ``error``, or None."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.filename is not None:
            return f"{cause.filename}: {_PATH_HINTS.get(type(cause)) or cause.strerror or type(cause).__name__}"
    return None


def exit_on_user_error(func: F) -> F:
    """Turn a :class:`UserError` (or a file-system error naming its path) escaping ``func`` into a one-line message
    and exit status 2.

    A run stopped by SIGTERM/SIGINT (:class:`~asgcn_lightning.shutdown.RunStopped`) says so in a line too
    and exits with the shell's status for that signal (128 + its number).
    """

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return func(*args, **kwargs)
        except RunStopped as stopped:
            print(f"error: {stopped}", file=sys.stderr)
            sys.exit(stopped.exit_code)
        except Exception as error:
            message = find_user_error(error) or find_path_error(error)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
