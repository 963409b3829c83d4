# -*- test-case-name: tests.test_faults -*-
"""
Fault injection for the durability tests: never set in production.

C{GOPHERPOST_TEST_CRASH_AT=STEP[:N]} makes the process SIGKILL itself the
C{N}-th time (default 1) a message reaches C{STEP} of the spool's commit
path (L{COMMIT_STEPS}, in order), as a crash would stop it there.
C{GOPHERPOST_TEST_SYNC=range|syncfs|fsync} forces the spool's sync
strategy (L{gopherpost.syncstrategy}), so that every strategy's path can be
killed on whatever file system the tests run on (a kill leaves the page
cache, so this is safe for kill tests, not for power failures).

Both are read once, when the spool is made at start-up; the spool logs a
warning when either is set.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping

__all__ = ["COMMIT_STEPS", "CrashPoints", "CRASH_VARIABLE", "SYNC_VARIABLE"]

CRASH_VARIABLE = "GOPHERPOST_TEST_CRASH_AT"
SYNC_VARIABLE = "GOPHERPOST_TEST_SYNC"

#: The steps of one message's commit, in the order it passes them.
COMMIT_STEPS = (
    # Its content is in a file under tmp/ (page cache).
    "content-written",
    # Its envelope is in a file under tmp/ (page cache).
    "envelope-written",
    # Its data is safe to name (written, or synced, by the sync strategy).
    "data-synced",
    # Its content is linked under every recipient's name.
    "linked",
    # Its envelope is renamed into the date directory: visible.
    "envelope-renamed",
    # Its names are durable.
    "names-synced",
    # Its commit Deferred fired: the client was sent 250.
    "acknowledged",
    # The spool's observers (the relay queue, the index) were told.
    "announced",
    # Its content's temporary name under tmp/ is gone.
    "tmp-removed",
)


class CrashPoints:
    """
    Where the process kills itself, if anywhere.

    @param step: one of L{COMMIT_STEPS}, or L{None} for never.
    @param occurrence: the how-manieth message reaching C{step} dies there.
    @param kill: called to die (default: SIGKILL this process).
    """

    def __init__(
        self,
        step: str | None = None,
        occurrence: int = 1,
        kill: Callable[[], None] | None = None,
    ) -> None:
        if step is not None and step not in COMMIT_STEPS:
            raise ValueError(f"{CRASH_VARIABLE}: unknown step {step!r}")
        self.step = step
        self._left = occurrence
        self._kill = kill or (lambda: os.kill(os.getpid(), signal.SIGKILL))

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str] = os.environ) -> CrashPoints:
        """
        As C{GOPHERPOST_TEST_CRASH_AT} says (unset or empty: never).

        @raise ValueError: naming the variable, if its value is invalid.
        """
        value = environ.get(CRASH_VARIABLE, "").strip()
        if not value:
            return cls()
        step, _, count = value.partition(":")
        try:
            occurrence = int(count) if count else 1
        except ValueError:
            raise ValueError(f"{CRASH_VARIABLE}: {count!r} is not a number") from None
        if occurrence < 1:
            raise ValueError(f"{CRASH_VARIABLE}: the occurrence must be at least 1")
        return cls(step, occurrence)

    @property
    def enabled(self) -> bool:
        """
        Whether a crash is armed.
        """
        return self.step is not None

    def reached(self, step: str) -> None:
        """
        A message reached C{step}: die if this is the armed occurrence.
        Cheap when disarmed (one comparison).
        """
        if step != self.step:
            return
        self._left -= 1
        if self._left == 0:
            self._kill()
