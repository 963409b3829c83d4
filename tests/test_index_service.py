"""
The message index as the server runs it: a spool observer feeding an
indexer (in a thread, or the real worker process), rebuilt from the spool
when missing, stale or corrupt.
"""

from __future__ import annotations

import os
import signal

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.index.indexer import IndexPolicy
from gopherpost.index.loop import IIndexListener
from gopherpost.index.query import parseQuery
from gopherpost.index.service import (
    SUBMIT_DELAY,
    IIndexBackend,
    IndexNotReady,
    IndexService,
    ProcessBackend,
    ThreadBackend,
)
from gopherpost.interfaces import ISpoolObserver
from gopherpost.priority import NICENESS
from tests.support.mailstore import makeMessage, openSpool, startIndex, storeMessage, waitFor


@implementer(IIndexBackend)
class _RecordingBackend:
    def __init__(self) -> None:
        self.submitted: list = []
        self.listener = None

    def start(self, listener):
        self.listener = listener

    def submit(self, items):
        self.submitted.append(list(items))

    def stop(self):
        from twisted.internet.defer import succeed

        return succeed(None)


def _count(mailbox):
    return mailbox.counts().addCallback(lambda c: c[0])


class ObserverTests(TestCase):
    """
    The observer on the SMTP path only queues.
    """

    def _service(self, everything=False):
        spool = openSpool(self)
        clock = Clock()
        backend = _RecordingBackend()
        service = IndexService(spool, clock, IndexPolicy(everything), backend=backend)
        return spool, clock, backend, service

    def test_interfaces(self) -> None:
        spool, clock, backend, service = self._service()
        self.assertTrue(verifyObject(ISpoolObserver, service))
        self.assertTrue(verifyObject(IIndexListener, service))
        self.assertTrue(verifyObject(IIndexBackend, backend))
        self.assertTrue(
            verifyObject(IIndexBackend, ThreadBackend(spool, "x", IndexPolicy(), clock))
        )
        self.assertTrue(
            verifyObject(IIndexBackend, ProcessBackend(spool.path, "x", IndexPolicy(), clock))
        )

    @inlineCallbacks
    def test_commitOnlyQueues(self):
        """
        messageCommitted (called before the client's 250) hands nothing to
        the indexer: the queue goes SUBMIT_DELAY later, every message
        committed meanwhile in one submission.
        """
        spool, clock, backend, service = self._service()
        spool.addObserver(service)
        first = yield storeMessage(spool, makeMessage("one"))
        clock.advance(SUBMIT_DELAY / 2)
        second = yield storeMessage(spool, makeMessage("two"))
        self.assertEqual(backend.submitted, [])
        clock.advance(SUBMIT_DELAY / 2)
        self.assertEqual(
            backend.submitted,
            [
                [
                    (first.dateDirectory, first.queueId),
                    (second.dateDirectory, second.queueId),
                ]
            ],
        )

    @inlineCallbacks
    def test_relayOnlySkipped(self):
        """
        A message without a local recipient is not indexed unless the
        policy wants everything (capture mode, SMTP_INDEX_RELAYED).
        """
        for everything, expected in ((False, 0), (True, 1)):
            spool, clock, backend, service = self._service(everything)
            spool.addObserver(service)
            yield storeMessage(spool, makeMessage(), recipients=[("x@remote.test", False)])
            clock.advance(SUBMIT_DELAY)
            self.assertEqual(len(backend.submitted), expected)

    def test_notReady(self) -> None:
        """
        Before the indexer says it is ready, reads fail with IndexNotReady.
        """
        spool, clock, backend, service = self._service()
        self.failureResultOf(service.read(lambda db: db.counts()), IndexNotReady)
        self.failureResultOf(service.write(lambda db: db.counts()), IndexNotReady)


class ThreadIndexTests(TestCase):
    """
    The indexer in a thread: commit, rebuild, stale, corrupt.
    """

    @inlineCallbacks
    def test_committedMessagesIndexed(self):
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool)
        yield storeMessage(spool, makeMessage("first message"))
        yield storeMessage(spool, makeMessage("second"), recipients=[("x@remote.test", False)])
        yield storeMessage(spool, makeMessage("third message"))
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 2))
        page = yield mailbox.summaries(parseQuery(""), 0, 50)
        self.assertEqual(
            [m["Subject"] for m in page["messages"]], ["third message", "first message"]
        )

    @inlineCallbacks
    def _restart(self, spool, mailbox):
        yield mailbox.index.stopService()
        spool.removeObserver(mailbox.index)

    @inlineCallbacks
    def test_rebuildWhenMissing(self):
        spool = openSpool(self)
        for i in range(5):
            yield storeMessage(spool, makeMessage(f"message {i}"))
        mailbox = yield startIndex(self, spool)
        self.assertTrue(mailbox.index.rebuilding)
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 5))

    @inlineCallbacks
    def test_staleCaughtUp(self):
        """
        Messages committed while the index was not running are indexed at
        the next start, and messages removed from the spool by hand are
        forgotten.
        """
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool)
        kept = yield storeMessage(spool, makeMessage("kept"))
        gone = yield storeMessage(spool, makeMessage("gone"))
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 2))
        yield self._restart(spool, mailbox)
        yield storeMessage(spool, makeMessage("while stopped"))
        os.unlink(os.path.join(spool.path, gone.dateDirectory, gone.queueId + ".envelope"))
        mailbox = yield startIndex(self, spool)
        self.assertFalse(mailbox.index.rebuilding)
        yield waitFor(
            lambda: mailbox.summaries(parseQuery(""), 0, 10).addCallback(
                lambda p: sorted(m["Subject"] for m in p["messages"]) == ["kept", "while stopped"]
            )
        )
        record = yield mailbox.record(kept.queueId)
        self.assertEqual(record["subject"], "kept")

    @inlineCallbacks
    def test_corruptRebuilt(self):
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool)
        for i in range(3):
            yield storeMessage(spool, makeMessage(f"message {i}"))
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 3))
        path = mailbox.index.databasePath
        yield self._restart(spool, mailbox)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        with open(path, "r+b") as f:
            f.seek(0)
            f.write(b"this is not a database" * 100)
        mailbox = yield startIndex(self, spool)
        self.assertTrue(mailbox.index.rebuilding)
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 3))

    @inlineCallbacks
    def test_otherSchemaRebuilt(self):
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool)
        yield storeMessage(spool, makeMessage("one"))
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 1))
        yield mailbox.index.write(
            lambda db: db._db.execute("UPDATE meta SET value = '0' WHERE key = 'schema'")
        )
        yield self._restart(spool, mailbox)
        mailbox = yield startIndex(self, spool)
        self.assertTrue(mailbox.index.rebuilding)
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 1))


class ProcessIndexTests(TestCase):
    """
    The real worker process.
    """

    @inlineCallbacks
    def test_indexedByWorker(self):
        spool = openSpool(self)
        yield storeMessage(spool, makeMessage("before start"))
        mailbox = yield startIndex(self, spool, process=True)
        yield storeMessage(spool, makeMessage("after start"))
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 2))

    @inlineCallbacks
    def test_workerAtLowestPriority(self):
        """
        The worker runs at the lowest CPU priority: SMTP acceptance wins the
        CPU, indexing uses what is left.
        """
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool, process=True)
        yield storeMessage(spool, makeMessage("indexed"))
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 1))
        pid = mailbox.index.backend.pid
        with open(f"/proc/{pid}/stat") as f:
            nice = int(f.read().rsplit(")", 1)[1].split()[16])
        self.assertEqual(nice, min(19, os.nice(0) + NICENESS))
        if hasattr(os, "SCHED_IDLE"):
            self.assertEqual(os.sched_getscheduler(pid), os.SCHED_IDLE)

    @inlineCallbacks
    def test_workerRestarted(self):
        """
        A worker that dies is started again and catches up with what was
        committed meanwhile.
        """
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool, process=True)
        backend = mailbox.index.backend
        backend._restartDelay = 0.1
        pid = backend.pid
        os.kill(pid, signal.SIGKILL)
        yield storeMessage(spool, makeMessage("while dead"))
        yield waitFor(lambda: backend.pid not in (None, pid))
        yield waitFor(lambda: _count(mailbox).addCallback(lambda n: n == 1))
