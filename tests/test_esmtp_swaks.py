"""
swaks (a real client) against the real server on a loopback port:
SMTPUTF8 and DSN parameters, and REQUIRETLS after STARTTLS.

swaks 20201014 (Debian bookworm) has no options for MAIL and RCPT
parameters: they ride in its address arguments after a C{>}, as
C{MAIL FROM:<address> PARAM ...>}, so the last value of each command ends
in the C{>} swaks closes the path with (ENVID and ORCPT are xtext, where it
is a plain character).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from gopherpost.esmtp.dsnparams import DSNRequest
from tests.support.inbound import LiveServer
from tests.test_esmtp_inbound import envelopes

SWAKS = shutil.which("swaks")


class SwaksTests(TestCase):
    """
    swaks with SMTPUTF8, DSN parameters and REQUIRETLS.
    """

    timeout = 120

    def setUp(self) -> None:
        if SWAKS is None:
            self.fail("swaks is missing: apt-get install swaks")

    def swaks(self, server: LiveServer, *arguments: str) -> Any:
        """
        Run swaks against C{server}; fires with its transcript, failing the
        test when swaks does.
        """
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        d = getProcessOutputAndValue(
            SWAKS,
            ["--server", f"127.0.0.1:{server.port}", "--timeout", "30", *arguments],
            env=environ,
        )

        def done(result: tuple[bytes, bytes, int]) -> str:
            out, err, code = result
            transcript = (out + err).decode("utf-8", "replace")
            self.assertEqual(code, 0, transcript)
            return transcript

        return d.addCallback(done)

    def test_smtputf8AndDSN(self) -> None:
        """
        A UTF-8 sender, recipient and subject with SMTPUTF8, RET, ENVID,
        NOTIFY and ORCPT: accepted, and all of it in the envelope.
        """
        server = LiveServer(self)
        d = self.swaks(
            server,
            "--from",
            "jürgen@gopherpost.test> SMTPUTF8 BODY=8BITMIME RET=HDRS ENVID=env-1",
            "--to",
            "δοκιμή@gopherpost.test> NOTIFY=DELAY ORCPT=rfc822;orig@gopherpost.test",
            "--header",
            "Subject: Grüße",
            "--h-From",
            "jürgen@gopherpost.test",
            "--h-To",
            "δοκιμή@gopherpost.test",
        )

        def check(transcript: str) -> None:
            self.assertIn("250-SMTPUTF8", transcript)
            self.assertIn("250-DSN", transcript)
            self.assertIn("queued as", transcript)
            (envelope,) = envelopes(server)  # type: ignore[arg-type]
            self.assertEqual(envelope.sender, "jürgen@gopherpost.test")
            self.assertEqual([r.address for r in envelope.recipients], ["δοκιμή@gopherpost.test"])
            self.assertTrue(envelope.metadata["smtputf8"])
            request = DSNRequest.fromMetadata(envelope.metadata)
            self.assertEqual((request.ret, request.envelopeId), ("HDRS", "env-1>"))
            recipient = request.forRecipient("δοκιμή@gopherpost.test")
            self.assertEqual(recipient.notify, ("DELAY",))
            self.assertEqual(recipient.originalRecipient, "rfc822;orig@gopherpost.test>")
            (stored,) = server.storedFiles()
            self.assertIn("Subject: Grüße".encode(), server.read(stored))

        return d.addCallback(check)

    def test_utf8WithoutSMTPUTF8(self) -> None:
        """
        The same addresses without SMTPUTF8: swaks is told C{553 5.6.7}.
        """
        server = LiveServer(self)
        d = getProcessOutputAndValue(
            SWAKS,
            [
                "--server",
                f"127.0.0.1:{server.port}",
                "--from",
                "jürgen@gopherpost.test",
                "--to",
                "bob@gopherpost.test",
            ],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )

        def check(result: tuple[bytes, bytes, int]) -> None:
            transcript = result[0].decode("utf-8", "replace")
            self.assertNotEqual(result[2], 0)
            self.assertIn("553 5.6.7 Non-ASCII address not permitted without SMTPUTF8", transcript)
            self.assertEqual(server.storedFiles(), [])

        return d.addCallback(check)

    def test_requireTLS(self) -> None:
        """
        swaks over STARTTLS sees REQUIRETLS and may use it; the envelope
        keeps it.
        """
        server = LiveServer(self, tls=True)
        d = self.swaks(
            server,
            "--tls",
            "--from",
            "alice@gopherpost.test> REQUIRETLS ENVID=r1",
            "--to",
            "bob@gopherpost.test",
        )

        def check(transcript: str) -> None:
            self.assertIn("250-REQUIRETLS", transcript)
            self.assertIn("queued as", transcript)
            (envelope,) = envelopes(server)  # type: ignore[arg-type]
            self.assertTrue(envelope.metadata["requiretls"])
            self.assertTrue(envelope.tls)

        return d.addCallback(check)
