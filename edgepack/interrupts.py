"""SIGINT and SIGTERM during a command: stop it, clean up, and say so.

The command line installs one handler for both signals. It records that a signal
arrived and raises `Interrupted` in the main thread, so `finally` blocks and context
managers remove temporary folders and kill child processes on the way out. Toolchain
callbacks can catch and drop that exception (some catch everything); the record stays,
and `check_interrupted()`, called between the build's steps and just before a dist
folder is swapped in, raises it again, so a dropped interrupt still stops the build
before anything is written.

`Interrupted` derives from BaseException but not from KeyboardInterrupt: libraries that
treat KeyboardInterrupt specially (the CLI framework turns it into a silent exit 130,
some toolchains catch it in callbacks) then leave it alone.

Without `installed_handlers()` (a notebook or script calling `edgepack.api`), Python's
own SIGINT handling applies and `check_interrupted()` does nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)

# A second signal this soon after the first is taken as the same request: it must not
# cut short the cleanup the first one started (removing a temporary folder).
REPEAT_WINDOW_S = 1.0


class Interrupted(BaseException):
    """A SIGINT or SIGTERM arrived; exit status 128 + the signal's number."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    installed = False
    signum: int | None = None     # the first signal received, kept for the exit code
    raised_at: float | None = None
    deferring = 0                 # nesting depth of deferred() blocks


_STATE = _State()


def _handler(signum, frame) -> None:
    if _STATE.signum is None:
        _STATE.signum = signum
    if _STATE.deferring:
        return
    now = time.monotonic()
    if _STATE.raised_at is not None and now - _STATE.raised_at < REPEAT_WINDOW_S:
        return
    _STATE.raised_at = now
    raise Interrupted(_STATE.signum)


@contextmanager
def installed_handlers() -> Iterator[None]:
    """Route SIGINT and SIGTERM to `Interrupted` for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in HANDLED}
    _STATE.installed, _STATE.signum, _STATE.raised_at = True, None, None
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        # What arrived belongs to this command: a later caller in the same process (a
        # notebook, a test) starts clean.
        _STATE.installed, _STATE.signum, _STATE.raised_at = False, None, None


def handlers_installed() -> bool:
    return _STATE.installed


def received() -> int | None:
    """The signal that arrived while the handlers were installed, if any."""
    return _STATE.signum


def check_interrupted() -> None:
    """Raise `Interrupted` if a signal arrived, even when its first raise was swallowed."""
    if _STATE.installed and _STATE.signum is not None and not _STATE.deferring:
        _STATE.raised_at = time.monotonic()
        raise Interrupted(_STATE.signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal until the block is done: for steps that must not stop half way (two
    renames that swap a dist folder). The signal is raised when the block ends."""
    _STATE.deferring += 1
    try:
        yield
    finally:
        _STATE.deferring -= 1
    check_interrupted()
