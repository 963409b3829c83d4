"""
Mail transactions of the outbound client (L{gopherpost.relay.session}):
MAIL, RCPT, DATA and the body, driven over a L{StringTransport} one server
reply at a time.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.body import prepareMessage
from gopherpost.relay.channel import TIMEOUTS
from gopherpost.relay.outcome import DEFERRED, FAILED, SENT
from tests.support.clientsession import (
    ADDRESS,
    HOST,
    SENDER,
    Conversation,
    statuses,
)


class TransactionTests(SynchronousTestCase):
    """
    The mail transaction: replies at each stage.
    """

    def test_success(self) -> None:
        """
        The whole conversation: EHLO, MAIL with SIZE and BODY=8BITMIME for
        an 8-bit message, RCPT per recipient, DATA, the normalized and
        dot-stuffed body, QUIT; every recipient is sent.
        """
        message = "Subject: caf\u00e9\n\n.leading dot\nend".encode("utf-8")
        payload, size, _ = prepareMessage(message)
        c = Conversation(
            self, recipients=["bob@example.test", "carol@example.test"], message=message
        )
        c.ready()
        c.step(f"MAIL FROM:<{SENDER}> SIZE={size} BODY=8BITMIME", "250 2.1.0 ok")
        c.step("RCPT TO:<bob@example.test>", "250 2.1.5 ok")
        c.step("RCPT TO:<carol@example.test>", "250 2.1.5 ok")
        c.step("DATA", "354 go ahead")
        body = c.written()
        self.assertEqual(body, payload)
        self.assertIn(b"\r\n..leading dot\r\nend\r\n.\r\n", body)
        c.reply("250 2.0.0 queued as ABC")
        c.step("QUIT", "221 2.0.0 bye")
        result = c.result()
        self.assertTrue(result.accepted)
        self.assertIsNone(result.failureStage)
        self.assertFalse(result.tlsUsed)
        self.assertEqual(result.sent, ("bob@example.test", "carol@example.test"))
        outcome = result.outcomeFor("bob@example.test")
        self.assertEqual(
            (outcome.code, outcome.enhancedCode, outcome.text, outcome.remote),
            (250, "2.0.0", "queued as ABC", True),
        )
        self.assertEqual((result.host, result.address, result.port), (HOST, ADDRESS, 25))
        self.assertEqual(c.reactor.tcpClients[0][:2], (ADDRESS, 25))

    def test_bodyInChunks(self) -> None:
        """
        The body goes out in a few large writes, not a write per line.
        """
        message = b"".join(b"line %d\r\n" % i for i in range(20000))
        c = Conversation(self, message=message)
        c.ready()
        c.written()
        c.reply("250 ok")
        c.reply("250 ok")
        before = c.transport.writes
        c.reply("354 go")
        self.assertLessEqual(c.transport.writes - before, len(message) // 65536 + 3)
        self.assertTrue(c.written().endswith(b"line 19999\r\n.\r\n"))

    def test_noExtensions(self) -> None:
        """
        Without SIZE and 8BITMIME advertised, MAIL carries no parameters;
        a 7-bit message never gets BODY=8BITMIME.
        """
        c = Conversation(self, message="caf\u00e9".encode("utf-8"))
        c.ready(ehlo="250 mx.example.test")
        c.expect(f"MAIL FROM:<{SENDER}>")
        c = Conversation(self, message=b"plain")
        c.ready()
        c.expect(f"MAIL FROM:<{SENDER}> SIZE=7")

    def test_nullSender(self) -> None:
        """
        A bounce goes out with C{MAIL FROM:<>}.
        """
        c = Conversation(self, sender="")
        c.ready(ehlo="250 mx.example.test")
        c.expect("MAIL FROM:<>")

    def test_tooLargeForServer(self) -> None:
        """
        A message over the advertised SIZE fails permanently without MAIL.
        """
        c = Conversation(self, message=b"x" * 100)
        c.ready(ehlo="250-mx\n250 SIZE 50")
        c.step("QUIT", "221 bye")
        result = c.result()
        outcome = result.outcomes[0]
        self.assertEqual(
            (outcome.status, outcome.code, outcome.enhancedCode), (FAILED, 552, "5.3.4")
        )
        self.assertFalse(outcome.remote)
        self.assertEqual(result.failureStage, "MAIL")

    def test_sizeZeroMeansNoLimit(self) -> None:
        """
        C{SIZE 0} (or no number) imposes no limit.
        """
        c = Conversation(self, message=b"x" * 100)
        c.ready(ehlo="250-mx\n250 SIZE 0")
        c.expect(f"MAIL FROM:<{SENDER}> SIZE=102")

    def test_mailRefused(self) -> None:
        """
        4xx at MAIL defers every recipient, 5xx fails every one; no RCPT is
        sent, the session ends with QUIT.
        """
        for code, status in ((451, DEFERRED), (553, FAILED)):
            c = Conversation(self, recipients=["a@example.test", "b@example.test"])
            c.ready()
            c.written()
            c.reply(f"{code} {code // 100}.7.1 not from you")
            c.step("QUIT", "221 bye")
            result = c.result()
            self.assertEqual([o.status for o in result.outcomes], [status, status])
            self.assertEqual(result.outcomes[0].enhancedCode, f"{code // 100}.7.1")
            self.assertEqual(
                result.outcomes[0].diagnosticCode, f"smtp; {code} {code // 100}.7.1 not from you"
            )
            self.assertEqual(result.failureStage, "MAIL")

    def test_421AtMail(self) -> None:
        """
        421 at MAIL: the server is closing; every recipient is deferred and
        no QUIT is sent.
        """
        c = Conversation(self)
        c.ready()
        c.written()
        c.reply("421 4.3.2 shutting down")
        self.assertEqual(c.written(), b"")
        self.assertTrue(c.transport.disconnecting)
        result = c.result()
        self.assertEqual(statuses(result), [("bob@example.test", DEFERRED, 421)])

    def test_recipientMix(self) -> None:
        """
        Per-recipient replies: the accepted recipient proceeds to DATA even
        though the others got 4xx and 5xx, and each keeps its own reply.
        """
        c = Conversation(
            self, recipients=["ok@example.test", "later@example.test", "gone@example.test"]
        )
        c.ready()
        c.written()
        c.reply("250 ok")
        c.step("RCPT TO:<ok@example.test>", "250 ok")
        c.step("RCPT TO:<later@example.test>", "452 4.2.2 mailbox full")
        c.step("RCPT TO:<gone@example.test>", "550 5.1.1 no such user")
        c.expect("DATA")
        c.reply("354 go")
        c.written()
        c.reply("250 2.0.0 queued")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertTrue(result.accepted)
        self.assertEqual(
            statuses(result),
            [
                ("ok@example.test", SENT, 250),
                ("later@example.test", DEFERRED, 452),
                ("gone@example.test", FAILED, 550),
            ],
        )
        self.assertEqual(result.outcomeFor("gone@example.test").text, "no such user")
        self.assertIsNone(result.failureStage)

    def test_noRecipientAccepted(self) -> None:
        """
        When every RCPT is refused, DATA is never sent.
        """
        c = Conversation(self, recipients=["a@example.test", "b@example.test"])
        c.ready()
        c.written()
        c.reply("250 ok")
        c.step("RCPT TO:<a@example.test>", "450 4.2.1 try later")
        c.step("RCPT TO:<b@example.test>", "550 5.1.1 unknown")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertFalse(result.accepted)
        self.assertEqual([o.status for o in result.outcomes], [DEFERRED, FAILED])
        self.assertEqual(result.failureStage, "RCPT")

    def test_dataRefused(self) -> None:
        """
        4xx/5xx to DATA settles the accepted recipients; a recipient refused
        at RCPT keeps its own reply.
        """
        for code, status in ((451, DEFERRED), (554, FAILED)):
            c = Conversation(self, recipients=["a@example.test", "b@example.test"])
            c.ready()
            c.written()
            c.reply("250 ok")
            c.reply("250 ok")
            c.written()
            c.reply("550 5.1.1 unknown")
            c.step("DATA", f"{code} no")
            c.step("QUIT", "221 bye")
            result = c.result()
            self.assertEqual(
                statuses(result),
                [("a@example.test", status, code), ("b@example.test", FAILED, 550)],
            )
            self.assertEqual(result.failureStage, "DATA")
            self.assertFalse(result.accepted)

    def test_endOfDataRefused(self) -> None:
        """
        4xx/5xx after the final dot: not accepted, recipients deferred or
        failed.
        """
        for code, status in ((451, DEFERRED), (554, FAILED)):
            c = Conversation(self)
            c.ready()
            c.written()
            c.reply("250 ok")
            c.reply("250 ok")
            c.reply("354 go")
            c.written()
            c.reply(f"{code} {code // 100}.6.0 content refused")
            c.step("QUIT", "221 bye")
            result = c.result()
            self.assertFalse(result.accepted)
            self.assertEqual(statuses(result), [("bob@example.test", status, code)])
            self.assertEqual(result.failureStage, "end of data")

    def sendUntilFinalReply(self) -> Conversation:
        c = Conversation(self)
        c.ready()
        c.written()
        c.reply("250 ok")
        c.reply("250 ok")
        c.reply("354 go")
        c.written()
        c.reply("250 2.0.0 queued")
        c.expect("QUIT")
        return c

    def assertSent(self, c: Conversation) -> None:
        result = c.result()
        self.assertTrue(result.accepted)
        self.assertEqual(result.sent, ("bob@example.test",))

    def test_quitRefusedAfterAcceptance(self) -> None:
        """
        Once the final dot got 250, an error reply to QUIT changes nothing.
        """
        c = self.sendUntilFinalReply()
        c.reply("500 what")
        self.assertSent(c)

    def test_connectionLostAfterAcceptance(self) -> None:
        """
        Once the final dot got 250, losing the connection before the QUIT
        reply is still a delivery.
        """
        c = self.sendUntilFinalReply()
        c.lose(ConnectionLost())
        self.assertSent(c)

    def test_quitTimeoutAfterAcceptance(self) -> None:
        """
        A server that never answers QUIT: still a delivery, and the
        connection is dropped after the QUIT timeout.
        """
        c = self.sendUntilFinalReply()
        self.assertNoResult(c.d)
        c.reactor.advance(TIMEOUTS["QUIT"])
        self.assertTrue(c.transport.aborted)
        self.assertSent(c)

    def test_connectionLostBeforeAcceptance(self) -> None:
        """
        The connection dropping while waiting for the final reply defers
        the recipients (the message may or may not have arrived).
        """
        c = Conversation(self)
        c.ready()
        c.written()
        c.reply("250 ok")
        c.reply("250 ok")
        c.reply("354 go")
        c.lose(ConnectionLost("gone"))
        result = c.result()
        outcome = result.outcomes[0]
        self.assertEqual(
            (outcome.status, outcome.enhancedCode, outcome.remote), (DEFERRED, "4.4.2", False)
        )
        self.assertIn("connection lost", outcome.text)
        self.assertEqual(result.failureStage, "end of data")

    def test_earlyFinalReply(self) -> None:
        """
        A server that refuses the message while the body is still being
        written: the reply counts, and the connection is dropped (it is out
        of step).
        """
        c = Conversation(self, message=b"x\r\n" * 100000)
        c.ready()
        c.written()
        c.reply("250 ok")
        c.reply("250 ok")
        c.transport.pauseAtWrite = c.transport.writes + 2
        c.reply("354 go")
        c.reply("552 5.3.4 too big")
        self.assertTrue(c.transport.aborted)
        self.assertIsNone(c.transport.producer)
        result = c.result()
        self.assertEqual(statuses(result), [("bob@example.test", FAILED, 552)])

    def test_invalidAddresses(self) -> None:
        """
        Addresses that could inject commands or parameters fail locally and
        never reach the wire.
        """
        evil = ["x@example.test>\r\nRSET", "y@example.test> NOTIFY=NEVER", "", "ok@example.test"]
        c = Conversation(self, recipients=evil)
        c.ready()
        c.written()
        c.reply("250 ok")
        c.expect("RCPT TO:<ok@example.test>")
        c.reply("550 no")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertEqual([o.code for o in result.outcomes], [553, 553, 553, 550])
        self.assertEqual([o.remote for o in result.outcomes], [False, False, False, True])

    def test_invalidSender(self) -> None:
        """
        A sender with a line break fails every recipient without MAIL.
        """
        c = Conversation(self, sender="a@b\r\nRCPT TO:<x@y>")
        c.ready()
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertEqual(
            (result.outcomes[0].status, result.outcomes[0].enhancedCode), (FAILED, "5.1.7")
        )

    def test_duplicateRecipients(self) -> None:
        """
        A recipient listed twice gets one RCPT and one outcome.
        """
        c = Conversation(self, recipients=["a@example.test", "a@example.test"])
        c.ready()
        c.written()
        c.reply("250 ok")
        c.step("RCPT TO:<a@example.test>", "250 ok")
        c.expect("DATA")
        c.lose()
        self.assertEqual(len(c.result().outcomes), 1)

    def test_smtputf8(self) -> None:
        """
        A non-ASCII address needs SMTPUTF8: without it the recipient fails
        locally (5.6.7); with it MAIL says SMTPUTF8 and the address goes
        out as UTF-8.
        """
        c = Conversation(self, recipients=["j\u00f6rg@example.test"])
        c.ready()
        c.step("QUIT", "221 bye")
        self.assertEqual(c.result().outcomes[0].enhancedCode, "5.6.7")
        c = Conversation(self, recipients=["j\u00f6rg@example.test"], message=b"hi")
        c.ready(ehlo="250-mx\n250 SMTPUTF8")
        c.step(f"MAIL FROM:<{SENDER}> SMTPUTF8", "250 ok")
        c.expect("RCPT TO:<j\u00f6rg@example.test>")
