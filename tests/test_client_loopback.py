"""
Loopback integration tests for L{gopherpost.relay.client}: real sockets on
127.0.0.x, a real receiving server (L{tests.support.smtpserver}) and real
TLS with certificates from a CA made at test time.
"""

from __future__ import annotations

from typing import cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from gopherpost.relay.client import DEFERRED, FAILED, SENT, Envelope, deliver, deliverMany
from gopherpost.tls import clientContextFor
from tests.support.certs import makeTestPKI
from tests.support.smtpserver import DROP, SMTPTestServer, firstTimes, forRecipients

HOST = "mx.example.test"
HELO = "gopher.example.test"
SENDER = "alice@gopher.example.test"
MESSAGE = (
    b"From: alice@gopher.example.test\n"
    b"Subject: loopback\n"
    b"\n"
    b".starts with a dot\r\n"
    b"bare CR\rand bare LF\n"
    b".\n"
    b"last line without end"
)


class LoopbackTests(TestCase):
    """
    Delivery to a real server over 127.0.0.x.
    """

    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), HOST)

    def server(self, interface: str = "127.0.0.1", **kw) -> SMTPTestServer:
        server = SMTPTestServer(hostname=HOST, **kw).start(interface)
        self.addCleanup(server.stop)
        return server

    def trusting(self, policy: str, host: str):
        """
        The real creator, trusting the test CA through C{SSL_CERT_FILE}.
        """
        return clientContextFor(policy, host, environ={"SSL_CERT_FILE": self.pki.ca.certPath})

    def deliver(
        self, server: SMTPTestServer, recipients=("bob@example.test",), policy="verify", **kw
    ):
        kw.setdefault("contextFactoryFor", self.trusting)
        return deliver(
            reactor,
            HOST,
            server.host,
            server.port,
            HELO,
            SENDER,
            list(recipients),
            MESSAGE,
            policy,
            **kw,
        )

    @inlineCallbacks
    def test_cleartext(self):
        """
        Without STARTTLS offered (policy C{verify}), the message arrives in
        cleartext, unchanged apart from CRLF line ends, dot-stuffed on the
        wire.
        """
        server = self.server(interface="127.0.0.2")
        result = yield self.deliver(server)
        self.assertEqual(result.sent, ("bob@example.test",))
        self.assertFalse(result.tlsUsed)
        [received] = server.messages
        self.assertEqual((received.sender, received.recipients), (SENDER, ["bob@example.test"]))
        self.assertEqual(received.helo, HELO)
        self.assertFalse(received.tls)
        expected = (
            b"From: alice@gopher.example.test\r\nSubject: loopback\r\n\r\n"
            b".starts with a dot\r\nbare CR\r\nand bare LF\r\n.\r\nlast line without end\r\n"
        )
        self.assertEqual(received.data, expected)
        self.assertEqual(
            received.wire,
            expected.replace(b"\n.", b"\n..") + b".\r\n",
        )
        self.assertEqual(received.mailParameters, [f"SIZE={len(expected)}"])

    @inlineCallbacks
    def test_verifiedTLS(self):
        """
        C{verify} against a server with a certificate from the trusted CA
        (here with an intermediate): the message goes over TLS.
        """
        server = self.server(certificate=self.pki.chained)
        result = yield self.deliver(server)
        self.assertEqual(result.sent, ("bob@example.test",))
        self.assertTrue(result.tlsUsed)
        self.assertIn(result.tlsVersion, ("TLSv1.2", "TLSv1.3"))
        self.assertTrue(result.cipher)
        self.assertTrue(server.messages[0].tls)

    @inlineCallbacks
    def test_injectedTrustRoot(self):
        """
        A trust root can be handed over directly instead of SSL_CERT_FILE.
        """
        server = self.server(certificate=self.pki.good)
        trustRoot = self.pki.ca.trustRoot()
        result = yield self.deliver(
            server, contextFactoryFor=lambda p, h: clientContextFor(p, h, trustRoot=trustRoot)
        )
        self.assertTrue(result.accepted)
        self.assertTrue(result.tlsUsed)

    @inlineCallbacks
    def assertTLSRefused(self, certificate, policy="verify"):
        """
        The delivery is deferred as a TLS failure and nothing was sent after
        STARTTLS: no cleartext fallback.
        """
        server = self.server(certificate=certificate)
        result = yield self.deliver(
            server, recipients=["a@example.test", "b@example.test"], policy=policy
        )
        self.assertEqual(result.deferred, ("a@example.test", "b@example.test"))
        outcome = result.outcomes[0]
        self.assertEqual((outcome.enhancedCode, outcome.remote), ("4.7.5", False))
        self.assertEqual(result.failureStage, "TLS")
        self.assertEqual(server.messages, [])
        self.assertEqual(server.commands[-1], b"STARTTLS")
        return outcome

    @inlineCallbacks
    def test_wrongName(self):
        """
        C{verify}: a trusted certificate for another name is refused.
        """
        outcome = yield self.assertTLSRefused(self.pki.wrongName)
        self.assertIn("does not match", outcome.text)

    def test_selfSigned(self):
        """
        C{verify}: a self-signed certificate is refused.
        """
        return self.assertTLSRefused(self.pki.selfSigned)

    def test_expired(self):
        """
        C{require}: an expired certificate is refused.
        """
        return self.assertTLSRefused(self.pki.expired, policy="require")

    def test_untrustedCA(self):
        """
        C{verify} with the system trust store: the test CA is not in it.
        """
        server = self.server(certificate=self.pki.good)
        d = self.deliver(server, contextFactoryFor=lambda p, h: clientContextFor(p, h, environ={}))
        return d.addCallback(lambda result: self.assertEqual(result.failureStage, "TLS"))

    @inlineCallbacks
    def test_maySelfSigned(self):
        """
        C{may} encrypts to a self-signed certificate.
        """
        server = self.server(certificate=self.pki.selfSigned)
        result = yield self.deliver(server, policy="may")
        self.assertTrue(result.accepted)
        self.assertTrue(result.tlsUsed)
        self.assertTrue(server.messages[0].tls)

    @inlineCallbacks
    def test_requireWithoutSTARTTLS(self):
        """
        C{require} and a server without STARTTLS: deferred, no MAIL sent.
        """
        server = self.server()
        result = yield self.deliver(server, policy="require")
        self.assertEqual(result.deferred, ("bob@example.test",))
        self.assertEqual(result.outcomes[0].enhancedCode, "4.7.4")
        self.assertFalse(any(c.upper().startswith(b"MAIL") for c in server.commands))
        self.assertEqual(server.commands[-1], b"QUIT")

    @inlineCallbacks
    def test_noneIgnoresSTARTTLS(self):
        """
        C{none} sends in cleartext even to a server offering STARTTLS.
        """
        server = self.server(certificate=self.pki.good)
        result = yield self.deliver(server, policy="none")
        self.assertTrue(result.accepted)
        self.assertFalse(result.tlsUsed)
        self.assertFalse(server.messages[0].tls)

    @inlineCallbacks
    def test_perRecipientReplies(self):
        """
        451 for one recipient, 550 for another, 250 for the third: only the
        third gets the message, each outcome matches its reply.
        """
        server = self.server(
            replies={
                "RCPT": forRecipients(
                    {
                        "later@example.test": (451, "4.3.0 try again later"),
                        "gone@example.test": (550, "5.1.1 no such user"),
                    }
                )
            }
        )
        result = yield self.deliver(
            server, recipients=["later@example.test", "gone@example.test", "ok@example.test"]
        )
        self.assertEqual(
            [(o.status, o.code, o.enhancedCode) for o in result.outcomes],
            [(DEFERRED, 451, "4.3.0"), (FAILED, 550, "5.1.1"), (SENT, 250, "2.0.0")],
        )
        self.assertEqual(server.messages[0].recipients, ["ok@example.test"])

    @inlineCallbacks
    def test_temporaryThenAccepted(self):
        """
        451 to the first RCPT, then a second attempt succeeds.
        """
        server = self.server(replies={"RCPT": firstTimes(1, (451, "4.7.1 greylisted"))})
        first = yield self.deliver(server)
        self.assertEqual(first.deferred, ("bob@example.test",))
        second = yield self.deliver(server)
        self.assertEqual(second.sent, ("bob@example.test",))
        self.assertEqual(len(server.messages), 1)

    @inlineCallbacks
    def test_421AtMail(self):
        """
        421 at MAIL: deferred, and the server's closing is handled.
        """
        server = self.server(replies={"MAIL": (421, "4.3.2 shutting down")})
        result = yield self.deliver(server)
        self.assertEqual([(o.status, o.code) for o in result.outcomes], [(DEFERRED, 421)])

    @inlineCallbacks
    def test_droppedAfterAcceptance(self):
        """
        The server hangs up right after 250 to the final dot (no QUIT
        reply): the message counts as delivered, once.
        """
        server = self.server(dropAfterDataEnd=True)
        result = yield self.deliver(server)
        self.assertTrue(result.accepted)
        self.assertEqual(result.sent, ("bob@example.test",))
        self.assertEqual(len(server.messages), 1)

    @inlineCallbacks
    def test_quitDropped(self):
        """
        The server closes instead of answering QUIT: delivered.
        """
        server = self.server(replies={"QUIT": DROP})
        result = yield self.deliver(server)
        self.assertEqual(result.sent, ("bob@example.test",))

    @inlineCallbacks
    def test_severalMessagesOneConnection(self):
        """
        L{deliverMany}: two messages over one TLS connection.
        """
        server = self.server(certificate=self.pki.good)
        results = yield deliverMany(
            reactor,
            HOST,
            server.host,
            server.port,
            HELO,
            [
                Envelope(SENDER, ("a@example.test",), b"Subject: one\r\n\r\n1\r\n"),
                Envelope("", ("b@example.test",), b"Subject: two\r\n\r\n2\r\n"),
            ],
            "verify",
            contextFactoryFor=self.trusting,
        )
        self.assertEqual([r.sent for r in results], [("a@example.test",), ("b@example.test",)])
        self.assertEqual([m.sender for m in server.messages], [SENDER, ""])
        self.assertEqual(server.connectionsMade, 1)

    @inlineCallbacks
    def test_noFactoryLogLines(self):
        """
        An outbound connection writes no "Starting factory" or "Stopping
        factory" line to the log: an administrator sees one line per
        message, not three.
        """
        server = self.server()
        events: list[dict] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        result = yield self.deliver(server, policy="none")
        self.assertEqual(result.sent, ("bob@example.test",))
        yield deferLater(reactor, 0, lambda: None)  # the factory stops after the loss
        text = [formatEvent(e) for e in events]
        self.assertTrue(text, "no log events were captured at all")
        self.assertEqual([t for t in text if "factory" in t.lower()], [])

    @inlineCallbacks
    def test_pipelining(self):
        """
        A server offering PIPELINING gets MAIL, RCPT... and DATA as one
        group per message; refused recipients, a DATA refused for want of
        recipients (then RSET) and accepted messages all come out right.
        """
        server = self.server(
            extensions={"SIZE": "10485760", "8BITMIME": None, "PIPELINING": None},
            replies={"RCPT": forRecipients({"gone@example.test": (550, "5.1.1 no such user")})},
        )
        results = yield deliverMany(
            reactor,
            HOST,
            server.host,
            server.port,
            HELO,
            [
                Envelope(SENDER, ("gone@example.test", "a@example.test"), b"1\r\n"),
                Envelope(SENDER, ("gone@example.test",), b"2\r\n"),
                Envelope("", ("b@example.test",), b"3\r\n"),
            ],
            "verify",
            contextFactoryFor=self.trusting,
        )
        self.assertEqual(
            [[(o.status, o.code) for o in r.outcomes] for r in results],
            [[(FAILED, 550), (SENT, 250)], [(FAILED, 550)], [(SENT, 250)]],
        )
        self.assertEqual(
            [m.recipients for m in server.messages], [["a@example.test"], ["b@example.test"]]
        )
        self.assertEqual([m.data for m in server.messages], [b"1\r\n", b"3\r\n"])
        verbs = [line.split(b" ")[0].split(b":")[0] for line in server.commands]
        self.assertEqual(
            verbs,
            [
                b"EHLO",
                b"MAIL",
                b"RCPT",
                b"RCPT",
                b"DATA",
                b"MAIL",
                b"RCPT",
                b"DATA",
                b"RSET",
                b"MAIL",
                b"RCPT",
                b"DATA",
                b"QUIT",
            ],
        )
        self.assertEqual(server.connectionsMade, 1)

    @inlineCallbacks
    def test_connectionRefused(self):
        """
        Nothing listening: every recipient deferred with the reason.
        """
        port = reactor.listenTCP(
            0, cast(ServerFactory, Factory.forProtocol(Protocol)), interface="127.0.0.1"
        )
        number = cast(IPv4Address, port.getHost()).port
        yield port.stopListening()
        result = yield deliver(
            reactor, HOST, "127.0.0.1", number, HELO, SENDER, ["a@example.test"], b"x", "verify"
        )
        outcome = result.outcomes[0]
        self.assertEqual((outcome.status, outcome.enhancedCode), (DEFERRED, "4.4.1"))
        self.assertIn("refused", outcome.text.lower())
