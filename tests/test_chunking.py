"""
Tests for CHUNKING (RFC 3030): L{gopherpost.inbound.chunking} and BDAT in
the session and protocol (L{gopherpost.inbound.session.Session.smtp_BDAT}).

The invariants: a message gives the same replies and the same stored bytes
however the client's bytes are split, however its content is cut into
chunks, and whether it came by BDAT or by (dot-stuffed) DATA; chunk octets
are never run as commands; the final C{250} waits for the spool.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.inbound.chunking import ChunkedContent, parseBDATArgument
from gopherpost.inbound.policy import Policy
from gopherpost.inbound.replies import Reply
from tests.support.inbound import InboundHarness, replies
from tests.support.properties import propertySettings
from tests.test_framing import TOKENS, split

_QUEUE_ID = re.compile(rb"[0-9A-F]{19}")

START = (
    b"EHLO client.test\r\nMAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n"
)
CONTENT = b"Subject: chunks\r\n\r\nLine one\r\n.leading dot\r\nbare\nLF and bare\rCR\r\nend\r\n"


def bdat(content: bytes, cuts: list[int] = ()) -> bytes:  # type: ignore[assignment]
    """
    C{content} as BDAT commands, cut at C{cuts}; the last one is LAST.
    """
    pieces = split(content, list(cuts)) or [b""]
    data = b""
    for index, piece in enumerate(pieces):
        last = b" LAST" if index == len(pieces) - 1 else b""
        data += b"BDAT %d%s\r\n" % (len(piece), last) + piece
    return data


def dotStuffed(content: bytes) -> bytes:
    """
    C{content} (ending in CRLF) as DATA sends it: a dot is doubled at the
    start of a line, which for the server means after a CRLF.
    """
    stuffed = (b"." if content.startswith(b".") else b"") + content.replace(b"\r\n.", b"\r\n..")
    return b"DATA\r\n" + stuffed + b".\r\n"


def run(
    case: SynchronousTestCase, pieces: list[bytes], **overrides: Any
) -> tuple[list[bytes], list[bytes]]:
    """
    The reply lines (queue ids blanked) and the stored messages of one
    session fed C{pieces}.
    """
    harness = InboundHarness(case, **overrides)
    proto, transport = harness.connect()
    for piece in pieces:
        proto.dataReceived(piece)
    lines = _QUEUE_ID.sub(b"QUEUEID", transport.value()).split(b"\r\n")
    stored = [_QUEUE_ID.sub(b"QUEUEID", harness.read(name)) for name in harness.storedFiles()]
    return [line for line in lines if line], sorted(stored)


def body(stored: bytes) -> bytes:
    """
    A stored message without our C{Received:} header.
    """
    assert stored.startswith(b"Received: ")
    return re.sub(rb"\A(?:Received: .*\r\n)(?:\t.*\r\n)*", b"", stored)


class ArgumentTests(SynchronousTestCase):
    """
    L{parseBDATArgument}.
    """

    def test_valid(self) -> None:
        """
        A size, optionally LAST in any case.
        """
        self.assertEqual(parseBDATArgument(b"10"), (10, False))
        self.assertEqual(parseBDATArgument(b"0 LAST"), (0, True))
        self.assertEqual(parseBDATArgument(b"7 last"), (7, True))
        self.assertEqual(parseBDATArgument(b" 12  LAST "), (12, True))

    def test_invalid(self) -> None:
        """
        Anything else is L{None}: no size, a sign, junk after LAST, a size
        of more digits than any message has.
        """
        for argument in (b"", b"x", b"-1", b"+1", b"10 LASTX", b"10 LAST x", b"1" * 19, b"LAST"):
            self.assertIsNone(parseBDATArgument(argument), argument)


class ChunkedContentTests(SynchronousTestCase):
    """
    L{ChunkedContent}: chunk octets stored as DATA content is.
    """

    def feed(self, pieces: list[bytes]) -> tuple[bytes, bool]:
        content = ChunkedContent()
        out = b"".join(content.feed(piece) for piece in pieces) + content.finish()
        return out, content.failed

    def test_lineEnds(self) -> None:
        """
        Bare CR and bare LF become CRLF; the content ends with CRLF.
        """
        self.assertEqual(self.feed([b"a\nb\rc\r\nd"]), (b"a\r\nb\r\nc\r\nd\r\n", False))
        self.assertEqual(self.feed([b"a\r\n"]), (b"a\r\n", False))
        self.assertEqual(self.feed([b"a\r"]), (b"a\r\n", False))
        self.assertEqual(self.feed([]), (b"", False))

    def test_everySplit(self) -> None:
        """
        The same output for the content cut at any one or two points (a
        CRLF cut between chunks stays one line end).
        """
        whole = self.feed([CONTENT])
        for i in range(len(CONTENT) + 1):
            self.assertEqual(self.feed([CONTENT[:i], CONTENT[i:]]), whole, i)
        for i in range(0, len(CONTENT), 3):
            for j in range(i, len(CONTENT) + 1, 5):
                self.assertEqual(self.feed([CONTENT[:i], CONTENT[i:j], CONTENT[j:]]), whole)

    def test_longLine(self) -> None:
        """
        A line over 998 octets fails, however it is cut; 998 is fine.
        """
        self.assertFalse(self.feed([b"x" * 998 + b"\r\n"])[1])
        self.assertTrue(self.feed([b"x" * 999 + b"\r\n"])[1])
        self.assertTrue(self.feed([b"x" * 500, b"x" * 499, b"\r\n"])[1])
        self.assertEqual(self.feed([b"x" * 2000]), (b"", True))


class BDATSessionTests(SynchronousTestCase):
    """
    BDAT over the wire (L{InboundHarness}).
    """

    def setUp(self) -> None:
        self.harness = InboundHarness(self, maxMessageSize=1000)
        self.proto, self.transport = self.harness.connect()
        replies(self.transport)

    def send(self, data: bytes) -> list[bytes]:
        self.proto.dataReceived(data)
        return replies(self.transport)

    def test_advertised(self) -> None:
        """
        EHLO lists CHUNKING; HELP lists BDAT.
        """
        self.assertIn(b"250-CHUNKING", self.send(b"EHLO client.test\r\n"))
        self.assertIn(b"BDAT", self.send(b"HELP\r\n")[0])

    def test_message(self) -> None:
        """
        Each chunk gets C{250} with its size, the last one the queue id;
        the message is stored as sent, with our trace header on top.
        """
        lines = self.send(START + b"BDAT 5\r\nHelloBDAT 9 LAST\r\n, world\r\n")
        self.assertEqual(lines[-2], b"250 2.0.0 Ok: 5 octets")
        self.assertRegex(lines[-1], rb"^250 2\.0\.0 Ok: queued as [0-9A-F]{19}$")
        (stored,) = self.harness.storedFiles()
        self.assertEqual(body(self.harness.read(stored)), b"Hello, world\r\n")

    def test_chunkOctetsAreNotCommands(self) -> None:
        """
        Octets of a chunk that look like commands are content, also in a
        refused chunk (BDAT without MAIL): after it the session goes on.
        """
        lines = self.send(b"EHLO client.test\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")
        self.assertEqual(lines[-2:], [b"503 5.5.1 Error: need MAIL command", b"250 2.0.0 Ok"])
        self.assertFalse(self.transport.disconnecting)
        lines = self.send(START + b"BDAT 12 LAST\r\nQUIT\r\nRSET\r\n")
        self.assertRegex(lines[-1], rb"^250 2\.0\.0 Ok: queued as ")
        (stored,) = self.harness.storedFiles()
        self.assertEqual(body(self.harness.read(stored)), b"QUIT\r\nRSET\r\n")

    def test_sequence(self) -> None:
        """
        BDAT without RCPT, DATA after BDAT, MAIL and RCPT between chunks:
        C{503}, and a refused chunk ends the transaction (RFC 3030 2).
        """
        self.send(b"EHLO client.test\r\nMAIL FROM:<alice@gopherpost.test>\r\n")
        self.assertEqual(self.send(b"BDAT 2\r\nab"), [b"503 5.5.1 Error: need RCPT command"])
        self.assertEqual(
            self.send(b"RCPT TO:<bob@gopherpost.test>\r\n"), [b"503 5.5.1 Error: need MAIL command"]
        )
        self.send(b"MAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n")
        self.assertEqual(self.send(b"BDAT 2\r\nab"), [b"250 2.0.0 Ok: 2 octets"])
        self.assertEqual(self.send(b"DATA\r\n"), [b"503 5.5.1 Error: DATA after BDAT"])
        self.send(b"RSET\r\nMAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n")
        self.send(b"BDAT 2\r\nab")
        self.assertEqual(
            self.send(b"MAIL FROM:<alice@gopherpost.test>\r\n"),
            [b"503 5.5.1 Error: MAIL after BDAT"],
        )
        self.assertEqual(
            self.send(b"RCPT TO:<carol@gopherpost.test>\r\n"),
            [b"503 5.5.1 Error: RCPT after BDAT"],
        )
        self.assertEqual(self.send(b"BDAT 0 LAST\r\n")[0][:3], b"250")
        self.assertEqual(len(self.harness.storedFiles()), 1)

    def test_rsetBetweenChunks(self) -> None:
        """
        RSET between chunks drops the message.
        """
        self.send(START + b"BDAT 2\r\nab")
        self.assertEqual(self.send(b"RSET\r\n"), [b"250 2.0.0 Ok"])
        self.assertEqual(self.send(b"BDAT 2 LAST\r\ncd"), [b"503 5.5.1 Error: need MAIL command"])
        self.assertEqual(self.harness.storedFiles(), [])

    def test_bdatAfterRefusedData(self) -> None:
        """
        BDAT in a transaction whose DATA was refused by a policy is C{503}.
        """

        class RefuseData(Policy):
            name = "refuse-data"

            def data(self, context: object, transaction: object) -> Reply:
                return Reply(554, "5.7.1 Not now")

        harness = InboundHarness(self, policies=lambda policies: [RefuseData(), *policies])
        proto, transport = harness.connect()
        proto.dataReceived(START + b"DATA\r\nBDAT 2 LAST\r\nxy")
        lines = replies(transport)
        self.assertEqual(lines[-2:], [b"554 5.7.1 Not now", b"503 5.5.1 Error: BDAT after DATA"])

    def test_sizeCheckedBeforeReading(self) -> None:
        """
        A chunk that would take the message over SMTP_MAX_MESSAGE_SIZE is
        refused with C{552 5.3.4} as soon as its command is read: its
        octets are read and thrown away, the session goes on.
        """
        self.send(START)
        chunk = b"NOOP\r\n" * 200
        self.proto.dataReceived(b"BDAT %d LAST\r\n" % len(chunk))
        self.assertEqual(replies(self.transport), [])
        self.assertEqual(self.proto.transport.producerState, "producing")
        self.proto.dataReceived(chunk)
        self.assertEqual(replies(self.transport), [b"552 5.3.4 Chunk exceeds message size limit"])
        self.assertEqual(self.harness.audit.named("message.rejected")[-1]["reason"], "size")
        self.send(b"MAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n")
        self.assertEqual(self.send(b"BDAT 600\r\n" + b"x\r\n" * 200), [b"250 2.0.0 Ok: 600 octets"])
        lines = self.send(b"BDAT 401 LAST\r\n" + b"y" * 401)
        self.assertEqual(lines, [b"552 5.3.4 Chunk exceeds message size limit"])
        self.assertEqual(self.harness.storedFiles(), [])

    def test_badArgument(self) -> None:
        """
        A BDAT whose size cannot be read ends the session (its chunk cannot
        be told from commands).
        """
        lines = self.send(START + b"BDAT lots\r\n")
        self.assertEqual(lines[-1], b"521 5.5.4 Syntax: BDAT count [LAST]")
        self.assertTrue(self.transport.disconnecting)

    def test_nullChunk(self) -> None:
        """
        C{BDAT 0} without LAST is refused; C{BDAT 0 LAST} ends a message.
        """
        self.assertEqual(self.send(START + b"BDAT 0\r\n")[-1], b"551 5.7.1 Null BDAT request")
        self.send(b"MAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n")
        self.send(b"BDAT 3\r\nab\n")
        self.assertRegex(self.send(b"BDAT 0 LAST\r\n")[0], rb"^250 2\.0\.0 Ok: queued as ")

    def test_longLine(self) -> None:
        """
        A line over 998 octets fails the message at the end of its chunk;
        the rest of the transaction's chunks get C{503}.
        """
        self.send(START)
        self.assertEqual(self.send(b"BDAT 999\r\n" + b"z" * 999)[0][:3], b"500")
        self.assertEqual(self.send(b"BDAT 2 LAST\r\n\r\n"), [b"503 5.5.1 Error: need MAIL command"])
        self.assertEqual(self.harness.storedFiles(), [])

    def test_durableBeforeReply(self) -> None:
        """
        The last chunk's C{250} comes only once the spool has synced.
        """
        harness = InboundHarness(self, synchronousThreads=False)
        proto, transport = harness.connect()
        proto.dataReceived(START + b"BDAT 4 LAST\r\nabc\n")
        self.assertFalse([line for line in replies(transport) if b"queued" in line])
        harness.runThreads()
        self.assertRegex(replies(transport)[-1], rb"^250 2\.0\.0 Ok: queued as ")

    def test_pipelined(self) -> None:
        """
        Two transactions with several chunks each in one write: every reply
        in order, both messages stored.
        """
        dialogue = START + bdat(CONTENT, [7, 20]) + START[18:] + bdat(b"two\r\n", [1]) + b"QUIT\r\n"
        lines = self.send(dialogue)
        self.assertEqual(len([line for line in lines if b"queued as" in line]), 2)
        self.assertEqual(lines[-1], b"221 2.0.0 Bye")
        self.assertEqual(len(self.harness.storedFiles()), 2)


class InvarianceTests(SynchronousTestCase):
    """
    The same outcome whatever the splits.
    """

    def test_everyWireBoundary(self) -> None:
        """
        The dialogue cut in two at every point gives the same replies and
        stored bytes.
        """
        dialogue = START + bdat(CONTENT, [10, 11, 30]) + b"QUIT\r\n"
        whole = run(self, [dialogue])
        self.assertEqual(whole[0][-1], b"221 2.0.0 Bye")
        for i in range(1, len(dialogue)):
            self.assertEqual(run(self, [dialogue[:i], dialogue[i:]]), whole, i)

    def test_everyChunkBoundary(self) -> None:
        """
        The content cut into two chunks at every point is stored the same,
        and the same as by DATA.
        """
        byData = run(self, [START + dotStuffed(CONTENT)])[1]
        for i in range(len(CONTENT) + 1):
            self.assertEqual(run(self, [START + bdat(CONTENT, [i])])[1], byData, i)

    @given(
        st.lists(st.sampled_from(TOKENS), max_size=25).map(b"".join),
        st.lists(st.integers(0, 10000), max_size=6),
        st.lists(st.integers(0, 10000), max_size=8),
    )
    @propertySettings(60)
    def test_property(self, content: bytes, chunkCuts: list[int], wireCuts: list[int]) -> None:
        """
        Random content in random chunks over random reads: stored as the
        same content sent by DATA; replies independent of the reads.
        """
        content += b"\r\n"
        dialogue = START + bdat(content, chunkCuts) + b"QUIT\r\n"
        whole = run(self, [dialogue])
        self.assertEqual(whole[0][-1], b"221 2.0.0 Bye")
        self.assertEqual(run(self, split(dialogue, wireCuts)), whole)
        self.assertEqual(whole[1], run(self, [START + dotStuffed(content)])[1])
