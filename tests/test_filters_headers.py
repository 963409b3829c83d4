"""
Tests for L{gopherpost.filters.headers}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.filters.headers import HeaderSection, formatField

SECTION = (
    b"Received: from a\r\n\tby b; Tue, 1 Dec 2026 12:00:00 +0000\r\n"
    b"From: A <a@example.test>\r\n"
    b"X-Spam: forged\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"X-Spam: forged again\r\n"
    b"X-8bit: caf\xc3\xa9\r\n"
)


class FormatFieldTests(SynchronousTestCase):
    """
    New fields are always one field.
    """

    def test_leadingSpace(self) -> None:
        self.assertEqual(formatField(b"X-A", b"b"), b"X-A: b\r\n")
        self.assertEqual(formatField(b"X-A", b" b"), b"X-A: b\r\n")
        self.assertEqual(formatField(b"X-A", b"\tb"), b"X-A:\tb\r\n")
        self.assertEqual(formatField(b"X-A", b""), b"X-A:\r\n")

    def test_folding(self) -> None:
        """
        LF or CRLF continue the field; a line that does not start with
        white space gets a tab, so it can never become a field of its own
        or end the section.
        """
        self.assertEqual(formatField(b"X-A", b"one;\n\ttwo"), b"X-A: one;\r\n\ttwo\r\n")
        self.assertEqual(formatField(b"X-A", b"one\r\n two"), b"X-A: one\r\n two\r\n")
        self.assertEqual(
            formatField(b"X-A", b"one\nBcc: victim@example.test"),
            b"X-A: one\r\n\tBcc: victim@example.test\r\n",
        )
        self.assertEqual(formatField(b"X-A", b"one\n\n\r\n  \ntwo"), b"X-A: one\r\n\ttwo\r\n")
        self.assertEqual(formatField(b"X-A", b"a\rb\x00c"), b"X-A: a\r\n\tbc\r\n")

    def test_badName(self) -> None:
        for name in (b"", b"X A", b"X:A", b"X\r\nA", b"caf\xc3\xa9"):
            self.assertRaises(ValueError, formatField, name, b"v")


class HeaderSectionTests(SynchronousTestCase):
    """
    Edits keep what they do not touch byte for byte.
    """

    def test_roundTrip(self) -> None:
        section = HeaderSection(SECTION)
        self.assertEqual(section.render(), SECTION)
        self.assertEqual(len(section), 6)
        self.assertFalse(section.changed)
        self.assertEqual(section.values(b"x-spam"), [b" forged", b" forged again"])
        self.assertEqual(HeaderSection(b"").render(), b"")

    def test_notAField(self) -> None:
        """
        A line that is not a field is kept and never matched.
        """
        section = HeaderSection(b"garbage line\r\nFrom: a\r\n")
        self.assertEqual([f.name for f in section], [None, b"From"])
        self.assertEqual(section.render(), b"garbage line\r\nFrom: a\r\n")

    def test_add(self) -> None:
        section = HeaderSection(SECTION)
        section.add(b"X-Added", b"yes")
        self.assertTrue(section.render().endswith(b"X-8bit: caf\xc3\xa9\r\nX-Added: yes\r\n"))
        self.assertTrue(section.changed)

    def test_insert(self) -> None:
        section = HeaderSection(SECTION)
        section.insert(0, b"DKIM-Signature", b" v=1;\n\tb=abc")
        section.insert(2, b"X-Two", b"2")
        section.insert(99, b"X-Last", b"z")
        fields = [f.name for f in section]
        self.assertEqual(fields[:3], [b"DKIM-Signature", b"Received", b"X-Two"])
        self.assertEqual(fields[-1], b"X-Last")
        self.assertTrue(section.render().startswith(b"DKIM-Signature: v=1;\r\n\tb=abc\r\nReceived"))

    def test_change(self) -> None:
        """
        The n-th field of that name; 0 counts as 1; past the last, added.
        """
        section = HeaderSection(SECTION)
        section.change(b"x-spam", 2, b"second")
        section.change(b"Subject", 0, b"[SPAM] hi")
        section.change(b"X-New", 1, b"new")
        self.assertEqual(section.values(b"X-Spam"), [b" forged", b" second"])
        self.assertEqual(section.values(b"subject"), [b" [SPAM] hi"])
        self.assertEqual(section.values(b"X-New"), [b" new"])
        self.assertTrue(section.render().startswith(SECTION[:60]))

    def test_delete(self) -> None:
        section = HeaderSection(SECTION)
        self.assertEqual(section.delete(b"X-Spam", 2), 1)
        self.assertEqual(section.values(b"X-Spam"), [b" forged"])
        self.assertEqual(HeaderSection(SECTION).delete(b"X-Spam", -1), 1)
        section = HeaderSection(SECTION)
        self.assertEqual(section.delete(b"x-SPAM"), 2)
        self.assertEqual(section.values(b"X-Spam"), [])
        self.assertEqual(section.delete(b"X-Spam", 5), 0)
        unchanged = HeaderSection(SECTION)
        self.assertEqual(unchanged.delete(b"Nothing"), 0)
        self.assertFalse(unchanged.changed)
