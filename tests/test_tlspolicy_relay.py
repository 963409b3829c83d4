"""
Transport security in the relay: the courier consults
L{gopherpost.tlspolicy} for every destination and connection (DANE,
MTA-STS, REQUIRETLS, C{TLS-Required: No}), against real peers on loopback,
and the queue keeps and logs what it says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from gopherpost.relay.courier import IDeliveryListener, OutboundMessage, RecipientDelivery
from gopherpost.relay.state import DELIVERED, FAILED, PENDING
from gopherpost.tlspolicy.connection import ClientTLSContexts
from gopherpost.tlspolicy.dane import DANEResolver
from gopherpost.tlspolicy.https import HTTPSClient
from gopherpost.tlspolicy.mtasts import STSResolver
from gopherpost.tlspolicy.policy import TLSFacts, TransportSecurity
from gopherpost.tlspolicy.reportstore import TLSReportStore
from gopherpost.tlspolicy.stscache import STSPolicyCache
from tests.support.certs import CertificateFiles, makeTestPKI, selfSignedCertificate
from tests.support.dnsserver import startDNSServer
from tests.support.httpsserver import startHTTPSServer
from tests.support.relay import RelayHarness, eventually
from tests.support.smtpserver import DEFAULT_EXTENSIONS, SMTPTestServer

InlineCallbacks = Generator[Deferred[Any], Any, None]

MX = "mx.example.test"
MESSAGE = b"Subject: x\r\n\r\nhi\r\n"
RELAXED = b"Subject: x\r\nTLS-Required: No\r\n\r\nhi\r\n"
WITH_REQUIRETLS = {**DEFAULT_EXTENSIONS, "REQUIRETLS": None}


def spkiDigest(files: CertificateFiles) -> bytes:
    key = files.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(key).digest()


@implementer(IDeliveryListener)
class Recording:
    """
    Remembers what the courier reports.
    """

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.deliveries: list[RecipientDelivery] = []

    def attempting(
        self, messages: Sequence[OutboundMessage], host: str, address: str, port: int
    ) -> None:
        self.hosts.append(host)

    def settled(self, message: OutboundMessage, deliveries: Sequence[RecipientDelivery]) -> None:
        self.deliveries.extend(deliveries)

    def last(self, recipient: str) -> RecipientDelivery:
        """
        The last outcome reported for C{recipient}.
        """
        return [d for d in self.deliveries if d.recipient == recipient][-1]


class RelayTransportSecurityTests(TestCase):
    """
    The courier and the queue with a L{TransportSecurity}.
    """

    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), MX)
        self.dns = startDNSServer(self)
        self.dns.addMX("example.test", 10, MX)
        self.dns.addA(MX, "127.0.0.2")

    def receiver(
        self, certificate: CertificateFiles | None, extensions: Any = None
    ) -> SMTPTestServer:
        server = SMTPTestServer(hostname=MX, certificate=certificate, extensions=extensions)
        server.start("127.0.0.2")
        self.addCleanup(server.stop)
        self.harness = RelayHarness(self, self.dns, server.port)
        return server

    def security(self, sts: bool = False) -> TransportSecurity:
        resolver = self.harness.resolver
        reports = TLSReportStore(self.mktemp(), self.harness.clock)
        reports.load()
        security = TransportSecurity(
            "may",
            ClientTLSContexts(trustRoot=self.pki.ca.trustRoot()),
            dane=DANEResolver(resolver),
            reports=reports,
        )
        if sts:
            cache = STSPolicyCache(self.mktemp())
            cache.load()
            client = HTTPSClient(reactor, resolver, timeout=5, trustRoot=self.pki.ca.trustRoot())
            security.useSTS(
                STSResolver(resolver, client, cache, self.harness.clock, port=self.https.port)
            )
        return security

    def stsPolicy(self, mode: str = "enforce", mx: str = "*.example.test") -> None:
        self.https = startHTTPSServer(
            self, self.pki.ca.issue(["mta-sts.example.test"]), "127.0.0.9"
        )
        self.dns.addA("mta-sts.example.test", self.https.host)
        self.dns.addTXT("_mta-sts.example.test", "v=STSv1; id=1")
        self.https.respond(
            "/.well-known/mta-sts.txt",
            f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n".encode(),
        )

    def dane(self, server: SMTPTestServer, certificate: CertificateFiles) -> None:
        self.dns.markSecure("example.test")
        self.dns.addTLSA(f"_{server.port}._tcp.{MX}", 3, 1, 1, spkiDigest(certificate))

    def deliver(
        self, security: TransportSecurity | None, *messages: OutboundMessage
    ) -> Deferred[Recording]:
        listener = Recording()
        options = {} if security is None else {"transportSecurity": security}
        courier = self.harness.courier(**options)
        if not messages:
            messages = (
                OutboundMessage("Q1", "alice@gopherpost.test", ("bob@example.test",), MESSAGE),
            )
        return courier.deliver("example.test", list(messages), listener).addCallback(
            lambda _: listener
        )

    # DANE and MTA-STS through the courier

    @inlineCallbacks
    def test_dane(self) -> InlineCallbacks:
        """
        A DANE-EE match (the certificate's name is not checked): delivered
        over TLS, the delivery's facts say so.
        """
        certificate = selfSignedCertificate(self.mktemp(), ["elsewhere.test"])
        server = self.receiver(certificate)
        self.dane(server, certificate)
        listener = yield self.deliver(self.security())
        [delivery] = listener.deliveries
        self.assertEqual(delivery.status, "sent")
        self.assertEqual(delivery.tls, TLSFacts("dane", True, True))
        self.assertTrue(server.messages[0].tls)

    @inlineCallbacks
    def test_withoutSecurity(self) -> InlineCallbacks:
        """
        A courier without transport security ignores TLSA records (the
        C{SMTP_OUTBOUND_TLS} policy alone) and reports no facts.
        """
        server = self.receiver(self.pki.good)
        self.dane(server, self.pki.wrongName)
        listener = yield self.deliver(None)
        [delivery] = listener.deliveries
        self.assertEqual((delivery.status, delivery.tls), ("sent", None))

    @inlineCallbacks
    def test_daneMismatch(self) -> InlineCallbacks:
        """
        TLSA records the certificate does not match: deferred, nothing
        sent (not even in clear).
        """
        server = self.receiver(self.pki.good)
        self.dane(server, self.pki.wrongName)
        listener = yield self.deliver(self.security())
        [delivery] = listener.deliveries
        self.assertEqual(delivery.status, "deferred")
        self.assertIn("DANE", delivery.reply)
        self.assertEqual(delivery.tls, TLSFacts("dane", True, False, "tlsa-invalid"))
        self.assertEqual(server.messages, [])

    @inlineCallbacks
    def test_stsStripped(self) -> InlineCallbacks:
        """
        An enforce domain whose MX offers no STARTTLS (stripped): deferred,
        with a reply saying why; nothing sent in clear.
        """
        server = self.receiver(None)
        self.stsPolicy()
        listener = yield self.deliver(self.security(sts=True))
        [delivery] = listener.deliveries
        self.assertEqual(delivery.status, "deferred")
        self.assertEqual(
            delivery.reply,
            f"421 4.7.4 {MX} does not offer STARTTLS, which the MTA-STS policy of "
            "example.test requires",
        )
        self.assertEqual(delivery.tls.failureType, "starttls-not-supported")
        self.assertEqual(server.messages, [])
        self.assertFalse(any(c.upper().startswith(b"MAIL") for c in server.commands))

    @inlineCallbacks
    def test_stsHostRefused(self) -> InlineCallbacks:
        """
        Enforce: a host the policy does not name is never connected to.
        """
        server = self.receiver(self.pki.good)
        self.stsPolicy(mx="mx.other.test")
        listener = yield self.deliver(self.security(sts=True))
        self.assertEqual(listener.hosts, [])
        [delivery] = listener.deliveries
        self.assertEqual(delivery.status, "deferred")
        self.assertIn("is not an MX host the MTA-STS policy of example.test allows", delivery.reply)
        self.assertEqual(server.connectionsMade, 0)

    @inlineCallbacks
    def test_stsVerified(self) -> InlineCallbacks:
        """
        Enforce, a certificate valid for the MX name: delivered, C{mta-sts
        verified}.
        """
        server = self.receiver(self.pki.good)
        self.stsPolicy()
        listener = yield self.deliver(self.security(sts=True))
        [delivery] = listener.deliveries
        self.assertEqual((delivery.status, delivery.tls), ("sent", TLSFacts("mta-sts", True, True)))
        self.assertTrue(server.messages[0].tls)

    # REQUIRETLS (RFC 8689) and TLS-Required: No

    def flagged(self, queueId: str = "Q1", recipient: str = "bob@example.test") -> OutboundMessage:
        return OutboundMessage(
            queueId, "alice@gopherpost.test", (recipient,), MESSAGE, requireTLS=True
        )

    @inlineCallbacks
    def test_requireTLSSent(self) -> InlineCallbacks:
        """
        A REQUIRETLS message to a DANE host that advertises REQUIRETLS goes
        over TLS, with C{REQUIRETLS} on its MAIL command.
        """
        certificate = selfSignedCertificate(self.mktemp(), [MX])
        server = self.receiver(certificate, WITH_REQUIRETLS)
        self.dane(server, certificate)
        listener = yield self.deliver(self.security(), self.flagged())
        [delivery] = listener.deliveries
        self.assertEqual(delivery.status, "sent")
        [message] = server.messages
        self.assertTrue(message.tls)
        self.assertIn("REQUIRETLS", message.mailParameters)

    @inlineCallbacks
    def test_requireTLSNextHopLacksIt(self) -> InlineCallbacks:
        """
        A DANE host that does not advertise REQUIRETLS: the message is not
        sent there, and with no other host it fails with 5.7.30.
        """
        certificate = selfSignedCertificate(self.mktemp(), [MX])
        server = self.receiver(certificate)
        self.dane(server, certificate)
        listener = yield self.deliver(self.security(), self.flagged())
        delivery = listener.last("bob@example.test")
        self.assertEqual(delivery.status, "failed")
        self.assertEqual(delivery.dsn, "5.7.30")
        self.assertIn("does not support REQUIRETLS", delivery.reply)
        self.assertEqual(server.messages, [])
        self.assertFalse(any(c.upper().startswith(b"MAIL") for c in server.commands))

    @inlineCallbacks
    def test_requireTLSUnverifiedHost(self) -> InlineCallbacks:
        """
        Without DANE or MTA-STS no host qualifies: no connection, 5.7.30;
        a usual message of the same attempt is still delivered.
        """
        server = self.receiver(self.pki.good, WITH_REQUIRETLS)
        usual = OutboundMessage("Q2", "alice@gopherpost.test", ("carol@example.test",), MESSAGE)
        listener = yield self.deliver(self.security(), self.flagged(), usual)
        flagged = listener.last("bob@example.test")
        self.assertEqual(flagged.status, "failed")
        self.assertTrue(flagged.reply.startswith("5.7.30 REQUIRETLS: no mail exchanger"))
        self.assertEqual(listener.last("carol@example.test").status, "sent")
        self.assertEqual([m.recipients for m in server.messages], [["carol@example.test"]])
        self.assertNotIn("REQUIRETLS", server.messages[0].mailParameters)

    @inlineCallbacks
    def test_requireTLSCountsTestingAsEnforce(self) -> InlineCallbacks:
        """
        MTA-STS C{testing} is C{enforce} for a REQUIRETLS message: sent
        over verified TLS with the parameter.
        """
        server = self.receiver(self.pki.good, WITH_REQUIRETLS)
        self.stsPolicy(mode="testing")
        listener = yield self.deliver(self.security(sts=True), self.flagged())
        [delivery] = listener.deliveries
        self.assertEqual((delivery.status, delivery.tls), ("sent", TLSFacts("mta-sts", True, True)))
        self.assertIn("REQUIRETLS", server.messages[0].mailParameters)

    @inlineCallbacks
    def test_tlsRequiredNo(self) -> InlineCallbacks:
        """
        C{TLS-Required: No}: DANE is ignored for the message (delivered
        despite TLSA records that do not match), others still deferred.
        """
        server = self.receiver(self.pki.good)
        self.dane(server, self.pki.wrongName)
        relaxed = OutboundMessage("Q1", "alice@gopherpost.test", ("bob@example.test",), RELAXED)
        usual = OutboundMessage("Q2", "alice@gopherpost.test", ("carol@example.test",), MESSAGE)
        listener = yield self.deliver(self.security(), relaxed, usual)
        self.assertEqual(listener.last("bob@example.test").status, "sent")
        self.assertEqual(listener.last("bob@example.test").tls.label, "may")
        self.assertEqual(listener.last("carol@example.test").status, "deferred")
        self.assertEqual([m.recipients for m in server.messages], [["bob@example.test"]])

    # Through the queue

    @inlineCallbacks
    def test_queue(self) -> InlineCallbacks:
        """
        A stripped enforce domain stays pending with the reason, and the
        deferral's log line says C{tls=mta-sts}; once the MX offers TLS, a
        later attempt delivers it, logged C{tls=mta-sts tlsResult=verified}.
        """
        server = self.receiver(None)
        self.stsPolicy()
        security = self.security(sts=True)
        self.harness.startQueue(courier=self.harness.courier(transportSecurity=security))
        envelope = yield self.harness.spoolMessage(["bob@example.test"])
        yield eventually(lambda: self.harness.settled(envelope))
        [recipient] = self.harness.state(envelope).recipients
        self.assertEqual(recipient.status, PENDING)
        self.assertIn("does not offer STARTTLS", recipient.lastError)
        self.assertEqual(server.messages, [])
        [deferral] = self.harness.audit.named("delivery.deferral")
        self.assertEqual((deferral["tls"], deferral["tlsResult"]), ("mta-sts", "cleartext"))
        server.contextFactory = SMTPTestServer(certificate=self.pki.good).contextFactory
        self.harness.clock.advance(3600)
        yield eventually(lambda: self.harness.settled(envelope, attempts=2))
        [recipient] = self.harness.state(envelope).recipients
        self.assertEqual(recipient.status, DELIVERED)
        self.assertTrue(server.messages[0].tls)
        [success] = self.harness.audit.named("delivery.success")
        self.assertEqual((success["tls"], success["tlsResult"]), ("mta-sts", "verified"))

    @inlineCallbacks
    def test_queueRequireTLSBounces(self) -> InlineCallbacks:
        """
        A message spooled with the REQUIRETLS flag (the envelope's
        metadata) that no host qualifies for fails at once and bounces
        with 5.7.30.
        """
        server = self.receiver(self.pki.good)
        security = self.security()
        self.harness.startQueue(courier=self.harness.courier(transportSecurity=security))
        spool = self.harness.spool
        writer = spool.newWriter()
        writer.write(MESSAGE)
        envelope = yield spool.commit(
            writer,
            "alice@gopherpost.test",
            [("bob@example.test", False)],
            "127.0.0.1",
            "client.test",
            True,
            metadata={"requiretls": True},
        )
        yield eventually(lambda: self.harness.settled(envelope) and bool(self.harness.bounces()))
        state = self.harness.state(envelope)
        self.assertTrue(state.requireTLS)
        [recipient] = state.recipients
        self.assertEqual(recipient.status, FAILED)
        self.assertTrue(recipient.lastError.startswith("5.7.30 "), recipient.lastError)
        self.assertEqual(server.connectionsMade, 0)
        [bounce] = self.harness.bounces()
        report = yield self.harness.spool.readMessage(bounce)
        self.assertIn(b"5.7.30", report)


class StateTests(TestCase):
    """
    The REQUIRETLS flag in the relay state.
    """

    def test_roundTrip(self) -> None:
        """
        A flagged message's state keeps the flag; others' files do not
        mention it (the format earlier versions read).
        """
        from gopherpost.relay.state import MessageState

        flagged = MessageState("Q1", "2026-12-01", 1.0, "a@b.test", [], "", requireTLS=True)
        self.assertTrue(MessageState.fromJSON(flagged.toJSON()).requireTLS)
        usual = MessageState("Q2", "2026-12-01", 1.0, "a@b.test", [], "")
        self.assertNotIn(b"requireTLS", usual.toJSON())
        self.assertFalse(MessageState.fromJSON(usual.toJSON()).requireTLS)


class DeliveryLogTests(TestCase):
    """
    The delivery log line says which transport security applied.
    """

    def test_line(self) -> None:
        from gopherpost.relay.deliverylog import recipientLine, tlsOf

        self.assertEqual(tlsOf(TLSFacts("dane", True, True)), "dane/verified")
        self.assertEqual(tlsOf(TLSFacts("verify", True, False)), "verify/unverified")
        self.assertEqual(tlsOf(TLSFacts("may", False, False)), "may/cleartext")
        self.assertEqual(tlsOf(None), "")
        line = recipientLine(
            "Q1",
            "bob@example.test",
            "mx[127.0.0.2]:25",
            1.0,
            (0, 0, 0),
            "2.0.0",
            "sent",
            "250 ok",
            tlsOf(TLSFacts("mta-sts", True, True)),
        )
        self.assertTrue(line.endswith("status=sent (250 ok), tls=mta-sts/verified"), line)
        plain = recipientLine(
            "Q1", "bob@example.test", "mx[127.0.0.2]:25", 1.0, (0, 0, 0), "2.0.0", "sent", "250 ok"
        )
        self.assertNotIn("tls=", plain)
