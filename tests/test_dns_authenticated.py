"""
Tests for L{gopherpost.dns.Resolver.lookupAuthenticated} (the DNSSEC
verdict DANE needs) and for the test DNS server's AD bit and TLSA records
(L{tests.support.dnsserver}).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from typing import Any

import dns.flags
import dns.message
import dns.query
from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from gopherpost.dns import AuthenticatedAnswer, PermanentDNSError, Resolver, TemporaryDNSError
from tests.support.dnsserver import startDNSServer

InlineCallbacks = Generator[defer.Deferred[Any], Any, None]

DIGEST = hashlib.sha256(b"a public key").digest()


class AuthenticatedLookupTests(unittest.TestCase):
    """
    Lookups that read the AD bit, against a zone that is partly "signed".
    """

    def setUp(self) -> None:
        self.server = startDNSServer(self)
        self.server.addMX("signed.test", 10, "mx.signed.test")
        self.server.addA("mx.signed.test", "127.0.0.2")
        self.server.addTLSA("_25._tcp.mx.signed.test", 3, 1, 1, DIGEST)
        self.server.markSecure("signed.test")
        self.server.addMX("plain.test", 10, "mx.plain.test")
        self.server.addTLSA("_25._tcp.mx.plain.test", 3, 1, 1, DIGEST)
        self.resolver = Resolver([self.server.address], reactor)

    @defer.inlineCallbacks
    def test_secureAnswer(self) -> InlineCallbacks:
        """
        Records of a signed name come with C{authenticated} set.
        """
        answer = yield self.resolver.lookupAuthenticated("signed.test", "MX")
        self.assertIsInstance(answer, AuthenticatedAnswer)
        self.assertTrue(answer.authenticated)
        self.assertTrue(answer.exists)
        self.assertEqual(
            [(r.preference, r.exchange.to_text()) for r in answer.records],
            [(10, "mx.signed.test.")],
        )

    @defer.inlineCallbacks
    def test_tlsaRecords(self) -> InlineCallbacks:
        """
        TLSA records arrive as dnspython rdatas with their four fields.
        """
        answer = yield self.resolver.lookupAuthenticated("_25._tcp.mx.signed.test", "TLSA")
        [record] = answer.records
        self.assertEqual(
            (record.usage, record.selector, record.mtype, record.cert), (3, 1, 1, DIGEST)
        )
        self.assertTrue(answer.authenticated)

    @defer.inlineCallbacks
    def test_insecureAnswer(self) -> InlineCallbacks:
        """
        Records of an unsigned name are not authenticated, TLSA included.
        """
        mx = yield self.resolver.lookupAuthenticated("plain.test", "MX")
        tlsa = yield self.resolver.lookupAuthenticated("_25._tcp.mx.plain.test", "TLSA")
        self.assertEqual(len(mx.records), 1)
        self.assertFalse(mx.authenticated)
        self.assertEqual(len(tlsa.records), 1)
        self.assertFalse(tlsa.authenticated)

    @defer.inlineCallbacks
    def test_authenticatedDenial(self) -> InlineCallbacks:
        """
        NODATA and NXDOMAIN are answers, not errors, with their own verdict.
        """
        nodata = yield self.resolver.lookupAuthenticated("_25._tcp.signed.test", "TLSA")
        self.assertEqual(nodata, AuthenticatedAnswer([], True, exists=False))
        nodata = yield self.resolver.lookupAuthenticated("mx.signed.test", "TLSA")
        self.assertEqual(nodata, AuthenticatedAnswer([], True, exists=True))
        insecure = yield self.resolver.lookupAuthenticated("nothing.plain.test", "TLSA")
        self.assertEqual(insecure, AuthenticatedAnswer([], False, exists=False))

    @defer.inlineCallbacks
    def test_servfailIsTemporary(self) -> InlineCallbacks:
        """
        SERVFAIL (what a validating resolver answers for bogus data) is a
        temporary failure, never an insecure answer.
        """
        self.server.failWithServFail("_25._tcp.mx.signed.test")
        with self.assertRaises(TemporaryDNSError):
            yield self.resolver.lookupAuthenticated("_25._tcp.mx.signed.test", "TLSA")

    def test_badQuery(self) -> None:
        """
        An unknown type or a bad name fails at once, permanently.
        """
        self.failureResultOf(
            self.resolver.lookupAuthenticated("signed.test", "NOSUCHTYPE"), PermanentDNSError
        )
        self.failureResultOf(self.resolver.lookupAuthenticated("a..b", "MX"), PermanentDNSError)

    @defer.inlineCallbacks
    def test_cachedApart(self) -> InlineCallbacks:
        """
        Answers are cached (one query for two lookups), apart from the plain
        lookups' cache: a plain MX lookup of the same name asks again.
        """
        yield self.resolver.lookupAuthenticated("signed.test", "MX")
        yield self.resolver.lookupAuthenticated("signed.test", "MX")
        queries = [q for q in self.server.authority.queries if q[0] == b"signed.test"]
        self.assertEqual(len(queries), 1)
        yield self.resolver.lookupMX("signed.test")
        queries = [q for q in self.server.authority.queries if q[0] == b"signed.test"]
        self.assertEqual(len(queries), 2)


class TestServerADBitTests(unittest.TestCase):
    """
    The test server sets AD only when asked, as a validating resolver does.
    """

    def setUp(self) -> None:
        self.server = startDNSServer(self)
        self.server.addMX("signed.test", 10, "mx.signed.test")
        self.server.markSecure("signed.test")

    def ask(self, **options: Any) -> defer.Deferred[Any]:
        query = dns.message.make_query("signed.test", "MX", **options)
        host, port = self.server.address
        return threads.deferToThread(dns.query.udp, query, host, port=port, timeout=5)

    @defer.inlineCallbacks
    def test_notAsked(self) -> InlineCallbacks:
        """
        A query without DO or AD gets no AD bit.
        """
        response = yield self.ask()
        self.assertFalse(response.flags & dns.flags.AD)

    @defer.inlineCallbacks
    def test_askedWithDO(self) -> InlineCallbacks:
        """
        A query with the DO bit gets the AD bit.
        """
        response = yield self.ask(want_dnssec=True)
        self.assertTrue(response.flags & dns.flags.AD)
