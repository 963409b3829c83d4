# -*- test-case-name: tests.test_reload_signals -*-
"""
The signals of a running server beyond the reactor's own: SIGHUP reloads
the configuration (C{systemctl reload}), and a second SIGTERM or SIGINT
while the server is already stopping ends the process at once, without
the traceback the reactor would log for stopping twice.

Stopping at once loses nothing: a message a client is still sending was
never acknowledged, and relay progress is written as it is made.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.logger import Logger

from gopherpost import logoutput

__all__ = ["ReloadSignal", "installSecondSignalExit", "exitAtOnce"]

_log = Logger()


class ReloadSignal:
    """
    SIGHUP calls C{reload} (on the reactor thread) while installed.

    @param reactor: provides C{callFromThread}.
    @param reload: what SIGHUP does.
    """

    def __init__(self, reactor: Any, reload: Callable[[], object]) -> None:
        self._reactor = reactor
        self._reload = reload
        self._previous: Any = None
        self.installed = False

    def install(self) -> None:
        """
        Handle SIGHUP from now on.
        """
        if not self.installed:
            self._previous = signal.signal(signal.SIGHUP, self._received)
            self.installed = True

    def uninstall(self) -> None:
        """
        Give SIGHUP back to what handled it before.
        """
        if self.installed:
            signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)
            self.installed = False

    def _received(self, number: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self._reload)


def exitAtOnce(number: int, frame: FrameType | None = None) -> None:
    """
    A signal handler: log one line and end the process by the same signal,
    at once (as a process killed by it: status 128 + the signal's number).
    """
    name = signal.Signals(number).name
    _log.warn("Received {signal} again while stopping: stopping at once", signal=name)
    logoutput.drainAll()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)


def installSecondSignalExit(
    handler: Callable[[int, FrameType | None], None] = exitAtOnce,
) -> None:
    """
    From now on (the server is stopping), SIGTERM and SIGINT call
    C{handler}; meant for a C{"before", "shutdown"} system event trigger.
    """
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, handler)
