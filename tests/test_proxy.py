"""
Tests for L{gopherpost.listeners.proxy}: the PROXY header parser, and the
wrapper that holds a listener's protocol back until the header is read,
over L{StringTransport} with a L{Clock}.  (Real HAProxy in front: see
L{tests.test_haproxy}.)
"""

from __future__ import annotations

import random
import socket
import struct

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost.listeners.proxy import (
    HEADER_TIMEOUT,
    InvalidProxyHeader,
    ProxyHeader,
    ProxyProtocolFactory,
    parseProxyHeader,
)

BALANCER = IPv4Address("TCP", "10.0.0.5", 40001)
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(
    command: int = 1,
    family: int = 1,
    transport: int = 1,
    addresses: bytes | None = None,
    tlvs: bytes = b"",
) -> bytes:
    """
    A v2 header: PROXY (1) or LOCAL (0), over TCP/IPv4 by default, from
    192.0.2.10:50000 to 198.51.100.1:25.
    """
    if addresses is None:
        if family == 2:
            addresses = (
                socket.inet_pton(socket.AF_INET6, "2001:db8::10")
                + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
                + struct.pack("!HH", 50000, 25)
            )
        else:
            addresses = socket.inet_aton("192.0.2.10") + socket.inet_aton("198.51.100.1")
            addresses += struct.pack("!HH", 50000, 25)
    block = addresses + tlvs
    return (
        SIGNATURE + struct.pack("!BBH", 0x20 | command, family << 4 | transport, len(block)) + block
    )


class ParserTests(SynchronousTestCase):
    """
    L{parseProxyHeader}.
    """

    def test_v1TCP4(self) -> None:
        """
        A v1 TCP4 header gives both addresses and its length.
        """
        data = b"PROXY TCP4 192.0.2.10 198.51.100.1 50000 25\r\nEHLO x\r\n"
        header, length = parseProxyHeader(data)  # type: ignore[misc]
        self.assertEqual(
            header,
            ProxyHeader(
                1,
                IPv4Address("TCP", "192.0.2.10", 50000),
                IPv4Address("TCP", "198.51.100.1", 25),
            ),
        )
        self.assertEqual(data[length:], b"EHLO x\r\n")

    def test_v1TCP6(self) -> None:
        """
        A v1 TCP6 header, addresses in canonical form.
        """
        header, _ = parseProxyHeader(  # type: ignore[misc]
            b"PROXY TCP6 2001:DB8:0::10 2001:db8::1 50000 587\r\n"
        )
        self.assertEqual(header.source, IPv6Address("TCP", "2001:db8::10", 50000))
        self.assertEqual(header.destination, IPv6Address("TCP", "2001:db8::1", 587))

    def test_v1Unknown(self) -> None:
        """
        C{PROXY UNKNOWN} (anything after it ignored) names no client.
        """
        for data in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"):
            self.assertEqual(parseProxyHeader(data), (ProxyHeader(1, None, None), len(data)))

    def test_v2IPv4(self) -> None:
        """
        A v2 PROXY header over TCP/IPv4; TLVs after the addresses are
        skipped.
        """
        data = v2(tlvs=b"\x04\x00\x02ab") + b"rest"
        header, length = parseProxyHeader(data)  # type: ignore[misc]
        self.assertEqual(header.version, 2)
        self.assertEqual(header.source, IPv4Address("TCP", "192.0.2.10", 50000))
        self.assertEqual(header.destination, IPv4Address("TCP", "198.51.100.1", 25))
        self.assertEqual(data[length:], b"rest")

    def test_v2IPv6(self) -> None:
        """
        A v2 PROXY header over TCP/IPv6.
        """
        header, _ = parseProxyHeader(v2(family=2))  # type: ignore[misc]
        self.assertEqual(header.source, IPv6Address("TCP", "2001:db8::10", 50000))

    def test_v2Local(self) -> None:
        """
        A v2 LOCAL header (a balancer's health check) names no client,
        whatever its address block holds.
        """
        for data in (v2(command=0, family=0, transport=0, addresses=b""), v2(command=0)):
            self.assertEqual(parseProxyHeader(data), (ProxyHeader(2, None, None), len(data)))

    def test_v2Unspecified(self) -> None:
        """
        PROXY over an unspecified or UNIX family names no IP client.
        """
        self.assertEqual(
            parseProxyHeader(v2(family=0, transport=0, addresses=b""))[0],  # type: ignore[index]
            ProxyHeader(2, None, None),
        )
        unix = v2(family=3, addresses=b"\x00" * 216)
        self.assertEqual(parseProxyHeader(unix)[0].source, None)  # type: ignore[index]

    def test_incomplete(self) -> None:
        """
        Every proper prefix of a header is "not yet": L{None}.
        """
        for data in (b"PROXY TCP4 192.0.2.10 198.51.100.1 50000 25\r\n", v2(), v2(family=2)):
            for end in range(len(data)):
                self.assertIsNone(parseProxyHeader(data[:end]), (data, end))

    def test_invalid(self) -> None:
        """
        What is not a PROXY header is refused at once, with a reason.
        """
        cases = [
            b"EHLO client.test\r\n",
            b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
            b"PROXY TCP4 192.0.2.10 198.51.100.1 50000\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 50000 25 extra\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 50000 25\r\n",
            b"PROXY TCP6 192.0.2.10 2001:db8::1 50000 25\r\n",
            b"PROXY TCP4 192.0.2.300 198.51.100.1 50000 25\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 70000 25\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 050000 25\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 25\r\n",
            b"PROXY UDP4 192.0.2.10 198.51.100.1 1 25\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 50000 25\n",
            b"PROXY " + b"X" * 200,
            SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
            SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
            v2(transport=2),  # UDP
            v2(family=4),
            v2(addresses=b"\x00" * 8),  # too short for IPv4
            v2(family=2, addresses=b"\x00" * 12),  # too short for IPv6
        ]
        for data in cases:
            error = self.assertRaises(InvalidProxyHeader, parseProxyHeader, data)
            self.assertTrue(str(error), data)
            self.assertNotIn("\n", str(error))

    def test_randomBytesNeverCrash(self) -> None:
        """
        Seeded random and mutated headers only ever give a header, L{None}
        or L{InvalidProxyHeader}.
        """
        rng = random.Random(1313)
        seeds = [b"PROXY TCP4 192.0.2.10 198.51.100.1 50000 25\r\n", v2(), v2(family=2)]
        for _ in range(3000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = data[: rng.randint(0, len(data))]
            try:
                parseProxyHeader(bytes(data))
            except InvalidProxyHeader:
                pass


class Recorder(Protocol):
    """
    The listener's protocol: what it saw.
    """

    def __init__(self) -> None:
        self.peer: object = None
        self.host: object = None
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.peer = self.transport.getPeer()
        self.host = self.transport.getHost()
        self.transport.write(b"220 banner\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


def factoryOf(protocol: Protocol) -> Factory:
    """
    A factory that builds C{protocol}.
    """
    return Factory.forProtocol(lambda: protocol)


class WrapperTests(TestCase):
    """
    L{ProxyProtocolFactory}: nothing reaches the listener's protocol before
    the header, and afterwards the header's client is the peer.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.inner = Recorder()
        self.factory = ProxyProtocolFactory(factoryOf(self.inner), self.clock, "haproxy:tcp:25")
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.transport = StringTransport(peerAddress=BALANCER)
        self.protocol = self.factory.buildProtocol(BALANCER)
        assert self.protocol is not None
        self.protocol.makeConnection(self.transport)

    def warnings(self) -> list[dict]:
        return [
            e
            for e in self.observer
            if e.get("log_namespace") == "gopherpost.listeners.proxy"
            and e["log_level"] == LogLevel.warn
        ]

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))

    def test_nothingBeforeHeader(self) -> None:
        """
        Until the header is complete the listener's protocol is not even
        connected: no banner.
        """
        self.protocol.dataReceived(b"PROXY TCP4 192.0.2.10 198.51.100.1 ")
        self.assertIsNone(self.inner.peer)
        self.assertEqual(self.transport.value(), b"")

    def test_headerThenSession(self) -> None:
        """
        After the header the protocol starts, sees the header's client as
        its peer and the header's destination as its host, and gets the
        bytes that followed the header in the same read.
        """
        self.protocol.dataReceived(
            b"PROXY TCP4 192.0.2.10 198.51.100.1 50000 25\r\nEHLO c.test\r\n"
        )
        self.assertEqual(self.inner.peer, IPv4Address("TCP", "192.0.2.10", 50000))
        self.assertEqual(self.inner.host, IPv4Address("TCP", "198.51.100.1", 25))
        self.assertEqual(self.inner.received, b"EHLO c.test\r\n")
        self.assertEqual(self.transport.value(), b"220 banner\r\n")
        self.protocol.dataReceived(b"QUIT\r\n")
        self.assertEqual(self.inner.received, b"EHLO c.test\r\nQUIT\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.lose()
        self.assertIsNotNone(self.inner.lost)
        self.assertEqual(self.warnings(), [])

    def test_byteByByte(self) -> None:
        """
        A v2 header arriving one byte per read is read as well (Twisted's
        own wrapper drops a first read shorter than 16 bytes).
        """
        for byte in v2(family=2):
            self.protocol.dataReceived(bytes([byte]))
        self.assertEqual(self.inner.peer, IPv6Address("TCP", "2001:db8::10", 50000))

    def test_localKeepsBalancer(self) -> None:
        """
        A LOCAL header (a health check) leaves the balancer as the peer.
        """
        self.protocol.dataReceived(v2(command=0, family=0, transport=0, addresses=b""))
        self.assertEqual(self.inner.peer, BALANCER)

    def test_malformed(self) -> None:
        """
        A connection that does not start with a PROXY header (a client
        speaking SMTP to the balancer's port directly) is closed without a
        greeting, logged once with the balancer's address.
        """
        self.protocol.dataReceived(b"EHLO client.test\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")
        self.assertIsNone(self.inner.peer)
        [warning] = self.warnings()
        self.assertEqual(warning["balancer"], "10.0.0.5:40001")
        self.assertEqual(warning["listener"], "haproxy:tcp:25")
        self.assertIn("does not start with a PROXY header", warning["why"])
        self.protocol.dataReceived(b"more\r\n")
        self.lose()
        self.assertIsNone(self.inner.lost)
        self.assertEqual(len(self.warnings()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_late(self) -> None:
        """
        No header within L{HEADER_TIMEOUT} seconds: closed, logged.
        """
        self.clock.advance(HEADER_TIMEOUT - 0.1)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")
        [warning] = self.warnings()
        self.assertIn("no PROXY header within 5 s", warning["why"])

    def test_short(self) -> None:
        """
        Half a header and then silence: closed at the deadline, logged as
        incomplete; the deadline counts from the connection, not from the
        last byte.
        """
        self.clock.advance(3)
        self.protocol.dataReceived(b"PROXY TCP4 192.0.2.10")
        self.clock.advance(2)
        self.assertTrue(self.transport.disconnecting)
        [warning] = self.warnings()
        self.assertIn("incomplete", warning["why"])

    def test_closedMidHeader(self) -> None:
        """
        A peer that closes in the middle of its header is noted (not a
        warning); one that closes without sending anything (a TCP health
        check) is not logged at all.
        """
        self.protocol.dataReceived(b"PROXY ")
        self.lose()
        self.assertEqual(self.warnings(), [])
        self.assertEqual(
            len([e for e in self.observer if "middle of its PROXY header" in e["log_format"]]), 1
        )
        other = self.factory.buildProtocol(BALANCER)
        assert other is not None
        other.makeConnection(StringTransport(peerAddress=BALANCER))
        before = len(self.observer)
        other.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.observer), before)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_splitInvariance(self) -> None:
        """
        The same bytes split anywhere give the same peer and the same data.
        """
        data = v2(tlvs=b"\x04\x00\x01z") + b"EHLO c.test\r\nQUIT\r\n"
        rng = random.Random(25)
        for _ in range(50):
            inner = Recorder()
            factory = ProxyProtocolFactory(factoryOf(inner), Clock())
            protocol = factory.buildProtocol(BALANCER)
            assert protocol is not None
            protocol.makeConnection(StringTransport(peerAddress=BALANCER))
            cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 6)))
            for start, end in zip([0] + cuts, cuts + [len(data)]):
                protocol.dataReceived(data[start:end])
            self.assertEqual(inner.peer, IPv4Address("TCP", "192.0.2.10", 50000))
            self.assertEqual(inner.received, b"EHLO c.test\r\nQUIT\r\n")
