"""
Tests for L{gopherpost.relay.content}: reading spooled content for the
relay, and the DKIM header computed once.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from gopherpost.relay import content
from tests.support.accesstime import makeStale, plainReadUpdates


class ReadContentsTests(SynchronousTestCase):
    """
    Small files are read at once, large ones in one thread hop, in order.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.hops: list[tuple[Any, tuple[Any, ...]]] = []

    def file(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def runInThread(self, f: Any, *args: Any) -> Deferred[Any]:
        self.hops.append((f, args))
        return maybeDeferred(f, *args)

    def test_allSmall(self) -> None:
        """
        Within the budget: no thread hop.
        """
        paths = [self.file("a", b"one"), self.file("b", b"two")]
        read = self.successResultOf(content.readContents(paths, self.runInThread))
        self.assertEqual(read, [b"one", b"two"])
        self.assertEqual(self.hops, [])

    def test_budget(self) -> None:
        """
        Files past the budget go to one thread hop; the order is kept.
        """
        self.patch(content, "INLINE_READ_BUDGET", 10)
        paths = [self.file("a", b"123456"), self.file("b", b"x" * 20), self.file("c", b"1234")]
        paths.append(self.file("d", b"12"))
        read = self.successResultOf(content.readContents(paths, self.runInThread))
        self.assertEqual(read, [b"123456", b"x" * 20, b"1234", b"12"])
        [(f, (large,))] = self.hops
        self.assertIs(f, content.readAll)
        self.assertEqual([os.path.basename(p) for p in large], ["b", "d"])

    def test_accessTimesKept(self) -> None:
        """
        Reading for the relay (at once, in the thread, for DKIM) leaves the
        files' access times alone: on a C{relatime} file system the first
        read of a fresh spool file would otherwise dirty its inode for the
        SMTP side's next sync.
        """
        if not plainReadUpdates(self.directory):
            raise SkipTest("this file system never updates access times (noatime)")
        self.patch(content, "INLINE_READ_BUDGET", 10)
        paths = [self.file("small", b"123"), self.file("large", b"x" * 20)]
        stale = [makeStale(path) for path in paths]
        self.successResultOf(content.readContents(paths, self.runInThread))
        content.dkimHeader(_Signer(b"X: y\r\n123"), paths[0], None, "Q")
        self.assertEqual([os.stat(path).st_atime for path in paths], stale)


class _Signer:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[tuple[bytes, str | None]] = []

    def sign(self, message: bytes, domain: str | None) -> bytes:
        self.calls.append((message, domain))
        if isinstance(self.result, Exception):
            raise self.result
        return bytes(self.result)


class DKIMHeaderTests(SynchronousTestCase):
    """
    The header is what the signer put before the message.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            f.write(b"Subject: x\r\n\r\nbody\r\n")

    def test_header(self) -> None:
        """
        The signer's prefix, for the sender's domain.
        """
        signer = _Signer(b"DKIM-Signature: v=1; d=a.test\r\nSubject: x\r\n\r\nbody\r\n")
        header = content.dkimHeader(signer, self.path, "a.test", "Q1")
        self.assertEqual(header, "DKIM-Signature: v=1; d=a.test\r\n")
        self.assertEqual(signer.calls, [(b"Subject: x\r\n\r\nbody\r\n", "a.test")])

    def test_failure(self) -> None:
        """
        A signer that fails, or changes the message, gives no header.
        """
        self.assertEqual(
            content.dkimHeader(_Signer(ValueError("no key")), self.path, None, "Q"), ""
        )
        self.assertEqual(content.dkimHeader(_Signer(b"changed"), self.path, None, "Q"), "")
