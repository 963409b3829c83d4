# -*- test-case-name: tests.test_syncstrategy -*-
"""
How the spool makes a commit step durable: which system calls, chosen once
for the file system that holds the spool.

A commit step (see L{gopherpost.spool}) hands its strategy the open files
whose data it wrote (messages' content and envelopes, under C{tmp/}) and
the directories in which it created names (links, renames, a new date
directory) for messages whose data an earlier call already covered.  One
call, L{ISyncStrategy.sync}, must:

  1. make every name created in C{directories} before the call durable;
  2. make the data of C{files} safe to name: once it returns, names created
     for those files and then made durable by a later call (1) find their
     data whole after a crash or a power failure.

The strategies:

L{RangeSync}, for journaled ext3/ext4 and for XFS (the usual Linux spool):
    C{sync_file_range(2)} writes every file's data to the device and waits
    for it, without a journal commit; one C{fsync} per directory then
    commits the journal once, and that commit (a cache flush first) makes
    durable everything logged before it: the names, and the block
    allocations and sizes of the data written earlier.  A message costs
    one journal commit, where C{fdatasync} of each file costs one per file.
L{FileSystemSync}, elsewhere on Linux 5.8+: one C{syncfs(2)} per call.
L{FileSync}, without C{syncfs}: C{fdatasync} of each file, C{fsync} of
    each directory (plain POSIX).

Every method blocks: the spool calls them in its sync thread.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence

from zope.interface import Attribute, Interface, implementer

from gopherpost.durable import fsyncDirectory, loadSyncfs

__all__ = [
    "ISyncStrategy",
    "RangeSync",
    "FileSystemSync",
    "FileSync",
    "loadSyncFileRange",
    "journaledFileSystem",
    "chooseSyncStrategy",
    "strategyNamed",
]

# sync_file_range(2) flags (linux/fs.h).
_WAIT_BEFORE = 1
_WRITE = 2
_WAIT_AFTER = 4

SyncFileRange = Callable[[int, int], None]


class ISyncStrategy(Interface):
    """
    Makes a commit step durable (see the module's docstring).
    """

    name = Attribute("A short name for logs and tests: range, syncfs or fsync.")

    def sync(files: Sequence[int], directories: Sequence[str]) -> None:
        """
        Make the names created in C{directories} durable, and the data of
        the open C{files} safe to name.

        @raise OSError: if the file system reports a write error; nothing
            of the step may then be acknowledged.
        """


def loadSyncFileRange() -> SyncFileRange | None:
    """
    C{sync_file_range(2)} as C{f(fd, flags)} over the whole file, or
    L{None} where the C library has none (not Linux).
    """
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def syncFileRange(fd: int, flags: int) -> None:
        if function(fd, 0, 0, flags) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))

    return syncFileRange


@implementer(ISyncStrategy)
class RangeSync:
    """
    Data by C{sync_file_range(2)}, names by one journal commit (C{fsync} of
    each directory).  Only for file systems whose journal commits are
    global and ordered (L{journaledFileSystem}): there a commit makes
    durable every change logged before it, whichever file it was for.

    A call with more than C{manyFiles} files makes one C{syncfs} instead,
    when there is one: the same disk work in one system call, where the
    thread would otherwise take the GIL back from a busy reactor after each
    of two calls per file.

    @param syncFileRange: from L{loadSyncFileRange}.
    @param syncfs: from L{gopherpost.durable.loadSyncfs}, or L{None}.
    @param path: a directory on the file system (the spool), for C{syncfs}.
    @param manyFiles: see above.
    """

    name = "range"

    def __init__(
        self,
        syncFileRange: SyncFileRange,
        syncfs: Callable[[str], None] | None = None,
        path: str = "",
        manyFiles: int = 32,
    ) -> None:
        self._syncFileRange = syncFileRange
        self._syncfs = syncfs
        self._path = path
        self._manyFiles = manyFiles

    def sync(self, files: Sequence[int], directories: Sequence[str]) -> None:
        if self._syncfs is not None and len(files) > self._manyFiles:
            self._syncfs(self._path)
            return
        # Start every write first, so that the device works on them
        # together; then wait for each.  WAIT_AFTER returns once the data
        # is on the device and its block allocation is logged (ext4
        # converts unwritten extents, XFS logs the new size, before the
        # pages leave writeback), so the commit below (or the next step's)
        # covers it.
        for fd in files:
            self._syncFileRange(fd, _WRITE)
        for fd in files:
            self._syncFileRange(fd, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
        for directory in directories:
            fsyncDirectory(directory)


@implementer(ISyncStrategy)
class FileSystemSync:
    """
    One C{syncfs(2)} of the spool's file system per call: all its dirty
    data, then its metadata.

    @param syncfs: from L{gopherpost.durable.loadSyncfs}.
    @param path: a directory on the file system (the spool).
    """

    name = "syncfs"

    def __init__(self, syncfs: Callable[[str], None], path: str) -> None:
        self._syncfs = syncfs
        self._path = path

    def sync(self, files: Sequence[int], directories: Sequence[str]) -> None:
        if files or directories:
            self._syncfs(self._path)


@implementer(ISyncStrategy)
class FileSync:
    """
    C{fdatasync} of every file, C{fsync} of every directory: plain POSIX,
    one journal commit or more per file.
    """

    name = "fsync"

    def sync(self, files: Sequence[int], directories: Sequence[str]) -> None:
        for fd in files:
            os.fdatasync(fd)
        for directory in directories:
            fsyncDirectory(directory)


def journaledFileSystem(path: str, sysfs: str = "/sys", procfs: str = "/proc") -> str | None:
    """
    C{"ext4"} if C{path} is on an ext3/ext4 file system with its journal
    (internal, as C{mkfs.ext4} makes it), C{"xfs"} on XFS, else L{None}
    (ext4 without a journal, btrfs, overlayfs, tmpfs, NFS, ...; anything
    that cannot be told).

    Read from sysfs and procfs: the block device of C{path}'s file system
    (C{/sys/dev/block/MAJOR:MINOR}), its C{/sys/fs/ext4/NAME} or
    C{/sys/fs/xfs/NAME} entry, and for ext4 its journal's
    C{/proc/fs/jbd2/NAME-8}.
    """
    try:
        device = os.stat(path).st_dev
        link = os.readlink(
            os.path.join(sysfs, "dev", "block", f"{os.major(device)}:{os.minor(device)}")
        )
    except OSError:
        return None
    name = os.path.basename(link)
    if os.path.isdir(os.path.join(sysfs, "fs", "xfs", name)):
        return "xfs"
    if os.path.isdir(os.path.join(sysfs, "fs", "ext4", name)) and os.path.isdir(
        os.path.join(procfs, "fs", "jbd2", f"{name}-8")
    ):
        return "ext4"
    return None


def strategyNamed(name: str, path: str) -> ISyncStrategy:
    """
    The strategy called C{name} (C{range}, C{syncfs}, C{fsync}) for the
    spool at C{path}, whatever its file system.

    @raise ValueError: for an unknown name, or one this system lacks.
    """
    if name == "range":
        syncFileRange = loadSyncFileRange()
        if syncFileRange is None:
            raise ValueError("sync_file_range is not available")
        return RangeSync(syncFileRange, loadSyncfs(), path)
    if name == "syncfs":
        syncfs = loadSyncfs()
        if syncfs is None:
            raise ValueError("syncfs is not available (Linux 5.8 or later)")
        return FileSystemSync(syncfs, path)
    if name == "fsync":
        return FileSync()
    raise ValueError(f"unknown sync strategy {name!r}")


def chooseSyncStrategy(
    path: str,
    journaled: Callable[[str], str | None] = journaledFileSystem,
    loadRange: Callable[[], SyncFileRange | None] = loadSyncFileRange,
    loadFileSystemSync: Callable[[], Callable[[str], None] | None] = loadSyncfs,
) -> ISyncStrategy:
    """
    The cheapest strategy that is safe for the file system holding C{path}.

    @param journaled: tells the file system (L{journaledFileSystem}).
    @param loadRange: finds C{sync_file_range} (L{loadSyncFileRange}).
    @param loadFileSystemSync: finds C{syncfs} (L{loadSyncfs}).
    """
    syncFileRange = loadRange()
    syncfs = loadFileSystemSync()
    if syncFileRange is not None and journaled(path) is not None:
        return RangeSync(syncFileRange, syncfs, path)
    if syncfs is not None:
        return FileSystemSync(syncfs, path)
    return FileSync()
