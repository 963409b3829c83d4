# -*- test-case-name: tests.test_relay_state -*-
"""
The relay's durable bookkeeping: per message, per recipient, whether it is
still pending, how often it was tried, when it is due next, and why it last
failed.

It lives beside the spooled message as C{<date>/<queueid>.relay} (JSON,
written to a temporary name, fsynced, renamed, directory fsynced).  When
every recipient is final the file becomes C{<queueid>.relayed}, so start-up
skips finished messages without reading them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

from gopherpost.durable import loadSyncfs, replaceFile, writeFile
from gopherpost.spool import Envelope

__all__ = ["PENDING", "DELIVERED", "FAILED", "RecipientState", "MessageState", "StateStore"]

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass
class RecipientState:
    """
    Where one recipient of one message stands.

    @ivar nextAttempt: when to try next (seconds since the epoch).
    @ivar lastError: the last temporary or final error, one line.
    """

    address: str
    token: str
    status: str = PENDING
    attempts: int = 0
    nextAttempt: float = 0.0
    lastError: str = ""
    lastHost: str = ""


@dataclass
class MessageState:
    """
    The relay's view of one spooled message.

    @ivar dkimHeader: the C{DKIM-Signature} header computed once when the
        message was queued, prepended to every attempt (C{""}: none).
    """

    queueId: str
    dateDirectory: str
    received: float
    sender: str
    recipients: List[RecipientState] = field(default_factory=list)
    dkimHeader: str = ""

    @classmethod
    def forEnvelope(cls, envelope: Envelope, now: float) -> "MessageState":
        """
        A fresh state: every non-local recipient pending, due at C{now}.
        """
        return cls(
            queueId=envelope.queueId,
            dateDirectory=envelope.dateDirectory,
            received=envelope.received,
            sender=envelope.sender,
            recipients=[
                RecipientState(r.address, r.token, nextAttempt=now)
                for r in envelope.relayRecipients
            ],
        )

    @property
    def pending(self) -> List[RecipientState]:
        """
        Recipients still to be delivered.
        """
        return [r for r in self.recipients if r.status == PENDING]

    @property
    def done(self) -> bool:
        """
        Whether every recipient is final.
        """
        return not self.pending

    def toJSON(self) -> bytes:
        """
        Serialise.
        """
        data = asdict(self)
        data["version"] = 1
        return json.dumps(data, sort_keys=True).encode("utf-8")

    @classmethod
    def fromJSON(cls, raw: bytes) -> "MessageState":
        """
        Parse what L{toJSON} wrote.
        """
        data = json.loads(raw.decode("utf-8"))
        data.pop("version", None)
        data["recipients"] = [RecipientState(**r) for r in data["recipients"]]
        return cls(**data)


class StateStore:
    """
    Reads and writes L{MessageState} files in the spool.  Every method
    blocks: call them from a thread or at start-up.
    """

    def __init__(self, spoolPath: str) -> None:
        self.path = spoolPath
        #: Syncs the whole file system per batch (None: fsync each file).
        self.syncfs = loadSyncfs()

    def _base(self, dateDirectory: str, queueId: str) -> str:
        return os.path.join(self.path, dateDirectory, queueId)

    def isFinished(self, dateDirectory: str, queueId: str) -> bool:
        """
        Whether every recipient of the message is final.
        """
        return os.path.exists(self._base(dateDirectory, queueId) + ".relayed")

    def load(self, dateDirectory: str, queueId: str) -> Optional[MessageState]:
        """
        The saved state, or L{None} if there is none yet.
        """
        base = self._base(dateDirectory, queueId)
        # A crash between writing .relayed and removing .relay leaves both:
        # the finished one wins.
        for suffix in (".relayed", ".relay"):
            try:
                with open(base + suffix, "rb") as f:
                    return MessageState.fromJSON(f.read())
            except FileNotFoundError:
                continue
        return None

    def save(self, state: MessageState) -> None:
        """
        Write C{state} durably; a finished message is renamed C{.relayed}.
        """
        self.saveAll([state])

    def saveAll(self, states: Sequence[MessageState]) -> None:
        """
        Write several states durably, with two file-system syncs in all
        where C{syncfs} is available.
        """
        if self.syncfs is None:
            for state in states:
                self._saveOne(state)
            return
        written = []
        for state in states:
            base = self._base(state.dateDirectory, state.queueId)
            final = base + (".relayed" if state.done else ".relay")
            writeFile(final + ".tmp", state.toJSON(), sync=False)
            written.append((state, base, final))
        self.syncfs(self.path)
        for state, base, final in written:
            os.replace(final + ".tmp", final)
            if state.done:
                try:
                    os.unlink(base + ".relay")
                except FileNotFoundError:
                    pass
        self.syncfs(self.path)

    def _saveOne(self, state: MessageState) -> None:
        base = self._base(state.dateDirectory, state.queueId)
        if not state.done:
            replaceFile(base + ".relay", state.toJSON())
            return
        replaceFile(base + ".relayed", state.toJSON())
        try:
            os.unlink(base + ".relay")
        except FileNotFoundError:
            pass
