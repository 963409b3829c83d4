"""
Tests for L{gopherpost.webhooks.payload}: spooled messages as the inbound
webhook's JSON, on well-formed and broken MIME; delivery events as the
events webhook's JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.deliveryevents import (
    MessageQueued,
    RecipientBounced,
    RecipientDeferred,
    RecipientDelivered,
    RecipientExpired,
)
from gopherpost.spool import Envelope, Recipient
from gopherpost.webhooks.payload import encode, eventPayload, inboundPayload, inScope, rfc3339

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + bytes(range(200))
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8


def envelope(**overrides: Any) -> Envelope:
    values: dict[str, Any] = dict(
        queueId="0190ABCDEF0123456",
        dateDirectory="2026-12-01",
        received=1796119200.25,
        sender="alice@example.test",
        recipients=(
            Recipient("support@gopherpost.test", "a" * 16, True),
            Recipient("bob@elsewhere.test", "b" * 16, False),
        ),
        clientAddress="192.0.2.7",
        helo="mail.example.test",
        size=1234,
        tls=False,
    )
    values.update(overrides)
    return Envelope(**values)


@dataclass(frozen=True)
class EnvelopeWithMetadata:
    """
    An envelope as the inbound side will write it (with C{metadata}).
    """

    queueId: str = "0190ABCDEF0123457"
    received: float = 1796119200.0
    sender: str = "alice@example.test"
    recipients: tuple[Recipient, ...] = (Recipient("support@gopherpost.test", "a" * 16, True),)
    clientAddress: str = "2001:db8::7"
    helo: str = "mail.example.test"
    tls: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8", "surrogateescape")


MULTIPART = crlf(
    f"""\
Return-Path: <alice@example.test>
Received: from mail.example.test ([192.0.2.7])
\tby mx.gopherpost.test (GopherPost) with ESMTP id 0190ABCDEF0123456;
\tTue, 01 Dec 2026 10:00:00 +0000
From: =?utf-8?q?Al=C3=AFce_Sm=C3=AFth?= <alice@example.test>
To: Support <support@gopherpost.test>, "Bob, B." <bob@elsewhere.test>
Cc: carol@example.test
Reply-To: =?iso-8859-1?b?UulwbHk=?= <reply@example.test>
Subject: =?utf-8?b?w4ltw7Z0aWNvbnMg8J+Ygg==?= and =?iso-8859-1?q?caf=E9?=
Date: Tue, 01 Dec 2026 11:00:00 +0100
Message-ID: <abc.123@example.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

This is a multi-part message in MIME format.
--outer
Content-Type: multipart/related; boundary="related"

--related
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Bonjour, voil=E0 le caf=E9.
--alt
Content-Type: text/html; charset=windows-1252
Content-Transfer-Encoding: 8bit

<p>Bonjour \udc80 <img src="cid:logo@example.test"></p>
--alt--
--related
Content-Type: image/png
Content-Transfer-Encoding: base64
Content-ID: <logo@example.test>
Content-Disposition: inline

{base64.encodebytes(PNG).decode()}
--related--
--outer
Content-Type: application/pdf; name="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename*=utf-8''R%C3%A9sum%C3%A9.pdf

{base64.encodebytes(PDF).decode()}
--outer
Content-Type: text/plain; charset=koi8-r; name=notes.txt
Content-Transfer-Encoding: base64
Content-Disposition: attachment

{base64.encodebytes("Привет".encode("koi8-r")).decode()}
--outer--
"""
)


class InboundPayloadTests(SynchronousTestCase):
    def payload(self, content: bytes, **kwargs: Any) -> dict[str, Any]:
        document = inboundPayload(kwargs.pop("envelope", envelope()), content, **kwargs)
        # Whatever the message, the document encodes to valid UTF-8 JSON.
        self.assertEqual(json.loads(encode(document).decode("utf-8")), document)
        return document

    def test_envelopeAndClient(self) -> None:
        document = self.payload(b"Subject: hi\r\n\r\nbody\r\n")
        self.assertEqual(document["id"], "0190ABCDEF0123456")
        self.assertEqual(document["received_at"], "2026-12-01T10:00:00.250Z")
        self.assertEqual(
            document["envelope"],
            {"mail_from": "alice@example.test", "rcpt_to": ["support@gopherpost.test"]},
        )
        self.assertEqual(
            document["client"],
            {"ip": "192.0.2.7", "helo": "mail.example.test", "tls": None, "auth_user": None},
        )
        self.assertIsNone(document["authentication"])
        self.assertNotIn("raw", document)
        self.assertEqual(document["parse_errors"], [])

    def test_allRecipients(self) -> None:
        document = self.payload(b"\r\n", allRecipients=True)
        self.assertEqual(
            document["envelope"]["rcpt_to"], ["support@gopherpost.test", "bob@elsewhere.test"]
        )

    def test_metadata(self) -> None:
        """
        TLS version, authenticated user and authentication results come
        from the envelope's metadata when the inbound side records them.
        """
        results = {"spf": "pass", "dkim": "pass", "dmarc": "pass", "arc": "none"}
        document = self.payload(
            b"\r\n",
            envelope=EnvelopeWithMetadata(
                metadata={"tls_version": "TLSv1.3", "authUser": "alice", "authentication": results}
            ),
        )
        self.assertEqual(
            document["client"],
            {
                "ip": "2001:db8::7",
                "helo": "mail.example.test",
                "tls": "TLSv1.3",
                "auth_user": "alice",
            },
        )
        self.assertEqual(document["authentication"], results)
        self.assertEqual(
            self.payload(b"\r\n", envelope=EnvelopeWithMetadata())["client"]["tls"], "TLS"
        )

    def test_headers(self) -> None:
        """
        Headers are listed in order, unfolded and decoded (RFC 2047, in
        UTF-8 and ISO-8859-1).
        """
        document = self.payload(MULTIPART)
        names = [name for name, _ in document["headers"]]
        self.assertEqual(names[:4], ["Return-Path", "Received", "From", "To"])
        self.assertEqual(
            document["headers"][1][1],
            "from mail.example.test ([192.0.2.7])\tby mx.gopherpost.test (GopherPost) "
            "with ESMTP id 0190ABCDEF0123456;\tTue, 01 Dec 2026 10:00:00 +0000",
        )
        self.assertEqual(document["subject"], "Émöticons 😂 and café")
        self.assertIn(["Subject", "Émöticons 😂 and café"], document["headers"])
        self.assertEqual(document["message_id"], "abc.123@example.test")
        self.assertEqual(document["date"], "2026-12-01T10:00:00.000Z")

    def test_addresses(self) -> None:
        document = self.payload(MULTIPART)
        self.assertEqual(document["from"], {"name": "Alïce Smïth", "address": "alice@example.test"})
        self.assertEqual(
            document["to"],
            [
                {"name": "Support", "address": "support@gopherpost.test"},
                {"name": "Bob, B.", "address": "bob@elsewhere.test"},
            ],
        )
        self.assertEqual(document["cc"], [{"name": "", "address": "carol@example.test"}])
        self.assertEqual(document["reply_to"], [{"name": "Réply", "address": "reply@example.test"}])

    def test_bodies(self) -> None:
        """
        C{text} and C{html} are the first plain and HTML parts, decoded from
        their charsets (ISO-8859-1 quoted-printable, windows-1252 8-bit).
        """
        document = self.payload(MULTIPART)
        self.assertEqual(document["text"], "Bonjour, voilà le café.")
        self.assertEqual(
            document["html"].strip(), '<p>Bonjour € <img src="cid:logo@example.test"></p>'
        )
        self.assertEqual(document["parse_errors"], [])

    def test_attachments(self) -> None:
        """
        Attachments and inline images are listed with their metadata and
        their content in base64; RFC 2231 and RFC 2047 file names are
        decoded.
        """
        attachments = self.payload(MULTIPART)["attachments"]
        self.assertEqual(len(attachments), 3)
        image, pdf, notes = attachments
        self.assertEqual(
            image,
            {
                "filename": None,
                "content_type": "image/png",
                "size": len(PNG),
                "sha256": hashlib.sha256(PNG).hexdigest(),
                "content_id": "logo@example.test",
                "disposition": "inline",
                "content": base64.b64encode(PNG).decode(),
            },
        )
        self.assertEqual(pdf["filename"], "Résumé.pdf")
        self.assertEqual(pdf["content_type"], "application/pdf")
        self.assertEqual(pdf["disposition"], "attachment")
        self.assertEqual(base64.b64decode(pdf["content"]), PDF)
        self.assertEqual(pdf["sha256"], hashlib.sha256(PDF).hexdigest())
        self.assertEqual(notes["filename"], "notes.txt")
        self.assertEqual(base64.b64decode(notes["content"]).decode("koi8-r"), "Привет")

    def test_maxInline(self) -> None:
        """
        Attachments larger than the limit are listed without content.
        """
        attachments = self.payload(MULTIPART, maxInline=len(PNG))["attachments"]
        self.assertIsNotNone(attachments[0]["content"])
        self.assertIsNone(attachments[1]["content"])
        self.assertEqual(attachments[1]["size"], len(PDF))

    def test_raw(self) -> None:
        document = self.payload(MULTIPART, includeRaw=True)
        self.assertEqual(base64.b64decode(document["raw"]), MULTIPART)

    def test_charsets(self) -> None:
        for charset, encoding in [
            ("shift_jis", "base64"),
            ("koi8-r", "quoted-printable"),
            ("iso-2022-jp", "7bit"),
            ("utf-16", "base64"),
        ]:
            text = "日本語のテキスト" if charset != "koi8-r" else "Съешь же ещё"
            data = text.encode(charset)
            if encoding == "base64":
                body = base64.encodebytes(data).decode("ascii")
            elif encoding == "quoted-printable":
                import quopri

                body = quopri.encodestring(data).decode("ascii")
            else:
                body = data.decode("ascii")
            message = crlf(
                f"Subject: t\nMIME-Version: 1.0\nContent-Type: text/plain; charset={charset}\n"
                f"Content-Transfer-Encoding: {encoding}\n\n{body}"
            )
            document = self.payload(message)
            self.assertEqual(document["text"].strip(), text, charset)
            self.assertEqual(document["parse_errors"], [], charset)

    def test_rawUTF8Headers(self) -> None:
        """
        Raw UTF-8 in headers (RFC 6532, SMTPUTF8 mail) is read as UTF-8.
        """
        message = "From: Jörg <jörg@exämple.test>\r\nSubject: grüße\r\n\r\nhi\r\n".encode()
        document = self.payload(message)
        self.assertEqual(document["from"], {"name": "Jörg", "address": "jörg@exämple.test"})
        self.assertEqual(document["subject"], "grüße")
        self.assertIn(["From", "Jörg <jörg@exämple.test>"], document["headers"])


class BrokenMIMETests(SynchronousTestCase):
    """
    A message the parser cannot fully understand is still described, with
    what could be read and a list of what went wrong.
    """

    def payload(self, content: bytes, **kwargs: Any) -> dict[str, Any]:
        document = inboundPayload(envelope(), content, **kwargs)
        json.loads(encode(document).decode("utf-8"))
        return document

    def assertError(self, document: dict[str, Any], text: str) -> None:
        if not any(text in error for error in document["parse_errors"]):
            self.fail(f"{text!r} not in {document['parse_errors']!r}")

    def test_missingBoundary(self) -> None:
        document = self.payload(
            crlf(
                "Subject: broken\nMIME-Version: 1.0\n"
                'Content-Type: multipart/mixed; boundary="nowhere"\n\nJust some text.\n'
            )
        )
        self.assertEqual(document["subject"], "broken")
        self.assertIn("Just some text.", document["text"])
        self.assertError(document, "StartBoundaryNotFoundDefect")

    def test_unterminatedMultipart(self) -> None:
        document = self.payload(
            crlf(
                'Content-Type: multipart/mixed; boundary="b"\n\n--b\n'
                "Content-Type: text/plain\n\nfirst part\n--b\n"
                'Content-Type: application/octet-stream; name="cut.bin"\n'
                "Content-Transfer-Encoding: base64\n\nAAEC"
            )
        )
        self.assertEqual(document["text"].strip(), "first part")
        self.assertEqual(document["attachments"][0]["filename"], "cut.bin")
        self.assertError(document, "CloseBoundaryNotFoundDefect")

    def test_badBase64(self) -> None:
        document = self.payload(
            crlf(
                "Content-Type: text/plain; charset=utf-8\n"
                "Content-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ*!\n"
            )
        )
        self.assertIn("hello", document["text"])
        self.assertTrue(document["parse_errors"])

    def test_unknownCharset(self) -> None:
        document = self.payload(
            crlf("Content-Type: text/plain; charset=x-no-such-charset\n\ncafé\n")
        )
        self.assertEqual(document["text"].strip(), "café")
        self.assertError(document, "unknown charset 'x-no-such-charset'")

    def test_undeclared8bit(self) -> None:
        document = self.payload(crlf("Subject: x\n\nnaïve 8-bit\n"))
        self.assertEqual(document["text"].strip(), "naïve 8-bit")
        self.assertError(document, "8-bit text in a part declared us-ascii")

    def test_invalidBytes(self) -> None:
        document = self.payload(
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nbad \xff\xfe bytes\r\n"
        )
        self.assertEqual(document["text"].strip(), "bad \ufffd\ufffd bytes")
        self.assertError(document, "not valid utf-8")

    def test_badHeaders(self) -> None:
        document = self.payload(
            crlf(
                'From: "unterminated <<x@@y\nTo: undisclosed-recipients:;\n'
                "Date: the day after tomorrow\nSubject: =?utf-8?q?half=C3\n"
                "Message-ID: no brackets\n\nbody\n"
            )
        )
        self.assertEqual(document["to"], [])
        self.assertIsNone(document["date"])
        self.assertEqual(document["message_id"], "no brackets")
        self.assertEqual(
            [n for n, _ in document["headers"]], ["From", "To", "Date", "Subject", "Message-ID"]
        )
        self.assertError(document, "header Date: InvalidDateDefect")
        self.assertTrue(any("header From" in e for e in document["parse_errors"]))

    def test_garbage(self) -> None:
        """
        Bytes that are no message at all still give a document.
        """
        document = self.payload(bytes(range(256)) * 4)
        self.assertIsInstance(document["headers"], list)
        self.assertIsInstance(document["parse_errors"], list)

    def test_fuzz(self) -> None:
        """
        A bounded, seeded fuzz run: mutated copies of a real multipart
        message never make the payload raise, and always encode.
        """
        import random

        rng = random.Random(18)
        for _ in range(150):
            data = bytearray(MULTIPART)
            for _ in range(rng.randint(1, 20)):
                position = rng.randrange(len(data))
                action = rng.random()
                if action < 0.4:
                    data[position] = rng.randrange(256)
                elif action < 0.7:
                    del data[position : position + rng.randint(1, 200)]
                else:
                    data[position:position] = rng.choice(
                        [b"\r\n", b"--outer", b"=?utf-8?b?", b"\xff", b";", b'"', b"\r\n\r\n"]
                    )
            self.payload(bytes(data), includeRaw=rng.random() < 0.1)

    def test_errorsBounded(self) -> None:
        headers = "".join(f"Date: not a date {i}\n" for i in range(500))
        document = self.payload(crlf(headers + "\nx\n"))
        self.assertLessEqual(len(document["parse_errors"]), 50)


class ScopeTests(SynchronousTestCase):
    def test_scope(self) -> None:
        local = envelope()
        remote = envelope(recipients=(Recipient("x@elsewhere.test", "c" * 16, False),))
        self.assertTrue(inScope(local, "local"))
        self.assertFalse(inScope(remote, "local"))
        self.assertTrue(inScope(remote, "all"))


class EventPayloadTests(SynchronousTestCase):
    def test_queued(self) -> None:
        event = MessageQueued(
            "Q1", 1796119200.0, "alice@example.test", ("b@x.test", "c@y.test"), 512
        )
        self.assertEqual(
            eventPayload(event, "evt_1"),
            {
                "id": "evt_1",
                "type": "queued",
                "timestamp": "2026-12-01T10:00:00.000Z",
                "queue_id": "Q1",
                "sender": "alice@example.test",
                "recipients": ["b@x.test", "c@y.test"],
                "size": 512,
            },
        )

    def test_delivered(self) -> None:
        event = RecipientDelivered(
            "Q1",
            1796119201.5,
            "b@x.test",
            "mx.x.test",
            "192.0.2.25",
            25,
            "250 2.0.0 Ok: queued as ABC",
            "TLSv1.3",
            True,
        )
        document = eventPayload(event, "evt_2")
        self.assertEqual(document["type"], "delivered")
        self.assertEqual(document["recipient"], "b@x.test")
        self.assertEqual(document["remote"], {"host": "mx.x.test", "ip": "192.0.2.25", "port": 25})
        self.assertEqual(document["reply"], "250 2.0.0 Ok: queued as ABC")
        self.assertEqual(document["tls"], {"version": "TLSv1.3", "verified": True})
        cleartext = RecipientDelivered("Q1", 1.0, "b@x.test", "mx.x.test")
        self.assertIsNone(eventPayload(cleartext, "e")["tls"])

    def test_deferred(self) -> None:
        event = RecipientDeferred(
            "Q1", 1796119200.0, "b@x.test", 2, "451 4.7.1 greylisted", 1796119320.0, "mx.x.test"
        )
        document = eventPayload(event, "evt_3")
        self.assertEqual(document["attempt"], 2)
        self.assertEqual(document["error"], "451 4.7.1 greylisted")
        self.assertEqual(document["next_attempt_at"], "2026-12-01T10:02:00.000Z")
        self.assertEqual(document["remote"], {"host": "mx.x.test", "ip": None, "port": None})

    def test_bounced(self) -> None:
        event = RecipientBounced(
            "Q1", 1.0, "b@x.test", "5.1.1", "550 5.1.1 no such user", "Q2", "mx.x.test"
        )
        document = eventPayload(event, "evt_4")
        self.assertEqual(document["dsn"], {"code": "5.1.1", "text": "550 5.1.1 no such user"})
        self.assertEqual(document["bounce_queue_id"], "Q2")
        self.assertIsNone(
            eventPayload(RecipientBounced("Q1", 1.0, "b", "5.0.0", "x"), "e")["remote"]
        )

    def test_expired(self) -> None:
        event = RecipientExpired("Q1", 1.0, "b@x.test", "421 4.4.2 timeout", bounceQueueId="Q3")
        document = eventPayload(event, "evt_5")
        self.assertEqual(document["type"], "expired")
        self.assertEqual(document["dsn"]["code"], "5.4.7")
        self.assertEqual(document["last_error"], "421 4.4.2 timeout")
        self.assertEqual(document["bounce_queue_id"], "Q3")


class RFC3339Tests(SynchronousTestCase):
    def test_format(self) -> None:
        self.assertEqual(rfc3339(0), "1970-01-01T00:00:00.000Z")
        self.assertEqual(rfc3339(1796119200.1234), "2026-12-01T10:00:00.123Z")


class FastPathTests(SynchronousTestCase):
    """
    Plain headers skip C{policy.default}'s (slow) header registry; where
    they do, the result is the registry's.
    """

    ADDRESSES = [
        "alice@example.test",
        "<alice@example.test>",
        " <alice@example.test> ",
        "Alice <alice@example.test>",
        "Alice Smith<alice@example.test>",
        "Jean-Luc O'Brien <j.l.obrien+tag@mail.example.test>",
        '"Smith, Alice" <alice@example.test>',
        '"Dr. Alice (Ops) & co" <alice@example.test>',
        "a@example.test, Bob <b@example.test>,<c@example.test>",
        # Not simple: left to the registry.
        "Alice  Smith <alice@example.test>",
        "alice@example.test (Alice)",
        "undisclosed-recipients:;",
        "Team: a@example.test, b@example.test;",
        '"Smith, Alice" <alice@example.test>, b@example.test',
        '"Al \\"the\\" Ice" <alice@example.test>',
        "alice..x@example.test",
        "<alice@example.test",
        "John Q. Public <jqp@example.test>",
        "",
    ]

    def registry(self, name: str, value: str) -> Any:
        from email import policy

        return policy.default.header_factory(name, value)

    def test_addresses(self) -> None:
        from gopherpost.webhooks.payload import _simpleAddresses

        simple = 0
        for value in self.ADDRESSES:
            fast = _simpleAddresses(value)
            if fast is None:
                continue
            simple += 1
            header = self.registry("To", value)
            self.assertEqual(header.defects, (), value)
            expected = [{"name": a.display_name, "address": a.addr_spec} for a in header.addresses]
            self.assertEqual(fast, expected, value)
        self.assertEqual(simple, 9)

    def test_unfolded(self) -> None:
        """
        A plain unstructured header's decoded value is its unfolded value.
        """
        from gopherpost.webhooks.payload import _unfold

        for raw in [
            "from a.example.test ([192.0.2.1])\r\n\tby mx.example.test; Tue, 1 Dec 2026 10:00:00 +0000",
            "A plain  subject, with   spaces\t and tabs",
            "<abc.123@example.test>",
            "  leading and trailing  ",
        ]:
            self.assertEqual(_unfold(raw), str(self.registry("Subject", _unfold(raw))), raw)

    def test_dates(self) -> None:
        from email.utils import parsedate_to_datetime

        for value in [
            "Tue, 01 Dec 2026 11:00:00 +0100",
            "1 Dec 2026 11:00 -0000",
            "Tue, 1 Dec 2026 11:00:00 GMT",
        ]:
            self.assertEqual(parsedate_to_datetime(value), self.registry("Date", value).datetime)

    def test_sameDocument(self) -> None:
        """
        A message of plain headers gives the same fields as one whose
        headers all go through the registry (encoded words force it).
        """
        plain = crlf(
            "From: Alice <alice@example.test>\nTo: a@example.test, Bob <b@example.test>\n"
            '"Cc: "Smith, C." <c@example.test>\nDate: Tue, 01 Dec 2026 11:00:00 +0100\n\nx\n'
        ).replace(b'"Cc', b"Cc")
        encoded = (
            plain.replace(b"Alice <", b"=?us-ascii?q?Alice?= <")
            .replace(b"Bob <", b"=?us-ascii?q?Bob?= <")
            .replace(b'"Smith, C." <', b"=?us-ascii?q?Smith=2C_C=2E?= <")
            .replace(b"Date: Tue", b"Date: =?us-ascii?q?Tue?=")
        )
        fast = inboundPayload(envelope(), plain)
        slow = inboundPayload(envelope(), encoded)
        for key in ("from", "to", "cc", "date"):
            self.assertEqual(fast[key], slow[key], key)
