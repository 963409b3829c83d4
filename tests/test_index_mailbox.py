"""
The mailbox: deleting from the spool and the index durably, messages still
queued for the relay, pruning (capture mode's retention), events.
"""

from __future__ import annotations

import os

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from gopherpost.index.query import SearchQuery
from gopherpost.index.retention import AllOf, IRetentionPolicy, KeepDays, KeepNewest
from tests.support.mailstore import makeMessage, openSpool, startIndex, storeMessage, waitFor


def _files(spool, envelope):
    directory = os.path.join(spool.path, envelope.dateDirectory)
    return sorted(n for n in os.listdir(directory) if n.startswith(envelope.queueId))


class DeleteTests(TestCase):
    @inlineCallbacks
    def test_deleteRemovesFilesDurably(self):
        """
        Deleting removes the envelope and every content file, and the
        message does not come back when the index is rebuilt.
        """
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool)
        envelope = yield storeMessage(
            spool,
            makeMessage(),
            recipients=[("a@gopherpost.test", True), ("b@gopherpost.test", True)],
        )
        kept = yield storeMessage(spool, makeMessage("kept"))
        yield waitFor(lambda: mailbox.counts().addCallback(lambda c: c[0] == 2))
        self.assertEqual(len(_files(spool, envelope)), 3)
        events = []
        mailbox.subscribe(lambda kind, data: events.append((kind, data)))
        removed = yield mailbox.delete([envelope.queueId, "NOSUCH"])
        self.assertEqual(removed, [envelope.queueId])
        self.assertEqual(_files(spool, envelope), [])
        self.assertIn(("delete", {"ID": envelope.queueId}), events)
        yield mailbox.index.stopService()
        spool.removeObserver(mailbox.index)
        os.unlink(mailbox.index.databasePath)
        mailbox = yield startIndex(self, spool)
        yield waitFor(lambda: mailbox.counts().addCallback(lambda c: c[0] == 1))
        page = yield mailbox.summaries(SearchQuery(), 0, 10)
        self.assertEqual([m["ID"] for m in page["messages"]], [kept.queueId])

    @inlineCallbacks
    def test_relayPendingKept(self):
        """
        A message still queued for a remote recipient keeps its files (the
        relay queue needs them) but leaves the index for good; once the
        relay is done, or without a relay (capture mode), it goes.
        """
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool)
        mixed = [("bob@gopherpost.test", True), ("far@remote.test", False)]
        pending = yield storeMessage(spool, makeMessage("pending"), recipients=mixed)
        done = yield storeMessage(spool, makeMessage("done"), recipients=mixed)
        with open(
            os.path.join(spool.path, done.dateDirectory, done.queueId + ".relayed"), "w"
        ) as f:
            f.write("{}")
        yield waitFor(lambda: mailbox.counts().addCallback(lambda c: c[0] == 2))
        yield mailbox.delete(None)
        self.assertEqual(len(_files(spool, pending)), 3)
        self.assertEqual(_files(spool, done), [])
        self.assertEqual((yield mailbox.counts()), (0, 0))
        yield mailbox.index.stopService()
        spool.removeObserver(mailbox.index)
        mailbox = yield startIndex(self, spool)
        yield mailbox.index.read(lambda db: None)
        self.assertEqual((yield mailbox.counts()), (0, 0), "hidden, not indexed again")

    @inlineCallbacks
    def test_noRelayNothingPending(self):
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool, everything=True, relayRuns=False)
        envelope = yield storeMessage(spool, makeMessage(), recipients=[("far@remote.test", False)])
        yield waitFor(lambda: mailbox.counts().addCallback(lambda c: c[0] == 1))
        yield mailbox.delete([envelope.queueId])
        self.assertEqual(_files(spool, envelope), [])


class RetentionTests(TestCase):
    def test_interfaces(self) -> None:
        for policy in (KeepNewest(1), KeepDays(1), AllOf([])):
            self.assertTrue(verifyObject(IRetentionPolicy, policy))

    @inlineCallbacks
    def test_keepNewest(self):
        spool = openSpool(self)
        mailbox = yield startIndex(
            self, spool, everything=True, relayRuns=False, retention=KeepNewest(2)
        )
        envelopes = []
        for i in range(4):
            envelopes.append((yield storeMessage(spool, makeMessage(f"m{i}"))))
        yield waitFor(
            lambda: mailbox.summaries(SearchQuery(), 0, 10).addCallback(
                lambda p: [m["Subject"] for m in p["messages"]] == ["m3", "m2"]
            )
        )
        self.assertEqual(_files(spool, envelopes[0]), [])
        self.assertEqual(len(_files(spool, envelopes[3])), 2)

    @inlineCallbacks
    def test_keepDays(self):
        spool = openSpool(self)
        mailbox = yield startIndex(self, spool)
        yield storeMessage(spool, makeMessage("one"))
        yield waitFor(lambda: mailbox.counts().addCallback(lambda c: c[0] == 1))
        now = __import__("time").time()
        stale = yield mailbox.index.read(lambda db: KeepDays(1).expired(db, now + 2 * 86400))
        fresh = yield mailbox.index.read(lambda db: KeepDays(1).expired(db, now))
        both = yield mailbox.index.read(
            lambda db: AllOf([KeepDays(1), KeepNewest(5)]).expired(db, now + 2 * 86400)
        )
        self.assertEqual((len(stale), len(fresh), len(both)), (1, 0, 1))
