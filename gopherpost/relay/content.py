# -*- test-case-name: tests.test_relay_content,tests.test_relay_integration -*-
"""
What the relay sends for a spooled message: its content, read from the
spool (small files on the reactor thread, large ones in a thread), with the
C{DKIM-Signature} header computed once when the message is queued.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from gopherpost.durable import openForReading, readFile

__all__ = ["INLINE_READ_BUDGET", "readContents", "readSmall", "readAll", "dkimHeader"]

_log = Logger()

#: Bytes of message content one batch reads on the reactor thread at most;
#: larger messages are read in the thread pool.  A thread hop costs more
#: than reading a few small files from the page cache.
INLINE_READ_BUDGET = 1024 * 1024


def readContents(
    paths: Sequence[str], runInThread: Callable[..., Deferred[Any]]
) -> Deferred[list[bytes]]:
    """
    The contents of spool files: those that fit in L{INLINE_READ_BUDGET}
    read now, the others in one thread hop.

    @param runInThread: C{runInThread(f, *args) -> Deferred}.
    """
    contents = readSmall(paths, INLINE_READ_BUDGET)
    large = [path for path, content in zip(paths, contents) if content is None]
    if not large:
        return succeed([content for content in contents if content is not None])

    def merge(read: list[bytes]) -> list[bytes]:
        rest = iter(read)
        return [next(rest) if content is None else content for content in contents]

    return runInThread(readAll, large).addCallback(merge)


def readSmall(paths: Sequence[str], budget: int) -> list[bytes | None]:
    """
    Read spool files now, on the reactor thread, while their sizes add up
    to at most C{budget} bytes; L{None} for each file left to L{readAll}.
    """
    contents: list[bytes | None] = []
    for path in paths:
        with openForReading(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > budget:
                contents.append(None)
                continue
            budget -= size
            contents.append(f.read())
    return contents


def readAll(paths: Sequence[str]) -> list[bytes]:
    """
    Read several spool files (in a thread).
    """
    return [readFile(path) for path in paths]


def dkimHeader(signer: Any, path: str, domain: str | None, queueId: str) -> str:
    """
    The C{DKIM-Signature} header (with its line end) for the message in
    C{path}, or C{""} when signing fails (logged: the message goes
    unsigned).  Blocking: run it in a thread.

    @param signer: a L{gopherpost.dkim.DKIMSigner}.
    @param domain: the domain to sign for (the sender's), or L{None}.
    """
    content = readFile(path)
    try:
        signed = signer.sign(content, domain)
    except Exception as e:
        _log.error(
            "DKIM signing of {queueId} failed, sending unsigned: {error}",
            queueId=queueId,
            error=e,
        )
        return ""
    if not signed.endswith(content):
        return ""
    return str(signed[: len(signed) - len(content)].decode("ascii"))
