# -*- test-case-name: tests.test_web -*-
"""
C{/healthz}: readiness, and with debugging on, a live audit stream.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from gopherpost.audit import DEFAULT_MAX_BUFFERED, formatAuditLine
from gopherpost.interfaces import IAuditLog
from gopherpost.web._common import PlainTextPage, noCache, plainText

__all__ = ["HealthResource", "Readiness"]

_log = Logger()

#: Returns C{(ready, reason)}; the reason is shown when not ready.
Readiness = Callable[[], tuple[bool, str]]


class _AuditStream:
    """
    One open C{/healthz} audit stream: an audit subscription registered as
    the push producer of the request, so a client that does not read pauses
    it (and makes it drop lines) instead of filling memory.
    """

    def __init__(
        self,
        request: Request,
        audit: IAuditLog,
        maxBuffered: int,
        streams: set[_AuditStream],
    ) -> None:
        self._request = request
        self._streams = streams
        self._closed = False
        streams.add(self)
        self._subscription = audit.subscribe(  # type: ignore[call-arg]
            self._write, maxBuffered=maxBuffered
        )
        request.registerProducer(self._subscription, True)
        request.notifyFinish().addBoth(self._finished)
        _keepAlive(request)

    def _write(self, eventDict: dict) -> None:
        self._request.write(formatAuditLine(eventDict).encode("utf-8") + b"\n")

    def _finished(self, result: object) -> None:
        # The response ended: the client went away or we closed it.
        self._closed = True
        self._subscription.cancel()
        self._streams.discard(self)

    def close(self) -> None:
        """
        End the stream (and the response) from our side.
        """
        if self._closed:
            return
        self._subscription.cancel()
        self._request.unregisterProducer()
        self._request.finish()


def _keepAlive(request: Request) -> None:
    # Notice peers that vanished without a FIN even when no line is written.
    setTcpKeepAlive = getattr(request.transport, "setTcpKeepAlive", None)
    if setTcpKeepAlive is not None:
        try:
            setTcpKeepAlive(1)
        except (OSError, AttributeError):
            pass


class HealthResource(Resource):
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
    ) -> None:
        """
        @param readiness: returns C{(ready, reason)}.
        @param audit: stream this log's events (debugging on); L{None}: no
            stream.
        @param maxStreams: at most this many streams at once; more clients
            get C{OK} and a note instead of a stream.
        @param maxBuffered: lines each stream keeps while its client does
            not read; older ones are dropped and counted.
        """
        super().__init__()
        self._readiness = readiness
        self._audit = audit
        self._maxStreams = maxStreams
        self._maxBuffered = maxBuffered
        self._streams: set[_AuditStream] = set()
        self._notFound = PlainTextPage(404, "404 Not Found")

    @property
    def openStreams(self) -> int:
        """
        How many audit streams are open.
        """
        return len(self._streams)

    def closeStreams(self) -> None:
        """
        End every open audit stream.
        """
        for stream in list(self._streams):
            stream.close()

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        Nothing lives below C{/healthz}.
        """
        return self._notFound

    def _check(self, request: Request) -> tuple[bool, str]:
        plainText(request)
        noCache(request)
        try:
            ready, reason = self._readiness()
        except Exception:
            _log.failure("Readiness check failed")
            ready, reason = False, "readiness check failed"
        if not ready:
            request.setResponseCode(503)
        return bool(ready), reason

    def render_HEAD(self, request: Request) -> bytes:
        """
        The status of a C{GET}, without a body (and never a stream).
        """
        self._check(request)
        return b""

    def render_GET(self, request: Request) -> object:
        """
        Readiness, then maybe the audit stream.
        """
        ready, reason = self._check(request)
        if not ready:
            return (reason or "not ready").encode("utf-8", "replace") + b"\n"
        if self._audit is None:
            return b"OK"
        if len(self._streams) >= self._maxStreams:
            return b"OK\n... audit stream refused: too many open streams\n"
        request.write(b"OK\n")
        _AuditStream(request, self._audit, self._maxBuffered, self._streams)
        return NOT_DONE_YET
