"""
A short, seeded run of the inbound fuzzer (L{tests.support.fuzzing}; the
long runs are C{bench/fuzz.py}): no traceback, only valid reply lines, no
session left open, nothing stored that is not clean.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.fuzzing import checkReplies, checkStored, fuzz


class FuzzTests(SynchronousTestCase):
    """
    The fuzzer, and its checks.
    """

    def test_shortRun(self) -> None:
        """
        2,000 random and mutated dialogues, in random splits, find nothing.
        """
        report = fuzz(seed=5321, dialogues=2000, directory=self.mktemp())
        self.assertEqual(report.findings, [])
        self.assertEqual(report.dialogues, 2000)
        self.assertGreater(report.replies, 5000)
        self.assertGreater(report.messages, 50)

    def test_checksFindProblems(self) -> None:
        """
        The checks are not vacuous: they catch what they look for.
        """
        self.assertEqual(checkReplies(b"250 Ok\r\n250-a\r\n250 b\r\n"), [])
        self.assertEqual(len(checkReplies(b"250 Ok\r\nhello\r\n")), 1)
        self.assertEqual(len(checkReplies(b"250-a\r\n251 b\r\n")), 1)
        self.assertEqual(len(checkReplies(b"250 \x1b[2J\r\n")), 1)
        self.assertEqual(len(checkReplies(b"250 Ok")), 1)
        self.assertEqual(checkStored(b"a\r\nb\r\n"), [])
        self.assertEqual(len(checkStored(b"a\nb\r\n")), 1)
        self.assertEqual(len(checkStored(b"a" * 999 + b"\r\n")), 1)
