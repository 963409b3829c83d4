"""
Tests for L{gopherpost.listeners.implicittls}: the implicit-TLS listener's
handshake deadline, over L{StringTransport} with a L{Clock}.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from gopherpost.listeners.implicittls import ImplicitTLSFactory
from gopherpost.tls import loadServerContextFactory
from tests.support.certs import makeTestPKI

CLIENT = IPv4Address("TCP", "192.0.2.7", 40000)


class Banner(Protocol):
    """
    Greets at once, as an SMTP session does (the greeting waits inside TLS
    until the handshake is done).
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"220 mx.example.test ESMTP\r\n")


class HandshakeDeadlineTests(TestCase):
    """
    L{ImplicitTLSFactory} aborts connections whose handshake is late.
    """

    def setUp(self) -> None:
        pki = makeTestPKI(self.mktemp(), "mx.example.test")
        self.tls = loadServerContextFactory(pki.good.certPath, pki.good.keyPath)
        self.clock = Clock()
        self.factory = ImplicitTLSFactory(
            self.tls, Factory.forProtocol(Banner), self.clock, 30, "tcp:465"
        )
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.connections: list[Protocol] = []

    def connect(self) -> tuple[Protocol, StringTransport]:
        protocol = self.factory.buildProtocol(CLIENT)
        assert protocol is not None
        transport = StringTransport(peerAddress=CLIENT)
        protocol.makeConnection(transport)
        self.connections.append(protocol)
        return protocol, transport

    def tearDown(self) -> None:
        for protocol in self.connections:
            if protocol.transport is not None:
                protocol.connectionLost(Failure(ConnectionDone()))

    def test_silentClient(self) -> None:
        """
        A client that never sends its ClientHello (or half of it) is cut
        off when the deadline passes, without its greeting, and noted once.
        """
        for data in (b"", b"\x16\x03\x01\x00"):
            protocol, transport = self.connect()
            if data:
                protocol.dataReceived(data)
            self.clock.advance(29)
            self.assertFalse(transport.disconnecting)
            self.clock.advance(1)
            self.assertTrue(transport.disconnecting)
            self.assertNotIn(b"220", transport.value())
        notes = [e for e in self.observer if "not done within" in e.get("log_format", "")]
        self.assertEqual(len(notes), 2)
        self.assertEqual(notes[0]["client"], "192.0.2.7")
        self.assertEqual(notes[0]["listener"], "tcp:465")

    def test_handshakeInTime(self) -> None:
        """
        A client that completes the handshake keeps its connection after the
        deadline, and reads the greeting.
        """
        protocol, transport = self.connect()
        client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        client.set_connect_state()
        for _ in range(10):
            try:
                client.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                protocol.dataReceived(client.bio_read(65536))
            except SSL.WantReadError:
                pass
            if transport.value():
                client.bio_write(transport.value())
                transport.clear()
        self.assertEqual(client.recv(1024), b"220 mx.example.test ESMTP\r\n")
        self.clock.advance(60)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lostCancelsDeadline(self) -> None:
        """
        A connection lost before the deadline leaves no timer behind.
        """
        protocol, _ = self.connect()
        protocol.connectionLost(Failure(ConnectionDone()))
        protocol.transport = None
        self.assertEqual(self.clock.getDelayedCalls(), [])
