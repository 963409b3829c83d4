"""
The outbound client session (L{gopherpost.relay.session}) over a
L{StringTransport}: greeting and EHLO, malformed replies, several messages
on one connection, results reported as they come, and graceful stops.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.client import Envelope
from gopherpost.relay.outcome import DEFERRED, FAILED, SENT, DeliveryResult
from gopherpost.relay.transaction import STOPPED_TEXT
from tests.support.clientsession import (
    DEFAULT_SIZE,
    EHLO_REPLY,
    HELO,
    SENDER,
    Conversation,
    statuses,
)


class SessionTests(SynchronousTestCase):
    """
    Greeting, EHLO/HELO, protocol errors, cancellation, several messages.
    """

    def test_heloFallback(self) -> None:
        """
        EHLO refused with 5xx: HELO, then the transaction without ESMTP
        parameters.
        """
        c = Conversation(self)
        c.reply("220 old.example.test SMTP")
        c.step(f"EHLO {HELO}", "502 5.5.1 what?")
        c.step(f"HELO {HELO}", "250 old.example.test")
        c.expect(f"MAIL FROM:<{SENDER}>")

    def test_heloRefused(self) -> None:
        """
        EHLO and HELO both refused: the host is deferred, politely.
        """
        c = Conversation(self)
        c.reply("220 mx")
        c.step(f"EHLO {HELO}", "500 no")
        c.step(f"HELO {HELO}", "550 5.7.1 go away")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertEqual(statuses(result), [("bob@example.test", DEFERRED, 550)])
        self.assertEqual(result.failureStage, "HELO")

    def test_ehloTemporaryFailure(self) -> None:
        """
        4xx to EHLO defers without trying HELO.
        """
        c = Conversation(self)
        c.reply("220 mx")
        c.step(f"EHLO {HELO}", "450 busy")
        c.step("QUIT", "221 bye")
        self.assertEqual(statuses(c.result()), [("bob@example.test", DEFERRED, 450)])

    def test_greetingRefused(self) -> None:
        """
        A 554 greeting defers the host (another MX may take it): QUIT is
        sent.  A 421 greeting: no QUIT.
        """
        c = Conversation(self)
        c.reply("554 5.7.1 no service for you")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertEqual(statuses(result), [("bob@example.test", DEFERRED, 554)])
        self.assertIn("refused to talk", result.outcomes[0].text)
        self.assertEqual(result.failureStage, "greeting")
        c = Conversation(self)
        c.reply("421 4.3.2 busy")
        self.assertEqual(c.written(), b"")
        self.assertEqual(statuses(c.result()), [("bob@example.test", DEFERRED, 421)])

    def test_multilineRepliesInPieces(self) -> None:
        """
        Replies split anywhere across reads, multi-line ones included, are
        put together.
        """
        c = Conversation(self)
        for piece in (b"22", b"0 mx\r", b"\n"):
            c.protocol.dataReceived(piece)
        c.expect(f"EHLO {HELO}")
        data = EHLO_REPLY.replace("\n", "\r\n").encode("ascii") + b"\r\n"
        for i in range(len(data)):
            c.protocol.dataReceived(data[i : i + 1])
        c.expect(f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}")

    def test_malformedReply(self) -> None:
        """
        A reply that is not SMTP: protocol error, connection dropped,
        recipients deferred (4.5.0).
        """
        c = Conversation(self)
        c.reply("HTTP/1.1 400 Bad Request")
        self.assertTrue(c.transport.aborted)
        result = c.result()
        self.assertEqual(
            (result.outcomes[0].status, result.outcomes[0].enhancedCode), (DEFERRED, "4.5.0")
        )
        self.assertIn("malformed reply", result.outcomes[0].text)

    def test_mixedCodes(self) -> None:
        """
        Lines of one reply with different codes are a protocol error.
        """
        c = Conversation(self)
        c.reply("220-mx\n250 hello")
        self.assertTrue(c.transport.aborted)
        self.assertEqual(c.result().outcomes[0].enhancedCode, "4.5.0")

    def test_unexpectedReply(self) -> None:
        """
        A reply nobody asked for drops the connection (here after QUIT, so
        the delivery stands).
        """
        c = Conversation(self)
        c.ready(ehlo="250 mx")
        for reply in ("250 ok", "250 ok", "354 go", "250 queued"):
            c.reply(reply)
        c.reply("221 bye")
        c.reply("250 surprise")
        self.assertTrue(c.transport.aborted)
        self.assertEqual(c.result().sent, ("bob@example.test",))

    def test_severalMessages(self) -> None:
        """
        L{deliverMany} sends each message in its own transaction on one
        connection, with RSET after a transaction that stopped half-way.
        """
        envelopes = [
            Envelope(SENDER, ("a@example.test",), b"one"),
            Envelope(SENDER, ("b@example.test",), b"two"),
            Envelope("", ("c@example.test",), b"three"),
        ]
        c = Conversation(self, envelopes=envelopes)
        c.ready(ehlo="250 mx")
        c.step(f"MAIL FROM:<{SENDER}>", "250 ok")
        c.step("RCPT TO:<a@example.test>", "550 no")
        c.step("RSET", "250 ok")
        c.step(f"MAIL FROM:<{SENDER}>", "250 ok")
        c.step("RCPT TO:<b@example.test>", "250 ok")
        c.step("DATA", "354 go")
        self.assertEqual(c.written(), b"two\r\n.\r\n")
        c.reply("250 queued")
        c.step("MAIL FROM:<>", "250 ok")
        c.step("RCPT TO:<c@example.test>", "250 ok")
        c.expect("DATA")
        c.lose(ConnectionLost())
        results = c.result()
        self.assertEqual([r.accepted for r in results], [False, True, False])
        self.assertEqual([r.outcomes[0].status for r in results], [FAILED, SENT, DEFERRED])
        self.assertEqual(results[2].failureStage, "DATA")

    def test_severalMessagesSessionFailure(self) -> None:
        """
        When the session fails, the messages not yet sent are deferred and
        the ones already accepted stay sent.
        """
        envelopes = [
            Envelope(SENDER, ("a@example.test",), b"one"),
            Envelope(SENDER, ("b@example.test",), b"two"),
        ]
        c = Conversation(self, envelopes=envelopes)
        c.ready(ehlo="250 mx")
        c.written()
        c.reply("250 ok")
        c.reply("250 ok")
        c.reply("354 go")
        c.written()
        c.reply("250 queued")
        c.step(f"MAIL FROM:<{SENDER}>", "421 4.3.2 closing")
        results = c.result()
        self.assertEqual([r.outcomes[0].status for r in results], [SENT, DEFERRED])
        self.assertEqual(results[1].outcomes[0].code, 421)


class ReportTests(SynchronousTestCase):
    """
    Each message's result is reported as soon as it is known, before the
    next message of the connection starts.
    """

    def twoMessages(self, onResult) -> Conversation:
        envelopes = [
            Envelope(SENDER, ("a@example.test",), b"one"),
            Envelope(SENDER, ("b@example.test",), b"two"),
        ]
        c = Conversation(self, envelopes=envelopes, onResult=onResult)
        c.ready(ehlo="250 mx")
        return c

    def sendFirst(self, c: Conversation) -> None:
        c.step(f"MAIL FROM:<{SENDER}>", "250 ok")
        c.step("RCPT TO:<a@example.test>", "250 ok")
        c.step("DATA", "354 go")
        self.assertEqual(c.written(), b"one\r\n.\r\n")

    def test_beforeTheNextMessage(self) -> None:
        """
        The first message is reported when its final reply arrives, while
        nothing of the second one has been written; each message is
        reported once, in order, and the final results are the same.
        """
        reports: list[tuple[int, DeliveryResult, bytes]] = []
        conversation: list[Conversation] = []

        def onResult(index: int, result: DeliveryResult) -> None:
            reports.append((index, result, conversation[0].transport.value()))

        c = self.twoMessages(onResult)
        conversation.append(c)
        self.sendFirst(c)
        c.reply("250 2.0.0 queued as A")
        [(index, result, written)] = reports
        self.assertEqual(index, 0)
        self.assertEqual(result.sent, ("a@example.test",))
        self.assertTrue(result.accepted)
        self.assertNotIn(b"b@example.test", written)
        self.assertTrue(written.endswith(b"one\r\n.\r\n"))
        c.step(f"MAIL FROM:<{SENDER}>", "250 ok")
        c.step("RCPT TO:<b@example.test>", "550 5.1.1 no")
        c.step("QUIT", "221 bye")
        results = c.result()
        self.assertEqual([i for i, _, _ in reports], [0, 1])
        self.assertEqual([r for _, r, _ in reports], results)
        self.assertEqual(reports[1][1].failed, ("b@example.test",))

    def test_waitsForTheListener(self) -> None:
        """
        A listener returning a Deferred holds the next message back until
        it fires.
        """
        pending: list[Deferred[None]] = []

        def onResult(index: int, result: DeliveryResult) -> Deferred[None]:
            pending.append(Deferred())
            return pending[-1]

        c = self.twoMessages(onResult)
        self.sendFirst(c)
        c.reply("250 queued")
        self.assertEqual(len(pending), 1)
        self.assertEqual(c.written(), b"")
        pending[0].callback(None)
        c.expect(f"MAIL FROM:<{SENDER}>")

    def test_listenerErrorLogged(self) -> None:
        """
        A listener that raises is logged; the session goes on.
        """
        calls: list[int] = []

        def onResult(index: int, result: DeliveryResult) -> None:
            calls.append(index)
            raise RuntimeError("disk on fire")

        c = self.twoMessages(onResult)
        self.sendFirst(c)
        c.reply("250 queued")
        c.expect(f"MAIL FROM:<{SENDER}>")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(calls, [0])

    def test_failureReportsTheRest(self) -> None:
        """
        A connection lost during the second message reports it and every
        later one, each once, deferred.
        """
        reports: list[tuple[int, DeliveryResult]] = []
        envelopes = [Envelope(SENDER, (f"{n}@example.test",), b"m") for n in "abc"]
        c = Conversation(self, envelopes=envelopes, onResult=lambda i, r: reports.append((i, r)))
        c.ready(ehlo="250 mx")
        for reply in ("250 ok", "250 ok", "354 go", "250 queued", "250 ok"):
            c.reply(reply)
        c.lose(ConnectionLost())
        self.assertEqual([i for i, _ in reports], [0, 1, 2])
        self.assertEqual([r.outcomes[0].status for _, r in reports], [SENT, DEFERRED, DEFERRED])
        self.assertEqual([r for _, r in reports], c.result())

    def test_timings(self) -> None:
        """
        The first message's C{connectSeconds} is the connection set-up
        (greeting and EHLO); later ones found the connection ready.  Each
        C{transferSeconds} is its own transaction, RSET included.
        """
        reports: list[DeliveryResult] = []
        envelopes = [
            Envelope(SENDER, ("a@example.test",), b"one"),
            Envelope(SENDER, ("b@example.test",), b"two"),
        ]
        c = Conversation(self, envelopes=envelopes, onResult=lambda i, r: reports.append(r))
        c.reactor.advance(1)
        c.reply("220 mx")
        c.reactor.advance(2)
        c.reply("250 mx")
        for reply in ("250 ok", "250 ok", "354 go"):
            c.reactor.advance(1)
            c.reply(reply)
        c.reactor.advance(1)
        c.reply("250 queued")
        for reply in ("250 ok", "250 ok", "354 go", "250 queued"):
            c.reactor.advance(0.5)
            c.reply(reply)
        self.assertEqual([r.connectSeconds for r in reports], [3.0, 0.0])
        self.assertEqual([r.transferSeconds for r in reports], [4.0, 2.0])


class StopTests(SynchronousTestCase):
    """
    L{ClientSession.stopGracefully}: no message delivered is lost track of.
    """

    def start(self, onResult=None) -> Conversation:
        envelopes = [
            Envelope(SENDER, ("a@example.test",), b"one"),
            Envelope(SENDER, ("b@example.test",), b"two"),
        ]
        c = Conversation(self, envelopes=envelopes, onResult=onResult or (lambda i, r: None))
        c.ready(ehlo="250 mx")
        return c

    def assertStopped(self, result: DeliveryResult) -> None:
        outcome = result.outcomes[0]
        self.assertEqual(
            (outcome.status, outcome.code, outcome.enhancedCode, outcome.remote),
            (DEFERRED, 421, "4.3.2", False),
        )
        self.assertEqual(outcome.text, STOPPED_TEXT)

    def test_waitsForTheFinalReply(self) -> None:
        """
        Stopped once the message is out: the reply to its final dot is
        awaited and reported, then QUIT; the next message is not started.
        """
        reports: list[DeliveryResult] = []
        c = self.start(lambda i, r: reports.append(r))
        for reply in ("250 ok", "250 ok", "354 go"):
            c.reply(reply)
        c.written()
        assert c.attempt is not None
        c.attempt.stopGracefully()
        self.assertFalse(c.transport.aborted)
        c.reply("250 2.0.0 queued as A")
        self.assertEqual(reports[0].sent, ("a@example.test",))
        c.step("QUIT", "221 bye")
        results = c.result()
        self.assertEqual(results[0].sent, ("a@example.test",))
        self.assertStopped(results[1])
        self.assertEqual(len(reports), 2)

    def test_dropsBeforeTheFinalDot(self) -> None:
        """
        Stopped while the body is still going out (the server reads
        slowly): the connection is dropped at once, before the final dot;
        nothing counts as sent.
        """
        c = Conversation(self, message=b"x\r\n" * 100000, onResult=lambda i, r: None)
        c.ready(ehlo="250 mx")
        for reply in ("250 ok", "250 ok"):
            c.reply(reply)
        c.transport.pauseAtWrite = c.transport.writes + 2
        c.reply("354 go")
        self.assertFalse(c.transport.value().endswith(b"\r\n.\r\n"))
        assert c.attempt is not None
        c.attempt.stopGracefully()
        self.assertTrue(c.transport.aborted)
        self.assertFalse(c.transport.value().endswith(b"\r\n.\r\n"))
        [result] = c.result()
        self.assertStopped(result)

    def test_dropsWhileWaitingForRCPT(self) -> None:
        """
        Stopped while a command's reply is awaited: dropped at once.
        """
        c = self.start()
        c.reply("250 ok")
        assert c.attempt is not None
        c.attempt.stopGracefully()
        self.assertTrue(c.transport.aborted)
        results = c.result()
        self.assertStopped(results[0])
        self.assertStopped(results[1])
