# -*- test-case-name: tests.test_index_indexer -*-
"""
Keeping the index in step with the spool (blocking work; it runs in the
index worker process, see L{gopherpost.index.worker}, or in a thread).

At start-up the database is opened and checked; one that is missing,
damaged or of another schema is deleted and made anew.  Then it is
reconciled with the spool: every committed message the index has not seen
is read and indexed (newest first, so the list fills from the top), and
what the index knows of that is no longer in the spool is forgotten.
After that, messages are indexed as the spool commits them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from twisted.logger import Logger

from gopherpost.durable import readFile
from gopherpost.index.database import (
    WRITER_CACHE_KIB,
    IndexCorrupt,
    IndexDatabase,
    removeDatabase,
)
from gopherpost.index.records import IndexRecord, buildRecord
from gopherpost.spool import Envelope, Spool

__all__ = ["IndexPolicy", "Indexer", "indexPath", "runAll", "BATCH_SIZE"]

_log = Logger()

#: Messages indexed in one transaction at most.
BATCH_SIZE = 200

_ENVELOPE = ".envelope"


def indexPath(stateDirectory: str) -> str:
    """
    Where the index lives in the spool's state directory.
    """
    return os.path.join(stateDirectory, "index.sqlite3")


@dataclass(frozen=True)
class IndexPolicy:
    """
    Which messages are indexed.

    @ivar everything: index every message (capture mode, or
        C{SMTP_INDEX_RELAYED=true}); otherwise only those with a local
        recipient.
    """

    everything: bool = False

    def wants(self, envelope: Envelope) -> bool:
        """
        Whether C{envelope}'s message belongs in the index.
        """
        return self.everything or any(r.local for r in envelope.recipients)


def _isDateDirectory(name: str) -> bool:
    return len(name) == 10 and name[4] == "-" and name[7] == "-" and name.replace("-", "").isdigit()


class Indexer:
    """
    The index's writer.

    @param spool: reads envelopes and content (C{envelopeIn},
        C{messagePath}, C{path}); any L{gopherpost.spool.Spool}, opened or
        not.
    @param databasePath: the index file.
    @ivar rebuilt: whether L{open} had to make the database anew.
    """

    def __init__(self, spool: Spool, databasePath: str, policy: IndexPolicy) -> None:
        self._spool = spool
        self.databasePath = databasePath
        self._policy = policy
        self.database: IndexDatabase | None = None
        self.rebuilt = False

    def open(self) -> IndexDatabase:
        """
        Open the index, checked; rebuild it from nothing when it is
        damaged or of another schema.
        """
        existed = os.path.exists(self.databasePath)
        try:
            self.database = IndexDatabase.open(
                self.databasePath, check=True, cacheKiB=WRITER_CACHE_KIB
            )
            self.rebuilt = not existed
        except IndexCorrupt as e:
            _log.warn("Message index unusable ({error}): rebuilding it from the spool", error=e)
            removeDatabase(self.databasePath)
            self.database = IndexDatabase.open(self.databasePath, cacheKiB=WRITER_CACHE_KIB)
            self.rebuilt = True
        return self.database

    def close(self) -> None:
        """
        Close the database.
        """
        if self.database is not None:
            self.database.close()
            self.database = None

    def _committed(self) -> dict[str, str]:
        """
        Every committed message in the spool: queue id -> date directory.
        """
        found: dict[str, str] = {}
        root = self._spool.path
        try:
            names = os.listdir(root)
        except OSError:
            return found
        for dateDirectory in sorted(n for n in names if _isDateDirectory(n)):
            try:
                entries = os.listdir(os.path.join(root, dateDirectory))
            except OSError:
                continue
            for name in entries:
                if name.endswith(_ENVELOPE):
                    found[name[: -len(_ENVELOPE)]] = dateDirectory
        return found

    def reconcile(self) -> Iterator[list[str]]:
        """
        Bring the index in step with the spool, one batch per step: forget
        what left the spool, then index what is missing, newest first.

        @return: an iterator; each step indexes one batch and yields the ids
            it added (run it to the end).
        """
        assert self.database is not None
        committed = self._committed()
        known = self.database.known()
        gone = [id for id in known if id not in committed]
        if gone:
            self.database.forget(gone)
            _log.info("Message index: {count} messages left the spool", count=len(gone))
        missing = sorted((id for id in committed if id not in known), reverse=True)
        if missing and not self.rebuilt:
            _log.info("Message index: {count} messages to catch up", count=len(missing))
        for i in range(0, len(missing), BATCH_SIZE):
            chunk = missing[i : i + BATCH_SIZE]
            yield self.index([(committed[id], id) for id in chunk])

    def index(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """
        Index messages of the spool, C{(dateDirectory, queueId)} each, in one
        transaction; those the policy does not want are remembered as
        skipped; those whose files are gone are ignored.

        @return: the ids added.
        """
        assert self.database is not None
        records: list[IndexRecord] = []
        skipped: list[tuple[str, str]] = []
        for dateDirectory, queueId in items:
            record = self._record(dateDirectory, queueId)
            if record is None:
                continue
            if isinstance(record, IndexRecord):
                records.append(record)
            else:
                skipped.append((queueId, dateDirectory))
        self.database.skip(skipped)
        return self.database.insert(records)

    def _record(self, dateDirectory: str, queueId: str) -> IndexRecord | bool | None:
        spool = self._spool
        try:
            envelope = spool.envelopeIn(dateDirectory, queueId)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as e:
            _log.warn("Message index: unreadable envelope {id}: {error}", id=queueId, error=e)
            return None
        if not self._policy.wants(envelope) or not envelope.recipients:
            return False
        try:
            raw = readFile(spool.messagePath(envelope))
        except FileNotFoundError:
            return None
        except OSError as e:
            _log.warn("Message index: cannot read {id}: {error}", id=queueId, error=e)
            return None
        try:
            return buildRecord(envelope, raw)
        except Exception:
            _log.failure("Message index: cannot index {id}", id=queueId)
            return None


def runAll(steps: Iterator[list[str]], each: Callable[[list[str]], None] | None = None) -> int:
    """
    Run a L{Indexer.reconcile} to the end.

    @return: how many messages it added.
    """
    added = 0
    for ids in steps:
        added += len(ids)
        if each is not None:
            each(ids)
    return added
