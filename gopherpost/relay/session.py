# -*- test-case-name: tests.test_relay_session,tests.test_relay_transaction,tests.test_relay_timeouts,tests.test_relay_starttls,tests.test_client_pipelining -*-
"""
The client side of one outbound SMTP session: one connection to one remote
host, carrying one or more mail transactions, driven by Deferreds (no
threads).  L{gopherpost.relay.client} connects and hands the connection to a
L{ClientSession}.

The session: greeting, EHLO (HELO when EHLO is refused with 5xx), STARTTLS
per the outbound TLS policy (see L{gopherpost.tls}) and EHLO again, then for
each message MAIL FROM (with C{SIZE=} and C{BODY=8BITMIME} when the server
supports them, C{REQUIRETLS} for a message that requires it, which is only
sent under TLS to a server that advertises it), one RCPT per recipient, DATA when at least one recipient was
accepted, the body (CRLF line ends, dot-stuffed, sent in chunks with flow
control) and QUIT (or, with a L{ParkHook}, the connection waits for more
messages, see L{gopherpost.relay.connectioncache}).  When the server
advertises C{PIPELINING} (RFC 2920), MAIL, every RCPT and DATA go out in one
write and their replies are read in order; the body still waits for C{354}.
Once the server answered 2xx to the final dot, the message is delivered to
the accepted recipients, whatever happens to QUIT or the connection
afterwards.

Each message's L{DeliveryResult} is reported (see L{ResultListener}) as soon
as it is known: the reply to its final dot, or the failure that ended it.
The next message of the connection starts only after that, so a caller that
records each result when it comes loses track of at most the message in
flight when the process dies.  Every recipient gets a L{RecipientOutcome}:
L{SENT}, L{DEFERRED} (try another host or retry later) or L{FAILED}
(permanent).  Connection trouble, timeouts and TLS problems are
L{DEFERRED} for every recipient not yet settled, with a clear reason.

Timeouts follow RFC 5321 section 4.5.3.2 (see
L{gopherpost.relay.channel.TIMEOUTS}), multiplied by C{timeoutScale}, on
the injected reactor's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.relay.body import BodySender, prepareMessage
from gopherpost.relay.channel import (
    TIMEOUTS,
    CommandChannel,
    ConnectionLostWaiting,
    ProtocolViolation,
    ReplyTimeout,
    Stopped,
)
from gopherpost.relay.esmtp import (
    asciiForm,
    mailParameters,
    messageNeedsSMTPUTF8,
    rcptParameters,
    utf8Refusal,
)
from gopherpost.relay.outcome import (
    DEFERRED,
    FAILED,
    DeliveryResult,
    Reply,
    cleanText,
    describeConnectionError,
)
from gopherpost.relay.transaction import (
    Envelope,
    SessionFailure,
    Transaction,
    stoppedFailure,
    validAddress,
)
from gopherpost.tls import (
    CONTINUE_CLEARTEXT,
    DEFER_HOST,
    TLSPolicyError,
    afterHandshakeFailure,
    afterStartTLSRefused,
    shouldStartTLS,
)
from gopherpost.tlspolicy import requiretls

__all__ = [
    "ContextFactoryFor",
    "ResultListener",
    "ParkHook",
    "RoundOwner",
    "StaleConnection",
    "ClientSession",
]

_log = Logger()

#: C{(policy, host) -> IOpenSSLClientConnectionCreator}: the TLS context
#: for STARTTLS with one host.
ContextFactoryFor = Callable[[str, str], object]
#: C{(index, result)}: called once per envelope, in order, as soon as its
#: outcome is known.  It may return a Deferred: the session waits for it
#: before it starts the next message.  What it raises is logged.
ResultListener = Callable[[int, DeliveryResult], object]

#: C{park(session) -> Deferred}: called when every message of the session
#: has been sent and nothing went wrong, instead of QUIT.  The Deferred
#: fires with the next round, C{(envelopes, onResult, round)} (see
#: L{ClientSession.round}), to run on the same connection, or with L{None}:
#: then the session says QUIT.
ParkHook = Callable[["ClientSession"], Deferred[Any]]


class StaleConnection(Exception):
    """
    A connection taken up again (see L{ParkHook}) turned out to be closed
    before the server answered anything of the new round: nothing of it
    was delivered, and its messages may go over a new connection at once.
    """


class RoundOwner(Protocol):
    """
    Whom a session reports one round's results to (the handles of
    L{gopherpost.relay.client}).
    """

    def roundEnded(self, results: list[DeliveryResult]) -> None:
        """
        The round ended with these results (called once; later calls are
        ignored).
        """

    def roundFailed(self, failure: Failure) -> None:
        """
        The round ended without results (a bug, or L{StaleConnection}).
        """


#: The failures that end a session; each becomes a L{SessionFailure}.
_ENDINGS = (SessionFailure, ReplyTimeout, ConnectionLostWaiting, ProtocolViolation, Stopped)


def _describeStage(stage: str) -> str:
    if stage in ("greeting", "data block"):
        return {"greeting": "the greeting", "data block": "the server to read the message"}[stage]
    if stage == "end of data":
        return "the reply to the end of the message"
    return f"the reply to {stage}"


class ClientSession(CommandChannel):
    """
    The client side of one SMTP session; see the module docstring.

    @ivar finished: fires with the list of L{DeliveryResult} (one per
        envelope, in order) once the session is over and the connection
        closed.
    @ivar extensions: the EHLO keywords of the server, with their
        parameters.
    @ivar tlsUsed: whether the session is under TLS.
    @ivar tlsVersion: e.g. C{"TLSv1.3"}, once known.
    @ivar cipher: e.g. C{"TLS_AES_256_GCM_SHA384"}, once known.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        host: str,
        address: str,
        port: int,
        heloName: str,
        envelopes: Sequence[Envelope],
        tlsPolicy: str,
        timeoutScale: float,
        contextFactoryFor: ContextFactoryFor,
        onResult: ResultListener | None = None,
        startedAt: float | None = None,
        park: ParkHook | None = None,
    ) -> None:
        """
        @param reactor: the clock for timeouts and timings.
        @param host: the MX host name; the TLS certificate is checked
            against it.
        @param address: the IP address connected to.
        @param port: the TCP port connected to.
        @param heloName: our name for EHLO/HELO.
        @param envelopes: the messages, in sending order.
        @param tlsPolicy: C{"verify"}, C{"may"}, C{"require"} or C{"none"}.
        @param timeoutScale: multiplies every timeout.
        @param contextFactoryFor: see L{ContextFactoryFor}; called only when
            STARTTLS is to be used.
        @param onResult: see L{ResultListener}.
        @param startedAt: when the connection attempt began (default: now),
            for L{DeliveryResult.connectSeconds}.
        @param park: see L{ParkHook}; L{None}: QUIT after the messages.
        """
        CommandChannel.__init__(self, reactor, timeoutScale)
        self._host = host
        self._address = address
        self._port = port
        self._heloName = heloName
        self._envelopes = list(envelopes)
        self._policy = tlsPolicy
        self._contextFactoryFor = contextFactoryFor
        self._onResult = onResult
        self._startedAt = reactor.seconds() if startedAt is None else startedAt
        self._park = park
        #: Which use of the connection the current round is (1: it was
        #: made for it; more: taken up again, see L{ParkHook}).
        self._uses = 1
        #: Whom the results of the current round go to (set by the owner).
        self.round: RoundOwner | None = None
        self._readyAt: float | None = None
        self._body: BodySender | None = None
        self._finalReplyDue = False
        self._stopRequested = False
        self._results: list[DeliveryResult] | None = None
        self._runFailure: Failure | None = None
        self._closeTimer: Any = None
        self._handshaking = False
        self.extensions: dict[str, tuple[str, ...]] = {}
        self.tlsUsed = False
        self.tlsVersion: str | None = None
        self.cipher: str | None = None
        self.finished: Deferred[list[DeliveryResult]] = Deferred()

    def stopGracefully(self) -> None:
        """
        End the session soon without losing track of a delivered message.

        When the whole message is out and the reply to its final dot is
        awaited, wait for that reply (its result is reported as usual),
        then QUIT.  Otherwise drop the connection now: the current message,
        if any, cannot have been delivered, since its final dot has not gone
        out.  Messages not finished get L{DEFERRED} outcomes saying the
        relay is shutting down.
        """
        if self._stopRequested or self.closed:
            return
        self._stopRequested = True
        if not self._finalReplyDue and self.transport is not None:
            self._abort(Stopped(self._pendingStage))

    def abort(self) -> None:
        """
        Drop the connection at once (the delivery was cancelled).
        """
        self._dropConnection()

    # -- connection -------------------------------------------------------

    def _abort(self, why: Exception) -> None:
        if self._body is not None:
            self._body.stop()
        CommandChannel._abort(self, why)

    def connectionMade(self) -> None:
        if self._stopRequested:
            self._dropConnection()
        d = self._run()
        d.addCallbacks(self._ranToEnd, self._crashed)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._closeTimer is not None and self._closeTimer.active():
            self._closeTimer.cancel()
        if self._body is not None:
            self._body.stop()
        CommandChannel.connectionLost(self, reason)
        self._maybeFinish()

    def _ranToEnd(self, results: list[DeliveryResult]) -> None:
        self._results = results
        self._close()

    def _crashed(self, failure: Failure) -> None:
        _log.failure("Bug in the SMTP client talking to {host}", failure, host=self._host)
        self._runFailure = failure
        self._dropConnection()
        self._maybeFinish()

    def _close(self) -> None:
        if self.closed:
            self._maybeFinish()
            return
        assert self.transport is not None
        self.transport.loseConnection()
        if self._lost is None:
            self._closeTimer = self._reactor.callLater(
                TIMEOUTS["close"] * self._scale,
                self.transport.abortConnection,  # type: ignore[attr-defined]
            )

    def _maybeFinish(self) -> None:
        if self._lost is None or self.finished.called:
            return
        if self._runFailure is not None:
            self.finished.errback(self._runFailure)
        elif self._results is not None:
            self.finished.callback(self._results)

    # -- the session -------------------------------------------------------

    def _failureFor(self, error: Exception) -> SessionFailure:
        """
        Turn a timeout, a lost connection or a protocol violation into the
        outcome for the recipients still waiting.
        """
        if isinstance(error, SessionFailure):
            return error
        if self._stopRequested:
            # Whatever broke after a stop was asked for broke because of it.
            return stoppedFailure(polite=False)
        tls = self._handshaking
        if isinstance(error, ReplyTimeout):
            if tls:
                text = f"timeout after {error.seconds:g}s during the TLS handshake or the EHLO after it"
                return SessionFailure("TLS", 421, "4.7.5", text, False)
            what = error.stage
            text = f"timeout after {error.seconds:g}s waiting for {_describeStage(what)}"
            return SessionFailure(what, 421, "4.4.2", text, False)
        if isinstance(error, ConnectionLostWaiting):
            detail = describeConnectionError(error.reason)
            if tls and afterHandshakeFailure(self._policy) == DEFER_HOST:
                text = f"TLS with {self._host} failed: {detail} (no fallback to cleartext)"
                return SessionFailure("TLS", 421, "4.7.5", text, False)
            text = f"connection lost waiting for {_describeStage(error.stage)}: {detail}"
            return SessionFailure(error.stage, 421, "4.4.2", text, False)
        if isinstance(error, ProtocolViolation):
            text = f"protocol error waiting for {_describeStage(error.stage)}: {error.detail}"
            return SessionFailure(error.stage, 421, "4.5.0", text, False)
        raise error

    def _report(self, index: int, transaction: Transaction) -> Deferred[object] | None:
        """
        Tell the listener the outcome of one envelope.

        @return: the listener's Deferred to wait for (it never fails), or
            L{None} when there is nothing to wait for.
        """
        if transaction.endedAt is None:
            transaction.endedAt = self._reactor.seconds()
        result = transaction.result = self._result(index, transaction)
        if self._onResult is None:
            return None
        try:
            waiting = self._onResult(index, result)
        except Exception:
            _log.failure(
                "Could not record the outcome of a message sent to {host}", host=self._host
            )
            return None
        if waiting is None or not isinstance(waiting, Deferred):
            return None
        return waiting.addErrback(
            lambda failure: _log.failure(
                "Could not record the outcome of a message sent to {host}",
                failure,
                host=self._host,
            )
        )

    @inlineCallbacks
    def _run(self) -> Generator[Deferred[Any], Any, list[DeliveryResult]]:
        opened = False
        needReset = False
        while True:
            transactions = [Transaction(e) for e in self._envelopes]
            failure: SessionFailure | None = None
            reported = 0
            repliesBefore = self.repliesReceived
            try:
                if not opened:
                    yield self._opening()
                    opened = True
                    self._readyAt = self._reactor.seconds()
                for index, transaction in enumerate(transactions):
                    if self._stopRequested:
                        raise stoppedFailure(polite=True)
                    transaction.startedAt = self._reactor.seconds()
                    if needReset:
                        reply = yield self._command("RSET", "RSET")
                        if reply.code // 100 != 2:
                            raise SessionFailure.fromReply("RSET", reply, "RSET refused")
                    needReset = yield self._transaction(transaction)
                    transaction.endedAt = self._reactor.seconds()
                    reported = index + 1
                    waiting = self._report(index, transaction)
                    if waiting is not None:
                        yield waiting
            except _ENDINGS as e:
                if (
                    self._uses > 1
                    and reported == 0
                    and self.repliesReceived == repliesBefore
                    and isinstance(e, ConnectionLostWaiting)
                ):
                    # Taken up again, and closed by the server meanwhile:
                    # nothing of this round was answered, so nothing of it
                    # was delivered; its owner tries a new connection.
                    self._dropConnection()
                    if self.round is not None:
                        self.round.roundFailed(Failure(StaleConnection(str(e))))
                    return []
                failure = self._failureFor(e)
            if failure is not None:
                for index in range(reported, len(transactions)):
                    transactions[index].settleAll(failure)
                    waiting = self._report(index, transactions[index])
                    if waiting is not None:
                        yield waiting
                if failure.abort:
                    self._dropConnection()
                elif failure.polite and not self.closed:
                    yield self._quit()
                return self._resultsOf(transactions)
            results = self._resultsOf(transactions)
            if self._park is None or self._stopRequested or self.closed:
                yield self._quit()
                return results
            # Offer the connection for more first, then report: whoever the
            # report wakes up finds it (see L{ParkHook}).  The messages sent
            # are not kept while it waits.
            transactions = []
            self._envelopes = []
            nextRound = self._park(self)
            if self.round is not None:
                self.round.roundEnded(results)
            # A round handed over after the connection closed fails as
            # stale below, like one whose connection closes as it starts.
            following = yield nextRound
            if following is None:
                yield self._quit()
                return results
            envelopes, self._onResult, self.round = following
            self._envelopes = list(envelopes)
            self._uses += 1

    def _resultsOf(self, transactions: list[Transaction]) -> list[DeliveryResult]:
        return [t.result or self._result(i, t) for i, t in enumerate(transactions)]

    def _result(self, index: int, transaction: Transaction) -> DeliveryResult:
        if self._readyAt is None:
            connectSeconds = (transaction.endedAt or self._reactor.seconds()) - self._startedAt
        elif index == 0 and self._uses == 1:
            connectSeconds = self._readyAt - self._startedAt
        else:
            connectSeconds = 0.0
        if connectSeconds < 0.0:
            connectSeconds = 0.0
        return DeliveryResult(
            host=self._host,
            address=self._address,
            port=self._port,
            outcomes=tuple([transaction.outcomes[r] for r in transaction.recipients]),
            accepted=transaction.accepted,
            tlsUsed=self.tlsUsed,
            tlsVersion=self.tlsVersion,
            cipher=self.cipher,
            failureStage=None if transaction.accepted else transaction.failureStage,
            connectSeconds=connectSeconds,
            transferSeconds=transaction.transferSeconds,
            dsnOffered="DSN" in self.extensions,
            connectionUse=self._uses,
        )

    @inlineCallbacks
    def _quit(self) -> Generator[Deferred[Any], Any, None]:
        try:
            yield self._command("QUIT", "QUIT")
        except (ReplyTimeout, ConnectionLostWaiting, ProtocolViolation, Stopped):
            pass

    @inlineCallbacks
    def _opening(self) -> Generator[Deferred[Any], Any, None]:
        greeting = yield self._awaitReply("greeting")
        if greeting.code // 100 != 2:
            raise SessionFailure.fromReply(
                "greeting", greeting, f"{self._host} refused to talk to us"
            )
        yield self._hello()
        try:
            startTLS = shouldStartTLS(self._policy, "STARTTLS" in self.extensions)
        except TLSPolicyError as e:
            raise SessionFailure("TLS", 421, e.enhancedCode, e.reason, False, polite=True) from None
        if not startTLS:
            return
        try:
            creator = self._contextFactoryFor(self._policy, self._host)
            if creator is None:
                raise ValueError("no TLS context")
        except Exception as e:
            raise SessionFailure(
                "TLS",
                421,
                "4.7.5",
                f"cannot set up TLS: {cleanText(str(e)) or type(e).__name__}",
                False,
                polite=True,
            ) from None
        reply = yield self._command("STARTTLS", "STARTTLS")
        if reply.code != 220:
            if reply.code == 421 or afterStartTLSRefused(self._policy) != CONTINUE_CLEARTEXT:
                raise SessionFailure.fromReply(
                    "STARTTLS",
                    reply,
                    f"STARTTLS refused, and SMTP_OUTBOUND_TLS={self._policy} forbids cleartext",
                )
            return
        # Anything the server sent after its 220 in cleartext is discarded:
        # it must not be taken as a reply inside the TLS session.
        self._discardPendingInput()
        self._handshaking = True
        try:
            self.transport.startTLS(creator)  # type: ignore[union-attr]
        except Exception as e:
            raise SessionFailure(
                "TLS",
                421,
                "4.7.5",
                f"cannot start TLS with {self._host}: {cleanText(str(e)) or type(e).__name__}",
                False,
                abort=True,
            ) from None
        yield self._hello()
        self._handshaking = False
        self.tlsUsed = True
        self._recordTLSDetails()

    def _recordTLSDetails(self) -> None:
        try:
            connection = self.transport.getHandle()  # type: ignore[union-attr]
            version = connection.get_protocol_version_name()
            cipher = connection.get_cipher_name()
        except Exception:
            return
        self.tlsVersion = version if isinstance(version, str) else None
        self.cipher = cipher if isinstance(cipher, str) else None

    @inlineCallbacks
    def _hello(self) -> Generator[Deferred[Any], Any, None]:
        self.extensions = {}
        reply = yield self._command(f"EHLO {self._heloName}", "EHLO")
        if reply.code // 100 == 2:
            for line in reply.lines[1:]:
                words = line.split()
                if words:
                    self.extensions[words[0].upper()] = tuple(words[1:])
            return
        if reply.code // 100 != 5:
            raise SessionFailure.fromReply("EHLO", reply, "EHLO refused")
        reply = yield self._command(f"HELO {self._heloName}", "HELO")
        if reply.code // 100 != 2:
            raise SessionFailure.fromReply("HELO", reply, "EHLO and HELO refused")

    @property
    def _maxSize(self) -> int:
        params = self.extensions.get("SIZE", ())
        if params and params[0].isdigit():
            return int(params[0])
        return 0

    @inlineCallbacks
    def _transaction(self, tx: Transaction) -> Generator[Deferred[Any], Any, bool]:
        """
        Run one mail transaction.

        @return: (via Deferred) whether RSET is needed before the next one.
        @raise SessionFailure: and the like, when the session is over.
        """
        envelope = tx.envelope
        utf8 = "SMTPUTF8" in self.extensions

        def needsUTF8(address: str) -> bool:
            # esmtp: an ASCII local part at an IDN domain goes as A-labels.
            return asciiForm(address) is None

        if not validAddress(envelope.sender, allowEmpty=True):
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
        # esmtp: a UTF-8 header section needs SMTPUTF8 for all.
        refusal = None if utf8 else utf8Refusal(envelope, self._host)
        if refusal is not None:
            for r in tx.recipients:
                tx.settle(r, FAILED, 553, "5.6.7", refusal, False)
            tx.failureStage = "MAIL"
            return False
        for r in tx.recipients:
            if not validAddress(r, allowEmpty=False):
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

        if envelope.requireTLS:
            # RFC 8689 4.2.1: only under TLS, to a server that advertises it.
            refusal = requiretls.nextHopRefusal(self._host, self.extensions, self.tlsUsed)
            if refusal is not None:
                status, _, text = refusal.partition(" ")
                for r in candidates:
                    tx.settle(r, DEFERRED, 550, status, text, False)
                tx.failureStage = "MAIL"
                return False

        parameters = []
        if envelope.requireTLS:
            parameters.append(requiretls.MAIL_PARAMETER)
        if "SIZE" in self.extensions:
            parameters.append(f"SIZE={size}")
        if eightBit and "8BITMIME" in self.extensions:
            parameters.append("BODY=8BITMIME")
        smtputf8 = utf8 and messageNeedsSMTPUTF8(envelope, candidates)
        if smtputf8:
            parameters.append("SMTPUTF8")
        parameters.extend(mailParameters(envelope, self.extensions))
        encoding = "utf-8" if smtputf8 else "ascii"

        def wire(address: str) -> str:
            return address if smtputf8 else asciiForm(address) or address

        mail = " ".join([f"MAIL FROM:<{wire(envelope.sender)}>"] + parameters)
        rcpts = [
            (
                f"RCPT TO:<{wire(r)}>" + rcptParameters(envelope, r, self.extensions, smtputf8),
                "RCPT",
            )
            for r in candidates
        ]
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
                raise SessionFailure.fromReply("MAIL", reply)
            if reply.code // 100 != 2:
                tx.settleReply(candidates, reply, "MAIL")
                return (yield self._skipReplies(group))

            accepted = []
            for r, (line, stage) in zip(candidates, rcpts):
                reply = yield send(line, stage)
                if reply.code == 421:
                    raise SessionFailure.fromReply("RCPT", reply)
                if reply.code // 100 == 2:
                    accepted.append(r)
                elif reply.code // 100 in (4, 5):
                    tx.settleReply([r], reply, "RCPT")
                else:
                    raise ProtocolViolation("RCPT", f"unexpected reply {reply}")
            if not accepted:
                yield self._skipReplies(group)
                return True

            reply = yield send("DATA", "DATA")
        finally:
            # Replies nobody will read once the session has failed.
            for _, d in group:
                d.addErrback(lambda _: None)
        if reply.code == 421:
            raise SessionFailure.fromReply("DATA", reply)
        if reply.code != 354:
            if reply.code // 100 not in (4, 5):
                raise ProtocolViolation("DATA", f"unexpected reply {reply}")
            tx.settleReply(accepted, reply, "DATA")
            return True

        # The final reply may come early (the server gives up mid-body), so
        # wait for it from the start; its timer starts once all is written.
        final = self._awaitReply("end of data", timed=False)
        body = BodySender(
            self.transport,  # type: ignore[arg-type]
            payload,
            lambda: self._arm("data block"),
            self._disarm,
        )
        if not final.called:
            self._body = body
            body.start().addCallback(lambda _: self._bodySent(final))
        try:
            reply = yield final
        finally:
            self._body = None
            self._finalReplyDue = False
        if not body.finished:
            # The server answered before the end of the message: the session
            # is out of step and must not carry anything more.
            body.stop()
            if reply.code // 100 not in (4, 5):
                raise SessionFailure(
                    "end of data",
                    421,
                    "4.5.0",
                    f"protocol error: reply {reply} before the end of the message",
                    False,
                    abort=True,
                )
            tx.settleReply(accepted, reply, "end of data")
            raise SessionFailure.fromReply(
                "end of data", reply, "reply before the end of the message", abort=True
            )
        if reply.code == 421:
            raise SessionFailure.fromReply("end of data", reply)
        tx.settleReply(accepted, reply, "end of data")
        tx.accepted = reply.code // 100 == 2
        return False

    def _bodySent(self, final: Deferred[Reply]) -> None:
        """
        The whole message is out: its final reply is due, on a timer.
        """
        if not final.called:
            self._finalReplyDue = True
            self._arm("end of data")

    @inlineCallbacks
    def _skipReplies(
        self, group: list[tuple[str, Deferred]]
    ) -> Generator[Deferred[Any], Any, bool]:
        """
        Read the replies left in a pipelined group once the transaction has
        failed, ignoring them.  A C{354} to DATA gets a lone dot (RFC 2920
        section 3.1: the server may accept DATA without recipients), whose
        reply is ignored too.

        @param group: C{(stage, Deferred)} pairs, consumed as they are read.
        @return: (via Deferred) whether there were any (RSET is then needed).
        @raise SessionFailure: a reply was 421.
        """
        skipped = bool(group)
        while group:
            stage, d = group.pop(0)
            reply = yield d
            if reply.code == 354 and stage == "DATA":
                stage = "end of data"
                reply = yield self._command(".", stage)
            if reply.code == 421:
                raise SessionFailure.fromReply(stage, reply)
        return skipped
