# -*- test-case-name: tests.test_web -*-
"""
The live audit stream over HTTP: C{/audit} (plain text, or server-sent
events for C{Accept: text/event-stream}), and the stream that C{/healthz}
sends after its C{OK} when debugging is on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from gopherpost.audit import DEFAULT_MAX_BUFFERED, formatAuditLine
from gopherpost.interfaces import IAuditLog
from gopherpost.web._common import PlainTextPage, noCache, plainText

__all__ = ["AuditResource", "AuditStreams", "auditLine", "auditOff", "serverSentEvent"]

#: Renders one audit event as the bytes a stream sends for it.
Renderer = Callable[[dict[str, Any]], bytes]

EVENT_STREAM = "text/event-stream"


def auditLine(eventDict: dict[str, Any]) -> bytes:
    """
    One event as one line of text, for plain-text streams.
    """
    return formatAuditLine(eventDict).encode("utf-8") + b"\n"


def serverSentEvent(eventDict: dict[str, Any]) -> bytes:
    """
    One event as one server-sent event (its C{data} is the audit line; the
    line never holds a line break).
    """
    return b"data: " + formatAuditLine(eventDict).encode("utf-8") + b"\n\n"


def _wantsEventStream(request: Request) -> bool:
    """
    Whether the C{Accept} header names C{text/event-stream} (with a quality
    above 0), as C{EventSource} does.
    """
    raw = request.getHeader(b"accept")
    if raw is None:
        return False
    for item in raw.decode("latin-1").split(","):
        mediaType, *params = item.split(";")
        if mediaType.strip().lower() != EVENT_STREAM:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value.strip()) > 0
                except ValueError:
                    return False
        return True
    return False


class _Stream:
    """
    One open stream: an audit subscription registered as the push producer
    of the request, so a client that does not read pauses it (and makes it
    drop lines) instead of filling memory.
    """

    def __init__(
        self,
        request: Request,
        audit: IAuditLog,
        render: Renderer,
        maxBuffered: int,
        streams: set[_Stream],
    ) -> None:
        self._request = request
        self._render = render
        self._streams = streams
        self._closed = False
        streams.add(self)
        # The audit log's subscriptions are push producers (see
        # gopherpost.audit): a full transport pauses this one.
        self._subscription = audit.subscribe(  # type: ignore[call-arg]
            self._write, maxBuffered=maxBuffered
        )
        request.registerProducer(IPushProducer(self._subscription), True)
        request.notifyFinish().addBoth(self._finished)
        _keepAlive(request)

    def _write(self, eventDict: dict[str, Any]) -> None:
        self._request.write(self._render(eventDict))

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


class AuditStreams:
    """
    The audit streams open on one web server, at most C{maxStreams} at once
    whichever path they came by.
    """

    def __init__(
        self,
        audit: IAuditLog,
        maxStreams: int = 16,
        maxBuffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        """
        @param audit: the log whose events are streamed.
        @param maxStreams: the most streams open at once.
        @param maxBuffered: lines each stream keeps while its client does
            not read; older ones are dropped and counted.
        """
        self._audit = audit
        self._maxStreams = maxStreams
        self._maxBuffered = maxBuffered
        self._streams: set[_Stream] = set()

    @property
    def count(self) -> int:
        """
        How many streams are open.
        """
        return len(self._streams)

    @property
    def full(self) -> bool:
        """
        Whether no more streams may open.
        """
        return len(self._streams) >= self._maxStreams

    def start(self, request: Request, render: Renderer, first: bytes = b"") -> None:
        """
        Stream every later event to C{request} until either side ends it.

        @param request: a request whose headers are set; they are sent now,
            so the client sees the response start before any event.
        @param render: turns each event into the bytes to send.
        @param first: what to send before the events.
        """
        request.setHeader(b"X-Accel-Buffering", b"no")  # proxies: do not buffer
        request.write(first)
        _Stream(request, self._audit, render, self._maxBuffered, self._streams)

    def closeAll(self) -> None:
        """
        End every open stream.
        """
        for stream in list(self._streams):
            stream.close()


class AuditResource(Resource):
    """
    C{/audit}: the live audit stream, one line per event, for as long as
    the client stays.  Plain text, or server-sent events when the
    C{Accept} header asks for C{text/event-stream}.
    """

    def __init__(self, streams: AuditStreams) -> None:
        """
        @param streams: where the stream is opened (and counted).
        """
        super().__init__()
        self._streams = streams
        self._notFound = PlainTextPage(404, "404 Not Found")

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        Nothing lives below C{/audit}.
        """
        return self._notFound

    def _headers(self, request: Request) -> bool:
        noCache(request)
        if _wantsEventStream(request):
            request.setHeader(b"Content-Type", EVENT_STREAM.encode("ascii"))
            request.setHeader(b"X-Content-Type-Options", b"nosniff")
            return True
        plainText(request)
        return False

    def render_HEAD(self, request: Request) -> bytes:
        """
        The headers of a C{GET}, without a body (and never a stream).
        """
        self._headers(request)
        return b""

    def render_GET(self, request: Request) -> object:
        """
        Open the stream (C{503} when too many are open).
        """
        if self._streams.full:
            return PlainTextPage(503, "too many open audit streams").render(request)
        eventStream = self._headers(request)
        self._streams.start(request, serverSentEvent if eventStream else auditLine)
        return NOT_DONE_YET


def auditOff() -> IResource:
    """
    C{/audit} when debugging is off: a 404 that says why.
    """
    return PlainTextPage(404, "404 Not Found: the audit stream is off (SMTP_DEBUG=false)")
