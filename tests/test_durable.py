"""
Tests for L{gopherpost.durable}.
"""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from gopherpost.durable import (
    fsyncDirectory,
    loadSyncfs,
    openForReading,
    readFile,
    replaceFile,
    writeFile,
)
from tests.support.accesstime import makeStale, plainReadUpdates


class DurableTests(SynchronousTestCase):
    """
    Writing files that survive a crash.
    """

    def test_replaceFile(self) -> None:
        """
        C{replaceFile} leaves the new content with the given mode and no
        temporary file.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "f")
        replaceFile(path, b"one", 0o600)
        replaceFile(path, b"two", 0o600)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"two")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(directory), ["f"])

    def test_writeFileAndSync(self) -> None:
        """
        C{writeFile} writes all of the data; directories and file systems
        can be synced.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "big")
        data = os.urandom(3 * 1024 * 1024)
        writeFile(path, data, sync=False)
        fsyncDirectory(directory)
        syncfs = loadSyncfs()
        if syncfs is not None:
            syncfs(directory)
            self.assertRaises(OSError, syncfs, path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)

    def test_readFile(self) -> None:
        """
        L{readFile} reads a whole file, larger than one read too, and
        leaves its access time alone where the system allows (Linux, the
        file's owner): its inode is not dirtied for the next journal commit.
        """
        path = self.mktemp()
        data = os.urandom(3 * 1024 * 1024 + 5)
        writeFile(path, data, sync=False)
        old = makeStale(path)
        self.assertEqual(readFile(path), data)
        if getattr(os, "O_NOATIME", 0):
            self.assertEqual(os.stat(path).st_atime, old)
        self.assertRaises(FileNotFoundError, readFile, path + ".missing")

    def test_openForReading(self) -> None:
        """
        L{openForReading} opens for reading in binary, and a read through it
        leaves the access time alone where a plain C{open()} would update
        it (C{relatime}, the default mount option).
        """
        directory = self.mktemp()
        os.makedirs(directory)
        if not plainReadUpdates(directory):
            raise SkipTest("this file system never updates access times (noatime)")
        path = os.path.join(directory, "message")
        writeFile(path, b"Subject: x\r\n\r\nbody\r\n", sync=False)
        old = makeStale(path)
        with openForReading(path) as f:
            self.assertEqual(f.read(), b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(os.stat(path).st_atime, old)
        self.assertRaises(FileNotFoundError, openForReading, path + ".missing")
