"""
Inbound SMTPUTF8 (RFC 6531), DSN parameters (RFC 3461) and REQUIRETLS (RFC
8689) over the wire: what is advertised, what is refused with which reply,
and what the envelope keeps.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.esmtp.dsnparams import DSNRequest
from gopherpost.spool import Envelope
from tests.support.inbound import InboundHarness, replies

EHLO = b"EHLO client.test\r\n"
BODY = b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"


def envelopes(harness: InboundHarness) -> list[Envelope]:
    """
    Every envelope in the harness's spool, oldest first.
    """
    found = []
    for directory in harness.spool.dateDirectories():
        path = os.path.join(harness.path, directory)
        for name in sorted(os.listdir(path)):
            if name.endswith(".envelope"):
                with open(os.path.join(path, name), "rb") as f:
                    found.append(Envelope.fromJSON(f.read()))
    return found


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = InboundHarness(self)
        self.proto, self.transport = self.harness.connect()
        replies(self.transport)

    def send(self, data: bytes) -> list[bytes]:
        self.proto.dataReceived(data)
        return replies(self.transport)

    def envelope(self) -> Envelope:
        (envelope,) = envelopes(self.harness)
        return envelope


class SMTPUTF8Tests(Base):
    """
    UTF-8 addresses and headers with the SMTPUTF8 parameter only.
    """

    def test_advertised(self) -> None:
        """
        EHLO lists SMTPUTF8 (and 8BITMIME, which it needs).
        """
        lines = self.send(EHLO)
        self.assertIn(b"250-SMTPUTF8", lines)
        self.assertIn(b"250-8BITMIME", lines)

    def test_refusedWithout(self) -> None:
        """
        A UTF-8 sender or recipient without SMTPUTF8 is C{553 5.6.7}.
        """
        self.send(EHLO)
        self.assertEqual(
            self.send("MAIL FROM:<jürgen@gopherpost.test>\r\n".encode()),
            [b"553 5.6.7 Non-ASCII address not permitted without SMTPUTF8"],
        )
        self.send(b"MAIL FROM:<a@gopherpost.test>\r\n")
        self.assertEqual(
            self.send("RCPT TO:<ñ@gopherpost.test>\r\n".encode()),
            [b"553 5.6.7 Non-ASCII address not permitted without SMTPUTF8"],
        )

    def test_accepted(self) -> None:
        """
        With SMTPUTF8, UTF-8 local parts and U-label domains are taken,
        the message and its UTF-8 header are stored as received, the trace
        header says UTF8SMTP, the envelope says smtputf8; a U-label form of
        a local domain is local.
        """
        self.send(EHLO)
        lines = self.send(
            "MAIL FROM:<jürgen@gopherpost.test> SMTPUTF8 BODY=8BITMIME\r\n"
            "RCPT TO:<δοκιμή@gopherpost.test>\r\n"
            "DATA\r\nSubject: Grüße\r\n\r\nhi\r\n.\r\n".encode()
        )
        self.assertEqual(
            lines[:3], [b"250 2.1.0 Ok", b"250 2.1.5 Ok", b"354 End data with <CR><LF>.<CR><LF>"]
        )
        self.assertRegex(lines[3], rb"^250 2\.0\.0 Ok: queued as ")
        envelope = self.envelope()
        self.assertEqual(envelope.sender, "jürgen@gopherpost.test")
        self.assertEqual([r.address for r in envelope.recipients], ["δοκιμή@gopherpost.test"])
        self.assertTrue(envelope.recipients[0].local)
        self.assertEqual(envelope.metadata.get("smtputf8"), True)
        (stored,) = self.harness.storedFiles()
        content = self.harness.read(stored)
        self.assertIn(b"with UTF8SMTP id ", content)
        self.assertIn("for <δοκιμή@gopherpost.test>".encode(), content)
        self.assertTrue(content.endswith("Subject: Grüße\r\n\r\nhi\r\n".encode()))

    def test_badUTF8(self) -> None:
        """
        Octets that are not UTF-8, and a domain that is not IDNA 2008, are
        refused even with SMTPUTF8.
        """
        self.send(EHLO)
        self.assertEqual(self.send(b"MAIL FROM:<j\xfc@x.test> SMTPUTF8\r\n")[0][:9], b"501 5.1.7")
        lines = self.send("MAIL FROM:<a@☃.test> SMTPUTF8\r\n".encode())
        self.assertEqual(lines[0][:9], b"501 5.1.7")
        self.assertEqual(
            self.send(b"MAIL FROM:<a@gopherpost.test> SMTPUTF8=yes\r\n")[0][:3], b"501"
        )

    def test_sameMailboxOnce(self) -> None:
        """
        A recipient given in U-labels and again in A-labels is stored once.
        """
        self.send(EHLO)
        self.send(
            "MAIL FROM:<a@gopherpost.test> SMTPUTF8\r\nRCPT TO:<b@bücher.test>\r\n"
            "RCPT TO:<B@xn--bcher-kva.test>\r\n".encode()
            + BODY
        )
        self.assertEqual(len(self.envelope().recipients), 1)

    def test_plainMessageUnmarked(self) -> None:
        """
        A message without any of these parameters has none of their
        metadata.
        """
        self.send(EHLO + b"MAIL FROM:<a@gopherpost.test>\r\nRCPT TO:<b@gopherpost.test>\r\n" + BODY)
        metadata = self.envelope().metadata
        for key in ("smtputf8", "requiretls", "dsn"):
            self.assertNotIn(key, metadata)


class DSNParameterTests(Base):
    """
    RET, ENVID, NOTIFY and ORCPT validated and kept.
    """

    def test_advertised(self) -> None:
        """
        EHLO lists DSN.
        """
        self.assertIn(b"250-DSN", self.send(EHLO))

    def test_kept(self) -> None:
        """
        The values are in the envelope's metadata and read back by
        L{DSNRequest}.
        """
        self.send(EHLO)
        lines = self.send(
            b"MAIL FROM:<a@gopherpost.test> RET=hdrs ENVID=QQ+2B123\r\n"
            b"RCPT TO:<b@gopherpost.test> NOTIFY=success,delay ORCPT=rfc822;b+2Bx@x.test\r\n"
            b"RCPT TO:<c@gopherpost.test> NOTIFY=NEVER\r\n"
            b"RCPT TO:<d@gopherpost.test>\r\n" + BODY
        )
        self.assertRegex(lines[-1], rb"^250 2\.0\.0 Ok: queued as ")
        metadata = self.envelope().metadata
        self.assertEqual(
            metadata["dsn"],
            {
                "ret": "HDRS",
                "envid": "QQ+2B123",
                "recipients": {
                    "b@gopherpost.test": {
                        "notify": "SUCCESS,DELAY",
                        "orcpt": "rfc822;b+2Bx@x.test",
                    },
                    "c@gopherpost.test": {"notify": "NEVER"},
                },
            },
        )
        request = DSNRequest.fromMetadata(json.loads(json.dumps(metadata)))
        self.assertFalse(request.returnFull)
        self.assertEqual(request.envelopeIdText, "QQ+123")
        b = request.forRecipient("b@gopherpost.test")
        self.assertEqual((b.notifySuccess, b.notifyDelay, b.notifyFailure), (True, True, False))
        self.assertEqual(b.originalRecipient, "rfc822;b+x@x.test")
        self.assertFalse(request.forRecipient("c@gopherpost.test").notifyFailure)
        self.assertTrue(request.forRecipient("d@gopherpost.test").notifyFailure)

    def test_badValues(self) -> None:
        """
        Bad values are C{501 5.5.4}; the transaction goes on.
        """
        self.send(EHLO)
        for command, reply in [
            (b"MAIL FROM:<a@gopherpost.test> RET=ALL", b"501 5.5.4 Bad RET parameter syntax"),
            (b"MAIL FROM:<a@gopherpost.test> RET", b"501 5.5.4 Bad RET parameter syntax"),
            (b"MAIL FROM:<a@gopherpost.test> ENVID=a+zz", b"501 5.5.4 Bad ENVID parameter syntax"),
            (
                b"MAIL FROM:<a@gopherpost.test> ENVID=" + b"x" * 101,
                b"501 5.5.4 Bad ENVID parameter syntax",
            ),
        ]:
            self.assertEqual(self.send(command + b"\r\n"), [reply], command)
        self.send(b"MAIL FROM:<a@gopherpost.test>\r\n")
        for command, reply in [
            (b"NOTIFY=NEVER,SUCCESS", b"501 5.5.4 Bad NOTIFY parameter syntax"),
            (b"NOTIFY=SOMETIMES", b"501 5.5.4 Bad NOTIFY parameter syntax"),
            (b"NOTIFY=DELAY,DELAY", b"501 5.5.4 Bad NOTIFY parameter syntax"),
            (b"NOTIFY", b"501 5.5.4 Bad NOTIFY parameter syntax"),
            (b"ORCPT=b@x.test", b"501 5.5.4 Bad ORCPT parameter syntax"),
            (b"ORCPT=rfc822;b+4", b"501 5.5.4 Bad ORCPT parameter syntax"),
            (b"ORCPT=utf-8;b\\x{41}@x.test", b"501 5.5.4 Bad ORCPT parameter syntax"),
        ]:
            line = b"RCPT TO:<b@gopherpost.test> " + command + b"\r\n"
            self.assertEqual(self.send(line), [reply], command)
        self.assertEqual(
            self.send(b"RCPT TO:<b@gopherpost.test> ORCPT=utf-8;j\\x{FC}@x.test\r\n"),
            [b"250 2.1.5 Ok"],
        )

    def test_utf8OriginalRecipient(self) -> None:
        """
        With SMTPUTF8, an ORCPT of type utf-8 may carry UTF-8 as it is; the
        report form escapes it (RFC 6533).
        """
        self.send(EHLO)
        self.send(
            "MAIL FROM:<a@gopherpost.test> SMTPUTF8\r\n"
            "RCPT TO:<jü@gopherpost.test> ORCPT=utf-8;jü@gopherpost.test\r\n".encode()
            + BODY
        )
        request = DSNRequest.fromMetadata(self.envelope().metadata)
        self.assertEqual(
            request.forRecipient("jü@gopherpost.test").originalRecipient,
            "utf-8;j\\x{FC}@gopherpost.test",
        )


class RequireTLSTests(SynchronousTestCase):
    """
    REQUIRETLS: offered and taken only on a TLS session.
    """

    def connect(self) -> tuple[Any, Any]:
        harness = InboundHarness(self, contextFactory=object(), tlsDisable=False)
        self.harness = harness
        proto, transport = harness.connect(tls=True)
        replies(transport)
        return proto, transport

    def test_cleartext(self) -> None:
        """
        Without TLS, REQUIRETLS is not advertised and MAIL with it is
        C{530 5.7.10}.
        """
        proto, transport = self.connect()
        proto.dataReceived(EHLO)
        lines = replies(transport)
        self.assertIn(b"250-STARTTLS", lines)
        self.assertFalse([line for line in lines if b"REQUIRETLS" in line])
        proto.dataReceived(b"MAIL FROM:<a@gopherpost.test> REQUIRETLS\r\n")
        self.assertEqual(
            replies(transport), [b"530 5.7.10 REQUIRETLS needs a TLS session: send STARTTLS first"]
        )

    def test_afterSTARTTLS(self) -> None:
        """
        After STARTTLS it is advertised, taken, and kept in the envelope.
        """
        proto, transport = self.connect()
        proto.dataReceived(EHLO + b"STARTTLS\r\n")
        replies(transport)
        proto.handshakeCompleted()
        proto.dataReceived(EHLO)
        self.assertIn(b"250-REQUIRETLS", replies(transport))
        proto.dataReceived(
            b"MAIL FROM:<a@gopherpost.test> REQUIRETLS\r\nRCPT TO:<b@gopherpost.test>\r\n" + BODY
        )
        lines = replies(transport)
        self.assertEqual(lines[0], b"250 2.1.0 Ok")
        self.assertRegex(lines[-1], rb"^250 2\.0\.0 Ok: queued as ")
        (envelope,) = envelopes(self.harness)
        self.assertEqual(envelope.metadata.get("requiretls"), True)
        self.assertTrue(envelope.tls)
        proto.dataReceived(b"MAIL FROM:<a@gopherpost.test> REQUIRETLS=1\r\n")
        self.assertEqual(replies(transport), [b"501 5.5.4 Bad REQUIRETLS parameter syntax"])
