"""
STARTTLS at both ends for certificate tests.

L{STARTTLSClient} is a small blocking SMTP client that does STARTTLS and
checks the server's certificate the way a verifying MTA does (against given
roots and a host name), then keeps the session open for more commands: use
it in a thread (C{deferToThread}), never on the reactor.
L{listenMinimalSTARTTLS} serves just enough SMTP to offer STARTTLS with a
given context factory.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, BinaryIO

from cryptography import x509
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

__all__ = ["STARTTLSClient", "listenMinimalSTARTTLS"]


class STARTTLSClient:
    """
    One SMTP session with STARTTLS.

    @ivar banner: the greeting.
    @ivar certificate: the server's certificate, once TLS is up.
    """

    def __init__(
        self,
        port: int,
        serverName: str,
        rootPEM: bytes | None,
        host: str = "127.0.0.1",
        timeout: float = 15.0,
    ) -> None:
        """
        Connect, read the greeting, EHLO, STARTTLS and EHLO again.

        @param serverName: the name the certificate must be valid for (and
            the SNI sent).
        @param rootPEM: the roots to trust; L{None} encrypts without
            checking anything.
        @raise ssl.SSLCertVerificationError: the certificate does not verify.
        @raise AssertionError: the server does not offer or accept STARTTLS.
        """
        self._socket = socket.create_connection((host, port), timeout=timeout)
        self._file: BinaryIO = self._socket.makefile("rb")
        self.banner = self._reply()
        code, text = self.command("EHLO probe.test")
        if code != 250 or "STARTTLS" not in text.upper():
            raise AssertionError(f"no STARTTLS offered: {code} {text}")
        code, text = self.command("STARTTLS")
        if code != 220:
            raise AssertionError(f"STARTTLS refused: {code} {text}")
        if rootPEM is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cadata=rootPEM.decode("ascii"))
        self._socket = context.wrap_socket(self._socket, server_hostname=serverName)
        self._file = self._socket.makefile("rb")
        der = self._socket.getpeercert(binary_form=True)
        assert der is not None
        self.certificate = x509.load_der_x509_certificate(der)
        code, text = self.command("EHLO probe.test")
        if code != 250:
            raise AssertionError(f"EHLO after STARTTLS: {code} {text}")

    def _reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self._file.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), "\n".join(lines)

    def command(self, line: str) -> tuple[int, str]:
        """
        Send one command and read its reply.
        """
        self._socket.sendall(line.encode("utf-8") + b"\r\n")
        return self._reply()

    def close(self) -> None:
        """
        QUIT and close.
        """
        try:
            self.command("QUIT")
        except OSError:
            pass
        self._file.close()
        self._socket.close()


class _MinimalSTARTTLS(LineReceiver):
    """
    Just enough SMTP for a STARTTLS client: a greeting, EHLO offering
    STARTTLS, STARTTLS with the factory's context factory, NOOP, QUIT.
    """

    def connectionMade(self) -> None:
        self.sendLine(b"220 minimal.test ESMTP")

    def lineReceived(self, line: bytes) -> None:
        command = line.split(b" ", 1)[0].upper()
        factory: Any = self.factory
        if command == b"EHLO":
            self.sendLine(b"250-minimal.test")
            self.sendLine(b"250 STARTTLS")
        elif command == b"STARTTLS":
            self.sendLine(b"220 2.0.0 go ahead")
            transport: Any = self.transport
            transport.startTLS(factory.contextFactory)
        elif command == b"NOOP":
            self.sendLine(b"250 2.0.0 OK")
        elif command == b"QUIT":
            self.sendLine(b"221 2.0.0 bye")
            assert self.transport is not None
            self.transport.loseConnection()
        else:
            self.sendLine(b"502 5.5.2 not here")


def listenMinimalSTARTTLS(testCase: Any, contextFactory: Any) -> int:
    """
    Listen on a loopback port with L{_MinimalSTARTTLS} (closed at cleanup).

    @return: the port.
    """
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    factory: Any = Factory.forProtocol(_MinimalSTARTTLS)
    factory.contextFactory = contextFactory
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    number: int = port.getHost().port
    return number
