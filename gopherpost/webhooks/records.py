# -*- test-case-name: tests.test_webhook_records -*-
"""
What the webhooks keep on disk, under the spool's state directory::

    webhooks/inbound/since            when the inbound webhook was turned on
    webhooks/inbound/<date>.settled   "<queueid> <outcome>" per message done with
    webhooks/events/<date>.events     one JSON record per delivery event
    webhooks/events/<date>.settled    "<eventid> <outcome>" per event done with

An inbound webhook needs no record of its own: the message's envelope,
which the spool made durable before the client got its 250, is the record.
A message committed since C{since} whose id is not in its date's settled
file is pending; at start-up the courier lists the spool's envelopes and
takes every pending one on again (L{unsettledMessages}).  So the SMTP path
pays nothing for the webhook's durability, and neither C{kill -9} nor a
power failure can lose one.

A delivery event is written when it happens, by the server process, as one
line appended to its day's C{.events} file (L{WebhookStore.appendEvent}: one
C{write(2)}, not synced, so it is safe from C{kill -9} at once and from a
power failure after the spool's next sync, like the relay's state).  The
courier process appends a line to the C{.settled} file of the same day
whenever a webhook is done with: delivered, refused with 410, expired,
dropped, or out of scope; the lines of half a second go in one C{write(2)}
(see L{WebhookDispatcher<gopherpost.webhooks.dispatcher.WebhookDispatcher>}'s
C{markInterval}), so that the file is dirtied, and written by the SMTP
side's next sync of the spool, twice a second rather than once per webhook.
Each file has one writer.  A line counts only when it is whole (ends in a
newline and parses), so a torn last line after a crash is ignored: at worst
a webhook is posted twice (also one whose mark was still waiting to be
written), which receivers deduplicate (C{webhook-id}), never lost.

Files of days older than the lifetime (plus the longest retry delay and a
day) are deleted by L{WebhookStore.prune}.
"""

from __future__ import annotations

import calendar
import json
import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from gopherpost.durable import replaceFile

__all__ = [
    "INBOUND",
    "EVENTS",
    "KINDS",
    "EventRecord",
    "OwedInbound",
    "WebhookStore",
    "dateOf",
    "startOfDate",
    "unsettledMessages",
]

_log = Logger()

#: The inbound mail webhook.
INBOUND = "inbound"
#: The delivery events webhook.
EVENTS = "events"
KINDS = (INBOUND, EVENTS)

_SETTLED = ".settled"
_EVENTS = ".events"
#: Append files kept open at most (one per day and kind in use).
_OPEN_FILES = 4


def dateOf(seconds: float) -> str:
    """
    The UTC date (C{YYYY-MM-DD}) of a time, as the spool names its
    directories.
    """
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def startOfDate(date: str) -> float:
    """
    The first second of a C{YYYY-MM-DD} UTC date.
    """
    return float(calendar.timegm(time.strptime(date, "%Y-%m-%d")))


def _isDate(name: str) -> bool:
    return len(name) == 10 and name[4] == "-" and name[7] == "-" and name.replace("-", "").isdigit()


@dataclass(frozen=True)
class EventRecord:
    """
    One delivery event waiting to be posted.

    @ivar id: the event's id, its C{webhook-id}.
    @ivar time: when it happened.
    @ivar queueId: the message it is about.
    @ivar body: the document to post, encoded (see L{payload.encode}).
    """

    id: str
    time: float
    queueId: str
    body: bytes

    def toLine(self) -> bytes:
        """
        The record as one journal line.
        """
        data = {
            "id": self.id,
            "time": self.time,
            "queue_id": self.queueId,
            "body": self.body.decode("utf-8"),
        }
        return json.dumps(data, separators=(",", ":")).encode("ascii") + b"\n"

    @classmethod
    def fromLine(cls, line: bytes) -> EventRecord:
        """
        Parse a journal line.

        @raise ValueError: it is not a whole record.
        """
        try:
            data = json.loads(line)
            return cls(
                str(data["id"]), float(data["time"]), str(data["queue_id"]), data["body"].encode()
            )
        except (KeyError, TypeError, AttributeError, UnicodeError) as e:
            raise ValueError(f"not an event record: {e}") from None

    def toJSON(self) -> str:
        """
        The record as text, to hand to another process.
        """
        return self.toLine()[:-1].decode("ascii")


class _Appender:
    """
    Appends lines to a few files kept open.
    """

    def __init__(self) -> None:
        self._files: OrderedDict[str, int] = OrderedDict()

    def append(self, path: str, data: bytes) -> None:
        fd = self._files.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            while len(self._files) >= _OPEN_FILES:
                os.close(self._files.popitem(last=False)[1])
        self._files[path] = fd
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def forget(self, path: str) -> None:
        fd = self._files.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        while self._files:
            os.close(self._files.popitem()[1])


def _wholeLines(path: str) -> Iterator[bytes]:
    """
    The complete lines of a journal file (none if it does not exist).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    if lines[-1]:
        _log.warn("Ignoring the unfinished last line of {path}", path=path)
    yield from (line for line in lines[:-1] if line)


class WebhookStore:
    """
    The webhooks' files in the spool's state directory (see the module's
    description).  Blocking, small I/O: appends run on the reactor thread;
    reading whole days (L{settled}, L{events}) is for start-up, in a thread.

    @param stateDirectory: the spool's private directory
        (L{gopherpost.spool.Spool.stateDirectory}).
    """

    def __init__(self, stateDirectory: str) -> None:
        self.path = os.path.join(stateDirectory, "webhooks")
        self._appender = _Appender()

    def open(self) -> None:
        """
        Create the directories (mode 0700) if they are missing.

        @raise OSError: they cannot be made.
        """
        for kind in KINDS:
            os.makedirs(self._directory(kind), mode=0o700, exist_ok=True)

    def close(self) -> None:
        """
        Close the files kept open for appending.
        """
        self._appender.close()

    def _directory(self, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown webhook kind {kind!r}")
        return os.path.join(self.path, kind)

    def _file(self, kind: str, date: str, suffix: str) -> str:
        if not _isDate(date):
            raise ValueError(f"not a date: {date!r}")
        return os.path.join(self._directory(kind), date + suffix)

    # The inbound webhook's start

    @property
    def _sincePath(self) -> str:
        return os.path.join(self._directory(INBOUND), "since")

    def since(self) -> float | None:
        """
        Since when (seconds since the epoch) committed messages get an
        inbound webhook; L{None} if the webhook is not on.
        """
        try:
            with open(self._sincePath, "rb") as f:
                return float(f.read().decode("ascii").strip())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeError):
            _log.error("{path} is corrupt; taking it as now", path=self._sincePath)
            return None

    def setSince(self, seconds: float) -> None:
        """
        Record durably since when messages get an inbound webhook.
        """
        replaceFile(self._sincePath, repr(float(seconds)).encode("ascii") + b"\n", 0o600)

    def clearSince(self) -> None:
        """
        The inbound webhook is off: mail received from now until it is
        turned on again gets none.
        """
        try:
            os.unlink(self._sincePath)
        except FileNotFoundError:
            pass

    # Settled marks

    def settle(self, kind: str, date: str, webhookId: str, outcome: str) -> None:
        """
        Mark one webhook done with (appended, not synced).

        @param date: the message's date directory (inbound) or the event's
            day (events).
        @raise OSError: the mark could not be written.
        """
        self.settleMany(kind, date, [(webhookId, outcome)])

    def settleMany(self, kind: str, date: str, marks: Sequence[tuple[str, str]]) -> None:
        """
        Mark several webhooks of one day done with, in one C{write(2)}
        (appended, not synced).

        @param marks: C{(webhookId, outcome)} pairs.
        @raise OSError: the marks could not be written.
        """
        data = "".join(f"{webhookId} {outcome}\n" for webhookId, outcome in marks)
        self._appender.append(self._file(kind, date, _SETTLED), data.encode("ascii", "replace"))

    def settled(self, kind: str, date: str) -> dict[str, str]:
        """
        The webhooks of one day already done with, and how they ended.
        """
        found: dict[str, str] = {}
        for line in _wholeLines(self._file(kind, date, _SETTLED)):
            webhookId, _, outcome = line.decode("ascii", "replace").partition(" ")
            if webhookId and outcome:
                found[webhookId] = outcome
        return found

    # Event records

    def appendEvent(self, record: EventRecord) -> None:
        """
        Write one delivery event to its day's journal (appended, not
        synced).

        @raise OSError: it could not be written.
        """
        self._appender.append(self._file(EVENTS, dateOf(record.time), _EVENTS), record.toLine())

    def events(self, date: str) -> list[EventRecord]:
        """
        Every whole event record of one day, in order.
        """
        records = []
        path = self._file(EVENTS, date, _EVENTS)
        for line in _wholeLines(path):
            try:
                records.append(EventRecord.fromLine(line))
            except ValueError as e:
                _log.warn("Ignoring a damaged line of {path}: {error}", path=path, error=e)
        return records

    # Housekeeping

    def dates(self, kind: str) -> list[str]:
        """
        The days with files of C{kind}, oldest first.
        """
        try:
            names = os.listdir(self._directory(kind))
        except FileNotFoundError:
            return []
        return sorted({n[:10] for n in names if _isDate(n[:10]) and n[10:] in (_SETTLED, _EVENTS)})

    def prune(self, kind: str, date: str) -> None:
        """
        Delete one day's files of C{kind}.
        """
        for suffix in (_SETTLED, _EVENTS):
            path = self._file(kind, date, suffix)
            self._appender.forget(path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def unsettledMessages(spool: Any, store: WebhookStore, since: float) -> Iterator[tuple[str, str]]:
    """
    The spooled messages that may still owe an inbound webhook: every
    committed envelope in the date directories from C{since}'s date on
    whose id is not settled.  (Whether it is in scope and received after
    C{since} is for the caller to read from the envelope.)  Blocking: run
    it in a thread.

    @param spool: a L{gopherpost.spool.Spool}.
    @return: C{(dateDirectory, queueId)} pairs, oldest day first.
    """
    first = dateOf(since)
    for date in spool.dateDirectories():
        if date < first:
            continue
        settled = store.settled(INBOUND, date)
        try:
            names = sorted(os.listdir(os.path.join(spool.path, date)))
        except FileNotFoundError:
            continue
        for name in names:
            if name.endswith(".envelope"):
                queueId = name[: -len(".envelope")]
                if queueId not in settled:
                    yield date, queueId


class OwedInbound:
    """
    For spool retention (L{gopherpost.retention}): whether the inbound
    webhook still owes a post for a message, and so will read it.  One
    instance per sweep: it reads C{since} once and each date's settled file
    once.  Blocking: call it in a thread.
    """

    def __init__(self, store: WebhookStore) -> None:
        self._store = store
        self._since = store.since()
        self._settled: dict[str, dict[str, str]] = {}

    def __call__(self, date: str, queueId: str, received: float) -> bool:
        """
        Whether the message C{queueId} of the spool's date directory
        C{date}, received at C{received}, waits for its inbound webhook.
        """
        if self._since is None or received < self._since:
            return False
        settled = self._settled.get(date)
        if settled is None:
            settled = self._settled[date] = self._store.settled(INBOUND, date)
        return queueId not in settled
