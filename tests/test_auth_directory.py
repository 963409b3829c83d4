"""
Tests for L{gopherpost.auth.directory}: the users a running server knows,
re-read when the file changes.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.auth.directory import CHECK_EVERY, UserDirectory
from gopherpost.auth.users import UsersFileError
from tests.support.auth import captureLogs, writeUsers


class DirectoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.path = os.path.join(os.path.abspath(self.mktemp()), "users")
        writeUsers(self.path, [("alice@example.org", "pw")])
        self.users = UserDirectory(self.path, self.clock)
        self.users.load()
        self.log = captureLogs(self)

    def rewrite(self, users: list) -> None:
        writeUsers(self.path + ".new", users)
        os.rename(self.path + ".new", self.path)

    def test_lookup(self) -> None:
        """
        Users are found by name in any case.
        """
        self.assertEqual(len(self.users), 1)
        self.assertTrue(self.users.exists)
        record = self.users.get("Alice@EXAMPLE.org")
        assert record is not None
        self.assertEqual(record.name, "alice@example.org")
        self.assertIsNone(self.users.get("bob"))

    def test_refreshAfterChange(self) -> None:
        """
        A changed file is read again at the first refresh after
        L{CHECK_EVERY} seconds, and logged.
        """
        self.rewrite([("alice@example.org", "pw"), ("bob", "pw")])
        self.users.refresh()
        self.assertIsNone(self.users.get("bob"), "looked too early")
        self.clock.advance(CHECK_EVERY)
        self.users.refresh()
        self.assertIsNotNone(self.users.get("bob"))
        self.assertIn("re-read, users: 2", formatEvent(self.log[-1]))

    def test_unchangedNotRead(self) -> None:
        """
        An unchanged file is not read again.
        """
        self.clock.advance(CHECK_EVERY)
        self.users.refresh()
        self.assertEqual(len(self.log), 0)

    def test_badFileKeepsUsers(self) -> None:
        """
        A file that no longer parses leaves the users as they were, with one
        error until it changes again.
        """
        with open(self.path, "a") as f:
            f.write("broken\n")
        for _ in range(3):
            self.clock.advance(CHECK_EVERY)
            self.users.refresh()
        self.assertIsNotNone(self.users.get("alice@example.org"))
        errors = [e for e in self.log if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("line 3", errors[0]["problem"])
        self.rewrite([("carol", "pw")])
        self.clock.advance(CHECK_EVERY)
        self.users.refresh()
        self.assertEqual((len(self.users), self.users.get("carol") is not None), (1, True))

    def test_removedFile(self) -> None:
        """
        A users file that is gone means no users.
        """
        os.unlink(self.path)
        self.clock.advance(CHECK_EVERY)
        self.users.refresh()
        self.assertEqual(len(self.users), 0)
        self.assertFalse(self.users.exists)

    def test_missingAtStart(self) -> None:
        """
        A missing file loads as no users.
        """
        users = UserDirectory(self.path + ".none", self.clock)
        self.assertEqual(users.load(), 0)
        self.assertFalse(users.exists)

    def test_prepare(self) -> None:
        """
        L{UserDirectory.prepare} reads another file without using it until
        applied; a bad file raises and changes nothing.
        """
        other = writeUsers(self.path + ".other", [("bob", "pw")])
        apply = self.users.prepare(other)
        self.assertIsNone(self.users.get("bob"))
        apply()
        self.assertIsNotNone(self.users.get("bob"))
        self.assertEqual(self.users.path, other)
        with open(self.path, "w") as f:
            f.write("broken\n")
        self.assertRaises(UsersFileError, self.users.prepare, self.path)
        self.assertEqual(self.users.path, other)
