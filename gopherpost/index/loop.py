# -*- test-case-name: tests.test_index_indexer -*-
"""
The indexer's schedule: open, tell the listener the index is ready, then
one batch at a time -- newly committed messages first, the start-up catch
up in between -- each step run by an injected runner (synchronously in the
index worker process, in a thread when the index runs in-process).

A database that turns out damaged in the middle is rebuilt: the listener
is told L{IIndexListener.ready} again, with C{rebuilt=True}.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import Interface

from gopherpost.index.database import IndexCorrupt, removeDatabase
from gopherpost.index.indexer import BATCH_SIZE, Indexer

__all__ = ["IIndexListener", "IndexerLoop", "Runner"]

_log = Logger()

#: C{run(f, *args) -> Deferred}: where the blocking steps run.
Runner = Callable[..., Deferred]


class IIndexListener(Interface):
    """
    Told what the indexer did.
    """

    def ready(rebuilt: bool) -> None:
        """
        The database is open and may be read (C{rebuilt}: it was made anew,
        and fills up from the spool now).
        """

    def indexed(ids: list[str], catchUp: bool) -> None:
        """
        These messages are in the index now (C{catchUp}: found in the spool
        at start-up rather than just committed).
        """


#: Seconds new messages wait for company before they are indexed: one
#: transaction for many messages costs far less than one for each (FTS5
#: writes a segment per transaction).  The server has already gathered them
#: for L{gopherpost.index.service.SUBMIT_DELAY}; the UI shows them at most
#: the sum later.
GATHER_DELAY = 0.1


class IndexerLoop:
    """
    Runs an L{Indexer}: L{start} once, L{submit} as messages commit.

    @param clock: schedules the gathering of new messages (L{GATHER_DELAY}).
    """

    def __init__(
        self,
        indexer: Indexer,
        run: Runner,
        listener: IIndexListener,
        clock: Any,
        gatherDelay: float = GATHER_DELAY,
    ) -> None:
        self._indexer = indexer
        self._run = run
        self._listener = listener
        self._clock = clock
        self._gatherDelay = gatherDelay
        self._gathering: Any = None
        self._due = False
        self._pending: list[tuple[str, str]] = []
        self._catchUp: Iterator[list[str]] | None = None
        self._busy: Deferred | None = None
        self._open = False
        self._stopped = False

    def start(self) -> None:
        """
        Open the index (in the runner) and begin.
        """
        self._step(self._openStep, then=self._opened)

    def submit(self, items: list[tuple[str, str]]) -> None:
        """
        Index these messages (C{(dateDirectory, queueId)}) soon.
        """
        self._pending.extend(items)
        self._next()

    def stop(self) -> Deferred:
        """
        Stop after the step in progress.

        @return: fires when nothing runs any more.
        """
        self._stopped = True
        if self._gathering is not None and self._gathering.active():
            self._gathering.cancel()
        self._gathering = None
        busy = self._busy
        if busy is None:
            return succeed(None)
        waiting: Deferred = Deferred()

        def finished(result: object) -> object:
            waiting.callback(None)
            return result

        busy.addBoth(finished)
        return waiting

    # -- steps ------------------------------------------------------------

    def _openStep(self) -> bool:
        self._indexer.open()
        self._catchUp = self._indexer.reconcile()
        return self._indexer.rebuilt

    def _opened(self, rebuilt: object) -> None:
        self._open = True
        self._listener.ready(bool(rebuilt))

    def _step(self, f: Callable[..., Any], *args: Any, then: Callable[[Any], None]) -> None:
        d = self._run(f, *args)
        self._busy = d

        def finished(result: object) -> None:
            self._busy = None
            then(result)
            self._next()

        def failed(failure: Any) -> None:
            self._busy = None
            if failure.check(IndexCorrupt, sqlite3.DatabaseError):
                _log.warn(
                    "Message index damaged ({error}): rebuilding it from the spool",
                    error=failure.getErrorMessage(),
                )
                self._open = False
                self._step(self._rebuildStep, then=self._opened)
                return
            _log.failure("Message index step failed", failure)
            self._next()

        d.addCallbacks(finished, failed)

    def _rebuildStep(self) -> bool:
        self._indexer.close()
        removeDatabase(self._indexer.databasePath)
        return self._openStep()

    def _gathered(self) -> None:
        self._gathering = None
        self._due = True
        self._next()

    def _next(self) -> None:
        if self._stopped or self._busy is not None or not self._open:
            return
        if self._pending and (self._due or len(self._pending) >= BATCH_SIZE):
            self._due = False
            if self._gathering is not None and self._gathering.active():
                self._gathering.cancel()
            self._gathering = None
            batch, self._pending = self._pending[:BATCH_SIZE], self._pending[BATCH_SIZE:]
            if self._pending:
                self._due = True
            self._step(
                self._indexer.index,
                batch,
                then=lambda ids: self._listener.indexed(list(ids), False),
            )
            return
        if self._pending and self._gathering is None:
            self._gathering = self._clock.callLater(self._gatherDelay, self._gathered)
        if self._catchUp is not None:
            self._step(self._catchUpStep, then=self._caughtUp)

    def _catchUpStep(self) -> list[str] | None:
        assert self._catchUp is not None
        try:
            return next(self._catchUp)
        except StopIteration:
            return None

    def _caughtUp(self, ids: list[str] | None) -> None:
        if ids is None:
            self._catchUp = None
            return
        if ids:
            self._listener.indexed(list(ids), True)
