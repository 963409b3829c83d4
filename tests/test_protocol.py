"""
Tests for L{gopherpost.inbound.protocol}: every reply of the ESMTP server and
each of the holes in Twisted's ESMTP that it closes.
"""

from __future__ import annotations

import ipaddress
import json
import os

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.inbound.framing import COMMAND_LINE_LIMIT, DISCARD_LIMIT
from gopherpost.inbound.policy import Policy
from gopherpost.inbound.session import HARD_ERROR_LIMIT
from tests.support.inbound import InboundHarness, replies

GREETING = b"220 mx.gopherpost.test ESMTP GopherPost ready"


def transaction(
    sender: bytes = b"alice@gopherpost.test",
    recipients: tuple = (b"bob@example.test",),
    body: bytes = b"Subject: hi\r\n\r\nHello.\r\n",
) -> bytes:
    """
    The client side of one whole transaction after EHLO.
    """
    data = b"MAIL FROM:<" + sender + b">\r\n"
    for recipient in recipients:
        data += b"RCPT TO:<" + recipient + b">\r\n"
    return data + b"DATA\r\n" + body + b".\r\n"


def slowSenderSession(case: SynchronousTestCase) -> tuple:
    """
    A session whose sender validation waits: returns C{(pending, protocol,
    transport)}, where C{pending} collects one L{Deferred} per MAIL, to be
    fired by the test.
    """
    pending: list = []

    class SlowSender(Policy):
        name = "slow-sender"

        def mail(self, context, transaction):
            d: Deferred = Deferred()
            pending.append(d)
            return d

    harness = InboundHarness(case, policies=lambda policies: [SlowSender(), *policies])
    proto, transport = harness.connect()
    return pending, proto, transport


class GreetingAndCommandsTests(SynchronousTestCase):
    """
    Greeting, EHLO and the simple commands.
    """

    def setUp(self) -> None:
        self.harness = InboundHarness(self)
        self.proto, self.transport = self.harness.connect()

    def send(self, data: bytes) -> list:
        self.proto.dataReceived(data)
        return replies(self.transport)

    def test_greeting(self) -> None:
        """
        An allowed client is greeted with host name, ESMTP and the banner.
        """
        self.assertEqual(replies(self.transport), [GREETING])
        self.assertEqual(self.harness.audit.named("session.start"), [{"client": "127.0.0.1"}])

    def test_ehloExtensions(self) -> None:
        """
        EHLO lists SIZE, 8BITMIME, PIPELINING and ENHANCEDSTATUSCODES, and no
        STARTTLS without TLS.
        """
        replies(self.transport)
        lines = self.send(b"EHLO client.test\r\n")
        self.assertEqual(lines[0], b"250-mx.gopherpost.test")
        self.assertIn(b"250-SIZE 10485760", lines)
        self.assertIn(b"250-8BITMIME", lines)
        self.assertIn(b"250-PIPELINING", lines)
        self.assertIn(b"250-ENHANCEDSTATUSCODES", lines)
        self.assertFalse([line for line in lines if b"STARTTLS" in line])
        self.assertTrue(lines[-1].startswith(b"250 "))

    def test_simpleCommands(self) -> None:
        """
        HELO, NOOP, RSET, VRFY, HELP, unknown commands, AUTH where it is
        not offered (as Postfix answers it) and QUIT get their replies with
        enhanced status codes.
        """
        replies(self.transport)
        self.assertEqual(self.send(b"HELO client.test\r\n"), [b"250 mx.gopherpost.test"])
        self.assertEqual(self.send(b"NOOP\r\n"), [b"250 2.0.0 Ok"])
        self.assertEqual(self.send(b"RSET\r\n"), [b"250 2.0.0 Ok"])
        self.assertTrue(self.send(b"VRFY bob\r\n")[0].startswith(b"252 2.0.0 "))
        self.assertTrue(self.send(b"HELP\r\n")[-1].startswith(b"214 2.0.0 "))
        self.assertEqual(self.send(b"BOGUS\r\n"), [b"502 5.5.2 Error: command not recognized"])
        self.assertEqual(
            self.send(b"AUTH PLAIN\r\n"), [b"503 5.5.1 Error: authentication not enabled"]
        )
        self.assertEqual(self.send(b"QUIT\r\n"), [b"221 2.0.0 Bye"])
        self.assertTrue(self.transport.disconnecting)

    def test_sequenceErrors(self) -> None:
        """
        MAIL before HELO, RCPT before MAIL, DATA before RCPT and a nested
        MAIL are refused with 503 5.5.1.
        """
        replies(self.transport)
        self.assertEqual(
            self.send(b"MAIL FROM:<alice@gopherpost.test>\r\n"),
            [b"503 5.5.1 Error: send HELO/EHLO first"],
        )
        self.send(b"EHLO client.test\r\n")
        self.assertEqual(
            self.send(b"RCPT TO:<bob@example.test>\r\n"),
            [b"503 5.5.1 Error: need MAIL command"],
        )
        self.assertEqual(self.send(b"DATA\r\n"), [b"503 5.5.1 Error: need MAIL command"])
        self.send(b"MAIL FROM:<alice@gopherpost.test>\r\n")
        self.assertEqual(
            self.send(b"MAIL FROM:<alice@gopherpost.test>\r\n"),
            [b"503 5.5.1 Error: nested MAIL command"],
        )
        self.assertEqual(self.send(b"DATA\r\n"), [b"503 5.5.1 Error: need RCPT command"])

    def test_syntaxErrors(self) -> None:
        """
        Malformed MAIL and RCPT get 501 5.5.4; unknown MAIL options 555.
        """
        replies(self.transport)
        self.send(b"EHLO client.test\r\n")
        self.assertEqual(self.send(b"MAIL alice\r\n"), [b"501 5.5.4 Syntax: MAIL FROM:<address>"])
        self.assertEqual(
            self.send(b"MAIL FROM:<alice@gopherpost.test> FOO=1\r\n"),
            [b"555 5.5.4 Unsupported option: FOO=1"],
        )
        self.send(b"MAIL FROM:<alice@gopherpost.test> BODY=8BITMIME\r\n")
        self.assertEqual(self.send(b"RCPT bob\r\n"), [b"501 5.5.4 Syntax: RCPT TO:<address>"])

    def test_timeout(self) -> None:
        """
        A client idle for SMTP_COMMAND_TIMEOUT gets 421 4.4.2 and is closed;
        activity restarts the timer.
        """
        replies(self.transport)
        self.harness.clock.advance(299)
        self.send(b"NOOP\r\n")
        self.harness.clock.advance(299)
        self.assertFalse(self.transport.disconnecting)
        self.harness.clock.advance(1)
        self.assertEqual(
            replies(self.transport),
            [b"421 4.4.2 mx.gopherpost.test Error: timeout exceeded"],
        )
        self.assertTrue(self.transport.disconnecting)

    def test_hardErrorLimit(self) -> None:
        """
        After too many errors the session is closed with 421 4.7.0.
        """
        replies(self.transport)
        lines = self.send(b"BOGUS\r\n" * HARD_ERROR_LIMIT)
        self.assertEqual(lines[-1], b"421 4.7.0 mx.gopherpost.test Error: too many errors")
        self.assertTrue(self.transport.disconnecting)


class TransactionTests(SynchronousTestCase):
    """
    Mail transactions and what they leave in the spool.
    """

    def setUp(self) -> None:
        self.harness = InboundHarness(self)
        self.proto, self.transport = self.harness.connect()
        self.send(b"EHLO client.test\r\n")

    def send(self, data: bytes) -> list:
        self.proto.dataReceived(data)
        return replies(self.transport)

    def test_acceptAndStore(self) -> None:
        """
        A message to two recipients is stored once per recipient under a
        keyed hash, with a Received: header, and the 250 names the queue id.
        """
        lines = self.send(transaction(recipients=(b"bob@example.test", b"carol@gopherpost.test")))
        self.assertEqual(
            lines[:4],
            [
                b"250 2.1.0 Ok",
                b"250 2.1.5 Ok",
                b"250 2.1.5 Ok",
                b"354 End data with <CR><LF>.<CR><LF>",
            ],
        )
        self.assertTrue(lines[4].startswith(b"250 2.0.0 Ok: queued as "))
        queueId = lines[4].rsplit(b" ", 1)[1].decode()
        files = self.harness.storedFiles()
        self.assertEqual(len(files), 2)
        for name in files:
            self.assertNotIn("bob", name)
            self.assertNotIn("example", name)
            self.assertTrue(os.path.basename(name).startswith(queueId + "_"))
        content = self.harness.read(files[0])
        self.assertEqual(content, self.harness.read(files[1]))
        self.assertTrue(content.startswith(b"Received: from client.test ([127.0.0.1])\r\n"))
        self.assertIn(b"with ESMTP id " + queueId.encode(), content)
        self.assertTrue(content.endswith(b"\r\nSubject: hi\r\n\r\nHello.\r\n"))
        date = files[0].split(os.sep)[0]
        envelope = json.loads(self.harness.read(os.path.join(date, queueId + ".envelope")))
        self.assertEqual(envelope["sender"], "alice@gopherpost.test")
        self.assertEqual(
            [(r["address"], r["local"]) for r in envelope["recipients"]],
            [("bob@example.test", False), ("carol@gopherpost.test", True)],
        )
        self.assertEqual(self.harness.relayed, [(queueId, date)])
        [queued] = self.harness.audit.named("message.queued")
        self.assertEqual(queued["recipients"], 2)

    def test_localOnlyNotRelayed(self) -> None:
        """
        A message for local recipients only is stored and not relayed.
        """
        self.send(transaction(recipients=(b"carol@gopherpost.test",)))
        self.assertEqual(len(self.harness.storedFiles()), 1)
        self.assertEqual(self.harness.relayed, [])

    def test_nullSender(self) -> None:
        """
        MAIL FROM:<> is accepted even when senders must be local.
        """
        self.assertEqual(self.send(b"MAIL FROM:<>\r\n"), [b"250 2.1.0 Ok"])

    def test_foreignSender(self) -> None:
        """
        With SMTP_REQUIRE_LOCAL_DOMAIN, a foreign sender gets 553 5.7.1.
        """
        [line] = self.send(b"MAIL FROM:<mallory@example.test>\r\n")
        self.assertTrue(line.startswith(b"553 5.7.1 "), line)

    def test_foreignSenderAllowed(self) -> None:
        """
        With SMTP_REQUIRE_LOCAL_DOMAIN=false any sender is accepted.
        """
        harness = InboundHarness(self, requireLocalDomain=False)
        proto, transport = harness.connect()
        proto.dataReceived(b"EHLO c.test\r\nMAIL FROM:<mallory@example.test>\r\n")
        self.assertEqual(replies(transport)[-1], b"250 2.1.0 Ok")

    def test_tooManyRecipients(self) -> None:
        """
        Recipients past SMTP_MAX_RECIPIENTS get 452 4.5.3; the others stay.
        """
        harness = InboundHarness(self, maxRecipients=2)
        proto, transport = harness.connect()
        proto.dataReceived(
            b"EHLO c.test\r\n"
            + transaction(recipients=(b"a@example.test", b"b@example.test", b"c@example.test"))
        )
        lines = replies(transport)
        self.assertIn(b"452 4.5.3 Error: too many recipients", lines)
        self.assertTrue(lines[-1].startswith(b"250 2.0.0 Ok: queued as"))
        self.assertEqual(len(harness.storedFiles()), 2)

    def test_declaredSizeTooBig(self) -> None:
        """
        A declared SIZE above the limit gets 552 5.3.4 at MAIL.
        """
        self.assertEqual(
            self.send(b"MAIL FROM:<alice@gopherpost.test> SIZE=10485761\r\n"),
            [b"552 5.3.4 Message size exceeds fixed limit"],
        )
        self.assertEqual(
            self.send(b"MAIL FROM:<alice@gopherpost.test> SIZE=10485760\r\n"),
            [b"250 2.1.0 Ok"],
        )

    def test_actualSizeTooBig(self) -> None:
        """
        A body above the limit gets 552 5.3.4 after the final dot, nothing
        is stored, and the session goes on.
        """
        harness = InboundHarness(self, maxMessageSize=1000)
        proto, transport = harness.connect()
        proto.dataReceived(b"EHLO c.test\r\n")
        replies(transport)
        proto.dataReceived(transaction(body=(b"y" * 78 + b"\r\n") * 20))
        lines = replies(transport)
        self.assertEqual(lines[-1], b"552 5.3.4 Error: message file too big")
        self.assertEqual(harness.storedFiles(), [])
        self.assertEqual(os.listdir(os.path.join(harness.path, "tmp")), [])
        proto.dataReceived(transaction())
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))

    def test_dotStuffing(self) -> None:
        """
        A leading dot added by the client is removed (RFC 5321 4.5.2).
        """
        self.send(transaction(body=b"Subject: x\r\n\r\n..leading dot\r\n...\r\nend\r\n"))
        content = self.harness.read(self.harness.storedFiles()[0])
        self.assertTrue(content.endswith(b"\r\n\r\n.leading dot\r\n..\r\nend\r\n"))

    def test_dataInPieces(self) -> None:
        """
        The end of data is found wherever the client's writes split it.
        """
        data = transaction(body=b"Subject: x\r\n\r\nline\r\n.dot\r\n")
        for i in range(len(data)):
            self.proto.dataReceived(data[i : i + 1])
        lines = replies(self.transport)
        self.assertTrue(lines[-1].startswith(b"250 2.0.0 Ok: queued as"), lines)
        content = self.harness.read(self.harness.storedFiles()[0])
        self.assertTrue(content.endswith(b"\r\n\r\nline\r\ndot\r\n"))

    def test_dotStuffingInPieces(self) -> None:
        """
        Dot-unstuffing is the same wherever the client's writes split the
        content, also next to the end of data.
        """
        body = b"Subject: x\r\n\r\n..a\r\nb\r\n...\r\n..\r\n.c.\r\n"
        data = transaction(body=body)
        for size in range(1, 24):
            for i in range(0, len(data), size):
                self.proto.dataReceived(data[i : i + size])
            lines = replies(self.transport)
            self.assertTrue(lines[-1].startswith(b"250 2.0.0 Ok: queued as"), (size, lines))
        stored = self.harness.storedFiles()
        self.assertEqual(len(stored), 23)
        for path in stored:
            self.assertTrue(
                self.harness.read(path).endswith(b"\r\n\r\n.a\r\nb\r\n..\r\n.\r\nc.\r\n")
            )

    def test_storageFailure(self) -> None:
        """
        If the spool cannot store the message the client gets 451 4.3.0 (not
        550) and may try again.
        """
        tmp = os.path.join(self.harness.path, "tmp")
        os.rmdir(tmp)
        with open(tmp, "w"):
            pass
        lines = self.send(transaction())
        self.assertEqual(lines[-1], b"451 4.3.0 Error: queue file write error")
        self.assertEqual(self.harness.storedFiles(), [])
        self.flushLoggedErrors()


class PipeliningTests(SynchronousTestCase):
    """
    Hole (a): replies come in command order even when a command waits on a
    L{Deferred} (Twisted #8126).
    """

    def test_slowSenderValidation(self) -> None:
        """
        While MAIL's validation waits, pipelined RCPT and DATA wait too, and
        their replies follow MAIL's in order.
        """
        pending, proto, transport = slowSenderSession(self)
        proto.dataReceived(b"EHLO c.test\r\n")
        replies(transport)
        proto.dataReceived(transaction())
        self.assertEqual(replies(transport), [])
        pending[0].callback(None)
        lines = replies(transport)
        self.assertEqual(
            lines[:3], [b"250 2.1.0 Ok", b"250 2.1.5 Ok", b"354 End data with <CR><LF>.<CR><LF>"]
        )
        self.assertTrue(lines[3].startswith(b"250 2.0.0 Ok: queued as"))

    def test_commandsWaitForStorage(self) -> None:
        """
        Commands pipelined after the final dot are answered only after the
        message's 250, which comes only once it is on disk.
        """
        harness = InboundHarness(self, synchronousThreads=False)
        proto, transport = harness.connect()
        proto.dataReceived(b"EHLO c.test\r\n" + transaction() + b"NOOP\r\nQUIT\r\n")
        lines = replies(transport)
        self.assertEqual(lines[-1], b"354 End data with <CR><LF>.<CR><LF>")
        self.assertEqual(harness.storedFiles(), [])
        harness.runThreads()
        lines = replies(transport)
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[0].startswith(b"250 2.0.0 Ok: queued as"))
        self.assertEqual(lines[1:], [b"250 2.0.0 Ok", b"221 2.0.0 Bye"])
        self.assertEqual(len(harness.storedFiles()), 1)

    def test_readingPausesWhileWaiting(self) -> None:
        """
        A client that keeps pipelining while a command waits is paused
        rather than buffered without bound.
        """
        harness = InboundHarness(self, synchronousThreads=False)
        proto, transport = harness.connect()
        proto.dataReceived(b"EHLO c.test\r\n" + transaction())
        self.assertEqual(transport.producerState, "producing")
        proto.dataReceived(b"NOOP\r\n" * 20000)
        self.assertEqual(transport.producerState, "paused")
        harness.runThreads()
        self.assertEqual(transport.producerState, "producing")


class ReplyWriteTests(SynchronousTestCase):
    """
    Replies leave in as few writes as the protocol allows: one per reply at
    most, one for all the replies to one read of pipelined commands, and
    always before the transport changes under them (close, STARTTLS).
    """

    def test_multiLineReplyOneWrite(self) -> None:
        """
        EHLO's many-line reply is one write.
        """
        harness = InboundHarness(self)
        proto, transport = harness.connect()
        del transport.calls[:]
        proto.dataReceived(b"EHLO c.test\r\n")
        writes = transport.writes()
        self.assertEqual(len(writes), 1)
        lines = writes[0].split(b"\r\n")
        self.assertEqual(lines[-1], b"")
        self.assertTrue(all(line.startswith(b"250-") for line in lines[:-2]), lines)
        self.assertTrue(lines[-2].startswith(b"250 "))

    def test_pipelinedGroupOneWrite(self) -> None:
        """
        The replies to MAIL, two RCPTs and DATA received in one read go out
        in one write; the 250 for the message follows in its own once the
        message is on disk.
        """
        harness = InboundHarness(self, synchronousThreads=False)
        proto, transport = harness.connect()
        proto.dataReceived(b"EHLO c.test\r\n")
        del transport.calls[:]
        proto.dataReceived(transaction(recipients=(b"bob@example.test", b"carol@example.test")))
        self.assertEqual(
            transport.writes(),
            [
                b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
                b"354 End data with <CR><LF>.<CR><LF>\r\n"
            ],
        )
        harness.runThreads()
        writes = transport.writes()
        self.assertEqual(len(writes), 2)
        self.assertTrue(writes[1].startswith(b"250 2.0.0 Ok: queued as"))

    def test_repliesWrittenBeforeClose(self) -> None:
        """
        Held replies are written before the connection is closed.
        """
        harness = InboundHarness(self)
        proto, transport = harness.connect()
        del transport.calls[:]
        proto.dataReceived(b"EHLO c.test\r\nNOOP\r\nQUIT\r\n")
        self.assertEqual(transport.calls[-1], ("loseConnection",))
        self.assertEqual(len(transport.calls), 2)
        self.assertTrue(transport.calls[0][1].endswith(b"250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"))

    def test_readyWrittenBeforeTLS(self) -> None:
        """
        STARTTLS's 220 is written in the clear before TLS starts, even
        though it is held with the replies before it.
        """
        harness = InboundHarness(self, contextFactory=object(), tlsDisable=False)
        proto, transport = harness.connect(tls=True)
        del transport.calls[:]
        proto.dataReceived(b"EHLO c.test\r\nSTARTTLS\r\n")
        self.assertEqual([call[0] for call in transport.calls], ["write", "startTLS"])
        self.assertTrue(transport.calls[0][1].endswith(b"220 2.0.0 Ready to start TLS\r\n"))

    def test_laterRepliesNotHeld(self) -> None:
        """
        A reply produced outside input processing (here a sender check that
        answers later) is written at once.
        """
        pending, proto, transport = slowSenderSession(self)
        proto.dataReceived(b"EHLO c.test\r\nMAIL FROM:<alice@gopherpost.test>\r\n")
        del transport.calls[:]
        pending[0].callback(None)
        self.assertEqual(transport.writes(), [b"250 2.1.0 Ok\r\n"])


class StartTLSTests(SynchronousTestCase):
    """
    Hole (b): STARTTLS command injection.
    """

    def setUp(self) -> None:
        self.harness = InboundHarness(self, contextFactory=object(), tlsDisable=False)
        self.proto, self.transport = self.harness.connect(tls=True)
        self.proto.dataReceived(b"EHLO c.test\r\n")

    def test_advertised(self) -> None:
        """
        STARTTLS is advertised when TLS is on and not yet active.
        """
        self.assertIn(b"250-STARTTLS", replies(self.transport))

    def test_injectionDiscarded(self) -> None:
        """
        Plaintext pipelined after STARTTLS is discarded, and after the
        handshake the client must say EHLO again.
        """
        replies(self.transport)
        self.proto.dataReceived(b"STARTTLS\r\nMAIL FROM:<alice@gopherpost.test>\r\n")
        self.assertEqual(replies(self.transport), [b"220 2.0.0 Ready to start TLS"])
        self.assertEqual(self.transport.calls[-1], ("startTLS",))
        self.proto.handshakeCompleted()
        self.proto.dataReceived(b"MAIL FROM:<alice@gopherpost.test>\r\n")
        self.assertEqual(replies(self.transport), [b"503 5.5.1 Error: send HELO/EHLO first"])
        self.proto.dataReceived(b"EHLO c.test\r\n")
        lines = replies(self.transport)
        self.assertFalse([line for line in lines if b"STARTTLS" in line])
        self.proto.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(replies(self.transport), [b"503 5.5.1 Error: TLS already active"])

    def test_transactionForgotten(self) -> None:
        """
        A transaction begun before STARTTLS does not survive it.
        """
        self.proto.dataReceived(b"MAIL FROM:<alice@gopherpost.test>\r\nSTARTTLS\r\n")
        replies(self.transport)
        self.proto.dataReceived(b"EHLO c.test\r\nRCPT TO:<bob@example.test>\r\n")
        self.assertEqual(replies(self.transport)[-1], b"503 5.5.1 Error: need MAIL command")

    def test_notAvailable(self) -> None:
        """
        Without TLS, STARTTLS gets 454 4.7.0.
        """
        harness = InboundHarness(self)
        proto, transport = harness.connect()
        proto.dataReceived(b"EHLO c.test\r\nSTARTTLS\r\n")
        self.assertEqual(replies(transport)[-1], b"454 4.7.0 TLS not available")


class LineLengthTests(SynchronousTestCase):
    """
    Holes (c) and (d): over-long lines.
    """

    def setUp(self) -> None:
        self.harness = InboundHarness(self)
        self.proto, self.transport = self.harness.connect()
        self.proto.dataReceived(b"EHLO c.test\r\n")
        replies(self.transport)

    def test_longCommandLine(self) -> None:
        """
        A command line over 512 octets gets 500 5.5.2; the session goes on.
        """
        self.proto.dataReceived(b"NOOP " + b"x" * COMMAND_LINE_LIMIT + b"\r\nNOOP\r\n")
        self.assertEqual(
            replies(self.transport), [b"500 5.5.2 Error: line too long", b"250 2.0.0 Ok"]
        )

    def test_noCRLFBounded(self) -> None:
        """
        Input without CRLF is not buffered past the limit, and a client that
        keeps sending it is told 500 5.5.2, then 421 4.7.0, and disconnected.
        """
        chunk = b"x" * 4096
        self.proto.dataReceived(chunk)
        self.assertLess(self.proto.bufferedInput, COMMAND_LINE_LIMIT)
        sent = len(chunk)
        while not self.transport.disconnecting and sent < 10 * DISCARD_LIMIT:
            self.proto.dataReceived(chunk)
            self.assertLess(self.proto.bufferedInput, COMMAND_LINE_LIMIT)
            sent += len(chunk)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(
            replies(self.transport),
            [
                b"500 5.5.2 Error: line too long",
                b"421 4.7.0 mx.gopherpost.test Error: line too long",
            ],
        )

    def test_longLineEndsWithCRLF(self) -> None:
        """
        An over-long command line that finally ends gets one 500 5.5.2.
        """
        self.proto.dataReceived(b"x" * 4096)
        self.proto.dataReceived(b"y" * 100 + b"\r\nNOOP\r\n")
        self.assertEqual(
            replies(self.transport), [b"500 5.5.2 Error: line too long", b"250 2.0.0 Ok"]
        )

    def test_longLineInData(self) -> None:
        """
        An over-long line inside DATA fails the message after its final dot;
        nothing after it runs as a command and nothing is stored.
        """
        body = (
            b"Subject: x\r\n\r\n"
            + b"A" * 20000
            + b"\r\nMAIL FROM:<mallory@gopherpost.test>\r\nRCPT TO:<victim@example.test>\r\n"
            + b"DATA\r\n"
        )
        self.proto.dataReceived(transaction(body=body))
        lines = replies(self.transport)
        self.assertEqual(
            lines,
            [
                b"250 2.1.0 Ok",
                b"250 2.1.5 Ok",
                b"354 End data with <CR><LF>.<CR><LF>",
                b"500 5.5.2 Error: line too long",
            ],
        )
        self.assertEqual(self.harness.storedFiles(), [])
        self.proto.dataReceived(transaction())
        self.assertTrue(replies(self.transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))

    def test_longestLineAllowed(self) -> None:
        """
        A text line of exactly 998 octets plus CRLF is stored.
        """
        self.proto.dataReceived(transaction(body=b"Subject: x\r\n\r\n" + b"B" * 998 + b"\r\n"))
        self.assertTrue(replies(self.transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))


class SmugglingTests(SynchronousTestCase):
    """
    Hole (e): bare LF and bare CR in DATA (SMTP smuggling).
    """

    def setUp(self) -> None:
        self.harness = InboundHarness(self)
        self.proto, self.transport = self.harness.connect()
        self.proto.dataReceived(b"EHLO c.test\r\n")
        replies(self.transport)

    def assertOneMessage(self, body: bytes) -> bytes:
        self.proto.dataReceived(transaction(body=body))
        lines = replies(self.transport)
        self.assertEqual(len(lines), 4, lines)
        self.assertTrue(lines[-1].startswith(b"250 2.0.0 Ok: queued as"))
        [stored] = self.harness.storedFiles()
        content = self.harness.read(stored)
        self.assertEqual(content.count(b"\n"), content.count(b"\r\n"))
        self.assertEqual(content.count(b"\r"), content.count(b"\r\n"))
        return content

    def test_bareLFDot(self) -> None:
        """
        C{<LF>.<LF>} does not end the message: the smuggled commands are
        stored as text, with CRLF line ends.
        """
        content = self.assertOneMessage(
            b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@gopherpost.test>\nRCPT TO:<v@example.test>\nDATA\nsmuggled\r\n"
        )
        self.assertIn(b"hello\r\n.\r\nMAIL FROM:<evil@gopherpost.test>\r\n", content)
        self.assertEqual(self.harness.audit.named("smtp.mail")[-1]["accepted"], True)
        self.assertEqual(len(self.harness.audit.named("smtp.mail")), 1)

    def test_mixedEndings(self) -> None:
        """
        C{<CR><LF>.<LF>} and C{<LF>.<CR><LF>} and bare CR do not end it either.
        """
        content = self.assertOneMessage(
            b"Subject: x\r\n\r\none\r\n.\nMAIL FROM:<e@gopherpost.test>\r\ntwo\n.\r\nthree\r.\rfour\r\n"
        )
        # The CRLF line ".<LF>MAIL..." is dot-unstuffed like any other.
        self.assertIn(b"one\r\n\r\nMAIL FROM", content)
        self.assertIn(b"two\r\n.\r\nthree", content)
        self.assertIn(b"three\r\n.\r\nfour\r\n", content)


class AccessTests(SynchronousTestCase):
    """
    The allow-list is checked before any banner.
    """

    def test_denied(self) -> None:
        """
        A client outside the allow-list gets 554 5.7.1 and is closed.
        """
        harness = InboundHarness(self)
        proto, transport = harness.connect("192.0.2.7")
        self.assertEqual(replies(transport), [b"554 5.7.1 Access denied"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            harness.audit.named("session.reject"), [{"client": "192.0.2.7", "reason": "access"}]
        )

    def test_emptyListsRejectEveryone(self) -> None:
        """
        With both lists empty, even loopback is rejected.
        """
        harness = InboundHarness(self, allowNetworks=())
        proto, transport = harness.connect("127.0.0.1")
        self.assertEqual(replies(transport), [b"554 5.7.1 Access denied"])

    def test_mappedAddress(self) -> None:
        """
        An IPv4-mapped IPv6 peer is checked as its IPv4 address.
        """
        harness = InboundHarness(self)
        proto, transport = harness.connect("::ffff:127.0.0.1")
        self.assertEqual(replies(transport), [GREETING])
        self.assertEqual(proto.clientAddress, "127.0.0.1")

    def test_inputBeforeGreetingWaits(self) -> None:
        """
        Commands sent before the access check finished are not answered
        before the greeting.
        """
        pending = []
        harness = InboundHarness(self)
        checker = list(harness.portal.checkers.values())[0]
        original = checker.requestAvatarId

        def slow(credentials):
            d: Deferred = Deferred()
            pending.append((d, original(credentials)))
            return d

        checker.requestAvatarId = slow  # type: ignore[method-assign]
        proto, transport = harness.connect()
        proto.dataReceived(b"EHLO c.test\r\n")
        self.assertEqual(transport.value(), b"")
        d, result = pending[0]
        result.chainDeferred(d)
        lines = replies(transport)
        self.assertEqual(lines[0], GREETING)
        self.assertEqual(lines[1], b"250-mx.gopherpost.test")


class ConnectionLimitTests(SynchronousTestCase):
    """
    SMTP_MAX_CONNECTIONS and SMTP_MAX_CONNECTIONS_PER_IP.
    """

    def test_global(self) -> None:
        """
        Past the global limit a client gets 421 4.7.0; a freed slot is
        usable again.
        """
        harness = InboundHarness(
            self, maxConnections=1, allowNetworks=(ipaddress.ip_network("0.0.0.0/0"),)
        )
        first, _ = harness.connect("127.0.0.1")
        second, transport = harness.connect("127.0.0.2")
        self.assertEqual(
            replies(transport), [b"421 4.7.0 mx.gopherpost.test Error: too many connections"]
        )
        self.assertTrue(transport.disconnecting)
        second.connectionLost(None)
        first.connectionLost(None)
        third, transport = harness.connect("127.0.0.3")
        self.assertEqual(replies(transport), [GREETING])

    def test_perAddress(self) -> None:
        """
        Past the per-address limit that address gets 421 4.7.0; others not.
        """
        harness = InboundHarness(self, maxConnectionsPerIP=2)
        harness.connect("127.0.0.1")
        harness.connect("127.0.0.1")
        _, transport = harness.connect("127.0.0.1")
        self.assertEqual(
            replies(transport),
            [b"421 4.7.0 mx.gopherpost.test Error: too many connections from 127.0.0.1"],
        )
        _, transport = harness.connect("127.0.0.2")
        self.assertEqual(replies(transport), [GREETING])


class DrainTests(SynchronousTestCase):
    """
    Stopping the server lets messages in flight finish.
    """

    def test_drain(self) -> None:
        """
        An idle session is told 421 4.3.2 at once; one in DATA finishes its
        message, gets its 250, then 421.
        """
        harness = InboundHarness(self)
        idle, idleTransport = harness.connect()
        busy, busyTransport = harness.connect()
        busy.dataReceived(
            b"EHLO c.test\r\nMAIL FROM:<a@gopherpost.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
        )
        replies(idleTransport)
        replies(busyTransport)
        drained = harness.factory.drain(30)
        self.assertEqual(
            replies(idleTransport), [b"421 4.3.2 mx.gopherpost.test Service shutting down"]
        )
        self.assertEqual(replies(busyTransport), [])
        busy.dataReceived(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        lines = replies(busyTransport)
        self.assertTrue(lines[0].startswith(b"250 2.0.0 Ok: queued as"))
        self.assertEqual(lines[1], b"421 4.3.2 mx.gopherpost.test Service shutting down")
        self.assertNoResult(drained)
        idle.connectionLost(None)
        busy.connectionLost(None)
        self.successResultOf(drained)

    def test_drainCutsOff(self) -> None:
        """
        A session still in DATA after the grace period is cut off.
        """
        harness = InboundHarness(self)
        busy, transport = harness.connect()
        busy.dataReceived(
            b"EHLO c.test\r\nMAIL FROM:<a@gopherpost.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
        )
        drained = harness.factory.drain(30)
        harness.clock.advance(30)
        self.assertTrue(transport.disconnecting)
        busy.connectionLost(None)
        self.successResultOf(drained)
        self.assertEqual(harness.storedFiles(), [])
