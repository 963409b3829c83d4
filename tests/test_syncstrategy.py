"""
Tests for L{gopherpost.syncstrategy}: which system calls each strategy
makes, in which order, and which strategy a file system gets.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost import syncstrategy
from gopherpost.syncstrategy import (
    FileSync,
    FileSystemSync,
    ISyncStrategy,
    RangeSync,
    chooseSyncStrategy,
    journaledFileSystem,
    loadSyncFileRange,
    strategyNamed,
)


class Recorder:
    """
    Records the system calls a strategy makes.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.calls: list[tuple[Any, ...]] = []
        testCase.patch(syncstrategy, "fsyncDirectory", lambda d: self.calls.append(("fsyncdir", d)))
        testCase.patch(os, "fdatasync", lambda fd: self.calls.append(("fdatasync", fd)))

    def syncFileRange(self, fd: int, flags: int) -> None:
        self.calls.append(("range", fd, flags))

    def syncfs(self, path: str) -> None:
        self.calls.append(("syncfs", path))


class StrategyTests(SynchronousTestCase):
    """
    The system calls of each strategy.
    """

    def test_interface(self) -> None:
        """
        Every strategy provides L{ISyncStrategy}.
        """
        recorder = Recorder(self)
        for strategy in (
            RangeSync(recorder.syncFileRange),
            FileSystemSync(recorder.syncfs, "/spool"),
            FileSync(),
        ):
            self.assertTrue(verifyObject(ISyncStrategy, strategy))

    def test_rangeSync(self) -> None:
        """
        L{RangeSync} starts the write-out of every file, then waits for each
        (C{SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER}), then fsyncs
        each directory: the journal commit comes after all the data.
        """
        recorder = Recorder(self)
        RangeSync(recorder.syncFileRange).sync([3, 4], ["/spool/a", "/spool"])
        self.assertEqual(
            recorder.calls,
            [
                ("range", 3, 2),
                ("range", 4, 2),
                ("range", 3, 7),
                ("range", 4, 7),
                ("fsyncdir", "/spool/a"),
                ("fsyncdir", "/spool"),
            ],
        )

    def test_rangeSyncManyFiles(self) -> None:
        """
        With more than C{manyFiles} files, L{RangeSync} makes one C{syncfs}
        instead (when it has one), which covers the directories too.
        """
        recorder = Recorder(self)
        strategy = RangeSync(recorder.syncFileRange, recorder.syncfs, "/spool", manyFiles=2)
        strategy.sync([3, 4, 5], ["/spool/a"])
        self.assertEqual(recorder.calls, [("syncfs", "/spool")])
        del recorder.calls[:]
        strategy.sync([3, 4], ["/spool/a"])
        self.assertEqual([c[0] for c in recorder.calls], ["range"] * 4 + ["fsyncdir"])
        del recorder.calls[:]
        RangeSync(recorder.syncFileRange, None, "/spool", manyFiles=2).sync([3, 4, 5], [])
        self.assertEqual([c[0] for c in recorder.calls], ["range"] * 6)

    def test_fileSystemSync(self) -> None:
        """
        L{FileSystemSync} makes one C{syncfs} of the spool's file system per
        call, none when there is nothing to sync.
        """
        recorder = Recorder(self)
        strategy = FileSystemSync(recorder.syncfs, "/spool")
        strategy.sync([3, 4], ["/spool/a"])
        strategy.sync([], ["/spool/a"])
        strategy.sync([], [])
        self.assertEqual(recorder.calls, [("syncfs", "/spool"), ("syncfs", "/spool")])

    def test_fileSync(self) -> None:
        """
        L{FileSync} fdatasyncs every file, then fsyncs every directory.
        """
        recorder = Recorder(self)
        FileSync().sync([3, 4], ["/spool/a"])
        self.assertEqual(
            recorder.calls, [("fdatasync", 3), ("fdatasync", 4), ("fsyncdir", "/spool/a")]
        )

    def test_syncFileRangeErrors(self) -> None:
        """
        The real C{sync_file_range} works on an open file and raises
        L{OSError} for a bad descriptor.
        """
        syncFileRange = loadSyncFileRange()
        if syncFileRange is None:
            self.assertNotEqual(os.uname().sysname, "Linux")
            return
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"data")
            f.flush()
            syncFileRange(f.fileno(), 7)
        fd = os.open(path, os.O_RDONLY)
        os.close(fd)
        self.assertRaises(OSError, syncFileRange, fd, 7)

    def test_named(self) -> None:
        """
        L{strategyNamed} gives each strategy by name; an unknown name is a
        L{ValueError}.
        """
        self.assertEqual(strategyNamed("fsync", "/").name, "fsync")
        if loadSyncFileRange() is not None:
            self.assertEqual(strategyNamed("range", "/").name, "range")
        self.assertRaises(ValueError, strategyNamed, "sometimes", "/")


class FileSystemTests(SynchronousTestCase):
    """
    Telling the spool's file system from sysfs and procfs.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.sysfs = os.path.join(self.root, "sys")
        self.procfs = os.path.join(self.root, "proc")
        self.spool = os.path.join(self.root, "spool")
        os.makedirs(self.spool)
        device = os.stat(self.spool).st_dev
        blocks = os.path.join(self.sysfs, "dev", "block")
        os.makedirs(blocks)
        os.makedirs(os.path.join(self.sysfs, "devices", "virtual", "block", "disk7"))
        os.symlink(
            "../../devices/virtual/block/disk7",
            os.path.join(blocks, f"{os.major(device)}:{os.minor(device)}"),
        )

    def make(self, *parts: str) -> None:
        os.makedirs(os.path.join(self.root, *parts))

    def journaled(self) -> str | None:
        return journaledFileSystem(self.spool, self.sysfs, self.procfs)

    def test_ext4WithJournal(self) -> None:
        """
        ext4 (or ext3) with its journal is journaled.
        """
        self.make("sys", "fs", "ext4", "disk7")
        self.make("proc", "fs", "jbd2", "disk7-8")
        self.assertEqual(self.journaled(), "ext4")

    def test_ext4WithoutJournal(self) -> None:
        """
        ext4 without a journal (or with one on another device) is not.
        """
        self.make("sys", "fs", "ext4", "disk7")
        self.make("proc", "fs", "jbd2", "disk8-8")
        self.assertIsNone(self.journaled())

    def test_xfs(self) -> None:
        """
        XFS always has its log.
        """
        self.make("sys", "fs", "xfs", "disk7")
        self.assertEqual(self.journaled(), "xfs")

    def test_otherFileSystem(self) -> None:
        """
        A block device that is neither (btrfs, vfat...) is not journaled.
        """
        self.make("sys", "fs", "ext4", "disk1")
        self.make("proc", "fs", "jbd2", "disk1-8")
        self.assertIsNone(self.journaled())

    def test_noBlockDevice(self) -> None:
        """
        A file system without a block device of its own (tmpfs, overlayfs,
        NFS, btrfs's anonymous devices) is not journaled.
        """
        self.assertIsNone(journaledFileSystem(self.spool, os.path.join(self.root, "nosys")))
        self.assertIsNone(journaledFileSystem(os.path.join(self.root, "missing")))

    def test_choose(self) -> None:
        """
        A journaled file system gets L{RangeSync}; others L{FileSystemSync},
        or L{FileSync} without C{syncfs}; without C{sync_file_range},
        journaled ones get L{FileSystemSync} too.
        """

        def syncFileRange(fd: int, flags: int) -> None:
            pass

        def syncfs(path: str) -> None:
            pass

        def choose(journaled: str | None, hasRange: bool, hasSyncfs: bool) -> str:
            return chooseSyncStrategy(
                self.spool,
                lambda path: journaled,
                lambda: syncFileRange if hasRange else None,
                lambda: syncfs if hasSyncfs else None,
            ).name

        self.assertEqual(choose("ext4", True, True), "range")
        self.assertEqual(choose("xfs", True, False), "range")
        self.assertEqual(choose(None, True, True), "syncfs")
        self.assertEqual(choose("ext4", False, True), "syncfs")
        self.assertEqual(choose(None, True, False), "fsync")
