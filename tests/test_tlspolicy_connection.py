"""
Tests for L{gopherpost.tlspolicy.connection}: the checked STARTTLS
connection creators, through the real SMTP client against a real receiving
server over loopback with certificates made at test time.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Generator
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from gopherpost.relay.client import DEFERRED, SENT, deliver
from gopherpost.tlspolicy.certificates import TLSARecord
from gopherpost.tlspolicy.connection import (
    ClientTLSContexts,
    DANECheck,
    TLSObservation,
    WebPKICheck,
)
from gopherpost.tlspolicy.results import (
    CERTIFICATE_EXPIRED,
    CERTIFICATE_HOST_MISMATCH,
    CERTIFICATE_NOT_TRUSTED,
    TLSA_INVALID,
)
from tests.support.certs import CertificateFiles, makeTestPKI
from tests.support.smtpserver import SMTPTestServer

InlineCallbacks = Generator[Deferred[Any], Any, None]

HOST = "mx.example.test"
MESSAGE = b"Subject: checked\r\n\r\nhello\r\n"


def daneEE(files: CertificateFiles) -> TLSARecord:
    key = files.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TLSARecord(3, 1, 1, hashlib.sha256(key).digest())


class CheckedConnectionTests(TestCase):
    """
    Outbound STARTTLS with a certificate check.
    """

    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), HOST)
        self.contexts = ClientTLSContexts(trustRoot=self.pki.ca.trustRoot())

    def send(
        self, certificate: CertificateFiles, check: Any, enforce: bool, policy: str = "require"
    ) -> Deferred[Any]:
        server = SMTPTestServer(hostname=HOST, certificate=certificate).start()
        self.addCleanup(server.stop)
        self.server = server
        self.observation = TLSObservation()

        def creator(policyName: str, host: str) -> Any:
            return self.contexts.creator(host, check, enforce, "TEST", self.observation)

        return deliver(
            reactor,
            HOST,
            server.host,
            server.port,
            "gopher.example.test",
            "a@gopher.example.test",
            ["b@example.test"],
            MESSAGE,
            policy,
            contextFactoryFor=creator,
        )

    @inlineCallbacks
    def assertRefused(
        self, certificate: CertificateFiles, check: Any, failureType: str, text: str
    ) -> InlineCallbacks:
        """
        The check refuses the certificate: deferred, nothing sent, the
        reason in the outcome.
        """
        result = yield self.send(certificate, check, enforce=True)
        [outcome] = result.outcomes
        self.assertEqual(outcome.status, DEFERRED)
        self.assertIn("TEST: ", outcome.text)
        self.assertIn(text, outcome.text)
        self.assertIn("no fallback to cleartext", outcome.text)
        self.assertEqual(self.server.messages, [])
        self.assertNotIn(b"MAIL FROM:<a@gopher.example.test>", self.server.commands)
        self.assertTrue(self.observation.attempted)
        assert self.observation.verdict is not None
        self.assertEqual(self.observation.verdict.failureType, failureType)

    @inlineCallbacks
    def test_webPKIGood(self) -> InlineCallbacks:
        result = yield self.send(self.pki.chained, WebPKICheck([HOST]), enforce=True)
        self.assertEqual(result.outcomes[0].status, SENT)
        self.assertTrue(result.tlsUsed)
        self.assertTrue(self.server.messages[0].tls)
        self.assertTrue(self.observation.completed)
        assert self.observation.verdict is not None
        self.assertTrue(self.observation.verdict.ok)

    def test_webPKIWrongName(self) -> Deferred[None]:
        return self.assertRefused(
            self.pki.wrongName,
            WebPKICheck([HOST]),
            CERTIFICATE_HOST_MISMATCH,
            "the certificate is not for mx.example.test",
        )

    def test_webPKIExpired(self) -> Deferred[None]:
        return self.assertRefused(
            self.pki.expired, WebPKICheck([HOST]), CERTIFICATE_EXPIRED, "expired"
        )

    def test_webPKIUntrusted(self) -> Deferred[None]:
        return self.assertRefused(
            self.pki.selfSigned, WebPKICheck([HOST]), CERTIFICATE_NOT_TRUSTED, "self-signed"
        )

    @inlineCallbacks
    def test_recordOnly(self) -> InlineCallbacks:
        """
        A check that does not enforce lets the message go over TLS, and
        records the failure.
        """
        result = yield self.send(self.pki.wrongName, WebPKICheck([HOST]), False, "may")
        self.assertEqual(result.outcomes[0].status, SENT)
        self.assertTrue(self.server.messages[0].tls)
        assert self.observation.verdict is not None
        self.assertEqual(self.observation.verdict.failureType, CERTIFICATE_HOST_MISMATCH)

    @inlineCallbacks
    def test_daneEE(self) -> InlineCallbacks:
        """
        DANE-EE: a matching certificate passes whatever its name and dates.
        """
        expired = self.pki.ca.issue(
            ["elsewhere.test"],
            notBefore=datetime.datetime(2001, 1, 1),
            notAfter=datetime.datetime(2002, 1, 1),
        )
        result = yield self.send(expired, DANECheck([daneEE(expired)], [HOST]), enforce=True)
        self.assertEqual(result.outcomes[0].status, SENT)
        self.assertTrue(self.server.messages[0].tls)

    def test_daneMismatch(self) -> Deferred[None]:
        return self.assertRefused(
            self.pki.good,
            DANECheck([daneEE(self.pki.chained)], [HOST]),
            TLSA_INVALID,
            "no TLSA record of 1 matches",
        )

    @inlineCallbacks
    def test_daneTA(self) -> InlineCallbacks:
        """
        DANE-TA with the intermediate the server sends as the anchor.
        """
        pem = self.pki.chained.certificatePEM()
        second = pem.index(b"-----BEGIN CERTIFICATE-----", 1)
        intermediate = x509.load_pem_x509_certificate(pem[second:])
        key = intermediate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        records = [TLSARecord(2, 1, 1, hashlib.sha256(key).digest())]
        result = yield self.send(self.pki.chained, DANECheck(records, [HOST]), enforce=True)
        self.assertEqual(result.outcomes[0].status, SENT)

    @inlineCallbacks
    def test_noCheck(self) -> InlineCallbacks:
        """
        Without a check the connection is encrypted and nothing is judged.
        """
        result = yield self.send(self.pki.selfSigned, None, enforce=False, policy="may")
        self.assertEqual(result.outcomes[0].status, SENT)
        self.assertTrue(self.observation.completed)
        self.assertIsNone(self.observation.verdict)

    @inlineCallbacks
    def test_uncheckable(self) -> InlineCallbacks:
        """
        A certificate the check cannot read fails it, with no traceback
        logged (trial would report one as an error).
        """

        def broken(chain: Any, errors: Any) -> Any:
            raise ValueError("unsupported key type")

        result = yield self.send(self.pki.good, broken, enforce=True)
        [outcome] = result.outcomes
        self.assertEqual(outcome.status, DEFERRED)
        self.assertIn("cannot be checked: ValueError: unsupported key type", outcome.text)
        self.assertEqual(self.server.messages, [])
