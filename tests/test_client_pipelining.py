"""
Unit tests for RFC 2920 PIPELINING in the outbound client session
(L{gopherpost.relay.session}), driven over a L{StringTransport} with the
conversation helpers of L{tests.support.clientsession}.
"""

from __future__ import annotations

import gc

from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.body import prepareMessage
from gopherpost.relay.client import DEFERRED, FAILED, SENT, Envelope
from tests.support.clientsession import (
    DEFAULT_MESSAGE,
    DEFAULT_SIZE,
    EHLO_PIPELINING_REPLY,
    EHLO_REPLY,
    EHLO_TLS_REPLY,
    HELO,
    SENDER,
    Conversation,
    statuses,
)


class PipeliningTests(SynchronousTestCase):
    """
    RFC 2920: with C{PIPELINING} advertised, MAIL, every RCPT and DATA go
    out in one write and their replies are read in order.
    """

    def replyThenGroup(self, c: Conversation, reply: str, *lines: str) -> None:
        """
        After C{reply}, the client writes exactly C{lines}, in one write.
        """
        before = c.transport.writes
        c.reply(reply)
        self.assertEqual(c.transport.writes - before, 1)
        c.expect(*lines)

    def start(
        self,
        recipients=("bob@example.test",),
        ehlo: str = EHLO_PIPELINING_REPLY,
        mail: str = f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}",
        **kw,
    ) -> Conversation:
        """
        A conversation up to the first group, checked byte for byte.
        """
        c = Conversation(self, recipients=list(recipients), **kw)
        c.reply("220 mx.example.test ESMTP")
        c.expect(f"EHLO {HELO}")
        self.replyThenGroup(c, ehlo, mail, *(f"RCPT TO:<{r}>" for r in recipients), "DATA")
        return c

    def awaitedReplies(self, c: Conversation) -> list:
        """
        The Deferreds of the replies the client still waits for (white box:
        "every one fails" cannot be seen from outside).
        """
        return [a.deferred for a in c.protocol._wrappedProtocol._awaiting]

    def assertNothingLeftFailing(self) -> None:
        """
        No Deferred is left failing with nobody to read it.
        """
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_oneWriteRepliesInOneChunk(self) -> None:
        """
        MAIL (with its parameters), each RCPT and DATA go out in one write
        before any reply; replies arriving in one read are all taken, and
        the body follows the 354.
        """
        message = "Subject: caf\u00e9\n\nhi".encode("utf-8")
        payload, size, _ = prepareMessage(message)
        recipients = ["bob@example.test", "j\u00f6rg@example.test"]
        ehlo = EHLO_PIPELINING_REPLY.replace(
            "250 ENHANCEDSTATUSCODES", "250-ENHANCEDSTATUSCODES\n250 SMTPUTF8"
        )
        c = self.start(
            recipients,
            ehlo,
            f"MAIL FROM:<{SENDER}> SIZE={size} BODY=8BITMIME SMTPUTF8",
            message=message,
        )
        c.protocol.dataReceived(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n")
        self.assertEqual(c.written(), payload)
        c.reply("250 2.0.0 queued")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertTrue(result.accepted)
        self.assertEqual(result.sent, tuple(recipients))

    def test_repliesOneByOne(self) -> None:
        """
        Replies arriving one at a time: nothing more is written until the
        354, then the body.
        """
        c = self.start(["a@example.test", "b@example.test"])
        for reply in ("250 ok", "250 ok", "250 ok"):
            c.reply(reply)
            self.assertEqual(c.written(), b"")
        c.reply("354 go")
        self.assertEqual(c.written(), prepareMessage(DEFAULT_MESSAGE)[0])
        c.reply("250 queued")
        c.step("QUIT", "221 bye")
        self.assertEqual(c.result().sent, ("a@example.test", "b@example.test"))

    def test_recipientMix(self) -> None:
        """
        Each recipient keeps its own reply; the accepted one gets the
        message.
        """
        recipients = ["ok@example.test", "later@example.test", "gone@example.test"]
        c = self.start(recipients)
        c.reply("250 ok\n250 ok\n452 4.2.2 mailbox full\n550 5.1.1 no such user\n354 go")
        self.assertEqual(c.written(), prepareMessage(DEFAULT_MESSAGE)[0])
        c.reply("250 2.0.0 queued")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertTrue(result.accepted)
        self.assertIsNone(result.failureStage)
        self.assertEqual(
            statuses(result),
            [
                ("ok@example.test", SENT, 250),
                ("later@example.test", DEFERRED, 452),
                ("gone@example.test", FAILED, 550),
            ],
        )
        self.assertEqual(result.outcomeFor("later@example.test").enhancedCode, "4.2.2")

    def test_invalidAddressesLeftOut(self) -> None:
        """
        A recipient refused locally is not part of the group.
        """
        c = Conversation(self, recipients=["x@example.test>\r\nRSET", "ok@example.test"])
        c.reply("220 mx")
        c.expect(f"EHLO {HELO}")
        self.replyThenGroup(
            c,
            EHLO_PIPELINING_REPLY,
            f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}",
            "RCPT TO:<ok@example.test>",
            "DATA",
        )

    def test_mailRefused(self) -> None:
        """
        MAIL refused: every recipient gets that reply; the 503s to the RCPTs
        and DATA are read (and ignored) before QUIT.
        """
        for code, status in ((451, DEFERRED), (553, FAILED)):
            c = self.start(["a@example.test", "b@example.test"])
            refusal = f"{code} {code // 100}.7.1 not from you"
            for reply in (refusal, "503 5.5.1 MAIL first", "503 5.5.1 MAIL first"):
                c.reply(reply)
                self.assertEqual(c.written(), b"")
            c.reply("503 5.5.1 no valid recipients")
            c.step("QUIT", "221 bye")
            result = c.result()
            self.assertEqual(
                statuses(result),
                [("a@example.test", status, code), ("b@example.test", status, code)],
            )
            self.assertEqual(result.outcomes[1].enhancedCode, f"{code // 100}.7.1")
            self.assertEqual(result.failureStage, "MAIL")
            self.assertFalse(result.accepted)

    def test_dataAcceptedWithoutRecipients(self) -> None:
        """
        No RCPT accepted but DATA answered 354 (RFC 2920 allows it): a lone
        dot ends the empty message, its reply is read, and the recipients
        keep their RCPT replies.
        """
        c = self.start(["a@example.test", "b@example.test"])
        c.reply("250 ok\n550 5.1.1 unknown\n450 4.2.1 later\n354 go")
        self.assertEqual(c.written(), b".\r\n")
        c.reply("554 5.5.1 no valid recipients")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertFalse(result.accepted)
        self.assertEqual(
            statuses(result),
            [("a@example.test", FAILED, 550), ("b@example.test", DEFERRED, 450)],
        )
        self.assertEqual(result.failureStage, "RCPT")

    def test_dataRefusedWithoutRecipients(self) -> None:
        """
        No RCPT accepted and DATA refused: no dot, straight to QUIT.
        """
        c = self.start()
        c.reply("250 ok\n550 5.1.1 unknown")
        self.assertEqual(c.written(), b"")
        c.reply("503 5.5.1 no valid recipients")
        c.step("QUIT", "221 bye")
        self.assertEqual(statuses(c.result()), [("bob@example.test", FAILED, 550)])

    def test_dataRefused(self) -> None:
        """
        4xx to DATA defers the accepted recipients.
        """
        c = self.start(["a@example.test", "b@example.test"])
        c.reply("250 ok\n250 ok\n550 5.1.1 unknown\n451 4.3.0 not now")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertEqual(
            statuses(result),
            [("a@example.test", DEFERRED, 451), ("b@example.test", FAILED, 550)],
        )
        self.assertEqual(result.failureStage, "DATA")

    def test_421(self) -> None:
        """
        421 to MAIL or an RCPT ends the session: nothing more is sent, the
        other replies are not waited for, every recipient is deferred.
        """
        for replies, stage in (
            ("421 4.3.2 bye", "MAIL"),
            ("250 ok\n250 ok\n421 4.3.2 bye", "RCPT"),
        ):
            c = self.start(["a@example.test", "b@example.test"])
            c.reply(replies)
            self.assertEqual(c.written(), b"")
            self.assertTrue(c.transport.disconnecting)
            result = c.result()
            self.assertEqual(
                statuses(result),
                [("a@example.test", DEFERRED, 421), ("b@example.test", DEFERRED, 421)],
            )
            self.assertEqual(result.failureStage, stage)
            del c
            self.assertNothingLeftFailing()

    def test_timeoutOnSecondReply(self) -> None:
        """
        Each reply's timer starts when the one before it arrives: the RCPT
        reply times out 300 s after the MAIL reply; every reply still
        awaited fails, nothing is left unhandled, nothing more is written.
        """
        c = self.start()
        c.reactor.advance(299)
        c.reply("250 ok")
        awaited = self.awaitedReplies(c)
        self.assertEqual(len(awaited), 2)
        c.reactor.advance(299.5)
        self.assertFalse(c.transport.aborted)
        c.reactor.advance(0.5)
        self.assertTrue(c.transport.aborted)
        self.assertEqual([d.called for d in awaited], [True, True])
        del awaited
        self.assertEqual(c.written(), b"")
        result = c.result()
        outcome = result.outcomes[0]
        self.assertEqual((outcome.status, outcome.enhancedCode), (DEFERRED, "4.4.2"))
        self.assertEqual(outcome.text, "timeout after 300s waiting for the reply to RCPT")
        self.assertEqual(result.failureStage, "RCPT")
        self.assertNothingLeftFailing()

    def test_dataTimeout(self) -> None:
        """
        The DATA reply has its own 120 s once the last RCPT reply is in.
        """
        c = self.start()
        c.reply("250 ok")
        c.reactor.advance(299)
        c.reply("250 ok")
        c.reactor.advance(119.5)
        self.assertFalse(c.transport.aborted)
        c.reactor.advance(0.5)
        self.assertTrue(c.transport.aborted)
        self.assertEqual(c.result().failureStage, "DATA")

    def test_connectionLostInGroup(self) -> None:
        """
        The connection dropping while replies are due fails every one of
        them and defers everyone, with the stage of the first reply missing.
        """
        c = self.start(["a@example.test", "b@example.test"])
        c.reply("250 ok\n250 ok")
        awaited = self.awaitedReplies(c)
        self.assertEqual(len(awaited), 2)
        c.lose(ConnectionLost("gone"))
        self.assertEqual([d.called for d in awaited], [True, True])
        del awaited
        result = c.result()
        self.assertEqual(
            [(o.status, o.enhancedCode, o.remote) for o in result.outcomes],
            [(DEFERRED, "4.4.2", False)] * 2,
        )
        self.assertIn("connection lost waiting for the reply to RCPT", result.outcomes[0].text)
        self.assertEqual(result.failureStage, "RCPT")
        self.assertEqual(c.written(), b"")
        self.assertNothingLeftFailing()

    def test_earlyFinalReply(self) -> None:
        """
        A final reply while the body is still going out still counts and
        drops the connection.
        """
        message = b"x\r\n" * 100000
        c = self.start(mail=f"MAIL FROM:<{SENDER}> SIZE={len(message)}", message=message)
        c.reply("250 ok\n250 ok")
        c.transport.pauseAtWrite = c.transport.writes + 2
        c.reply("354 go")
        c.reply("552 5.3.4 too big")
        self.assertTrue(c.transport.aborted)
        self.assertIsNone(c.transport.producer)
        self.assertEqual(statuses(c.result()), [("bob@example.test", FAILED, 552)])

    def test_severalMessages(self) -> None:
        """
        Each message is one group; RSET comes only after a transaction that
        failed half-way (all recipients refused, MAIL refused).
        """
        envelopes = [
            Envelope(SENDER, ("a@example.test",), b"one"),
            Envelope(SENDER, ("b@example.test",), b"two"),
            Envelope("", ("c@example.test",), b"three"),
            Envelope(SENDER, ("d@example.test",), b"four"),
        ]
        c = self.start(
            ["a@example.test"],
            "250-mx\n250 PIPELINING",
            f"MAIL FROM:<{SENDER}>",
            envelopes=envelopes,
        )
        c.reply("250 ok\n250 ok\n354 go")
        self.assertEqual(c.written(), b"one\r\n.\r\n")
        self.replyThenGroup(
            c, "250 queued", f"MAIL FROM:<{SENDER}>", "RCPT TO:<b@example.test>", "DATA"
        )
        c.reply("250 ok\n550 5.1.1 unknown\n503 5.5.1 no valid recipients")
        c.expect("RSET")
        self.replyThenGroup(c, "250 ok", "MAIL FROM:<>", "RCPT TO:<c@example.test>", "DATA")
        c.reply("550 5.7.1 not you\n503 5.5.1 MAIL first\n503 5.5.1 MAIL first")
        c.expect("RSET")
        self.replyThenGroup(
            c, "250 ok", f"MAIL FROM:<{SENDER}>", "RCPT TO:<d@example.test>", "DATA"
        )
        c.reply("250 ok\n250 ok\n354 go")
        self.assertEqual(c.written(), b"four\r\n.\r\n")
        c.reply("250 queued")
        c.step("QUIT", "221 bye")
        results = c.result()
        self.assertEqual(
            [statuses(r) for r in results],
            [
                [("a@example.test", SENT, 250)],
                [("b@example.test", FAILED, 550)],
                [("c@example.test", FAILED, 550)],
                [("d@example.test", SENT, 250)],
            ],
        )
        self.assertEqual([r.failureStage for r in results], [None, "RCPT", "MAIL", None])

    def test_onlyWhenAdvertisedNow(self) -> None:
        """
        What counts is the EHLO after STARTTLS: PIPELINING offered only
        before TLS means one command at a time.
        """
        before = EHLO_TLS_REPLY.replace("250-8BITMIME", "250-8BITMIME\n250-PIPELINING")
        c = Conversation(self)
        c.ready(ehlo=before)
        c.step("STARTTLS", "220 go ahead")
        c.step(f"EHLO {HELO}", EHLO_REPLY)
        c.expect(f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}")
        c = Conversation(self)
        c.ready(ehlo=EHLO_TLS_REPLY)
        c.step("STARTTLS", "220 go ahead")
        c.expect(f"EHLO {HELO}")
        self.replyThenGroup(
            c,
            EHLO_PIPELINING_REPLY,
            f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}",
            "RCPT TO:<bob@example.test>",
            "DATA",
        )
