# -*- test-case-name: tests.test_milter_client -*-
"""
One connection to a milter, as a Twisted protocol: packets out, replies
back as Deferreds.

The milter protocol is a strict dialogue: a command, then its reply.
L{MilterProtocol.exchange} sends one command (with its macros) and fires
with the final reply and whatever came before it (the modifications and
progress notes of the end of the message).  One exchange at a time; a
reply nobody asked for, a broken packet or a lost connection fails the
conversation for good (every later exchange fails at once).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from gopherpost.filters.failure import FilterProtocolError
from gopherpost.filters.milter import codec
from gopherpost.filters.milter.codec import ReplyKind

__all__ = ["FINAL", "Exchange", "MilterProtocol"]

#: Replies that end an exchange.
FINAL = frozenset(
    {
        ReplyKind.ACCEPT,
        ReplyKind.CONTINUE,
        ReplyKind.DISCARD,
        ReplyKind.REJECT,
        ReplyKind.TEMPFAIL,
        ReplyKind.REPLYCODE,
        ReplyKind.SKIP,
        ReplyKind.OPTNEG,
        ReplyKind.SHUTDOWN,
        ReplyKind.CONN_FAIL,
    }
)

Parsed = (
    codec.Negotiation
    | codec.Reply
    | codec.ReplyCode
    | codec.BodyChunk
    | codec.Quarantine
    | codec.Modification
)

#: The result of an exchange: the final reply, and what came before it.
Exchange = tuple[Parsed, list[Parsed]]


def _kind(reply: Parsed) -> ReplyKind | None:
    if isinstance(reply, codec.Reply):
        return reply.kind
    if isinstance(reply, codec.ReplyCode):
        return ReplyKind.REPLYCODE
    if isinstance(reply, codec.Negotiation):
        return ReplyKind.OPTNEG
    return None


class MilterProtocol(Protocol):
    """
    The MTA side of one milter connection.

    @ivar connected: L{Deferred} that fired when the connection was made
        (set by whoever builds the protocol, optional).
    """

    def __init__(self) -> None:
        self._reader = codec.PacketReader()
        self._pending: Deferred[Exchange] | None = None
        self._early: list[Parsed] = []
        self._failure: Failure | None = None
        self.closed = False

    def connectionMade(self) -> None:
        self.closed = False

    @property
    def failed(self) -> bool:
        """
        Whether the conversation is over (failed, cancelled or closed).
        """
        return self._failure is not None or self.closed

    def send(self, packets: Sequence[bytes]) -> None:
        """
        Send packets that get no reply (macros, no-reply stages, C{QUIT}).
        """
        if not self.failed:
            self.transport.write(b"".join(packets))  # type: ignore[union-attr]

    def exchange(self, packets: Sequence[bytes]) -> Deferred[Exchange]:
        """
        Send packets, the last of which is a command that gets a reply.

        @return: a L{Deferred} firing with the final reply and the replies
            before it; failing when the conversation failed.  Cancelling it
            ends the connection (its state is unknown then).
        """
        if self._failure is not None:
            return fail(self._failure)
        if self.closed:
            return fail(Failure(ConnectionDone("the milter connection is closed")))
        if self._pending is not None:
            return fail(FilterProtocolError("an exchange is already in progress"))
        d: Deferred[Exchange] = Deferred(self._cancelled)
        self._pending = d
        self._early = []
        self.transport.write(b"".join(packets))  # type: ignore[union-attr]
        return d

    def _cancelled(self, d: Deferred[Exchange]) -> None:
        self._pending = None
        self._fail(Failure(FilterProtocolError("exchange cancelled")), notify=False)

    def close(self) -> None:
        """
        Say C{QUIT} and close the connection.
        """
        if not self.failed and self.transport is not None:
            self.transport.write(codec.simple(codec.Command.QUIT))
            self.transport.loseConnection()
        self.closed = True

    def abort(self) -> None:
        """
        Drop the connection at once.
        """
        self.closed = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._failure is not None:
            return
        try:
            for command, payload in self._reader.feed(data):
                self._received(codec.parseReply(command, payload))
                if self._failure is not None:
                    return
        except FilterProtocolError as e:
            self._fail(Failure(e))

    def _received(self, reply: Parsed) -> None:
        if self._pending is None:
            self._fail(Failure(FilterProtocolError(f"unsolicited reply {reply!r}"[:120])))
            return
        kind = _kind(reply)
        if kind not in FINAL:
            self._early.append(reply)
            return
        d, self._pending = self._pending, None
        early, self._early = self._early, []
        d.callback((reply, early))

    def _fail(self, failure: Failure, notify: bool = True) -> None:
        if self._failure is None:
            self._failure = failure
        pending, self._pending = self._pending, None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        if pending is not None and notify:
            pending.errback(failure)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.errback(reason or Failure(ConnectionDone()))
