# -*- test-case-name: tests.test_session -*-
"""
The SMTP state machine of one connection, without I/O.

The protocol (L{gopherpost.inbound.protocol}) hands the session framing
events: L{Session.start} when the client connects, L{Session.lineReceived}
for each command line, L{Session.bodyReceived} and L{Session.endOfData} for
message content.  Each returns a L{Response} (one reply or several) or a
L{Deferred} of one; the protocol writes them in order and carries out their
L{Action}s.  The session consults its L{PolicyChain} at every stage and
hands accepted messages to its L{IMessageSink}.

Pipelining (RFC 2920) is answered in order by construction: the protocol
hands over the next command only once the previous one is answered.
Clients without relay permission must keep its rules (as Postfix's
C{smtpd_forbid_unauth_pipelining}): input before the banner, after one of
HELO, EHLO, DATA, NOOP or VRFY (which must end a group), or after any
command following a plain HELO, is a protocol synchronization error:
C{554 5.5.0}, then C{421} and the close.  Clients that may relay keep the
old leniency (a body sent before the C{354} is taken as the body).

Errors are counted (L{HARD_ERROR_LIMIT}), and so are commands that do
nothing for a transaction (L{JUNK_COMMAND_LIMIT}); a message received
forgives both, as in Postfix.

ESMTP extensions beyond RFC 5321: SIZE, 8BITMIME, SMTPUTF8 (RFC 6531: UTF-8
paths and header fields, U-label domains checked as IDNA 2008), CHUNKING
(RFC 3030, without BINARYMIME), DSN (RFC 3461: the parameters are kept in
the envelope), REQUIRETLS (RFC 8689: offered, and taken, only under TLS).
BDAT (L{smtp_BDAT}) works as Postfix's: the chunk's octets are always read
(the command returns L{ReadChunk}) and answered after them; its size is
checked against the message size limit before it is read; a chunk refused
or failed ends the transaction (later chunks of it get C{503} and are
discarded); a malformed BDAT (where its chunk ends is unknown) ends the
session with C{521}; DATA after BDAT, MAIL or RCPT after BDAT, and BDAT
after DATA get C{503}.

Violations (for bans) go to the chain (L{PolicyChain.violation}): a RCPT
refused as relaying or to an unknown address, each protocol error that ends
the session, and each failed authentication (a C{535} reply).

AUTH (RFC 4954) is the session's L{IAuthCommand}
(L{gopherpost.auth.command}), when its listener role offers it: the
session hands it the AUTH command and, while an exchange is in progress,
every line (which is a response, not a command), and writes what it
answers; a C{334} challenge lets the next line be as long as an AUTH
response may be.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.config import Settings
from gopherpost.inbound.address import AddressError, parseCommandArgument, parsePath
from gopherpost.inbound.chunking import ChunkedContent, parseBDATArgument
from gopherpost.inbound.context import EnvelopeRecipient, SessionContext, TLSInfo, Transaction
from gopherpost.inbound.parameters import (
    applyMailParameters,
    applyRcptParameters,
    declaresSMTPUTF8,
)
from gopherpost.inbound.policy import PolicyChain
from gopherpost.inbound.replies import (
    Action,
    Answer,
    ReadChunk,
    Reply,
    Response,
    responseReplies,
)
from gopherpost.interfaces import IAuditLog
from gopherpost.spool import SpoolError

__all__ = ["Session", "SessionSettings", "HARD_ERROR_LIMIT", "JUNK_COMMAND_LIMIT"]

_log = Logger()


#: Errors tolerated in one session (Postfix's smtpd_hard_error_limit).
HARD_ERROR_LIMIT = 20
#: Commands that do nothing for a transaction (HELO, EHLO, RSET, NOOP,
#: VRFY, HELP) tolerated before each one more counts as an error (Postfix's
#: smtpd_junk_command_limit): a client cannot keep the server busy for
#: ever with them.  A message received forgives both counts.
JUNK_COMMAND_LIMIT = 100

#: The commands L{JUNK_COMMAND_LIMIT} counts.
_JUNK = frozenset((b"HELO", b"EHLO", b"RSET", b"NOOP", b"VRFY", b"HELP"))

#: Commands that must end a pipelined group (RFC 2920 3.1; Postfix's list).
_LAST_IN_GROUP = frozenset((b"HELO", b"EHLO", b"DATA", b"NOOP", b"VRFY"))

_HELP = (
    "2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH\n"
    "2.0.0 See RFC 5321"
)

_OK = Reply(250, "2.0.0 Ok")
_MAIL_OK = Reply(250, "2.1.0 Ok")
_RCPT_OK = Reply(250, "2.1.5 Ok")
_GO_AHEAD = Reply(354, "End data with <CR><LF>.<CR><LF>", Action.DATA)
_BYE = Reply(221, "2.0.0 Bye", Action.CLOSE)
_SYNC_ERROR = Reply(554, "5.5.0 Error: SMTP protocol synchronization", reason="pipelining")
_LINE_TOO_LONG = Reply(500, "5.5.2 Error: line too long", reason="line-length")
_NO_SPACE = Reply(452, "4.3.1 Error: insufficient system storage", reason="storage")
_WRITE_ERROR = Reply(451, "4.3.0 Error: queue file write error", reason="storage")
_BODY_TOO_BIG = Reply(552, "5.3.4 Error: message file too big", reason="size")
_NEED_MAIL = Reply(503, "5.5.1 Error: need MAIL command")
_NEED_RCPT = Reply(503, "5.5.1 Error: need RCPT command")
# CHUNKING (RFC 3030), with Postfix's replies.
_BDAT_SYNTAX = Reply(521, "5.5.4 Syntax: BDAT count [LAST]", Action.CLOSE, reason="bdat")
_NULL_CHUNK = Reply(551, "5.7.1 Null BDAT request", reason="bdat")
_CHUNK_TOO_BIG = Reply(552, "5.3.4 Chunk exceeds message size limit", reason="size")
_BDAT_AFTER_DATA = Reply(503, "5.5.1 Error: BDAT after DATA")
_DATA_AFTER_BDAT = Reply(503, "5.5.1 Error: DATA after BDAT")
_MAIL_AFTER_BDAT = Reply(503, "5.5.1 Error: MAIL after BDAT")
_RCPT_AFTER_BDAT = Reply(503, "5.5.1 Error: RCPT after BDAT")
_AUTH_NOT_ENABLED = Reply(503, "5.5.1 Error: authentication not enabled", reason="auth")

#: The violation a RCPT refused for this reason is (L{PolicyChain.violation}).
_RCPT_VIOLATIONS = {"relay": "relay_denied", "unknown-recipient": "unknown_recipient"}

#: Error numbers that mean the spool is full (452 4.3.1, not 451).
_FULL = frozenset((errno.ENOSPC, errno.EDQUOT))


@dataclass(frozen=True)
class SessionSettings:
    """
    The settings a session needs.

    @ivar hostname: our name (greeting, EHLO, C{Received:}).
    @ivar banner: the greeting's text after C{ESMTP}.
    @ivar maxMessageSize: the largest message in octets (C{SIZE}).
    """

    hostname: str
    banner: str = "GopherPost ready"
    maxMessageSize: int = 10485760

    @classmethod
    def fromSettings(cls, settings: Settings) -> SessionSettings:
        """
        The session's part of the server's settings.
        """
        return cls(settings.hostname, settings.banner, settings.maxMessageSize)

    @cached_property
    def bannerReply(self) -> Reply:
        """
        C{220 <hostname> ESMTP <banner>}.
        """
        return Reply(220, f"{self.hostname} ESMTP {self.banner}")

    @cached_property
    def heloReply(self) -> Reply:
        """
        C{250 <hostname>}.
        """
        return Reply(250, self.hostname)


@functools.lru_cache(maxsize=64)
def _ehloReply(settings: SessionSettings, keywords: tuple[str, ...]) -> Reply:
    """
    The EHLO reply (a few variants per server: made once each).
    """
    return Reply(250, "\n".join([settings.hostname, *keywords]))


@dataclass(frozen=True)
class _Chunk:
    """
    The BDAT chunk being read.

    @ivar size: its octets.
    @ivar last: whether it ends the message.
    @ivar refusal: the reply when it is read only to be discarded.
    """

    size: int
    last: bool
    refusal: Reply | None = None


def _challenges(response: Response) -> Response:
    """
    An AUTH command's response, its C{334} challenge (if any) made to let
    the client's response line be long.
    """
    if isinstance(response, Reply):
        if response.code == 334:
            return Reply(334, response.text, Action.AUTH_RESPONSE)
        return response
    return tuple(Reply(334, r.text, Action.AUTH_RESPONSE) if r.code == 334 else r for r in response)


def _then(result: Any, f: Callable[[Any], Any]) -> Any:
    """
    C{f(result)}, now or when the L{Deferred} fires.
    """
    # Cheap type checks first: isinstance(x, Deferred) goes through an ABC.
    if result is None or type(result) is Reply or type(result) is tuple:
        return f(result)
    if isinstance(result, Deferred):
        return result.addCallback(f)
    return f(result)


class Session:
    """
    One SMTP session.

    @param context: the connection's L{SessionContext}.
    @param chain: the listener role's policy chain.
    @param sink: where accepted messages go (L{IMessageSink}).
    @param settings: the session's settings.
    @param audit: the audit log.
    @param clock: for the C{Received:} time stamp.
    @param canStartTLS: whether STARTTLS is offered.
    @param hasPendingInput: whether more client input is waiting right now
        (for the pipelining rules).
    @param auth: the session's AUTH command (an
        L{gopherpost.auth.interfaces.IAuthCommand}), or L{None} where the
        role does not offer AUTH.
    """

    def __init__(
        self,
        context: SessionContext,
        chain: PolicyChain,
        sink: Any,
        settings: SessionSettings,
        audit: IAuditLog,
        clock: IReactorTime,
        canStartTLS: bool = False,
        hasPendingInput: Callable[[], bool] = lambda: False,
        auth: Any = None,
    ) -> None:
        self.context = context
        self._chain = chain
        self._sink = sink
        self._settings = settings
        self._audit = audit
        self._clock = clock
        self._canStartTLS = canStartTLS
        self._hasPendingInput = hasPendingInput
        self.transaction: Transaction | None = None
        self.message: Any = None
        self._dataFailure: Reply | None = None
        #: The BDAT chunk being read, and the content of the chunks so far.
        self._chunk: _Chunk | None = None
        self._chunked: ChunkedContent | None = None
        self._errors = 0
        self._junk = 0
        self._auth = auth
        self.admitted = False

    @property
    def inData(self) -> bool:
        """
        Whether message content is being received.
        """
        return self.message is not None

    @property
    def _host(self) -> str:
        return self._settings.hostname

    def _closingReply(self, why: str) -> Reply:
        return Reply(421, f"4.7.0 {self._host} Error: {why}", Action.CLOSE)

    # The connection

    def start(self) -> Response | Deferred[Response]:
        """
        The client connected: the connect stage, then the banner or the
        refusal (which closes).
        """
        return _then(self._chain.run("connect", self.context), self._connected)

    def _connected(self, verdict: Reply | None) -> Response:
        client = self.context.clientAddress
        if verdict is not None and verdict.isError:
            self._audit.emit("session.reject", client=client, reason=verdict.reason or "policy")
            if verdict.code < 500 and verdict.code != 421:
                verdict = Reply(421, verdict.text, reason=verdict.reason)
            return verdict.closing()
        self.admitted = True
        self._audit.emit("session.start", client=client)
        if (
            not self.context.mayRelay
            and not self.context.role.implicitTLS
            and self._hasPendingInput()
        ):
            return self._syncError("the banner")
        return self._settings.bannerReply

    def tlsEstablished(self, tls: TLSInfo) -> None:
        """
        The TLS handshake finished (STARTTLS or implicit TLS).
        """
        self.context.tls = tls
        self._audit.emit(
            "tls.established",
            client=self.context.clientAddress,
            version=tls.version,
            cipher=tls.cipher,
        )

    def connectionLost(self) -> None:
        """
        The connection is gone: drop an unfinished message, tell the
        policies that keep something per session (milters).
        """
        if self.message is not None:
            self.message.abort()
            self.message = None
        self.transaction = None
        if self._auth is not None:
            self._auth.connectionLost()
        self._chain.disconnect(self.context)
        if self.admitted:
            self._audit.emit("session.close", client=self.context.clientAddress)

    def timeoutReply(self) -> Reply:
        """
        What a client that took too long is told before the close.
        """
        return Reply(421, f"4.4.2 {self._host} Error: timeout exceeded", Action.CLOSE)

    def shutdownReply(self) -> Reply:
        """
        What every client is told when the server stops.
        """
        return Reply(421, f"4.3.2 {self._host} Service shutting down", Action.CLOSE)

    # Commands

    def lineReceived(self, line: bytes) -> Answer | Deferred[Answer]:
        """
        One command line (without its line end), or the response line of
        an AUTH exchange in progress.
        """
        auth = self._auth
        if auth is not None and auth.inProgress:
            return _then(_then(auth.lineReceived(line), _challenges), self._finish)
        parts = line.strip().split(None, 1)
        if not parts:
            return self._finish(Reply(500, "5.5.2 Error: bad syntax"))
        verb = parts[0].upper()
        handler = _COMMANDS.get(verb)
        if handler is None:
            return self._finish(Reply(502, "5.5.2 Error: command not recognized"))
        context = self.context
        if (
            not (context.relayClient or context.authenticatedUser is not None)
            and (verb in _LAST_IN_GROUP or not context.extended)
            and self._hasPendingInput()
        ):
            return self._syncError(verb.decode("ascii"))
        if verb in _JUNK:
            self._junk += 1
            if self._junk > JUNK_COMMAND_LIMIT:
                return _then(handler(self, parts[1] if len(parts) == 2 else b""), self._finishJunk)
        return _then(handler(self, parts[1] if len(parts) == 2 else b""), self._finishCommand)

    def lineTooLong(self) -> Response:
        """
        A command line over the limit (the session goes on); during an AUTH
        exchange, a response over the limit (the exchange ends).
        """
        auth = self._auth
        if auth is not None and auth.inProgress:
            return _then(auth.lineTooLong(), self._finish)
        return self._finish(_LINE_TOO_LONG)

    def inputTooLong(self) -> Response:
        """
        A command line so long that the session ends.
        """
        self._chain.violation(self.context, "protocol")
        return (_LINE_TOO_LONG, self._closingReply("line too long"))

    def _syncError(self, where: str) -> Response:
        _log.info(
            "Improper command pipelining after {where} from {client}",
            where=where,
            client=self.context.clientAddress,
        )
        self._audit.emit(
            "smtp.protocol-error", client=self.context.clientAddress, reason="pipelining"
        )
        self._chain.violation(self.context, "protocol")
        return (_SYNC_ERROR, self._closingReply("protocol synchronization"))

    def _finishCommand(self, answer: Answer) -> Answer:
        """
        L{_finish} for a command's answer: a BDAT's reply is counted once its
        chunk is read.
        """
        if isinstance(answer, ReadChunk):
            return answer
        return self._finish(answer)

    def _finish(self, response: Response) -> Response:
        """
        Count errors; past the limit, the reply is followed by 421 and the
        close.  A failed authentication (C{535}) is a violation.
        """
        last = response if isinstance(response, Reply) else response[-1]
        code = last.code
        if code >= 400 and code not in (421, 452) and last.action is not Action.CLOSE:
            if code == 535:
                self._chain.violation(self.context, "auth")
            self._errors += 1
            if self._errors >= HARD_ERROR_LIMIT:
                return self._tooManyErrors(responseReplies(response))
        return response

    def _tooManyErrors(self, replies: Sequence[Reply]) -> Response:
        self._chain.violation(self.context, "protocol")
        return (*replies, self._closingReply("too many errors"))

    def _finishJunk(self, response: Response) -> Response:
        """
        L{_finish} for a command past the junk limit: it counts as an error
        whatever its reply.
        """
        replies = responseReplies(response)
        last = replies[-1]
        if last.isError or last.action is Action.CLOSE:
            return self._finish(response)
        self._errors += 1
        if self._errors >= HARD_ERROR_LIMIT:
            return self._tooManyErrors(replies)
        return response

    def smtp_HELO(self, argument: bytes) -> Response | Deferred[Response]:
        """
        HELO: plain SMTP greeting.
        """
        return self._greet(argument, extended=False)

    def smtp_EHLO(self, argument: bytes) -> Response | Deferred[Response]:
        """
        EHLO: greeting with the list of extensions.
        """
        return self._greet(argument, extended=True)

    def _greet(self, argument: bytes, extended: bool) -> Response | Deferred[Response]:
        verb = "EHLO" if extended else "HELO"
        name = argument.strip()
        if not name or not name.isascii() or not name.decode("ascii").isprintable():
            return Reply(501, f"5.5.4 Syntax: {verb} hostname")
        text = name.decode("ascii")
        self._abortTransaction()
        self.context.helo = text
        self.context.extended = extended
        self._audit.emit("smtp.helo", client=self.context.clientAddress, helo=text)

        def judged(verdict: Reply | None) -> Response:
            if verdict is not None and verdict.isError:
                self.context.helo = None
                self.context.extended = False
                return verdict
            if not extended:
                return self._settings.heloReply
            return _ehloReply(self._settings, tuple(self.extensions()))

        return _then(self._chain.run("helo", self.context), judged)

    def extensions(self) -> list[str]:
        """
        The EHLO keywords (after our name), in order.
        """
        keywords = [
            "PIPELINING",
            f"SIZE {self._settings.maxMessageSize}",
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
            "DSN",
            "ENHANCEDSTATUSCODES",
        ]
        if self.context.tls is None:
            if self._canStartTLS:
                keywords.append("STARTTLS")
        else:
            # RFC 8689 4: only on a TLS session.
            keywords.append("REQUIRETLS")
        auth = self._auth.keyword() if self._auth is not None else None
        if auth is not None:
            keywords.append(auth)
        keywords.append("HELP")
        return keywords

    def smtp_MAIL(self, argument: bytes) -> Response | Deferred[Response]:
        """
        MAIL FROM:<reverse-path> [parameters]
        """
        if self.context.helo is None:
            return Reply(503, "5.5.1 Error: send HELO/EHLO first")
        if self.transaction is not None:
            if self.message is not None:
                return _MAIL_AFTER_BDAT
            return Reply(503, "5.5.1 Error: nested MAIL command")
        split = parseCommandArgument(argument, b"FROM")
        if split is None:
            return Reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
        path, parameters = split
        try:
            sender = parsePath(path, sender=True, smtputf8=declaresSMTPUTF8(parameters))
        except AddressError as e:
            return e.reply
        transaction = Transaction(sender)
        refusal = applyMailParameters(parameters, transaction, self.context)
        if refusal is not None:
            return refusal

        def judged(verdict: Reply | None) -> Response:
            client = self.context.clientAddress
            if verdict is not None and verdict.isError:
                if verdict.reason == "size":
                    self._audit.emit(
                        "message.rejected",
                        client=client,
                        reason="size",
                        size=transaction.declaredSize,
                    )
                self._audit.emit(
                    "smtp.mail",
                    client=client,
                    accepted=False,
                    code=verdict.code,
                    sender=sender.text,
                )
                return verdict
            self.transaction = transaction
            self._audit.emit(
                "smtp.mail", client=client, accepted=True, code=250, sender=sender.text
            )
            return _MAIL_OK

        return _then(self._chain.run("mail", self.context, transaction), judged)

    def smtp_RCPT(self, argument: bytes) -> Response | Deferred[Response]:
        """
        RCPT TO:<forward-path> [parameters]
        """
        transaction = self.transaction
        if transaction is None:
            return _NEED_MAIL
        if self.message is not None:
            return _RCPT_AFTER_BDAT
        split = parseCommandArgument(argument, b"TO")
        if split is None:
            return Reply(501, "5.5.4 Syntax: RCPT TO:<address>")
        path, parameters = split
        try:
            mailbox = parsePath(
                path,
                sender=False,
                smtputf8=transaction.smtputf8,
                postmasterDomain=self._host,
            )
        except AddressError as e:
            return e.reply
        recipient = EnvelopeRecipient(mailbox)
        refusal = applyRcptParameters(parameters, recipient, transaction, self.context)
        if refusal is not None:
            return refusal

        def judged(verdict: Reply | None) -> Response:
            accepted = verdict is None or not verdict.isError
            self._audit.emit(
                "smtp.rcpt",
                client=self.context.clientAddress,
                accepted=accepted,
                code=250 if accepted else verdict.code,  # type: ignore[union-attr]
                recipient=recipient.address,
            )
            if not accepted:
                kind = _RCPT_VIOLATIONS.get(verdict.reason)  # type: ignore[union-attr, arg-type]
                if kind is not None:
                    self._chain.violation(self.context, kind)
                return verdict  # type: ignore[return-value]
            if self.transaction is transaction:
                transaction.recipients.append(recipient)
            return _RCPT_OK

        return _then(self._chain.run("rcpt", self.context, transaction, recipient), judged)

    def smtp_DATA(self, argument: bytes) -> Response | Deferred[Response]:
        """
        DATA: the message content follows the C{354}.
        """
        if argument.strip():
            return Reply(501, "5.5.4 Syntax: DATA")
        transaction = self.transaction
        if transaction is None:
            return _NEED_MAIL
        if transaction.contentCommand == "BDAT":
            return _DATA_AFTER_BDAT
        if not transaction.recipients:
            return _NEED_RCPT
        transaction.contentCommand = "DATA"

        def judged(verdict: Reply | None) -> Response:
            if verdict is not None and verdict.isError:
                return verdict
            self._dataFailure = None
            self.message = self._sink.newMessage(self.context, transaction, self._clock.seconds())
            return _GO_AHEAD

        return _then(self._chain.run("data", self.context, transaction), judged)

    def smtp_BDAT(self, argument: bytes) -> ReadChunk | Response | Deferred[ReadChunk]:
        """
        BDAT <size> [LAST] (RFC 3030): a chunk of the message follows at
        once; it is read (L{ReadChunk}) and answered by L{endOfChunk}.  The
        first chunk of a message runs the DATA stage of the policies.
        """
        parsed = parseBDATArgument(argument)
        if parsed is None:
            # Where its chunk ends is unknown: its octets cannot be told
            # from commands.
            self._abortTransaction()
            return _BDAT_SYNTAX
        size, last = parsed
        transaction = self.transaction
        refusal: Reply | None = None
        if transaction is None:
            refusal = _NEED_MAIL
        elif not transaction.recipients:
            refusal = _NEED_RCPT
        elif transaction.contentCommand == "DATA":
            refusal = _BDAT_AFTER_DATA
        elif size == 0 and not last:
            refusal = _NULL_CHUNK
        elif (0 if self.message is None else self.message.size) + size > (
            self._settings.maxMessageSize
        ):
            refusal = _CHUNK_TOO_BIG
        if refusal is not None or transaction is None:
            return self._discardChunk(size, refusal or _NEED_MAIL)
        if self.message is not None:
            return self._readChunk(size, last)
        transaction.contentCommand = "BDAT"

        def judged(verdict: Reply | None) -> ReadChunk:
            if verdict is not None and verdict.isError:
                return self._discardChunk(size, verdict)
            if self.transaction is not transaction:
                return self._discardChunk(size, _NEED_MAIL)
            self._dataFailure = None
            self.message = self._sink.newMessage(self.context, transaction, self._clock.seconds())
            self._chunked = ChunkedContent()
            return self._readChunk(size, last)

        return _then(self._chain.run("data", self.context, transaction), judged)

    def _readChunk(self, size: int, last: bool) -> ReadChunk:
        self._chunk = _Chunk(size, last)
        return ReadChunk(size)

    def _discardChunk(self, size: int, refusal: Reply) -> ReadChunk:
        """
        Read a chunk only to throw it away, then refuse it: the transaction
        has failed (RFC 3030 2).
        """
        if refusal.reason == "size":
            self._audit.emit("message.rejected", client=self.context.clientAddress, reason="size")
        self._abortTransaction()
        self._chunk = _Chunk(size, False, refusal)
        return ReadChunk(size)

    def chunkReceived(self, data: bytes) -> None:
        """
        Octets of the BDAT chunk being read (any number at a time).
        """
        chunk, chunked = self._chunk, self._chunked
        if chunk is None or chunk.refusal is not None or chunked is None:
            return
        if self._dataFailure is not None:
            return
        content = chunked.feed(data)
        if chunked.failed:
            self._failData(_LINE_TOO_LONG)
        elif content:
            self.bodyReceived(content)

    def endOfChunk(self, timeLeft: float | None = None) -> Response | Deferred[Response]:
        """
        The BDAT chunk was read: its reply (for the last one, once the
        message is durable).

        @param timeLeft: for the last chunk, as L{endOfData}'s.
        """
        chunk, self._chunk = self._chunk, None
        assert chunk is not None
        if chunk.refusal is not None:
            return self._finish(chunk.refusal)
        chunked = self._chunked
        if chunk.last and self._dataFailure is None and chunked is not None:
            tail = chunked.finish()
            if chunked.failed:
                self._failData(_LINE_TOO_LONG)
            elif tail:
                self.bodyReceived(tail)
        if chunk.last or self._dataFailure is not None:
            return self.endOfData(timeLeft)
        return Reply(250, f"2.0.0 Ok: {chunk.size} octets")

    def bodyReceived(self, data: bytes) -> bool:
        """
        Message content (dot-unstuffed, CRLF line ends).

        @return: whether to go on delivering content (L{False} once the
            message has failed: too big, or the spool cannot store it).
        """
        message = self.message
        if message is None or self._dataFailure is not None:
            return False
        message.write(data)
        if message.size > self._settings.maxMessageSize:
            self._failData(_BODY_TOO_BIG)
            return False
        error = message.error
        if error is not None:
            _log.error(
                "Could not write message {queueId} from {client}: {error}",
                queueId=message.queueId,
                client=self.context.clientAddress,
                error=error,
            )
            self._failData(_NO_SPACE if error.errno in _FULL else _WRITE_ERROR)
            return False
        return True

    def bodyLineTooLong(self) -> None:
        """
        A line of the message is over the limit: the message fails.
        """
        self._failData(_LINE_TOO_LONG)

    def _failData(self, reply: Reply) -> None:
        if self._dataFailure is None:
            self._dataFailure = reply
            self._audit.emit(
                "message.rejected", client=self.context.clientAddress, reason=reply.reason
            )
            if self.message is not None:
                self.message.abort()

    def endOfData(self, timeLeft: float | None = None) -> Response | Deferred[Response]:
        """
        The end of the message: the end-of-data policies, then the commit.

        @param timeLeft: what is left of the client's DATA time (seconds),
            the most the end-of-data policies may take
            (C{message.deadline}); L{None}: no bound.
        """
        message, self.message = self.message, None
        transaction, self.transaction = self.transaction, None
        failure, self._dataFailure = self._dataFailure, None
        self._chunked = None
        if failure is not None:
            return self._finish(failure)
        assert message is not None and transaction is not None
        if timeLeft is not None:
            message.deadline = self._clock.seconds() + max(0.0, timeLeft)

        def judged(verdict: Reply | None) -> Response | Deferred[Response]:
            if verdict is not None and verdict.isError:
                message.abort()
                self._audit.emit(
                    "message.rejected",
                    client=self.context.clientAddress,
                    reason=verdict.reason or "policy",
                )
                return self._finish(verdict)
            if verdict is not None and verdict.reason == "discard":
                return self._discarded(message, verdict)
            return message.commit().addCallbacks(self._stored, self._notStored)

        return _then(self._chain.run("message", self.context, transaction, message), judged)

    def _discarded(self, message: Any, verdict: Reply) -> Response:
        """
        A policy (a milter, rspamd) discards the message: it is thrown away
        and the client told the policy's 2xx reply, as a delivery.
        """
        message.abort()
        client = self.context.clientAddress
        self._audit.emit("message.discarded", client=client, queueId=message.queueId)
        _log.info("Discarded {queueId} from {client}", queueId=message.queueId, client=client)
        self._errors = 0
        self._junk = 0
        return verdict

    def _stored(self, envelope: Any) -> Response:
        # A message received forgives earlier errors (as Postfix does).
        self._errors = 0
        self._junk = 0
        return Reply(250, f"2.0.0 Ok: queued as {envelope.queueId}")

    def _notStored(self, failure: Failure) -> Response:
        if failure.check(SpoolError):
            full = getattr(failure.value, "errno", None) in _FULL
        else:
            _log.failure(
                "Storing a message from {client} failed", failure, client=self.context.clientAddress
            )
            full = False
        self._audit.emit("message.rejected", client=self.context.clientAddress, reason="storage")
        return self._finish(_NO_SPACE if full else _WRITE_ERROR)

    def _abortTransaction(self) -> None:
        self.transaction = None
        if self.message is not None:
            # A BDAT transaction between chunks.
            self.message.abort()
            self.message = None
        self._chunked = None
        self._dataFailure = None

    def smtp_RSET(self, argument: bytes) -> Response:
        """
        RSET: forget the transaction.
        """
        self._abortTransaction()
        return _OK

    def smtp_NOOP(self, argument: bytes) -> Response:
        """
        NOOP.
        """
        return _OK

    def smtp_QUIT(self, argument: bytes) -> Response:
        """
        QUIT: say goodbye and close.
        """
        return _BYE

    def smtp_VRFY(self, argument: bytes) -> Response:
        """
        VRFY: never confirms addresses (RFC 5321 3.5.3).
        """
        if not argument.strip():
            return Reply(501, "5.5.4 Syntax: VRFY address")
        return Reply(252, "2.0.0 Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_HELP(self, argument: bytes) -> Response:
        """
        HELP.
        """
        return Reply(214, _HELP)

    def smtp_AUTH(self, argument: bytes) -> Response | Deferred[Response]:
        """
        AUTH mechanism [initial-response] (RFC 4954): handed to the role's
        AUTH command.
        """
        if self._auth is None:
            return _AUTH_NOT_ENABLED
        return _then(self._auth.command(argument, self.transaction is not None), _challenges)

    def smtp_STARTTLS(self, argument: bytes) -> Response:
        """
        STARTTLS (RFC 3207): the session starts over, EHLO included (the
        protocol discards plaintext pipelined after the command).
        """
        if argument.strip():
            return Reply(501, "5.5.4 Syntax: STARTTLS")
        if self.context.tls is not None:
            return Reply(503, "5.5.1 Error: TLS already active")
        if not self._canStartTLS:
            return Reply(454, "4.7.0 TLS not available")
        self._abortTransaction()
        self.context.helo = None
        self.context.extended = False
        return Reply(220, "2.0.0 Ready to start TLS", Action.STARTTLS)


#: The command handlers, by upper-case verb.
_COMMANDS: dict[bytes, Callable[[Session, bytes], Any]] = {
    b"HELO": Session.smtp_HELO,
    b"EHLO": Session.smtp_EHLO,
    b"MAIL": Session.smtp_MAIL,
    b"RCPT": Session.smtp_RCPT,
    b"DATA": Session.smtp_DATA,
    b"BDAT": Session.smtp_BDAT,
    b"RSET": Session.smtp_RSET,
    b"NOOP": Session.smtp_NOOP,
    b"QUIT": Session.smtp_QUIT,
    b"VRFY": Session.smtp_VRFY,
    b"HELP": Session.smtp_HELP,
    b"STARTTLS": Session.smtp_STARTTLS,
    b"AUTH": Session.smtp_AUTH,
}
