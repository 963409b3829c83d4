# -*- test-case-name: tests.test_index_mailbox -*-
"""
Removing a message from the spool, durably (blocking: the index's writer
thread calls it).

The envelope goes first: it is the commit record, so once its removal is
on disk the message is gone for good, even if a crash leaves some of its
content files behind (start-up recovery removes content without an
envelope).  Then the content (one hard link per recipient) and the relay's
finished state, then one fsync of the date directory.

A message still queued for a remote recipient is not removed: the relay
queue owns it until every remote recipient is final (issue 14's retention
rules say the same).  This belongs in L{gopherpost.spool.Spool} once the
spool grows a removal of its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from gopherpost.durable import fsyncDirectory
from gopherpost.spool import Envelope, Spool

__all__ = ["relayPending", "removeMessages"]


def relayPending(spool: Spool, envelope: Envelope) -> bool:
    """
    Whether the relay queue still has work for the message: it has a
    remote recipient and its relay state is not finished (C{.relayed}).
    """
    if not envelope.relayRecipients:
        return False
    base = os.path.join(spool.path, envelope.dateDirectory, envelope.queueId)
    return not os.path.exists(base + ".relayed")


def removeMessages(
    spool: Spool, envelopes: Sequence[Envelope], relayRuns: bool = True
) -> tuple[list[Envelope], list[Envelope]]:
    """
    Remove messages from the spool.

    @param relayRuns: whether a relay queue runs (not in capture mode);
        without one, nothing is pending.
    @return: C{(removed, kept)}: kept are those still queued for a remote
        recipient.
    """
    removed: list[Envelope] = []
    kept: list[Envelope] = []
    directories: set[str] = set()
    for envelope in envelopes:
        if relayRuns and relayPending(spool, envelope):
            kept.append(envelope)
            continue
        directory = os.path.join(spool.path, envelope.dateDirectory)
        base = os.path.join(directory, envelope.queueId)
        paths = [base + ".envelope"]
        paths += [spool.messagePath(envelope, r) for r in envelope.recipients]
        paths += [base + ".relayed", base + ".relay"]
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        directories.add(directory)
        removed.append(envelope)
    for directory in directories:
        try:
            fsyncDirectory(directory)
        except FileNotFoundError:
            pass
    return removed, kept
