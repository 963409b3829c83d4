# -*- test-case-name: tests.test_client,tests.test_client_loopback -*-
"""
The outbound SMTP client's entry points: connect to one remote host and run
one session (L{gopherpost.relay.session}) carrying one or more messages.

L{deliver} sends one message; L{deliverMany} sends several messages for the
same destination over one connection; L{startDelivery} does the same and
returns a handle that can also stop the delivery gracefully.  They always
succeed with results: every recipient gets a
L{gopherpost.relay.outcome.RecipientOutcome} whose C{status} is L{SENT},
L{DEFERRED} or L{FAILED}.  A connection that cannot be made (refused, timed
out) is L{DEFERRED} for every recipient, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.relay.channel import TIMEOUTS
from gopherpost.relay.outcome import (
    DEFERRED,
    FAILED,
    SENT,
    DeliveryResult,
    describeConnectionError,
)
from gopherpost.relay.session import ClientSession, ContextFactoryFor, ParkHook, ResultListener
from gopherpost.relay.transaction import (
    Envelope,
    SessionFailure,
    stoppedFailure,
    unreachedResults,
)
from gopherpost.tls import checkPolicy, clientContextFor

__all__ = [
    "SENT",
    "DEFERRED",
    "FAILED",
    "Envelope",
    "DeliveryAttempt",
    "ReusedDelivery",
    "startDelivery",
    "deliverMany",
    "deliver",
]

_log = Logger()


class _QuietOneShotFactory(Factory):
    """
    Builds the one protocol instance of one outbound connection, without
    the "Starting factory" and "Stopping factory" log lines that
    L{twisted.internet.endpoints.connectProtocol}'s factory writes for
    every connection.
    """

    noisy = False

    def __init__(self, protocol: ClientSession) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> ClientSession:
        return self._protocol


class DeliveryAttempt:
    """
    One connection to one host and the session on it.

    @ivar result: fires exactly once: with one L{DeliveryResult} per
        envelope, in order, once the connection is closed; or with
        L{twisted.internet.defer.CancelledError} when cancelled (which drops
        the connection at once).  It does not fail for SMTP, network or TLS
        trouble.
    """

    def __init__(
        self,
        reactor: Any,
        session: ClientSession,
        envelopes: Sequence[Envelope],
        host: str,
        address: str,
        port: int,
        connectTimeout: float,
        onResult: ResultListener | None,
    ) -> None:
        self._reactor = reactor
        self._session = session
        self._envelopes = envelopes
        self._host = host
        self._address = address
        self._port = port
        self._connectTimeout = connectTimeout
        self._onResult = onResult
        self._startedAt = reactor.seconds()
        self._connecting: Deferred[Any] | None = None
        self._connected = False
        self._timer: Any = None
        self._timedOut = False
        self._cancelled = False
        self._stopping = False
        self.result: Deferred[list[DeliveryResult]] = Deferred(self._cancel)

    def start(self, endpoint: IStreamClientEndpoint) -> Deferred[list[DeliveryResult]]:
        """
        Connect through C{endpoint} and run the session.

        @return: L{result}.
        """
        self._connecting = endpoint.connect(_QuietOneShotFactory(self._session))
        self._timer = self._reactor.callLater(self._connectTimeout, self._connectTimedOut)
        self._connecting.addCallbacks(self._madeConnection, self._notConnected)
        return self.result

    def stopGracefully(self) -> None:
        """
        End the delivery soon without losing track of a delivered message:
        see L{ClientSession.stopGracefully}.  A connection not made yet is
        given up.  L{result} fires as usual, once the connection is closed.
        """
        if self.result.called or self._stopping:
            return
        self._stopping = True
        if self._connected:
            self._session.stopGracefully()
        elif self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()

    def _connectTimedOut(self) -> None:
        self._timedOut = True
        if self._connecting is not None:
            self._connecting.cancel()

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _cancel(self, result: Deferred[list[DeliveryResult]]) -> None:
        self._cancelled = True
        if self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()
        else:
            self._session.abort()

    def _deliver(self, results: list[DeliveryResult]) -> None:
        if not self.result.called:
            self.result.callback(results)

    def _fail(self, failure: Failure) -> None:
        if not self.result.called:
            self.result.errback(failure)

    def roundEnded(self, results: list[DeliveryResult]) -> None:
        """
        See L{gopherpost.relay.session.RoundOwner.roundEnded}.
        """
        self._deliver(results)

    def roundFailed(self, failure: Failure) -> None:
        """
        See L{gopherpost.relay.session.RoundOwner.roundFailed}.
        """
        self._fail(failure)

    def _madeConnection(self, session: ClientSession) -> None:
        self._stopTimer()
        self._connected = True
        if self._stopping:
            session.stopGracefully()
        session.finished.addCallbacks(_toRound, _failRound, (session,), {}, (session,))

    def _notConnected(self, reason: Failure) -> None:
        self._stopTimer()
        if self.result.called or self._cancelled:
            return
        where = f"{self._host} [{self._address}]:{self._port}"
        if self._stopping:
            failure = stoppedFailure(polite=False)
        elif self._timedOut or reason.check(ConnectTimeoutError):
            text = f"connection to {where} timed out after {self._connectTimeout:g}s"
            failure = SessionFailure("connect", 421, "4.4.1", text, False)
        else:
            text = f"connection to {where} failed: {describeConnectionError(reason)}"
            failure = SessionFailure("connect", 421, "4.4.1", text, False)
        results = unreachedResults(
            self._envelopes,
            self._host,
            self._address,
            self._port,
            failure,
            self._reactor.seconds() - self._startedAt,
        )
        if self._onResult is None:
            self._deliver(results)
            return
        reports = [self._report(index, result) for index, result in enumerate(results)]
        gatherResults(reports).addCallback(lambda _: self._deliver(results))

    def _report(self, index: int, result: DeliveryResult) -> Deferred[object]:
        assert self._onResult is not None

        def failed(failure: Failure) -> None:
            _log.failure(
                "Could not record the outcome of a message for {host}", failure, host=self._host
            )

        return maybeDeferred(self._onResult, index, result).addErrback(failed)


def _toRound(results: list[DeliveryResult], session: ClientSession) -> None:
    # The connection is closed: the last round's results, to its owner
    # (who already has them if the session was taken up again since).
    if session.round is not None:
        session.round.roundEnded(results)


def _failRound(failure: Failure, session: ClientSession) -> None:
    if session.round is not None:
        session.round.roundFailed(failure)


class ReusedDelivery:
    """
    One more round of messages on a connection that a previous delivery
    left open (see L{gopherpost.relay.session.ParkHook}): the same
    interface as L{DeliveryAttempt}.

    @ivar result: fires once with one L{DeliveryResult} per envelope, in
        order, when the round is over; fails with
        L{gopherpost.relay.session.StaleConnection} when the server had
        closed the connection before it answered anything of this round
        (nothing was delivered: send the envelopes over a new connection).
    """

    def __init__(self, session: ClientSession) -> None:
        self._session = session
        self.result: Deferred[list[DeliveryResult]] = Deferred(self._cancel)

    def stopGracefully(self) -> None:
        """
        See L{DeliveryAttempt.stopGracefully}.
        """
        if not self.result.called:
            self._session.stopGracefully()

    def _cancel(self, result: Deferred[list[DeliveryResult]]) -> None:
        self._session.abort()

    def roundEnded(self, results: list[DeliveryResult]) -> None:
        """
        See L{gopherpost.relay.session.RoundOwner.roundEnded}.
        """
        if not self.result.called:
            self.result.callback(results)

    def roundFailed(self, failure: Failure) -> None:
        """
        See L{gopherpost.relay.session.RoundOwner.roundFailed}.
        """
        if not self.result.called:
            self.result.errback(failure)


def startDelivery(
    reactor: Any,
    host: str,
    address: str,
    port: int,
    heloName: str,
    envelopes: Sequence[Envelope | tuple[str, Sequence[str], bytes]],
    tlsPolicy: str,
    timeoutScale: float = 1.0,
    contextFactoryFor: ContextFactoryFor = clientContextFor,
    onResult: ResultListener | None = None,
    park: ParkHook | None = None,
) -> DeliveryAttempt:
    """
    Start sending several messages to one host over one connection.

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
    @param timeoutScale: multiplies every timeout in
        L{gopherpost.relay.channel.TIMEOUTS}.
    @param contextFactoryFor: C{(policy, host) -> IOpenSSLClientConnectionCreator};
        called only when STARTTLS is to be used.
    @param onResult: called with C{(index, result)} for each envelope as
        soon as its outcome is known, before the next message starts (see
        L{gopherpost.relay.session.ResultListener}).
    @param park: offers the connection for more messages once these are
        sent (see L{gopherpost.relay.session.ParkHook}); L{None}: QUIT.
    @return: the attempt; its C{result} fires with one L{DeliveryResult}
        per envelope (when the connection is closed, or parked).
    @raise ValueError: C{address} is not an IP address, or the policy is
        unknown.
    """
    checkPolicy(tlsPolicy)
    endpointType: type[TCP4ClientEndpoint] | type[TCP6ClientEndpoint]
    if isIPv6Address(address):
        endpointType = TCP6ClientEndpoint
    elif isIPAddress(address):
        endpointType = TCP4ClientEndpoint
    else:
        raise ValueError(f"{address!r} is not an IP address")
    messages = [
        e if isinstance(e, Envelope) else Envelope(e[0], tuple(e[1]), e[2]) for e in envelopes
    ]
    connectTimeout = TIMEOUTS["connect"] * timeoutScale
    startedAt = reactor.seconds()
    session = ClientSession(
        reactor,
        host,
        address,
        port,
        heloName,
        messages,
        tlsPolicy,
        timeoutScale,
        contextFactoryFor,
        onResult=onResult,
        startedAt=startedAt,
        park=park,
    )
    # The endpoint's own timeout is a backstop; ours is on the reactor's clock.
    endpoint = endpointType(reactor, address, port, timeout=int(connectTimeout) + 1)
    attempt = DeliveryAttempt(
        reactor, session, messages, host, address, port, connectTimeout, onResult
    )
    session.round = attempt
    attempt.start(endpoint)
    return attempt


def deliverMany(
    reactor: Any,
    host: str,
    address: str,
    port: int,
    heloName: str,
    envelopes: Sequence[Envelope | tuple[str, Sequence[str], bytes]],
    tlsPolicy: str,
    timeoutScale: float = 1.0,
    contextFactoryFor: ContextFactoryFor = clientContextFor,
    onResult: ResultListener | None = None,
) -> Deferred[list[DeliveryResult]]:
    """
    Send several messages to one host over one connection: see
    L{startDelivery}.

    @return: a Deferred firing with one L{DeliveryResult} per envelope, in
        order, once the connection is closed.  It does not fail for SMTP,
        network or TLS trouble; cancelling it drops the connection.
    """
    return startDelivery(
        reactor,
        host,
        address,
        port,
        heloName,
        envelopes,
        tlsPolicy,
        timeoutScale,
        contextFactoryFor,
        onResult,
    ).result


def deliver(
    reactor: Any,
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
) -> Deferred[DeliveryResult]:
    """
    Send one message to one host: L{deliverMany} with one envelope.

    @param sender: the reverse-path without angle brackets (C{""} for C{<>}).
    @param recipients: the forward-paths without angle brackets.
    @param message: the message bytes (any line ends; sent as CRLF).
    @return: a Deferred firing with the L{DeliveryResult}.

    See L{startDelivery} for the other parameters.
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
