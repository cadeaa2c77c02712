"""Leftovers of killed writers: temporary files named ``<prefix><pid>`` whose process is gone.

Atomic writes (checkpoints, prepared stores) write under a temporary name that carries the writer's
process id, then rename. A SIGKILL between the two leaves the temporary behind; the next writer
removes those of dead processes, and leaves those of live ones (a concurrent writer) alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
