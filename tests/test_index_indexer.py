"""
The indexer and its schedule: catch-up, skipping, gathering new messages
into one transaction, rebuilding a database damaged while running.
"""

from __future__ import annotations

import os

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from gopherpost.index.database import WRITER_CACHE_KIB, IndexDatabase
from gopherpost.index.indexer import Indexer, IndexPolicy, runAll
from gopherpost.index.loop import GATHER_DELAY, IIndexListener, IndexerLoop
from tests.support.accesstime import makeStale, plainReadUpdates
from tests.support.mailstore import makeMessage, openSpool, storeMessage


@implementer(IIndexListener)
class _Listener:
    def __init__(self) -> None:
        self.readies: list[bool] = []
        self.batches: list[tuple[list[str], bool]] = []

    def ready(self, rebuilt: bool) -> None:
        self.readies.append(rebuilt)

    def indexed(self, ids: list[str], catchUp: bool) -> None:
        self.batches.append((ids, catchUp))


class IndexerTests(TestCase):
    @inlineCallbacks
    def test_reconcile(self):
        spool = openSpool(self)
        local = yield storeMessage(spool, makeMessage("local"))
        remote = yield storeMessage(
            spool, makeMessage("remote"), recipients=[("x@far.test", False)]
        )
        indexer = Indexer(spool, os.path.join(spool.stateDirectory, "i.sqlite3"), IndexPolicy())
        indexer.open()
        self.addCleanup(indexer.close)
        self.assertTrue(indexer.rebuilt)
        self.assertEqual(runAll(indexer.reconcile()), 1)
        assert indexer.database is not None
        self.assertEqual(
            indexer.database.known(),
            {
                local.queueId: local.dateDirectory,
                remote.queueId: remote.dateDirectory,
            },
        )
        self.assertEqual(runAll(indexer.reconcile()), 0, "the skipped one is not read again")
        self.assertEqual(indexer.index([(local.dateDirectory, "GONE")]), [])

    @inlineCallbacks
    def test_accessTimesKept(self):
        """
        Indexing a message reads its envelope and content without updating
        their access times (no inode write for the SMTP side's next sync).
        """
        spool = openSpool(self)
        if not plainReadUpdates(spool.path):
            raise SkipTest("this file system never updates access times (noatime)")
        stored = yield storeMessage(spool, makeMessage("fresh"))
        paths = [spool.messagePath(stored)]
        paths.append(os.path.join(spool.path, stored.dateDirectory, stored.queueId + ".envelope"))
        self.assertTrue(all(os.path.exists(p) for p in paths), paths)
        stale = [makeStale(p) for p in paths]
        indexer = Indexer(spool, os.path.join(spool.stateDirectory, "i.sqlite3"), IndexPolicy())
        indexer.open()
        self.addCleanup(indexer.close)
        self.assertEqual(indexer.index([(stored.dateDirectory, stored.queueId)]), [stored.queueId])
        self.assertEqual([os.stat(p).st_atime for p in paths], stale)

    def test_writerCache(self):
        """
        The indexer's connection has a page cache of
        L{WRITER_CACHE_KIB}; other connections keep SQLite's default.
        """
        spool = openSpool(self)
        path = os.path.join(spool.stateDirectory, "i.sqlite3")
        indexer = Indexer(spool, path, IndexPolicy())
        database = indexer.open()
        self.addCleanup(indexer.close)
        self.assertEqual(database.pragma("cache_size"), -WRITER_CACHE_KIB)
        reader = IndexDatabase.open(path, create=False)
        self.addCleanup(reader.close)
        self.assertEqual(reader.pragma("cache_size"), -2000)


class LoopTests(TestCase):
    def _loop(self):
        spool = openSpool(self)
        clock = Clock()
        listener = _Listener()
        indexer = Indexer(spool, os.path.join(spool.stateDirectory, "i.sqlite3"), IndexPolicy())
        self.addCleanup(indexer.close)
        loop = IndexerLoop(indexer, maybeDeferred, listener, clock)
        loop.start()
        self.assertEqual(listener.readies, [True])
        return spool, clock, listener, loop

    @inlineCallbacks
    def test_gathered(self):
        """
        New messages wait GATHER_DELAY for company, then go in one batch.
        """
        spool, clock, listener, loop = self._loop()
        envelopes = []
        for i in range(3):
            envelopes.append((yield storeMessage(spool, makeMessage(f"m{i}"))))
        loop.submit([(envelopes[0].dateDirectory, envelopes[0].queueId)])
        clock.advance(GATHER_DELAY / 2)
        loop.submit([(e.dateDirectory, e.queueId) for e in envelopes[1:]])
        self.assertEqual(listener.batches, [])
        clock.advance(GATHER_DELAY / 2)
        self.assertEqual(listener.batches, [([e.queueId for e in envelopes], False)])
        yield loop.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    @inlineCallbacks
    def test_fullBatchAtOnce(self):
        from gopherpost.index.indexer import BATCH_SIZE

        spool, clock, listener, loop = self._loop()
        envelope = yield storeMessage(spool, makeMessage("one"))
        loop.submit([(envelope.dateDirectory, envelope.queueId)] * BATCH_SIZE)
        self.assertEqual(len(listener.batches), 1)
        yield loop.stop()

    @inlineCallbacks
    def test_damagedWhileRunning(self):
        """
        A database error in a step rebuilds the index from the spool.
        """
        spool, clock, listener, loop = self._loop()
        envelope = yield storeMessage(spool, makeMessage("one"))
        loop._indexer.database._db.execute("DROP TABLE fulltext")
        loop.submit([(envelope.dateDirectory, envelope.queueId)])
        clock.advance(GATHER_DELAY)
        self.assertEqual(listener.readies, [True, True])
        self.assertEqual(listener.batches, [([envelope.queueId], True)])
        self.flushLoggedErrors()
        yield loop.stop()
