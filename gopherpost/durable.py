# -*- test-case-name: tests.test_durable -*-
"""
Small blocking helpers for writing files that survive a crash: write,
fsync, rename, fsync the directory.  Whatever fsyncs waits for the disk:
call it from a thread or at start-up, never on the reactor's hot path.
L{writeFile} with C{sync=False} only copies into the page cache (a later
C{syncfs} makes it durable), which the spool and the relay do on the
reactor thread for small files.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import BinaryIO

__all__ = [
    "writeFile",
    "writeOpen",
    "readFile",
    "openForReading",
    "replaceFile",
    "fsyncDirectory",
    "loadSyncfs",
]

#: C{O_NOATIME} where the platform has it (Linux), else nothing.
_NOATIME = getattr(os, "O_NOATIME", 0)


def writeFile(path: str, data: bytes, mode: int = 0o640, sync: bool = True) -> None:
    """
    Create (or truncate) C{path} with C{data}, fsynced unless C{sync} is
    false (the caller then makes it durable some other way).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def openForReading(path: str) -> BinaryIO:
    """
    C{open(path, "rb")}, without updating the file's access time where the
    system allows it (C{O_NOATIME}: the file's owner, or root).

    On a file system mounted C{relatime} (the default), the first read of a
    file written since its last read updates its access time: its inode
    becomes dirty and is written by the next journal commit, that is, by
    the next C{fsync}/C{syncfs} of whoever commits mail on that file system.
    Readers of freshly spooled messages (the relay, the message index, the
    webhook courier) would so add an inode write per file to the SMTP
    side's syncs.

    @raise OSError: as C{open(2)} does (C{FileNotFoundError} when it does
        not exist).
    """
    return os.fdopen(_openNoAtime(path), "rb")


def _openNoAtime(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | _NOATIME)
    except PermissionError:
        if not _NOATIME:
            raise
        # Neither the owner nor privileged: O_NOATIME is refused (EPERM).
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def readFile(path: str) -> bytes:
    """
    The whole content of C{path}, read without updating its access time
    (see L{openForReading}).

    @raise OSError: as C{open(2)} and C{read(2)} do (C{FileNotFoundError}
        when it does not exist).
    """
    fd = _openNoAtime(path)
    try:
        pieces = []
        while True:
            piece = os.read(fd, 1 << 20)
            if not piece:
                break
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        os.close(fd)


def fsyncDirectory(path: str) -> None:
    """
    Make the entries of directory C{path} (creations, renames) durable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replaceFile(path: str, data: bytes, mode: int = 0o640) -> None:
    """
    Atomically and durably make C{path} hold C{data}: a reader sees the old
    content or the new, never a mix, also after a crash.
    """
    temporary = f"{path}.tmp"
    writeFile(temporary, data, mode)
    os.replace(temporary, path)
    fsyncDirectory(os.path.dirname(os.path.abspath(path)))


def loadSyncfs() -> Callable[[str], None] | None:
    """
    C{syncfs(2)} for the file system holding a directory, or L{None}.

    Only on Linux 5.8 and later: before that, C{syncfs} did not report
    write-back errors, and durability needs them reported.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if function(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error))
        finally:
            os.close(fd)

    return syncfs


def writeOpen(path: str, data: bytes | bytearray, mode: int = 0o640) -> int:
    """
    Create (or truncate) C{path} with C{data}, not synced, and return its
    open descriptor (the caller syncs it some way and closes it).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd
