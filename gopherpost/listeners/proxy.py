# -*- test-case-name: tests.test_proxy -*-
"""
The PROXY protocol (HAProxy's, versions 1 and 2) in front of a listener
(C{haproxy:} endpoints).

A load balancer opens each connection with a header naming the client it
relays.  L{ProxyProtocolFactory} reads that header before the wrapped
protocol even starts: no banner is sent and no access decision is made
until it is parsed, and from then on the transport's C{getPeer()} is the
client named in the header, so the allow-list, relay permission, per-IP
limits, logs and the C{Received:} header all see the real client.  A
connection whose header is malformed, missing or later than
L{HEADER_TIMEOUT} is closed without a word and logged with the balancer's
address.

Twisted's own wrapper (C{twisted.protocols.haproxy.proxyEndpoint}) starts
the wrapped protocol at once, has no deadline and logs nothing, and its
classes are private: this module parses the header itself (the format is
small and fixed: U{https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt}).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

__all__ = [
    "HEADER_TIMEOUT",
    "InvalidProxyHeader",
    "ProxyHeader",
    "parseProxyHeader",
    "ProxyProtocolFactory",
]

_log = Logger(namespace="gopherpost.listeners.proxy")

#: Seconds a connection may take to send its whole PROXY header.
HEADER_TIMEOUT = 5.0

_V1_PREFIX = b"PROXY "
#: The longest v1 header, CRLF included (the specification's limit).
_V1_MAX = 107
_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16
_V2_ADDRESS_LENGTHS = {0x1: 12, 0x2: 36, 0x3: 216}


class InvalidProxyHeader(ValueError):
    """
    The bytes are not a PROXY header; the message says why, in one line.
    """


@dataclass(frozen=True)
class ProxyHeader:
    """
    A parsed PROXY header.

    @ivar version: 1 or 2.
    @ivar source: the client's address, or L{None} when the header names
        none (v1 C{UNKNOWN}, v2 C{LOCAL} such as a balancer's health check,
        or a family without IP addresses): the connection's own address
        stands.
    @ivar destination: the address the client connected to, or L{None}.
    """

    version: int
    source: IPv4Address | IPv6Address | None
    destination: IPv4Address | IPv6Address | None


def _startsLike(data: bytes, prefix: bytes) -> bool:
    return data[: len(prefix)] == prefix[: len(data)]


def _v1Port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or (len(raw) > 1 and raw[:1] == b"0"):
        raise InvalidProxyHeader(f"bad port {raw[:8]!r} in a v1 header")
    port = int(raw)
    if port > 65535:
        raise InvalidProxyHeader(f"bad port {port} in a v1 header")
    return port


def _v1Address(raw: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidProxyHeader(f"bad address {raw[:48]!r} in a v1 header") from None
    if address.version != version:
        raise InvalidProxyHeader(f"{address} is not an IPv{version} address")
    return str(address)


def _parseV1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, _V1_MAX)
    if end < 0:
        if b"\n" in data[:_V1_MAX]:
            raise InvalidProxyHeader("a v1 header must end with CRLF")
        if len(data) >= _V1_MAX:
            raise InvalidProxyHeader(f"no CRLF within {_V1_MAX} bytes of a v1 header")
        return None
    fields = data[:end].split(b" ")
    protocol = fields[1] if len(fields) > 1 else b""
    if protocol == b"UNKNOWN":
        return ProxyHeader(1, None, None), end + 2
    if protocol not in (b"TCP4", b"TCP6"):
        raise InvalidProxyHeader(f"unknown v1 protocol {protocol[:16]!r}")
    if len(fields) != 6:
        raise InvalidProxyHeader("a v1 TCP header has six fields")
    version = 4 if protocol == b"TCP4" else 6
    kind = IPv4Address if version == 4 else IPv6Address
    source = kind("TCP", _v1Address(fields[2], version), _v1Port(fields[4]))
    destination = kind("TCP", _v1Address(fields[3], version), _v1Port(fields[5]))
    return ProxyHeader(1, source, destination), end + 2


def _parseV2(data: bytes) -> tuple[ProxyHeader, int] | None:
    if len(data) < _V2_FIXED:
        return None
    versionCommand, familyProtocol, length = struct.unpack("!BBH", data[12:16])
    if versionCommand >> 4 != 2:
        raise InvalidProxyHeader(f"unknown version {versionCommand >> 4} in a v2 header")
    command = versionCommand & 0x0F
    if command not in (0, 1):
        raise InvalidProxyHeader(f"unknown command {command} in a v2 header")
    total = _V2_FIXED + length
    if len(data) < total:
        return None
    family, transport = familyProtocol >> 4, familyProtocol & 0x0F
    if command == 0:
        # LOCAL: the balancer's own connection (a health check); the
        # address block, if any, is to be ignored.
        return ProxyHeader(2, None, None), total
    if family not in (0, 1, 2, 3):
        raise InvalidProxyHeader(f"unknown address family {family} in a v2 header")
    if transport not in (0, 1):
        raise InvalidProxyHeader("a v2 header for a datagram connection")
    if family in (0, 3):
        return ProxyHeader(2, None, None), total
    if length < _V2_ADDRESS_LENGTHS[family]:
        raise InvalidProxyHeader(f"a v2 address block of {length} bytes is too short")
    block = data[_V2_FIXED:total]
    source: IPv4Address | IPv6Address
    destination: IPv4Address | IPv6Address
    if family == 1:
        sourceIP, destinationIP, sourcePort, destinationPort = struct.unpack("!4s4sHH", block[:12])
        source = IPv4Address("TCP", str(ipaddress.IPv4Address(sourceIP)), sourcePort)
        destination = IPv4Address("TCP", str(ipaddress.IPv4Address(destinationIP)), destinationPort)
    else:
        sourceIP, destinationIP, sourcePort, destinationPort = struct.unpack(
            "!16s16sHH", block[:36]
        )
        source = IPv6Address("TCP", str(ipaddress.IPv6Address(sourceIP)), sourcePort)
        destination = IPv6Address("TCP", str(ipaddress.IPv6Address(destinationIP)), destinationPort)
    return ProxyHeader(2, source, destination), total


def parseProxyHeader(data: bytes) -> tuple[ProxyHeader, int] | None:
    """
    Parse the PROXY header at the start of C{data}.

    @return: C{(header, length)}, the header and how many bytes of C{data}
        it took; or L{None} when C{data} is the beginning of a header that
        is not complete yet.
    @raise InvalidProxyHeader: C{data} does not start with a PROXY header.
    """
    if _startsLike(data, _V2_SIGNATURE):
        return _parseV2(data)
    if _startsLike(data, _V1_PREFIX):
        if len(data) < len(_V1_PREFIX):
            return None
        return _parseV1(data)
    raise InvalidProxyHeader("the connection does not start with a PROXY header")


def _describe(address: IAddress) -> str:
    host = getattr(address, "host", None)
    if host is None:
        return str(address)
    port = getattr(address, "port", 0)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@implementer(IHandshakeListener)
class _ProxyProtocolWrapper(ProtocolWrapper):
    """
    One connection behind a balancer: holds the wrapped protocol back until
    the PROXY header is parsed.  The end of a STARTTLS handshake is passed
    on (the session then knows it is encrypted).
    """

    factory: ProxyProtocolFactory

    def __init__(self, factory: ProxyProtocolFactory, wrappedProtocol: Any) -> None:
        ProtocolWrapper.__init__(self, cast(Any, factory), wrappedProtocol)
        self._buffer = b""
        self._header: ProxyHeader | None = None
        self._started = False
        self._closing = False
        self._deadline: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        """
        Connected: wait for the header (the wrapped protocol is connected
        only once it has been parsed).
        """
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._deadline = self.factory.clock.callLater(self.factory.timeout, self._timedOut)

    def handshakeCompleted(self) -> None:
        """
        A TLS handshake (STARTTLS) finished: tell the wrapped protocol.
        """
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        """
        Read the header, then pass everything on.
        """
        if self._started:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._closing:
            return
        self._buffer += data
        try:
            parsed = parseProxyHeader(self._buffer)
        except InvalidProxyHeader as e:
            self._refuse(str(e))
            return
        if parsed is None:
            return
        self._header, length = parsed
        rest, self._buffer = self._buffer[length:], b""
        self._cancelDeadline()
        self._started = True
        self.wrappedProtocol.makeConnection(cast(Any, self))
        if rest:
            self.wrappedProtocol.dataReceived(rest)

    def _timedOut(self) -> None:
        self._deadline = None
        if not self._buffer:
            why = f"no PROXY header within {self.factory.timeout:g} s"
        else:
            why = f"PROXY header incomplete after {self.factory.timeout:g} s"
        self._refuse(why)

    def _refuse(self, why: str) -> None:
        self._closing = True
        self._cancelDeadline()
        _log.warn(
            "Closed the connection from {balancer} on {listener} without a greeting: {why}",
            balancer=_describe(self._connection().getPeer()),
            listener=self.factory.description,
            why=why,
        )
        self._connection().loseConnection()

    def _cancelDeadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def getPeer(self) -> IAddress:
        """
        The client named in the PROXY header (else the connection's peer).
        """
        if self._header is not None and self._header.source is not None:
            return self._header.source
        return self._connection().getPeer()

    def getHost(self) -> IAddress:
        """
        The address the client connected to, as the header says (else ours).
        """
        if self._header is not None and self._header.destination is not None:
            return self._header.destination
        return self._connection().getHost()

    def _connection(self) -> Any:
        """
        The balancer's connection.
        """
        assert self.transport is not None
        return self.transport

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Pass the loss on to the wrapped protocol if it ever started.
        """
        self._cancelDeadline()
        if not self._started and not self._closing and self._buffer:
            _log.info(
                "The connection from {balancer} on {listener} closed in the middle of its PROXY header",
                balancer=_describe(self._connection().getPeer()),
                listener=self.factory.description,
            )
        self.factory.unregisterProtocol(self)
        if self._started:
            self.wrappedProtocol.connectionLost(reason)
        self.wrappedProtocol = None  # type: ignore[assignment]


class ProxyProtocolFactory(WrappingFactory):
    """
    Wraps a listener's factory: each connection starts with a PROXY header
    (v1 or v2) naming the real client.

    @ivar clock: schedules the header deadline.
    @ivar timeout: seconds the whole header may take.
    @ivar description: the listener, for log lines (its endpoint string).
    """

    protocol = _ProxyProtocolWrapper
    noisy = False

    def __init__(
        self,
        wrappedFactory: Any,
        clock: IReactorTime,
        description: str = "a haproxy: listener",
        timeout: float = HEADER_TIMEOUT,
    ) -> None:
        super().__init__(wrappedFactory)
        self.clock = clock
        self.timeout = timeout
        self.description = description

    def logPrefix(self) -> str:
        """
        The wrapped factory's prefix, marked as behind PROXY.
        """
        inner = getattr(self.wrappedFactory, "logPrefix", None)
        prefix = inner() if callable(inner) else type(self.wrappedFactory).__name__
        return f"{prefix} (PROXY)"
