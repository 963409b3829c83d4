"""
Checks that a reader of spool files leaves their access times alone
(see L{gopherpost.durable.openForReading}).
"""

from __future__ import annotations

import os

__all__ = ["makeStale", "plainReadUpdates"]


def makeStale(path: str) -> float:
    """
    Set C{path}'s access time well before its modification time, as a
    freshly written file's is for C{relatime}: the next read that updates
    access times at all updates it.

    @return: that access time.
    """
    modified = os.stat(path).st_mtime
    stale = modified - 1000
    os.utime(path, (stale, modified))
    return stale


def plainReadUpdates(directory: str) -> bool:
    """
    Whether a plain C{open()} and read in C{directory} updates the access
    time (not on a file system mounted C{noatime}): only then does "the
    access time is kept" say something about the reader under test.
    """
    probe = os.path.join(directory, ".atime-probe")
    with open(probe, "wb") as f:
        f.write(b"probe")
    stale = makeStale(probe)
    with open(probe, "rb") as f:
        f.read()
    updated = os.stat(probe).st_atime != stale
    os.remove(probe)
    return updated
