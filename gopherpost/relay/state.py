# -*- test-case-name: tests.test_relay_state,tests.test_relay_duplicates -*-
"""
The relay's durable bookkeeping: per message, per recipient, whether it is
still pending, how often it was tried, when it is due next, and why it last
failed.

It lives beside the spooled message as C{<date>/<queueid>.relay} (JSON,
written to a temporary name and renamed, so that a reader sees a whole
state or none).  When every recipient is final the file becomes
C{<queueid>.relayed}, so start-up skips finished messages without reading
them.

The queue saves a message's state when a delivery attempt for it ends;
the final outcomes of an attempt in progress are in its journal
(L{gopherpost.relay.journal}) as soon as the remote's replies arrive.
States are not fsynced, as Postfix does not sync the marks of delivered
recipients: the message itself is durable, and the state only records
progress.  A killed process forgets nothing written (the page cache keeps
it); a power failure can forget the last writes (the spool's next group
commit syncs the whole file system, so under load it is milliseconds).
What is forgotten is tried again, so the price is a duplicate delivery,
never a lost message.  A state file that a crash left unreadable counts as
missing, and the message starts again from its envelope.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from twisted.logger import Logger

from gopherpost.durable import writeFile
from gopherpost.spool import Envelope

__all__ = [
    "PENDING",
    "DELIVERED",
    "FAILED",
    "DELETED",
    "RecipientState",
    "MessageState",
    "StateStore",
]

_log = Logger()

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
#: Removed from the queue by the operator (C{gopherpostctl queue delete}),
#: without a bounce.
DELETED = "deleted"


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
    @ivar held: put on hold by the operator (C{gopherpostctl queue hold}):
        never attempted, and kept past the queue lifetime, until released.
    """

    queueId: str
    dateDirectory: str
    received: float
    sender: str
    recipients: list[RecipientState] = field(default_factory=list)
    dkimHeader: str = ""
    held: bool = False

    @classmethod
    def forEnvelope(cls, envelope: Envelope, now: float) -> MessageState:
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
    def pending(self) -> list[RecipientState]:
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
        # Built by hand: dataclasses.asdict deep-copies, and this runs for
        # every relayed message.
        data = {name: getattr(self, name) for name in _MESSAGE_FIELDS}
        data["recipients"] = [vars(r) for r in self.recipients]
        data["version"] = 1
        return json.dumps(data, sort_keys=True).encode("utf-8")

    @classmethod
    def fromJSON(cls, raw: bytes) -> MessageState:
        """
        Parse what L{toJSON} wrote.
        """
        data = json.loads(raw.decode("utf-8"))
        data.pop("version", None)
        data["recipients"] = [RecipientState(**r) for r in data["recipients"]]
        return cls(**data)


_MESSAGE_FIELDS = tuple(f.name for f in fields(MessageState))


class StateStore:
    """
    Reads and writes L{MessageState} files in the spool.  Every method
    blocks: call them from a thread or at start-up.
    """

    def __init__(self, spoolPath: str) -> None:
        self.path = spoolPath
        #: Messages (date directory, queue id) that may have a C{.relay}
        #: file: read or written by this store.  Only those are unlinked
        #: when they finish, which saves a failing system call for every
        #: message delivered at its first attempt.
        self._pendingFiles: set[tuple[str, str]] = set()

    def _base(self, dateDirectory: str, queueId: str) -> str:
        return os.path.join(self.path, dateDirectory, queueId)

    def isFinished(self, dateDirectory: str, queueId: str) -> bool:
        """
        Whether every recipient of the message is final.
        """
        return os.path.exists(self._base(dateDirectory, queueId) + ".relayed")

    def load(self, dateDirectory: str, queueId: str) -> MessageState | None:
        """
        The saved state, or L{None} if there is none yet (or only one a
        crash left unreadable).
        """
        base = self._base(dateDirectory, queueId)
        # A crash between writing .relayed and removing .relay leaves both:
        # the finished one wins.
        for suffix in (".relayed", ".relay"):
            try:
                with open(base + suffix, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                continue
            if suffix == ".relay":
                self._pendingFiles.add((dateDirectory, queueId))
            try:
                return MessageState.fromJSON(raw)
            except (ValueError, KeyError, TypeError) as e:
                _log.warn(
                    "Unreadable relay state {path} ({error}): starting the message again",
                    path=base + suffix,
                    error=e,
                )
        return None

    def hasFile(self, state: MessageState) -> bool:
        """
        Whether C{state}'s message has a C{.relay} file (as far as this
        store wrote or read one).
        """
        return (state.dateDirectory, state.queueId) in self._pendingFiles

    def save(self, state: MessageState) -> None:
        """
        Write C{state}; a finished message is renamed C{.relayed}.
        """
        self.saveAll([state])

    def saveAll(self, states: Sequence[MessageState]) -> None:
        """
        Write several states, each atomically (temporary file, rename), not
        synced (see the module's docstring).
        """
        for state in states:
            base = self._base(state.dateDirectory, state.queueId)
            done = state.done
            final = base + (".relayed" if done else ".relay")
            writeFile(final + ".tmp", state.toJSON(), sync=False)
            os.replace(final + ".tmp", final)
            key = (state.dateDirectory, state.queueId)
            if not done:
                self._pendingFiles.add(key)
            elif key in self._pendingFiles:
                self._pendingFiles.discard(key)
                try:
                    os.unlink(base + ".relay")
                except FileNotFoundError:
                    pass
