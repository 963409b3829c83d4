# -*- test-case-name: tests.test_webui_events -*-
"""
Live updates for the web UI: Server-Sent Events at C{/api/events}
(WebSocket is not in bookworm's Twisted 22.4; SSE is plain HTTP, and
browsers reconnect by themselves).

Each event is C{event: <kind>} and C{data: <JSON>} (kinds and data as
L{gopherpost.index.mailbox} publishes them, Mailpit's websocket events).
The stream starts with C{retry: 2000} (reconnect two seconds after the
server went away) and an C{event: hello}; a comment line every
L{KEEPALIVE} seconds keeps proxies and dead peers honest.  A client that
does not read pauses its stream; what it misses meanwhile is replaced by
one C{prune} event (reload) when it reads again, so a slow client costs
no memory.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.web.server import Request
from zope.interface import implementer

from gopherpost.index.mailbox import Mailbox
from gopherpost.webui.http import STREAMING, Response, applySecurityHeaders

__all__ = ["EventStreams", "KEEPALIVE", "formatEvent"]

#: Seconds between keep-alive comments.
KEEPALIVE = 15.0
#: Reconnect delay the browser is told, in milliseconds.
RETRY_MS = 2000


def formatEvent(kind: str, data: Any) -> bytes:
    """
    One Server-Sent Event.
    """
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {payload}\n\n".encode()


@implementer(IPushProducer)
class _Stream:
    """
    One open event stream.
    """

    def __init__(self, streams: EventStreams, request: Request) -> None:
        self._streams = streams
        self._request = request
        self._paused = False
        self._missed = False
        self._closed = False
        self._cancel = streams.mailbox.subscribe(self.send)
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)

    def send(self, kind: str, data: Any) -> None:
        if self._closed:
            return
        if self._paused:
            self._missed = True
            return
        self._request.write(formatEvent(kind, data))

    def keepAlive(self) -> None:
        if not self._closed and not self._paused:
            self._request.write(b": keep-alive\n\n")

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._missed:
            self._missed = False
            self.send("prune", None)

    def stopProducing(self) -> None:
        self._finished(None)

    def _finished(self, result: object) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel()
        self._streams._remove(self)

    def close(self) -> None:
        """
        End the stream from our side.
        """
        if self._closed:
            return
        self._finished(None)
        try:
            self._request.unregisterProducer()
            self._request.finish()
        except Exception:
            pass


class EventStreams:
    """
    The open event streams of one mailbox.

    @param maxStreams: streams at most; more clients get 503 (their
        browser retries).
    """

    def __init__(self, mailbox: Mailbox, clock: Any, maxStreams: int = 64) -> None:
        self.mailbox = mailbox
        self._clock = clock
        self._maxStreams = maxStreams
        self._streams: set[_Stream] = set()
        self._keepAlive: LoopingCall | None = None

    @property
    def openStreams(self) -> int:
        """
        How many streams are open.
        """
        return len(self._streams)

    def handle(self, request: Request) -> Any:
        """
        Answer C{GET /api/events} with a stream.
        """
        if len(self._streams) >= self._maxStreams:
            return Response(503, b"too many open event streams\n", headers={"Retry-After": "5"})
        applySecurityHeaders(request)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        setTcpKeepAlive = getattr(request.transport, "setTcpKeepAlive", None)
        if setTcpKeepAlive is not None:
            try:
                setTcpKeepAlive(1)
            except (OSError, AttributeError):
                pass
        request.write(f"retry: {RETRY_MS}\n\n".encode("ascii") + formatEvent("hello", None))
        self._streams.add(_Stream(self, request))
        if self._keepAlive is None:
            self._keepAlive = LoopingCall(self._ping)
            self._keepAlive.clock = self._clock
            self._keepAlive.start(KEEPALIVE, now=False)
        return STREAMING

    def _ping(self) -> None:
        for stream in list(self._streams):
            stream.keepAlive()

    def _remove(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        if not self._streams and self._keepAlive is not None:
            if self._keepAlive.running:
                self._keepAlive.stop()
            self._keepAlive = None

    def closeAll(self) -> None:
        """
        End every stream (at shutdown).
        """
        for stream in list(self._streams):
            stream.close()
