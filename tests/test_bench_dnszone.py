"""
Tests for the relay benchmark's DNS server, C{bench/dnszone.py}: it must
answer as a real authoritative server does, or the benchmark measures
lookups that a real zone's answers would let GopherPost cache.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Generator
from typing import Any, cast

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from twisted.internet import defer, reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorUDP
from twisted.names import dns as twisteddns
from twisted.trial import unittest

from gopherpost.dns import PermanentDNSError, Resolver

InlineCallbacks = Generator[defer.Deferred[Any], Any, None]

_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "dnszone.py"
)


def _loadDNSZone() -> Any:
    spec = importlib.util.spec_from_file_location("bench_dnszone", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ZoneServerTests(unittest.TestCase):
    """
    The zone served by L{ZoneServerFactory} over UDP on loopback.
    """

    def setUp(self) -> None:
        dnszone = _loadDNSZone()
        mx = b"mx.relay.test"
        zone = dnszone.Zone(
            "relay.test",
            {
                (b"relay.test", twisteddns.MX): [twisteddns.Record_MX(10, mx, ttl=60)],
                (mx, twisteddns.A): [twisteddns.Record_A("127.0.0.2", ttl=60)],
            },
        )
        self.factory = dnszone.ZoneServerFactory(zone)
        self.queries: list[bytes] = []
        handleQuery = self.factory.handleQuery

        def counted(message: Any, protocol: Any, address: Any) -> Any:
            self.queries.append(message.queries[0].name.name)
            return handleQuery(message, protocol, address)

        self.factory.handleQuery = counted
        port = cast(IReactorUDP, reactor).listenUDP(
            0,
            twisteddns.DNSDatagramProtocol(self.factory),
            interface="127.0.0.1",
            maxPacketSize=8192,
        )
        self.addCleanup(port.stopListening)
        host = port.getHost()
        assert isinstance(host, IPv4Address)
        self.address = ("127.0.0.1", host.port)

    def _ask(self, name: str, rdtype: str) -> defer.Deferred:
        query = dns.message.make_query(name, rdtype)
        host, port = self.address
        return threads.deferToThread(dns.query.udp, query, host, port=port, timeout=5)

    @defer.inlineCallbacks
    def test_negativeAnswersCarryTheSOA(self) -> InlineCallbacks:
        """
        NXDOMAIN for a name in the zone and an empty NOERROR both carry the
        zone's SOA (RFC 2308, section 3); the MX is answered.
        """
        response = yield self._ask("_mta-sts.relay.test", "TXT")
        self.assertEqual(response.rcode(), dns.rcode.NXDOMAIN)
        self.assertEqual([r.rdtype for r in response.authority], [dns.rdatatype.SOA])
        response = yield self._ask("mx.relay.test", "AAAA")
        self.assertEqual(response.rcode(), dns.rcode.NOERROR)
        self.assertEqual(response.answer, [])
        self.assertEqual([r.rdtype for r in response.authority], [dns.rdatatype.SOA])
        response = yield self._ask("relay.test", "MX")
        self.assertEqual(
            [str(r.exchange) for rrset in response.answer for r in rrset], ["mx.relay.test."]
        )

    @defer.inlineCallbacks
    def test_resolverCachesNoSuchName(self) -> InlineCallbacks:
        """
        GopherPost's resolver asks once for a name the zone does not have,
        and answers the second lookup from its cache, as it would for a
        real zone.
        """
        resolver = Resolver([self.address], reactor, timeout=5.0)
        for _ in range(2):
            yield self.assertFailure(resolver.lookupTXT("_mta-sts.relay.test"), PermanentDNSError)
        self.assertEqual(self.queries, [b"_mta-sts.relay.test"])
