# -*- test-case-name: tests.test_syncthread -*-
"""
A thread of its own for the spool's syncs, already waiting when a commit
step needs it.

A hop through the reactor's thread pool costs about 85 us here (its queue,
its context tracking, a coordinator); a thread blocked on a plain queue,
answering through C{callFromThread}, about 40 us.  A client sending alone
waits for that hop on every message.  A thread of its own also keeps the
syncs that stand between clients and their C{250} from queueing behind
other work in the pool (DKIM signing, large reads).

Jobs run one at a time, in order: the spool runs one commit step at a time
anyway.  The thread is a daemon: at exit, a sync still running is simply
abandoned (its messages were not acknowledged).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = ["SyncThread", "sharedSyncThread"]

_Job = tuple[Any, Deferred, Callable[..., Any], tuple]


class SyncThread:
    """
    Runs blocking calls one after the other in one thread, started at the
    first call.

    @param name: the thread's name (as C{ps -L} and py-spy show it).
    """

    def __init__(self, name: str = "gopherpost-sync") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, reactor: Any, f: Callable[..., Any], *args: Any) -> Deferred:
        """
        Call C{f(*args)} in the thread.

        @param reactor: fires the result on its thread (C{callFromThread}).
        @return: a L{Deferred} that fires with what C{f} returned, or fails
            with what it raised.
        """
        d: Deferred = Deferred()
        self._start()
        self._jobs.put((reactor, d, f, args))
        return d

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            reactor, d, f, args = job
            try:
                result = f(*args)
            except BaseException:
                reactor.callFromThread(d.errback, Failure())
            else:
                reactor.callFromThread(d.callback, result)
            del job, d, f, args

    def stop(self, timeout: float | None = None) -> None:
        """
        Let the jobs already queued finish, then end the thread (blocking,
        at most C{timeout} seconds).
        """
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join(timeout)


_shared: SyncThread | None = None


def sharedSyncThread() -> SyncThread:
    """
    The process's sync thread: every spool of a process uses the same one
    (a process has one reactor, and syncs of one disk do not overlap
    usefully anyway).
    """
    global _shared
    if _shared is None:
        _shared = SyncThread()
    return _shared
