# -*- test-case-name: tests.test_web -*-
"""
The probes: C{/livez} (the process runs), C{/readyz} (it can take mail),
and C{/healthz}, the reference's check: readiness, and with debugging on, a
live audit stream after the C{OK}.

C{/livez} and C{/readyz} never stream: every response is complete at once,
so a probe with a timeout never hangs on them.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from gopherpost.audit import DEFAULT_MAX_BUFFERED
from gopherpost.interfaces import IAuditLog
from gopherpost.web._audit import AuditStreams, auditLine
from gopherpost.web._common import PlainTextPage, noCache, plainText

__all__ = ["HealthResource", "LivenessResource", "Readiness", "ReadinessResource"]

_log = Logger()

#: Returns C{(ready, reason)}; the reason is shown when not ready.
Readiness = Callable[[], tuple[bool, str]]


def _check(readiness: Readiness, request: Request) -> tuple[bool, str]:
    """
    Ask C{readiness}, set the status and the plain-text headers.
    """
    plainText(request)
    noCache(request)
    try:
        ready, reason = readiness()
    except Exception:
        _log.failure("Readiness check failed")
        ready, reason = False, "readiness check failed"
    if not ready:
        request.setResponseCode(503)
    return bool(ready), reason


def _notReady(reason: str) -> bytes:
    return (reason or "not ready").encode("utf-8", "replace") + b"\n"


class _Probe(Resource):
    """
    A resource with nothing below it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._notFound = PlainTextPage(404, "404 Not Found")

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        Nothing lives below a probe.
        """
        return self._notFound


class LivenessResource(_Probe):
    """
    C{/livez}: C{200 OK} whenever the server answers at all.  It asks
    nothing else: a liveness probe that fails restarts the process, which
    would not make a full disk any emptier.
    """

    def render_GET(self, request: Request) -> bytes:
        """
        C{OK}.
        """
        plainText(request)
        noCache(request)
        return b"OK\n"

    def render_HEAD(self, request: Request) -> bytes:
        """
        The status of a C{GET}.
        """
        return self.render_GET(request)


class ReadinessResource(_Probe):
    """
    C{/readyz}: C{200 OK} when C{readiness()} says so, C{503} and the
    reason otherwise.
    """

    def __init__(self, readiness: Readiness) -> None:
        """
        @param readiness: returns C{(ready, reason)}.
        """
        super().__init__()
        self._readiness = readiness

    def render_GET(self, request: Request) -> bytes:
        """
        The verdict.
        """
        ready, reason = _check(self._readiness, request)
        return b"OK\n" if ready else _notReady(reason)

    def render_HEAD(self, request: Request) -> bytes:
        """
        The status of a C{GET}, without a body.
        """
        _check(self._readiness, request)
        return b""


class HealthResource(_Probe):
    """
    C{/healthz}.

    C{GET}: C{200 OK} when C{readiness()} says so, C{503} and the reason
    otherwise.  When given an audit log (debugging on), a ready response is
    C{OK\\n} followed by one audit line per event for as long as the client
    stays connected.
    """

    def __init__(
        self,
        readiness: Readiness,
        audit: IAuditLog | None = None,
        maxStreams: int = 16,
        maxBuffered: int = DEFAULT_MAX_BUFFERED,
        streams: AuditStreams | None = None,
    ) -> None:
        """
        @param readiness: returns C{(ready, reason)}.
        @param audit: stream this log's events (debugging on); L{None}: no
            stream.
        @param maxStreams: at most this many streams at once; more clients
            get C{OK} and a note instead of a stream.
        @param maxBuffered: lines each stream keeps while its client does
            not read; older ones are dropped and counted.
        @param streams: share these streams (and their limit) with other
            resources, e.g. C{/audit}, instead of C{maxStreams} and
            C{maxBuffered}.
        """
        super().__init__()
        self._readiness = readiness
        self._streams: AuditStreams | None = None
        if audit is not None:
            self._streams = streams or AuditStreams(audit, maxStreams, maxBuffered)

    @property
    def openStreams(self) -> int:
        """
        How many audit streams are open.
        """
        return 0 if self._streams is None else self._streams.count

    def closeStreams(self) -> None:
        """
        End every open audit stream.
        """
        if self._streams is not None:
            self._streams.closeAll()

    def render_HEAD(self, request: Request) -> bytes:
        """
        The status of a C{GET}, without a body (and never a stream).
        """
        _check(self._readiness, request)
        return b""

    def render_GET(self, request: Request) -> object:
        """
        Readiness, then maybe the audit stream.
        """
        ready, reason = _check(self._readiness, request)
        if not ready:
            return _notReady(reason)
        if self._streams is None:
            return b"OK"
        if self._streams.full:
            return b"OK\n... audit stream refused: too many open streams\n"
        self._streams.start(request, auditLine, first=b"OK\n")
        return NOT_DONE_YET
