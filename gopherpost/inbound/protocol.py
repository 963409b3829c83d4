# -*- test-case-name: tests.test_protocol -*-
"""
The SMTP server protocol: a thin Twisted wrapper around the framing
(L{gopherpost.inbound.framing}) and the session
(L{gopherpost.inbound.session}).

It feeds reads to the framer, hands the events to the session one at a
time, writes the replies through one L{ReplyWriter} and carries out their
actions (message content, STARTTLS, close).  While a command waits on a
L{Deferred} (a DNS-backed policy, the fsync of a message) later input waits
in the framer, so replies always come in command order; past
L{PAUSE_THRESHOLD} octets of it, reading pauses.

Flow control: the protocol is the transport's streaming producer.  When the
client does not read and our unsent replies pass the transport's buffer
size, the transport pauses us: we stop reading and stop working through
buffered commands until it resumes us, so a client that never reads costs a
bounded amount of memory however much it sends.

Timeouts (L{gopherpost.inbound.timeouts}): per command, not per byte; the
message content has Postfix's deadline; a TLS handshake counts as part of
the next command.  A timed-out session is told C{421 4.4.2} and closed, and
aborted if the close cannot complete (the client does not read, or the TLS
handshake never finished).  Every close the server starts is preceded by a
C{421}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IPushProducer, ITLSTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.inbound import framing
from gopherpost.inbound.access import unmapAddress
from gopherpost.inbound.context import SessionContext, TLSInfo
from gopherpost.inbound.framing import Framer
from gopherpost.inbound.output import ReplyWriter
from gopherpost.inbound.replies import Action, Reply, Response
from gopherpost.inbound.session import Session
from gopherpost.inbound.timeouts import DataDeadline

if TYPE_CHECKING:
    from gopherpost.inbound.factory import SMTPFactory

__all__ = ["SMTPServerProtocol", "PAUSE_THRESHOLD", "CLOSE_GRACE"]

_log = Logger()

#: Unprocessed input held while a command waits, before reading pauses.
PAUSE_THRESHOLD = 64 * 1024
#: Seconds a close may take (the client reading what is left) before the
#: connection is aborted.
CLOSE_GRACE = 10.0

_INTERNAL_ERROR = Reply(451, "4.3.0 Error: internal error")


@implementer(IHandshakeListener, IPushProducer)
class SMTPServerProtocol(Protocol, TimeoutMixin):
    """
    One SMTP connection.

    @ivar factory: the L{SMTPFactory} that made us.
    @ivar clientAddress: the client's address (unmapped), for the factory's
        connection limits and logs.
    """

    factory: SMTPFactory
    #: The connection (a TCP, TLS or PROXY-protocol transport).
    transport: Any

    def __init__(self, factory: SMTPFactory) -> None:
        self.factory = factory
        # TimeoutMixin schedules on this: the injected clock.
        self.callLater = factory.clock.callLater  # type: ignore[assignment]
        self._commandTimeout = factory.commandTimeout
        self._framer = Framer()
        self._writer: ReplyWriter | None = None
        self.session: Session | None = None
        self.clientAddress = ""
        self._waiting = True
        self._processing = False
        self._closed = False
        self._lost = False
        self._readPauses: set[str] = set()
        self._outputPaused = False
        self._producing = False
        self._tlsPending = False
        self._deadline: DataDeadline | None = None
        self._abortCall: Any = None
        self._idleWaiters: list[Deferred] = []

    # Connection life cycle

    def connectionMade(self) -> None:
        """
        Take a connection slot, start the session (the connect stage).
        """
        factory = self.factory
        peer = self.transport.getPeer()
        host = str(getattr(peer, "host", "") or "")
        try:
            self.clientAddress = str(unmapAddress(host))
        except ValueError:
            self.clientAddress = host or "unknown"
        self._writer = ReplyWriter(self.transport)
        self.transport.registerProducer(self, True)
        self._producing = True
        role = factory.role
        if role.implicitTLS:
            # Nothing is written before the handshake; a refusal then ends
            # the connection without one.
            self._tlsPending = True
            self._writer.gate()
        refusal = factory.admit(self)
        if refusal is not None:
            reason, text = refusal
            factory.audit.emit("session.reject", client=self.clientAddress, reason=reason)
            _log.info(
                "Rejected connection from {client}: {reason}",
                client=self.clientAddress,
                reason=reason,
            )
            self._send(Reply(421, f"4.7.0 {factory.hostname} Error: {text}", Action.CLOSE))
            return
        context = SessionContext(
            self.clientAddress,
            int(getattr(peer, "port", 0) or 0),
            role,
            factory.hostname,
        )
        self.session = factory.newSession(
            context,
            canStartTLS=(
                not role.implicitTLS
                and factory.contextFactory is not None
                and ITLSTransport.providedBy(self.transport)
            ),
            hasPendingInput=lambda: self._framer.buffered > 0,
        )
        self.setTimeout(self._commandTimeout)
        self._respond(self.session.start())

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Drop an unfinished message, give back the connection slot.
        """
        if self._lost:
            return
        self._lost = True
        if self._tlsPending and not self._closed:
            _log.info(
                "TLS handshake with {client} failed: {why}",
                client=self.clientAddress,
                why=reason.getErrorMessage() if reason is not None else "connection lost",
            )
        self._closed = True
        self._framer.discard()
        self.setTimeout(None)
        if self._abortCall is not None and self._abortCall.active():
            self._abortCall.cancel()
        self._abortCall = None
        if self.session is not None:
            self.session.connectionLost()
        self.factory.release(self)
        self._notifyIdle()

    def timeoutConnection(self) -> None:
        """
        The client took too long: C{421 4.4.2} and close; a TLS handshake
        that never finished is aborted.
        """
        if self._closed:
            return
        if self._tlsPending:
            _log.info("TLS handshake with {client} timed out", client=self.clientAddress)
            self._abort()
            return
        _log.info("Timeout from {client}", client=self.clientAddress)
        assert self.session is not None
        self._send(self.session.timeoutReply())

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake finished (L{IHandshakeListener}).
        """
        self._tlsPending = False
        version, cipher = "", ""
        try:
            handle = self.transport.getHandle()
            version = handle.get_protocol_version_name() or ""
            cipher = handle.get_cipher_name() or ""
        except Exception:
            pass
        if self.session is not None:
            self.session.tlsEstablished(TLSInfo(version, cipher))
        if self._writer is not None:
            self._writer.open()
        if not self._closed:
            # The handshake was the client's turn; the next command gets a
            # timeout of its own.
            self.setTimeout(self._commandTimeout)

    # Flow control (IPushProducer: the transport pauses us when our
    # replies pile up unread)

    def pauseProducing(self) -> None:
        """
        The client is not reading: stop reading from it.
        """
        self._outputPaused = True
        self._pauseReading("output")

    def resumeProducing(self) -> None:
        """
        The client read our replies: go on.
        """
        self._outputPaused = False
        self._resumeReading("output")
        if not self._waiting:
            self._process()

    def stopProducing(self) -> None:
        """
        The connection is going away.
        """
        self._outputPaused = True

    def _pauseReading(self, why: str) -> None:
        if not self._readPauses and not self._closed:
            self.transport.pauseProducing()
        self._readPauses.add(why)

    def _resumeReading(self, why: str) -> None:
        if why not in self._readPauses:
            return
        self._readPauses.discard(why)
        if not self._readPauses and not self._closed:
            self.transport.resumeProducing()

    # Input

    @property
    def bufferedInput(self) -> int:
        """
        Octets received and not worked through yet.
        """
        return self._framer.buffered

    def dataReceived(self, data: bytes) -> None:
        """
        Frame the bytes and work through them as far as the session allows.
        """
        if self._closed:
            return
        self._framer.feed(data)
        deadline = self._deadline
        if deadline is not None:
            left = deadline.received(len(data), self.factory.clock.seconds())
            if left <= 0:
                self.timeoutConnection()
                return
            self.setTimeout(left)
        self._process()

    def _process(self) -> None:
        if self._processing:
            # Re-entered from a reply given synchronously: the loop below
            # goes on.
            return
        assert self._writer is not None
        self._processing = True
        self._writer.hold()
        try:
            framer = self._framer
            while not (self._waiting or self._closed or self._outputPaused):
                event = framer.next()
                if event is None:
                    break
                self._handle(event)
        finally:
            self._processing = False
            self._writer.release()
        if self._waiting and self._framer.buffered > PAUSE_THRESHOLD:
            self._pauseReading("input")
        if self._idleWaiters:
            self._notifyIdle()

    def _handle(self, event: framing.Event) -> None:
        session = self.session
        assert session is not None
        kind = event.kind
        if kind is framing.BODY:
            if not session.bodyReceived(event.data):
                self._framer.stopStoring()
        elif kind is framing.LINE:
            self._waiting = True
            self._respond(session.lineReceived(event.data))
        elif kind is framing.DATA_END:
            deadline, self._deadline = self._deadline, None
            self._waiting = True
            # The end-of-data policies get what is left of the client's time.
            timeLeft = None
            if deadline is not None:
                timeLeft = deadline.leftAt(self.factory.clock.seconds())
            self._respond(session.endOfData(timeLeft))
        elif kind is framing.BODY_LINE_TOO_LONG:
            session.bodyLineTooLong()
        elif kind is framing.LINE_TOO_LONG:
            self._waiting = True
            self._respond(session.lineTooLong())
        elif kind is framing.INPUT_TOO_LONG:
            self._waiting = True
            self._respond(session.inputTooLong())
        else:
            # RAW / RAW_END: no command reads raw octets yet (BDAT).
            self._waiting = True
            self._respond(Reply(500, "5.5.2 Error: unexpected data"))

    # Output

    def _respond(self, result: Response | Deferred[Response]) -> None:
        """
        Write a session's response now, or when it is ready (meanwhile the
        server is working, and the client's clock is stopped).
        """
        if type(result) is not Reply and type(result) is not tuple and isinstance(result, Deferred):
            if not result.called:
                self.setTimeout(None)
            result.addErrback(self._internalError)
            result.addCallback(self._replied)
            return
        self._replied(result)

    def _internalError(self, failure: Failure) -> Response:
        _log.failure("Unhandled error in an SMTP command", failure)
        return _INTERNAL_ERROR

    def _replied(self, response: Response) -> None:
        self._waiting = False
        if self._closed:
            return
        self._send(response)
        if self._closed:
            return
        if self._deadline is None:
            # Ready for the next command: it gets a timeout of its own.
            self.setTimeout(self._commandTimeout)
        self._resumeReading("input")
        if not self._processing:
            self._process()

    def _send(self, response: Response) -> None:
        """
        Write the replies of a response and carry out their actions.
        """
        writer = self._writer
        assert writer is not None
        for reply in (response,) if type(response) is Reply else response:  # type: ignore[union-attr]
            if self._closed:
                return
            writer.write(reply)
            action = reply.action
            if action is Action.NONE:
                continue
            if action is Action.DATA:
                self._framer.startData()
                self._deadline = DataDeadline(
                    self._commandTimeout, self.factory.minDataRate, self.factory.clock.seconds()
                )
                self.setTimeout(self._commandTimeout)
            elif action is Action.STARTTLS:
                self._startTLS()
            elif action is Action.CLOSE:
                self._close()
            elif action is Action.AUTH_RESPONSE:
                self._framer.expectLongLine()

    def _startTLS(self) -> None:
        assert self._writer is not None
        # The 220 goes out in the clear, before the handshake.
        self._writer.flush()
        discarded = self._framer.discard()
        if discarded:
            _log.info(
                "Discarded {count} octets pipelined after STARTTLS by {client}",
                count=discarded,
                client=self.clientAddress,
            )
        self._tlsPending = True
        self.transport.startTLS(self.factory.contextFactory)

    def _close(self) -> None:
        """
        Close after what was written; abort if that takes too long.
        """
        self._closed = True
        self.setTimeout(None)
        assert self._writer is not None
        self._writer.flush()
        self._framer.discard()
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()
        self._abortCall = self.factory.clock.callLater(CLOSE_GRACE, self._abortLater)

    def _abortLater(self) -> None:
        self._abortCall = None
        _log.info(
            "Aborting the connection of {client}: it does not read", client=self.clientAddress
        )
        self.transport.abortConnection()

    def _abort(self) -> None:
        self._closed = True
        self.setTimeout(None)
        if self._writer is not None:
            self._writer.discard()
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.abortConnection()

    # Shutdown support (L{SMTPFactory.drain})

    @property
    def busy(self) -> bool:
        """
        Whether a message is being received or stored right now.
        """
        session = self.session
        if session is None or not session.admitted or self._closed:
            return False
        return session.inData or self._waiting

    def whenIdle(self) -> Deferred:
        """
        A L{Deferred} that fires when no message is in flight.
        """
        d: Deferred = Deferred()
        if not self.busy:
            d.callback(None)
        else:
            self._idleWaiters.append(d)
        return d

    def _notifyIdle(self) -> None:
        if self.busy:
            return
        waiters, self._idleWaiters = self._idleWaiters, []
        for d in waiters:
            d.callback(None)

    def shutDown(self) -> None:
        """
        The server is stopping: C{421 4.3.2} and close (abort a TLS
        handshake in progress: nothing can be written into it).
        """
        if self._closed or self.session is None:
            return
        if self._tlsPending:
            self._abort()
            return
        self._send(self.session.shutdownReply())

    def cutOff(self) -> None:
        """
        The server stops and this session is still busy: C{421 4.3.2}, then
        abort (its message was never acknowledged, so nothing is lost).
        """
        if not self._closed and self.session is not None and self._writer is not None:
            self._writer.write(self.session.shutdownReply())
            self._writer.flush()
        self._abort()
