"""
Outbound STARTTLS under each C{SMTP_OUTBOUND_TLS} policy (the handshake
itself is the transport's; L{tests.test_client_loopback} has real ones).
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.channel import TIMEOUTS
from gopherpost.relay.outcome import DEFERRED
from tests.support.clientsession import (
    DEFAULT_SIZE,
    EHLO_REPLY,
    EHLO_TLS_REPLY,
    HELO,
    HOST,
    SENDER,
    Conversation,
    statuses,
)


class TLSPolicyTests(SynchronousTestCase):
    """
    STARTTLS under each policy (the handshake itself is the transport's;
    see L{tests.test_client_loopback} for real ones).
    """

    def startTLS(self, policy: str = "verify") -> Conversation:
        c = Conversation(self, policy=policy)
        c.ready(ehlo=EHLO_TLS_REPLY)
        c.step("STARTTLS", "220 2.0.0 go ahead")
        return c

    def test_verify(self) -> None:
        """
        STARTTLS offered: the creator for (policy, MX name) is handed to the
        transport, EHLO is sent again, and the result says TLS with the
        negotiated version and cipher.
        """
        c = self.startTLS()
        self.assertEqual(c.contextRequests, [("verify", HOST)])
        self.assertIs(c.transport.tlsCreator, c.creator)
        c.step(f"EHLO {HELO}", EHLO_REPLY)
        c.written()
        for reply in ("250 ok", "250 ok", "354 go", "250 queued", "221 bye"):
            c.reply(reply)
        result = c.result()
        self.assertTrue(result.accepted)
        self.assertEqual(
            (result.tlsUsed, result.tlsVersion, result.cipher),
            (True, "TLSv1.3", "TLS_AES_128_GCM_SHA256"),
        )

    def test_plaintextAfterStartTLSDiscarded(self) -> None:
        """
        Replies sent in cleartext right behind the 220 (a man in the middle
        injecting them) are thrown away, not taken as the EHLO reply.
        """
        c = Conversation(self)
        c.ready(ehlo=EHLO_TLS_REPLY)
        c.expect("STARTTLS")
        c.reply("220 go ahead\n250-injected\n250 STARTTLS")
        c.expect(f"EHLO {HELO}")
        self.assertFalse(c.transport.aborted)
        c.reply(EHLO_REPLY)
        c.expect(f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}")

    def test_handshakeFailure(self) -> None:
        """
        Under every policy that starts TLS, a failed handshake defers the
        host (4.7.5) and nothing more is sent: no cleartext fallback.
        """
        for policy in ("verify", "require", "may"):
            c = self.startTLS(policy)
            c.expect(f"EHLO {HELO}")
            c.lose(SSL.Error([("SSL routines", "", "certificate verify failed")]))
            self.assertEqual(c.written(), b"")
            result = c.result()
            outcome = result.outcomes[0]
            self.assertEqual((outcome.status, outcome.enhancedCode), (DEFERRED, "4.7.5"), policy)
            self.assertIn("certificate verify failed", outcome.text)
            self.assertIn("no fallback to cleartext", outcome.text)
            self.assertEqual(result.failureStage, "TLS")
            self.assertFalse(result.tlsUsed)

    def test_handshakeTimeout(self) -> None:
        """
        A handshake that never finishes times out as a TLS failure.
        """
        c = self.startTLS()
        c.reactor.advance(TIMEOUTS["EHLO"])
        self.assertTrue(c.transport.aborted)
        outcome = c.result().outcomes[0]
        self.assertEqual((outcome.status, outcome.enhancedCode), (DEFERRED, "4.7.5"))

    def test_startTLSRefused(self) -> None:
        """
        STARTTLS offered but refused: C{may} goes on in cleartext,
        C{verify} and C{require} defer the host.
        """
        c = Conversation(self, policy="may")
        c.ready(ehlo=EHLO_TLS_REPLY)
        c.step("STARTTLS", "454 4.7.0 TLS not available")
        c.expect(f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}")
        for policy in ("verify", "require"):
            c = Conversation(self, policy=policy)
            c.ready(ehlo=EHLO_TLS_REPLY)
            c.step("STARTTLS", "454 4.7.0 TLS not available")
            c.step("QUIT", "221 bye")
            result = c.result()
            self.assertEqual(statuses(result), [("bob@example.test", DEFERRED, 454)])
            self.assertIn("forbids cleartext", result.outcomes[0].text)
            self.assertIsNone(c.transport.tlsCreator)

    def test_requireNotOffered(self) -> None:
        """
        C{require} and no STARTTLS: deferred (4.7.4), QUIT, no MAIL.
        """
        c = Conversation(self, policy="require")
        c.ready()
        c.step("QUIT", "221 bye")
        outcome = c.result().outcomes[0]
        self.assertEqual(
            (outcome.status, outcome.enhancedCode, outcome.remote), (DEFERRED, "4.7.4", False)
        )

    def test_notOffered(self) -> None:
        """
        C{verify} and C{may} without STARTTLS offered: cleartext.
        """
        for policy in ("verify", "may"):
            c = Conversation(self, policy=policy)
            c.ready()
            c.expect(f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}")
            self.assertEqual(c.contextRequests, [])

    def test_none(self) -> None:
        """
        C{none} never sends STARTTLS, even when offered.
        """
        c = Conversation(self, policy="none")
        c.ready(ehlo=EHLO_TLS_REPLY)
        c.expect(f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}")
        self.assertEqual(c.contextRequests, [])

    def test_contextUnavailable(self) -> None:
        """
        When the TLS context cannot be made (say the trust store is
        missing), the host is deferred before STARTTLS is sent.
        """
        c = Conversation(self)
        c.contextError = ValueError("SSL_CERT_FILE '/nope' is not a readable file")
        c.ready(ehlo=EHLO_TLS_REPLY)
        c.step("QUIT", "221 bye")
        outcome = c.result().outcomes[0]
        self.assertEqual((outcome.status, outcome.enhancedCode), (DEFERRED, "4.7.5"))
        self.assertIn("/nope", outcome.text)
