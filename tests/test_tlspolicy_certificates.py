"""
Tests for L{gopherpost.tlspolicy.certificates}: TLSA records, DANE-EE and
DANE-TA checks (RFC 7672), host name matching, OpenSSL error types.
"""

from __future__ import annotations

import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.tlspolicy.certificates import (
    DANE_EE,
    DANE_TA,
    TLSARecord,
    certificateNames,
    matchesHostname,
    verifyDANE,
    verifyErrorType,
)
from gopherpost.tlspolicy.results import (
    CERTIFICATE_EXPIRED,
    CERTIFICATE_HOST_MISMATCH,
    CERTIFICATE_NOT_TRUSTED,
    TLSA_INVALID,
    VALIDATION_FAILURE,
)
from tests.support.certs import CertificateAuthority, selfSignedCertificate

HOST = "mx.example.test"
DOMAIN = "example.test"


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def record(usage: int, selector: int, matching: int, certificate: x509.Certificate) -> TLSARecord:
    data = spki(certificate) if selector == 1 else der(certificate)
    if matching == 1:
        data = hashlib.sha256(data).digest()
    elif matching == 2:
        data = hashlib.sha512(data).digest()
    return TLSARecord(usage, selector, matching, data)


class RecordTests(SynchronousTestCase):
    """
    L{TLSARecord}: usability, matching, presentation.
    """

    def setUp(self) -> None:
        self.cert = selfSignedCertificate(self.mktemp(), [HOST]).certificate

    def test_usable(self) -> None:
        digest = b"\x01" * 32
        self.assertTrue(TLSARecord(3, 1, 1, digest).usable)
        self.assertTrue(TLSARecord(2, 0, 2, b"\x01" * 64).usable)
        self.assertTrue(TLSARecord(3, 0, 0, b"\x30\x01").usable)
        for unusable in [
            TLSARecord(0, 1, 1, digest),  # PKIX-TA: not for SMTP
            TLSARecord(1, 1, 1, digest),  # PKIX-EE
            TLSARecord(4, 1, 1, digest),
            TLSARecord(3, 2, 1, digest),
            TLSARecord(3, 1, 3, digest),
            TLSARecord(3, 1, 1, b"\x01" * 31),
            TLSARecord(3, 1, 2, digest),
            TLSARecord(3, 1, 0, b""),
        ]:
            self.assertFalse(unusable.usable, unusable)

    def test_matchesEverySelectorAndType(self) -> None:
        for selector in (0, 1):
            for matching in (0, 1, 2):
                self.assertTrue(record(3, selector, matching, self.cert).matches(self.cert))
        other = selfSignedCertificate(self.mktemp(), [HOST]).certificate
        self.assertFalse(record(3, 1, 1, self.cert).matches(other))

    def test_presentation(self) -> None:
        self.assertEqual(TLSARecord(3, 1, 1, b"\xab\xcd").presentation(), "3 1 1 abcd")

    def test_fromRdata(self) -> None:
        class Rdata:
            usage, selector, mtype, cert = 3, 1, 1, b"\x00" * 32

        self.assertEqual(TLSARecord.fromRdata(Rdata()), TLSARecord(3, 1, 1, b"\x00" * 32))


class DANETests(SynchronousTestCase):
    """
    L{verifyDANE}.
    """

    def setUp(self) -> None:
        directory = self.mktemp()
        self.root = CertificateAuthority(directory)
        self.intermediate = self.root.intermediate()
        self.leaf = self.intermediate.issue([HOST]).certificate
        self.chain = [self.leaf, self.intermediate.certificate]

    def test_daneEE(self) -> None:
        """
        DANE-EE matches the leaf; names and expiry do not matter.
        """
        expired = self.root.issue(
            ["another.name.test"],
            notBefore=datetime.datetime(2001, 1, 1),
            notAfter=datetime.datetime(2002, 1, 1),
        ).certificate
        for leaf in (self.leaf, expired):
            verdict = verifyDANE([record(DANE_EE, 1, 1, leaf)], [leaf], [HOST, DOMAIN])
            self.assertTrue(verdict.ok)
            self.assertEqual(verdict.record, record(DANE_EE, 1, 1, leaf))

    def test_daneEEOnlyTheLeaf(self) -> None:
        """
        A DANE-EE record matching an intermediate is no match.
        """
        verdict = verifyDANE(
            [record(DANE_EE, 0, 1, self.intermediate.certificate)], self.chain, [HOST]
        )
        self.assertEqual(verdict.failureType, TLSA_INVALID)

    def test_daneTA(self) -> None:
        """
        DANE-TA: the intermediate (or the root, when sent) is the anchor.
        """
        verdict = verifyDANE(
            [record(DANE_TA, 1, 1, self.intermediate.certificate)], self.chain, [HOST]
        )
        self.assertTrue(verdict.ok)
        chain = self.chain + [self.root.certificate]
        verdict = verifyDANE([record(DANE_TA, 0, 2, self.root.certificate)], chain, [HOST])
        self.assertTrue(verdict.ok)

    def test_daneTAAnchorNotSent(self) -> None:
        """
        A DANE-TA anchor the server does not send cannot be used.
        """
        verdict = verifyDANE([record(DANE_TA, 1, 1, self.root.certificate)], self.chain, [HOST])
        self.assertFalse(verdict.ok)
        self.assertEqual(verdict.failureType, TLSA_INVALID)

    def test_daneTAName(self) -> None:
        """
        DANE-TA checks the name: the MX host or the destination domain.
        """
        records = [record(DANE_TA, 1, 1, self.intermediate.certificate)]
        domainLeaf = self.intermediate.issue(["*.example.test"]).certificate
        self.assertTrue(verifyDANE(records, [domainLeaf, self.intermediate.certificate], [HOST]).ok)
        verdict = verifyDANE(records, self.chain, ["other.test"])
        self.assertEqual(verdict.failureType, CERTIFICATE_HOST_MISMATCH)
        self.assertIn("other.test", verdict.reason)
        self.assertTrue(verifyDANE(records, self.chain, ["mx2.test", HOST]).ok)

    def test_daneTAExpiry(self) -> None:
        """
        DANE-TA checks validity dates.
        """
        expired = self.intermediate.issue(
            [HOST],
            notBefore=datetime.datetime(2001, 1, 1),
            notAfter=datetime.datetime(2002, 1, 1),
        ).certificate
        records = [record(DANE_TA, 1, 1, self.intermediate.certificate)]
        verdict = verifyDANE(records, [expired, self.intermediate.certificate], [HOST])
        self.assertEqual(verdict.failureType, CERTIFICATE_EXPIRED)

    def test_daneTAWrongSigner(self) -> None:
        """
        A leaf that the anchor did not sign fails even with the anchor sent.
        """
        stranger = CertificateAuthority(self.mktemp(), "Stranger").issue([HOST]).certificate
        records = [record(DANE_TA, 1, 1, self.intermediate.certificate)]
        verdict = verifyDANE(records, [stranger, self.intermediate.certificate], [HOST])
        self.assertFalse(verdict.ok)
        self.assertEqual(verdict.failureType, CERTIFICATE_NOT_TRUSTED)

    def test_unusableSkipped(self) -> None:
        """
        Unusable records never match, even with the right data.
        """
        verdict = verifyDANE([record(1, 1, 1, self.leaf)], self.chain, [HOST])
        self.assertEqual(verdict.failureType, TLSA_INVALID)

    def test_anyRecordMatches(self) -> None:
        records = [TLSARecord(3, 1, 1, b"\x00" * 32), record(DANE_EE, 1, 2, self.leaf)]
        self.assertTrue(verifyDANE(records, self.chain, [HOST]).ok)

    def test_noCertificate(self) -> None:
        verdict = verifyDANE([record(DANE_EE, 1, 1, self.leaf)], [], [HOST])
        self.assertEqual(verdict.failureType, VALIDATION_FAILURE)


class NameTests(SynchronousTestCase):
    """
    Host name matching.
    """

    def test_subjectAltName(self) -> None:
        cert = selfSignedCertificate(self.mktemp(), ["MX.Example.Test", "*.mail.test"]).certificate
        self.assertEqual(certificateNames(cert), ["MX.Example.Test", "*.mail.test"])
        self.assertTrue(matchesHostname(cert, ["mx.example.test."]))
        self.assertTrue(matchesHostname(cert, ["a.mail.test"]))
        self.assertFalse(matchesHostname(cert, ["mail.test"]))
        self.assertFalse(matchesHostname(cert, ["a.b.mail.test"]))
        self.assertFalse(matchesHostname(cert, ["example.test"]))

    def test_errorTypes(self) -> None:
        self.assertEqual(verifyErrorType(10), CERTIFICATE_EXPIRED)
        self.assertEqual(verifyErrorType(20), CERTIFICATE_NOT_TRUSTED)
        self.assertEqual(verifyErrorType(18), CERTIFICATE_NOT_TRUSTED)
        self.assertEqual(verifyErrorType(7), VALIDATION_FAILURE)
