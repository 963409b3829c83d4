# -*- test-case-name: tests.test_index_service -*-
"""
What the server and its index worker process say to each other: AMP over
the worker's standard input and output.

Server -> worker: L{IndexMessages} (messages the spool committed).
Worker -> server: L{Ready} (the database is open, the server may read
it), L{Indexed} (messages now in the index).  None needs an answer.
"""

from __future__ import annotations

from twisted.protocols import amp

__all__ = ["IndexMessages", "Ready", "Indexed", "encodeItem", "decodeItem", "MAX_ITEMS"]

#: Items per command at most (an AMP value is at most 64 KiB).
MAX_ITEMS = 500


def encodeItem(dateDirectory: str, queueId: str) -> str:
    """
    One message, as the commands carry it: C{dateDirectory/queueId}.
    """
    return f"{dateDirectory}/{queueId}"


def decodeItem(item: str) -> tuple[str, str]:
    """
    The inverse of L{encodeItem}.
    """
    dateDirectory, _, queueId = item.partition("/")
    return dateDirectory, queueId


class IndexMessages(amp.Command):
    """
    Index these committed messages (C{dateDirectory/queueId} each).
    """

    arguments = [(b"items", amp.ListOf(amp.Unicode()))]
    requiresAnswer = False


class Ready(amp.Command):
    """
    The index is open (C{rebuilt}: it was made anew and is filling up).
    """

    arguments = [(b"rebuilt", amp.Boolean())]
    requiresAnswer = False


class Indexed(amp.Command):
    """
    These messages are now in the index (C{catchUp}: found at start-up,
    not just committed).
    """

    arguments = [(b"ids", amp.ListOf(amp.Unicode())), (b"catchUp", amp.Boolean())]
    requiresAnswer = False
