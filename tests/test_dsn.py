"""
Tests for L{gopherpost.relay.dsn}.
"""

from __future__ import annotations

import calendar
import re
from email import message_from_bytes, policy
from email.message import Message

from twisted.trial import unittest

from gopherpost.relay.dsn import (
    DSN_ENVELOPE_SENDER,
    RecipientFailure,
    buildDSN,
    shouldBounce,
)

ORIGINAL = (
    b"Received: from client.example.test by mx.example.test\r\n"
    b"From: Alice <alice@sender.test>\r\n"
    b"To: bob@example.test, carol@example.test\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Message-ID: <orig-1@sender.test>\r\n"
    b"\r\n"
    b"Secret body text.\r\n"
)

ARRIVAL = float(calendar.timegm((2026, 11, 22, 14, 0, 0)))
NOW = ARRIVAL + 432000.0


def _build(**overrides) -> bytes:
    arguments = dict(
        reportingMTA="mx.example.test",
        originalSender="alice@sender.test",
        failures=[
            RecipientFailure(
                recipient="bob@example.test",
                status="5.1.1",
                reason="host mx.example.test said: 550 5.1.1 No such user",
                diagnosticCode="550 5.1.1 No such user",
                remoteMTA="mx.example.test",
                lastAttempt=NOW - 60,
            ),
            RecipientFailure(
                recipient="carol@nomail.test",
                status="5.1.10",
                reason="domain does not accept mail (null MX)",
            ),
        ],
        originalMessage=ORIGINAL,
        arrivalDate=ARRIVAL,
        now=NOW,
        queueId="Q123",
    )
    arguments.update(overrides)
    return buildDSN(**arguments)


def _parse(dsn: bytes) -> Message:
    return message_from_bytes(dsn, policy=policy.compat32)


class ShouldBounceTests(unittest.SynchronousTestCase):
    """
    L{shouldBounce}.
    """

    def test_nullSender(self) -> None:
        """
        The null reverse-path never gets a bounce.
        """
        for sender in (None, "", "<>", " < > ", "  "):
            self.assertFalse(shouldBounce(sender), sender)
        self.assertEqual(DSN_ENVELOPE_SENDER, "")
        self.assertFalse(shouldBounce(DSN_ENVELOPE_SENDER))

    def test_realSender(self) -> None:
        """
        Anyone else does.
        """
        for sender in ("alice@sender.test", "<alice@sender.test>", "MAILER-DAEMON@x.test"):
            self.assertTrue(shouldBounce(sender), sender)


class BuildDSNTests(unittest.SynchronousTestCase):
    """
    L{buildDSN}.
    """

    def test_crlfOnly(self) -> None:
        """
        Every line ends in CRLF; none is longer than RFC 5322 allows.
        """
        dsn = _build()
        self.assertIsNone(re.search(rb"(?<!\r)\n", dsn))
        self.assertIsNone(re.search(rb"\r(?!\n)", dsn))
        self.assertTrue(dsn.endswith(b"--\r\n"))
        self.assertLessEqual(max(len(line) for line in dsn.split(b"\r\n")), 998)

    def test_topHeaders(self) -> None:
        """
        From MAILER-DAEMON to the original sender, auto-replied, a
        multipart/report of type delivery-status, threaded to the original.
        """
        message = _parse(_build())
        self.assertEqual(message["From"], "Mail Delivery System <MAILER-DAEMON@mx.example.test>")
        self.assertEqual(message["To"], "<alice@sender.test>")
        self.assertEqual(message["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(message["Auto-Submitted"], "auto-replied")
        self.assertEqual(message["Date"], "Fri, 27 Nov 2026 14:00:00 +0000")
        self.assertEqual(message["In-Reply-To"], "<orig-1@sender.test>")
        self.assertEqual(message["MIME-Version"], "1.0")
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "delivery-status")
        self.assertTrue(message["Message-ID"].endswith("@mx.example.test>"))
        self.assertIsNone(message["Content-Transfer-Encoding"])

    def test_parts(self) -> None:
        """
        Three parts: text, delivery status, original headers.
        """
        parts = _parse(_build()).get_payload()
        self.assertEqual(
            [p.get_content_type() for p in parts],
            ["text/plain", "message/delivery-status", "text/rfc822-headers"],
        )
        text = parts[0].get_payload()
        self.assertIn("mx.example.test", text)
        self.assertIn("<bob@example.test>: host mx.example.test said: 550 5.1.1 No such user", text)
        self.assertIn("<carol@nomail.test>: domain does not accept mail (null MX)", text)
        self.assertIn("Q123", text)

    def test_deliveryStatus(self) -> None:
        """
        The per-message and per-recipient fields of RFC 3464.
        """
        status = _parse(_build()).get_payload()[1]
        blocks = status.get_payload()
        self.assertEqual(len(blocks), 3)
        perMessage, bob, carol = blocks
        self.assertEqual(perMessage["Reporting-MTA"], "dns; mx.example.test")
        self.assertEqual(perMessage["Arrival-Date"], "Sun, 22 Nov 2026 14:00:00 +0000")
        self.assertEqual(perMessage["X-GopherPost-Queue-ID"], "Q123")
        self.assertEqual(bob["Final-Recipient"], "rfc822; bob@example.test")
        self.assertEqual(bob["Action"], "failed")
        self.assertEqual(bob["Status"], "5.1.1")
        self.assertEqual(bob["Remote-MTA"], "dns; mx.example.test")
        self.assertEqual(bob["Diagnostic-Code"], "smtp; 550 5.1.1 No such user")
        self.assertEqual(bob["Last-Attempt-Date"], "Fri, 27 Nov 2026 13:59:00 +0000")
        self.assertEqual(carol["Final-Recipient"], "rfc822; carol@nomail.test")
        self.assertEqual(carol["Status"], "5.1.10")
        self.assertIsNone(carol["Remote-MTA"])
        self.assertIsNone(carol["Diagnostic-Code"])

    def test_originalHeadersOnly(self) -> None:
        """
        The third part is exactly the original header section; the body is
        not returned.
        """
        dsn = _build()
        self.assertNotIn(b"Secret body text", dsn)
        headers = _parse(dsn).get_payload()[2]
        self.assertEqual(
            headers.get_payload().encode("ascii").splitlines(),
            ORIGINAL.split(b"\r\n\r\n")[0].split(b"\r\n"),
        )

    def test_bareLinefeedsInOriginal(self) -> None:
        """
        An original with LF line ends is returned with CRLF.
        """
        dsn = _build(originalMessage=ORIGINAL.replace(b"\r\n", b"\n"))
        self.assertIsNone(re.search(rb"(?<!\r)\n", dsn))
        self.assertIn(b"\r\nSubject: Quarterly numbers\r\n", dsn)

    def test_noHeaders(self) -> None:
        """
        An original without header section still makes a valid DSN.
        """
        dsn = _build(originalMessage=b"\r\nbody only\r\n")
        self.assertEqual(len(_parse(dsn).get_payload()), 3)
        self.assertNotIn(b"body only", dsn)

    def test_multilineDiagnostic(self) -> None:
        """
        A multi-line reply becomes one field line; non-ASCII is replaced.
        """
        failure = RecipientFailure(
            recipient="bob@example.test",
            status="5.7.1",
            reason="rejected",
            diagnosticCode="550-5.7.1 First line\r\n550 5.7.1 Sécond line",
        )
        dsn = _build(failures=[failure])
        status = _parse(dsn).get_payload()[1].get_payload()[1]
        self.assertEqual(
            status["Diagnostic-Code"], "smtp; 550-5.7.1 First line 550 5.7.1 S?cond line"
        )

    def test_temporaryStatusOfFailure(self) -> None:
        """
        A recipient that failed after temporary errors (lifetime expired) is
        reported as a permanent failure.
        """
        failure = RecipientFailure("bob@example.test", "4.4.1", "connection refused for 5 days")
        status = _parse(_build(failures=[failure])).get_payload()[1].get_payload()[1]
        self.assertEqual(status["Status"], "5.4.1")

    def test_delayed(self) -> None:
        """
        A delay warning keeps its 4.x.x status and says so.
        """
        failure = RecipientFailure(
            "bob@example.test", "4.4.1", "connection refused", action="delayed"
        )
        message = _parse(_build(failures=[failure]))
        self.assertEqual(message["Subject"], "Delayed Mail (still being retried)")
        status = message.get_payload()[1].get_payload()[1]
        self.assertEqual((status["Action"], status["Status"]), ("delayed", "4.4.1"))

    def test_eightBitHeaders(self) -> None:
        """
        8-bit original headers are returned and marked 8bit.
        """
        original = ORIGINAL.replace(b"Quarterly", "Quartalszahlen für".encode())
        dsn = _build(originalMessage=original)
        self.assertIn("für".encode(), dsn)
        self.assertIn(
            b"Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 8bit\r\n", dsn
        )
        self.assertIn(b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nThis is a MIME", dsn)

    def test_deterministic(self) -> None:
        """
        Same input, same DSN (time comes from the caller's clock); the
        Message-ID can be given.
        """
        self.assertEqual(_build(), _build())
        self.assertIn(b"\r\nMessage-ID: <given@x.test>\r\n", _build(messageId="<given@x.test>"))

    def test_invalidInput(self) -> None:
        """
        Unusable statuses, actions, addresses and empty reports are errors.
        """
        self.assertRaises(ValueError, _build, failures=[])
        for bad in (
            RecipientFailure("bob@example.test", "550", "x"),
            RecipientFailure("bob@example.test", "5.1.1", "x", action="bounced"),
            RecipientFailure("bob@example.test\r\nBcc: eve@evil.test", "5.1.1", "x"),
        ):
            self.assertRaises(ValueError, _build, failures=[bad])
        self.assertRaises(ValueError, _build, originalSender="<>")
        self.assertRaises(ValueError, _build, originalSender="a@b.test\r\nBcc: eve@evil.test")

    def test_boundaryNotInContent(self) -> None:
        """
        The boundary does not occur in the returned headers.
        """
        dsn = _build()
        boundary = _parse(dsn).get_boundary()
        self.assertTrue(boundary)
        headersPart = dsn.split(b"Content-Type: text/rfc822-headers\r\n\r\n", 1)[1]
        self.assertEqual(headersPart.count(boundary.encode()), 1)  # only the final delimiter
