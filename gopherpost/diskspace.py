# -*- test-case-name: tests.test_diskspace -*-
"""
Whether a file system has room for more mail: the free-space check behind
the readiness probes (C{/readyz}, C{/healthz}).

A spool is "full" before it is full: when the space left to unprivileged
processes (C{df}'s "Avail") falls below a margin, 1% of the file system or
64 MiB, whichever is smaller, or when almost no inodes are left (every
message takes a few files).  Reporting "not ready" then lets a load balancer
or an orchestrator send clients elsewhere while the margin still holds the
messages being received.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "INODE_MARGIN",
    "MARGIN_BYTES",
    "MARGIN_FRACTION",
    "FreeSpace",
    "StatVFS",
    "StatVFSFunction",
    "freeSpace",
    "freeSpaceProblem",
]

#: The free-space margin: this fraction of the file system ...
MARGIN_FRACTION = 0.01

#: ... but never more than this many bytes.
MARGIN_BYTES = 64 * 1024 * 1024

#: The free-inode margin: 1% of the inodes, but never more than this many.
INODE_MARGIN = 1000


class StatVFS(Protocol):
    """
    The fields of C{os.statvfs}'s result that the check reads.
    """

    @property
    def f_frsize(self) -> int: ...

    @property
    def f_blocks(self) -> int: ...

    @property
    def f_bavail(self) -> int: ...

    @property
    def f_files(self) -> int: ...

    @property
    def f_favail(self) -> int: ...


#: C{os.statvfs}, or a fake with the same signature.
StatVFSFunction = Callable[[str], StatVFS]


@dataclass(frozen=True)
class FreeSpace:
    """
    Room left on one file system, and the margins it is held to.

    @ivar available: bytes an unprivileged process may still write.
    @ivar size: the file system's size in bytes.
    @ivar margin: the least C{available} may be.
    @ivar inodesAvailable: inodes an unprivileged process may still use;
        L{None} when the file system does not count them (btrfs, some
        network file systems).
    @ivar inodeMargin: the least C{inodesAvailable} may be.
    """

    available: int
    size: int
    margin: int
    inodesAvailable: int | None
    inodeMargin: int

    @property
    def enough(self) -> bool:
        """
        Whether both the space and the inodes are above their margins.
        """
        if self.available < self.margin:
            return False
        return self.inodesAvailable is None or self.inodesAvailable >= self.inodeMargin


def freeSpace(path: str, statvfs: StatVFSFunction | None = None) -> FreeSpace:
    """
    How much room the file system holding C{path} has.

    @param path: any file or directory on the file system.
    @param statvfs: C{os.statvfs} (the default), or a fake in tests.
    @raise OSError: when the file system cannot be asked.
    """
    result = (statvfs or os.statvfs)(path)
    size = result.f_blocks * result.f_frsize
    margin = min(int(size * MARGIN_FRACTION), MARGIN_BYTES)
    inodes: int | None = None
    inodeMargin = 0
    if result.f_files > 0:
        inodes = result.f_favail
        inodeMargin = max(1, min(int(result.f_files * MARGIN_FRACTION), INODE_MARGIN))
    return FreeSpace(result.f_bavail * result.f_frsize, size, margin, inodes, inodeMargin)


def freeSpaceProblem(
    path: str, what: str = "spool", statvfs: StatVFSFunction | None = None
) -> str | None:
    """
    Why the file system holding C{path} cannot take more mail, or L{None}
    when it can.

    @param path: any file or directory on the file system.
    @param what: how the reason names C{path}'s owner.
    @param statvfs: C{os.statvfs} (the default), or a fake in tests.
    @return: one line for a readiness probe, e.g. C{"spool /var/spool/x:
        no space left: 12.0 MiB free, below the 64.0 MiB margin"}.
    """
    try:
        room = freeSpace(path, statvfs)
    except OSError as e:
        return f"{what} {path}: cannot check free space: {e.strerror or e}"
    if room.available < room.margin:
        return (
            f"{what} {path}: no space left: {formatBytes(room.available)} free, "
            f"below the {formatBytes(room.margin)} margin"
        )
    if room.inodesAvailable is not None and room.inodesAvailable < room.inodeMargin:
        return (
            f"{what} {path}: no inodes left: {room.inodesAvailable} free, "
            f"below the margin of {room.inodeMargin}"
        )
    return None


def formatBytes(count: int) -> str:
    """
    C{count} bytes for people: C{"512 B"}, C{"20.0 KiB"}, C{"64.0 MiB"}.
    """
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
