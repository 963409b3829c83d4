# -*- test-case-name: tests.test_queueview -*-
"""
A read-only view of the queue, from the spool's files: each message's
envelope (C{<queueid>.envelope}) with the relay's state of its remote
recipients (C{<queueid>.relay}, or C{.relayed} once every one is final;
see L{gopherpost.relay.state}).

It never writes, so C{gopherpostctl queue list} and C{queue show} work
with the server stopped (reading what a running server wrote is safe: each
state file is replaced atomically).  The server answers the same commands
from the same code.  It blocks: the server runs it in a thread.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gopherpost.relay.state import PENDING, MessageState
from gopherpost.spool import Envelope

__all__ = [
    "LOCAL",
    "RecipientView",
    "MessageView",
    "QueueView",
    "InvalidQueueId",
    "AGE_BUCKETS",
    "normalizeQueueId",
]

#: The status of a local recipient: delivered into the spool.
LOCAL = "local"

#: The upper bounds (minutes) of C{queue summary}'s age columns, as
#: Postfix's qshape has them; the last column is everything older.
AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)

_QUEUE_ID = re.compile(r"[0-9A-F]{8,40}")


class InvalidQueueId(ValueError):
    """
    Not something a queue id can be.
    """


def normalizeQueueId(text: str) -> str:
    """
    A queue id as the spool writes it (upper-case hex).

    @raise InvalidQueueId: it cannot be one (which also keeps any path out
        of file names built from it).
    """
    queueId = text.strip().upper()
    if not _QUEUE_ID.fullmatch(queueId):
        raise InvalidQueueId(f"{text!r} is not a queue id")
    return queueId


@dataclass(frozen=True)
class RecipientView:
    """
    One recipient of a spooled message.

    @ivar status: C{pending}, C{delivered}, C{failed} (bounced) or
        C{local} (delivered into the spool).
    @ivar nextAttempt: when the relay tries next (seconds since the
        epoch), for a pending recipient.
    """

    address: str
    status: str
    attempts: int = 0
    nextAttempt: float | None = None
    lastError: str = ""
    lastHost: str = ""

    def asJSON(self) -> dict[str, Any]:
        """
        For C{--json}.
        """
        return {
            "address": self.address,
            "status": self.status,
            "attempts": self.attempts,
            "nextAttempt": self.nextAttempt,
            "lastError": self.lastError,
            "lastHost": self.lastHost,
        }


@dataclass(frozen=True)
class MessageView:
    """
    One spooled message and where its recipients stand.
    """

    queueId: str
    dateDirectory: str
    received: float
    sender: str
    size: int
    clientAddress: str
    helo: str
    tls: bool
    recipients: tuple[RecipientView, ...]
    #: Put on hold by the operator (C{gopherpostctl queue hold}).
    held: bool = False

    @property
    def pending(self) -> tuple[RecipientView, ...]:
        """
        The recipients the relay still has to deliver.
        """
        return tuple(r for r in self.recipients if r.status == PENDING)

    @property
    def queued(self) -> bool:
        """
        Whether the message is in the relay queue (has a pending recipient).
        """
        return bool(self.pending)

    @property
    def state(self) -> str:
        """
        C{queued} (a recipient pending), C{held} (the same, on hold),
        C{local} (only local recipients) or C{finished} (every remote
        recipient delivered, bounced or deleted).
        """
        if self.queued:
            return "held" if self.held else "queued"
        if all(r.status == LOCAL for r in self.recipients):
            return "local"
        return "finished"

    def asJSON(self) -> dict[str, Any]:
        """
        For C{--json}.
        """
        return {
            "queueId": self.queueId,
            "state": self.state,
            "received": self.received,
            "sender": self.sender,
            "size": self.size,
            "client": self.clientAddress,
            "helo": self.helo,
            "tls": self.tls,
            "held": self.held,
            "recipients": [r.asJSON() for r in self.recipients],
        }


def _isDateDirectory(name: str) -> bool:
    return len(name) == 10 and name[4] == "-" and name[7] == "-" and name.replace("-", "").isdigit()


def _dateOfQueueId(queueId: str) -> str | None:
    try:
        micros = int(queueId[:13], 16)
        return time.strftime("%Y-%m-%d", time.gmtime(micros / 1_000_000))
    except (ValueError, OverflowError, OSError):
        return None


class QueueView:
    """
    Reads the queue of the spool at C{path}.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def dateDirectories(self) -> list[str]:
        """
        The spool's date directories, oldest first (none if the spool does
        not exist).
        """
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        # Any other error (permission denied) is for the caller to report.
        return sorted(n for n in names if _isDateDirectory(n))

    def messages(self, queuedOnly: bool = True) -> Iterator[MessageView]:
        """
        The spooled messages, oldest first: only those in the relay queue,
        unless C{queuedOnly} is false.  Unreadable files are skipped.
        """
        for dateDirectory in self.dateDirectories():
            directory = os.path.join(self.path, dateDirectory)
            try:
                names = set(os.listdir(directory))
            except OSError:
                continue
            for name in sorted(names):
                if not name.endswith(".envelope"):
                    continue
                queueId = name[: -len(".envelope")]
                if queuedOnly and queueId + ".relayed" in names:
                    continue
                view = self._load(dateDirectory, queueId, names)
                if view is not None and (view.queued or not queuedOnly):
                    yield view

    def find(self, queueId: str) -> MessageView | None:
        """
        The message with C{queueId} (any case), queued or not, or L{None}.

        @raise InvalidQueueId: C{queueId} cannot be one.
        """
        queueId = normalizeQueueId(queueId)
        directories = self.dateDirectories()
        guess = _dateOfQueueId(queueId)
        if guess in directories:
            # Committed on the day its id was made, or just after midnight.
            index = directories.index(guess)
            directories = (
                directories[index : index + 2] + directories[:index] + directories[index + 2 :]
            )
        for dateDirectory in directories:
            if os.path.exists(os.path.join(self.path, dateDirectory, queueId + ".envelope")):
                return self._load(dateDirectory, queueId, None)
        return None

    def _load(self, dateDirectory: str, queueId: str, names: set[str] | None) -> MessageView | None:
        base = os.path.join(self.path, dateDirectory, queueId)
        try:
            with open(base + ".envelope", "rb") as f:
                envelope = Envelope.fromJSON(f.read())
        except (OSError, ValueError, TypeError, KeyError):
            return None
        state = None
        for suffix in (".relayed", ".relay"):
            if names is not None and queueId + suffix not in names:
                continue
            try:
                with open(base + suffix, "rb") as f:
                    state = MessageState.fromJSON(f.read())
                break
            except (OSError, ValueError, TypeError, KeyError):
                continue
        known = {r.address: r for r in state.recipients} if state is not None else {}
        recipients = []
        for recipient in envelope.recipients:
            if recipient.local:
                recipients.append(RecipientView(recipient.address, LOCAL))
                continue
            saved = known.get(recipient.address)
            if saved is None:
                # Spooled, and the relay has not written its state yet.
                recipients.append(RecipientView(recipient.address, PENDING, 0, envelope.received))
                continue
            recipients.append(
                RecipientView(
                    saved.address,
                    saved.status,
                    saved.attempts,
                    saved.nextAttempt if saved.status == PENDING else None,
                    saved.lastError,
                    saved.lastHost,
                )
            )
        return MessageView(
            envelope.queueId,
            envelope.dateDirectory,
            envelope.received,
            envelope.sender,
            envelope.size,
            envelope.clientAddress,
            envelope.helo,
            envelope.tls,
            tuple(recipients),
            held=state is not None and state.held,
        )

    def content(self, view: MessageView, limit: int | None = None) -> bytes:
        """
        The message as stored (its first C{limit} bytes).

        @raise OSError: its file is gone.
        """
        names = os.listdir(os.path.join(self.path, view.dateDirectory))
        prefix = view.queueId + "_"
        for name in sorted(names):
            if name.startswith(prefix) and name.endswith(".eml"):
                with open(os.path.join(self.path, view.dateDirectory, name), "rb") as f:
                    return f.read() if limit is None else f.read(limit)
        raise FileNotFoundError(f"the content of {view.queueId} is gone")

    def headers(self, view: MessageView, limit: int = 256 * 1024) -> bytes:
        """
        The message's header section (up to the first empty line, at most
        C{limit} bytes).
        """
        head = self.content(view, limit)
        for separator in (b"\r\n\r\n", b"\n\n"):
            end = head.find(separator)
            if end >= 0:
                return head[: end + len(separator) // 2]
        return head

    def summary(self, now: float) -> dict[str, Any]:
        """
        The queue's shape, as Postfix's qshape gives it: per destination
        domain, pending recipients by age of their message (columns of
        L{AGE_BUCKETS} minutes and older), and the total.
        """
        rows: dict[str, Counter[str]] = {}
        total: Counter[str] = Counter()
        for view in self.messages():
            column = _ageColumn(now - view.received)
            for recipient in view.pending:
                domain = recipient.address.rpartition("@")[2].lower() or "(none)"
                counts = rows.setdefault(domain, Counter())
                for counter in (counts, total):
                    counter[column] += 1
                    counter["total"] += 1
        columns = ["total"] + [str(b) for b in AGE_BUCKETS] + [f"{AGE_BUCKETS[-1]}+"]
        ordered = sorted(rows.items(), key=lambda item: (-item[1]["total"], item[0]))
        return {
            "columns": columns,
            "total": {c: total[c] for c in columns},
            "domains": [{"domain": d, **{c: counts[c] for c in columns}} for d, counts in ordered],
        }


def _ageColumn(seconds: float) -> str:
    minutes = max(0.0, seconds) / 60
    for bound in AGE_BUCKETS:
        if minutes <= bound:
            return str(bound)
    return f"{AGE_BUCKETS[-1]}+"
