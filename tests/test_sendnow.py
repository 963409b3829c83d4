"""
Tests for L{gopherpost.sendnow}: real TCP connections on 127.0.0.1.
"""

from __future__ import annotations

import select
import socket
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost.sendnow import writeNow


class _Accepted(Protocol):
    """
    The server side: hands its transport over when connected, records
    whether and why the connection was lost.
    """

    def __init__(self, connected: Deferred, lost: Deferred) -> None:
        self._connected = connected
        self._lost = lost

    def connectionMade(self) -> None:
        self._connected.callback(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost.callback(reason.value)


class _AcceptingFactory(ServerFactory):
    """
    Makes one L{_Accepted} per connection.
    """

    def __init__(self, connected: Deferred, lost: Deferred) -> None:
        self._connected = connected
        self._lost = lost

    def buildProtocol(self, addr: object) -> _Accepted:
        protocol = _Accepted(self._connected, self._lost)
        protocol.factory = self
        return protocol


class _Collector(Protocol):
    """
    A Twisted client that collects everything it receives and fires
    C{done} once it holds C{expected} bytes.
    """

    def __init__(self, expected: int, done: Deferred) -> None:
        self.received: list[bytes] = []
        self._count = 0
        self._expected = expected
        self._done = done

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        self._count += len(data)
        if self._count >= self._expected and not self._done.called:
            self._done.callback(b"".join(self.received))


class WriteNowTests(TestCase):
    """
    L{writeNow} on a real TCP connection: C{self.connected} fires with the
    server side's transport.
    """

    def setUp(self) -> None:
        self.connected: Deferred = Deferred()
        self.lost: Deferred = Deferred()
        factory = _AcceptingFactory(self.connected, self.lost)
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        address = self.port.getHost()
        assert isinstance(address, IPv4Address)
        self.portNumber = address.port
        self.addCleanup(self.port.stopListening)
        self.connected.addCallback(self._cleanUpLater)

    def _cleanUpLater(self, transport: Any) -> Any:
        def close() -> Deferred:
            transport.abortConnection()
            return self.lost

        self.addCleanup(close)
        return transport

    def _rawClient(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.portNumber), timeout=10)
        self.addCleanup(client.close)
        return client

    def test_sentBeforeTheReactorRuns(self) -> Deferred:
        """
        With nothing queued, the bytes are on the socket when L{writeNow}
        returns: the peer can read them while this callback still holds the
        reactor, and the transport is not waiting to become writable.
        """
        client = self._rawClient()

        def connected(transport: Any) -> None:
            writeNow(transport, b"220 ready\r\n")
            self.assertNotIn(transport, reactor.getWriters())
            readable, _, _ = select.select([client], [], [], 10)
            self.assertEqual(readable, [client])
            self.assertEqual(client.recv(100), b"220 ready\r\n")

        return self.connected.addCallback(connected)

    def test_orderKeptBehindQueuedData(self) -> Deferred:
        """
        What the kernel does not take is queued, and later writes queue
        behind it: the peer receives everything, in order.
        """
        big = bytes(range(256)) * (4 * 1024 * 1024 // 256)
        done: Deferred = Deferred()
        collector = _Collector(len(big) + 4, done)

        def connected(transport: Any) -> None:
            writeNow(transport, big)
            # One send takes at most Twisted's SEND_LIMIT: the rest is queued.
            self.assertIn(transport, reactor.getWriters())
            writeNow(transport, b"tail")

        self.connected.addCallback(connected)
        connecting = connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.portNumber), collector
        )
        connecting.addCallback(lambda client: self.addCleanup(client.transport.abortConnection))
        return done.addCallback(lambda data: self.assertEqual(data, big + b"tail"))

    def test_resetConnection(self) -> Deferred:
        """
        Writing to a connection the peer has reset does not raise: the
        connection is lost through Twisted's usual path.
        """
        client = self._rawClient()

        def connected(transport: Any) -> Deferred:
            # SO_LINGER 0: closing sends a reset instead of a FIN.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            writeNow(transport, b"250 ok\r\n")
            writeNow(transport, b"250 ok\r\n")
            # Whichever of the write or the read meets the reset first takes
            # the error; the other then finds the connection closed.
            return self.lost.addCallback(
                lambda reason: self.assertIsInstance(reason, (ConnectionLost, ConnectionDone))
            )

        return self.connected.addCallback(connected)


class FallbackTests(SynchronousTestCase):
    """
    Transports that are not plain TCP connections get C{write}.
    """

    def test_otherTransport(self) -> None:
        """
        A test transport receives the data through C{write}.
        """
        transport = StringTransport()
        writeNow(transport, b"hello")
        self.assertEqual(transport.value(), b"hello")
