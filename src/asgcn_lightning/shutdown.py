"""SIGTERM and SIGINT end a run, also one whose main thread is blocked in a collective or a C++ call.

Python runs a signal handler only when the main thread next executes Python code, so a process
waiting in ``c10d::Work::wait`` would never see SIGTERM. The handlers here raise :class:`RunStopped`
(a ``KeyboardInterrupt``: Lightning then shuts down as on Ctrl+C: callbacks and loggers are told,
worker processes killed), and a watchdog thread learns of the signal through the interpreter's
wake-up file descriptor, which is written at C level at once: if the process has not ended
``grace_s`` seconds later, or a second signal comes, it ends the process itself. DDP worker
processes end when their parent does (:func:`die_with_parent`).
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import select
import signal
import sys
import threading
import time
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STACKS_SIGNAL = signal.SIGUSR1  # a process that gets it prints the stacks of all its threads to stderr
PR_SET_PDEATHSIG = 1  # prctl option of Linux: the signal this process gets when its parent ends


class RunStopped(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM or SIGINT asks the run to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise RunStopped(signum)


class _Watchdog:
    """Ends the process ``grace_s`` seconds after a stop signal, or at once on the second one."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="stop-on-signal", daemon=True).start()

    def _watch(self) -> None:
        deadline: float | None = None
        first = 0
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self.read_fd], [], [], timeout)
            for signum in os.read(self.read_fd, 64) if readable else b"":
                if signum not in STOP_SIGNALS:
                    continue
                if deadline is not None:
                    self._exit(signum, "a second stop signal")
                first, deadline = signum, time.monotonic() + self.grace_s
            if deadline is not None and time.monotonic() >= deadline:
                self._exit(first, f"still running {self.grace_s:g} s after the stop signal")

    @staticmethod
    def _exit(signum: int, why: str) -> None:
        print(f"error: {why} ({signal.Signals(signum).name}): ending the process now", file=sys.stderr, flush=True)
        os._exit(128 + signum)


_watchdog: _Watchdog | None = None


def stop_on_signals(grace_s: float = 20.0) -> None:
    """Install the stop handlers for SIGTERM and SIGINT and start the watchdog (main thread, once per process)."""
    global _watchdog
    if threading.current_thread() is not threading.main_thread():
        return
    reinstall_stop_handlers()
    faulthandler.register(STACKS_SIGNAL, file=2, all_threads=True)  # the process's stderr, whatever sys.stderr is now
    if _watchdog is None:
        _watchdog = _Watchdog(grace_s)


def print_stacks_of(pids: list[int], wait_s: float = 2.0) -> None:
    """Have the processes ``pids`` print where each of their threads is (see :data:`STACKS_SIGNAL`).

    When DDP processes lose each other, the one that timed out knows only its own place; the
    others' stacks say which of them was stuck, and where.
    """
    for pid in pids:
        try:
            os.kill(pid, STACKS_SIGNAL)
        except ProcessLookupError:
            continue
    if pids:
        time.sleep(wait_s)


def reinstall_stop_handlers() -> None:
    """Put the stop handlers back where a library replaced them (Lightning does for the length of a fit)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)


def die_with_parent() -> None:
    """Have Linux kill this process when its parent ends (any signal, ``kill -9`` included)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os._exit(128 + signal.SIGKILL)
