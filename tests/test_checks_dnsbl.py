"""
Tests for L{gopherpost.checks.dnsbl} against blocklist zones served on
loopback.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from gopherpost.checks.dnsbl import DNSBLChecker, queryName
from tests.support.mxchecks import InlineCallbacks, startCheckEnvironment


class QueryNameTests(unittest.TestCase):
    def test_ipv4(self) -> None:
        self.assertEqual(queryName("192.0.2.99", "bl.test."), "99.2.0.192.bl.test")

    def test_ipv6(self) -> None:
        self.assertEqual(
            queryName("2001:db8::1:2", "bl.test"),
            "2.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test",
        )

    def test_mapped(self) -> None:
        self.assertEqual(queryName("::ffff:192.0.2.99", "bl.test"), "99.2.0.192.bl.test")


class DNSBLTests(unittest.TestCase):
    """
    L{DNSBLChecker.check}.
    """

    def setUp(self) -> None:
        self.env = startCheckEnvironment(self, dnsTimeout=1.0)
        self.dns = self.env.dnsServer
        self.checker = DNSBLChecker(self.env.resolver, ["zen.bl.test", "other.bl.test"])

    @defer.inlineCallbacks
    def test_notListed(self) -> InlineCallbacks:
        self.dns.addA("1.0.0.127.zen.bl.test", "127.0.0.2")
        result = yield self.checker.check("192.0.2.1")
        self.assertEqual((result.listed, result.errors, result.temporary), ((), (), ()))
        self.assertIsNone(result.zone)

    @defer.inlineCallbacks
    def test_listed(self) -> InlineCallbacks:
        self.dns.addA("1.2.0.192.other.bl.test", "127.0.0.4")
        result = yield self.checker.check("192.0.2.1")
        self.assertEqual(result.listed, (("other.bl.test", ("127.0.0.4",)),))
        self.assertEqual(result.zone, "other.bl.test")

    @defer.inlineCallbacks
    def test_ipv6Listed(self) -> InlineCallbacks:
        self.dns.addA(queryName("2001:db8::25", "zen.bl.test"), "127.0.0.3")
        result = yield self.checker.check("2001:db8::25")
        self.assertEqual(result.zone, "zen.bl.test")

    @defer.inlineCallbacks
    def test_errorCodes(self) -> InlineCallbacks:
        """
        Spamhaus's 127.255.255.x answers and answers outside 127/8 are
        errors, not listings.
        """
        self.dns.addA("1.2.0.192.zen.bl.test", "127.255.255.254")
        self.dns.addA("1.2.0.192.other.bl.test", "192.0.2.1")
        result = yield self.checker.check("192.0.2.1")
        self.assertEqual(result.listed, ())
        self.assertEqual([zone for zone, _ in result.errors], ["zen.bl.test", "other.bl.test"])

    @defer.inlineCallbacks
    def test_temporary(self) -> InlineCallbacks:
        self.dns.failWithServFail("1.2.0.192.zen.bl.test")
        result = yield self.checker.check("192.0.2.1")
        self.assertEqual([zone for zone, _ in result.temporary], ["zen.bl.test"])
        self.assertEqual(result.listed, ())

    @defer.inlineCallbacks
    def test_notAnAddress(self) -> InlineCallbacks:
        result = yield self.checker.check("unix-socket")
        self.assertEqual(result.listed, ())
