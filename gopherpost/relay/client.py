# -*- test-case-name: tests.test_client,tests.test_client_loopback -*-
"""
The outbound SMTP client: one connection to one remote host, carrying one or
more mail transactions, driven by Deferreds (no threads).

L{deliver} sends one message; L{deliverMany} sends several messages for the
same destination over one connection.  Both always succeed with results:
every recipient gets a L{RecipientOutcome} whose C{status} is L{SENT},
L{DEFERRED} (try another host or retry later) or L{FAILED} (permanent).
Connection trouble, timeouts and TLS problems are L{DEFERRED} for every
recipient not yet settled, with a clear reason.

The session: greeting, EHLO (HELO when EHLO is refused with 5xx), STARTTLS
per the outbound TLS policy (see L{gopherpost.tls}) and EHLO again, then for
each message MAIL FROM (with C{SIZE=} and C{BODY=8BITMIME} when the server
supports them), one RCPT per recipient, DATA when at least one recipient was
accepted, the body (CRLF line ends, dot-stuffed, sent in chunks with flow
control) and QUIT.  When the server advertises C{PIPELINING} (RFC 2920),
MAIL, every RCPT and DATA go out in one write and their replies are read in
order; the body still waits for C{354}.  Once the server answered 2xx to the
final dot, the message is delivered to the accepted recipients, whatever
happens to QUIT or the connection afterwards.

Timeouts follow RFC 5321 section 4.5.3.2 (see L{TIMEOUTS}), multiplied by
C{timeoutScale}, on the injected reactor's clock.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.sendnow import writeNow
from gopherpost.tls import (
    CONTINUE_CLEARTEXT,
    DEFER_HOST,
    TLSPolicyError,
    afterHandshakeFailure,
    afterStartTLSRefused,
    checkPolicy,
    clientContextFor,
    shouldStartTLS,
)

__all__ = [
    "SENT",
    "DEFERRED",
    "FAILED",
    "TIMEOUTS",
    "Reply",
    "Envelope",
    "RecipientOutcome",
    "DeliveryResult",
    "prepareMessage",
    "deliver",
    "deliverMany",
]

_log = Logger()

#: Recipient status: the remote server accepted the message for it.
SENT = "sent"
#: Recipient status: temporary failure; try another host or retry later.
DEFERRED = "deferred"
#: Recipient status: permanent failure; bounce.
FAILED = "failed"

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

_CHUNK_SIZE = 65536
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
_REPLY_LINE = re.compile(rb"^([0-9]{3})(?:([ -])(.*))?$", re.DOTALL)
_ENHANCED = re.compile(r"^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:\s+|$)")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


# ---------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class Reply:
    """
    One (possibly multi-line) SMTP reply.

    @ivar code: the three-digit code.
    @ivar lines: the text of each line, decoded, without the code.
    """

    code: int
    lines: tuple[str, ...] = ()

    @property
    def enhancedCode(self) -> str | None:
        """
        The RFC 3463 status code the reply starts with (class matching
        C{code}), or L{None}.
        """
        if not self.lines:
            return None
        match = _ENHANCED.match(self.lines[0])
        if match is None or int(match.group(1)) != self.code // 100:
            return None
        return ".".join(match.groups())

    @property
    def text(self) -> str:
        """
        The reply text on one line, enhanced codes removed.
        """
        parts = []
        for line in self.lines:
            match = _ENHANCED.match(line)
            if match is not None and int(match.group(1)) == self.code // 100:
                line = line[match.end() :]
            parts.append(line.strip())
        return " ".join(part for part in parts if part)

    def __str__(self) -> str:
        enhanced = self.enhancedCode
        return " ".join(str(x) for x in (self.code, enhanced, self.text) if x)


@dataclass(frozen=True)
class Envelope:
    """
    One message to send.

    @ivar sender: the reverse-path without angle brackets; C{""} for C{<>}.
    @ivar recipients: forward-paths without angle brackets.
    @ivar message: the message, headers and body (any line ends).
    """

    sender: str
    recipients: tuple[str, ...]
    message: bytes


@dataclass(frozen=True)
class RecipientOutcome:
    """
    What happened to one recipient.

    @ivar recipient: the address.
    @ivar status: L{SENT}, L{DEFERRED} or L{FAILED}.  This is the verdict to
        act on; C{code} may disagree (a C{554} greeting defers the host).
    @ivar code: the SMTP reply code (a synthetic one when C{remote} is
        false: 421 for local temporary trouble, 55x for local refusals).
    @ivar enhancedCode: the RFC 3463 status, e.g. C{"5.1.1"} (the remote
        one when given, else derived from the class of C{code}).
    @ivar text: one line: the server's reply text, or our own diagnosis.
    @ivar remote: whether C{code}/C{text} came from the remote server (a
        DSN then reports them as C{Diagnostic-Code: smtp; ...}).
    """

    recipient: str
    status: str
    code: int
    enhancedCode: str
    text: str
    remote: bool

    @property
    def diagnosticCode(self) -> str | None:
        """
        C{"smtp; 550 5.1.1 text"} for a remote reply, else L{None}.
        """
        if not self.remote:
            return None
        return f"smtp; {self.code} {self.enhancedCode} {self.text}".rstrip()


@dataclass(frozen=True)
class DeliveryResult:
    """
    The outcome of one message sent to one host.

    @ivar host: the MX host name the connection was for.
    @ivar address: the IP address connected to.
    @ivar port: the port connected to.
    @ivar outcomes: one L{RecipientOutcome} per distinct recipient, in order.
    @ivar accepted: whether the server answered 2xx to the final dot.
    @ivar tlsUsed: whether the message went over TLS.
    @ivar tlsVersion: e.g. C{"TLSv1.3"}, when known.
    @ivar cipher: e.g. C{"TLS_AES_256_GCM_SHA384"}, when known.
    @ivar failureStage: where the message last failed (C{"connect"},
        C{"greeting"}, C{"TLS"}, C{"MAIL"}, C{"RCPT"}, C{"DATA"},
        C{"end of data"}, ...); L{None} when the message was accepted (even
        if some RCPTs were refused).
    """

    host: str
    address: str
    port: int
    outcomes: tuple[RecipientOutcome, ...]
    accepted: bool = False
    tlsUsed: bool = False
    tlsVersion: str | None = None
    cipher: str | None = None
    failureStage: str | None = None

    def outcomeFor(self, recipient: str) -> RecipientOutcome:
        """
        @raise KeyError: C{recipient} was not in the envelope.
        """
        for outcome in self.outcomes:
            if outcome.recipient == recipient:
                return outcome
        raise KeyError(recipient)

    def _withStatus(self, status: str) -> tuple[str, ...]:
        return tuple(o.recipient for o in self.outcomes if o.status == status)

    @property
    def sent(self) -> tuple[str, ...]:
        """
        Recipients the server accepted the message for.
        """
        return self._withStatus(SENT)

    @property
    def deferred(self) -> tuple[str, ...]:
        """
        Recipients with a temporary failure.
        """
        return self._withStatus(DEFERRED)

    @property
    def failed(self) -> tuple[str, ...]:
        """
        Recipients with a permanent failure.
        """
        return self._withStatus(FAILED)


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


def _statusFor(code: int) -> str:
    return {2: SENT, 4: DEFERRED, 5: FAILED}.get(code // 100, DEFERRED)


def _defaultEnhanced(code: int) -> str:
    return f"{code // 100}.0.0" if code // 100 in (2, 4, 5) else "4.0.0"


def _clean(text: str) -> str:
    return _UNPRINTABLE.sub("?", text)


def _validAddress(address: str, allowEmpty: bool) -> bool:
    if not address:
        return allowEmpty
    return len(address) <= 254 and _BAD_ADDRESS.search(address) is None


# ---------------------------------------------------------------------------
# Failures inside a session


class _SessionFailure(Exception):
    """
    The session cannot go on; every unsettled recipient gets this outcome.

    @ivar polite: whether the connection is still a clean SMTP session, so
        we say QUIT rather than just closing.
    """

    def __init__(
        self,
        stage: str,
        code: int,
        enhancedCode: str,
        text: str,
        remote: bool,
        status: str = DEFERRED,
        polite: bool = False,
        abort: bool = False,
    ) -> None:
        super().__init__(text)
        self.abort = abort
        self.stage = stage
        self.code = code
        self.enhancedCode = enhancedCode
        self.text = text
        self.remote = remote
        self.status = status
        self.polite = polite

    @classmethod
    def fromReply(
        cls,
        stage: str,
        reply: Reply,
        prefix: str = "",
        status: str = DEFERRED,
        polite: bool = True,
        abort: bool = False,
    ) -> _SessionFailure:
        text = reply.text
        if prefix:
            text = f"{prefix}: {reply.code} {text}".rstrip()
        return cls(
            stage,
            reply.code,
            reply.enhancedCode or _defaultEnhanced(reply.code),
            text,
            True,
            status,
            polite=polite and reply.code != 421 and not abort,
            abort=abort,
        )

    def outcome(self, recipient: str) -> RecipientOutcome:
        return RecipientOutcome(
            recipient, self.status, self.code, self.enhancedCode, self.text, self.remote
        )


class _Timeout(Exception):
    def __init__(self, stage: str, seconds: float) -> None:
        super().__init__(stage, seconds)
        self.stage = stage
        self.seconds = seconds


class _Lost(Exception):
    def __init__(self, stage: str, reason: Failure) -> None:
        super().__init__(stage, reason)
        self.stage = stage
        self.reason = reason


class _Violation(Exception):
    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(stage, detail)
        self.stage = stage
        self.detail = detail


def _describeError(reason: Failure) -> str:
    """
    One line for a connection-level error, TLS errors included.
    """
    value = reason.value
    errors = getattr(value, "args", ())
    # OpenSSL.SSL.Error: args[0] is a list of (library, function, reason).
    if errors and isinstance(errors[0], list) and errors[0]:
        reasons = [str(e[-1]) for e in errors[0] if isinstance(e, tuple) and e]
        if reasons:
            return ", ".join(dict.fromkeys(reasons))
    # service_identity.VerificationError carries .errors.
    mismatches = getattr(value, "errors", None)
    if mismatches:
        return (
            "certificate does not match the host name ("
            + ", ".join(type(m).__name__ for m in mismatches)
            + ")"
        )
    text = str(value) or type(value).__name__
    return _clean(text.splitlines()[0] if text else type(value).__name__)


# ---------------------------------------------------------------------------
# The body producer


@implementer(IPushProducer)
class _BodySender:
    """
    Write the payload in chunks, as fast as the transport takes it.

    While the transport has paused us, the data-block timer runs; it is
    reset whenever the transport resumes us.
    """

    def __init__(self, client: _SMTPClientProtocol, payload: bytes) -> None:
        self._client = client
        self._payload = payload
        self._offset = 0
        self._paused = False
        self._registered = False
        self.finished = False
        self.done: Deferred = Deferred()

    def start(self) -> Deferred:
        self._client.transport.registerProducer(self, True)
        self._registered = True
        self._produce()
        return self.done

    def _produce(self) -> None:
        view = memoryview(self._payload)
        while not self._paused and not self.finished and self._offset < len(self._payload):
            chunk = view[self._offset : self._offset + _CHUNK_SIZE]
            self._offset += len(chunk)
            writeNow(self._client.transport, bytes(chunk))
        if not self.finished and self._offset >= len(self._payload):
            self._finish()
            self.done.callback(None)

    def _finish(self) -> None:
        self.finished = True
        if self._registered:
            self._registered = False
            self._client.transport.unregisterProducer()

    def stop(self) -> None:
        """
        Stop writing (the reply came early or the connection is going).
        """
        if not self.finished:
            self._finish()

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            self._client._arm("data block")

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._client._disarm()
            self._produce()

    def stopProducing(self) -> None:
        # The transport is going away and has dropped us already.
        self._registered = False
        self.finished = True


# ---------------------------------------------------------------------------
# Per-transaction bookkeeping


class _Transaction:
    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        self.recipients: tuple[str, ...] = tuple(dict.fromkeys(envelope.recipients))
        self.outcomes: dict[str, RecipientOutcome] = {}
        self.accepted = False
        self.failureStage: str | None = None

    def settle(
        self, recipient: str, status: str, code: int, enhanced: str, text: str, remote: bool
    ) -> None:
        if recipient not in self.outcomes:
            self.outcomes[recipient] = RecipientOutcome(
                recipient, status, code, enhanced, text, remote
            )

    def settleReply(self, recipients: Sequence[str], reply: Reply, stage: str) -> None:
        status = _statusFor(reply.code)
        if status != SENT and recipients:
            self.failureStage = stage
        for recipient in recipients:
            self.settle(
                recipient,
                status,
                reply.code,
                reply.enhancedCode or _defaultEnhanced(reply.code),
                _clean(reply.text),
                True,
            )

    def settleAll(self, failure: _SessionFailure) -> None:
        if self.unsettled():
            self.failureStage = failure.stage
        for recipient in self.recipients:
            if recipient not in self.outcomes:
                self.outcomes[recipient] = failure.outcome(recipient)

    def unsettled(self) -> list[str]:
        return [r for r in self.recipients if r not in self.outcomes]


# ---------------------------------------------------------------------------
# The protocol


ContextFactoryFor = Callable[[str, str], object]


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
    deferred: Deferred


class _SMTPClientProtocol(LineReceiver):
    """
    The client side of one SMTP session; see the module docstring.

    @ivar finished: fires with the list of L{DeliveryResult} once the
        session is over and the connection closed.
    """

    delimiter = b"\n"
    MAX_LENGTH = 8192

    def __init__(
        self,
        reactor,
        host: str,
        address: str,
        port: int,
        heloName: str,
        envelopes: Sequence[Envelope],
        tlsPolicy: str,
        timeoutScale: float,
        contextFactoryFor: ContextFactoryFor,
    ) -> None:
        self._reactor = reactor
        self._host = host
        self._address = address
        self._port = port
        self._heloName = heloName
        self._envelopes = list(envelopes)
        self._policy = tlsPolicy
        self._scale = timeoutScale
        self._contextFactoryFor = contextFactoryFor
        self._awaiting: deque[_Awaited] = deque()
        self._lastStage = "greeting"
        self._partial: tuple[int, list[str]] | None = None
        self._timer = None
        self._lost: Failure | None = None
        self._aborted = False
        self._body: _BodySender | None = None
        self._results: list[DeliveryResult] | None = None
        self._runFailure: Failure | None = None
        self._closeTimer = None
        self.extensions: dict[str, tuple[str, ...]] = {}
        self.tlsUsed = False
        self.tlsVersion: str | None = None
        self.cipher: str | None = None
        self._handshaking = False
        self.finished: Deferred = Deferred()

    # -- timers ---------------------------------------------------------

    def _arm(self, stage: str) -> None:
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
        self._abort(_Timeout(stage, seconds))

    def _abort(self, why: Exception) -> None:
        """
        Fail every reply we wait for and drop the connection.
        """
        if self._body is not None:
            self._body.stop()
        awaiting, self._awaiting = self._awaiting, deque()
        if self.transport is not None and self._lost is None and not self._aborted:
            self._aborted = True
            self.transport.abortConnection()
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

    def _awaitReply(self, stage: str, timed: bool = True) -> Deferred:
        """
        Wait for the reply after the ones already awaited.

        @param stage: what it answers (for timeouts and errors).
        @param timed: start the stage timer when it becomes the first
            reply awaited.
        @return: a Deferred firing with the L{Reply}.
        """
        d: Deferred = Deferred()
        if self._lost is not None or self._aborted:
            d.errback(_Lost(stage, self._lost or Failure(ConnectionDone("aborted"))))
            return d
        self._awaiting.append(_Awaited(stage, timed, d))
        if len(self._awaiting) == 1:
            self._timeHead()
        return d

    def _commands(
        self, commands: Sequence[tuple[str, str]], encoding: str = "ascii"
    ) -> list[tuple[str, Deferred]]:
        """
        Send command lines in one write (several make an RFC 2920 group)
        and wait for their replies, in order.

        @param commands: C{(line, stage)} pairs.
        @return: C{(stage, Deferred)} pairs, in the same order.
        """
        awaited = [(stage, self._awaitReply(stage)) for _, stage in commands]
        if self._lost is None and not self._aborted:
            writeNow(
                self.transport, b"".join(line.encode(encoding) + b"\r\n" for line, _ in commands)
            )
        return awaited

    def _command(self, line: str, stage: str, encoding: str = "ascii") -> Deferred:
        return self._commands([(line, stage)], encoding)[0][1]

    def lineReceived(self, line: bytes) -> None:
        if self._aborted or self._lost is not None:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        match = _REPLY_LINE.match(line)
        if match is None:
            self._abort(_Violation(self._pendingStage, f"malformed reply line {line[:80]!r}"))
            return
        code = int(match.group(1))
        text = _clean((match.group(3) or b"").decode("utf-8", "replace"))
        if self._partial is None:
            self._partial = (code, [])
        elif self._partial[0] != code:
            self._abort(_Violation(self._pendingStage, "reply lines with different codes"))
            return
        self._partial[1].append(text)
        if match.group(2) == b"-":
            return
        reply = Reply(code, tuple(self._partial[1]))
        self._partial = None
        if not self._awaiting:
            self._abort(_Violation(self._pendingStage, f"unexpected reply {reply}"))
            return
        awaited = self._awaiting.popleft()
        self._lastStage = awaited.stage
        self._timeHead()
        awaited.deferred.callback(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._abort(_Violation(self._pendingStage, "reply line too long"))

    # -- connection -------------------------------------------------------

    def connectionMade(self) -> None:
        d = self._run()
        d.addCallbacks(self._ranToEnd, self._crashed)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = reason
        self._disarm()
        if self._closeTimer is not None and self._closeTimer.active():
            self._closeTimer.cancel()
        if self._body is not None:
            self._body.stop()
        awaiting, self._awaiting = self._awaiting, deque()
        for awaited in awaiting:
            awaited.deferred.errback(_Lost(awaited.stage, reason))
        self._maybeFinish()

    def _ranToEnd(self, results: list[DeliveryResult]) -> None:
        self._results = results
        self._close()

    def _crashed(self, failure: Failure) -> None:
        _log.failure("Bug in the SMTP client talking to {host}", failure, host=self._host)
        self._runFailure = failure
        if self._lost is None and not self._aborted:
            self._aborted = True
            self.transport.abortConnection()
        self._maybeFinish()

    def _close(self) -> None:
        if self._lost is not None or self._aborted:
            self._maybeFinish()
            return
        self.transport.loseConnection()
        if self._lost is None:
            self._closeTimer = self._reactor.callLater(
                TIMEOUTS["close"] * self._scale, self.transport.abortConnection
            )

    def _maybeFinish(self) -> None:
        if self._lost is None or self.finished.called:
            return
        if self._runFailure is not None:
            self.finished.errback(self._runFailure)
        elif self._results is not None:
            self.finished.callback(self._results)

    # -- the session -------------------------------------------------------

    def _failureFor(self, error: Exception) -> _SessionFailure:
        """
        Turn a timeout, a lost connection or a protocol violation into the
        outcome for the recipients still waiting.
        """
        if isinstance(error, _SessionFailure):
            return error
        tls = self._handshaking
        if isinstance(error, _Timeout):
            if tls:
                text = f"timeout after {error.seconds:g}s during the TLS handshake or the EHLO after it"
                return _SessionFailure("TLS", 421, "4.7.5", text, False)
            what = error.stage
            text = f"timeout after {error.seconds:g}s waiting for {_describeStage(what)}"
            return _SessionFailure(what, 421, "4.4.2", text, False)
        if isinstance(error, _Lost):
            detail = _describeError(error.reason)
            if tls and afterHandshakeFailure(self._policy) == DEFER_HOST:
                text = f"TLS with {self._host} failed: {detail} (no fallback to cleartext)"
                return _SessionFailure("TLS", 421, "4.7.5", text, False)
            text = f"connection lost waiting for {_describeStage(error.stage)}: {detail}"
            return _SessionFailure(error.stage, 421, "4.4.2", text, False)
        if isinstance(error, _Violation):
            text = f"protocol error waiting for {_describeStage(error.stage)}: {error.detail}"
            return _SessionFailure(error.stage, 421, "4.5.0", text, False)
        raise error

    @inlineCallbacks
    def _run(self) -> Generator[Deferred, object, list[DeliveryResult]]:
        transactions = [_Transaction(e) for e in self._envelopes]
        current: _Transaction | None = None
        failure: _SessionFailure | None = None
        try:
            yield self._opening()
            needReset = False
            for transaction in transactions:
                current = transaction
                if needReset:
                    reply = yield self._command("RSET", "RSET")
                    if reply.code // 100 != 2:
                        raise _SessionFailure.fromReply("RSET", reply, "RSET refused")
                needReset = yield self._transaction(transaction)
            current = None
        except (_SessionFailure, _Timeout, _Lost, _Violation) as e:
            failure = self._failureFor(e)
        if failure is not None:
            first = 0 if current is None else transactions.index(current)
            for transaction in transactions[first:]:
                transaction.settleAll(failure)
            if failure.abort and self._lost is None and not self._aborted:
                self._aborted = True
                self.transport.abortConnection()
            elif failure.polite and self._lost is None and not self._aborted:
                yield self._quit()
        else:
            yield self._quit()
        return [self._result(t) for t in transactions]

    def _result(self, transaction: _Transaction) -> DeliveryResult:
        return DeliveryResult(
            host=self._host,
            address=self._address,
            port=self._port,
            outcomes=tuple(transaction.outcomes[r] for r in transaction.recipients),
            accepted=transaction.accepted,
            tlsUsed=self.tlsUsed,
            tlsVersion=self.tlsVersion,
            cipher=self.cipher,
            failureStage=None if transaction.accepted else transaction.failureStage,
        )

    @inlineCallbacks
    def _quit(self) -> Generator[Deferred, object, None]:
        try:
            yield self._command("QUIT", "QUIT")
        except (_Timeout, _Lost, _Violation):
            pass

    @inlineCallbacks
    def _opening(self) -> Generator[Deferred, object, None]:
        greeting = yield self._awaitReply("greeting")
        if greeting.code // 100 != 2:
            raise _SessionFailure.fromReply(
                "greeting", greeting, f"{self._host} refused to talk to us"
            )
        yield self._hello()
        try:
            startTLS = shouldStartTLS(self._policy, "STARTTLS" in self.extensions)
        except TLSPolicyError as e:
            raise _SessionFailure(
                "TLS", 421, e.enhancedCode, e.reason, False, polite=True
            ) from None
        if not startTLS:
            return
        try:
            creator = self._contextFactoryFor(self._policy, self._host)
            if creator is None:
                raise ValueError("no TLS context")
        except Exception as e:
            raise _SessionFailure(
                "TLS",
                421,
                "4.7.5",
                f"cannot set up TLS: {_clean(str(e)) or type(e).__name__}",
                False,
                polite=True,
            ) from None
        reply = yield self._command("STARTTLS", "STARTTLS")
        if reply.code != 220:
            if reply.code == 421 or afterStartTLSRefused(self._policy) != CONTINUE_CLEARTEXT:
                raise _SessionFailure.fromReply(
                    "STARTTLS",
                    reply,
                    f"STARTTLS refused, and SMTP_OUTBOUND_TLS={self._policy} forbids cleartext",
                )
            return
        # Anything the server sent after its 220 in cleartext is discarded:
        # it must not be taken as a reply inside the TLS session.
        self.clearLineBuffer()
        self._partial = None
        self._handshaking = True
        try:
            self.transport.startTLS(creator)
        except Exception as e:
            raise _SessionFailure(
                "TLS",
                421,
                "4.7.5",
                f"cannot start TLS with {self._host}: {_clean(str(e)) or type(e).__name__}",
                False,
                abort=True,
            ) from None
        yield self._hello()
        self._handshaking = False
        self.tlsUsed = True
        self._recordTLSDetails()

    def _recordTLSDetails(self) -> None:
        try:
            connection = self.transport.getHandle()
            version = connection.get_protocol_version_name()
            cipher = connection.get_cipher_name()
        except Exception:
            return
        self.tlsVersion = version if isinstance(version, str) else None
        self.cipher = cipher if isinstance(cipher, str) else None

    @inlineCallbacks
    def _hello(self) -> Generator[Deferred, object, None]:
        self.extensions = {}
        reply = yield self._command(f"EHLO {self._heloName}", "EHLO")
        if reply.code // 100 == 2:
            for line in reply.lines[1:]:
                words = line.split()
                if words:
                    self.extensions[words[0].upper()] = tuple(words[1:])
            return
        if reply.code // 100 != 5:
            raise _SessionFailure.fromReply("EHLO", reply, "EHLO refused")
        reply = yield self._command(f"HELO {self._heloName}", "HELO")
        if reply.code // 100 != 2:
            raise _SessionFailure.fromReply("HELO", reply, "EHLO and HELO refused")

    @property
    def _maxSize(self) -> int:
        params = self.extensions.get("SIZE", ())
        if params and params[0].isdigit():
            return int(params[0])
        return 0

    @inlineCallbacks
    def _transaction(self, tx: _Transaction) -> Generator[Deferred, object, bool]:
        """
        Run one mail transaction.

        @return: (via Deferred) whether RSET is needed before the next one.
        @raise _SessionFailure: and the like, when the session is over.
        """
        envelope = tx.envelope
        utf8 = "SMTPUTF8" in self.extensions

        def needsUTF8(address: str) -> bool:
            return not address.isascii()

        if not _validAddress(envelope.sender, allowEmpty=True):
            for r in tx.recipients:
                tx.settle(r, FAILED, 553, "5.1.7", "invalid sender address syntax", False)
            tx.failureStage = "MAIL"
            return False
        if needsUTF8(envelope.sender) and not utf8:
            for r in tx.recipients:
                tx.settle(
                    r, FAILED, 553, "5.6.7", "non-ASCII sender and the server lacks SMTPUTF8", False
                )
            tx.failureStage = "MAIL"
            return False
        for r in tx.recipients:
            if not _validAddress(r, allowEmpty=False):
                tx.settle(r, FAILED, 553, "5.1.3", "invalid recipient address syntax", False)
            elif needsUTF8(r) and not utf8:
                tx.settle(
                    r,
                    FAILED,
                    553,
                    "5.6.7",
                    "non-ASCII recipient and the server lacks SMTPUTF8",
                    False,
                )
        candidates = tx.unsettled()
        if not candidates:
            tx.failureStage = "RCPT"
            return False

        payload, size, eightBit = prepareMessage(envelope.message)
        maxSize = self._maxSize
        if maxSize and size > maxSize:
            for r in candidates:
                tx.settle(
                    r,
                    FAILED,
                    552,
                    "5.3.4",
                    f"message size {size} exceeds the fixed maximum message size "
                    f"{maxSize} of {self._host}",
                    False,
                )
            tx.failureStage = "MAIL"
            return False

        parameters = []
        if "SIZE" in self.extensions:
            parameters.append(f"SIZE={size}")
        if eightBit and "8BITMIME" in self.extensions:
            parameters.append("BODY=8BITMIME")
        smtputf8 = utf8 and (needsUTF8(envelope.sender) or any(needsUTF8(r) for r in candidates))
        if smtputf8:
            parameters.append("SMTPUTF8")
        encoding = "utf-8" if smtputf8 else "ascii"
        mail = " ".join([f"MAIL FROM:<{envelope.sender}>"] + parameters)
        rcpts = [(f"RCPT TO:<{r}>", "RCPT") for r in candidates]
        # With PIPELINING (RFC 2920 section 3.1) MAIL, RCPT... and DATA go
        # out at once; otherwise each command waits for the previous reply.
        group: list[tuple[str, Deferred]] = []
        if "PIPELINING" in self.extensions:
            group = self._commands([(mail, "MAIL")] + rcpts + [("DATA", "DATA")], encoding)

        def send(line: str, stage: str) -> Deferred:
            return group.pop(0)[1] if group else self._command(line, stage, encoding)

        try:
            reply = yield send(mail, "MAIL")
            if reply.code == 421:
                raise _SessionFailure.fromReply("MAIL", reply)
            if reply.code // 100 != 2:
                tx.settleReply(candidates, reply, "MAIL")
                return (yield self._skipReplies(group))

            accepted = []
            for r, (line, stage) in zip(candidates, rcpts):
                reply = yield send(line, stage)
                if reply.code == 421:
                    raise _SessionFailure.fromReply("RCPT", reply)
                if reply.code // 100 == 2:
                    accepted.append(r)
                elif reply.code // 100 in (4, 5):
                    tx.settleReply([r], reply, "RCPT")
                else:
                    raise _Violation("RCPT", f"unexpected reply {reply}")
            if not accepted:
                yield self._skipReplies(group)
                return True

            reply = yield send("DATA", "DATA")
        finally:
            # Replies nobody will read once the session has failed.
            for _, d in group:
                d.addErrback(lambda _: None)
        if reply.code == 421:
            raise _SessionFailure.fromReply("DATA", reply)
        if reply.code != 354:
            if reply.code // 100 not in (4, 5):
                raise _Violation("DATA", f"unexpected reply {reply}")
            tx.settleReply(accepted, reply, "DATA")
            return True

        # The final reply may come early (the server gives up mid-body), so
        # wait for it from the start; its timer starts once all is written.
        final = self._awaitReply("end of data", timed=False)
        body = _BodySender(self, payload)
        if not final.called:
            self._body = body
            body.start().addCallback(
                lambda _: self._arm("end of data") if not final.called else None
            )
        try:
            reply = yield final
        finally:
            self._body = None
        if not body.finished:
            # The server answered before the end of the message: the session
            # is out of step and must not carry anything more.
            body.stop()
            if reply.code // 100 not in (4, 5):
                raise _SessionFailure(
                    "end of data",
                    421,
                    "4.5.0",
                    f"protocol error: reply {reply} before the end of the message",
                    False,
                    abort=True,
                )
            tx.settleReply(accepted, reply, "end of data")
            raise _SessionFailure.fromReply(
                "end of data", reply, "reply before the end of the message", abort=True
            )
        if reply.code == 421:
            raise _SessionFailure.fromReply("end of data", reply)
        tx.settleReply(accepted, reply, "end of data")
        tx.accepted = reply.code // 100 == 2
        return False

    @inlineCallbacks
    def _skipReplies(self, group: list[tuple[str, Deferred]]) -> Generator[Deferred, object, bool]:
        """
        Read the replies left in a pipelined group once the transaction has
        failed, ignoring them.  A C{354} to DATA gets a lone dot (RFC 2920
        section 3.1: the server may accept DATA without recipients), whose
        reply is ignored too.

        @param group: C{(stage, Deferred)} pairs, consumed as they are read.
        @return: (via Deferred) whether there were any (RSET is then needed).
        @raise _SessionFailure: a reply was 421.
        """
        skipped = bool(group)
        while group:
            stage, d = group.pop(0)
            reply = yield d
            if reply.code == 354 and stage == "DATA":
                stage = "end of data"
                reply = yield self._command(".", stage)
            if reply.code == 421:
                raise _SessionFailure.fromReply(stage, reply)
        return skipped


def _describeStage(stage: str) -> str:
    if stage in ("greeting", "data block"):
        return {"greeting": "the greeting", "data block": "the server to read the message"}[stage]
    if stage == "end of data":
        return "the reply to the end of the message"
    return f"the reply to {stage}"


# ---------------------------------------------------------------------------
# Entry points


class _QuietOneShotFactory(Factory):
    """
    Builds the one protocol instance of one outbound connection, without
    the "Starting factory" and "Stopping factory" log lines that
    L{twisted.internet.endpoints.connectProtocol}'s factory writes for
    every connection.
    """

    noisy = False

    def __init__(self, protocol: _SMTPClientProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> _SMTPClientProtocol:
        return self._protocol


class _Attempt:
    """
    Connect, run the session, and fire C{result} exactly once: with the
    results, or with C{CancelledError} when cancelled.
    """

    def __init__(
        self,
        reactor,
        protocol: _SMTPClientProtocol,
        envelopes: Sequence[Envelope],
        host: str,
        address: str,
        port: int,
        connectTimeout: float,
    ) -> None:
        self._reactor = reactor
        self._protocol = protocol
        self._envelopes = envelopes
        self._host = host
        self._address = address
        self._port = port
        self._connectTimeout = connectTimeout
        self._connecting: Deferred | None = None
        self._timer = None
        self._timedOut = False
        self._cancelled = False
        self.result: Deferred = Deferred(self._cancel)

    def start(self, endpoint) -> Deferred:
        self._connecting = endpoint.connect(_QuietOneShotFactory(self._protocol))
        self._timer = self._reactor.callLater(self._connectTimeout, self._connectTimedOut)
        self._connecting.addCallbacks(self._connected, self._notConnected)
        return self.result

    def _connectTimedOut(self) -> None:
        self._timedOut = True
        self._connecting.cancel()

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _cancel(self, result: Deferred) -> None:
        self._cancelled = True
        if self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()
        elif self._protocol.transport is not None and self._protocol._lost is None:
            self._protocol.transport.abortConnection()

    def _deliver(self, results: object) -> None:
        if not self.result.called:
            self.result.callback(results)

    def _fail(self, failure: Failure) -> None:
        if not self.result.called:
            self.result.errback(failure)

    def _connected(self, protocol: _SMTPClientProtocol) -> None:
        self._stopTimer()
        protocol.finished.addCallbacks(self._deliver, self._fail)

    def _notConnected(self, reason: Failure) -> None:
        self._stopTimer()
        if self.result.called or self._cancelled:
            return
        where = f"{self._host} [{self._address}]:{self._port}"
        if self._timedOut or reason.check(ConnectTimeoutError):
            text = f"connection to {where} timed out after {self._connectTimeout:g}s"
        else:
            text = f"connection to {where} failed: {_describeError(reason)}"
        failure = _SessionFailure("connect", 421, "4.4.1", text, False)
        results = []
        for envelope in self._envelopes:
            transaction = _Transaction(envelope)
            transaction.settleAll(failure)
            results.append(
                DeliveryResult(
                    host=self._host,
                    address=self._address,
                    port=self._port,
                    outcomes=tuple(transaction.outcomes[r] for r in transaction.recipients),
                    failureStage=failure.stage,
                )
            )
        self._deliver(results)


def deliverMany(
    reactor,
    host: str,
    address: str,
    port: int,
    heloName: str,
    envelopes: Sequence[Envelope],
    tlsPolicy: str,
    timeoutScale: float = 1.0,
    contextFactoryFor: ContextFactoryFor = clientContextFor,
) -> Deferred:
    """
    Send several messages to one host over one connection.

    @param reactor: provides C{IReactorTCP} and C{IReactorTime} (tests pass
        C{MemoryReactorClock}).
    @param host: the MX host name; the TLS certificate is checked against it.
    @param address: the IP address to connect to (never a name: resolution
        is the caller's job).
    @param port: the TCP port.
    @param heloName: our name for EHLO/HELO (C{SMTP_HOSTNAME}).
    @param envelopes: the messages, in sending order (L{Envelope}s or
        C{(sender, recipients, message)} tuples).
    @param tlsPolicy: C{"verify"}, C{"may"}, C{"require"} or C{"none"}.
    @param timeoutScale: multiplies every timeout in L{TIMEOUTS}.
    @param contextFactoryFor: C{(policy, host) -> IOpenSSLClientConnectionCreator};
        called only when STARTTLS is to be used.
    @return: a Deferred firing with one L{DeliveryResult} per envelope, in
        order, once the connection is closed.  It does not fail for SMTP,
        network or TLS trouble; cancelling it drops the connection.
    @raise ValueError: C{address} is not an IP address, or the policy is
        unknown.
    """
    checkPolicy(tlsPolicy)
    if isIPv6Address(address):
        endpointType = TCP6ClientEndpoint
    elif isIPAddress(address):
        endpointType = TCP4ClientEndpoint
    else:
        raise ValueError(f"{address!r} is not an IP address")
    envelopes = [
        e if isinstance(e, Envelope) else Envelope(e[0], tuple(e[1]), e[2]) for e in envelopes
    ]
    connectTimeout = TIMEOUTS["connect"] * timeoutScale
    protocol = _SMTPClientProtocol(
        reactor,
        host,
        address,
        port,
        heloName,
        envelopes,
        tlsPolicy,
        timeoutScale,
        contextFactoryFor,
    )
    # The endpoint's own timeout is a backstop; ours is on the reactor's clock.
    endpoint = endpointType(reactor, address, port, timeout=int(connectTimeout) + 1)
    attempt = _Attempt(reactor, protocol, envelopes, host, address, port, connectTimeout)
    return attempt.start(endpoint)


def deliver(
    reactor,
    host: str,
    address: str,
    port: int,
    heloName: str,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    tlsPolicy: str,
    timeoutScale: float = 1.0,
    contextFactoryFor: ContextFactoryFor = clientContextFor,
) -> Deferred:
    """
    Send one message to one host: L{deliverMany} with one envelope.

    @param sender: the reverse-path without angle brackets (C{""} for C{<>}).
    @param recipients: the forward-paths without angle brackets.
    @param message: the message bytes (any line ends; sent as CRLF).
    @return: a Deferred firing with the L{DeliveryResult}.

    See L{deliverMany} for the other parameters.
    """
    d = deliverMany(
        reactor,
        host,
        address,
        port,
        heloName,
        [Envelope(sender, tuple(recipients), message)],
        tlsPolicy,
        timeoutScale,
        contextFactoryFor,
    )
    return d.addCallback(lambda results: results[0])
