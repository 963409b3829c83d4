"""
Tests for L{gopherpost.inbound.framing}: command lines, message content and
raw reads, each checked against an obviously correct model of the whole
input, and for every way of splitting it into reads.
"""

from __future__ import annotations

import random
import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.inbound import framing
from gopherpost.inbound.framing import COMMAND_LINE_LIMIT, DISCARD_LIMIT, TEXT_LINE_LIMIT, Framer
from tests.support.properties import propertySettings

_BREAKS = re.compile(rb"\r\n|\r|\n")


def referenceData(raw: bytes) -> tuple[bytes | None, bytes]:
    """
    The message content of C{raw} (what follows a C{354}) worked out on the
    whole input at once: C{(stored, rest)}, C{stored} L{None} if a line is
    too long, C{rest} what follows the end of data.
    """
    wire = b"\r\n" + raw
    end = wire.find(b"\r\n.\r\n")
    assert end >= 0, "no end of data"
    content = b"\r\n" + wire[2 : end + 2]
    content = content.replace(b"\r\n.", b"\r\n")[2:]
    content = _BREAKS.sub(b"\r\n", content)
    if any(len(line) > TEXT_LINE_LIMIT - 2 for line in content.split(b"\r\n")):
        return None, wire[end + 5 :]
    return content, wire[end + 5 :]


def referenceLines(raw: bytes) -> list[tuple[str, bytes]]:
    """
    The command-line events of C{raw} worked out on the whole input.
    """
    events: list[tuple[str, bytes]] = []
    *lines, partial = raw.split(b"\n")
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > DISCARD_LIMIT:
            events.append((framing.INPUT_TOO_LONG, b""))
            return events
        if len(line) > COMMAND_LINE_LIMIT - 2:
            events.append((framing.LINE_TOO_LONG, b""))
        else:
            events.append((framing.LINE, line))
    if len(partial) - partial.endswith(b"\r") > DISCARD_LIMIT:
        events.append((framing.INPUT_TOO_LONG, b""))
    return events


def drive(framer: Framer, pieces: list[bytes]) -> list[tuple[str, bytes]]:
    """
    Feed C{pieces} one read at a time; every event, with the content of
    consecutive BODY events joined (their split is not part of the
    contract).  After the end of data, command lines follow.
    """
    events: list[tuple[str, bytes]] = []
    for piece in pieces:
        framer.feed(piece)
        while True:
            event = framer.next()
            if event is None:
                break
            if event.kind == framing.BODY and events and events[-1][0] == framing.BODY:
                events[-1] = (framing.BODY, events[-1][1] + event.data)
            else:
                events.append((event.kind, event.data))
            if event.kind == framing.INPUT_TOO_LONG:
                return events
    return events


def dataEvents(pieces: list[bytes]) -> list[tuple[str, bytes]]:
    framer = Framer()
    framer.startData()
    return drive(framer, pieces)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points + [len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


def expectedDataEvents(raw: bytes) -> list[tuple[str, bytes]]:
    stored, rest = referenceData(raw)
    if stored is None:
        events = [(framing.BODY_LINE_TOO_LONG, b""), (framing.DATA_END, b"")]
    elif stored:
        events = [(framing.BODY, stored), (framing.DATA_END, b"")]
    else:
        events = [(framing.DATA_END, b"")]
    return events + referenceLines(rest)


def normalise(events: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """
    Content delivered before a too-long line is thrown away by the session:
    drop it, as the reference never delivers it.
    """
    out: list[tuple[str, bytes]] = []
    for kind, data in events:
        if kind == framing.BODY_LINE_TOO_LONG and out and out[-1][0] == framing.BODY:
            out.pop()
        out.append((kind, data))
    return out


#: Pieces of content that meet the framing's edge cases.
TOKENS = [
    b"a",
    b"text",
    b".",
    b"..",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n.",
    b"\r\n..",
    b"\n.",
    b"\r.",
    b"\r\n.\r",
    b"\n.\n",
    b"\r\n.\n",
    b"\n.\r\n",
    b"x" * 80,
    b"y" * 500,
    b"z" * 997,
    b"w" * 998,
    b"v" * 999,
    b"MAIL FROM:<x@y.test>",
]

content = st.lists(st.sampled_from(TOKENS), max_size=30).map(b"".join)
commands = st.lists(
    st.sampled_from([b"NOOP\r\n", b"QUIT\r\n", b"RSET\n", b"x" * 600 + b"\r\n", b"a\r"]),
    max_size=4,
).map(b"".join)


class CommandLineTests(SynchronousTestCase):
    """
    Command lines and their limits.
    """

    def lines(self, *pieces: bytes) -> list[tuple[str, bytes]]:
        return drive(Framer(), list(pieces))

    def test_lineEnds(self) -> None:
        """
        A line ends at LF, with or without the CR before it; an empty line
        is a line.
        """
        self.assertEqual(
            self.lines(b"EHLO a\r\nNOOP\n\r\nMAIL"),
            [(framing.LINE, b"EHLO a"), (framing.LINE, b"NOOP"), (framing.LINE, b"")],
        )

    def test_limits(self) -> None:
        """
        510 octets before the CRLF are a line; 511 are too long; past
        L{DISCARD_LIMIT} the input is too long, and nothing after it is
        read.
        """
        self.assertEqual(self.lines(b"a" * 510 + b"\r\n"), [(framing.LINE, b"a" * 510)])
        self.assertEqual(self.lines(b"a" * 511 + b"\r\nNOOP\r\n")[0], (framing.LINE_TOO_LONG, b""))
        self.assertEqual(
            self.lines(b"a" * (DISCARD_LIMIT + 1) + b"\r\nNOOP\r\n"),
            [(framing.INPUT_TOO_LONG, b"")],
        )
        self.assertEqual(self.lines(b"a" * DISCARD_LIMIT + b"\r\n")[0][0], framing.LINE_TOO_LONG)

    def test_limitsWhateverTheSplit(self) -> None:
        """
        The verdicts are the same when the line comes in one read, byte by
        byte, or with its CR and LF in separate reads (issue 12, item 9).
        """
        for length in (509, 510, 511, 4000, DISCARD_LIMIT, DISCARD_LIMIT + 1, 20000):
            data = b"b" * length + b"\r\nNOOP\r\n"
            expected = referenceLines(data)
            for pieces in (
                [data],
                [data[i : i + 1] for i in range(len(data))] if length < 1000 else [data],
                [data[: length + 1], data[length + 1 :]],
                [data[:length], data[length:]],
                [data[i : i + 700] for i in range(0, len(data), 700)],
            ):
                self.assertEqual(self.lines(*pieces), expected, (length, len(pieces)))

    def test_bounded(self) -> None:
        """
        Without LF, the framer never holds more than a line's worth.
        """
        framer = Framer()
        for _ in range(3):
            framer.feed(b"x" * 4096)
            self.assertIsNone(framer.next())
            self.assertLess(framer.buffered, COMMAND_LINE_LIMIT)

    def test_discard(self) -> None:
        """
        L{Framer.discard} drops what is buffered (STARTTLS).
        """
        framer = Framer()
        framer.feed(b"MAIL FROM:<a@b.test>\r\nRCPT")
        self.assertEqual(framer.discard(), 26)
        self.assertEqual(framer.buffered, 0)
        self.assertIsNone(framer.next())

    @given(st.lists(st.sampled_from([b"NOOP", b"\r", b"\n", b"\r\n", b"x" * 300]), max_size=40))
    @propertySettings(200)
    def test_property(self, tokens: list[bytes]) -> None:
        """
        Random input, split at random, gives the reference's lines.
        """
        data = b"".join(tokens)
        rng = random.Random(len(data))
        cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randrange(6))]
        self.assertEqual(self.lines(*split(data, cuts)), referenceLines(data))


class DataTests(SynchronousTestCase):
    """
    Message content: the end of data, dot-stuffing, line ends and lengths.
    """

    def check(self, raw: bytes) -> None:
        expected = expectedDataEvents(raw)
        self.assertEqual(normalise(dataEvents([raw])), expected)
        self.assertEqual(normalise(dataEvents([raw[i : i + 1] for i in range(len(raw))])), expected)
        for cut in range(len(raw) + 1):
            self.assertEqual(
                normalise(dataEvents([raw[:cut], raw[cut:]])), expected, (cut, raw[:40])
            )

    def test_endOfData(self) -> None:
        """
        CRLF.CRLF ends the message, also right at the start; what follows
        is command lines.
        """
        self.assertEqual(
            dataEvents([b"hello\r\n.\r\nNOOP\r\n"]),
            [(framing.BODY, b"hello\r\n"), (framing.DATA_END, b""), (framing.LINE, b"NOOP")],
        )
        self.assertEqual(
            dataEvents([b".\r\nQUIT\r\n"]), [(framing.DATA_END, b""), (framing.LINE, b"QUIT")]
        )

    def test_finalDotStartsRead(self) -> None:
        """
        The final dot at the start of a read loses nothing after it (issue
        12, item 4): C{.\\r\\nNOOP\\r\\n} is the end and then NOOP.
        """
        self.assertEqual(
            dataEvents([b"body\r\n", b".\r\nNOOP\r\n"]),
            [(framing.BODY, b"body\r\n"), (framing.DATA_END, b""), (framing.LINE, b"NOOP")],
        )
        self.assertEqual(
            dataEvents([b".\r\nQUIT\r\n"]), [(framing.DATA_END, b""), (framing.LINE, b"QUIT")]
        )

    def test_dotStuffing(self) -> None:
        """
        A dot starting a line after CRLF is removed (RFC 5321 4.5.2).
        """
        self.check(b"..a\r\nb\r\n...\r\n..\r\n.c.\r\n.\r\n")

    def test_smuggling(self) -> None:
        """
        Only CRLF.CRLF ends the message; bare CR and LF are stored as CRLF.
        """
        self.check(b"a\n.\nMAIL FROM:<e@x.test>\r\nb\r\n.\nc\n.\r\nd\r.\re\r\n.\r\n")
        [(kind, body), end] = dataEvents([b"one\n.\ntwo\r\n.\r\n"])
        self.assertEqual(body, b"one\r\n.\r\ntwo\r\n")

    def test_longLines(self) -> None:
        """
        998 octets before CRLF pass, 999 fail, also dot-stuffed (the stuffed
        dot is not content) and whatever the split (issue 12, item 9).
        """
        self.check(b"a" * 998 + b"\r\n.\r\n")
        self.check(b"." + b"a" * 998 + b"\r\n.\r\n")
        self.check(b"a" * 999 + b"\r\n.\r\nNOOP\r\n")
        self.check(b"short\r\n" + b"b" * 1500 + b"\r\nMAIL FROM:<m@x.test>\r\n.\r\nNOOP\r\n")

    def test_bareLineEndsAreLineEnds(self) -> None:
        """
        Over 1,000 octets of bare-LF lines, none over 998, pass.
        """
        self.check(b"x" * 900 + b"\n" + b"y" * 900 + b"\n" + b"z" * 900 + b"\r\n.\r\n")
        self.check(b"x" * 900 + b"\r" + b"y" * 900 + b"\r\n.\r\n")

    def test_stopStoring(self) -> None:
        """
        After L{Framer.stopStoring} no more content is delivered, but the
        end is found.
        """
        framer = Framer()
        framer.startData()
        framer.feed(b"first\r\n")
        self.assertEqual(framer.next(), framing.Event(framing.BODY, b"first\r\n"))
        framer.stopStoring()
        framer.feed(b"second\r\n.\r\nNOOP\r\n")
        self.assertEqual(framer.next(), framing.Event(framing.DATA_END))
        self.assertEqual(framer.next(), framing.Event(framing.LINE, b"NOOP"))

    def test_heldBack(self) -> None:
        """
        At most two octets are held back (a CR, a dot after CRLF).
        """
        framer = Framer()
        framer.startData()
        for data in (b"abc\r", b"\n.", b"\r"):
            framer.feed(data)
            while framer.next() is not None:
                pass
            self.assertLessEqual(framer.buffered, 2)

    @given(content, commands, st.lists(st.integers(0, 100000), max_size=8))
    @propertySettings(400)
    def test_property(self, body: bytes, after: bytes, cuts: list[int]) -> None:
        """
        Random content, split at random, gives the reference's stored bytes,
        verdict and following lines.
        """
        raw = body + b"\r\n.\r\n" + after
        self.assertEqual(normalise(dataEvents(split(raw, cuts))), expectedDataEvents(raw))

    @given(content)
    @propertySettings(100)
    def test_propertyByteByByte(self, body: bytes) -> None:
        """
        The same, one octet per read.
        """
        raw = body + b"\r\n.\r\nNOOP\r\n"
        self.assertEqual(
            normalise(dataEvents([raw[i : i + 1] for i in range(len(raw))])),
            expectedDataEvents(raw),
        )


class RawTests(SynchronousTestCase):
    """
    Exactly N raw octets (for BDAT).
    """

    def test_raw(self) -> None:
        """
        The octets come untouched, however split, then command lines.
        """
        framer = Framer()
        framer.startRaw(7)
        events = drive(framer, [b"a\r\n", b".\r", b"\nbNOOP\r\n"])
        raw = b"".join(data for kind, data in events if kind == framing.RAW)
        self.assertEqual(raw, b"a\r\n.\r\nb")
        self.assertEqual(
            [kind for kind, _ in events if kind != framing.RAW], [framing.RAW_END, framing.LINE]
        )
        self.assertEqual(events[-1], (framing.LINE, b"NOOP"))

    def test_zero(self) -> None:
        """
        Zero octets end at once.
        """
        framer = Framer()
        framer.startRaw(0)
        framer.feed(b"NOOP\r\n")
        self.assertEqual(framer.next(), framing.Event(framing.RAW_END))
        self.assertEqual(framer.next(), framing.Event(framing.LINE, b"NOOP"))
