"""
The index database: schema, inserts, counts kept by triggers, paging,
tags, deletion, damage detection.
"""

from __future__ import annotations

import os
import time

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.index.database import IndexCorrupt, IndexDatabase, isoTime, removeDatabase
from gopherpost.index.query import SearchQuery, parseQuery
from gopherpost.index.records import buildRecord
from gopherpost.spool import Envelope, Recipient
from tests.support.mailstore import makeMessage


def _record(i: int, received: float | None = None, **kwargs):
    raw = makeMessage(f"subject {i}", **kwargs)
    envelope = Envelope(
        queueId=f"{i:019X}",
        dateDirectory="2026-12-01",
        received=received if received is not None else 1796119200.0 + i,
        sender="alice@client.test",
        recipients=(Recipient("bob@gopherpost.test", "t", True),),
        clientAddress="127.0.0.1",
        helo="client.test",
        size=len(raw),
        tls=False,
    )
    return buildRecord(envelope, raw)


class DatabaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp() + ".sqlite3")
        self.db = IndexDatabase.open(self.path, check=True)
        self.addCleanup(self.db.close)

    def test_insertOnce(self) -> None:
        self.assertEqual(self.db.insert([_record(1), _record(2)]), [f"{1:019X}", f"{2:019X}"])
        self.assertEqual(self.db.insert([_record(1)]), [])
        self.assertEqual(self.db.counts(), (2, 2))

    def test_countsOfBatches(self) -> None:
        """
        A batch counts the messages it added: not those indexed before,
        not one that comes twice in it, and a batch of nothing changes
        nothing.
        """
        self.db.insert([_record(1), _record(2)])
        self.assertEqual(self.db.insert([_record(2), _record(3), _record(3)]), [f"{3:019X}"])
        self.db.insert([])
        self.assertEqual(self.db.counts(), (3, 3))

    def test_countsFollowChanges(self) -> None:
        self.db.insert([_record(i) for i in range(5)])
        ids = [f"{i:019X}" for i in range(5)]
        self.assertEqual(self.db.setRead(ids[:2], True), ids[:2])
        self.assertEqual(self.db.setRead(ids[:2], True), [])
        self.assertEqual(self.db.counts(), (5, 3))
        self.db.delete(ids[:1])
        self.assertEqual(self.db.counts(), (4, 3))
        self.db.setRead(None, True)
        self.assertEqual(self.db.counts(), (4, 0))
        self.assertEqual(self.db.count(parseQuery("subject:3")), (1, 0))

    def test_newestFirstPaging(self) -> None:
        self.db.insert([_record(i, received=1000.0 + (i % 3)) for i in range(9)])
        everything = [m["ID"] for m in self.db.search(SearchQuery(), 0, 100)]
        pages = [
            m["ID"] for start in range(0, 9, 4) for m in self.db.search(SearchQuery(), start, 4)
        ]
        self.assertEqual(pages, everything)
        received = [(self.db.message(id) or {})["received"] for id in everything]
        self.assertEqual(received, sorted(received, reverse=True))
        older = self.db.search(SearchQuery(), 0, 100, before=1002.0)
        self.assertTrue(all((self.db.message(m["ID"]) or {})["received"] < 1002.0 for m in older))
        self.assertEqual(self.db.latestId(), everything[0])

    def test_pageAgreesWithSearchAndCount(self) -> None:
        """
        L{IndexDatabase.page} (one pass, or FTS5 counting words alone)
        gives the page of L{IndexDatabase.search} and the counts of
        L{IndexDatabase.count}, whatever the share of read messages, for
        words, conditions, read states, exclusions and received times.
        """
        self.db.insert([_record(i) for i in range(20)])
        ids = [f"{i:019X}" for i in range(20)]
        queries = [
            "subject",
            "subject -3",
            "subject is:unread",
            "subject is:read",
            "subject:1",
            "subject:1 is:unread",
            "-subject:1",
            "-7",
            "subject:1 -7",
            "is:unread -subject -7",
            "after:2026-12-01T10:00:05Z -1",
            "is:unread",
            "has:attachment",
            "is:unread -has:attachment",
            "subject after:2026-12-01T10:00:05Z",
            "after:2026-12-01T10:00:05Z before:2026-12-01T10:00:12Z",
            "subject before:2026-12-01T10:00:12Z -is:read",
        ]
        for read in ([], ids[:3], ids[:10], ids[:17], ids):
            self.db.setRead(None, False)
            self.db.setRead(read, True)
            for text in queries:
                query = parseQuery(text, "UTC")
                for start, limit, before in ((0, 50, None), (2, 5, None), (0, 50, 1796119215.0)):
                    summaries, matching, unread = self.db.page(query, start, limit, before)
                    self.assertEqual(
                        [m["ID"] for m in summaries],
                        [m["ID"] for m in self.db.search(query, start, limit, before)],
                        (text, len(read), start, before),
                    )
                    every = self.db.search(query, 0, 1000, before)
                    expected = (len(every), sum(1 for m in every if not m["Read"]))
                    self.assertEqual((matching, unread), expected, (text, len(read), before))
                    self.assertEqual(self.db.count(query, before), expected, text)

    def test_deleteRemovesTagsAndText(self) -> None:
        self.db.insert([_record(1, headers={"X-Tags": "t1"}), _record(2)])
        self.db.delete([f"{1:019X}"])
        self.assertEqual(self.db.tagNames(), [])
        self.assertEqual(self.db.search(parseQuery("subject"), 0, 10)[0]["ID"], f"{2:019X}")
        rows = self.db._db.execute("SELECT count(*) FROM fulltext").fetchone()[0]
        self.assertEqual(rows, 1)

    def test_hideAndKnown(self) -> None:
        self.db.insert([_record(1)])
        self.db.hide([(f"{1:019X}", "2026-12-01")])
        self.db.skip([("X", "2026-12-02")])
        self.assertEqual(self.db.counts(), (0, 0))
        self.assertEqual(self.db.known(), {f"{1:019X}": "2026-12-01", "X": "2026-12-02"})
        self.db.forget(["X"])
        self.assertNotIn("X", self.db.known())

    def test_damage(self) -> None:
        self.db.close()
        with open(self.path, "wb") as f:
            f.write(b"garbage" * 1000)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.unlink(self.path + suffix)
        self.assertRaises(IndexCorrupt, IndexDatabase.open, self.path, check=True)
        removeDatabase(self.path)
        self.assertFalse(os.path.exists(self.path))
        self.db = IndexDatabase.open(self.path)
        self.assertEqual(self.db.counts(), (0, 0))

    def test_isoTime(self) -> None:
        self.assertEqual(isoTime(1796119200.25), "2026-12-01T10:00:00.250Z")
        self.assertTrue(isoTime(time.time()).endswith("Z"))


class OrderTests(SynchronousTestCase):
    def test_receivedOrderWhateverTheInsertOrder(self) -> None:
        """
        A rebuild indexes the newest first; lists and word searches still
        come newest first (rowids follow the received time).
        """
        db = IndexDatabase.open(self.mktemp() + ".sqlite3")
        self.addCleanup(db.close)
        db.insert([_record(i, received=2000.0 - i) for i in range(6)])
        expected = [f"{i:019X}" for i in range(6)]
        self.assertEqual([m["ID"] for m in db.search(SearchQuery(), 0, 10)], expected)
        self.assertEqual([m["ID"] for m in db.search(parseQuery("subject"), 0, 10)], expected)
        self.assertEqual([m["ID"] for m in db.search(parseQuery("subject"), 2, 2)], expected[2:4])
        self.assertEqual(db.count(parseQuery("subject")), (6, 6))
        self.assertEqual([id for id, _ in db.oldest(2)], expected[-1:-3:-1])
