# -*- test-case-name: tests.test_dns -*-
"""
A loopback authoritative DNS server for tests.

Tests never use the machine's resolver and never resolve a real name: they
start a L{DNSTestServer} on 127.0.0.1, fill in C{.test} (and reverse) zones,
and point the code under test at L{DNSTestServer.address}.

The server is built on L{twisted.names.server.DNSServerFactory} and answers
on UDP and TCP on the same ephemeral port, so resolvers that retry over TCP
after a truncated UDP answer work.  Typical use from a trial test::

    server = startDNSServer(self)          # stopped by addCleanup
    server.addA("mx.example.test", "127.0.0.2")
    server.addMX("example.test", 10, "mx.example.test")
    resolver = Resolver([server.address], reactor)

Names are matched case-insensitively and may be given with or without the
trailing dot.  L{DNSTestServer.markSecure} makes the server answer for some
names as a validating resolver does for a signed zone: with the AD bit set,
when the query set DO or AD (RFC 6840 section 5.7); L{DNSTestServer.addTLSA}
adds the TLSA records DANE reads.  A name inside one of the zones that has no records (and no
records below it) answers NXDOMAIN; a name with records of other types
answers NOERROR with an empty answer section (dnspython's C{NoAnswer}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorUDP
from twisted.names import common, dns, server
from twisted.names.error import AuthoritativeDomainError, DomainError
from twisted.python.failure import Failure

__all__ = [
    "DEFAULT_ZONES",
    "Record_TLSA",
    "DNSTestServer",
    "TestAuthority",
    "splitTXT",
    "startDNSServer",
]

#: The zones a L{DNSTestServer} is authoritative for unless told otherwise.
DEFAULT_ZONES = ("test", "in-addr.arpa", "ip6.arpa")

_TTL = 60

#: The TLSA record type (RFC 6698), which L{twisted.names} does not know.
TLSA = 52


class Record_TLSA(dns.UnknownRecord):
    """
    A TLSA record (RFC 6698): certificate usage, selector, matching type
    and the certificate association data, sent as they are.
    """

    TYPE = TLSA  # type: ignore[assignment]
    fancybasename = "TLSA"

    def __init__(self, usage: int, selector: int, matchingType: int, data: bytes) -> None:
        dns.UnknownRecord.__init__(self, bytes([usage, selector, matchingType]) + data)


Record = (
    dns.Record_A
    | dns.Record_AAAA
    | dns.Record_MX
    | dns.Record_PTR
    | dns.Record_TXT
    | dns.Record_CNAME
    | Record_TLSA
)


def _key(name: str | bytes) -> bytes:
    """
    Normalise a domain name: bytes, lower case, no trailing dot.
    """
    if isinstance(name, str):
        name = name.encode("ascii") if name.isascii() else name.encode("idna")
    return name.rstrip(b".").lower()


def splitTXT(text: str | bytes) -> list[bytes]:
    """
    Split a TXT value into the 255-octet character-strings DNS allows.

    @param text: the whole value, e.g. a DKIM key record.
    @return: the strings, in order; their concatenation is C{text}.
    """
    data = text.encode("ascii") if isinstance(text, str) else text
    if not data:
        return [b""]
    return [data[i : i + 255] for i in range(0, len(data), 255)]


class _ServerFailure(Exception):
    """
    Raised by L{TestAuthority} for a name configured to answer SERVFAIL.
    """


def _addSwitch(switches: dict[bytes, set[int] | None], key: bytes, rdtype: str | None) -> None:
    if rdtype is None:
        switches[key] = None
        return
    types = switches.setdefault(key, set())
    if types is not None:
        types.add(getattr(dns, rdtype.upper()))


def _switched(switches: dict[bytes, set[int] | None], key: bytes, type: int) -> bool:
    if key not in switches:
        return False
    types = switches[key]
    return types is None or type in types


class TestAuthority(common.ResolverBase):
    """
    An in-memory authority for a few zones, with switches for failures.

    @ivar zones: the zone origins (normalised) this authority answers for.
    """

    def __init__(self, zones: Sequence[str] = DEFAULT_ZONES) -> None:
        common.ResolverBase.__init__(self)
        self.zones: tuple[bytes, ...] = tuple(_key(z) for z in zones)
        self._records: dict[bytes, list[Record]] = {}
        self._servfail: dict[bytes, set[int] | None] = {}
        self._silent: dict[bytes, set[int] | None] = {}
        self._secure: set[bytes] = set()
        self.queries: list[tuple[bytes, int]] = []

    def addRecord(self, name: str | bytes, record: Record) -> None:
        """
        Add one record under C{name}, which must lie in one of the zones.
        """
        key = _key(name)
        if self._zoneOf(key) is None:
            raise ValueError(f"{name!r} is not in any of the zones {self.zones!r}")
        record.ttl = _TTL
        self._records.setdefault(key, []).append(record)

    def removeName(self, name: str | bytes) -> None:
        """
        Forget every record of C{name} and any failure switch for it.
        """
        key = _key(name)
        self._records.pop(key, None)
        self._servfail.pop(key, None)
        self._silent.pop(key, None)

    def failWithServFail(self, name: str | bytes, rdtype: str | None = None) -> None:
        """
        Make queries for C{name} answer SERVFAIL.

        @param rdtype: only queries of this type (e.g. C{"AAAA"}); default
            all.
        """
        _addSwitch(self._servfail, _key(name), rdtype)

    def dropQueries(self, name: str | bytes, rdtype: str | None = None) -> None:
        """
        Never answer queries for C{name}, so that clients time out.

        @param rdtype: only queries of this type (e.g. C{"AAAA"}); default
            all.
        """
        _addSwitch(self._silent, _key(name), rdtype)

    def markSecure(self, name: str | bytes) -> None:
        """
        Answer for C{name} and every name below it as for a DNSSEC-signed
        zone that validated: with the AD bit (see L{isSecure}).
        """
        self._secure.add(_key(name))

    def isSecure(self, name: str | bytes) -> bool:
        """
        Whether answers about C{name} carry the AD bit.
        """
        key = _key(name)
        return any(key == s or key.endswith(b"." + s) for s in self._secure)

    def _zoneOf(self, key: bytes) -> bytes | None:
        for zone in self.zones:
            if key == zone or key.endswith(b"." + zone):
                return zone
        return None

    def _exists(self, key: bytes) -> bool:
        if key in self._records:
            return True
        suffix = b"." + key
        return any(owner.endswith(suffix) for owner in self._records)

    def _soa(self, zone: bytes) -> dns.RRHeader:
        return dns.RRHeader(
            name=zone,
            type=dns.SOA,
            ttl=_TTL,
            auth=True,
            payload=dns.Record_SOA(
                mname=b"ns." + zone,
                rname=b"hostmaster." + zone,
                serial=1,
                minimum=_TTL,
                ttl=_TTL,
            ),
        )

    def _lookup(self, name: bytes, cls: int, type: int, timeout: object = None):
        key = _key(name)
        self.queries.append((key, type))
        if _switched(self._silent, key, type):
            return defer.Deferred()
        if _switched(self._servfail, key, type):
            return defer.fail(_ServerFailure(name))
        zone = self._zoneOf(key)
        if zone is None:
            return defer.fail(DomainError(name))
        if not self._exists(key):
            return defer.fail(AuthoritativeDomainError(name))
        answers = [
            dns.RRHeader(name=name, type=record.TYPE, ttl=_TTL, auth=True, payload=record)
            for record in self._records.get(key, [])
            if type in (record.TYPE, dns.ALL_RECORDS)
        ]
        authority = [] if answers else [self._soa(zone)]
        return defer.succeed((answers, authority, []))


class _ServerFactory(server.DNSServerFactory):
    """
    A L{server.DNSServerFactory} that answers SERVFAIL without logging an
    error, never truncates over TCP, and can wait for its connections.

    @ivar tcpConnections: how many TCP connections were accepted.
    """

    def __init__(self, authority: TestAuthority) -> None:
        server.DNSServerFactory.__init__(self, authorities=[authority])
        self._authority = authority
        self._lostWaiters: list[defer.Deferred] = []
        self.tcpConnections = 0
        self._authenticReply = False

    def buildProtocol(self, addr):
        self.tcpConnections += 1
        return server.DNSServerFactory.buildProtocol(self, addr)

    def _authentic(self, message) -> bool:
        """
        Whether the reply to C{message} gets the AD bit: the query asked
        for DNSSEC (DO or AD) and its name is secure.
        """
        if not message.queries:
            return False
        # The server decodes plain Messages: EDNS's DO bit is bit 15 of the
        # OPT pseudo-record's TTL field (RFC 3225).
        dnssecOK = any(
            r.type == dns.OPT and (r.ttl >> 15) & 1 for r in getattr(message, "additional", [])
        )
        asked = dnssecOK or bool(getattr(message, "authenticData", 0))
        return asked and self._authority.isSecure(message.queries[0].name.name)

    def gotResolverResponse(self, response, protocol, message, address) -> None:
        self._authenticReply = self._authentic(message)
        try:
            server.DNSServerFactory.gotResolverResponse(self, response, protocol, message, address)
        finally:
            self._authenticReply = False

    def gotResolverError(self, failure: Failure, protocol, message, address) -> None:
        self._authenticReply = self._authentic(message) and not failure.check(_ServerFailure)
        try:
            self._resolverError(failure, protocol, message, address)
        finally:
            self._authenticReply = False

    def _resolverError(self, failure: Failure, protocol, message, address) -> None:
        if failure.check(_ServerFailure):
            response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
            self.sendReply(protocol, response, address)
            return
        if failure.check(AuthoritativeDomainError) and message.queries:
            # NXDOMAIN with the zone's SOA, whose TTL and MINIMUM say how
            # long the answer may be cached (RFC 2308, section 3).
            zone = self._authority._zoneOf(_key(message.queries[0].name.name))
            if zone is not None:
                response = self._responseFromMessage(
                    message=message,
                    rCode=dns.ENAME,
                    authority=[self._authority._soa(zone)],
                )
                response.auth = True
                self.sendReply(protocol, response, address)
                return
        server.DNSServerFactory.gotResolverError(self, failure, protocol, message, address)

    def sendReply(self, protocol, message, address) -> None:
        if self._authenticReply:
            message.authenticData = True
        if address is None:
            # A stream: the answer is never truncated (RFC 7766).
            message.maxSize = 0
        elif not message.maxSize:
            # A datagram without EDNS: at most 512 octets (RFC 1035 4.2.1),
            # larger answers are truncated and the client retries over TCP.
            message.maxSize = 512
        server.DNSServerFactory.sendReply(self, protocol, message, address)

    def connectionLost(self, protocol) -> None:
        server.DNSServerFactory.connectionLost(self, protocol)
        if not self.connections:
            waiters, self._lostWaiters = self._lostWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def closeConnections(self) -> defer.Deferred:
        """
        Abort every open TCP connection.

        @return: a L{defer.Deferred} firing once they are all gone.
        """
        if not self.connections:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._lostWaiters.append(waiter)
        for protocol in list(self.connections):
            protocol.transport.abortConnection()
        return waiter


class DNSTestServer:
    """
    An authoritative DNS server on 127.0.0.1, UDP and TCP on one port.

    @ivar authority: the L{TestAuthority} holding the records.
    @ivar host: C{"127.0.0.1"}.
    @ivar port: the port, once L{start}ed.
    """

    host = "127.0.0.1"

    def __init__(self, reactor: object | None = None, zones: Sequence[str] = DEFAULT_ZONES) -> None:
        """
        @param reactor: provides L{IReactorUDP} and L{IReactorTCP} (default:
            the global reactor, imported only when needed).
        @param zones: the zone origins to be authoritative for.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor = reactor
        self.authority = TestAuthority(zones)
        self.factory = _ServerFactory(self.authority)
        self.port: int | None = None
        self._udp: IListeningPort | None = None
        self._tcp: IListeningPort | None = None

    @property
    def address(self) -> tuple[str, int]:
        """
        C{(host, port)}, the shape of L{gopherpost.config.Settings.dnsServers}
        entries.
        """
        if self.port is None:
            raise RuntimeError("the DNS test server is not started")
        return (self.host, self.port)

    def boundPorts(self) -> dict[str, int]:
        """
        The port each listener is bound to: C{{"UDP": n, "TCP": n}}.
        """
        ports = {}
        for name, listener in (("UDP", self._udp), ("TCP", self._tcp)):
            if listener is not None:
                address = listener.getHost()
                assert isinstance(address, (IPv4Address, IPv6Address))
                ports[name] = address.port
        return ports

    def start(self, attempts: int = 5) -> int:
        """
        Listen on UDP (an ephemeral port) and TCP (the same port).

        @param attempts: how often to try again with a new port when the TCP
            side of the chosen port is already taken.
        @return: the port.
        @raise CannotListenError: when no attempt succeeded.
        """
        udpReactor: IReactorUDP = self._reactor  # type: ignore[assignment]
        tcpReactor: IReactorTCP = self._reactor  # type: ignore[assignment]
        lastError: Exception | None = None
        for _ in range(attempts):
            udp = udpReactor.listenUDP(
                0, dns.DNSDatagramProtocol(self.factory), interface=self.host, maxPacketSize=8192
            )
            address = udp.getHost()
            assert isinstance(address, (IPv4Address, IPv6Address))
            port = address.port
            try:
                tcp = tcpReactor.listenTCP(port, self.factory, interface=self.host)
            except CannotListenError as e:
                lastError = e
                udp.stopListening()
                continue
            self._udp, self._tcp, self.port = udp, tcp, port
            return port
        assert lastError is not None
        raise lastError

    def stop(self) -> defer.Deferred:
        """
        Stop listening and close open TCP connections.

        @return: a L{defer.Deferred} that fires when everything is closed.
        """
        listeners, self._udp, self._tcp = [self._udp, self._tcp], None, None
        waits: list[defer.Deferred[object]] = [
            defer.maybeDeferred(listener.stopListening)
            for listener in listeners
            if listener is not None
        ]
        waits.append(self.factory.closeConnections())
        return defer.gatherResults(waits).addCallback(lambda _: None)

    # Records

    def addA(self, name: str, address: str) -> None:
        """
        Add an A record.
        """
        self.authority.addRecord(name, dns.Record_A(str(ipaddress.IPv4Address(address))))

    def addAAAA(self, name: str, address: str) -> None:
        """
        Add an AAAA record.
        """
        self.authority.addRecord(name, dns.Record_AAAA(str(ipaddress.IPv6Address(address))))

    def addAddress(self, name: str, address: str) -> None:
        """
        Add an A or an AAAA record, whichever fits C{address}.
        """
        if ipaddress.ip_address(address).version == 4:
            self.addA(name, address)
        else:
            self.addAAAA(name, address)

    def addMX(self, name: str, preference: int, exchange: str) -> None:
        """
        Add an MX record; C{exchange} C{"."} makes a null MX (RFC 7505).
        """
        self.authority.addRecord(name, dns.Record_MX(preference, _key(exchange)))

    def addNullMX(self, name: str) -> None:
        """
        Add the null MX C{0 .} (RFC 7505): the domain accepts no mail.
        """
        self.addMX(name, 0, ".")

    def addPTR(self, address: str, name: str) -> None:
        """
        Add a PTR record for an IPv4 (C{in-addr.arpa}) or IPv6 (C{ip6.arpa})
        address.
        """
        reverse = ipaddress.ip_address(address).reverse_pointer
        self.authority.addRecord(reverse, dns.Record_PTR(_key(name)))

    def addTXT(self, name: str, *strings: str | bytes) -> None:
        """
        Add one TXT record.

        Given one value, it is split into 255-octet strings as needed (a DKIM
        key record is longer than that); given several, they are used as they
        are.
        """
        if len(strings) == 1:
            parts = splitTXT(strings[0])
        else:
            parts = [s.encode("ascii") if isinstance(s, str) else s for s in strings]
        self.authority.addRecord(name, dns.Record_TXT(*parts))

    def addTLSA(self, name: str, usage: int, selector: int, matchingType: int, data: bytes) -> None:
        """
        Add a TLSA record, e.g. C{addTLSA("_25._tcp.mx.example.test", 3, 1,
        1, sha256(spki))}.
        """
        self.authority.addRecord(name, Record_TLSA(usage, selector, matchingType, data))

    def addCNAME(self, name: str, target: str) -> None:
        """
        Add a CNAME record (the server does not chase it: a resolver asking
        for another type gets the CNAME alone).
        """
        self.authority.addRecord(name, dns.Record_CNAME(_key(target)))

    def markSecure(self, name: str) -> None:
        """
        Answer for C{name} and the names below it with the AD bit, as a
        validating resolver does for a signed zone, when the query asks for
        DNSSEC (DO or AD).  Negative answers (NXDOMAIN, NODATA) too:
        authenticated denial.  SERVFAIL never carries it.
        """
        self.authority.markSecure(name)

    def failWithServFail(self, name: str, rdtype: str | None = None) -> None:
        """
        Make queries for C{name} (of type C{rdtype}, default all) answer
        SERVFAIL.
        """
        self.authority.failWithServFail(name, rdtype)

    def dropQueries(self, name: str, rdtype: str | None = None) -> None:
        """
        Never answer queries for C{name} (of type C{rdtype}, default all):
        clients time out.
        """
        self.authority.dropQueries(name, rdtype)

    def removeName(self, name: str) -> None:
        """
        Forget every record of C{name} and any failure switch for it.
        """
        self.authority.removeName(name)


def startDNSServer(
    testCase: object, reactor: object | None = None, zones: Sequence[str] = DEFAULT_ZONES
) -> DNSTestServer:
    """
    Start a L{DNSTestServer} for one trial test; it is stopped in cleanup.

    @param testCase: the L{twisted.trial.unittest.TestCase}.
    @param reactor: see L{DNSTestServer.__init__}.
    @param zones: see L{DNSTestServer.__init__}.
    @return: the started server.
    """
    dnsServer = DNSTestServer(reactor, zones)
    dnsServer.start()
    testCase.addCleanup(dnsServer.stop)  # type: ignore[attr-defined]
    return dnsServer
