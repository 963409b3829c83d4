# -*- test-case-name: tests.test_relay_body -*-
"""
The message body on the wire: what the client sends after C{354}, and the
push producer that writes it without holding the reactor.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, ITransport
from zope.interface import implementer

from gopherpost.sendnow import writeNow

__all__ = ["CHUNK_SIZE", "prepareMessage", "BodySender"]

#: Bytes handed to the transport at a time.
CHUNK_SIZE = 65536

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")


def prepareMessage(message: bytes) -> tuple[bytes, int, bool]:
    """
    Turn a message into what goes on the wire after C{354}.

    Every bare LF, bare CR and CRLF becomes CRLF; the message ends with
    CRLF; lines starting with C{"."} get another (RFC 5321 section 4.5.2);
    the terminating C{".\\r\\n"} is appended.

    @return: C{(payload, size, eightBit)}: the bytes to send, the size of
        the normalized message before dot-stuffing (for C{SIZE=}), and
        whether it has bytes above 127.
    """
    normalized = _LINE_ENDINGS.sub(b"\r\n", message)
    if normalized and not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    eightBit = _EIGHT_BIT.search(normalized) is not None
    payload = _LEADING_DOT.sub(b"..", normalized) + b".\r\n"
    return payload, len(normalized), eightBit


@implementer(IPushProducer)
class BodySender:
    """
    Write a payload in chunks, as fast as the transport takes it.

    @ivar finished: whether the whole payload was handed to the transport
        (or sending was stopped).
    @ivar done: fires once the whole payload was handed to the transport.
    """

    def __init__(
        self,
        transport: ITransport,
        payload: bytes,
        paused: Callable[[], None],
        resumed: Callable[[], None],
    ) -> None:
        """
        @param transport: where the payload goes; it must also provide
            C{IConsumer} (TCP and TLS transports do).
        @param payload: the bytes, from L{prepareMessage}.
        @param paused: called when the transport pauses us (its buffer is
            full: the session starts its data-block timer).
        @param resumed: called when it resumes us.
        """
        self._transport = transport
        self._payload = payload
        self._pausedCallback = paused
        self._resumedCallback = resumed
        self._offset = 0
        self._paused = False
        self._registered = False
        self.finished = False
        self.done: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        """
        Register with the transport and write until it pauses us.

        @return: L{done}.
        """
        self._transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._registered = True
        self._produce()
        return self.done

    def _produce(self) -> None:
        view = memoryview(self._payload)
        while not self._paused and not self.finished and self._offset < len(self._payload):
            chunk = view[self._offset : self._offset + CHUNK_SIZE]
            self._offset += len(chunk)
            writeNow(self._transport, bytes(chunk))
        if not self.finished and self._offset >= len(self._payload):
            self._finish()
            self.done.callback(None)

    def _finish(self) -> None:
        self.finished = True
        if self._registered:
            self._registered = False
            self._transport.unregisterProducer()  # type: ignore[attr-defined]

    def stop(self) -> None:
        """
        Stop writing (the reply came early or the connection is going).
        """
        if not self.finished:
            self._finish()

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full.
        """
        if not self._paused:
            self._paused = True
            self._pausedCallback()

    def resumeProducing(self) -> None:
        """
        The transport can take more.
        """
        if self._paused:
            self._paused = False
            self._resumedCallback()
            self._produce()

    def stopProducing(self) -> None:
        """
        The transport is going away and has dropped us already.
        """
        self._registered = False
        self.finished = True
