# -*- test-case-name: tests.test_relay_journal,tests.test_relay_duplicates -*-
"""
The relay's outcome journal: each delivery attempt appends the final
outcomes of its recipients (delivered, or refused for good) as soon as the
remote server's replies arrive, one small write per message, before the
connection carries its next message.  When the attempt ends, the queue
writes the messages' state files (L{gopherpost.relay.state}) and deletes the
attempt's journal.

So the state files are written together at the end of an attempt (cheap: a
burst of small writes), yet a process killed in the middle of an attempt
forgets at most the message in flight on each connection: at start-up,
L{replayJournals} applies what the journals of unfinished attempts recorded
to the state files, then deletes them.

Like the state files, journals are written into the page cache and not
synced: a killed process loses nothing written, a power failure may lose the
last writes (see L{gopherpost.relay.state}).  A line a crash cut short is
ignored.  Journal files live in C{<spool>/.gopherpost/relay-journal/}.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
from collections.abc import Callable, Iterable

from twisted.logger import Logger

from gopherpost.relay.state import MessageState, RecipientState, StateStore
from gopherpost.spool import Envelope

__all__ = ["JOURNAL_DIRECTORY", "Journal", "JournalFile", "replayJournals"]

_log = Logger()

#: One encoder for every line (json.dumps with options builds one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"))

#: The journals' directory, inside the spool's state directory.
JOURNAL_DIRECTORY = "relay-journal"
_SUFFIX = ".journal"


class JournalFile:
    """
    The journal of one delivery attempt; created at its first record.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def record(
        self, state: MessageState, recipients: Iterable[RecipientState], withDKIM: bool
    ) -> None:
        """
        Append the outcomes of C{recipients} of C{state}'s message (their
        status, last error and host, attempts), in one write.

        @param withDKIM: also record the message's DKIM header (needed when
            it has no state file yet, which would carry it).
        @raise OSError: the write failed.
        """
        entry: dict[str, object] = {
            "d": state.dateDirectory,
            "q": state.queueId,
            "r": [[r.address, r.status, r.lastError, r.lastHost, r.attempts] for r in recipients],
        }
        if withDKIM and state.dkimHeader:
            entry["k"] = state.dkimHeader
        line = _ENCODER.encode(entry).encode("utf-8") + b"\n"
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self, discard: bool) -> None:
        """
        Close the file; delete it when C{discard} (what it recorded is in
        the state files now).
        """
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if discard:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class Journal:
    """
    Makes one L{JournalFile} per delivery attempt, in C{directory}.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count()

    def open(self) -> None:
        """
        Create the directory (blocking; at start-up).
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def start(self) -> JournalFile:
        """
        The journal of a new attempt (no file until its first record).
        """
        name = f"{os.getpid()}-{self._prefix}-{next(self._counter)}{_SUFFIX}"
        return JournalFile(os.path.join(self.directory, name))


class _Known:
    """
    What the journals say about one message.

    @ivar dkimHeader: its DKIM header, when recorded.
    @ivar recipients: address -> C{(status, lastError, lastHost, attempts)}.
    """

    def __init__(self) -> None:
        self.dkimHeader = ""
        self.recipients: dict[str, tuple[str, str, str, int]] = {}


def _read(path: str, known: dict[tuple[str, str], _Known]) -> None:
    """
    Add what the journal in C{path} says to C{known}; later lines win.
    """
    with open(path, "rb") as f:
        raw = f.read()
    for line in raw.split(b"\n"):
        if not line:
            continue
        try:
            entry = json.loads(line)
            key = (str(entry["d"]), str(entry["q"]))
            items = [(str(a), str(s), str(e), str(h), int(n)) for a, s, e, h, n in entry["r"]]
            dkimHeader = str(entry.get("k", ""))
        except (ValueError, KeyError, TypeError):
            _log.warn("Ignoring a cut-short line in relay journal {path}", path=path)
            continue
        message = known.setdefault(key, _Known())
        if dkimHeader:
            message.dkimHeader = dkimHeader
        for address, status, lastError, lastHost, attempts in items:
            message.recipients[address] = (status, lastError, lastHost, attempts)


def replayJournals(
    directory: str,
    store: StateStore,
    envelopeFor: Callable[[str, str], Envelope],
    now: float,
) -> int:
    """
    Apply the journals left by attempts a stopped or killed process did not
    finish to the state files, then delete the journals.  Blocking: call it
    at start-up, before the states are read.

    @param store: where the states are.
    @param envelopeFor: C{(dateDirectory, queueId) -> Envelope}, for a
        message without a state file yet.
    @param now: when recipients of a message new to the relay are due.
    @return: how many messages got outcomes from a journal.  (A journal
        whose outcomes could not all be saved is kept for the next start.)
    """
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(_SUFFIX))
    except FileNotFoundError:
        return 0
    paths = [os.path.join(directory, name) for name in names]
    known: dict[tuple[str, str], _Known] = {}
    for path in paths:
        _read(path, known)
    restored = 0
    complete = True
    for (dateDirectory, queueId), message in known.items():
        if store.isFinished(dateDirectory, queueId):
            continue
        state = store.load(dateDirectory, queueId)
        if state is None:
            try:
                envelope = envelopeFor(dateDirectory, queueId)
            except (OSError, ValueError, TypeError, KeyError) as e:
                _log.warn(
                    "Relay journal names {queueId}, whose envelope is unreadable ({error})",
                    queueId=queueId,
                    error=e,
                )
                continue
            state = MessageState.forEnvelope(envelope, now)
            state.dkimHeader = message.dkimHeader
        for recipient in state.recipients:
            outcome = message.recipients.get(recipient.address)
            if outcome is None:
                continue
            recipient.status, recipient.lastError, recipient.lastHost, attempts = outcome
            recipient.attempts = max(recipient.attempts, attempts)
        try:
            store.save(state)
        except OSError as e:
            _log.error(
                "Could not save the relay state of {queueId} from the journal: {error}",
                queueId=queueId,
                error=e,
            )
            complete = False
            continue
        restored += 1
    if complete:
        for path in paths:
            os.unlink(path)
    return restored
