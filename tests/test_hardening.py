"""
Regression tests for the inbound holes of issue 12 ("GopherPost hardening")
and the reply fixes of issue 13, driven over a StringTransport and a Clock.
The read splits that matter are also tried over real sockets, in
L{tests.test_inbound_sockets}.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gopherpost.inbound import session
from gopherpost.inbound.context import SessionContext, TLSInfo
from gopherpost.inbound.delivery import traceHeader
from gopherpost.inbound.framing import DISCARD_LIMIT
from gopherpost.inbound.roles import SUBMISSIONS
from gopherpost.spool import MessageWriter
from gopherpost.syncstrategy import ISyncStrategy
from tests.support.inbound import InboundHarness, replies

HOST = b"mx.gopherpost.test"
MX = {
    "allowNetworks": (ipaddress.ip_network("0.0.0.0/0"),),
    "relayNetworks": (ipaddress.ip_network("127.0.0.1/32"),),
}


def begin(harness: InboundHarness, host: str = "127.0.0.1", tls: bool = False) -> tuple[Any, Any]:
    """
    A session past its greeting and EHLO.
    """
    proto, transport = harness.connect(host, tls=tls)
    proto.dataReceived(b"EHLO c.test\r\n")
    replies(transport)
    return proto, transport


def envelopeCommands(to: bytes = b"bob@gopherpost.test") -> bytes:
    return b"MAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<" + to + b">\r\nDATA\r\n"


class TLSHandshakeTimeoutTests(SynchronousTestCase):
    """
    Item 1: the command timeout covers the TLS handshake, and a timed-out
    session is closed whatever its TLS state.
    """

    def test_startTLSSilence(self) -> None:
        """
        EHLO, STARTTLS, then nothing: the connection is aborted after the
        command timeout (no 421 can be written into an unfinished
        handshake).
        """
        harness = InboundHarness(self, contextFactory=object(), tlsDisable=False, commandTimeout=5)
        proto, transport = begin(harness, tls=True)
        proto.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(replies(transport), [b"220 2.0.0 Ready to start TLS"])
        harness.clock.advance(4.9)
        self.assertFalse(transport.aborted)
        harness.clock.advance(0.2)
        self.assertTrue(transport.aborted)
        self.assertEqual(transport.value(), b"")

    def test_implicitTLSSilence(self) -> None:
        """
        On the implicit-TLS listener no banner is written before the
        handshake, and a handshake that never comes is aborted after the
        command timeout.
        """
        harness = InboundHarness(self, role=SUBMISSIONS, commandTimeout=5)
        proto, transport = harness.connect()
        self.assertEqual(transport.value(), b"")
        harness.clock.advance(5.1)
        self.assertTrue(transport.aborted)
        self.assertEqual(transport.value(), b"")

    def test_implicitTLSRefusalWritesNothing(self) -> None:
        """
        A connection refused (over the limit) on the implicit-TLS listener
        is closed without writing into the unfinished handshake.
        """
        harness = InboundHarness(self, role=SUBMISSIONS, maxConnections=1)
        harness.connect()
        proto, transport = harness.connect("127.0.0.2")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_implicitTLSBanner(self) -> None:
        """
        After the handshake: the banner, no STARTTLS, ESMTPS in Received.
        """
        harness = InboundHarness(self, role=SUBMISSIONS, contextFactory=object())
        proto, transport = harness.connect()
        proto.handshakeCompleted()
        self.assertEqual(replies(transport), [b"220 mx.gopherpost.test ESMTP GopherPost ready"])
        proto.dataReceived(b"EHLO c.test\r\n")
        self.assertFalse([line for line in replies(transport) if b"STARTTLS" in line])
        proto.dataReceived(envelopeCommands() + b"Subject: x\r\n\r\nhi\r\n.\r\n")
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))
        content = harness.read(harness.storedFiles()[0])
        self.assertIn(b"with ESMTPS id", content)

    def test_closeThatCannotComplete(self) -> None:
        """
        A timed-out client that does not read is aborted when the close
        does not complete.
        """
        harness = InboundHarness(self, commandTimeout=5)
        proto, transport = begin(harness)
        harness.clock.advance(5)
        self.assertEqual(
            replies(transport), [b"421 4.4.2 mx.gopherpost.test Error: timeout exceeded"]
        )
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        harness.clock.advance(10)
        self.assertTrue(transport.aborted)


class FlowControlTransport(StringTransport):
    """
    A StringTransport that pauses its producer, as a TCP transport does,
    while more than C{bound} octets are unread by the client.
    """

    bound = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streaming: Any = None
        self.readBytes = 0
        self.paused = False
        self.lost = False
        self.aborted = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        self.streaming = producer

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.bound and not self.paused:
            self.paused = True
            self.streaming.pauseProducing()

    def clientReads(self) -> None:
        self.readBytes += len(self.value())
        self.clear()
        if self.paused:
            self.paused = False
            self.streaming.resumeProducing()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class BoundedOutputTests(SynchronousTestCase):
    """
    Item 2: a client that never reads stops being read from, so its
    replies and input cost bounded memory.
    """

    def test_neverReads(self) -> None:
        """
        10 MB of pipelined NOOPs without reading: the session pauses reading
        once the unread replies pass the bound, holds at most one read of
        input, and goes on (in order) when the client reads.  (The junk
        command limit, which ends such a session after 120 NOOPs, is lifted
        here to see the flow control alone.)
        """
        self.patch(session, "JUNK_COMMAND_LIMIT", 10**9)
        harness = InboundHarness(self)
        transport = FlowControlTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        proto = harness.factory.buildProtocol(None)
        proto.makeConnection(transport)
        self.addCleanup(proto.connectionLost, None)
        chunk = b"NOOP\r\n" * 10000
        sent = 0
        while sent < 10 * 1024 * 1024 and transport.producerState == "producing":
            proto.dataReceived(chunk)
            sent += len(chunk)
        self.assertEqual(transport.producerState, "paused")
        self.assertLess(sent, 10 * 1024 * 1024)
        self.assertLess(len(transport.value()), 2 * 64 * 1024)
        self.assertLessEqual(proto.bufferedInput, len(chunk))
        # The client reads: the session goes on, in order, until it has
        # answered everything it was sent.
        answered = b""
        while transport.producerState == "paused" or transport.value():
            answered += transport.value()
            transport.clientReads()
        banner = b"220 mx.gopherpost.test ESMTP GopherPost ready\r\n"
        self.assertEqual(answered, banner + b"250 2.0.0 Ok\r\n" * (sent // 6))
        self.assertEqual(proto.bufferedInput, 0)


class JunkCommandTests(SynchronousTestCase):
    """
    Postfix's smtpd_junk_command_limit: a flood of commands that do nothing
    ends the session.
    """

    def test_flood(self) -> None:
        """
        After 100 NOOP/RSET/VRFY/HELP/EHLO, each one more counts as an
        error: 20 later the session gets 421 and is closed.
        """
        harness = InboundHarness(self)
        proto, transport = begin(harness)
        proto.dataReceived(b"NOOP\r\nRSET\r\n" * 100)
        lines = replies(transport)
        # EHLO was the first; 99 more are free, 20 more are errors.
        self.assertEqual(
            lines,
            [b"250 2.0.0 Ok"] * 119 + [b"421 4.7.0 mx.gopherpost.test Error: too many errors"],
        )
        self.assertTrue(transport.disconnecting)

    def test_messagesForgive(self) -> None:
        """
        A message received resets both counts: a long session that sends
        messages with RSETs between them goes on.
        """
        harness = InboundHarness(self)
        proto, transport = begin(harness)
        for _ in range(30):
            proto.dataReceived(
                b"NOOP\r\n" * 10
                + b"BOGUS\r\n" * 3
                + envelopeCommands()
                + b"Subject: x\r\n\r\nhi\r\n.\r\nRSET\r\n"
            )
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(harness.storedFiles()), 30)


class CommandTimeoutTests(SynchronousTestCase):
    """
    Item 3: SMTP_COMMAND_TIMEOUT per command line, and a DATA deadline.
    """

    def test_trickledCommand(self) -> None:
        """
        One byte every 3 s does not keep a half-typed command alive: 421
        after the command timeout, counted from the last reply.
        """
        harness = InboundHarness(self, commandTimeout=10)
        proto, transport = begin(harness)
        for byte in b"NOO":
            harness.clock.advance(3)
            proto.dataReceived(bytes([byte]))
        self.assertFalse(transport.disconnecting)
        harness.clock.advance(1)
        self.assertEqual(
            replies(transport), [b"421 4.4.2 mx.gopherpost.test Error: timeout exceeded"]
        )
        self.assertTrue(transport.disconnecting)

    def test_eachCommandHasItsOwn(self) -> None:
        """
        A command that arrives in time restarts the clock for the next.
        """
        harness = InboundHarness(self, commandTimeout=10)
        proto, transport = begin(harness)
        for _ in range(5):
            harness.clock.advance(9)
            proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(replies(transport), [b"250 2.0.0 Ok"] * 5)
        self.assertFalse(transport.disconnecting)

    def test_serverTimeNotCounted(self) -> None:
        """
        While the server works (an fsync), the client's clock is stopped.
        """
        harness = InboundHarness(self, commandTimeout=10, synchronousThreads=False)
        proto, transport = begin(harness)
        proto.dataReceived(envelopeCommands() + b"Subject: x\r\n\r\nhi\r\n.\r\n")
        harness.clock.advance(60)
        self.assertFalse(transport.disconnecting)
        harness.runThreads()
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))
        harness.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        harness.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_dataIdle(self) -> None:
        """
        A client silent inside DATA is cut off after the command timeout.
        """
        harness = InboundHarness(self, commandTimeout=10)
        proto, transport = begin(harness)
        proto.dataReceived(envelopeCommands() + b"Subject: x\r\n")
        replies(transport)
        harness.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        harness.clock.advance(0.2)
        self.assertEqual(
            replies(transport), [b"421 4.4.2 mx.gopherpost.test Error: timeout exceeded"]
        )
        self.assertEqual(harness.storedFiles(), [])

    def test_dataTrickle(self) -> None:
        """
        One octet every 3 s inside DATA: each read costs 3 s and earns
        1/500 s (SMTP_MIN_DATA_RATE=500), so the session ends after about
        the command timeout, however long the client goes on.
        """
        harness = InboundHarness(self, commandTimeout=30, minDataRate=500)
        proto, transport = begin(harness)
        proto.dataReceived(envelopeCommands())
        replies(transport)
        reads = 0
        while reads < 1000:
            harness.clock.advance(3)
            if transport.disconnecting:
                break
            proto.dataReceived(b"x")
            reads += 1
        # 30 - 3 * 10 + 10 / 500 > 0: the eleventh read comes too late.
        self.assertEqual(reads, 10)
        self.assertEqual(
            replies(transport), [b"421 4.4.2 mx.gopherpost.test Error: timeout exceeded"]
        )

    def test_dataSteady(self) -> None:
        """
        A client that sends at a fair rate is never cut off, however long
        the message takes.
        """
        harness = InboundHarness(self, commandTimeout=30, minDataRate=500, maxMessageSize=10**8)
        proto, transport = begin(harness)
        proto.dataReceived(envelopeCommands())
        replies(transport)
        line = b"y" * 998 + b"\r\n"
        for _ in range(200):
            harness.clock.advance(1.5)
            proto.dataReceived(line)
        proto.dataReceived(b".\r\n")
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))

    def test_dataRateOff(self) -> None:
        """
        SMTP_MIN_DATA_RATE=0 leaves the idle bound only.
        """
        harness = InboundHarness(self, commandTimeout=10, minDataRate=0)
        proto, transport = begin(harness)
        proto.dataReceived(envelopeCommands())
        for _ in range(50):
            harness.clock.advance(9)
            proto.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)


class FinalDotTests(SynchronousTestCase):
    """
    Item 4: the final dot at the start of a read loses nothing after it.
    """

    def test_dotThenCommand(self) -> None:
        """
        C{.\\r\\nNOOP\\r\\n} in one write after the body: 250, then 250.
        """
        harness = InboundHarness(self)
        proto, transport = begin(harness)
        proto.dataReceived(envelopeCommands() + b"Subject: x\r\n\r\nbody\r\n")
        replies(transport)
        proto.dataReceived(b".\r\nNOOP\r\n")
        lines = replies(transport)
        self.assertTrue(lines[0].startswith(b"250 2.0.0 Ok: queued as"), lines)
        self.assertEqual(lines[1:], [b"250 2.0.0 Ok"])

    def test_emptyMessageThenQuit(self) -> None:
        """
        C{DATA\\r\\n.\\r\\nQUIT\\r\\n}: the message is stored, QUIT closes.
        """
        harness = InboundHarness(self)
        proto, transport = begin(harness)
        proto.dataReceived(
            b"MAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n"
        )
        replies(transport)
        proto.dataReceived(b"DATA\r\n.\r\nQUIT\r\n")
        lines = replies(transport)
        self.assertEqual(lines[0], b"354 End data with <CR><LF>.<CR><LF>")
        self.assertTrue(lines[1].startswith(b"250 2.0.0 Ok: queued as"))
        self.assertEqual(lines[2], b"221 2.0.0 Bye")
        self.assertTrue(transport.disconnecting)


class DiskFullTests(SynchronousTestCase):
    """
    Item 6: no space (or another write error) while a large message is
    written: 452 4.3.1 or 451 4.3.0, the session goes on, the temporary
    file is removed at once, no traceback.
    """

    def failingWriter(self, harness: InboundHarness, target: str) -> None:
        """
        Make the next message's temporary file a symbolic link to
        C{target}, so that writing it fails as the file system would.
        """
        made: list[str] = []

        def newWriter() -> MessageWriter:
            path = os.path.join(harness.path, "tmp", f"full{len(made)}")
            os.symlink(target, path)
            made.append(path)
            return MessageWriter(path)

        harness.spool.newWriter = newWriter  # type: ignore[method-assign]

    def send(self, harness: InboundHarness) -> tuple[list[bytes], Any, Any]:
        proto, transport = begin(harness)
        body = b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 5000
        proto.dataReceived(envelopeCommands() + body + b".\r\nNOOP\r\n")
        return replies(transport), proto, transport

    def test_noSpace(self) -> None:
        """
        ENOSPC (writing to /dev/full) is C{452 4.3.1}.
        """
        harness = InboundHarness(self)
        self.failingWriter(harness, "/dev/full")
        lines, proto, transport = self.send(harness)
        self.assertEqual(
            lines[-2:], [b"452 4.3.1 Error: insufficient system storage", b"250 2.0.0 Ok"]
        )
        self.assertEqual(os.listdir(os.path.join(harness.path, "tmp")), [])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(harness.audit.named("message.rejected")[-1]["reason"], "storage")

    def test_otherError(self) -> None:
        """
        Any other write error (here the file cannot be created) is
        C{451 4.3.0}.
        """
        harness = InboundHarness(self)
        self.failingWriter(harness, os.path.join(harness.path, "missing", "file"))
        lines, proto, transport = self.send(harness)
        self.assertEqual(lines[-2:], [b"451 4.3.0 Error: queue file write error", b"250 2.0.0 Ok"])
        self.assertEqual(os.listdir(os.path.join(harness.path, "tmp")), [])

    def test_syncReportsNoSpace(self) -> None:
        """
        A sync that reports ENOSPC (delayed allocation) fails the commit
        with C{452 4.3.1}; nothing is left behind.
        """
        harness = InboundHarness(self)

        @implementer(ISyncStrategy)
        class Full:
            name = "full"

            def sync(self, files: Sequence[int], directories: Sequence[str]) -> None:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        harness.spool.syncStrategy = Full()
        proto, transport = begin(harness)
        proto.dataReceived(envelopeCommands() + b"Subject: x\r\n\r\nhi\r\n.\r\nNOOP\r\n")
        self.assertEqual(
            replies(transport)[-2:],
            [b"452 4.3.1 Error: insufficient system storage", b"250 2.0.0 Ok"],
        )
        self.assertEqual(harness.storedFiles(), [])
        self.assertEqual(os.listdir(os.path.join(harness.path, "tmp")), [])


class AddressTests(SynchronousTestCase):
    """
    Items 7 and 8, and issue 13's C{553 5.6.7}.
    """

    def test_headerInjection(self) -> None:
        """
        A CR inside a quoted local part is C{501 5.1.3}; nothing is stored.
        """
        harness = InboundHarness(self)
        proto, transport = begin(harness)
        proto.dataReceived(b"MAIL FROM:<alice@gopherpost.test>\r\n")
        proto.dataReceived(b'RCPT TO:<"a\rX-Injected: yes"@mx.gopherpost.test>\r\n')
        lines = replies(transport)
        self.assertEqual(lines[-1][:10], b"501 5.1.3 ")
        self.assertNotIn(b"\r", lines[-1])

    def test_traceHeaderPrintable(self) -> None:
        """
        The trace header never carries a control character, whatever the
        HELO name.
        """
        context = SessionContext("192.0.2.1", helo="evil\r\nX-Injected: yes\x00", extended=True)
        context.tls = TLSInfo("TLSv1.3", "x\r\ny")
        header = traceHeader("mx.test", context, ['"a b"@x.test'], "ID", 0)
        lines = header.split(b"\r\n")
        self.assertEqual(lines[-1], b"")
        for line in lines[:-1]:
            self.assertTrue(all(c == 9 or 0x20 <= c <= 0x7E for c in line), line)
        self.assertTrue(all(line.startswith(b"\t") for line in lines[1:-1]))

    def test_eightBit(self) -> None:
        """
        8-bit addresses get C{553 5.6.7}, never an exception, and the
        session goes on; MAIL FROM too.
        """
        harness = InboundHarness(self)
        proto, transport = begin(harness)
        proto.dataReceived(b"MAIL FROM:<j\xc3\xb6rg@gopherpost.test>\r\n")
        proto.dataReceived(b"MAIL FROM:<alice@gopherpost.test>\r\n")
        proto.dataReceived(b'RCPT TO:<"\xff"@x.test>\r\n')
        proto.dataReceived(b"RCPT TO:<\\\xe9@x.test>\r\n")
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(
            replies(transport),
            [
                b"553 5.6.7 Non-ASCII address not permitted without SMTPUTF8",
                b"250 2.1.0 Ok",
                b"553 5.6.7 Non-ASCII address not permitted without SMTPUTF8",
                b"553 5.6.7 Non-ASCII address not permitted without SMTPUTF8",
                b"250 2.0.0 Ok",
            ],
        )

    def test_tooLong(self) -> None:
        """
        A local part over 64 octets is refused.
        """
        harness = InboundHarness(self)
        proto, transport = begin(harness)
        proto.dataReceived(b"MAIL FROM:<alice@gopherpost.test>\r\n")
        proto.dataReceived(b"RCPT TO:<" + b"l" * 65 + b"@gopherpost.test>\r\n")
        self.assertEqual(replies(transport)[-1][:10], b"501 5.1.3 ")


class ReplyTextTests(SynchronousTestCase):
    """
    Item 10: reply text is printable US-ASCII.
    """

    def test_echoEscaped(self) -> None:
        """
        An unknown parameter full of control characters is echoed escaped.
        """
        harness = InboundHarness(self)
        proto, transport = begin(harness)
        proto.dataReceived(b"MAIL FROM:<a@gopherpost.test> X=\x00\x1b[2J\xff\r\n")
        proto.dataReceived(b"MAIL FROM:<a@gopherpost.test> Y\x1b=1\r\n")
        for line in replies(transport):
            self.assertTrue(all(0x20 <= c <= 0x7E for c in line), line)
            self.assertEqual(line[:1], b"5")


class ClosingTests(SynchronousTestCase):
    """
    Item 11: a C{421 4.7.0} before every close the server starts.
    """

    def test_afterLineTooLong(self) -> None:
        """
        A command line past the discard limit: 500, then 421, then close,
        in one read or in many.
        """
        for pieces in ([b"x" * (DISCARD_LIMIT + 10) + b"\r\n"], [b"x" * 1000] * 20):
            harness = InboundHarness(self)
            proto, transport = begin(harness)
            for piece in pieces:
                proto.dataReceived(piece)
            self.assertEqual(
                replies(transport),
                [
                    b"500 5.5.2 Error: line too long",
                    b"421 4.7.0 mx.gopherpost.test Error: line too long",
                ],
            )
            self.assertTrue(transport.disconnecting)


class PipeliningAbuseTests(SynchronousTestCase):
    """
    Issue 13: a client without relay permission that sends the body before
    the 354 (or breaks RFC 2920 otherwise) is answered as Postfix's
    smtpd_forbid_unauth_pipelining does; RFC 2920 pipelining and clients
    that may relay are unaffected.
    """

    def test_bodyBeforeGoAhead(self) -> None:
        """
        MAIL, RCPT, DATA and the body in one write: MAIL and RCPT are
        answered, DATA gets C{554 5.5.0}, then 421 and the close; nothing
        is stored and the body never runs as commands.
        """
        harness = InboundHarness(self, **MX)  # type: ignore[arg-type]
        proto, transport = begin(harness, "192.0.2.9")
        proto.dataReceived(
            b"MAIL FROM:<x@example.test>\r\nRCPT TO:<bob@gopherpost.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nRSET\r\n.\r\nQUIT\r\n"
        )
        self.assertEqual(
            replies(transport),
            [
                b"250 2.1.0 Ok",
                b"250 2.1.5 Ok",
                b"554 5.5.0 Error: SMTP protocol synchronization",
                b"421 4.7.0 mx.gopherpost.test Error: protocol synchronization",
            ],
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(harness.storedFiles(), [])

    def test_rfc2920Group(self) -> None:
        """
        A proper RFC 2920 group (MAIL, RCPT, DATA; the body after the 354)
        works for the same client.
        """
        harness = InboundHarness(self, **MX)  # type: ignore[arg-type]
        proto, transport = begin(harness, "192.0.2.9")
        proto.dataReceived(
            b"MAIL FROM:<x@example.test>\r\nRCPT TO:<bob@gopherpost.test>\r\nDATA\r\n"
        )
        self.assertEqual(replies(transport)[-1], b"354 End data with <CR><LF>.<CR><LF>")
        proto.dataReceived(b"Subject: fine\r\n\r\nhi\r\n.\r\n")
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))

    def test_afterEhloAndBanner(self) -> None:
        """
        Commands pipelined after EHLO, or input before the banner, are
        synchronization errors too.
        """
        harness = InboundHarness(self, **MX)  # type: ignore[arg-type]
        proto, transport = harness.connect("192.0.2.9")
        replies(transport)
        proto.dataReceived(b"EHLO c.test\r\nMAIL FROM:<x@example.test>\r\n")
        self.assertEqual(replies(transport)[0], b"554 5.5.0 Error: SMTP protocol synchronization")
        self.assertTrue(transport.disconnecting)

    def test_relayClientsLenient(self) -> None:
        """
        A client that may relay keeps the old leniency: the body sent
        before the 354 is taken as the body.
        """
        harness = InboundHarness(self, **MX)  # type: ignore[arg-type]
        proto, transport = begin(harness, "127.0.0.1")
        proto.dataReceived(envelopeCommands() + b"Subject: x\r\n\r\nhi\r\n.\r\n")
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))


class ExtensionReplyTests(SynchronousTestCase):
    """
    Issue 13's small reply fixes.
    """

    def test_bodyAfterHelo(self) -> None:
        """
        C{BODY=8BITMIME} after a plain HELO is C{555}: extensions need EHLO.
        """
        harness = InboundHarness(self)
        proto, transport = harness.connect()
        replies(transport)
        proto.dataReceived(b"HELO c.test\r\n")
        proto.dataReceived(b"MAIL FROM:<a@gopherpost.test> BODY=8BITMIME\r\n")
        lines = replies(transport)
        self.assertEqual(lines[-1][:10], b"555 5.5.4 ")
        proto.dataReceived(b"EHLO c.test\r\n")
        replies(transport)
        proto.dataReceived(b"MAIL FROM:<a@gopherpost.test> BODY=8BITMIME\r\n")
        self.assertEqual(replies(transport), [b"250 2.1.0 Ok"])
