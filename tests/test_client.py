"""
Unit tests for L{gopherpost.relay.client}: the client protocol driven over a
L{StringTransport} with a L{MemoryReactorClock}, one server reply at a time.

The loopback tests against a real server are in
L{tests.test_client_loopback}.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.body import prepareMessage
from gopherpost.relay.channel import TIMEOUTS
from gopherpost.relay.client import Envelope, deliver, deliverMany
from gopherpost.relay.outcome import DEFERRED, FAILED, SENT, DeliveryResult, Reply

HOST = "mx.example.test"
ADDRESS = "192.0.2.25"
HELO = "gopher.example.test"
SENDER = "alice@gopher.example.test"
EHLO_REPLY = "250-mx.example.test hello\n250-SIZE 1000000\n250-8BITMIME\n250 ENHANCEDSTATUSCODES"
DEFAULT_MESSAGE = b"Subject: test\r\n\r\nHello.\r\n"
DEFAULT_SIZE = len(DEFAULT_MESSAGE)
EHLO_TLS_REPLY = EHLO_REPLY.replace("250-8BITMIME", "250-8BITMIME\n250-STARTTLS")
EHLO_PIPELINING_REPLY = EHLO_REPLY.replace("250-8BITMIME", "250-8BITMIME\n250-PIPELINING")


class _FakeTLSConnection:
    """
    What C{transport.getHandle()} returns once TLS is on.
    """

    def get_protocol_version_name(self) -> str:
        return "TLSv1.3"

    def get_cipher_name(self) -> str:
        return "TLS_AES_128_GCM_SHA256"


class _Transport(StringTransport):
    """
    A L{StringTransport} that can start TLS (noting the creator), counts
    writes, and can play a full send buffer by pausing its producer.
    """

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", ADDRESS, 25))
        self.writes = 0
        self.tlsCreator: object | None = None
        self.pauseAtWrite: int | None = None
        self.aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes += 1
        if self.pauseAtWrite is not None and self.writes >= self.pauseAtWrite and self.producer:
            self.pauseAtWrite = None
            self.producer.pauseProducing()

    def startTLS(self, creator: object) -> None:
        self.tlsCreator = creator

    def getHandle(self) -> _FakeTLSConnection:
        if self.tlsCreator is None:
            raise AttributeError("no TLS")
        return _FakeTLSConnection()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class _Conversation:
    """
    One delivery attempt with the test playing the server.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        recipients=("bob@example.test",),
        message: bytes = DEFAULT_MESSAGE,
        sender: str = SENDER,
        policy: str = "verify",
        scale: float = 1.0,
        envelopes: list[Envelope] | None = None,
        connect: bool = True,
    ) -> None:
        self.testCase = testCase
        self.reactor = MemoryReactorClock()
        self.creator = object()
        self.contextRequests: list = []
        self.contextError: Exception | None = None
        self.transport = _Transport()
        self._seen = 0
        if envelopes is None:
            self.d = deliver(
                self.reactor,
                HOST,
                ADDRESS,
                25,
                HELO,
                sender,
                list(recipients),
                message,
                policy,
                scale,
                self.contextFactoryFor,
            )
        else:
            self.d = deliverMany(
                self.reactor,
                HOST,
                ADDRESS,
                25,
                HELO,
                envelopes,
                policy,
                scale,
                self.contextFactoryFor,
            )
        if connect:
            self.connect()

    def contextFactoryFor(self, policy: str, host: str) -> object:
        self.contextRequests.append((policy, host))
        if self.contextError is not None:
            raise self.contextError
        return self.creator

    def connect(self) -> None:
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[0]
        self.protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.protocol.makeConnection(self.transport)

    def written(self) -> bytes:
        """
        The bytes the client wrote since the last call.
        """
        data = self.transport.value()[self._seen :]
        self._seen += len(data)
        return data

    def expect(self, *commands: str) -> None:
        """
        The client's next writes are exactly these command lines.
        """
        expected = "".join(c + "\r\n" for c in commands).encode("utf-8")
        self.testCase.assertEqual(self.written(), expected)

    def reply(self, text: str) -> None:
        """
        The server sends C{text} (LF in it become CRLF).
        """
        self.protocol.dataReceived(text.replace("\n", "\r\n").encode("utf-8") + b"\r\n")

    def step(self, command: str, reply: str) -> None:
        self.expect(command)
        self.reply(reply)

    def ready(self, ehlo: str = EHLO_REPLY) -> None:
        self.reply("220 mx.example.test ESMTP")
        self.step(f"EHLO {HELO}", ehlo)

    def lose(self, reason: Exception | None = None) -> None:
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))

    def result(self):
        """
        Close the connection if the client asked to, and return the result.
        """
        if self.transport.disconnecting and not self.d.called:
            self.lose()
        return self.testCase.successResultOf(self.d)


def _statuses(result: DeliveryResult) -> list:
    return [(o.recipient, o.status, o.code) for o in result.outcomes]


class PrepareMessageTests(SynchronousTestCase):
    """
    L{prepareMessage}: line ends, dot-stuffing, size, 8-bit detection.
    """

    def test_lineEnds(self) -> None:
        """
        Bare LF, bare CR and CRLF all become CRLF; no line end is doubled.
        """
        payload, size, _ = prepareMessage(b"a\nb\rc\r\nd\r\re\n\n")
        self.assertEqual(payload, b"a\r\nb\r\nc\r\nd\r\n\r\ne\r\n\r\n.\r\n")
        self.assertEqual(size, len(payload) - 3)

    def test_finalLineEnd(self) -> None:
        """
        A message not ending in a line end gets CRLF before the final dot;
        an empty one is just the dot.
        """
        self.assertEqual(prepareMessage(b"x")[0], b"x\r\n.\r\n")
        self.assertEqual(prepareMessage(b"")[0], b".\r\n")

    def test_dotStuffing(self) -> None:
        """
        Every line starting with a dot gets another, the first line too and
        lines after a bare CR; dots elsewhere are untouched.  SIZE counts the
        unstuffed message.
        """
        payload, size, _ = prepareMessage(b".a\r\nb.c\r\n.\r\n..\rd\n.e")
        self.assertEqual(payload, b"..a\r\nb.c\r\n..\r\n...\r\nd\r\n..e\r\n.\r\n")
        self.assertEqual(size, len(b".a\r\nb.c\r\n.\r\n..\r\nd\r\n.e\r\n"))

    def test_eightBit(self) -> None:
        """
        Bytes above 127 are noticed.
        """
        self.assertFalse(prepareMessage(b"plain ascii\r\n")[2])
        self.assertTrue(prepareMessage("caf\u00e9\r\n".encode("utf-8"))[2])


class ReplyTests(SynchronousTestCase):
    """
    L{Reply}: enhanced codes and text.
    """

    def test_enhanced(self) -> None:
        """
        The enhanced code is taken from the first line when its class
        matches the reply code, and stripped from the text of every line.
        """
        reply = Reply(550, ("5.1.1 no such user", "5.1.1 really"))
        self.assertEqual(reply.enhancedCode, "5.1.1")
        self.assertEqual(reply.text, "no such user really")
        self.assertEqual(str(reply), "550 5.1.1 no such user really")

    def test_noEnhanced(self) -> None:
        """
        No code, or a code of another class: L{None}, text kept.
        """
        self.assertIsNone(Reply(250, ("ok",)).enhancedCode)
        reply = Reply(451, ("5.1.1 confused",))
        self.assertIsNone(reply.enhancedCode)
        self.assertEqual(reply.text, "5.1.1 confused")
        self.assertIsNone(Reply(250).enhancedCode)


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
        c = _Conversation(
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
        c = _Conversation(self, message=message)
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
        c = _Conversation(self, message="caf\u00e9".encode("utf-8"))
        c.ready(ehlo="250 mx.example.test")
        c.expect(f"MAIL FROM:<{SENDER}>")
        c = _Conversation(self, message=b"plain")
        c.ready()
        c.expect(f"MAIL FROM:<{SENDER}> SIZE=7")

    def test_nullSender(self) -> None:
        """
        A bounce goes out with C{MAIL FROM:<>}.
        """
        c = _Conversation(self, sender="")
        c.ready(ehlo="250 mx.example.test")
        c.expect("MAIL FROM:<>")

    def test_tooLargeForServer(self) -> None:
        """
        A message over the advertised SIZE fails permanently without MAIL.
        """
        c = _Conversation(self, message=b"x" * 100)
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
        c = _Conversation(self, message=b"x" * 100)
        c.ready(ehlo="250-mx\n250 SIZE 0")
        c.expect(f"MAIL FROM:<{SENDER}> SIZE=102")

    def test_mailRefused(self) -> None:
        """
        4xx at MAIL defers every recipient, 5xx fails every one; no RCPT is
        sent, the session ends with QUIT.
        """
        for code, status in ((451, DEFERRED), (553, FAILED)):
            c = _Conversation(self, recipients=["a@example.test", "b@example.test"])
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
        c = _Conversation(self)
        c.ready()
        c.written()
        c.reply("421 4.3.2 shutting down")
        self.assertEqual(c.written(), b"")
        self.assertTrue(c.transport.disconnecting)
        result = c.result()
        self.assertEqual(_statuses(result), [("bob@example.test", DEFERRED, 421)])

    def test_recipientMix(self) -> None:
        """
        Per-recipient replies: the accepted recipient proceeds to DATA even
        though the others got 4xx and 5xx, and each keeps its own reply.
        """
        c = _Conversation(
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
            _statuses(result),
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
        c = _Conversation(self, recipients=["a@example.test", "b@example.test"])
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
            c = _Conversation(self, recipients=["a@example.test", "b@example.test"])
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
                _statuses(result),
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
            c = _Conversation(self)
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
            self.assertEqual(_statuses(result), [("bob@example.test", status, code)])
            self.assertEqual(result.failureStage, "end of data")

    def sendUntilFinalReply(self) -> _Conversation:
        c = _Conversation(self)
        c.ready()
        c.written()
        c.reply("250 ok")
        c.reply("250 ok")
        c.reply("354 go")
        c.written()
        c.reply("250 2.0.0 queued")
        c.expect("QUIT")
        return c

    def assertSent(self, c: _Conversation) -> None:
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
        c = _Conversation(self)
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
        c = _Conversation(self, message=b"x\r\n" * 100000)
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
        self.assertEqual(_statuses(result), [("bob@example.test", FAILED, 552)])

    def test_invalidAddresses(self) -> None:
        """
        Addresses that could inject commands or parameters fail locally and
        never reach the wire.
        """
        evil = ["x@example.test>\r\nRSET", "y@example.test> NOTIFY=NEVER", "", "ok@example.test"]
        c = _Conversation(self, recipients=evil)
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
        c = _Conversation(self, sender="a@b\r\nRCPT TO:<x@y>")
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
        c = _Conversation(self, recipients=["a@example.test", "a@example.test"])
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
        c = _Conversation(self, recipients=["j\u00f6rg@example.test"])
        c.ready()
        c.step("QUIT", "221 bye")
        self.assertEqual(c.result().outcomes[0].enhancedCode, "5.6.7")
        c = _Conversation(self, recipients=["j\u00f6rg@example.test"], message=b"hi")
        c.ready(ehlo="250-mx\n250 SMTPUTF8")
        c.step(f"MAIL FROM:<{SENDER}> SMTPUTF8", "250 ok")
        c.expect("RCPT TO:<j\u00f6rg@example.test>")


class SessionTests(SynchronousTestCase):
    """
    Greeting, EHLO/HELO, protocol errors, cancellation, several messages.
    """

    def test_heloFallback(self) -> None:
        """
        EHLO refused with 5xx: HELO, then the transaction without ESMTP
        parameters.
        """
        c = _Conversation(self)
        c.reply("220 old.example.test SMTP")
        c.step(f"EHLO {HELO}", "502 5.5.1 what?")
        c.step(f"HELO {HELO}", "250 old.example.test")
        c.expect(f"MAIL FROM:<{SENDER}>")

    def test_heloRefused(self) -> None:
        """
        EHLO and HELO both refused: the host is deferred, politely.
        """
        c = _Conversation(self)
        c.reply("220 mx")
        c.step(f"EHLO {HELO}", "500 no")
        c.step(f"HELO {HELO}", "550 5.7.1 go away")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertEqual(_statuses(result), [("bob@example.test", DEFERRED, 550)])
        self.assertEqual(result.failureStage, "HELO")

    def test_ehloTemporaryFailure(self) -> None:
        """
        4xx to EHLO defers without trying HELO.
        """
        c = _Conversation(self)
        c.reply("220 mx")
        c.step(f"EHLO {HELO}", "450 busy")
        c.step("QUIT", "221 bye")
        self.assertEqual(_statuses(c.result()), [("bob@example.test", DEFERRED, 450)])

    def test_greetingRefused(self) -> None:
        """
        A 554 greeting defers the host (another MX may take it): QUIT is
        sent.  A 421 greeting: no QUIT.
        """
        c = _Conversation(self)
        c.reply("554 5.7.1 no service for you")
        c.step("QUIT", "221 bye")
        result = c.result()
        self.assertEqual(_statuses(result), [("bob@example.test", DEFERRED, 554)])
        self.assertIn("refused to talk", result.outcomes[0].text)
        self.assertEqual(result.failureStage, "greeting")
        c = _Conversation(self)
        c.reply("421 4.3.2 busy")
        self.assertEqual(c.written(), b"")
        self.assertEqual(_statuses(c.result()), [("bob@example.test", DEFERRED, 421)])

    def test_multilineRepliesInPieces(self) -> None:
        """
        Replies split anywhere across reads, multi-line ones included, are
        put together.
        """
        c = _Conversation(self)
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
        c = _Conversation(self)
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
        c = _Conversation(self)
        c.reply("220-mx\n250 hello")
        self.assertTrue(c.transport.aborted)
        self.assertEqual(c.result().outcomes[0].enhancedCode, "4.5.0")

    def test_unexpectedReply(self) -> None:
        """
        A reply nobody asked for drops the connection (here after QUIT, so
        the delivery stands).
        """
        c = _Conversation(self)
        c.ready(ehlo="250 mx")
        for reply in ("250 ok", "250 ok", "354 go", "250 queued"):
            c.reply(reply)
        c.reply("221 bye")
        c.reply("250 surprise")
        self.assertTrue(c.transport.aborted)
        self.assertEqual(c.result().sent, ("bob@example.test",))

    def test_cancel(self) -> None:
        """
        Cancelling the Deferred drops the connection.
        """
        c = _Conversation(self)
        c.reply("220 mx")
        c.d.cancel()
        self.assertTrue(c.transport.aborted)
        self.failureResultOf(c.d, CancelledError)
        c.lose()

    def test_notAnAddress(self) -> None:
        """
        C{address} must be an IP address: names are resolved by the caller.
        """
        self.assertRaises(
            ValueError,
            deliver,
            MemoryReactorClock(),
            HOST,
            HOST,
            25,
            HELO,
            SENDER,
            ["a@example.test"],
            b"x",
            "verify",
        )
        self.assertRaises(
            ValueError,
            deliver,
            MemoryReactorClock(),
            HOST,
            ADDRESS,
            25,
            HELO,
            SENDER,
            ["a@example.test"],
            b"x",
            "sometimes",
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 address is connected to as such.
        """
        reactor = MemoryReactorClock()
        deliver(
            reactor, HOST, "2001:db8::25", 2525, HELO, SENDER, ["a@example.test"], b"x", "verify"
        )
        self.assertEqual(reactor.tcpClients[0][:2], ("2001:db8::25", 2525))

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
        c = _Conversation(self, envelopes=envelopes)
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
        c = _Conversation(self, envelopes=envelopes)
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


class ConnectTests(SynchronousTestCase):
    """
    Failing to connect.
    """

    def test_refused(self) -> None:
        """
        Connection refused: every recipient deferred with 4.4.1 and the
        reason.
        """
        c = _Conversation(self, recipients=["a@example.test", "b@example.test"], connect=False)
        connector = c.reactor.connectors[0]
        c.reactor.tcpClients[0][2].clientConnectionFailed(
            connector, Failure(ConnectionRefusedError())
        )
        result = c.result()
        self.assertEqual([o.status for o in result.outcomes], [DEFERRED, DEFERRED])
        outcome = result.outcomes[0]
        self.assertEqual(
            (outcome.code, outcome.enhancedCode, outcome.remote), (421, "4.4.1", False)
        )
        self.assertIn("refused", outcome.text)
        self.assertIn(ADDRESS, outcome.text)
        self.assertEqual(result.failureStage, "connect")

    def test_timeout(self) -> None:
        """
        No connection within 30 s (times the scale): deferred, and the
        attempt is stopped.
        """
        c = _Conversation(self, scale=2.0, connect=False)
        c.reactor.advance(TIMEOUTS["connect"] * 2 - 1)
        self.assertNoResult(c.d)
        c.reactor.advance(1)
        result = c.result()
        self.assertIn("timed out after 60s", result.outcomes[0].text)
        self.assertTrue(c.reactor.connectors[0].stoppedConnecting)


class TimeoutTests(SynchronousTestCase):
    """
    Each stage's timeout, on the reactor's clock.
    """

    def assertTimesOut(self, c: _Conversation, seconds: float, stage: str) -> DeliveryResult:
        c.reactor.advance(seconds - 0.5)
        self.assertFalse(c.transport.aborted, stage)
        c.reactor.advance(0.5)
        self.assertTrue(c.transport.aborted, stage)
        result = c.result()
        outcome = result.outcomes[0]
        self.assertEqual((outcome.status, outcome.enhancedCode), (DEFERRED, "4.4.2"), stage)
        self.assertIn("timeout", outcome.text)
        self.assertEqual(result.failureStage, stage)
        return result

    def conversationAt(self, stage: str, scale: float = 1.0) -> _Conversation:
        c = _Conversation(self, scale=scale)
        script = [
            ("greeting", "220 mx"),
            ("EHLO", EHLO_REPLY),
            ("MAIL", "250 ok"),
            ("RCPT", "250 ok"),
            ("DATA", "354 go"),
            ("end of data", "250 ok"),
        ]
        for name, reply in script:
            if name == stage:
                return c
            c.reply(reply)
        raise AssertionError(stage)

    def test_stages(self) -> None:
        """
        Greeting 300 s, EHLO 300 s, MAIL 300 s, RCPT 300 s, DATA 120 s,
        final dot 600 s.
        """
        for stage, seconds in (
            ("greeting", 300),
            ("EHLO", 300),
            ("MAIL", 300),
            ("RCPT", 300),
            ("DATA", 120),
            ("end of data", 600),
        ):
            self.assertEqual(TIMEOUTS[stage], seconds)
            self.assertTimesOut(self.conversationAt(stage), seconds, stage)

    def test_scaled(self) -> None:
        """
        C{timeoutScale} multiplies the timeouts.
        """
        self.assertTimesOut(self.conversationAt("greeting", scale=0.1), 30, "greeting")

    def test_timerResetEachStage(self) -> None:
        """
        Each reply restarts the clock: 299 s per stage never times out.
        """
        c = _Conversation(self)
        for reply in ("220 mx", EHLO_REPLY, "250 ok", "250 ok"):
            c.reactor.advance(299)
            c.reply(reply)
        self.assertFalse(c.transport.aborted)

    def test_dataBlock(self) -> None:
        """
        A server that stops reading the body (the transport pauses us) for
        180 s: timeout.  Progress (resuming) restarts the clock.
        """
        c = _Conversation(self, message=b"x\r\n" * 100000)
        for reply in ("220 mx", EHLO_REPLY, "250 ok", "250 ok"):
            c.reply(reply)
        c.transport.pauseAtWrite = c.transport.writes + 2
        c.reply("354 go")
        c.reactor.advance(179)
        c.transport.pauseAtWrite = c.transport.writes + 1
        c.transport.producer.resumeProducing()
        result = self.assertTimesOut(c, 180, "data block")
        self.assertIn("read the message", result.outcomes[0].text)


class TLSPolicyTests(SynchronousTestCase):
    """
    STARTTLS under each policy (the handshake itself is the transport's;
    see L{tests.test_client_loopback} for real ones).
    """

    def startTLS(self, policy: str = "verify") -> _Conversation:
        c = _Conversation(self, policy=policy)
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
        c = _Conversation(self)
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
        c = _Conversation(self, policy="may")
        c.ready(ehlo=EHLO_TLS_REPLY)
        c.step("STARTTLS", "454 4.7.0 TLS not available")
        c.expect(f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}")
        for policy in ("verify", "require"):
            c = _Conversation(self, policy=policy)
            c.ready(ehlo=EHLO_TLS_REPLY)
            c.step("STARTTLS", "454 4.7.0 TLS not available")
            c.step("QUIT", "221 bye")
            result = c.result()
            self.assertEqual(_statuses(result), [("bob@example.test", DEFERRED, 454)])
            self.assertIn("forbids cleartext", result.outcomes[0].text)
            self.assertIsNone(c.transport.tlsCreator)

    def test_requireNotOffered(self) -> None:
        """
        C{require} and no STARTTLS: deferred (4.7.4), QUIT, no MAIL.
        """
        c = _Conversation(self, policy="require")
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
            c = _Conversation(self, policy=policy)
            c.ready()
            c.expect(f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}")
            self.assertEqual(c.contextRequests, [])

    def test_none(self) -> None:
        """
        C{none} never sends STARTTLS, even when offered.
        """
        c = _Conversation(self, policy="none")
        c.ready(ehlo=EHLO_TLS_REPLY)
        c.expect(f"MAIL FROM:<{SENDER}> SIZE={DEFAULT_SIZE}")
        self.assertEqual(c.contextRequests, [])

    def test_contextUnavailable(self) -> None:
        """
        When the TLS context cannot be made (say the trust store is
        missing), the host is deferred before STARTTLS is sent.
        """
        c = _Conversation(self)
        c.contextError = ValueError("SSL_CERT_FILE '/nope' is not a readable file")
        c.ready(ehlo=EHLO_TLS_REPLY)
        c.step("QUIT", "221 bye")
        outcome = c.result().outcomes[0]
        self.assertEqual((outcome.status, outcome.enhancedCode), (DEFERRED, "4.7.5"))
        self.assertIn("/nope", outcome.text)
