# -*- test-case-name: tests.test_relay_session,tests.test_client_pipelining -*-
"""
The command channel of an outbound SMTP connection: command lines out,
replies in, matched in order to the commands that wait for them, each stage
on its own timer (RFC 5321 section 4.5.3.2).

L{CommandChannel} knows SMTP's reply syntax (multi-line replies, codes) but
not what the commands mean: L{gopherpost.relay.session.ClientSession} builds
the session on top of it.  A reply that does not parse, a reply nobody
waits for, a timeout or a lost connection fails every reply awaited, with
one of the exceptions below naming the stage.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from gopherpost.relay.outcome import Reply, cleanText
from gopherpost.sendnow import writeNow

__all__ = [
    "TIMEOUTS",
    "CommandChannel",
    "ReplyTimeout",
    "ConnectionLostWaiting",
    "ProtocolViolation",
    "Stopped",
]

#: Seconds to wait at each stage (RFC 5321 section 4.5.3.2), before scaling.
#: "data block" is the longest the server may stall reading the body.
TIMEOUTS: Mapping[str, float] = MappingProxyType(
    {
        "connect": 30.0,
        "greeting": 300.0,
        "EHLO": 300.0,
        "HELO": 300.0,
        "STARTTLS": 300.0,
        "MAIL": 300.0,
        "RCPT": 300.0,
        "DATA": 120.0,
        "data block": 180.0,
        "end of data": 600.0,
        "RSET": 300.0,
        "QUIT": 60.0,
        "close": 30.0,
    }
)

_REPLY_LINE = re.compile(rb"^([0-9]{3})(?:([ -])(.*))?$", re.DOTALL)


class ReplyTimeout(Exception):
    """
    No reply (or no progress reading the body) within the stage's time.
    """

    def __init__(self, stage: str, seconds: float) -> None:
        super().__init__(stage, seconds)
        self.stage = stage
        self.seconds = seconds


class ConnectionLostWaiting(Exception):
    """
    The connection closed while a reply was awaited.
    """

    def __init__(self, stage: str, reason: Failure) -> None:
        super().__init__(stage, reason)
        self.stage = stage
        self.reason = reason


class ProtocolViolation(Exception):
    """
    The server sent something that is not the reply awaited.
    """

    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(stage, detail)
        self.stage = stage
        self.detail = detail


class Stopped(Exception):
    """
    The session was stopped (the relay is shutting down).
    """

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


@dataclass(frozen=True)
class _Awaited:
    """
    A reply the client waits for.

    @ivar stage: the stage it answers (L{TIMEOUTS} key, named in errors).
    @ivar timed: whether the stage timer starts when it becomes the first
        reply awaited (the final reply's starts once the body is written).
    @ivar deferred: fires with the L{Reply}, or fails when the session ends.
    """

    stage: str
    timed: bool
    deferred: Deferred[Reply]


class CommandChannel(LineReceiver):
    """
    Commands out, replies in order, stage timers; see the module docstring.
    """

    delimiter = b"\n"
    MAX_LENGTH = 8192

    def __init__(self, reactor: IReactorTime, timeoutScale: float) -> None:
        """
        @param reactor: the clock for the stage timers.
        @param timeoutScale: multiplies every timeout in L{TIMEOUTS}.
        """
        self._reactor = reactor
        self._scale = timeoutScale
        self._awaiting: deque[_Awaited] = deque()
        self._lastStage = "greeting"
        self._partial: tuple[int, list[str]] | None = None
        self._timer: Any = None
        self._lost: Failure | None = None
        self._aborted = False
        #: Whether the connection is gone or being dropped (an attribute,
        #: not a property: it is read for every line).
        self._closed = False
        #: How many complete replies arrived so far.
        self.repliesReceived = 0

    @property
    def closed(self) -> bool:
        """
        Whether the connection is gone (or being dropped).
        """
        return self._closed

    # -- timers ---------------------------------------------------------

    def _arm(self, stage: str) -> None:
        """
        (Re)start the timer of C{stage}.
        """
        self._disarm()
        seconds = TIMEOUTS[stage] * self._scale
        self._timer = self._reactor.callLater(seconds, self._timedOut, stage, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timedOut(self, stage: str, seconds: float) -> None:
        self._timer = None
        self._abort(ReplyTimeout(stage, seconds))

    def _dropConnection(self) -> None:
        """
        Abort the connection now, unless it is already gone.
        """
        if self.transport is not None and not self._closed:
            self._aborted = self._closed = True
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _abort(self, why: Exception) -> None:
        """
        Fail every reply awaited with C{why} and drop the connection.
        """
        awaiting, self._awaiting = self._awaiting, deque()
        self._dropConnection()
        for awaited in awaiting:
            awaited.deferred.errback(why)

    # -- replies ----------------------------------------------------------

    @property
    def _pendingStage(self) -> str:
        """
        The stage of the first reply awaited, else of the last one received.
        """
        return self._awaiting[0].stage if self._awaiting else self._lastStage

    def _timeHead(self) -> None:
        """
        Run the stage timer of the first reply awaited, if it is timed.
        """
        if self._awaiting and self._awaiting[0].timed:
            self._arm(self._awaiting[0].stage)
        else:
            self._disarm()

    def _awaitReply(self, stage: str, timed: bool = True) -> Deferred[Reply]:
        """
        Wait for the reply after the ones already awaited.

        @param stage: what it answers (for timeouts and errors).
        @param timed: start the stage timer when it becomes the first
            reply awaited.
        @return: a Deferred firing with the L{Reply}.
        """
        d: Deferred[Reply] = Deferred()
        if self._closed:
            d.errback(
                ConnectionLostWaiting(stage, self._lost or Failure(ConnectionDone("aborted")))
            )
            return d
        self._awaiting.append(_Awaited(stage, timed, d))
        if len(self._awaiting) == 1:
            self._timeHead()
        return d

    def _commands(
        self, commands: Sequence[tuple[str, str]], encoding: str = "ascii"
    ) -> list[tuple[str, Deferred[Reply]]]:
        """
        Send command lines in one write (several make an RFC 2920 group)
        and wait for their replies, in order.

        @param commands: C{(line, stage)} pairs.
        @return: C{(stage, Deferred)} pairs, in the same order.
        """
        awaited = [(stage, self._awaitReply(stage)) for _, stage in commands]
        if not self._closed:
            writeNow(
                self.transport,  # type: ignore[arg-type]
                b"".join(line.encode(encoding) + b"\r\n" for line, _ in commands),
            )
        return awaited

    def _command(self, line: str, stage: str, encoding: str = "ascii") -> Deferred[Reply]:
        """
        Send one command line and wait for its reply.
        """
        return self._commands([(line, stage)], encoding)[0][1]

    def lineReceived(self, line: bytes) -> None:
        """
        One reply line: complete the reply, hand it to the first waiter.
        """
        if self._closed:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        match = _REPLY_LINE.match(line)
        if match is None:
            self._abort(
                ProtocolViolation(self._pendingStage, f"malformed reply line {line[:80]!r}")
            )
            return
        code = int(match.group(1))
        text = cleanText((match.group(3) or b"").decode("utf-8", "replace"))
        if self._partial is None:
            self._partial = (code, [])
        elif self._partial[0] != code:
            self._abort(ProtocolViolation(self._pendingStage, "reply lines with different codes"))
            return
        self._partial[1].append(text)
        if match.group(2) == b"-":
            return
        reply = Reply(code, tuple(self._partial[1]))
        self._partial = None
        self.repliesReceived += 1
        if not self._awaiting:
            self._abort(ProtocolViolation(self._pendingStage, f"unexpected reply {reply}"))
            return
        awaited = self._awaiting.popleft()
        self._lastStage = awaited.stage
        self._timeHead()
        awaited.deferred.callback(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A reply line over L{MAX_LENGTH}: the server is not speaking SMTP.
        """
        self._abort(ProtocolViolation(self._pendingStage, "reply line too long"))

    def _discardPendingInput(self) -> None:
        """
        Forget what was received and not yet parsed (before STARTTLS: what
        the server sent in cleartext after its 220 must not count as a reply
        inside the TLS session).
        """
        self.clearLineBuffer()
        self._partial = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fail every reply awaited.
        """
        self._lost = reason
        self._closed = True
        self._disarm()
        awaiting, self._awaiting = self._awaiting, deque()
        for awaited in awaiting:
            awaited.deferred.errback(ConnectionLostWaiting(awaited.stage, reason))
