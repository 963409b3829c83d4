"""
Tests for L{gopherpost.diskspace} and the free-space part of
L{gopherpost.spool.Spool.isWritable}: with a fake C{statvfs}, and with a
real small file system filled up behind the real probe endpoints.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from collections import deque
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody

import gopherpost
import tests
from gopherpost import diskspace
from gopherpost.diskspace import freeSpace, freeSpaceProblem
from gopherpost.spool import Spool

MiB = 1024 * 1024
GiB = 1024 * MiB


def fakeStatvfs(
    size: int,
    available: int,
    inodes: int = 1_000_000,
    inodesAvailable: int = 900_000,
    blockSize: int = 4096,
) -> Any:
    """
    A C{statvfs} that reports these numbers for any path.
    """

    def statvfs(path: str) -> os.statvfs_result:
        statvfs.paths.append(path)  # type: ignore[attr-defined]
        return os.statvfs_result(
            (
                blockSize,
                blockSize,
                size // blockSize,
                available // blockSize,
                available // blockSize,
                inodes,
                inodesAvailable,
                inodesAvailable,
                0,
                255,
            )
        )

    statvfs.paths = []  # type: ignore[attr-defined]
    return statvfs


class MarginTests(SynchronousTestCase):
    """
    The margins: 1% of the file system or 64 MiB, whichever is smaller;
    1% of the inodes or 1000.
    """

    def test_largeFileSystem(self) -> None:
        """
        On a large file system the margin is 64 MiB.
        """
        room = freeSpace("/spool", fakeStatvfs(1024 * GiB, 100 * MiB))
        self.assertEqual(room.margin, 64 * MiB)
        self.assertEqual(room.available, 100 * MiB)
        self.assertEqual(room.size, 1024 * GiB)
        self.assertTrue(room.enough)
        self.assertIsNone(freeSpaceProblem("/spool", statvfs=fakeStatvfs(1024 * GiB, 64 * MiB)))
        self.assertEqual(
            freeSpaceProblem("/spool", statvfs=fakeStatvfs(1024 * GiB, 64 * MiB - 4096)),
            "spool /spool: no space left: 64.0 MiB free, below the 64.0 MiB margin",
        )
        self.assertEqual(
            freeSpaceProblem("/spool", statvfs=fakeStatvfs(1024 * GiB, 12 * MiB)),
            "spool /spool: no space left: 12.0 MiB free, below the 64.0 MiB margin",
        )

    def test_smallFileSystem(self) -> None:
        """
        On a file system under 6.4 GiB the margin is 1% of it.
        """
        statvfs = fakeStatvfs(1 * GiB, 11 * MiB)
        self.assertEqual(freeSpace("/s", statvfs).margin, int(GiB * 0.01))
        self.assertIsNone(freeSpaceProblem("/s", statvfs=statvfs))
        self.assertEqual(
            freeSpaceProblem("/s", "queue", fakeStatvfs(1 * GiB, 10 * MiB)),
            "queue /s: no space left: 10.0 MiB free, below the 10.2 MiB margin",
        )
        self.assertEqual(
            freeSpaceProblem("/s", statvfs=fakeStatvfs(1 * GiB, 0)),
            "spool /s: no space left: 0 B free, below the 10.2 MiB margin",
        )

    def test_constants(self) -> None:
        """
        The documented margins.
        """
        self.assertEqual(diskspace.MARGIN_FRACTION, 0.01)
        self.assertEqual(diskspace.MARGIN_BYTES, 64 * MiB)
        self.assertEqual(diskspace.INODE_MARGIN, 1000)

    def test_inodes(self) -> None:
        """
        Too few inodes left is not ready either; a file system that does not
        count inodes (zero in all) is only judged by its space.
        """
        plenty = 10 * GiB
        self.assertEqual(
            freeSpaceProblem("/s", statvfs=fakeStatvfs(plenty, plenty, 1_000_000, 999)),
            "spool /s: no inodes left: 999 free, below the margin of 1000",
        )
        self.assertIsNone(
            freeSpaceProblem("/s", statvfs=fakeStatvfs(plenty, plenty, 1_000_000, 1000))
        )
        self.assertEqual(
            freeSpaceProblem("/s", statvfs=fakeStatvfs(plenty, plenty, 5000, 49)),
            "spool /s: no inodes left: 49 free, below the margin of 50",
        )
        room = freeSpace("/s", fakeStatvfs(plenty, plenty, 0, 0))
        self.assertIsNone(room.inodesAvailable)
        self.assertTrue(room.enough)
        self.assertIsNone(freeSpaceProblem("/s", statvfs=fakeStatvfs(plenty, plenty, 0, 0)))

    def test_statvfsFails(self) -> None:
        """
        A file system that cannot be asked is not ready, with the reason.
        """

        def broken(path: str) -> os.statvfs_result:
            raise OSError(errno.EIO, "Input/output error")

        self.assertEqual(
            freeSpaceProblem("/s", statvfs=broken),
            "spool /s: cannot check free space: Input/output error",
        )

    def test_formatBytes(self) -> None:
        """
        Sizes for people.
        """
        self.assertEqual(
            [diskspace.formatBytes(n) for n in (0, 1023, 1024, 1536, 64 * MiB, 3 * GiB, 2**60)],
            ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "64.0 MiB", "3.0 GiB", "1048576.0 TiB"],
        )


class SpoolTests(SynchronousTestCase):
    """
    L{Spool.isWritable} asks about free space.
    """

    def setUp(self) -> None:
        self.spool = Spool(self.mktemp(), Clock())
        self.spool.open()

    def test_ready(self) -> None:
        """
        A writable spool with room is ready.
        """
        self.assertEqual(self.spool.isWritable(), (True, ""))

    def test_full(self) -> None:
        """
        A spool whose file system is below the margin is not ready, and the
        reason names the spool.
        """
        statvfs = fakeStatvfs(100 * MiB, 512 * 1024)
        ready, reason = self.spool.isWritable(statvfs)
        self.assertFalse(ready)
        self.assertEqual(
            reason,
            f"spool {self.spool.path}: no space left: 512.0 KiB free, below the 1.0 MiB margin",
        )
        self.assertEqual(statvfs.paths, [self.spool.path])


class _Child(ProcessProtocol):
    """
    The L{tests.support.fullspool} process: its output, line by line.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.lines: deque[bytes] = deque()
        self.waiting: deque[Deferred[bytes]] = deque()
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()
        self.running = True

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if self.waiting:
                self.waiting.popleft().callback(line)
            else:
                self.lines.append(line)

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-4000:]

    def nextLine(self) -> Deferred[bytes]:
        if self.lines:
            d: Deferred[bytes] = Deferred()
            d.callback(self.lines.popleft())
            return d
        if not self.running:
            return fail(EOFError(self.stderr.decode("utf-8", "replace")))
        d = Deferred()
        self.waiting.append(d)
        return d.addTimeout(60, reactor)

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        while self.waiting:
            self.waiting.popleft().errback(EOFError(self.stderr.decode("utf-8", "replace")))
        self.ended.callback(None)


class FullFileSystemTests(TestCase):
    """
    A real file system filled up: a 4 MiB tmpfs, mounted in a mount
    namespace of its own by a child process (so this works as root and
    as any user allowed to make user namespaces, and the host never sees
    the mount), with the spool on it behind the real C{/livez},
    C{/readyz} and C{/healthz}.
    """

    @inlineCallbacks
    def start(self):
        """
        Start the child and wait until it serves.
        """
        unshare = shutil.which("unshare")
        if unshare is None or shutil.which("mount") is None:
            self.fail("this test needs unshare and mount (Debian's util-linux and mount)")
        mountPoint = os.path.abspath(self.mktemp())
        os.makedirs(mountPoint)
        roots = {
            os.path.dirname(os.path.dirname(os.path.abspath(m.__file__ or "")))
            for m in (gopherpost, tests)
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [*sorted(roots), *filter(None, [env.get("PYTHONPATH")])]
        )
        self.child = _Child()
        self.process = reactor.spawnProcess(
            self.child,
            unshare,
            [
                unshare,
                "--user",
                "--map-root-user",
                "--mount",
                sys.executable,
                "-m",
                "tests.support.fullspool",
                mountPoint,
            ],
            env=env,
        )
        self.addCleanup(self.stopChild)
        try:
            first = yield self.child.nextLine()
        except EOFError as e:
            self.fail(
                "the fullspool child ended before it was ready; it needs a mount "
                f"namespace of its own (unshare --user --map-root-user --mount): {e}"
            )
        if not first.startswith(b"port "):
            self.fail(
                "the fullspool child could not mount a tmpfs in a mount namespace of its "
                f"own (unshare --user --map-root-user --mount): {first.decode()} "
                f"{self.child.stderr.decode('utf-8', 'replace')}"
            )
        self.base = b"http://127.0.0.1:" + first.split()[1]
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=pool)

    def stopChild(self) -> Deferred[None]:
        """
        Close the child's input (it exits then); kill it if it has not
        ended 20 seconds later.
        """
        if not self.child.running:
            return self.child.ended

        def kill() -> None:
            if self.child.running:
                self.process.signalProcess("KILL")

        def ended(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        self.process.closeStdin()
        killer = reactor.callLater(20, kill)
        return self.child.ended.addBoth(ended)

    @inlineCallbacks
    def command(self, command: str):
        """
        Run one command in the child; its JSON answer.
        """
        self.process.write(command.encode("ascii") + b"\n")
        line = yield self.child.nextLine()
        answer = json.loads(line)
        self.assertNotIn("error", answer)
        return answer

    @inlineCallbacks
    def get(self, path: bytes):
        """
        C{GET path} from the child's web server: C{(code, body)}.
        """
        response = yield self.agent.request(b"GET", self.base + path)
        body = yield readBody(response).addTimeout(10, reactor)
        return (response.code, body)

    @inlineCallbacks
    def assertReady(self):
        for path in (b"/readyz", b"/healthz", b"/livez"):
            code, body = yield self.get(path)
            self.assertEqual(code, 200, path)

    @inlineCallbacks
    def assertNotReady(self, reason: str):
        for path in (b"/readyz", b"/healthz"):
            code, body = yield self.get(path)
            self.assertEqual(code, 503, path)
            self.assertIn(reason.encode(), body, path)
        code, body = yield self.get(b"/livez")
        self.assertEqual((code, body), (200, b"OK\n"))

    @inlineCallbacks
    def test_noSpace(self):
        """
        Filled to ENOSPC, the spool is not ready; with a little freed it
        can write again but is still below the margin (1% of 4 MiB); with
        more freed it is ready again.
        """
        yield self.start()
        answer = yield self.command("check")
        self.assertEqual(answer, {"ready": [True, ""], "write": "ok"})
        yield self.assertReady()

        answer = yield self.command("fill")
        self.assertEqual(answer["write"], "ENOSPC")
        self.assertFalse(answer["ready"][0])
        self.assertRegex(
            answer["ready"][1], r"^spool \S+: no space left: .* free, below the 41.0 KiB margin$"
        )
        yield self.assertNotReady("no space left")

        answer = yield self.command("release 16384")
        self.assertEqual(answer["write"], "ok")
        self.assertFalse(answer["ready"][0])
        self.assertIn("16.0 KiB free, below the 41.0 KiB margin", answer["ready"][1])
        yield self.assertNotReady("16.0 KiB free")

        answer = yield self.command("release 1048576")
        self.assertEqual(answer, {"ready": [True, ""], "write": "ok"})
        yield self.assertReady()

    @inlineCallbacks
    def test_noInodes(self):
        """
        With every inode used, the spool is not ready.
        """
        yield self.start()
        answer = yield self.command("inodes")
        self.assertEqual(answer["write"], "ENOSPC")
        self.assertFalse(answer["ready"][0])
        self.assertIn("no inodes left: 0 free", answer["ready"][1])
        yield self.assertNotReady("no inodes left")
        answer = yield self.command("uninodes")
        self.assertEqual(answer, {"ready": [True, ""], "write": "ok"})
        yield self.assertReady()

    @inlineCallbacks
    def test_readOnly(self):
        """
        On a file system remounted read-only, the spool is not ready.
        """
        yield self.start()
        answer = yield self.command("readonly")
        self.assertEqual(answer["write"], "EROFS")
        self.assertFalse(answer["ready"][0])
        self.assertRegex(answer["ready"][1], r"^spool \S+/tmp is not writable$")
        yield self.assertNotReady("is not writable")
        answer = yield self.command("readwrite")
        self.assertEqual(answer, {"ready": [True, ""], "write": "ok"})
        yield self.assertReady()
