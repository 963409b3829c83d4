# -*- test-case-name: tests.test_webhook_logfile -*-
"""
The webhook courier's log: text lines as L{twisted.logger.textFileLogObserver}
writes them, to the courier's standard error (the server's, so the journal
under systemd), written in batches.

The courier logs one line per attempt (C{webhook=inbound id=... status=200
...}): hundreds a second under load.  Written one by one, each line is a
C{write(2)} and a wake-up of whoever reads the pipe (journald, or the
benchmark's C{cat}), and each formats its time stamp again.  Here the lines
of up to L{LOG_INTERVAL} seconds go in one write, a warning or worse is
written at once with what waits before it, and the time stamp text is kept
for the second it names.  A line still waiting when the courier is killed
(C{kill -9}) is lost with it; what it told of is not (an attempt whose mark
was not written is posted again after the restart, see L{records}).
"""

from __future__ import annotations

import threading
from typing import IO, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, LogLevel, timeFormatRFC3339
from zope.interface import implementer

from gopherpost.logformat import CachedTimeFormat, formatClassic

__all__ = ["BatchedTextLog", "LOG_INTERVAL"]

#: Seconds log lines wait at most before they are written.
LOG_INTERVAL = 0.2
#: Levels written at once.
_URGENT = (LogLevel.warn, LogLevel.error, LogLevel.critical)


@implementer(ILogObserver)
class BatchedTextLog:
    """
    Writes log events as text to C{stream}, in batches (see the module's
    description).

    @param stream: a text stream (C{sys.stderr}).
    @param clock: schedules the writes; events from other threads than
        the one that made this observer are written at once.
    @param interval: seconds a line waits at most.
    @param timeFormat: as L{twisted.logger.formatTime}'s; whole seconds only.
    """

    def __init__(
        self,
        stream: IO[str],
        clock: IReactorTime,
        interval: float = LOG_INTERVAL,
        timeFormat: str = timeFormatRFC3339,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._interval = interval
        self._thread = threading.get_ident()
        # Reentrant: a signal handler may log while this thread is in here.
        self._lock = threading.RLock()
        self._lines: list[str] = []
        self._timer: Any = None
        self._formatTime = CachedTimeFormat(timeFormat)

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            text = formatClassic(event, self._formatTime)
            if text is None:
                return
            self._lines.append(text)
            urgent = (
                self._interval <= 0
                or event.get("log_level") in _URGENT
                or threading.get_ident() != self._thread
            )
        if urgent:
            self.flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(self._interval, self.flush)

    def flush(self) -> None:
        """
        Write what waits now.
        """
        with self._lock:
            lines, self._lines = self._lines, []
            if threading.get_ident() == self._thread and self._timer is not None:
                if self._timer.active():
                    self._timer.cancel()
                self._timer = None
            if lines:
                self._stream.write("".join(lines))
                self._stream.flush()
