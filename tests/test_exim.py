"""
Exim (Debian's exim4-daemon-light) relaying into GopherPost on a loopback
port: a real client that uses CHUNKING (BDAT: Exim logs C{K}), DSN
parameters and SMTPUTF8 because GopherPost offers them.

Exim comes from C{tests/exim/provide.sh}; without it these tests fail and
say so.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.trial.unittest import TestCase

from gopherpost.esmtp.dsnparams import DSNRequest
from tests.support.exim import EximRelay, findExim
from tests.support.inbound import LiveServer
from tests.test_esmtp_inbound import envelopes


def dialogue(mail: str, rcpts: list[str], content: bytes) -> bytes:
    """
    The client side of an SMTP session handing Exim one message.
    """
    lines = ["EHLO client.test", mail, *rcpts, "DATA"]
    data = "".join(line + "\r\n" for line in lines).encode("utf-8")
    stuffed = re.sub(rb"(?m)^\.", b"..", content)
    return data + stuffed + b".\r\nQUIT\r\n"


def body(stored: bytes) -> bytes:
    """
    A stored message without the two C{Received:} headers (ours, Exim's).
    """
    return stored.split(b"\r\n\r\n", 1)[1]


class EximTests(TestCase):
    """
    Exim as the client.
    """

    timeout = 180

    def setUp(self) -> None:
        binary = findExim()
        if binary is None:
            self.fail("Exim is missing: run tests/exim/provide.sh (or set GOPHERPOST_EXIM)")
        self.server = LiveServer(self)
        self.exim = EximRelay(self, binary, self.server.port)

    def relay(self, data: bytes) -> Any:
        """
        Submit to Exim, run its queue; fires with Exim's main log.
        """

        def submitted(result: tuple[int, str]) -> Any:
            status, output = result
            self.assertEqual(status, 0, output)
            self.assertIn("250 OK id=", output)
            return self.exim.runQueue()

        def ran(result: tuple[int, str]) -> str:
            self.assertEqual(result[0], 0, result[1])
            self.assertEqual(self.exim.panics(), "")
            return self.exim.mainlog()

        return self.exim.submit(data).addCallback(submitted).addCallback(ran)

    def test_chunkingAndDSN(self) -> None:
        """
        A message of several BDAT chunks with DSN parameters: Exim delivers
        it with CHUNKING (C{K} in its log line), GopherPost stores the
        content as sent and keeps RET, ENVID, NOTIFY and ORCPT.
        """
        content = b"Subject: chunks\r\n\r\n" + b"".join(
            b"line %05d .with a dot and some text to make it longer\r\n" % n for n in range(6000)
        )
        data = dialogue(
            "MAIL FROM:<alice@gopherpost.test> RET=HDRS ENVID=exim-1",
            [
                "RCPT TO:<bob@gopherpost.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@gopherpost.test",
                "RCPT TO:<carol@gopherpost.test> NOTIFY=NEVER",
            ],
            content,
        )

        def check(mainlog: str) -> None:
            delivered = [line for line in mainlog.splitlines() if " => " in line]
            self.assertTrue(delivered, mainlog)
            for line in delivered:
                self.assertRegex(line, r" K C=\"250 2\.0\.0 Ok: queued as [0-9A-F]{19}\"")
            (envelope,) = envelopes(self.server)  # type: ignore[arg-type]
            request = DSNRequest.fromMetadata(envelope.metadata)
            self.assertEqual((request.ret, request.envelopeId), ("HDRS", "exim-1"))
            bob = request.forRecipient("bob@gopherpost.test")
            self.assertEqual(bob.notify, ("SUCCESS", "FAILURE"))
            self.assertEqual(bob.orcpt, "rfc822;bob@gopherpost.test")
            self.assertEqual(request.forRecipient("carol@gopherpost.test").notify, ("NEVER",))
            stored = self.server.storedFiles()
            self.assertEqual(len(stored), 2)
            for name in stored:
                self.assertEqual(body(self.server.read(name)), content.split(b"\r\n\r\n", 1)[1])

        return self.relay(data).addCallback(check)

    def test_smtputf8(self) -> None:
        """
        A UTF-8 sender and recipient: Exim relays with SMTPUTF8 (and BDAT),
        GopherPost stores the addresses as received.
        """
        content = "Subject: Grüße\r\n\r\nHallo.\r\n".encode()
        data = dialogue(
            "MAIL FROM:<jürgen@gopherpost.test> SMTPUTF8",
            ["RCPT TO:<δοκιμή@gopherpost.test>"],
            content,
        )

        def check(mainlog: str) -> None:
            self.assertRegex(mainlog, r" => .* K C=\"250 2\.0\.0 Ok: queued as ")
            (envelope,) = envelopes(self.server)  # type: ignore[arg-type]
            self.assertEqual(envelope.sender, "jürgen@gopherpost.test")
            self.assertEqual([r.address for r in envelope.recipients], ["δοκιμή@gopherpost.test"])
            self.assertTrue(envelope.metadata["smtputf8"])
            (stored,) = self.server.storedFiles()
            self.assertIn("Subject: Grüße".encode(), self.server.read(stored))

        return self.relay(data).addCallback(check)
