"""
Tests for L{gopherpost.acme.renewal}.
"""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.acme.renewal import (
    RETRY_MAX,
    RenewalWindow,
    ariCertificateID,
    parseRenewalInfo,
    renewalTime,
    retryDelay,
    thirdOfLifetimeLeft,
)

DAY = 86400.0


def certificate(serial: int, keyIdentifier: bytes | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.test")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=90))
    )
    if keyIdentifier is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(keyIdentifier, None, None), critical=False
        )
    return builder.sign(key, hashes.SHA256())


class RenewalTimeTests(SynchronousTestCase):
    def test_thirdOfLifetime(self) -> None:
        """
        Day 60 of a 90-day certificate; day 4 of a 6-day one.
        """
        self.assertEqual(thirdOfLifetimeLeft(0, 90 * DAY), 60 * DAY)
        self.assertEqual(renewalTime(1000, 1000 + 6 * DAY), 1000 + 4 * DAY)

    def test_window(self) -> None:
        """
        Inside the window, where the random number says.
        """
        window = RenewalWindow(100.0, 200.0)
        self.assertEqual(renewalTime(0, 90 * DAY, window, lambda: 0.0), 100.0)
        self.assertEqual(renewalTime(0, 90 * DAY, window, lambda: 0.25), 125.0)
        moment = renewalTime(0, 90 * DAY, window)
        self.assertTrue(100.0 <= moment <= 200.0)

    def test_retryDelay(self) -> None:
        self.assertEqual(
            [retryDelay(n) for n in range(0, 10)],
            [0, 300, 600, 1200, 2400, 4800, 9600, 19200, RETRY_MAX, RETRY_MAX],
        )
        self.assertEqual(retryDelay(10_000), RETRY_MAX)


class RenewalInformationTests(SynchronousTestCase):
    def test_certificateID(self) -> None:
        """
        The example of RFC 9773, section 4.1.
        """
        cert = certificate(0x0087654321, bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4"))
        self.assertEqual(ariCertificateID(cert), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")

    def test_certificateIDSmallSerial(self) -> None:
        cert = certificate(0x01, b"\x01\x02")
        self.assertEqual(ariCertificateID(cert), "AQI.AQ")

    def test_noAuthorityKeyIdentifier(self) -> None:
        self.assertRaises(ValueError, ariCertificateID, certificate(5, None))

    def test_parse(self) -> None:
        """
        RFC 3339 dates with a Z and nanoseconds, an explanation URL, and a
        Retry-After kept between a minute and a day.
        """
        window = parseRenewalInfo(
            {
                "suggestedWindow": {
                    "start": "2026-03-01T00:00:00.123456789Z",
                    "end": "2026-03-02T00:00:00+00:00",
                },
                "explanationURL": "https://ca.example.test/why",
            },
            retryAfter=5.0,
        )
        start = datetime.datetime(2026, 3, 1, 0, 0, 0, 123456, tzinfo=datetime.UTC).timestamp()
        self.assertEqual(window.start, start)
        self.assertAlmostEqual(window.end - window.start, DAY - 0.123456, places=5)
        self.assertEqual(window.retryAfter, 60.0)
        self.assertEqual(window.explanationURL, "https://ca.example.test/why")
        self.assertEqual(
            parseRenewalInfo(
                {
                    "suggestedWindow": {
                        "start": "2026-03-01T00:00:00Z",
                        "end": "2026-03-01T00:00:00Z",
                    }
                },
                retryAfter=10 * DAY,
            ).retryAfter,
            DAY,
        )

    def test_parseErrors(self) -> None:
        documents: list[Any] = [
            [],
            {},
            {"suggestedWindow": "soon"},
            {"suggestedWindow": {"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"}},
            {"suggestedWindow": {"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00"}},
            {"suggestedWindow": {"start": 1, "end": 2}},
            {"suggestedWindow": {"start": "yesterday", "end": "2026-03-02T00:00:00Z"}},
        ]
        for document in documents:
            self.assertRaises(ValueError, parseRenewalInfo, document)
