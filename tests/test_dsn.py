"""
Tests for L{gopherpost.relay.dsn}.
"""

from __future__ import annotations

import calendar
import re
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from typing import Any, TypeVar

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


def _build(**overrides: Any) -> bytes:
    arguments: dict[str, Any] = dict(
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


M = TypeVar("M", bound=Message)


def _parts(message: M) -> list[M]:
    """
    The parts of a multipart message, or the blocks of a
    message/delivery-status part.
    """
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, type(message))]


def _text(part: Message) -> str:
    payload = part.get_payload()
    assert isinstance(payload, str)
    return payload


def _blocks(message: M) -> list[M]:
    """
    The field blocks of a DSN's message/delivery-status part.
    """
    return _parts(_parts(message)[1])


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
        dsn = _build()
        message = _parse(dsn)
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
        self.assertIn(b"\r\nContent-Type: multipart/report; report-type=delivery-status;", dsn)

    def test_parts(self) -> None:
        """
        Three parts: text, delivery status, original headers.
        """
        parts = _parts(_parse(_build()))
        self.assertEqual(
            [p.get_content_type() for p in parts],
            ["text/plain", "message/delivery-status", "text/rfc822-headers"],
        )
        text = _text(parts[0])
        self.assertIn("mx.example.test", text)
        self.assertIn("<bob@example.test>: host mx.example.test said: 550 5.1.1 No such user", text)
        self.assertIn("<carol@nomail.test>: domain does not accept mail (null MX)", text)
        self.assertIn("Q123", text)

    def test_deliveryStatus(self) -> None:
        """
        The per-message and per-recipient fields of RFC 3464.
        """
        status = _parts(_parse(_build()))[1]
        blocks = _parts(status)
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
        headers = _parts(_parse(dsn))[2]
        self.assertEqual(
            _text(headers).encode("ascii").splitlines(),
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
        self.assertEqual(len(_parts(_parse(dsn))), 3)
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
        status = _blocks(_parse(dsn))[1]
        self.assertEqual(
            status["Diagnostic-Code"], "smtp; 550-5.7.1 First line 550 5.7.1 S?cond line"
        )

    def test_temporaryStatusOfFailure(self) -> None:
        """
        A recipient that failed after temporary errors (lifetime expired) is
        reported as a permanent failure.
        """
        failure = RecipientFailure("bob@example.test", "4.4.1", "connection refused for 5 days")
        status = _blocks(_parse(_build(failures=[failure])))[1]
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
        status = _blocks(message)[1]
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
        assert boundary is not None
        headersPart = dsn.split(b"Content-Type: text/rfc822-headers\r\n\r\n", 1)[1]
        self.assertEqual(headersPart.count(boundary.encode()), 1)  # only the final delimiter


def _parseModern(dsn: bytes) -> EmailMessage:
    message = message_from_bytes(dsn, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


class EmailPackageTests(unittest.SynchronousTestCase):
    """
    The DSN read back with the C{email} package's current API
    (C{policy.default}), as a mail client would.
    """

    def test_structure(self) -> None:
        """
        A multipart/report with the three parts of RFC 6522 and no defects.
        """
        message = _parseModern(_build())
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "delivery-status")
        self.assertEqual(message.defects, [])
        parts = list(message.iter_parts())
        self.assertEqual(
            [p.get_content_type() for p in parts],
            ["text/plain", "message/delivery-status", "text/rfc822-headers"],
        )
        for part in parts:
            self.assertEqual(part.defects, [])
        self.assertEqual(parts[0].get_content_charset(), "us-ascii")
        self.assertIn("Delivery will not be retried.", parts[0].get_content())

    def test_fieldOrder(self) -> None:
        """
        The fields come in the order of RFC 3464's grammar: extension
        fields after the standard ones.
        """
        blocks = _blocks(_parseModern(_build(envelopeId="env-1")))
        self.assertEqual(
            blocks[0].keys(),
            ["Original-Envelope-Id", "Reporting-MTA", "Arrival-Date", "X-GopherPost-Queue-ID"],
        )
        self.assertEqual(
            blocks[1].keys(),
            [
                "Final-Recipient",
                "Action",
                "Status",
                "Remote-MTA",
                "Diagnostic-Code",
                "Last-Attempt-Date",
            ],
        )

    def test_longDiagnostic(self) -> None:
        """
        A long remote reply stays one line (as Postfix writes it), is never
        turned into RFC 2047 encoded words, and reads back whole.
        """
        reply = "550 5.7.1 " + " ".join(f"word{i}" for i in range(60)) + " " + "x" * 200
        failure = RecipientFailure("bob@example.test", "5.7.1", "rejected", diagnosticCode=reply)
        dsn = _build(failures=[failure])
        self.assertNotIn(b"=?", dsn)
        lines = dsn.split(b"\r\n")
        self.assertLessEqual(max(len(line) for line in lines), 998)
        self.assertIn(b"\r\nDiagnostic-Code: smtp; " + reply.encode() + b"\r\n", dsn)
        status = _blocks(_parseModern(dsn))[1]
        self.assertEqual(str(status["Diagnostic-Code"]), "smtp; " + reply)

    def test_fieldsStayOneLine(self) -> None:
        """
        Line breaks in caller-given values cannot start new fields.
        """
        failure = RecipientFailure(
            "bob@example.test",
            "5.1.1",
            "no\r\nX-Injected: reason",
            remoteMTA="mx.example.test\r\nX-Injected: mta",
        )
        dsn = _build(failures=[failure], envelopeId="e\r\nX-Injected: envid", queueId="q\nX-I: q")
        self.assertNotIn(b"\nX-Injected", dsn)
        self.assertNotIn(b"\nX-I:", dsn)


class ParametersTests(unittest.SynchronousTestCase):
    """
    The RFC 3461 parameters a DSN reports: ENVID, ORCPT, RET, and the
    delay and success reports.
    """

    def test_envelopeId(self) -> None:
        """
        ENVID is reported as Original-Envelope-Id.
        """
        status = _blocks(_parse(_build(envelopeId="QQ314159")))[0]
        self.assertEqual(status["Original-Envelope-Id"], "QQ314159")
        status = _blocks(_parse(_build()))[0]
        self.assertIsNone(status["Original-Envelope-Id"])

    def test_originalRecipient(self) -> None:
        """
        ORCPT is reported as Original-Recipient, with its address type
        (C{rfc822} when it has none).
        """
        failures = [
            RecipientFailure(
                "bob@example.test", "5.1.1", "x", originalRecipient="rfc822;Bob@Example.test"
            ),
            RecipientFailure("carol@example.test", "5.1.1", "x", originalRecipient="c@x.test"),
            RecipientFailure("dave@example.test", "5.1.1", "x"),
        ]
        blocks = _blocks(_parse(_build(failures=failures)))
        self.assertEqual(blocks[1]["Original-Recipient"], "rfc822; Bob@Example.test")
        self.assertEqual(blocks[2]["Original-Recipient"], "rfc822; c@x.test")
        self.assertIsNone(blocks[3]["Original-Recipient"])
        self.assertEqual(blocks[1].keys()[:2], ["Original-Recipient", "Final-Recipient"])

    def test_delayWarning(self) -> None:
        """
        A delay report says until when delivery will be retried.
        """
        failure = RecipientFailure(
            "bob@example.test",
            "4.4.1",
            "connection refused",
            action="delayed",
            willRetryUntil=ARRIVAL + 432000,
        )
        message = _parse(_build(failures=[failure]))
        status = _blocks(message)[1]
        self.assertEqual(status["Will-Retry-Until"], "Fri, 27 Nov 2026 14:00:00 +0000")
        self.assertIn("will be retried", _text(_parts(message)[0]))

    def test_success(self) -> None:
        """
        A success report (C{delivered}, C{relayed}) has its own subject and
        text, and keeps its 2.x.x status.
        """
        failures = [
            RecipientFailure("bob@example.test", "2.0.0", "delivered to mailbox", "delivered"),
            RecipientFailure(
                "carol@example.test",
                "2.0.0",
                "relayed to mx.example.test",
                remoteMTA="mx.example.test",
                action="relayed",
            ),
        ]
        for failure in failures:
            self.assertEqual(failure.status, "2.0.0")
        failures = [
            RecipientFailure(
                "bob@example.test", "2.0.0", "delivered to mailbox", action="delivered"
            ),
            RecipientFailure(
                "carol@example.test", "2.0.0", "relayed", remoteMTA="mx.test", action="relayed"
            ),
        ]
        message = _parse(_build(failures=failures))
        self.assertEqual(message["Subject"], "Successful Mail Delivery Report")
        blocks = _blocks(message)
        self.assertEqual(
            [(b["Action"], b["Status"]) for b in blocks[1:]],
            [("delivered", "2.0.0"), ("relayed", "2.0.0")],
        )
        self.assertIn("was delivered", _text(_parts(message)[0]))

    def test_returnContent(self) -> None:
        """
        With C{returnContent} (RET=FULL) the whole message is returned as
        message/rfc822, byte for byte.
        """
        dsn = _build(returnContent=True)
        self.assertIn(ORIGINAL, dsn)
        message = _parseModern(dsn)
        returned = _parts(message)[2]
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        self.assertEqual(returned["Content-Description"], "Undelivered Message")
        inner = returned.get_content()
        self.assertEqual(inner["Subject"], "Quarterly numbers")
        self.assertEqual(inner.get_content().rstrip("\r\n"), "Secret body text.")
        self.assertIn("Your message is attached below.", _parts(message)[0].get_content())
        self.assertIsNone(message["Content-Transfer-Encoding"])

    def test_returnContentVerbatim(self) -> None:
        """
        A returned message keeps its fields as they were, folding, long
        lines and encoded words included, and its MIME structure.
        """
        original = (
            b"Received: from a.test (a.test [192.0.2.1])\r\n\tby mx.test with ESMTPS;\r\n"
            b" Mon, 30 Nov 2026 10:00:00 +0000\r\n"
            b"DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=s; c=simple/simple;\r\n"
            b"\th=from:to:subject; bh=abc=; b=" + b"A" * 300 + b"\r\n"
            b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a subject line that goes on and on "
            b"past seventy-eight characters\r\n"
            b"X-Raw: F\xc3\xbcr 8-bit\r\n"
            b"From: a@x.test\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            b"preamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nH\xc3\xa9llo\r\nFrom here\r\n"
            b"--b1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b1--\r\nepilogue\r\n"
        )
        dsn = _build(returnContent=True, originalMessage=original)
        self.assertIn(b"\r\n\r\n" + original + b"\r\n--", dsn)

    def test_returnContentEightBit(self) -> None:
        """
        An 8-bit message returned whole is marked 8bit, in its part and at
        the top.
        """
        original = ORIGINAL.replace(b"Secret body", "Geheimer Inhält".encode())
        dsn = _build(returnContent=True, originalMessage=original)
        self.assertIn(original, dsn)
        self.assertIn(b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n", dsn)
        self.assertEqual(_parse(dsn)["Content-Transfer-Encoding"], "8bit")

    def test_returnContentBareLinefeeds(self) -> None:
        """
        A returned message with LF line ends is returned with CRLF.
        """
        dsn = _build(returnContent=True, originalMessage=ORIGINAL.replace(b"\r\n", b"\n"))
        self.assertIsNone(re.search(rb"(?<!\r)\n", dsn))
        self.assertIn(ORIGINAL, dsn)

    def test_returnContentTooLarge(self) -> None:
        """
        Over the limit, only the headers are returned, and the text says
        why.
        """
        original = ORIGINAL + b"x" * 998 + b"\r\n"
        dsn = _build(returnContent=True, originalMessage=original, returnContentLimit=1000)
        parts = _parts(_parse(dsn))
        self.assertEqual(parts[2].get_content_type(), "text/rfc822-headers")
        self.assertNotIn(b"Secret body", dsn)
        self.assertIn("larger than 1000 bytes", _text(parts[0]))

    def test_returnContentBoundary(self) -> None:
        """
        The boundary does not occur in a returned message either.
        """
        first = _parse(_build(returnContent=True)).get_boundary()
        assert first is not None
        original = ORIGINAL + b"--" + first.encode() + b"--\r\n"
        dsn = _build(returnContent=True, originalMessage=original)
        boundary = _parse(dsn).get_boundary()
        self.assertNotEqual(boundary, first)
        self.assertEqual(len(_parts(_parse(dsn))), 3)
