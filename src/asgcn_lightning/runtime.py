"""Process start-up: how OpenMP threads wait, and which library messages a default run shows.

Imported by the package itself (``asgcn_lightning/__init__.py``), so it runs before any entry point,
DDP worker or picture command imports torch: libgomp, torch's OpenMP, reads its wait policy once,
when it loads. Settings the user made in the environment are kept as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# OpenMP threads spin (libgomp: up to GOMP_SPINCOUNT = 300,000 rounds) while they wait for each other between
# parallel regions. On cores other work shares, a spinning thread burns the slice the thread it waits for needs,
# and a training runs several times slower than its share of the CPU; threads that sleep at once
# (OMP_WAIT_POLICY=PASSIVE) pay a wake-up in every gap of an idle step. A short spin (10,000 rounds, some
# microseconds) bridges the short gaps of a step and then sleeps: docs/performance.md compares the three.
# Intel's OpenMP has no such count; it sleeps at once (KMP_BLOCKTIME=0). Child processes (DDP, data loader
# workers) inherit the environment.
WAIT_POLICY = {"GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "0"}
# a user who set any of these chose how the threads wait: none of ours is added then
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

# (message pattern, category, why it says nothing a user can act on)
QUIET_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
     "Lightning's own pytree helper checks the deprecated class on every batch; nothing in this project uses it"),
    (r"It is recommended to use `self.log\('.*', \.\.\., sync_dist=True\)`", UserWarning,
     "training-step values are each process's own on purpose; validation and test metrics, and the throughput, "
     "are reduced over the processes exactly (torchmetrics, strategy.reduce)"),
)
# Lightning's advertisements for its cloud services, logged once per Trainer (and per DDP process)
QUIET_LOG_PREFIXES = ("💡 Tip:",)
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(QUIET_LOG_PREFIXES)


_ADVERTISEMENTS = _DropAdvertisements()
_quiet = False


def choose_wait_policy(environ: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """Set the short-spin OpenMP wait policy in ``environ`` unless the user chose one; returns what was set."""
    # where torch was imported first (a notebook), this process keeps spinning; its children still follow
    if any(name in environ for name in WAIT_VARIABLES):
        return {}
    environ.update(WAIT_POLICY)
    return dict(WAIT_POLICY)


def quiet_library_chatter() -> None:
    """Hide the warnings and tips of :data:`QUIET_WARNINGS` / :data:`QUIET_LOG_PREFIXES` (``verbose=true``: shown).

    The warning filters go (again) in front of any added since, such as a test runner's own.
    """
    global _quiet
    for pattern, category, _reason in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    logging.getLogger(LIGHTNING_INFO_LOGGER).addFilter(_ADVERTISEMENTS)
    _quiet = True


def show_library_chatter() -> None:
    """Undo :func:`quiet_library_chatter`: every library message is shown (the apps' ``verbose=true``)."""
    global _quiet
    patterns = {pattern for pattern, _category, _reason in QUIET_WARNINGS}
    warnings.filters[:] = [entry for entry in warnings.filters
                           if not (entry[0] == "ignore" and getattr(entry[1], "pattern", None) in patterns)]
    warnings._filters_mutated()  # type: ignore[attr-defined]  # drop the per-module "already shown" caches
    logging.getLogger(LIGHTNING_INFO_LOGGER).removeFilter(_ADVERTISEMENTS)
    _quiet = False


def is_quiet() -> bool:
    return _quiet


@contextlib.contextmanager
def native_stderr_hidden(hide: bool = True) -> Iterator[None]:
    """Send what native libraries write to file descriptor 2 to /dev/null inside the block.

    For C++ libraries that log to stderr without a switch (MediaPipe's TFLite and absl start-up lines).
    Python's own ``sys.stderr`` is flushed first; anything the block raises still reaches the user.
    """
    if not hide or not _quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def start() -> None:
    """What every process of this project does first (the package's import runs it)."""
    choose_wait_policy()
    quiet_library_chatter()
