"""
DANE and MTA-STS end to end on loopback: a DNS zone whose answers carry
the AD bit (TLSA records matching, not matching, unusable), an HTTPS policy
server with a CA made at test time, receiving servers with matching and
mismatching certificates, with and without STARTTLS, through the real MX
walk and SMTP client (L{tests.support.tlsdelivery}).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Generator
from typing import Any

from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from gopherpost.dns import Resolver
from gopherpost.relay.client import DEFERRED, SENT
from gopherpost.relay.mx import MXResolver
from gopherpost.tlspolicy.connection import ClientTLSContexts
from gopherpost.tlspolicy.dane import DANEResolver
from gopherpost.tlspolicy.https import HTTPSClient
from gopherpost.tlspolicy.mtasts import STSResolver
from gopherpost.tlspolicy.policy import TransportSecurity
from gopherpost.tlspolicy.reportstore import FailureDetail, PolicyKey, TLSReportStore
from gopherpost.tlspolicy.results import (
    CERTIFICATE_HOST_MISMATCH,
    DNSSEC_INVALID,
    STARTTLS_NOT_SUPPORTED,
    TLSA_INVALID,
    VALIDATION_FAILURE,
)
from gopherpost.tlspolicy.stscache import STSPolicyCache
from tests.support.certs import CertificateFiles, makeTestPKI, selfSignedCertificate
from tests.support.dnsserver import startDNSServer
from tests.support.httpsserver import startHTTPSServer
from tests.support.smtpserver import SMTPTestServer
from tests.support.tlsdelivery import attemptDelivery

InlineCallbacks = Generator[Deferred[Any], Any, None]

DOMAIN = "example.test"
MX1 = "mx1.example.test"
MX2 = "mx2.example.test"
RCPT = "bob@example.test"
PATH = "/.well-known/mta-sts.txt"


def spkiDigest(files: CertificateFiles) -> bytes:
    key = files.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(key).digest()


class DeliveryTests(TestCase):
    """
    The whole decision, against real peers.
    """

    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), MX1)
        self.dns = startDNSServer(self)
        self.resolver = Resolver([self.dns.address], reactor)
        self.clock = task.Clock()
        self.clock.advance(time.time())
        self.reports = TLSReportStore(self.mktemp(), self.clock)
        self.reports.load()
        self.port = 0
        self.dns.addMX(DOMAIN, 10, MX1)

    def smtp(self, address: str, name: str, certificate: CertificateFiles | None) -> SMTPTestServer:
        """
        A receiving server for C{name} on C{address}, all on one port.
        """
        server = SMTPTestServer(hostname=name, certificate=certificate)
        server.start(address, self.port)
        self.port = server.port
        self.addCleanup(server.stop)
        self.dns.addA(name, address)
        return server

    def security(
        self, configured: str = "verify", sts: bool = False, dane: bool = True
    ) -> TransportSecurity:
        stsResolver = None
        if sts:
            cache = STSPolicyCache(self.mktemp())
            cache.load()
            client = HTTPSClient(
                reactor, self.resolver, timeout=5, trustRoot=self.pki.ca.trustRoot()
            )
            stsResolver = STSResolver(
                self.resolver, client, cache, self.clock, port=self.https.port
            )
        return TransportSecurity(
            configured,
            ClientTLSContexts(trustRoot=self.pki.ca.trustRoot()),
            dane=DANEResolver(self.resolver) if dane else None,
            sts=stsResolver,
            reports=self.reports,
        )

    def stsPolicy(self, mode: str, mx: str = "*.example.test") -> None:
        policyCert = self.pki.ca.issue(["mta-sts.example.test"])
        self.https = startHTTPSServer(self, policyCert, interface="127.0.0.9")
        self.dns.addA("mta-sts.example.test", self.https.host)
        self.dns.addTXT(f"_mta-sts.{DOMAIN}", "v=STSv1; id=1")
        self.https.respond(
            PATH, f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n".encode()
        )

    def deliver(self, security: TransportSecurity, requireTLS: bool = False) -> Deferred[Any]:
        mx = MXResolver(self.resolver, port=self.port)
        return attemptDelivery(reactor, security, mx, DOMAIN, RCPT, requireTLS=requireTLS)

    def reported(self) -> dict[PolicyKey, Any]:
        [(domain, day)] = list(self.reports.domains(self.reports.today))
        self.assertEqual(domain, DOMAIN)
        return day.policies

    def signed(self, tlsaFor: CertificateFiles | None, usage: int = 3) -> None:
        """
        Sign the zone; publish a TLSA record for C{MX1} matching C{tlsaFor}.
        """
        self.dns.markSecure(DOMAIN)
        if tlsaFor is not None:
            self.dns.addTLSA(f"_{self.port}._tcp.{MX1}", usage, 1, 1, spkiDigest(tlsaFor))

    # DANE

    @inlineCallbacks
    def test_daneMatching(self) -> InlineCallbacks:
        """
        A matching DANE-EE record: delivered over TLS even though the
        certificate is self-signed, and counted as a success.
        """
        selfSigned = selfSignedCertificate(self.mktemp(), ["another.name.test"])
        server = self.smtp("127.0.0.2", MX1, selfSigned)
        self.signed(selfSigned)
        attempt = yield self.deliver(self.security())
        self.assertEqual(attempt.status, SENT)
        self.assertEqual(str(attempt.last.facts), "dane verified")
        self.assertTrue(server.messages[0].tls)
        [(key, counts)] = self.reported().items()
        self.assertEqual(key.policyType, "tlsa")
        self.assertEqual(key.mxHosts, (MX1,))
        self.assertEqual(key.strings, (f"3 1 1 {spkiDigest(selfSigned).hex()}",))
        self.assertEqual((counts.successes, counts.failureCount), (1, 0))

    @inlineCallbacks
    def test_daneNotMatching(self) -> InlineCallbacks:
        """
        TLSA records that do not match: deferred, nothing sent, even with a
        certificate the WebPKI trusts.
        """
        server = self.smtp("127.0.0.2", MX1, self.pki.good)
        self.signed(self.pki.wrongName)
        attempt = yield self.deliver(self.security())
        self.assertEqual(attempt.status, DEFERRED)
        self.assertIn("DANE", attempt.last.reply)
        self.assertIn("no TLSA record", attempt.last.reply)
        self.assertEqual(server.messages, [])
        [counts] = self.reported().values()
        [(detail, count)] = counts.failures.items()
        self.assertEqual(
            (detail.resultType, detail.receivingMX, detail.receivingIP),
            (TLSA_INVALID, MX1, "127.0.0.2"),
        )

    @inlineCallbacks
    def test_daneStarttlsStripped(self) -> InlineCallbacks:
        """
        A DANE host that does not offer STARTTLS: deferred, never cleartext.
        """
        server = self.smtp("127.0.0.2", MX1, None)
        self.signed(self.pki.good)
        attempt = yield self.deliver(self.security(configured="may"))
        self.assertEqual(attempt.status, DEFERRED)
        self.assertIn(f"{MX1} does not offer STARTTLS, which DANE", attempt.last.reply)
        self.assertEqual(server.messages, [])
        self.assertNotIn(b"DATA", server.commands)
        [counts] = self.reported().values()
        self.assertEqual([d.resultType for d in counts.failures], [STARTTLS_NOT_SUPPORTED])

    @inlineCallbacks
    def test_daneInsecureZone(self) -> InlineCallbacks:
        """
        TLSA records without the AD bit are not used: the configured policy
        (here C{verify}, which refuses the self-signed certificate).
        """
        selfSigned = selfSignedCertificate(self.mktemp(), [MX1])
        server = self.smtp("127.0.0.2", MX1, selfSigned)
        self.dns.addTLSA(f"_{self.port}._tcp.{MX1}", 3, 1, 1, spkiDigest(selfSigned))
        attempt = yield self.deliver(self.security())
        self.assertEqual(attempt.status, DEFERRED)
        self.assertEqual(attempt.last.policy.label, "verify")
        self.assertEqual(server.messages, [])

    @inlineCallbacks
    def test_insecureMXNoDANE(self) -> InlineCallbacks:
        """
        Validated TLSA records of a host named by MX records that did not
        validate are not used either.
        """
        selfSigned = selfSignedCertificate(self.mktemp(), [MX1])
        self.smtp("127.0.0.2", MX1, selfSigned)
        self.dns.markSecure(MX1)
        self.dns.addTLSA(f"_{self.port}._tcp.{MX1}", 3, 1, 1, spkiDigest(selfSigned))
        attempt = yield self.deliver(self.security(configured="may"))
        self.assertEqual(attempt.status, SENT)
        self.assertEqual(str(attempt.last.facts), "may unverified")

    @inlineCallbacks
    def test_daneUnusableRecords(self) -> InlineCallbacks:
        """
        Only unusable TLSA records (PKIX-EE): the configured policy, with
        TLS required (RFC 7672 2.2): a host without STARTTLS is deferred.
        """
        server = self.smtp("127.0.0.2", MX1, None)
        self.signed(self.pki.good, usage=1)
        attempt = yield self.deliver(self.security(configured="may"))
        self.assertEqual(attempt.status, DEFERRED)
        self.assertEqual(attempt.last.policy.label, "may")
        self.assertTrue(attempt.last.policy.tlsRequired)
        self.assertEqual(server.messages, [])

    @inlineCallbacks
    def test_daneUnusableRecordsWithTLS(self) -> InlineCallbacks:
        server = self.smtp("127.0.0.2", MX1, self.pki.good)
        self.signed(self.pki.good, usage=0)
        attempt = yield self.deliver(self.security())
        self.assertEqual(attempt.status, SENT)
        self.assertEqual(str(attempt.last.facts), "verify verified")
        self.assertTrue(server.messages[0].tls)

    @inlineCallbacks
    def test_tlsaLookupFails(self) -> InlineCallbacks:
        """
        A validated MX whose TLSA lookup fails (SERVFAIL, as for bogus
        data): that host is not used; the next one is.
        """
        first = self.smtp("127.0.0.2", MX1, self.pki.good)
        second = self.smtp("127.0.0.3", MX2, self.pki.good)
        self.dns.addMX(DOMAIN, 20, MX2)
        self.signed(None)
        self.dns.failWithServFail(f"_{self.port}._tcp.{MX1}")
        attempt = yield self.deliver(self.security(configured="may"))
        self.assertEqual(attempt.status, SENT)
        refused = attempt.tries[0]
        self.assertIsNone(refused.status)
        self.assertIn("TLSA", refused.reply)
        self.assertEqual(first.connectionsMade, 0)
        self.assertEqual(len(second.messages), 1)
        failures = [d.resultType for c in self.reported().values() for d in c.failures]
        self.assertIn(DNSSEC_INVALID, failures)

    @inlineCallbacks
    def test_danePrecedesMTASTS(self) -> InlineCallbacks:
        """
        A host with usable TLSA records gets DANE even when an MTA-STS
        policy in enforce mode would refuse it (RFC 8461 2).
        """
        selfSigned = selfSignedCertificate(self.mktemp(), [MX1])
        server = self.smtp("127.0.0.2", MX1, selfSigned)
        self.signed(selfSigned)
        self.stsPolicy("enforce", mx="other.test")
        attempt = yield self.deliver(self.security(sts=True))
        self.assertEqual(attempt.status, SENT)
        self.assertEqual(attempt.last.policy.label, "dane")
        self.assertEqual(len(server.messages), 1)

    # MTA-STS

    @inlineCallbacks
    def test_stsEnforce(self) -> InlineCallbacks:
        """
        Enforce, host matching, certificate valid for it: delivered, label
        C{mta-sts}.
        """
        server = self.smtp("127.0.0.2", MX1, self.pki.good)
        self.stsPolicy("enforce")
        attempt = yield self.deliver(self.security(configured="may", sts=True))
        self.assertEqual(attempt.status, SENT)
        self.assertEqual(str(attempt.last.facts), "mta-sts verified")
        self.assertTrue(server.messages[0].tls)
        [(key, counts)] = self.reported().items()
        self.assertEqual(key.policyType, "sts")
        self.assertEqual(key.mxHosts, ("*.example.test",))
        self.assertIn("mode: enforce", key.strings)
        self.assertEqual(counts.successes, 1)

    @inlineCallbacks
    def test_stsEnforceWrongCertificate(self) -> InlineCallbacks:
        server = self.smtp("127.0.0.2", MX1, self.pki.wrongName)
        self.stsPolicy("enforce")
        attempt = yield self.deliver(self.security(configured="may", sts=True))
        self.assertEqual(attempt.status, DEFERRED)
        self.assertIn("MTA-STS", attempt.last.reply)
        self.assertEqual(server.messages, [])
        [counts] = self.reported().values()
        self.assertEqual([d.resultType for d in counts.failures], [CERTIFICATE_HOST_MISMATCH])

    @inlineCallbacks
    def test_stsEnforceStripped(self) -> InlineCallbacks:
        """
        The STARTTLS-stripping case: an enforce domain whose MX does not
        offer STARTTLS is deferred, never sent in clear.
        """
        server = self.smtp("127.0.0.2", MX1, None)
        self.stsPolicy("enforce")
        attempt = yield self.deliver(self.security(configured="may", sts=True))
        self.assertEqual(attempt.status, DEFERRED)
        self.assertIn(
            f"{MX1} does not offer STARTTLS, which the MTA-STS policy of {DOMAIN} requires",
            attempt.last.reply,
        )
        self.assertEqual(server.messages, [])
        self.assertNotIn(b"DATA", server.commands)

    @inlineCallbacks
    def test_stsEnforceHostNotInPolicy(self) -> InlineCallbacks:
        """
        Enforce: a host the policy does not name is never connected to.
        """
        server = self.smtp("127.0.0.2", MX1, self.pki.good)
        self.stsPolicy("enforce", mx="mx.elsewhere.test")
        attempt = yield self.deliver(self.security(configured="may", sts=True))
        self.assertEqual(attempt.status, DEFERRED)
        self.assertIn(
            "is not an MX host the MTA-STS policy of example.test allows", attempt.last.reply
        )
        self.assertEqual(server.connectionsMade, 0)
        [counts] = self.reported().values()
        self.assertEqual([d.resultType for d in counts.failures], [VALIDATION_FAILURE])

    @inlineCallbacks
    def test_stsTestingRecordsFailures(self) -> InlineCallbacks:
        """
        Testing: delivered as the configured policy (C{may}) would, the
        certificate failure recorded.
        """
        server = self.smtp("127.0.0.2", MX1, self.pki.wrongName)
        self.stsPolicy("testing")
        attempt = yield self.deliver(self.security(configured="may", sts=True))
        self.assertEqual(attempt.status, SENT)
        self.assertEqual(attempt.last.policy.label, "may")
        self.assertTrue(server.messages[0].tls)
        [(key, counts)] = self.reported().items()
        self.assertEqual(key.policyType, "sts")
        self.assertEqual([d.resultType for d in counts.failures], [CERTIFICATE_HOST_MISMATCH])

    @inlineCallbacks
    def test_stsTestingCleartext(self) -> InlineCallbacks:
        server = self.smtp("127.0.0.2", MX1, None)
        self.stsPolicy("testing")
        attempt = yield self.deliver(self.security(configured="verify", sts=True))
        self.assertEqual(attempt.status, SENT)
        self.assertFalse(server.messages[0].tls)
        [counts] = self.reported().values()
        self.assertEqual(
            list(counts.failures),
            [FailureDetail(STARTTLS_NOT_SUPPORTED, MX1, "127.0.0.2", "STARTTLS not offered")],
        )

    @inlineCallbacks
    def test_stsTestingWithRequireTLS(self) -> InlineCallbacks:
        """
        For a REQUIRETLS message, testing counts as enforce (RFC 8689).
        """
        self.smtp("127.0.0.2", MX1, self.pki.wrongName)
        self.stsPolicy("testing")
        attempt = yield self.deliver(self.security(configured="may", sts=True), requireTLS=True)
        self.assertEqual(attempt.status, DEFERRED)
        self.assertEqual(attempt.last.policy.label, "mta-sts")

    @inlineCallbacks
    def test_stsNone(self) -> InlineCallbacks:
        server = self.smtp("127.0.0.2", MX1, self.pki.wrongName)
        self.stsPolicy("none")
        attempt = yield self.deliver(self.security(configured="may", sts=True))
        self.assertEqual(attempt.status, SENT)
        self.assertEqual(len(server.messages), 1)
        [key] = self.reported()
        self.assertEqual(key.policyType, "no-policy-found")

    @inlineCallbacks
    def test_smarthostIgnoresPolicies(self) -> InlineCallbacks:
        """
        With a smarthost neither DANE nor MTA-STS is looked up.
        """
        self.signed(self.pki.wrongName)
        security = TransportSecurity(
            "may",
            ClientTLSContexts(trustRoot=self.pki.ca.trustRoot()),
            dane=DANEResolver(self.resolver),
            smarthost=True,
        )
        destination = yield security.forDestination(DOMAIN, 25)
        self.assertFalse(destination.mxSecure)
        host = yield destination.forHost(MX1)
        self.assertEqual(host.label, "may")
