# -*- test-case-name: tests.test_logoutput -*-
"""
The log lines on standard output, written once per reactor turn.

twistd's own observer writes and flushes every event on its own: one
C{write} system call per line.  When standard output is a pipe or
journald's stream socket, each of those wakes the reader, which on a busy
machine costs more than formatting the line: in C{bench/run}'s relay
benchmark (five lines per relayed message) a fifth of the reactor thread's
time went into those writes.  L{TurnBatchingFile} keeps the text the
observer writes during one reactor turn and writes it with one call at the
start of the next turn.

Lines are never held longer than that turn, and never when the reactor is
not running (start-up, shutdown) or when written from another thread:
those are written through at once, after whatever was kept, so the order is
kept.  A C{kill -9} can lose the lines of the turn it interrupts, as it can
lose what a reader had not read yet.

twistd uses the observer L{stdoutObserver} makes when L{installFor} finds
that it would log to standard output (C{--nodaemon} without C{--logfile},
C{--syslog} or C{--logger}); otherwise twistd's choice stands.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, MutableMapping
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver
from twisted.python import threadable

from gopherpost.logformat import CachedTimeFormat, formatClassic

__all__ = ["TurnBatchingFile", "drainAll", "installFor", "stdoutObserver"]

#: Every L{TurnBatchingFile}, for L{drainAll}.
_files: weakref.WeakSet[TurnBatchingFile] = weakref.WeakSet()


def drainAll() -> None:
    """
    Write what every L{TurnBatchingFile} keeps, now: for a process about to
    end without its reactor's shutdown (e.g. a second SIGTERM).  Safe in a
    signal handler.
    """
    for batching in list(_files):
        batching.drain()


class TurnBatchingFile:
    """
    A text file for L{twisted.logger.FileLogObserver} that turns the
    observer's C{write} + C{flush} per event into one write per reactor
    turn.

    @ivar pending: text written and not yet passed on.
    """

    def __init__(
        self,
        out: IO[str],
        reactor: Any,
        inReactorThread: Callable[[], bool] = threadable.isInIOThread,
    ) -> None:
        """
        @param out: where the text goes (e.g. C{sys.stdout}).
        @param reactor: whose turns batch the writes; also where the kept
            text is written at shutdown.
        @param inReactorThread: whether the caller is C{reactor}'s thread.
        """
        self._out = out
        self._reactor = reactor
        self._inReactorThread = inReactorThread
        # Reentrant: a signal handler may log while the reactor thread holds
        # it.
        self._lock = threading.RLock()
        self.pending: list[str] = []
        self._scheduled = False
        self._triggered = False
        _files.add(self)

    def write(self, text: str) -> None:
        """
        Keep C{text} until L{flush}.
        """
        with self._lock:
            self.pending.append(text)

    def flush(self) -> None:
        """
        End of an event: within a running reactor's thread, write at the
        start of the next turn (once for everything kept until then);
        otherwise now.
        """
        if self._reactor.running and self._inReactorThread():
            if not self._triggered:
                self._triggered = True
                self._reactor.addSystemEventTrigger("after", "shutdown", self.drain)
            if not self._scheduled:
                self._scheduled = True
                self._reactor.callLater(0, self.drain)
            return
        self.drain()

    def drain(self) -> None:
        """
        Write and flush everything kept.
        """
        with self._lock:
            self._scheduled = False
            pending, self.pending = self.pending, []
            if not pending:
                return
            text = "".join(pending)
            try:
                self._out.write(text)
                self._out.flush()
            except (OSError, ValueError):
                # Standard output closed or gone: like twistd's observer,
                # nothing to write the log to.
                pass


def stdoutObserver() -> ILogObserver:
    """
    A C{--logger} factory for twistd: a text observer like twistd's own
    for standard output (the same lines, formatted by
    L{gopherpost.logformat}), writing through a L{TurnBatchingFile} on the
    global reactor.
    """
    from twisted.internet import reactor

    stream = TurnBatchingFile(sys.stdout, reactor)
    timeStamp = CachedTimeFormat()
    return FileLogObserver(stream, lambda event: formatClassic(event, timeStamp))  # type: ignore[arg-type]


def installFor(twistdOptions: MutableMapping[str, Any] | None) -> bool:
    """
    Make twistd log through L{stdoutObserver} when it would write every
    line to standard output itself.

    @param twistdOptions: twistd's options (the parent of GopherPost's), or
        C{None} when not run by twistd.
    @return: whether it was installed.
    """
    if twistdOptions is None or not hasattr(twistdOptions, "get"):
        return False
    if not twistdOptions.get("nodaemon"):
        return False
    if twistdOptions.get("logger") or twistdOptions.get("syslog"):
        return False
    if twistdOptions.get("logfile") not in (None, "", "-"):
        return False
    twistdOptions["logger"] = f"{__name__}.stdoutObserver"
    return True
