# -*- test-case-name: tests.test_index_mailbox -*-
"""
Which indexed messages are to be pruned: the seam for retention.

Capture mode keeps the newest C{SMTP_CAPTURE_MAX_MESSAGES} (500, Mailpit's
default).  Issue 14's general retention (C{SMTP_RETENTION_DAYS},
C{SMTP_RETENTION_MAX_MESSAGES}) plugs in as more L{IRetentionPolicy}
providers (L{KeepDays}, L{KeepNewest}) combined with L{AllOf}; whatever a
policy selects, a message still queued for a remote recipient is never
removed (L{gopherpost.index.removal}).
"""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import Interface, implementer

from gopherpost.index.database import IndexDatabase

__all__ = ["IRetentionPolicy", "KeepNewest", "KeepDays", "AllOf", "PRUNE_BATCH"]

#: Messages one pruning pass selects at most (the next pass takes more).
PRUNE_BATCH = 1000


class IRetentionPolicy(Interface):
    """
    Selects messages past their retention.
    """

    def expired(database: IndexDatabase, now: float) -> list[tuple[str, str]]:
        """
        C{(id, dateDirectory)} of up to L{PRUNE_BATCH} messages to remove,
        oldest first (blocking: runs in the index's writer thread).
        """


@implementer(IRetentionPolicy)
class KeepNewest:
    """
    Keep the newest C{count} messages.
    """

    def __init__(self, count: int) -> None:
        self.count = count

    def expired(self, database: IndexDatabase, now: float) -> list[tuple[str, str]]:
        total, _ = database.counts()
        excess = total - self.count
        if self.count <= 0 or excess <= 0:
            return []
        return database.oldest(min(excess, PRUNE_BATCH))


@implementer(IRetentionPolicy)
class KeepDays:
    """
    Keep messages received in the last C{days} days.
    """

    def __init__(self, days: float) -> None:
        self.days = days

    def expired(self, database: IndexDatabase, now: float) -> list[tuple[str, str]]:
        if self.days <= 0:
            return []
        return database.receivedBefore(now - self.days * 86400, PRUNE_BATCH)


@implementer(IRetentionPolicy)
class AllOf:
    """
    Every message any of C{policies} selects.
    """

    def __init__(self, policies: Sequence[IRetentionPolicy]) -> None:
        self.policies = list(policies)

    def expired(self, database: IndexDatabase, now: float) -> list[tuple[str, str]]:
        found: dict[str, str] = {}
        for policy in self.policies:
            for id, dateDirectory in policy.expired(database, now):
                found.setdefault(id, dateDirectory)
        return sorted(found.items())[:PRUNE_BATCH]
