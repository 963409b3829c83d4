"""
Tests for L{gopherpost.tlspolicy.mtasts} and L{gopherpost.tlspolicy.stscache}:
MTA-STS discovery against a loopback HTTPS server with a CA made at test
time and the test DNS server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from gopherpost.dns import Resolver
from gopherpost.tlspolicy.https import HTTPSClient
from gopherpost.tlspolicy.mtasts import FETCH_BACKOFF, STSResolver, policyURL
from gopherpost.tlspolicy.results import (
    STS_POLICY_FETCH_ERROR,
    STS_POLICY_INVALID,
    STS_WEBPKI_INVALID,
)
from gopherpost.tlspolicy.sts import ENFORCE, TESTING
from gopherpost.tlspolicy.stscache import CachedPolicy, STSPolicyCache
from tests.support.certs import CertificateAuthority, makeTestPKI
from tests.support.dnsserver import startDNSServer
from tests.support.httpsserver import startHTTPSServer

InlineCallbacks = Generator[Deferred[Any], Any, None]

DOMAIN = "example.test"
POLICY_HOST = "mta-sts.example.test"
PATH = "/.well-known/mta-sts.txt"
ENFORCING = b"version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 604800\n"
TESTING_POLICY = b"version: STSv1\nmode: testing\nmx: *.example.test\nmax_age: 86400\n"
NONE_POLICY = b"version: STSv1\nmode: none\nmax_age: 86400\n"


class STSResolverTests(TestCase):
    """
    L{STSResolver} with its durable cache.
    """

    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), POLICY_HOST)
        self.server = startHTTPSServer(self, self.pki.good)
        self.dns = startDNSServer(self)
        self.dns.addA(POLICY_HOST, self.server.host)
        self.dns.addTXT(f"_mta-sts.{DOMAIN}", "v=STSv1; id=one")
        self.dnsResolver = Resolver([self.dns.address], reactor)
        self.client = HTTPSClient(
            reactor, self.dnsResolver, timeout=5, trustRoot=self.pki.ca.trustRoot()
        )
        self.clock = task.Clock()
        self.clock.advance(time.time())
        self.directory = self.mktemp()
        self.problems: list[tuple[str, str, str]] = []
        self.resolver = self.newResolver()

    def newResolver(self) -> STSResolver:
        """
        A resolver with a cache freshly loaded from the directory, as after
        a restart (and a DNS without cached answers).
        """
        cache = STSPolicyCache(self.directory)
        cache.load()
        self.cache = cache
        dnsResolver = Resolver([self.dns.address], reactor)
        return STSResolver(
            dnsResolver,
            self.client,
            cache,
            self.clock,
            port=self.server.port,
            onProblem=lambda *problem: self.problems.append(problem),
        )

    def setTXT(self, text: str) -> None:
        self.dns.removeName(f"_mta-sts.{DOMAIN}")
        if text:
            self.dns.addTXT(f"_mta-sts.{DOMAIN}", text)

    def cachedPolicy(self) -> CachedPolicy:
        cached = self.cache.get(DOMAIN)
        assert cached is not None
        return cached

    def fetches(self) -> int:
        return len([r for r in self.server.requests if r.path == PATH])

    @inlineCallbacks
    def test_enforce(self) -> InlineCallbacks:
        """
        An enforce policy is fetched from the policy host, verified, and
        cached on disk.
        """
        self.server.respond(PATH, ENFORCING)
        lookup = yield self.resolver.policyFor(DOMAIN)
        self.assertEqual(lookup.policy.mode, ENFORCE)
        self.assertEqual(lookup.policy.mx, ("mx.example.test",))
        self.assertFalse(lookup.cached)
        [request] = self.server.requests
        self.assertEqual(request.host, f"{POLICY_HOST}:{self.server.port}")
        [name] = os.listdir(self.directory)
        self.assertEqual(name, "example.test.json")
        self.assertEqual(self.problems, [])

    @inlineCallbacks
    def test_cachedWhileIdSame(self) -> InlineCallbacks:
        """
        The same TXT id: the cached policy applies, nothing is fetched.
        """
        self.server.respond(PATH, ENFORCING)
        yield self.resolver.policyFor(DOMAIN)
        lookup = yield self.resolver.policyFor(DOMAIN)
        self.assertTrue(lookup.cached)
        self.assertEqual(lookup.policy.mode, ENFORCE)
        self.assertEqual(self.fetches(), 1)

    @inlineCallbacks
    def test_newId(self) -> InlineCallbacks:
        """
        A new TXT id: the policy is fetched again.
        """
        self.server.respond(PATH, ENFORCING)
        yield self.resolver.policyFor(DOMAIN)
        self.server.respond(PATH, TESTING_POLICY)
        self.setTXT("v=STSv1; id=two")
        resolver = self.newResolver()
        lookup = yield resolver.policyFor(DOMAIN)
        self.assertEqual(lookup.policy.mode, TESTING)
        self.assertEqual(self.fetches(), 2)
        self.assertEqual(self.cachedPolicy().id, "two")

    @inlineCallbacks
    def test_survivesRestartWithoutRecord(self) -> InlineCallbacks:
        """
        After a restart the cached policy applies, also when the TXT record
        is gone and the policy host is down (an attacker stripping both).
        """
        self.server.respond(PATH, ENFORCING)
        yield self.resolver.policyFor(DOMAIN)
        self.setTXT("")
        yield self.server.stop()
        resolver = self.newResolver()
        lookup = yield resolver.policyFor(DOMAIN)
        self.assertEqual(lookup.policy.mode, ENFORCE)

    @inlineCallbacks
    def test_cachedPolicyAppliesWhenRefreshFails(self) -> InlineCallbacks:
        """
        A new id but the fetch fails: the cached policy keeps applying; the
        failure is reported once, and not retried for a while.
        """
        self.server.respond(PATH, ENFORCING)
        yield self.resolver.policyFor(DOMAIN)
        self.server.respond(PATH, b"oops", status=500)
        self.setTXT("v=STSv1; id=two")
        resolver = self.newResolver()
        lookup = yield resolver.policyFor(DOMAIN)
        self.assertEqual(lookup.policy.mode, ENFORCE)
        self.assertEqual(self.cachedPolicy().id, "one")
        [(domain, kind, reason)] = self.problems
        self.assertEqual((domain, kind), (DOMAIN, STS_POLICY_FETCH_ERROR))
        self.assertIn("HTTP 500", reason)
        yield resolver.policyFor(DOMAIN)
        self.assertEqual(self.fetches(), 2)
        self.clock.advance(FETCH_BACKOFF + 1)
        yield resolver.policyFor(DOMAIN)
        self.assertEqual(self.fetches(), 3)

    @inlineCallbacks
    def test_nearExpiry(self) -> InlineCallbacks:
        """
        A policy within a day of expiring is fetched again (same id).
        """
        self.server.respond(PATH, ENFORCING)
        yield self.resolver.policyFor(DOMAIN)
        self.clock.advance(604800 - 86400 + 1)
        lookup = yield self.resolver.policyFor(DOMAIN)
        self.assertFalse(lookup.cached)
        self.assertEqual(self.fetches(), 2)
        self.assertEqual(self.cachedPolicy().fetched, self.clock.seconds())

    @inlineCallbacks
    def test_expired(self) -> InlineCallbacks:
        """
        An expired cached policy no longer applies (and is forgotten).
        """
        self.server.respond(PATH, TESTING_POLICY)
        yield self.resolver.policyFor(DOMAIN)
        self.setTXT("")
        self.clock.advance(86401)
        resolver = self.newResolver()
        lookup = yield resolver.policyFor(DOMAIN)
        self.assertIsNone(lookup.policy)
        self.assertEqual(os.listdir(self.directory), [])

    @inlineCallbacks
    def test_modeNone(self) -> InlineCallbacks:
        """
        C{mode: none} is no policy, and is cached as such.
        """
        self.server.respond(PATH, NONE_POLICY)
        lookup = yield self.resolver.policyFor(DOMAIN)
        self.assertIsNone(lookup.policy)
        yield self.resolver.policyFor(DOMAIN)
        self.assertEqual(self.fetches(), 1)

    @inlineCallbacks
    def test_noRecord(self) -> InlineCallbacks:
        """
        No TXT record and nothing cached: no policy, nothing fetched.
        """
        self.setTXT("")
        lookup = yield self.resolver.policyFor(DOMAIN)
        self.assertIsNone(lookup.policy)
        self.assertEqual(self.server.requests, [])
        self.assertEqual(self.problems, [])

    @inlineCallbacks
    def test_twoRecords(self) -> InlineCallbacks:
        """
        Two C{v=STSv1} records: no policy (reported as invalid).
        """
        self.dns.addTXT(f"_mta-sts.{DOMAIN}", "v=STSv1; id=two")
        lookup = yield self.resolver.policyFor(DOMAIN)
        self.assertIsNone(lookup.policy)
        self.assertEqual(self.server.requests, [])
        self.assertEqual([p[1] for p in self.problems], [STS_POLICY_INVALID])

    @inlineCallbacks
    def assertProblem(self, kind: str, text: str) -> InlineCallbacks:
        lookup = yield self.resolver.policyFor(DOMAIN)
        self.assertIsNone(lookup.policy)
        [(domain, problem, reason)] = self.problems
        self.assertEqual(problem, kind, reason)
        self.assertIn(text, reason)
        self.assertEqual(os.listdir(self.directory), [])

    def test_badPolicy(self) -> Deferred[None]:
        self.server.respond(PATH, ENFORCING.replace(b"enforce", b"strict"))
        return self.assertProblem(STS_POLICY_INVALID, "mode 'strict'")

    def test_wrongType(self) -> Deferred[None]:
        self.server.respond(PATH, ENFORCING, contentType="text/html")
        return self.assertProblem(STS_POLICY_INVALID, "text/html, not text/plain")

    def test_redirect(self) -> Deferred[None]:
        """
        A redirect is not followed: a fetch error.
        """
        self.server.redirect(PATH, f"https://{POLICY_HOST}:{self.server.port}/other")
        self.server.respond("/other", ENFORCING)
        d = self.assertProblem(STS_POLICY_FETCH_ERROR, "HTTP 301")
        return d.addCallback(lambda _: self.assertEqual(self.fetches(), 1))

    def test_oversize(self) -> Deferred[None]:
        self.server.respond(PATH, ENFORCING + b"x: " + b"y" * 65536 + b"\n")
        return self.assertProblem(STS_POLICY_FETCH_ERROR, "larger than 65536")

    def test_notFound(self) -> Deferred[None]:
        return self.assertProblem(STS_POLICY_FETCH_ERROR, "HTTP 404")

    @inlineCallbacks
    def test_untrusted(self) -> InlineCallbacks:
        """
        A policy host whose certificate does not verify: C{sts-webpki-invalid}.
        """
        stranger = CertificateAuthority(self.mktemp(), "Stranger").issue([POLICY_HOST])
        other = startHTTPSServer(self, stranger, interface="127.0.0.2")
        other.respond(PATH, ENFORCING)
        self.dns.removeName(POLICY_HOST)
        self.dns.addA(POLICY_HOST, other.host)
        resolver = STSResolver(
            self.dnsResolver,
            self.client,
            self.cache,
            self.clock,
            port=other.port,
            onProblem=lambda *problem: self.problems.append(problem),
        )
        lookup = yield resolver.policyFor(DOMAIN)
        self.assertIsNone(lookup.policy)
        self.assertEqual([p[1] for p in self.problems], [STS_WEBPKI_INVALID])
        self.assertEqual(other.requests, [])

    @inlineCallbacks
    def test_oneFetchInFlight(self) -> InlineCallbacks:
        """
        Lookups at the same time share one fetch.
        """
        self.server.respond(PATH, ENFORCING)
        lookups = yield gatherResults([self.resolver.policyFor(DOMAIN) for _ in range(3)])
        self.assertEqual([lookup.policy.mode for lookup in lookups], [ENFORCE] * 3)
        self.assertEqual(self.fetches(), 1)

    def test_url(self) -> None:
        self.assertEqual(policyURL("a.test"), "https://mta-sts.a.test/.well-known/mta-sts.txt")
        self.assertEqual(
            policyURL("a.test", 8443), "https://mta-sts.a.test:8443/.well-known/mta-sts.txt"
        )


class CacheTests(TestCase):
    """
    L{STSPolicyCache} on its own.
    """

    def test_badFilesIgnored(self) -> None:
        """
        Files that do not load, and files named for another domain, are
        ignored at load.
        """
        from gopherpost.tlspolicy.sts import parsePolicy

        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "broken.test.json"), "wb") as f:
            f.write(b"{not json")
        cached = CachedPolicy("a.test", "1", parsePolicy(ENFORCING), 1000.0)
        with open(os.path.join(directory, "b.test.json"), "wb") as f:
            f.write(cached.toJSON())
        with open(os.path.join(directory, "a.test.json"), "wb") as f:
            f.write(cached.toJSON())
        cache = STSPolicyCache(directory)
        cache.load()
        self.assertEqual(len(cache), 1)
        self.assertEqual(cache.get("a.test"), cached)
        self.assertEqual(cached.expires, 1000.0 + 604800)

    def test_noPathTraversal(self) -> None:
        from gopherpost.tlspolicy.sts import parsePolicy

        directory = self.mktemp()
        cache = STSPolicyCache(directory)
        cache.load()
        self.successResultOf(cache.put(CachedPolicy("../evil", "1", parsePolicy(ENFORCING), 1.0)))
        self.assertEqual(os.listdir(directory), [])
        self.assertIsNone(cache.get("../evil"))
