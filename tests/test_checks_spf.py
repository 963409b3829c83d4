"""
Tests for L{gopherpost.checks.spf}: pyspf's evaluation, its lookups answered
by a loopback DNS zone through the server's resolver.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from gopherpost.checks.spf import SPFResult
from tests.support.mxchecks import InlineCallbacks, startCheckEnvironment

CLIENT = "192.0.2.10"


class SPFTests(unittest.TestCase):
    """
    Every SPF result, and RFC 7208's processing limits.
    """

    def setUp(self) -> None:
        self.env = startCheckEnvironment(self, dnsTimeout=1.0)
        self.dns = self.env.dnsServer
        self.checker = self.env.spfChecker(timeout=10.0)

    def check(self, sender: str, helo: str = "client.example.test") -> defer.Deferred:
        return self.checker.check(CLIENT, sender, helo)

    @defer.inlineCallbacks
    def assertResult(
        self, expected: str, record: str, domain: str = "example.test"
    ) -> InlineCallbacks:
        self.dns.addTXT(domain, record)
        result = yield self.check(f"alice@{domain}")
        self.assertIsInstance(result, SPFResult)
        self.assertEqual(result.result, expected, result.reason)
        self.assertEqual(result.identity, "mailfrom")
        self.assertEqual(result.domain, domain)
        return result

    def test_pass(self) -> defer.Deferred:
        return self.assertResult("pass", f"v=spf1 ip4:{CLIENT} -all")

    def test_passByA(self) -> defer.Deferred:
        """
        The C{a} and C{mx} mechanisms look the addresses up.
        """
        self.dns.addA("mail.example.test", CLIENT)
        self.dns.addMX("example.test", 10, "mail.example.test")
        return self.assertResult("pass", "v=spf1 mx -all")

    def test_fail(self) -> defer.Deferred:
        return self.assertResult("fail", "v=spf1 ip4:198.51.100.0/24 -all")

    def test_softfail(self) -> defer.Deferred:
        return self.assertResult("softfail", "v=spf1 ~all")

    def test_neutral(self) -> defer.Deferred:
        return self.assertResult("neutral", "v=spf1 ?all")

    @defer.inlineCallbacks
    def test_none(self) -> InlineCallbacks:
        """
        No SPF record (another TXT record only), and no such domain.
        """
        self.dns.addTXT("example.test", "google-site-verification=x")
        result = yield self.check("alice@example.test")
        self.assertEqual(result.result, "none")
        result = yield self.check("alice@missing.test")
        self.assertEqual(result.result, "none")

    @defer.inlineCallbacks
    def test_temperrorServFail(self) -> InlineCallbacks:
        """
        A SERVFAIL for the policy is a temperror, not a pass or a none.
        """
        self.dns.failWithServFail("example.test")
        result = yield self.check("alice@example.test")
        self.assertEqual(result.result, "temperror")

    @defer.inlineCallbacks
    def test_temperrorTimeout(self) -> InlineCallbacks:
        """
        A nameserver that never answers gives a temperror within the
        resolver's timeout.
        """
        self.dns.dropQueries("example.test")
        result = yield self.check("alice@example.test")
        self.assertEqual(result.result, "temperror")

    @defer.inlineCallbacks
    def test_temperrorInclude(self) -> InlineCallbacks:
        """
        A temporary failure deep in an include is a temperror too.
        """
        self.dns.addTXT("example.test", "v=spf1 include:_spf.other.test -all")
        self.dns.failWithServFail("_spf.other.test")
        result = yield self.check("alice@example.test")
        self.assertEqual(result.result, "temperror")

    def test_permerrorSyntax(self) -> defer.Deferred:
        return self.assertResult("permerror", "v=spf1 ip4:192.0.2.x -all")

    @defer.inlineCallbacks
    def test_permerrorTwoRecords(self) -> InlineCallbacks:
        self.dns.addTXT("example.test", "v=spf1 -all")
        yield self.assertResult("permerror", "v=spf1 +all")

    @defer.inlineCallbacks
    def test_permerrorLoop(self) -> InlineCallbacks:
        """
        An include loop ends in a permerror (the lookup limit), not a hang.
        """
        self.dns.addTXT("a.loop.test", "v=spf1 include:b.loop.test -all")
        self.dns.addTXT("b.loop.test", "v=spf1 include:a.loop.test -all")
        result = yield self.check("alice@a.loop.test")
        self.assertEqual(result.result, "permerror")

    @defer.inlineCallbacks
    def test_permerrorTooManyLookups(self) -> InlineCallbacks:
        """
        More than 10 DNS-querying terms is a permerror (RFC 7208 4.6.4).
        """
        includes = " ".join(f"include:i{n}.example.test" for n in range(11))
        for n in range(11):
            self.dns.addTXT(f"i{n}.example.test", "v=spf1 ?all")
        yield self.assertResult("permerror", f"v=spf1 {includes} -all")

    @defer.inlineCallbacks
    def test_tenLookupsAllowed(self) -> InlineCallbacks:
        """
        Exactly 10 DNS-querying terms are within the limit.
        """
        includes = " ".join(f"include:i{n}.example.test" for n in range(9))
        for n in range(9):
            self.dns.addTXT(f"i{n}.example.test", "v=spf1 -all")
        self.dns.addA("last.example.test", CLIENT)
        yield self.assertResult("pass", f"v=spf1 {includes} a:last.example.test -all")

    @defer.inlineCallbacks
    def test_permerrorVoidLookups(self) -> InlineCallbacks:
        """
        More than two lookups answering nothing is a permerror.
        """
        yield self.assertResult(
            "permerror",
            "v=spf1 a:v1.example.test a:v2.example.test a:v3.example.test -all",
        )

    @defer.inlineCallbacks
    def test_heloIdentityForNullSender(self) -> InlineCallbacks:
        """
        With MAIL FROM:<> the HELO name's policy is checked.
        """
        self.dns.addTXT("client.example.test", f"v=spf1 ip4:{CLIENT} -all")
        result = yield self.check("", helo="client.example.test")
        self.assertEqual(
            (result.result, result.identity, result.domain, result.sender),
            ("pass", "helo", "client.example.test", "postmaster@client.example.test"),
        )

    @defer.inlineCallbacks
    def test_ipv6(self) -> InlineCallbacks:
        self.dns.addTXT("example.test", "v=spf1 ip6:2001:db8::/32 -all")
        result = yield self.checker.check("2001:db8::25", "alice@example.test", "h.test")
        self.assertEqual(result.result, "pass")
        result = yield self.checker.check("2001:db9::25", "alice@example.test", "h.test")
        self.assertEqual(result.result, "fail")

    @defer.inlineCallbacks
    def test_lookupsGoToTheConfiguredServer(self) -> InlineCallbacks:
        """
        pyspf's lookups are answered by the configured server (the test
        zone saw them).
        """
        yield self.assertResult("pass", f"v=spf1 ip4:{CLIENT} -all")
        self.assertIn((b"example.test", 16), self.dns.authority.queries)
