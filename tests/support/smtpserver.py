# -*- test-case-name: tests.test_client_loopback -*-
"""
A real receiving SMTP server for loopback integration tests, built on
L{twisted.mail.smtp.ESMTP} (so it runs on both Python stacks; aiosmtpd is not
in Debian).

It listens on C{127.0.0.x:0}, optionally offers STARTTLS with a given
certificate, records every accepted message (envelope, MAIL parameters, the
message as received and the exact bytes on the wire after C{354}) and can be
scripted to answer any stage differently::

    server = SMTPTestServer(
        certificate=pki.good,
        replies={
            "RCPT": forRecipients({"bad@example.test": (550, "5.1.1 no such user")}),
            "MAIL": firstTimes(1, (451, "4.3.0 try again")),
        },
    )
    server.start()
    self.addCleanup(server.stop)
    ... connect to (server.host, server.port) ...
    server.messages[0].recipients

Stages (keys of C{replies}): C{"greeting"}, C{"EHLO"}, C{"HELO"},
C{"STARTTLS"}, C{"MAIL"}, C{"RCPT"}, C{"DATA"}, C{"dataEnd"} (the reply to
the final dot), C{"RSET"}, C{"QUIT"}, or any other command verb.  A responder
is C{(code, text)}, L{SILENT} (never answer), L{DROP} (close without
answering), or a callable taking the command's argument (text) and
returning one of those or L{None} for the default behaviour.  A scripted
C{421} closes the connection after the reply.  Scripted replies replace the
command's handling: use them to refuse (a scripted 2xx to MAIL or RCPT does
not open a transaction).  A C{"dataEnd"} responder may also return a
L{Deferred} firing with one of those: the reply waits for it (the message
just received is C{server.finalDots[-1]}).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.mail.smtp import ESMTP, IMessage
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.support.certs import CertificateFiles

__all__ = [
    "SILENT",
    "DROP",
    "ReceivedMessage",
    "SMTPTestServer",
    "firstTimes",
    "forRecipients",
]


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Responder: never answer the command (the client times out).
SILENT = _Sentinel("SILENT")
#: Responder: close the connection instead of answering.
DROP = _Sentinel("DROP")

ReplySpec = tuple[int, str] | _Sentinel | None
Responder = ReplySpec | Callable[[str], ReplySpec]

DEFAULT_EXTENSIONS: Mapping[str, str | None] = {
    "SIZE": "10485760",
    "8BITMIME": None,
    "ENHANCEDSTATUSCODES": None,
}


def firstTimes(times: int, reply: ReplySpec) -> Callable[[str], ReplySpec]:
    """
    A responder giving C{reply} to the first C{times} commands (across all
    connections of the server), then the default behaviour.
    """
    count = [0]

    def respond(argument: str) -> ReplySpec:
        count[0] += 1
        return reply if count[0] <= times else None

    return respond


def forRecipients(replies: Mapping[str, ReplySpec]) -> Callable[[str], ReplySpec]:
    """
    An C{RCPT} responder answering per recipient address (case-insensitive);
    other recipients get the default C{250}.
    """
    lowered = {k.lower(): v for k, v in replies.items()}

    def respond(argument: str) -> ReplySpec:
        match = re.match(r"\s*TO:\s*<([^>]*)>", argument, re.I)
        address = match.group(1).lower() if match else ""
        return lowered.get(address)

    return respond


@dataclass
class ReceivedMessage:
    """
    One message the server accepted (answered 2xx to the final dot).

    @ivar sender: the reverse-path (C{""} for C{<>}).
    @ivar recipients: the accepted forward-paths.
    @ivar mailParameters: the ESMTP parameters given with MAIL, e.g.
        C{["SIZE=123", "BODY=8BITMIME"]}.
    @ivar data: the message after dot-unstuffing, lines joined with CRLF.
    @ivar wire: the exact bytes received after C{354}, up to and including
        the final C{".\\r\\n"}.
    @ivar tls: whether the session was under TLS.
    @ivar helo: the argument of the last EHLO/HELO.
    """

    sender: str
    recipients: list[str]
    mailParameters: list[str]
    data: bytes = b""
    wire: bytes = b""
    tls: bool = False
    helo: str = ""


@implementer(IMessage)
class _Discard:
    """
    The per-recipient IMessage: the protocol records the data itself.
    """

    def lineReceived(self, line: bytes) -> None:
        pass

    def eomReceived(self) -> Deferred:
        return succeed(None)

    def connectionLost(self) -> None:
        pass


class _ScriptedESMTP(ESMTP):
    """
    ESMTP with scripted replies and recording; see the module docstring.
    """

    timeout = None  # type: ignore[assignment] # no timers on the global reactor

    @property
    def _transport(self) -> Any:
        """
        The connection's transport (the session runs only once connected).
        """
        return self.transport

    def __init__(self, server: SMTPTestServer, contextFactory=None) -> None:
        ESMTP.__init__(self, contextFactory=contextFactory)
        self.server = server
        self.host = server.hostname.encode("ascii")
        self.commands: list[bytes] = []
        self.lost: Deferred = Deferred()
        self._rejecting = False
        self._transaction: ReceivedMessage | None = None
        self._mailArgument = ""
        self._helo = (None, b"")
        self._heloName = ""

    # -- scripting ---------------------------------------------------------

    def _scripted(self, stage: str, argument: str) -> ReplySpec:
        responder = self.server.replies.get(stage)
        if callable(responder):
            return responder(argument)
        return responder

    def _answer(self, spec: ReplySpec) -> None:
        if spec is SILENT:
            return
        if spec is DROP:
            self._transport.loseConnection()
            return
        code, text = spec  # type: ignore[misc]
        self.sendCode(code, text.encode("utf-8"))
        if code == 421:
            self._transport.loseConnection()

    # -- connection ----------------------------------------------------------

    def connectionMade(self) -> None:
        self.server._connections.append(self)
        self.server.connectionsMade += 1
        spec = self._scripted("greeting", "")
        if spec is None:
            ESMTP.connectionMade(self)
            return
        self.canStartTLS = ITLSTransport.providedBy(self.transport) and self.ctx is not None
        self._helo = (None, cast(Any, self._transport.getPeer()).host.encode("ascii"))
        if isinstance(spec, tuple) and spec[0] >= 400:
            self._rejecting = True
        self._answer(spec)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        ESMTP.connectionLost(self, reason)
        if self in self.server._connections:
            self.server._connections.remove(self)
        self.lost.callback(None)

    def extensions(self) -> dict:
        ext = ESMTP.extensions(self)
        ext.pop(b"AUTH", None)
        for keyword, value in self.server.extensions.items():
            ext[keyword.encode("ascii")] = None if value is None else [value.encode("ascii")]
        return ext

    # -- commands ------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        if self.mode != "COMMAND":
            return ESMTP.lineReceived(self, line)
        self.commands.append(line)
        self.server.commands.append(line)
        parts = line.strip().split(None, 1)
        verb = parts[0].decode("ascii", "replace").upper() if parts else ""
        argument = parts[1].decode("utf-8", "replace") if len(parts) > 1 else ""
        if self._rejecting:
            if verb == "QUIT":
                self.sendCode(221, b"2.0.0 Bye")
                self._transport.loseConnection()
            else:
                self.sendCode(503, b"5.5.1 No service here")
            return None
        if verb in ("EHLO", "HELO"):
            self._heloName = argument
        if verb == "RCPT":
            self.server.rcptCount += 1
        spec = self._scripted(verb, argument)
        if spec is not None:
            self._answer(spec)
            return None
        if verb == "MAIL":
            self._mailArgument = argument
        if verb == "DATA" and self._from is not None and self._to:
            self._wire: list[bytes] = []
        return ESMTP.lineReceived(self, line)

    def state_DATA(self, line: bytes) -> None:
        self._wire.append(line)
        return self.dataLineReceived(line)

    def validateFrom(self, helo, origin):
        parameters: list[str] = []
        match = re.match(r"\s*FROM:\s*<[^>]*>\s*(.*)$", self._mailArgument, re.I)
        if match:
            parameters = match.group(1).split()
        self._transaction = ReceivedMessage(str(origin), [], parameters)
        return origin

    def validateTo(self, user):
        cast(Any, self._transaction).recipients.append(str(user.dest))
        return _Discard

    def receivedHeader(self, helo, origin, recipients):
        return None

    def _messageHandled(self, resultList) -> None:
        transaction, self._transaction = self._transaction, None
        assert transaction is not None
        transaction.wire = b"".join(line + b"\r\n" for line in self._wire)
        transaction.data = b"".join(
            (line[1:] if line.startswith(b".") else line) + b"\r\n" for line in self._wire[:-1]
        )
        self.server.finalDots.append(transaction)
        spec = self._scripted("dataEnd", "")
        if isinstance(spec, Deferred):
            spec.addCallback(self._answerDataEnd, transaction)
            return
        self._answerDataEnd(spec, transaction)

    def _answerDataEnd(self, spec: ReplySpec, transaction: ReceivedMessage) -> None:
        if spec is None:
            self.server.queued += 1
            spec = (250, f"2.0.0 Ok: queued as T{self.server.queued}")
        if isinstance(spec, tuple) and 200 <= spec[0] < 300:
            transaction.tls = bool(self.startedTLS)
            transaction.helo = self._heloName
            self.server.messages.append(transaction)
        self._answer(spec)
        if self.server.dropAfterDataEnd:
            self._transport.loseConnection()


class _Factory(ServerFactory):
    def __init__(self, server: SMTPTestServer) -> None:
        self.server = server

    def buildProtocol(self, addr):
        protocol = _ScriptedESMTP(self.server, self.server.contextFactory)
        protocol.factory = self
        return protocol


class SMTPTestServer:
    """
    A scripted, recording SMTP server on a loopback address.

    @ivar messages: the L{ReceivedMessage}s accepted, in order.
    @ivar finalDots: every message whose final dot arrived, in order,
        whatever the reply (a client that never saw the reply may send it
        again; the remote may have delivered it).
    @ivar rcptCount: RCPT commands seen (scripted ones included).
    @ivar commands: every command line received, all connections, in order.
    @ivar connectionsMade: connections accepted so far.
    @ivar host: the address listened on (after L{start}).
    @ivar port: the port listened on (after L{start}).
    """

    def __init__(
        self,
        reactor=None,
        hostname: str = "mx.example.test",
        certificate: CertificateFiles | None = None,
        contextFactory=None,
        replies: dict[str, Responder] | None = None,
        extensions: Mapping[str, str | None] | None = None,
        dropAfterDataEnd: bool = False,
    ) -> None:
        """
        @param reactor: default the global reactor (integration tests).
        @param hostname: the name in the greeting and EHLO reply.
        @param certificate: offer STARTTLS with this certificate.
        @param contextFactory: or offer STARTTLS with this context factory.
        @param replies: stage -> responder; see the module docstring.
        @param extensions: EHLO keywords (value: parameter or L{None});
            default SIZE 10485760, 8BITMIME, ENHANCEDSTATUSCODES.  STARTTLS is
            added when TLS is configured.
        @param dropAfterDataEnd: close the connection right after the reply
            to the final dot (before QUIT).
        """
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.reactor = reactor
        self.hostname = hostname
        if certificate is not None and contextFactory is None:
            from gopherpost.tls import loadServerContextFactory

            contextFactory = loadServerContextFactory(certificate.certPath, certificate.keyPath)
        self.contextFactory = contextFactory
        self.replies: dict[str, Responder] = dict(replies or {})
        self.extensions: dict[str, str | None] = dict(
            DEFAULT_EXTENSIONS if extensions is None else extensions
        )
        self.dropAfterDataEnd = dropAfterDataEnd
        self.messages: list[ReceivedMessage] = []
        self.finalDots: list[ReceivedMessage] = []
        self.rcptCount = 0
        self.commands: list[bytes] = []
        self.queued = 0
        self.host = ""
        self.port = 0
        self._port = None
        self._connections: list[_ScriptedESMTP] = []
        #: Connections accepted so far.
        self.connectionsMade = 0

    @property
    def sessions(self) -> list[_ScriptedESMTP]:
        """
        The connections open right now.
        """
        return list(self._connections)

    def start(self, interface: str = "127.0.0.1", port: int = 0) -> SMTPTestServer:
        """
        Listen on C{interface}, C{port} (default: an ephemeral port).

        @return: C{self}.
        """
        self._port = self.reactor.listenTCP(port, _Factory(self), interface=interface)
        address = cast(Any, self._port).getHost()
        self.host, self.port = address.host, address.port
        return self

    def stop(self) -> Deferred:
        """
        Stop listening and drop every open connection.

        @return: fires once the port and all connections are closed (return
            it from C{addCleanup}).
        """
        waits = []
        if self._port is not None:
            waits.append(self._port.stopListening())
            self._port = None
        for connection in list(self._connections):
            waits.append(connection.lost)
            cast(Any, connection.transport).abortConnection()
        return gatherResults(waits).addCallback(lambda _: None)
