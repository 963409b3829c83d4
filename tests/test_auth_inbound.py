"""
AUTH in the inbound session: the protocol over a StringTransport with a
real spool, the listener roles, the policies on the chain, the long
response lines, the delay, the envelope and the trace header.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.auth.command import FAILURE_DELAY
from gopherpost.inbound.replies import Reply
from gopherpost.inbound.roles import SMTP, SUBMISSION, SUBMISSIONS, ListenerRole
from tests.support.auth import captureLogs, makeService
from tests.support.inbound import InboundHarness, replies

ALICE = "alice@gopherpost.test"
PASSWORD = "s3cret"


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def plain(user: str = ALICE, password: str = PASSWORD) -> bytes:
    return b64(f"\0{user}\0{password}")


class AuthSessionTests(SynchronousTestCase):
    """
    The submission roles with AUTH.
    """

    role: ListenerRole = SUBMISSION

    def setUp(self) -> None:
        self.harness = self.makeHarness()

    def makeHarness(self, role: ListenerRole | None = None, **overrides: Any) -> InboundHarness:
        onSMTP = overrides.pop("onSMTP", False)
        checkFrom = overrides.pop("checkFrom", False)

        def auth(clock: Clock) -> Any:
            return makeService(
                self.mktemp(),
                [(ALICE, PASSWORD), ("app", "app-pw", ["noreply@example.test"])],
                clock,
                hostname="mx.gopherpost.test",
                replyType=Reply,
                onSMTP=onSMTP,
                checkFrom=checkFrom,
            )

        overrides.setdefault("tlsDisable", False)
        # Submission clients come from anywhere: no relay permission by
        # their address.
        overrides.setdefault("relayNetworks", ())
        return InboundHarness(
            self, contextFactory=object(), role=role or self.role, auth=auth, **overrides
        )

    def connect(self, harness: InboundHarness | None = None, tls: bool = True) -> tuple[Any, Any]:
        """
        A session, encrypted (STARTTLS, or implicit TLS) when C{tls}.
        """
        harness = harness or self.harness
        proto, transport = harness.connect(tls=True)
        if harness.factory.role.implicitTLS:
            proto.handshakeCompleted()
        replies(transport)
        if tls and not harness.factory.role.implicitTLS:
            proto.dataReceived(b"EHLO client.test\r\n")
            proto.dataReceived(b"STARTTLS\r\n")
            self.assertEqual(replies(transport)[-1], b"220 2.0.0 Ready to start TLS")
            proto.handshakeCompleted()
        return proto, transport

    def send(self, proto: Any, transport: Any, data: bytes) -> list[bytes]:
        proto.dataReceived(data)
        return replies(transport)

    def test_ehloAfterTLS(self) -> None:
        """
        AUTH is advertised after STARTTLS, never before.
        """
        proto, transport = self.connect(tls=False)
        before = self.send(proto, transport, b"EHLO client.test\r\n")
        self.assertFalse([line for line in before if b"AUTH" in line])
        self.assertIn(b"250-STARTTLS", before)
        proto.dataReceived(b"STARTTLS\r\n")
        replies(transport)
        proto.handshakeCompleted()
        after = self.send(proto, transport, b"EHLO client.test\r\n")
        self.assertIn(b"250-AUTH PLAIN LOGIN", after)
        self.assertNotIn(b"250-STARTTLS", after)

    def test_authBeforeTLS(self) -> None:
        """
        AUTH in the clear: C{538 5.7.11}, even with the right password.
        """
        proto, transport = self.connect(tls=False)
        self.send(proto, transport, b"EHLO client.test\r\n")
        self.assertEqual(
            self.send(proto, transport, b"AUTH PLAIN " + plain() + b"\r\n"),
            [b"538 5.7.11 Encryption required for requested authentication mechanism"],
        )

    def test_mailBeforeAuth(self) -> None:
        """
        MAIL before AUTH: C{530 5.7.0 Authentication required}.
        """
        proto, transport = self.connect()
        self.send(proto, transport, b"EHLO client.test\r\n")
        self.assertEqual(
            self.send(proto, transport, b"MAIL FROM:<alice@gopherpost.test>\r\n"),
            [b"530 5.7.0 Authentication required"],
        )

    def test_submit(self) -> None:
        """
        AUTH, then a message to another domain: relayed, the Received header
        says ESMTPSA and not the user, the envelope keeps the user, and the
        log names them.
        """
        log = captureLogs(self)
        proto, transport = self.connect()
        self.send(proto, transport, b"EHLO client.test\r\n")
        self.assertEqual(
            self.send(proto, transport, b"AUTH PLAIN " + plain() + b"\r\n"),
            [b"235 2.7.0 Authentication successful"],
        )
        self.assertEqual(
            self.send(
                proto,
                transport,
                b"MAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
            ),
            [b"250 2.1.0 Ok", b"250 2.1.5 Ok", b"354 End data with <CR><LF>.<CR><LF>"],
        )
        done = self.send(proto, transport, b"From: alice@gopherpost.test\r\n\r\nHi\r\n.\r\n")
        self.assertTrue(done[0].startswith(b"250 2.0.0 Ok: queued as "), done)
        [stored] = self.harness.storedFiles()
        content = self.harness.read(stored)
        trace = content.split(b"\r\nFrom:")[0]
        self.assertTrue(trace.startswith(b"Received: from client.test"), trace)
        self.assertIn(b"with ESMTPSA id", trace)
        self.assertNotIn(b"alice", trace)
        [envelope] = list(self.harness.spool.envelopes())
        self.assertEqual(envelope.metadata, {"authUser": ALICE, "authMechanism": "PLAIN"})
        self.assertEqual(len(self.harness.relayed), 1)
        [accepted] = [formatEvent(e) for e in log if "Accepted" in e.get("log_format", "")]
        self.assertIn(f"user={ALICE}", accepted)

    def test_senderNotOwned(self) -> None:
        """
        A sender the user does not own: C{553 5.7.1}; C{<>} is fine; for an
        authenticated user the sender rights replace the local-domain rule.
        """
        proto, transport = self.connect()
        self.send(proto, transport, b"EHLO client.test\r\n")
        self.send(proto, transport, b"AUTH PLAIN " + plain("app", "app-pw") + b"\r\n")
        self.assertEqual(
            self.send(proto, transport, b"MAIL FROM:<alice@gopherpost.test>\r\n"),
            [b"553 5.7.1 <alice@gopherpost.test>: Sender address rejected: not owned by user app"],
        )
        self.assertEqual(
            self.send(proto, transport, b"MAIL FROM:<noreply@example.test>\r\nRSET\r\n"),
            [b"250 2.1.0 Ok", b"250 2.0.0 Ok"],
        )
        self.assertEqual(self.send(proto, transport, b"MAIL FROM:<>\r\n"), [b"250 2.1.0 Ok"])

    def test_loginWithLongResponse(self) -> None:
        """
        LOGIN over the wire; a response line may be longer than a command
        line (up to 12,288 octets); over that, C{500 5.5.6}.
        """
        proto, transport = self.connect()
        self.send(proto, transport, b"EHLO client.test\r\n")
        self.assertEqual(self.send(proto, transport, b"AUTH LOGIN\r\n"), [b"334 VXNlcm5hbWU6"])
        self.assertEqual(self.send(proto, transport, b64(ALICE) + b"\r\n"), [b"334 UGFzc3dvcmQ6"])
        long = base64.b64encode(b"p" * 900)
        self.assertGreater(len(long), 512)
        proto.dataReceived(long + b"\r\n")
        self.assertEqual(replies(transport), [])
        self.harness.clock.advance(FAILURE_DELAY)
        self.assertEqual(replies(transport), [b"535 5.7.8 Authentication credentials invalid"])
        self.send(proto, transport, b"AUTH PLAIN\r\n")
        proto.dataReceived(b"A" * 13000 + b"\r\n")
        self.harness.clock.advance(FAILURE_DELAY)
        self.assertEqual(
            replies(transport), [b"500 5.5.6 Authentication Exchange line is too long"]
        )
        # After the exchange, command lines have their usual limit again.
        self.assertEqual(
            self.send(proto, transport, b"NOOP " + b"x" * 600 + b"\r\n"),
            [b"500 5.5.2 Error: line too long"],
        )

    def test_delayHoldsPipelinedCommands(self) -> None:
        """
        A failure is answered after the delay; what the client sent after
        it waits for its turn.
        """
        proto, transport = self.connect()
        self.send(proto, transport, b"EHLO client.test\r\n")
        proto.dataReceived(b"AUTH PLAIN " + plain(password="wrong") + b"\r\nNOOP\r\n")
        self.assertEqual(replies(transport), [])
        self.harness.clock.advance(FAILURE_DELAY)
        self.assertEqual(
            replies(transport), [b"535 5.7.8 Authentication credentials invalid", b"250 2.0.0 Ok"]
        )

    def test_tooManyFailuresCloses(self) -> None:
        """
        Three failures: C{421 4.7.0} and the close.
        """
        proto, transport = self.connect()
        self.send(proto, transport, b"EHLO client.test\r\n")
        for _ in range(3):
            proto.dataReceived(b"AUTH PLAIN " + plain(password="wrong") + b"\r\n")
            self.harness.clock.advance(FAILURE_DELAY)
        lines = replies(transport)
        self.assertEqual(
            lines[-1], b"421 4.7.0 mx.gopherpost.test Error: too many failed authentications"
        )
        self.assertTrue(transport.disconnecting)

    def test_cancel(self) -> None:
        proto, transport = self.connect()
        self.send(proto, transport, b"EHLO client.test\r\n")
        self.send(proto, transport, b"AUTH PLAIN\r\n")
        self.assertEqual(
            self.send(proto, transport, b"*\r\n"), [b"501 5.7.0 Authentication aborted"]
        )
        self.assertEqual(self.send(proto, transport, b"NOOP\r\n"), [b"250 2.0.0 Ok"])

    def test_authDuringTransaction(self) -> None:
        proto, transport = self.connect()
        self.send(proto, transport, b"EHLO client.test\r\n")
        self.send(proto, transport, b"AUTH PLAIN " + plain() + b"\r\n")
        self.send(proto, transport, b"MAIL FROM:<>\r\n")
        self.assertEqual(
            self.send(proto, transport, b"AUTH PLAIN " + plain() + b"\r\n"),
            [b"503 5.5.1 Error: already authenticated"],
        )

    def test_helpListsAuth(self) -> None:
        proto, transport = self.connect()
        self.assertIn(b"AUTH", self.send(proto, transport, b"HELP\r\n")[0])

    def test_connectionLostWhileDelayed(self) -> None:
        """
        A client that leaves while its failure waits: no timer left, nothing
        logged.
        """
        proto, transport = self.connect()
        self.send(proto, transport, b"EHLO client.test\r\n")
        proto.dataReceived(b"AUTH PLAIN " + plain(password="x") + b"\r\n")
        transport.lost = True
        proto.connectionLost(None)
        self.harness.clock.advance(FAILURE_DELAY)
        self.assertEqual(replies(transport), [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_headerFrom(self) -> None:
        """
        With C{SMTP_AUTH_CHECK_FROM}, a header From the user does not own is
        refused at the end of data.
        """
        harness = self.makeHarness(checkFrom=True)
        proto, transport = self.connect(harness)
        self.send(proto, transport, b"EHLO client.test\r\n")
        self.send(proto, transport, b"AUTH PLAIN " + plain("app", "app-pw") + b"\r\n")
        self.send(
            proto,
            transport,
            b"MAIL FROM:<noreply@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
        )
        self.assertEqual(
            self.send(proto, transport, b"From: CEO <ceo@example.test>\r\n\r\nPay.\r\n.\r\n"),
            [b"550 5.7.1 <ceo@example.test>: From header address rejected: not owned by user app"],
        )
        self.assertEqual(harness.storedFiles(), [])


class ImplicitTLSTests(AuthSessionTests):
    """
    The same on the submissions role (implicit TLS).
    """

    role = SUBMISSIONS

    def test_ehloAfterTLS(self) -> None:
        """
        Implicit TLS: AUTH from the first EHLO, no STARTTLS.
        """
        proto, transport = self.connect()
        lines = self.send(proto, transport, b"EHLO client.test\r\n")
        self.assertIn(b"250-AUTH PLAIN LOGIN", lines)
        self.assertNotIn(b"250-STARTTLS", lines)

    def test_authBeforeTLS(self) -> None:
        """
        (Every session of this role is encrypted.)
        """


class SMTPRoleTests(SynchronousTestCase):
    """
    SMTP_LISTEN: AUTH only with C{SMTP_AUTH_ON_SMTP=true}, and only over
    TLS; it never requires it.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()

    def harness(self, onSMTP: bool) -> InboundHarness:
        def auth(clock: Clock) -> Any:
            return makeService(
                self.directory,
                [(ALICE, PASSWORD)],
                clock,
                replyType=Reply,
                onSMTP=onSMTP,
            )

        return InboundHarness(
            self, contextFactory=object(), role=SMTP, auth=auth, tlsDisable=False, relayNetworks=()
        )

    def session(self, harness: InboundHarness) -> tuple[Any, Any]:
        proto, transport = harness.connect(tls=True)
        replies(transport)
        proto.dataReceived(b"EHLO client.test\r\n")
        proto.dataReceived(b"STARTTLS\r\n")
        replies(transport)
        proto.handshakeCompleted()
        proto.dataReceived(b"EHLO client.test\r\n")
        return proto, transport

    def test_offByDefault(self) -> None:
        harness = self.harness(onSMTP=False)
        proto, transport = self.session(harness)
        self.assertFalse([line for line in replies(transport) if b"AUTH" in line])
        proto.dataReceived(b"AUTH PLAIN " + plain() + b"\r\n")
        self.assertEqual(replies(transport), [b"503 5.5.1 Error: authentication not enabled"])

    def test_onSMTP(self) -> None:
        """
        With it, AUTH after STARTTLS lets the user relay; MAIL without AUTH
        still works (an MX never requires it), for local recipients only.
        """
        harness = self.harness(onSMTP=True)
        proto, transport = self.session(harness)
        self.assertIn(b"250-AUTH PLAIN LOGIN", replies(transport))
        proto.dataReceived(b"MAIL FROM:<x@example.test>\r\nRCPT TO:<bob@example.test>\r\nRSET\r\n")
        self.assertEqual(
            replies(transport),
            [
                b"250 2.1.0 Ok",
                b"554 5.7.1 <bob@example.test>: Relay access denied",
                b"250 2.0.0 Ok",
            ],
        )
        proto.dataReceived(b"AUTH PLAIN " + plain() + b"\r\n")
        self.assertEqual(replies(transport), [b"235 2.7.0 Authentication successful"])
        proto.dataReceived(b"MAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@example.test>\r\n")
        self.assertEqual(replies(transport), [b"250 2.1.0 Ok", b"250 2.1.5 Ok"])
