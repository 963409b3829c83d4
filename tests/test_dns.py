"""
Tests for L{gopherpost.dns}, against the loopback DNS server of
L{tests.support.dnsserver}.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, cast

import dns.flags
import dns.message
import dns.query
import dns.rcode
from twisted.internet import defer, reactor, task, threads
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from gopherpost import dns as gopherdns
from gopherpost.config import settingsFromEnvironment
from gopherpost.dns import (
    IDNSResolver,
    PermanentDNSError,
    Resolver,
    TemporaryDNSError,
    resolverFromSettings,
)
from tests.support.dnsserver import DNSTestServer, splitTXT, startDNSServer

#: What an inlineCallbacks generator yields, is sent and returns.
InlineCallbacks = Generator[defer.Deferred[Any], Any, None]


class DNSTestServerTests(unittest.TestCase):
    """
    The loopback DNS server itself.
    """

    def setUp(self) -> None:
        self.server = startDNSServer(self)

    def _ask(self, name: str, rdtype: str, tcp: bool) -> defer.Deferred:
        query = dns.message.make_query(name, rdtype)
        host, port = self.server.address
        ask = dns.query.tcp if tcp else dns.query.udp
        return threads.deferToThread(ask, query, host, port=port, timeout=5)

    def test_sameUDPAndTCPPort(self) -> None:
        """
        UDP and TCP listen on the same loopback port.
        """
        host, port = self.server.address
        self.assertEqual(host, "127.0.0.1")
        self.assertEqual(self.server.boundPorts(), {"UDP": port, "TCP": port})

    @defer.inlineCallbacks
    def test_answersOverTCP(self) -> InlineCallbacks:
        """
        A query over TCP gets the same records as over UDP.
        """
        self.server.addA("host.example.test", "127.0.0.9")
        for tcp in (False, True):
            response = yield self._ask("host.example.test", "A", tcp)
            self.assertEqual([r.address for rrset in response.answer for r in rrset], ["127.0.0.9"])
            self.assertTrue(response.flags & dns.flags.AA)

    @defer.inlineCallbacks
    def test_rcodes(self) -> InlineCallbacks:
        """
        Unknown names in a zone answer NXDOMAIN; names with other records
        NOERROR without answers; SERVFAIL names SERVFAIL, unlogged.
        """
        self.server.addA("a.example.test", "127.0.0.9")
        self.server.failWithServFail("broken.example.test")
        cases = [
            ("nothing.example.test", dns.rcode.NXDOMAIN, 0),
            ("a.example.test", dns.rcode.NOERROR, 0),
            ("example.test", dns.rcode.NOERROR, 0),
            ("broken.example.test", dns.rcode.SERVFAIL, 0),
        ]
        for name, rcode, answers in cases:
            response = yield self._ask(name, "MX", False)
            self.assertEqual((name, response.rcode()), (name, rcode))
            self.assertEqual(len(response.answer), answers)

    def test_nameOutsideZones(self) -> None:
        """
        Records can only be added inside the server's zones.
        """
        self.assertRaises(ValueError, self.server.addA, "example.com", "127.0.0.1")

    def test_splitTXT(self) -> None:
        """
        Long TXT values are cut into 255-octet strings.
        """
        value = "x" * 600
        parts = splitTXT(value)
        self.assertEqual([len(p) for p in parts], [255, 255, 90])
        self.assertEqual(b"".join(parts), value.encode())
        self.assertEqual(splitTXT(""), [b""])

    def test_stopIsClean(self) -> defer.Deferred[None]:
        """
        A server can be stopped before cleanup; stopping releases its port.
        """
        other = DNSTestServer()
        other.start()
        self.assertIsNotNone(other.port)
        return other.stop()


class ResolverTests(unittest.TestCase):
    """
    L{Resolver} lookups against the loopback server.
    """

    def setUp(self) -> None:
        self.server = startDNSServer(self)
        self.resolver = Resolver([self.server.address], reactor, timeout=5.0)

    def test_interface(self) -> None:
        """
        L{Resolver} provides L{IDNSResolver}.
        """
        self.assertTrue(verifyObject(IDNSResolver, self.resolver))

    @defer.inlineCallbacks
    def test_lookupMX(self) -> InlineCallbacks:
        """
        MX records come back as (preference, exchange), names normalised.
        """
        self.server.addMX("example.test", 20, "MX2.example.test")
        self.server.addMX("example.test", 10, "mx1.example.test")
        records = yield self.resolver.lookupMX("Example.TEST.")
        self.assertEqual(sorted(records), [(10, "mx1.example.test"), (20, "mx2.example.test")])

    @defer.inlineCallbacks
    def test_lookupNullMX(self) -> InlineCallbacks:
        """
        A null MX's exchange is C{"."}.
        """
        self.server.addNullMX("nomail.test")
        records = yield self.resolver.lookupMX("nomail.test")
        self.assertEqual(records, [(0, ".")])

    @defer.inlineCallbacks
    def test_noAnswerIsEmpty(self) -> InlineCallbacks:
        """
        A name that exists without records of the type gives an empty list.
        """
        self.server.addA("host.example.test", "127.0.0.9")
        self.assertEqual((yield self.resolver.lookupMX("host.example.test")), [])
        self.assertEqual((yield self.resolver.lookupTXT("host.example.test")), [])

    @defer.inlineCallbacks
    def test_lookupAddresses(self) -> InlineCallbacks:
        """
        A and AAAA together, IPv4 first, in canonical text form.
        """
        self.server.addAAAA("host.example.test", "2001:DB8:0::1")
        self.server.addA("host.example.test", "127.0.0.9")
        self.server.addA("v4.example.test", "127.0.0.10")
        self.server.addAAAA("v6.example.test", "::1")
        self.assertEqual(
            (yield self.resolver.lookupAddresses("host.example.test")),
            ["127.0.0.9", "2001:db8::1"],
        )
        self.assertEqual((yield self.resolver.lookupAddresses("v4.example.test")), ["127.0.0.10"])
        self.assertEqual((yield self.resolver.lookupAddresses("v6.example.test")), ["::1"])

    @defer.inlineCallbacks
    def test_nxdomainIsPermanent(self) -> InlineCallbacks:
        """
        NXDOMAIN fails with L{PermanentDNSError}, for every lookup.
        """
        for lookup in (
            self.resolver.lookupMX,
            self.resolver.lookupAddresses,
            self.resolver.lookupTXT,
        ):
            error = yield self.assertFailure(lookup("missing.test"), PermanentDNSError)
            self.assertEqual(error.name, "missing.test")
            self.assertIn("NXDOMAIN", str(error))
            self.assertEqual(error.status, "5.1.2")

    @defer.inlineCallbacks
    def test_servfailIsTemporary(self) -> InlineCallbacks:
        """
        SERVFAIL fails with L{TemporaryDNSError}.
        """
        self.server.failWithServFail("broken.test")
        for lookup in (
            self.resolver.lookupMX,
            self.resolver.lookupAddresses,
            self.resolver.lookupTXT,
        ):
            error = yield self.assertFailure(lookup("broken.test"), TemporaryDNSError)
            self.assertEqual(error.status, "4.4.3")

    @defer.inlineCallbacks
    def test_timeoutIsTemporary(self) -> InlineCallbacks:
        """
        A server that never answers leads to L{TemporaryDNSError} once the
        lookup's time is up.
        """
        self.server.dropQueries("slow.test")
        resolver = Resolver([self.server.address], reactor, timeout=0.3)
        error = yield self.assertFailure(resolver.lookupMX("slow.test"), TemporaryDNSError)
        self.assertIn("timeout", str(error))

    @defer.inlineCallbacks
    def test_partialAddresses(self) -> InlineCallbacks:
        """
        Addresses from one family are returned even when the other family's
        query failed temporarily.
        """
        self.server.addA("half.test", "127.0.0.11")
        self.server.failWithServFail("half.test", "AAAA")
        self.server.addAAAA("other.test", "::1")
        self.server.dropQueries("other.test", "A")
        resolver = Resolver([self.server.address], reactor, timeout=0.3)
        self.assertEqual((yield resolver.lookupAddresses("half.test")), ["127.0.0.11"])
        self.assertEqual((yield resolver.lookupAddresses("other.test")), ["::1"])

    @defer.inlineCallbacks
    def test_temporaryWinsOverNXDOMAIN(self) -> InlineCallbacks:
        """
        Without addresses, a temporary failure of one family is reported
        rather than the other family's NXDOMAIN.
        """
        self.server.failWithServFail("flaky.test", "AAAA")
        yield self.assertFailure(self.resolver.lookupAddresses("flaky.test"), TemporaryDNSError)

    @defer.inlineCallbacks
    def test_invalidName(self) -> InlineCallbacks:
        """
        A name that is not a valid domain name fails permanently without a
        query.
        """
        yield self.assertFailure(self.resolver.lookupMX("a" * 64 + ".test"), PermanentDNSError)
        yield self.assertFailure(self.resolver.lookupMX("a..test"), PermanentDNSError)
        self.assertEqual(self.server.authority.queries, [])

    @defer.inlineCallbacks
    def test_lookupPTR(self) -> InlineCallbacks:
        """
        PTR lookups take an address, IPv4 or IPv6 (IPv4-mapped unmapped).
        """
        self.server.addPTR("127.0.0.2", "Mail.Example.TEST.")
        self.server.addPTR("2001:db8::25", "mail6.example.test")
        self.assertEqual((yield self.resolver.lookupPTR("127.0.0.2")), ["mail.example.test"])
        self.assertEqual((yield self.resolver.lookupPTR("::ffff:127.0.0.2")), ["mail.example.test"])
        self.assertEqual(
            (yield self.resolver.lookupPTR("2001:db8:0:0::25")), ["mail6.example.test"]
        )
        yield self.assertFailure(self.resolver.lookupPTR("not-an-ip"), PermanentDNSError)
        yield self.assertFailure(self.resolver.lookupPTR("127.0.0.3"), PermanentDNSError)

    @defer.inlineCallbacks
    def test_lookupLongTXT(self) -> InlineCallbacks:
        """
        A TXT record longer than 255 octets comes back joined, even when the
        answer is too big for UDP and is fetched again over TCP.
        """
        value = "v=DKIM1; k=rsa; p=" + "A" * 1500
        self.server.addTXT("sel._domainkey.example.test", value)
        self.server.addTXT("sel._domainkey.example.test", "second", " record")
        records = yield self.resolver.lookupTXT("sel._domainkey.example.test")
        self.assertEqual(sorted(records), sorted([value.encode(), b"second record"]))
        self.assertEqual(self.server.factory.tcpConnections, 1)

    @defer.inlineCallbacks
    def test_onlyConfiguredServers(self) -> InlineCallbacks:
        """
        Queries go to the configured server (and port).
        """
        self.server.addA("host.example.test", "127.0.0.9")
        yield self.resolver.lookupAddresses("host.example.test")
        self.assertEqual(
            sorted(self.server.authority.queries),
            [(b"host.example.test", 1), (b"host.example.test", 28)],
        )

    @defer.inlineCallbacks
    def test_sameAddressDifferentPorts(self) -> InlineCallbacks:
        """
        Two servers on the same address with different ports are both used:
        when the first answers SERVFAIL, the second is asked.
        """
        second = startDNSServer(self)
        self.server.failWithServFail("example.test")
        second.addMX("example.test", 10, "mx.example.test")
        resolver = Resolver([self.server.address, second.address], reactor, timeout=5.0)
        self.assertEqual(resolver.servers, (self.server.address, second.address))
        records = yield resolver.lookupMX("example.test")
        self.assertEqual(records, [(10, "mx.example.test")])
        self.assertEqual(self.server.authority.queries, [(b"example.test", 15)])
        self.assertEqual(second.authority.queries, [(b"example.test", 15)])

    @defer.inlineCallbacks
    def test_allServersFailing(self) -> InlineCallbacks:
        """
        When every server answers SERVFAIL, the failure is temporary.
        """
        second = startDNSServer(self)
        self.server.failWithServFail("example.test")
        second.failWithServFail("example.test")
        resolver = Resolver([self.server.address, second.address], reactor, timeout=5.0)
        yield self.assertFailure(resolver.lookupMX("example.test"), TemporaryDNSError)
        self.assertEqual(len(second.authority.queries), 1)

    @defer.inlineCallbacks
    def test_ownThreadPool(self) -> InlineCallbacks:
        """
        Queries run in the given thread pool.
        """
        pool = ThreadPool(minthreads=0, maxthreads=1, name="test-dns")
        pool.start()
        self.addCleanup(pool.stop)
        seen = []
        original = pool.callInThreadWithCallback

        def spy(*args, **kwargs):
            seen.append(args)
            return original(*args, **kwargs)

        pool.callInThreadWithCallback = spy  # type: ignore[method-assign]
        self.server.addA("host.example.test", "127.0.0.9")
        resolver = Resolver([self.server.address], reactor, threadpool=pool)
        result = yield resolver.lookupAddresses("host.example.test")
        self.assertEqual(result, ["127.0.0.9"])
        self.assertEqual(len(seen), 2)

    @defer.inlineCallbacks
    def test_noSystemConfiguration(self) -> InlineCallbacks:
        """
        Without servers and without a usable C{/etc/resolv.conf}, lookups
        fail temporarily (and nothing is sent anywhere).
        """
        import dns.resolver

        def noConfiguration(self, *args, **kwargs):
            raise dns.resolver.NoResolverConfiguration("no nameservers")

        self.patch(dns.resolver.Resolver, "read_resolv_conf", noConfiguration)
        resolver = Resolver([], reactor)
        self.assertEqual(resolver.servers, ())
        error = yield self.assertFailure(resolver.lookupMX("example.test"), TemporaryDNSError)
        self.assertIn("no nameservers", str(error))

    def test_fromSettings(self) -> None:
        """
        L{resolverFromSettings} uses C{SMTP_DNS_SERVERS}.
        """
        settings = settingsFromEnvironment(
            {
                "SMTP_HOSTNAME": "mx.example.test",
                "SMTP_DNS_SERVERS": "127.0.0.1:5300, [::1]:5301, 127.0.0.2",
            },
            checkFiles=False,
        )
        resolver = resolverFromSettings(settings, reactor)
        self.assertEqual(resolver.servers, (("127.0.0.1", 5300), ("::1", 5301), ("127.0.0.2", 53)))


class _ClockedReactor:
    """
    The global reactor's threads with a L{task.Clock}'s time, so that a
    test can let cached answers expire.
    """

    def __init__(self) -> None:
        self.clock = task.Clock()

    def seconds(self) -> float:
        return self.clock.seconds()

    def getThreadPool(self) -> ThreadPool:
        return cast(IReactorThreads, reactor).getThreadPool()

    def callFromThread(self, f, *args, **kwargs) -> None:
        cast(IReactorThreads, reactor).callFromThread(f, *args, **kwargs)


class CacheTests(unittest.TestCase):
    """
    L{Resolver} remembers answers for their TTL, negative answers for the
    SOA's negative TTL, temporary failures not at all, and shares lookups
    in flight.  The test server gives every record, and its SOA, a TTL of
    60 seconds.
    """

    def setUp(self) -> None:
        self.server = startDNSServer(self)
        self.reactor = _ClockedReactor()
        self.resolver = Resolver(
            [self.server.address], cast(IReactorTime, self.reactor), timeout=5.0
        )

    def queriesFor(self, name: str) -> int:
        """
        How many queries the server answered for C{name}.
        """
        return sum(1 for key, _ in self.server.authority.queries if key == name.encode())

    @defer.inlineCallbacks
    def test_answerCachedForItsTTL(self) -> InlineCallbacks:
        """
        An answer is served from the cache, names compared case-blind,
        until its TTL has passed; then the server is asked again.
        """
        self.server.addMX("cached.test", 10, "mx.cached.test")
        self.assertEqual((yield self.resolver.lookupMX("cached.test")), [(10, "mx.cached.test")])
        self.server.removeName("cached.test")
        self.server.addMX("cached.test", 20, "other.cached.test")
        self.reactor.clock.advance(59)
        self.assertEqual((yield self.resolver.lookupMX("Cached.TEST.")), [(10, "mx.cached.test")])
        self.assertEqual(self.queriesFor("cached.test"), 1)
        self.reactor.clock.advance(2)
        self.assertEqual((yield self.resolver.lookupMX("cached.test")), [(20, "other.cached.test")])
        self.assertEqual(self.queriesFor("cached.test"), 2)

    @defer.inlineCallbacks
    def test_ttlCapped(self) -> InlineCallbacks:
        """
        No answer is kept longer than L{gopherdns.MAX_CACHE_TTL}, whatever
        its TTL.
        """
        self.patch(gopherdns, "MAX_CACHE_TTL", 10.0)
        self.server.addA("capped.test", "127.0.0.7")
        yield self.resolver.lookupAddresses("capped.test")
        self.reactor.clock.advance(11)
        self.server.removeName("capped.test")
        self.server.addA("capped.test", "127.0.0.8")
        self.assertEqual((yield self.resolver.lookupAddresses("capped.test")), ["127.0.0.8"])

    @defer.inlineCallbacks
    def test_nxdomainCached(self) -> InlineCallbacks:
        """
        "No such domain" is remembered for the SOA's negative TTL.
        """
        yield self.assertFailure(self.resolver.lookupMX("new.test"), PermanentDNSError)
        self.server.addMX("new.test", 10, "mx.new.test")
        yield self.assertFailure(self.resolver.lookupMX("new.test"), PermanentDNSError)
        self.assertEqual(self.queriesFor("new.test"), 1)
        self.reactor.clock.advance(61)
        self.assertEqual((yield self.resolver.lookupMX("new.test")), [(10, "mx.new.test")])

    @defer.inlineCallbacks
    def test_noDataCached(self) -> InlineCallbacks:
        """
        "No records of this type" is remembered like "no such domain", and
        only for that type.
        """
        self.server.addA("host.test", "127.0.0.9")
        self.assertEqual((yield self.resolver.lookupMX("host.test")), [])
        self.server.addMX("host.test", 10, "host.test")
        self.assertEqual((yield self.resolver.lookupMX("host.test")), [])
        self.assertEqual((yield self.resolver.lookupTXT("host.test")), [])
        self.assertEqual(self.queriesFor("host.test"), 2)
        self.reactor.clock.advance(61)
        self.assertEqual((yield self.resolver.lookupMX("host.test")), [(10, "host.test")])

    @defer.inlineCallbacks
    def test_temporaryFailureNotCached(self) -> InlineCallbacks:
        """
        SERVFAIL is not remembered: the next lookup asks again.
        """
        self.server.failWithServFail("flaky.test")
        yield self.assertFailure(self.resolver.lookupMX("flaky.test"), TemporaryDNSError)
        self.server.removeName("flaky.test")
        self.server.addMX("flaky.test", 10, "mx.flaky.test")
        self.assertEqual((yield self.resolver.lookupMX("flaky.test")), [(10, "mx.flaky.test")])

    @defer.inlineCallbacks
    def test_sharedInFlight(self) -> InlineCallbacks:
        """
        Lookups of the same name and type made while one is in flight wait
        for it instead of asking the server again; each gets its own list.
        """
        self.server.addMX("busy.test", 10, "mx.busy.test")
        first = self.resolver.lookupMX("busy.test")
        second = self.resolver.lookupMX("BUSY.test")
        results = yield defer.gatherResults([first, second])
        self.assertEqual(results, [[(10, "mx.busy.test")]] * 2)
        self.assertIsNot(results[0], results[1])
        self.assertEqual(self.queriesFor("busy.test"), 1)

    @defer.inlineCallbacks
    def test_sharedFailure(self) -> InlineCallbacks:
        """
        A failure of a shared lookup reaches every waiter.
        """
        self.server.failWithServFail("down.test")
        lookups = [self.resolver.lookupMX("down.test") for _ in range(3)]
        for d in lookups:
            yield self.assertFailure(d, TemporaryDNSError)
        self.assertEqual(self.queriesFor("down.test"), 1)

    @defer.inlineCallbacks
    def test_bounded(self) -> InlineCallbacks:
        """
        At most L{gopherdns.MAX_CACHE_ENTRIES} answers are kept; the least
        recently used is forgotten first.
        """
        self.patch(gopherdns, "MAX_CACHE_ENTRIES", 2)
        for name in ("one.test", "two.test", "three.test"):
            self.server.addMX(name, 10, "mx." + name)
        yield self.resolver.lookupMX("one.test")
        yield self.resolver.lookupMX("two.test")
        yield self.resolver.lookupMX("one.test")
        yield self.resolver.lookupMX("three.test")
        yield self.resolver.lookupMX("one.test")
        yield self.resolver.lookupMX("two.test")
        self.assertEqual(
            [self.queriesFor(n) for n in ("one.test", "two.test", "three.test")], [1, 2, 1]
        )


class ForwardConfirmedNamesTests(unittest.TestCase):
    """
    L{Resolver.forwardConfirmedNames}, the FCrDNS check behind
    C{SMTP_ALLOW_HOSTS}.
    """

    def setUp(self) -> None:
        self.server = startDNSServer(self)
        self.resolver = Resolver([self.server.address], reactor, timeout=5.0)

    @defer.inlineCallbacks
    def test_confirmed(self) -> InlineCallbacks:
        """
        A PTR name whose A record is the address is confirmed.
        """
        self.server.addPTR("127.0.0.2", "client.example.test")
        self.server.addA("client.example.test", "127.0.0.2")
        names = yield self.resolver.forwardConfirmedNames("127.0.0.2")
        self.assertEqual(names, {"client.example.test"})

    @defer.inlineCallbacks
    def test_mappedAddress(self) -> InlineCallbacks:
        """
        An IPv4-mapped IPv6 client address is checked as IPv4.
        """
        self.server.addPTR("127.0.0.2", "client.example.test")
        self.server.addA("client.example.test", "127.0.0.2")
        names = yield self.resolver.forwardConfirmedNames("::ffff:127.0.0.2")
        self.assertEqual(names, {"client.example.test"})

    @defer.inlineCallbacks
    def test_ipv6(self) -> InlineCallbacks:
        """
        IPv6 addresses are confirmed through ip6.arpa and AAAA.
        """
        self.server.addPTR("::1", "v6.example.test")
        self.server.addAAAA("v6.example.test", "0::1")
        names = yield self.resolver.forwardConfirmedNames("::1")
        self.assertEqual(names, {"v6.example.test"})

    @defer.inlineCallbacks
    def test_notConfirmed(self) -> InlineCallbacks:
        """
        A PTR name that resolves elsewhere, or not at all, is not confirmed;
        others of the same address still are.
        """
        self.server.addPTR("127.0.0.2", "liar.example.test")
        self.server.addA("liar.example.test", "127.0.0.3")
        self.server.addPTR("127.0.0.2", "gone.example.test")
        self.server.addPTR("127.0.0.2", "good.example.test")
        self.server.addAAAA("good.example.test", "::2")
        self.server.addA("good.example.test", "127.0.0.2")
        names = yield self.resolver.forwardConfirmedNames("127.0.0.2")
        self.assertEqual(names, {"good.example.test"})
        self.server.removeName("good.example.test")
        # A new resolver: this one remembers the answers for their TTL.
        fresh = Resolver([self.server.address], reactor, timeout=5.0)
        names = yield fresh.forwardConfirmedNames("127.0.0.2")
        self.assertEqual(names, set())

    @defer.inlineCallbacks
    def test_noPTR(self) -> InlineCallbacks:
        """
        No PTR record: no names.
        """
        names = yield self.resolver.forwardConfirmedNames("127.0.0.5")
        self.assertEqual(names, set())

    @defer.inlineCallbacks
    def test_ptrServfail(self) -> InlineCallbacks:
        """
        A temporary failure of the PTR lookup is reported, not hidden as
        "no names".
        """
        self.server.failWithServFail("2.0.0.127.in-addr.arpa")
        yield self.assertFailure(
            self.resolver.forwardConfirmedNames("127.0.0.2"), TemporaryDNSError
        )

    @defer.inlineCallbacks
    def test_forwardServfail(self) -> InlineCallbacks:
        """
        When no name is confirmed and a forward lookup failed temporarily,
        the result is a temporary failure.
        """
        self.server.addPTR("127.0.0.2", "client.example.test")
        self.server.failWithServFail("client.example.test")
        yield self.assertFailure(
            self.resolver.forwardConfirmedNames("127.0.0.2"), TemporaryDNSError
        )

    @defer.inlineCallbacks
    def test_timeout(self) -> InlineCallbacks:
        """
        The whole check is bounded by its timeout.
        """
        self.server.addPTR("127.0.0.2", "slow.example.test")
        self.server.dropQueries("slow.example.test")
        started = reactor.seconds()
        error = yield self.assertFailure(
            self.resolver.forwardConfirmedNames("127.0.0.2", timeout=0.4),
            TemporaryDNSError,
        )
        self.assertLess(reactor.seconds() - started, 3.0)
        self.assertIsInstance(error, TemporaryDNSError)

    @defer.inlineCallbacks
    def test_notAnAddress(self) -> InlineCallbacks:
        """
        Something that is not an IP address fails permanently.
        """
        yield self.assertFailure(
            self.resolver.forwardConfirmedNames("client.example.test"), PermanentDNSError
        )

    def test_defaultTimeout(self) -> None:
        """
        The FCrDNS check is short by default.
        """
        self.assertEqual(self.resolver.fcrdnsTimeout, 5.0)
