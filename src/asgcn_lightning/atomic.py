"""Files and folders that are never half-written: write under a temporary name, then rename.

A reader sees either the previous version or the new one. The temporary name carries the writer's
process id (``.<name>.tmp-<pid>``), so a SIGKILL between write and rename leaves a leftover that
the next writer of the same path removes (:func:`orphans`), while a live concurrent writer's file is
left alone. This module imports nothing of the package, so every layer can use it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def orphans(folder: Path, prefix: str) -> Iterator[Path]:
    """Paths ``folder/<prefix><pid>`` whose process no longer exists (not this process)."""
    for path in folder.glob(f"{prefix}*"):
        pid = path.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not process_exists(int(pid)):
            yield path


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be made or written in (a file on its way, no permission), or None.

    Makes the folder's missing parents, which whoever asks is about to make anyway.
    """
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    probe = temporary_sibling(folder, "probe")
    try:
        probe.mkdir(parents=True)
        probe.rmdir()
    except OSError as error:
        return f"cannot write in {folder.parent} ({error.strerror or error})"
    return None


def temporary_sibling(path: Path, tag: str = "tmp") -> Path:
    """``.<name>.<tag>-<pid>`` beside ``path``: hidden, and recognisable by :func:`orphans`."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_orphans(path: Path, tag: str = "tmp") -> None:
    """Delete what killed writers of ``path`` left behind (files or folders)."""
    for leftover in orphans(path.parent, f".{path.name}.{tag}-"):
        remove_path(leftover)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    The content is flushed to disk before the rename, so a crash cannot leave a renamed but empty
    file. Leaving the block with an exception removes the temporary file and keeps the old ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    remove_orphans(path)


def write_atomically(path: str | Path, content: str | bytes) -> None:
    """Replace ``path`` by ``content`` (text or bytes) in one step."""
    with atomic_file(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)


def replace_folder(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``, replacing what is there.

    Two renames (old aside, new in): a kill between them leaves ``.<target>.old-<pid>``, which
    :func:`recover_folder` puts back.
    """
    old = temporary_sibling(target, "old")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)


def recover_folder(target: Path) -> None:
    """Clean up after killed :func:`replace_folder` calls and killed writers of ``target``'s temporary folders.

    A folder moved aside by a writer killed before it moved its own in is put back; the other
    leftovers are deleted.
    """
    for old in orphans(target.parent, f".{target.name}.old-"):
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)
    remove_orphans(target)
