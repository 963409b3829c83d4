# -*- test-case-name: tests.test_protocol -*-
"""
GopherPost's ESMTP server protocol.

It is L{twisted.mail.smtp.ESMTP} (its address grammar, its L{IMessageDelivery}
seam, its cred portal) with the input side rewritten, because Twisted's
line handling has holes an MTA cannot have:

  - Input is framed here, one command at a time.  While a command waits on a
    L{Deferred} (sender validation, the fsync of a message), later pipelined
    input waits in a bounded buffer, so replies always come in command order
    (Twisted #8126).
  - STARTTLS throws away any plaintext the client pipelined after it and
    forgets the EHLO (CVE-2011-0411 class).
  - Command lines are capped at 512 octets and text lines at 1000 (RFC 5321
    4.5.3.1); a line without CRLF never grows the buffer past those bounds.
  - An over-long line inside DATA fails that message after its final dot;
    the rest of the body is never run as commands.
  - In DATA only CRLF ends a line and only CRLF.CRLF ends the message; bare
    CR or LF are stored as CRLF, so one DATA is one unambiguous message
    (SMTP smuggling, CVE-2023-51764 class).
  - A storage failure answers 451 4.3.0.
  - Replies to one read's worth of pipelined commands leave in one write,
    sent at once when nothing is queued (L{gopherpost.sendnow}).

Every reply carries an RFC 3463 enhanced status code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IHandshakeListener, ITLSTransport
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.inbound.access import PeerAddress
from gopherpost.inbound.delivery import SpooledMessage, addressText
from gopherpost.sendnow import writeNow

if TYPE_CHECKING:
    from gopherpost.inbound.factory import SMTPFactory

__all__ = ["GopherESMTP", "COMMAND_LINE_LIMIT", "TEXT_LINE_LIMIT"]

_log = Logger()

#: RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF.
COMMAND_LINE_LIMIT = 512
#: RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
TEXT_LINE_LIMIT = 1000
#: Octets of a single over-long command line discarded before hanging up.
DISCARD_LIMIT = 16 * 1024
#: Errors tolerated in one session (Postfix's smtpd_hard_error_limit).
HARD_ERROR_LIMIT = 20
#: Unprocessed input held while a command waits, before reading pauses.
PAUSE_THRESHOLD = 64 * 1024

_COMMAND, _DATA, _CLOSED = "COMMAND", "DATA", "CLOSED"

_LINE_BREAKS = re.compile(rb"\r\n|\r|\n")

_HELP = (
    "2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS\n2.0.0 See RFC 5321"
)


def _hasBareLineBreak(body: bytes) -> bool:
    """
    Whether C{body}, which ends with a line break, has a CR not followed by
    LF or an LF not preceded by CR.

    Each line break C{splitlines} finds is a CRLF, a bare CR or a bare LF;
    there is no bare one exactly when there are as many breaks as LFs and
    as CRs.  (Cheaper than counting C{b"\\r\\n"}: CPython's two-byte
    search takes 77 us per 100 KiB, a one-byte count 25.)
    """
    breaks = len(body.splitlines())
    return body.count(b"\n") != breaks or body.count(b"\r") != breaks


def _hasLongLine(body: bytes) -> bool:
    """
    Whether C{body}, whole lines ending in CRLF, has a line of more than
    998 octets before its CRLF (RFC 5321 4.5.3.1.6).

    Every line of at most 998 octets puts its LF within L{TEXT_LINE_LIMIT}
    octets of the line's start, so the last LF in each such window starts
    the next one: a few C{rfind}s per 100 KiB instead of a look at every
    line.
    """
    rfind = body.rfind
    end = len(body)
    start = 0
    while end - start >= TEXT_LINE_LIMIT:
        lf = rfind(b"\n", start, start + TEXT_LINE_LIMIT)
        if lf < 0:
            return True
        start = lf + 1
    return False


@implementer(IHandshakeListener)
class GopherESMTP(smtp.ESMTP):
    """
    One SMTP session.

    @ivar factory: the L{SMTPFactory} that made us (settings, portal, audit).
    """

    factory: SMTPFactory

    def __init__(self, factory: SMTPFactory, contextFactory: Any = None) -> None:
        smtp.ESMTP.__init__(self, {}, contextFactory)
        self.factory = factory
        settings = factory.settings
        self.host = settings.hostname.encode("ascii")
        self.timeout = settings.commandTimeout
        # TimeoutMixin schedules on this; use the injected clock.
        self.callLater = factory.clock.callLater
        self._state = _COMMAND
        self._buffer = bytearray()
        self._waiting = False
        self._paused = False
        self._discarding = 0
        self._errors = 0
        self._ehlo = False
        self._helo = None
        self._sizeDeclared = 0
        self._message: SpooledMessage | None = None
        self._dataFailure: tuple[int, str] | None = None
        self._midLine = False
        self._dataSize = 0
        self._processing = False
        #: Replies held while input is processed, or None (see L{_send}).
        self._heldOutput: list[bytes] | None = None
        self._admitted = False
        self.clientAddress = ""
        self.tlsDescription = ""
        #: Fires when the session has nothing in flight (see L{drain}).
        self._idleWaiters: list[Deferred] = []

    # Connection life cycle

    def connectionMade(self) -> None:
        """
        Check connection limits and the allow-list before any greeting.
        """
        self.canStartTLS = ITLSTransport.providedBy(self.transport) and self.ctx is not None
        peer = self.transport.getPeer()
        self.clientAddress = PeerAddress(getattr(peer, "host", "0.0.0.0")).host
        self._helo = None
        self._waiting = True
        refusal = self.factory.admit(self)
        if refusal is not None:
            reason, text = refusal
            self.factory.audit.emit("session.reject", client=self.clientAddress, reason=reason)
            _log.info(
                "Rejected connection from {client}: {reason}",
                client=self.clientAddress,
                reason=reason,
            )
            self._reply(421, f"4.7.0 {self._hostName()} Error: {text}")
            self._close()
            return
        self.setTimeout(self.timeout)
        d = self.factory.portal.login(
            PeerAddress(self.clientAddress, getattr(peer, "port", 0)),
            None,
            smtp.IMessageDelivery,
        )
        d.addCallbacks(self._accessGranted, self._accessDenied)

    def _accessGranted(self, result: tuple[Any, Any, Callable[[], None]]) -> None:
        interface, avatar, logout = result
        if self._state == _CLOSED:
            logout()
            return
        self.delivery = avatar
        self._onLogout = logout
        self._admitted = True
        self.factory.audit.emit("session.start", client=self.clientAddress)
        self.sendCode(220, self.greeting())
        self._resume()

    def _accessDenied(self, failure: Failure) -> None:
        if self._state == _CLOSED:
            return
        self.factory.audit.emit("session.reject", client=self.clientAddress, reason="access")
        _log.info(
            "Rejected connection from {client}: access denied ({why})",
            client=self.clientAddress,
            why=failure.getErrorMessage(),
        )
        self._reply(554, "5.7.1 Access denied")
        self._close()

    def greeting(self) -> bytes:
        """
        C{<hostname> ESMTP <banner>}.
        """
        return self.host + b" ESMTP " + self.factory.settings.banner.encode("utf-8")

    def connectionLost(self, reason: Failure) -> None:
        """
        Drop an unfinished message, release our connection slot.
        """
        if self._message is not None and self._state == _DATA:
            self._message.connectionLost()
            self._message = None
        wasAdmitted = self._admitted
        self._state = _CLOSED
        self._buffer = bytearray()
        smtp.ESMTP.connectionLost(self, reason)
        self.factory.release(self)
        if wasAdmitted:
            self.factory.audit.emit("session.close", client=self.clientAddress)
        self._notifyIdle()

    def timeoutConnection(self) -> None:
        """
        An idle client gets 421 4.4.2 and is disconnected.
        """
        self._reply(421, f"4.4.2 {self._hostName()} Error: timeout exceeded")
        self._close()

    def handshakeCompleted(self) -> None:
        """
        The STARTTLS handshake finished (L{IHandshakeListener}).
        """
        version, cipher = "", ""
        try:
            handle = self.transport.getHandle()
            version = handle.get_protocol_version_name()
            cipher = handle.get_cipher_name() or ""
        except Exception:
            pass
        self.tlsDescription = f"using {version} with cipher {cipher}" if version else "using TLS"
        self.factory.audit.emit(
            "tls.established", client=self.clientAddress, version=version, cipher=cipher
        )

    # Output

    def _hostName(self) -> str:
        return self.factory.settings.hostname

    def _reply(self, code: int, text: str) -> None:
        """
        Send one reply; C{text} may hold several lines separated by C{\\n}.
        """
        if self._state == _CLOSED:
            return
        self.sendCode(code, text.encode("utf-8"))

    def sendCode(self, code: int, message: bytes = b"") -> None:
        """
        Send one reply as one write: each line of C{message} but the last as
        C{NNN-line}, the last as C{NNN line} (RFC 5321 4.2.1).
        """
        lines = message.splitlines() or [b""]
        last = len(lines) - 1
        prefix = b"%03d" % (code,)
        self._send(
            b"".join(
                prefix + (b" " if i == last else b"-") + line + b"\r\n"
                for i, line in enumerate(lines)
            )
        )

    def _send(self, data: bytes) -> None:
        """
        Write C{data}, or hold it while input is being processed: the replies
        to a pipelined group of commands then leave in one write (RFC 2920
        lets a server answer them together) when L{_process} is done.
        """
        if self._heldOutput is not None:
            self._heldOutput.append(data)
        else:
            writeNow(self.transport, data)

    def _flushOutput(self) -> None:
        """
        Write the held replies now (before the transport changes: TLS, close).
        """
        held = self._heldOutput
        if held:
            self._heldOutput = []
            writeNow(self.transport, b"".join(held))

    def _close(self) -> None:
        self._state = _CLOSED
        self._buffer = bytearray()
        self.setTimeout(None)
        self._flushOutput()
        self.transport.loseConnection()

    def _error(self, code: int, text: str) -> None:
        """
        Reply with an error and hang up after too many of them.
        """
        self._reply(code, text)
        self._errors += 1
        if self._errors >= HARD_ERROR_LIMIT and self._state != _CLOSED:
            self._reply(421, f"4.7.0 {self._hostName()} Error: too many errors")
            self._close()

    # Input framing

    def dataReceived(self, data: bytes) -> None:
        """
        Buffer input and process as much as the session's state allows.
        """
        if self._state == _CLOSED:
            return
        self.resetTimeout()
        if self._discarding and self._state == _COMMAND:
            end = data.find(b"\n")
            if end < 0:
                self._discarding += len(data)
                if self._discarding > DISCARD_LIMIT:
                    self._reply(500, "5.5.2 Error: line too long")
                    self._close()
                return
            self._discarding = 0
            data = data[end + 1 :]
            self._error(500, "5.5.2 Error: line too long")
        self._buffer += data
        self._process()

    def _process(self) -> None:
        if self._processing:
            # Re-entered from a Deferred that fired synchronously: the
            # outer loop goes on.
            return
        self._processing = True
        self._heldOutput = []
        try:
            self._processLines()
        finally:
            self._processing = False
            self._flushOutput()
            self._heldOutput = None

    def _processLines(self) -> None:
        while not self._waiting and self._state != _CLOSED and self._buffer:
            if self._state == _DATA:
                if not self._processData():
                    break
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) >= COMMAND_LINE_LIMIT:
                    self._discarding = len(self._buffer)
                    self._buffer = bytearray()
                break
            # bytearray: deleting from the front is cheap, so a long
            # pipelined burst is not copied once per line.
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) + 2 > COMMAND_LINE_LIMIT:
                self._error(500, "5.5.2 Error: line too long")
                continue
            result = self._command(line)
            if isinstance(result, Deferred):
                self._waiting = True
                result.addBoth(self._commandFinished)
        if self._waiting and len(self._buffer) > PAUSE_THRESHOLD and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _commandFinished(self, result: object) -> None:
        if isinstance(result, Failure):
            _log.failure("Unhandled error in SMTP command", result)
            self._reply(451, "4.3.0 Error: internal error")
        self._resume()

    def _resume(self) -> None:
        self._waiting = False
        if self._paused and self._state != _CLOSED:
            self._paused = False
            self.transport.resumeProducing()
        self._process()
        if not self._waiting:
            self._notifyIdle()

    def _command(self, line: bytes) -> Deferred | None:
        parts = line.strip().split(None, 1)
        if not parts:
            self._error(500, "5.5.2 Error: bad syntax")
            return None
        verb = parts[0].upper()
        argument = parts[1] if len(parts) == 2 else b""
        handler = getattr(self, "smtp_" + verb.decode("ascii", "replace"), None)
        if handler is None or not verb.isalpha():
            self._error(502, "5.5.2 Error: command not recognized")
            return None
        return handler(argument)

    # Commands

    def smtp_HELO(self, argument: bytes) -> None:
        """
        HELO: plain SMTP greeting.
        """
        if not argument.strip():
            self._error(501, "5.5.4 Syntax: HELO hostname")
            return
        self._greet(argument.strip(), extended=False)
        self._reply(250, self._hostName())

    def smtp_EHLO(self, argument: bytes) -> None:
        """
        EHLO: greeting with the list of extensions.
        """
        if not argument.strip():
            self._error(501, "5.5.4 Syntax: EHLO hostname")
            return
        self._greet(argument.strip(), extended=True)
        settings = self.factory.settings
        lines = [
            self._hostName(),
            "PIPELINING",
            f"SIZE {settings.maxMessageSize}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self.canStartTLS and not self.startedTLS:
            lines.append("STARTTLS")
        lines.append("HELP")
        self._reply(250, "\n".join(lines))

    def _greet(self, name: bytes, extended: bool) -> None:
        self._helo = (name, self.clientAddress.encode("ascii"))
        self._ehlo = extended
        self._resetTransaction()
        self.factory.audit.emit(
            "smtp.helo", client=self.clientAddress, helo=name.decode("utf-8", "replace")
        )

    def _resetTransaction(self) -> None:
        self._from = None
        self._to = []
        self._sizeDeclared = 0

    def smtp_MAIL(self, argument: bytes) -> Deferred | None:
        """
        MAIL FROM:<reverse-path> [SIZE=n] [BODY=7BIT|8BITMIME]
        """
        if self._helo is None:
            self._error(503, "5.5.1 Error: send HELO/EHLO first")
            return None
        if self._from is not None:
            self._error(503, "5.5.1 Error: nested MAIL command")
            return None
        match = self.mail_re.match(argument)
        if not match:
            self._error(501, "5.5.4 Syntax: MAIL FROM:<address>")
            return None
        declared, problem = self._mailParameters(match.group("opts"))
        if problem is not None:
            self._error(*problem)
            return None
        try:
            origin = smtp.Address(match.group("path"), self.host)
        except smtp.AddressError as e:
            self._error(501, f"5.1.7 Bad sender address syntax: {e}")
            return None
        sender = addressText(origin)

        def accepted(result: object) -> None:
            self._from = origin
            self._to = []
            self._sizeDeclared = declared
            self.factory.audit.emit(
                "smtp.mail", client=self.clientAddress, accepted=True, code=250, sender=sender
            )
            self._reply(250, "2.1.0 Ok")

        d = maybeDeferred(self.delivery.validateFrom, self._helo, origin)
        d.addCallbacks(accepted, self._refused, errbackArgs=("smtp.mail", "sender", sender))
        return _pending(d)

    def _mailParameters(self, options: bytes | None) -> tuple[int, tuple[int, str] | None]:
        declared = 0
        for option in (options or b"").split():
            key, _, value = option.partition(b"=")
            key = key.upper()
            if key == b"SIZE":
                if not value.isdigit() or len(value) > 20:
                    return 0, (501, "5.5.4 Bad SIZE parameter syntax")
                declared = int(value)
                if declared > self.factory.settings.maxMessageSize:
                    self.factory.audit.emit(
                        "message.rejected", client=self.clientAddress, reason="size", size=declared
                    )
                    return 0, (552, "5.3.4 Message size exceeds fixed limit")
            elif key == b"BODY":
                if value.upper() not in (b"7BIT", b"8BITMIME"):
                    return 0, (501, "5.5.4 Unsupported BODY parameter")
            else:
                return 0, (
                    555,
                    f"5.5.4 Unsupported option: {option.decode('ascii', 'replace')}",
                )
        return declared, None

    def smtp_RCPT(self, argument: bytes) -> Deferred | None:
        """
        RCPT TO:<forward-path>
        """
        if self._from is None:
            self._error(503, "5.5.1 Error: need MAIL command")
            return None
        match = self.rcpt_re.match(argument)
        if not match:
            self._error(501, "5.5.4 Syntax: RCPT TO:<address>")
            return None
        if match.group("opts"):
            self._error(555, "5.5.4 Unsupported option in RCPT")
            return None
        if len(self._to) >= self.factory.settings.maxRecipients:
            self.factory.audit.emit(
                "smtp.rcpt", client=self.clientAddress, accepted=False, code=452, recipient=""
            )
            self._reply(452, "4.5.3 Error: too many recipients")
            return None
        try:
            user = smtp.User(match.group("path"), self._helo, self, self._from)
        except smtp.AddressError as e:
            self._error(501, f"5.1.3 Bad recipient address syntax: {e}")
            return None
        recipient = str(user.dest)

        def accepted(result: object) -> None:
            self._to.append((user, result))
            self.factory.audit.emit(
                "smtp.rcpt",
                client=self.clientAddress,
                accepted=True,
                code=250,
                recipient=recipient,
            )
            self._reply(250, "2.1.5 Ok")

        d = maybeDeferred(self.delivery.validateTo, user)
        d.addCallbacks(accepted, self._refused, errbackArgs=("smtp.rcpt", "recipient", recipient))
        return _pending(d)

    def _refused(self, failure: Failure, event: str, field: str, address: str) -> None:
        if failure.check(smtp.SMTPServerError):
            code, text = failure.value.code, failure.value.resp
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
        else:
            _log.failure("Validating {address} failed", failure, address=address)
            code, text = 451, "4.3.0 Error: local error in processing"
        self.factory.audit.emit(
            event, client=self.clientAddress, accepted=False, code=code, **{field: address}
        )
        self._error(code, text)

    def smtp_DATA(self, argument: bytes) -> None:
        """
        DATA: switch to reading the message.
        """
        if argument.strip():
            self._error(501, "5.5.4 Syntax: DATA")
            return
        if self._from is None:
            self._error(503, "5.5.1 Error: need MAIL command")
            return
        if not self._to:
            self._error(503, "5.5.1 Error: need RCPT command")
            return
        sender = addressText(self._from)
        recipients = [str(user.dest) for user, _ in self._to]
        helo = self._helo[0].decode("utf-8", "replace")
        tls = bool(self.startedTLS)
        self._message = self.delivery.newMessage(sender, recipients, helo, tls)
        protocolName = ("ESMTP" if self._ehlo else "SMTP") + ("S" if tls else "")
        self._message.write(
            self.delivery.traceHeader(
                helo,
                protocolName,
                self.tlsDescription if tls else "",
                recipients,
                self._message.queueId,
                now=self.factory.clock.seconds(),
            )
        )
        self._resetTransaction()
        self._dataFailure = None
        self._dataSize = 0
        self._midLine = False
        self._state = _DATA
        self._reply(354, "End data with <CR><LF>.<CR><LF>")

    def _processData(self) -> bool:
        """
        Consume complete lines of message content from the buffer.

        @return: whether anything was consumed.
        """
        buf = self._buffer
        # One scan finds both the end of data (CRLF.CRLF) and whether any
        # line starts with a dot (to be unstuffed in _storeData).
        stuffed = False
        if not self._midLine and buf.startswith(b".\r\n"):
            end, bodyEnd = 0, 0
        else:
            end = buf.find(b"\r\n.")
            while end >= 0 and buf[end + 3 : end + 5] != b"\r\n":
                stuffed = True
                end = buf.find(b"\r\n.", end + 3)
            bodyEnd = end + 2
        if end >= 0:
            body = bytes(buf[:bodyEnd])
            del buf[: end + 5]
        else:
            last = buf.rfind(b"\r\n")
            if last < 0:
                if len(buf) >= TEXT_LINE_LIMIT:
                    # A line without CRLF: keep a trailing CR (half a CRLF),
                    # drop the rest, and fail the message at its end.
                    self._failData(500, "5.5.2 Error: line too long", "line-length")
                    self._buffer = bytearray(b"\r" if buf.endswith(b"\r") else b"")
                    self._midLine = True
                    return True
                return False
            body = bytes(buf[: last + 2])
            del buf[: last + 2]
        if body:
            self._storeData(body, stuffed)
            self._midLine = False
        if end >= 0:
            self._endOfData()
        return True

    def _storeData(self, body: bytes, stuffed: bool = True) -> None:
        """
        Check and store whole lines of content.

        @param stuffed: whether a line after the first may start with a dot
            (L{False}: the caller's scan found none).
        """
        if self._dataFailure is not None:
            return
        # Dot-unstuffing (RFC 5321 4.5.2): every line starting with "." lost
        # its first dot.  Every CRLF in the body is a line end.
        if body.startswith(b".") and not self._midLine:
            body = body[1:]
        if stuffed and b"\r\n." in body:
            body = body.replace(b"\r\n.", b"\r\n")
        # Store only unambiguous CRLF: a bare CR or LF becomes CRLF.
        if _hasBareLineBreak(body):
            body = _LINE_BREAKS.sub(b"\r\n", body)
        # RFC 5321 4.5.3.1.6: at most 998 octets before each CRLF.
        if _hasLongLine(body):
            self._failData(500, "5.5.2 Error: line too long", "line-length")
            return
        assert self._message is not None
        self._dataSize += len(body)
        if self._dataSize > self.factory.settings.maxMessageSize:
            self._failData(552, "5.3.4 Error: message file too big", "size")
            return
        self._message.write(body)

    def _failData(self, code: int, text: str, reason: str) -> None:
        if self._dataFailure is None:
            self._dataFailure = (code, text)
            self.factory.audit.emit("message.rejected", client=self.clientAddress, reason=reason)
            if self._message is not None:
                self._message.connectionLost()

    def _endOfData(self) -> None:
        message, self._message = self._message, None
        self._state = _COMMAND
        self._midLine = False
        if self._dataFailure is not None:
            code, text = self._dataFailure
            self._dataFailure = None
            self._error(code, text)
            return
        assert message is not None
        self._waiting = True
        d = message.eomReceived()

        def stored(envelope: Any) -> None:
            self._reply(250, f"2.0.0 Ok: queued as {envelope.queueId}")

        def failed(failure: Failure) -> None:
            _log.failure(
                "Storing a message from {client} failed", failure, client=self.clientAddress
            )
            self.factory.audit.emit("message.rejected", client=self.clientAddress, reason="storage")
            self._reply(451, "4.3.0 Error: queue file write error")

        d.addCallbacks(stored, failed)
        d.addBoth(self._commandFinished)

    def smtp_RSET(self, argument: bytes) -> None:
        """
        RSET: forget the transaction.
        """
        self._resetTransaction()
        self._reply(250, "2.0.0 Ok")

    def smtp_NOOP(self, argument: bytes) -> None:
        """
        NOOP.
        """
        self._reply(250, "2.0.0 Ok")

    def smtp_QUIT(self, argument: bytes) -> None:
        """
        QUIT: say goodbye and close.
        """
        self._reply(221, "2.0.0 Bye")
        self._close()

    def smtp_VRFY(self, argument: bytes) -> None:
        """
        VRFY: never confirms addresses (RFC 5321 3.5.3).
        """
        if not argument.strip():
            self._error(501, "5.5.4 Syntax: VRFY address")
            return
        self._reply(252, "2.0.0 Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_HELP(self, argument: bytes) -> None:
        """
        HELP.
        """
        self._reply(214, _HELP)

    def smtp_STARTTLS(self, argument: bytes) -> None:
        """
        STARTTLS (RFC 3207): plaintext pipelined after it is discarded and
        the session starts over, EHLO included.
        """
        if argument.strip():
            self._error(501, "5.5.4 Syntax: STARTTLS")
            return
        if self.startedTLS:
            self._error(503, "5.5.1 Error: TLS already active")
            return
        if not self.canStartTLS:
            self._error(454, "4.7.0 TLS not available")
            return
        self._reply(220, "2.0.0 Ready to start TLS")
        if self._buffer:
            _log.info(
                "Discarded {count} octets pipelined after STARTTLS by {client}",
                count=len(self._buffer),
                client=self.clientAddress,
            )
        self._buffer = bytearray()
        self._helo = None
        self._ehlo = False
        self._resetTransaction()
        self._flushOutput()
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    # Shutdown support

    @property
    def busy(self) -> bool:
        """
        Whether a message is being received or stored right now.
        """
        return self._state == _DATA or (self._waiting and self._admitted)

    def whenIdle(self) -> Deferred:
        """
        A L{Deferred} that fires when no message is in flight.
        """
        d: Deferred = Deferred()
        if not self.busy or self._state == _CLOSED:
            d.callback(None)
        else:
            self._idleWaiters.append(d)
        return d

    def _notifyIdle(self) -> None:
        if self.busy and self._state != _CLOSED:
            return
        waiters, self._idleWaiters = self._idleWaiters, []
        for d in waiters:
            d.callback(None)

    def shutDown(self) -> None:
        """
        The server is stopping: say so and close.
        """
        self._reply(421, f"4.3.2 {self._hostName()} Service shutting down")
        self._close()


def _pending(d: Deferred) -> Deferred | None:
    """
    The L{Deferred} if it has not fired yet, else L{None}.
    """
    if d.called:
        return None
    return d
