"""
Tests for L{gopherpost.relay.mx}.

Unit tests use L{FakeDNS}, an in-memory L{IDNSResolver}; integration tests
go through L{gopherpost.dns.Resolver} to the loopback DNS server.
"""

from __future__ import annotations

import random

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.config import settingsFromEnvironment
from gopherpost.dns import (
    DNSError,
    IDNSResolver,
    PermanentDNSError,
    Resolver,
    TemporaryDNSError,
)
from gopherpost.relay.mx import (
    IDestinationResolver,
    MailExchange,
    MailLoopError,
    MXResolver,
    NoMailHostError,
    NullMXError,
    SmarthostResolver,
    destinationResolverFromSettings,
    normalizeDomain,
)
from tests.support.dnsserver import startDNSServer

Answer = list | DNSError


@implementer(IDNSResolver)
class FakeDNS:
    """
    An in-memory L{IDNSResolver}: answers (or errors) per name; unknown
    names are NXDOMAIN.  Records every lookup.
    """

    def __init__(self) -> None:
        self.mx: dict[str, Answer] = {}
        self.addresses: dict[str, Answer] = {}
        self.lookups: list[tuple[str, str]] = []

    def _answer(self, kind: str, table: dict[str, Answer], name: str) -> defer.Deferred:
        self.lookups.append((kind, name))
        value = table.get(name)
        if value is None:
            known = name in self.mx or name in self.addresses
            if known:
                return defer.succeed([])
            return defer.fail(PermanentDNSError(name, "no such domain (NXDOMAIN)"))
        if isinstance(value, DNSError):
            return defer.fail(value)
        return defer.succeed(list(value))

    def lookupMX(self, name: str) -> defer.Deferred:
        return self._answer("MX", self.mx, name)

    def lookupAddresses(self, name: str) -> defer.Deferred:
        return self._answer("A", self.addresses, name)

    def lookupPTR(self, address: str) -> defer.Deferred:
        raise NotImplementedError()

    def lookupTXT(self, name: str) -> defer.Deferred:
        raise NotImplementedError()

    def forwardConfirmedNames(self, address: str, timeout=None) -> defer.Deferred:
        raise NotImplementedError()


class NormalizeDomainTests(unittest.SynchronousTestCase):
    """
    L{normalizeDomain}.
    """

    def test_normalize(self) -> None:
        """
        Case, white space and the trailing dot do not matter; IDNs become
        A-labels; literals are kept.
        """
        self.assertEqual(normalizeDomain(" Example.TEST. "), "example.test")
        self.assertEqual(normalizeDomain("bücher.test"), "xn--bcher-kva.test")
        self.assertEqual(normalizeDomain("[192.0.2.1]"), "[192.0.2.1]")

    def test_empty(self) -> None:
        """
        An empty domain is a permanent error.
        """
        self.assertRaises(PermanentDNSError, normalizeDomain, " . ")


class MXResolverTests(unittest.SynchronousTestCase):
    """
    L{MXResolver} over L{FakeDNS}.
    """

    def setUp(self) -> None:
        self.dns = FakeDNS()
        self.resolver = MXResolver(self.dns, random.Random(1), port=2525)

    def test_interfaces(self) -> None:
        """
        L{MXResolver} provides L{IDestinationResolver}; the fake provides
        L{IDNSResolver}.
        """
        self.assertTrue(verifyObject(IDestinationResolver, self.resolver))
        self.assertTrue(verifyObject(IDNSResolver, self.dns))
        self.assertEqual(self.resolver.port, 2525)

    def test_sortedByPreference(self) -> None:
        """
        Hosts come best (lowest preference) first.
        """
        self.dns.mx["example.test"] = [(30, "c.test"), (10, "a.test"), (20, "b.test")]
        result = self.successResultOf(self.resolver.resolveDestination("Example.Test."))
        self.assertEqual(
            result,
            [MailExchange("a.test", 10), MailExchange("b.test", 20), MailExchange("c.test", 30)],
        )
        self.assertEqual(self.dns.lookups, [("MX", "example.test")])
        hostname, preference = result[0]
        self.assertEqual((hostname, preference), ("a.test", 10))

    def test_equalPreferencesShuffledPerCall(self) -> None:
        """
        Hosts of equal preference are shuffled on every call, and only
        among themselves.
        """
        self.dns.mx["example.test"] = [
            (10, "a.test"),
            (10, "b.test"),
            (10, "c.test"),
            (5, "first.test"),
            (20, "last.test"),
        ]
        orders = set()
        for _ in range(50):
            result = self.successResultOf(self.resolver.resolveDestination("example.test"))
            self.assertEqual(result[0], MailExchange("first.test", 5))
            self.assertEqual(result[-1], MailExchange("last.test", 20))
            self.assertEqual({r.preference for r in result[1:4]}, {10})
            orders.add(tuple(r.hostname for r in result[1:4]))
        self.assertEqual(len(orders), 6)

    def test_shuffleUsesRandomSource(self) -> None:
        """
        The shuffle comes from the injected random source: equal seeds give
        equal orders.
        """
        self.dns.mx["example.test"] = [(10, "h%d.test" % i) for i in range(8)]
        first = MXResolver(self.dns, random.Random(7))
        second = MXResolver(self.dns, random.Random(7))
        for _ in range(3):
            self.assertEqual(
                self.successResultOf(first.resolveDestination("example.test")),
                self.successResultOf(second.resolveDestination("example.test")),
            )

    def test_duplicateHosts(self) -> None:
        """
        A host listed twice is kept once, at its best preference.
        """
        self.dns.mx["example.test"] = [(20, "a.test"), (10, "a.test"), (15, "b.test")]
        result = self.successResultOf(self.resolver.resolveDestination("example.test"))
        self.assertEqual(result, [MailExchange("a.test", 10), MailExchange("b.test", 15)])

    def test_implicitMX(self) -> None:
        """
        No MX records: the domain itself, if it has an address.
        """
        self.dns.mx["example.test"] = []
        self.dns.addresses["example.test"] = ["127.0.0.2"]
        result = self.successResultOf(self.resolver.resolveDestination("example.test"))
        self.assertEqual(result, [MailExchange("example.test", 0)])

    def test_implicitMXWithoutAddress(self) -> None:
        """
        No MX and no address is a permanent failure.
        """
        self.dns.mx["example.test"] = []
        self.dns.addresses["example.test"] = []
        failure = self.failureResultOf(
            self.resolver.resolveDestination("example.test"), NoMailHostError
        )
        self.assertIsInstance(failure.value, PermanentDNSError)
        self.assertEqual(failure.value.status, "5.4.4")

    def test_implicitMXTemporary(self) -> None:
        """
        A temporary failure of the address lookup stays temporary.
        """
        self.dns.mx["example.test"] = []
        self.dns.addresses["example.test"] = TemporaryDNSError("example.test", "SERVFAIL")
        self.failureResultOf(self.resolver.resolveDestination("example.test"), TemporaryDNSError)

    def test_nullMX(self) -> None:
        """
        A null MX fails permanently at once, without address lookups.
        """
        self.dns.mx["nomail.test"] = [(0, ".")]
        failure = self.failureResultOf(self.resolver.resolveDestination("nomail.test"), NullMXError)
        self.assertIsInstance(failure.value, PermanentDNSError)
        self.assertEqual(failure.value.status, "5.1.10")
        self.assertEqual(self.dns.lookups, [("MX", "nomail.test")])

    def test_nullMXAmongOthers(self) -> None:
        """
        A root exchange next to real MX hosts (a misconfiguration) is
        ignored.
        """
        self.dns.mx["odd.test"] = [(0, "."), (10, "mx.odd.test")]
        result = self.successResultOf(self.resolver.resolveDestination("odd.test"))
        self.assertEqual(result, [MailExchange("mx.odd.test", 10)])

    def test_nxdomain(self) -> None:
        """
        NXDOMAIN is permanent.
        """
        self.failureResultOf(self.resolver.resolveDestination("missing.test"), PermanentDNSError)

    def test_temporary(self) -> None:
        """
        A temporary MX lookup failure is temporary.
        """
        self.dns.mx["example.test"] = TemporaryDNSError("example.test", "timeout")
        self.failureResultOf(self.resolver.resolveDestination("example.test"), TemporaryDNSError)

    def test_addressLiterals(self) -> None:
        """
        Address literals go to the address, without DNS.
        """
        self.assertEqual(
            self.successResultOf(self.resolver.resolveDestination("[192.0.2.1]")),
            [MailExchange("192.0.2.1", 0)],
        )
        self.assertEqual(
            self.successResultOf(self.resolver.resolveDestination("[IPv6:2001:DB8::1]")),
            [MailExchange("2001:db8::1", 0)],
        )
        self.assertEqual(
            self.successResultOf(self.resolver.resolveHostAddresses("192.0.2.1")),
            ["192.0.2.1"],
        )
        self.assertEqual(self.dns.lookups, [])
        for bad in ("[999.0.0.1]", "[2001:db8::1]", "[IPv6:nonsense]"):
            self.failureResultOf(self.resolver.resolveDestination(bad), PermanentDNSError)

    def test_localHostDropped(self) -> None:
        """
        An MX host that is this server, and worse ones, are dropped; if the
        best is this server, the mail would loop.
        """
        resolver = MXResolver(self.dns, random.Random(1), localHostnames=["Me.Test."])
        self.dns.mx["example.test"] = [(10, "a.test"), (20, "me.test"), (30, "z.test")]
        self.assertEqual(
            self.successResultOf(resolver.resolveDestination("example.test")),
            [MailExchange("a.test", 10)],
        )
        self.dns.mx["loop.test"] = [(10, "me.test"), (20, "z.test")]
        failure = self.failureResultOf(resolver.resolveDestination("loop.test"), MailLoopError)
        self.assertEqual(failure.value.status, "5.4.6")

    def test_hostAddresses(self) -> None:
        """
        Host addresses come from A/AAAA; none at all is an error.
        """
        self.dns.addresses["mx.test"] = ["127.0.0.2", "::1"]
        self.dns.addresses["empty.test"] = []
        self.assertEqual(
            self.successResultOf(self.resolver.resolveHostAddresses("mx.test")),
            ["127.0.0.2", "::1"],
        )
        self.failureResultOf(self.resolver.resolveHostAddresses("empty.test"), NoMailHostError)
        self.failureResultOf(self.resolver.resolveHostAddresses("gone.test"), PermanentDNSError)

    def test_destinationKey(self) -> None:
        """
        Mail is grouped by domain.
        """
        self.assertEqual(self.resolver.destinationKey("Example.TEST."), "example.test")


class SmarthostResolverTests(unittest.SynchronousTestCase):
    """
    L{SmarthostResolver} and L{destinationResolverFromSettings}.
    """

    def _settings(self, **env: str):
        environ = {"SMTP_HOSTNAME": "mx.example.test"}
        environ.update(env)
        return settingsFromEnvironment(environ, checkFiles=False)

    def test_smarthost(self) -> None:
        """
        Every domain goes to the relay host, without an MX lookup.
        """
        dns = FakeDNS()
        dns.addresses["relay.test"] = ["127.0.0.5"]
        resolver = destinationResolverFromSettings(
            self._settings(SMTP_RELAY_HOST="Relay.Test:2526"), dns
        )
        self.assertIsInstance(resolver, SmarthostResolver)
        self.assertTrue(verifyObject(IDestinationResolver, resolver))
        self.assertEqual(resolver.port, 2526)
        for domain in ("a.test", "b.test", "missing.test"):
            self.assertEqual(
                self.successResultOf(resolver.resolveDestination(domain)),
                [MailExchange("relay.test", 0)],
            )
        self.assertEqual(resolver.destinationKey("a.test"), resolver.destinationKey("b.test"))
        self.assertEqual(
            self.successResultOf(resolver.resolveHostAddresses("relay.test")), ["127.0.0.5"]
        )
        self.assertEqual(dns.lookups, [("A", "relay.test")])

    def test_smarthostAddress(self) -> None:
        """
        A relay host given as an address needs no DNS at all.
        """
        dns = FakeDNS()
        resolver = destinationResolverFromSettings(self._settings(SMTP_RELAY_HOST="127.0.0.7"), dns)
        self.assertEqual(resolver.port, 25)
        [exchange] = self.successResultOf(resolver.resolveDestination("x.test"))
        self.assertEqual(
            self.successResultOf(resolver.resolveHostAddresses(exchange.hostname)),
            ["127.0.0.7"],
        )
        self.assertEqual(dns.lookups, [])

    def test_mxFromSettings(self) -> None:
        """
        Without a relay host: MX resolution on C{SMTP_OUTBOUND_PORT}, and our
        own host name never used as a destination.
        """
        dns = FakeDNS()
        resolver = destinationResolverFromSettings(
            self._settings(SMTP_OUTBOUND_PORT="2600"), dns, random.Random(3)
        )
        self.assertIsInstance(resolver, MXResolver)
        self.assertEqual(resolver.port, 2600)
        dns.mx["example.test"] = [(10, "mx.example.test")]
        self.failureResultOf(resolver.resolveDestination("example.test"), MailLoopError)


class MXIntegrationTests(unittest.TestCase):
    """
    L{MXResolver} through L{Resolver} and the loopback DNS server.
    """

    def setUp(self) -> None:
        self.server = startDNSServer(self)
        self.resolver = MXResolver(
            Resolver([self.server.address], reactor, timeout=5.0), random.Random(5)
        )

    @defer.inlineCallbacks
    def test_mxOrderAndAddresses(self) -> defer.Generator:
        """
        Real MX records are ordered and their hosts resolved.
        """
        self.server.addMX("example.test", 20, "backup.example.test")
        self.server.addMX("example.test", 10, "mx.example.test")
        self.server.addA("mx.example.test", "127.0.0.2")
        self.server.addAAAA("mx.example.test", "::1")
        result = yield self.resolver.resolveDestination("example.test")
        self.assertEqual(
            result,
            [MailExchange("mx.example.test", 10), MailExchange("backup.example.test", 20)],
        )
        assert result is not None
        addresses = yield self.resolver.resolveHostAddresses(result[0].hostname)
        self.assertEqual(addresses, ["127.0.0.2", "::1"])
        yield self.assertFailure(
            self.resolver.resolveHostAddresses(result[1].hostname), PermanentDNSError
        )

    @defer.inlineCallbacks
    def test_implicitMX(self) -> defer.Generator:
        """
        A domain with only an A record is its own mail host; one with only
        a TXT record has none.
        """
        self.server.addA("plain.test", "127.0.0.3")
        self.server.addTXT("textonly.test", "v=spf1 -all")
        result = yield self.resolver.resolveDestination("plain.test")
        self.assertEqual(result, [MailExchange("plain.test", 0)])
        yield self.assertFailure(self.resolver.resolveDestination("textonly.test"), NoMailHostError)

    @defer.inlineCallbacks
    def test_nullMX(self) -> defer.Generator:
        """
        A published null MX fails permanently.
        """
        self.server.addNullMX("nomail.test")
        self.server.addA("nomail.test", "127.0.0.3")
        yield self.assertFailure(self.resolver.resolveDestination("nomail.test"), NullMXError)

    @defer.inlineCallbacks
    def test_nxdomainAndServfail(self) -> defer.Generator:
        """
        NXDOMAIN is permanent, SERVFAIL temporary.
        """
        self.server.failWithServFail("broken.test")
        error = yield self.assertFailure(
            self.resolver.resolveDestination("missing.test"), PermanentDNSError
        )
        self.assertNotIsInstance(error, NullMXError)
        yield self.assertFailure(self.resolver.resolveDestination("broken.test"), TemporaryDNSError)
