"""
Tests for L{gopherpost.inbound.replies}: replies on the wire.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.inbound.replies import Action, Reply, printable, responseReplies
from tests.support.properties import propertySettings


class WireTests(SynchronousTestCase):
    """
    L{Reply.wire}.
    """

    def test_oneLine(self) -> None:
        """
        C{NNN text} and CRLF.
        """
        self.assertEqual(Reply(250, "2.0.0 Ok").wire, b"250 2.0.0 Ok\r\n")

    def test_empty(self) -> None:
        """
        A reply without text is the code and a space (RFC 5321 4.2).
        """
        self.assertEqual(Reply(250).wire, b"250 \r\n")

    def test_multiLine(self) -> None:
        """
        Every line but the last is C{NNN-}.
        """
        self.assertEqual(Reply(250, "a\nb\nc").wire, b"250-a\r\n250-b\r\n250 c\r\n")

    def test_escaped(self) -> None:
        """
        Client bytes echoed in a reply leave as printable US-ASCII only
        (issue 12, item 10).
        """
        echoed = printable(b"X=\x00\x1b[2J\xff")
        self.assertEqual(echoed, "X=\\x00\\x1b[2J\\xff")
        self.assertEqual(
            Reply(555, f"5.5.4 Unsupported option: {echoed}").wire,
            b"555 5.5.4 Unsupported option: X=\\x00\\x1b[2J\\xff\r\n",
        )
        self.assertEqual(
            Reply(500, "a\x00b\r\tc\u00e9").wire, b"500 a\\x00b\\x0d\\x09c\\xc3\\xa9\r\n"
        )

    def test_cut(self) -> None:
        """
        Long echoes are cut.
        """
        self.assertEqual(printable(b"a" * 200, limit=10), "aaaaaaa...")

    @given(st.integers(200, 599), st.text(max_size=200))
    @propertySettings(300)
    def test_alwaysValid(self, code: int, text: str) -> None:
        """
        Whatever the text, every line on the wire is a valid reply line.
        """
        wire = Reply(code, text).wire
        lines = wire.split(b"\r\n")
        self.assertEqual(lines[-1], b"")
        for i, line in enumerate(lines[:-1]):
            self.assertEqual(line[:3], b"%d" % code)
            self.assertEqual(line[3:4], b" " if i == len(lines) - 2 else b"-")
            self.assertTrue(all(0x20 <= c <= 0x7E for c in line), line)


class ResponseTests(SynchronousTestCase):
    """
    Responses and actions.
    """

    def test_closing(self) -> None:
        """
        L{Reply.closing} keeps the reply and closes after it.
        """
        reply = Reply(554, "5.7.1 Access denied", reason="access").closing()
        self.assertEqual(
            (reply.code, reply.text, reply.action, reply.reason),
            (554, "5.7.1 Access denied", Action.CLOSE, "access"),
        )

    def test_replies(self) -> None:
        """
        A response is one reply or a tuple of them.
        """
        one, two = Reply(500), Reply(421)
        self.assertEqual(responseReplies(one), (one,))
        self.assertEqual(responseReplies((one, two)), (one, two))
        self.assertTrue(one.isError and not one.isPositive)
        self.assertTrue(Reply(354).isPositive)
