"""
Tests for L{gopherpost.webhooks.records}: the settled marks, the event
journal, the inbound webhook's start, and the start-up scan of the spool.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.spool import Spool
from gopherpost.webhooks.records import (
    EVENTS,
    INBOUND,
    EventRecord,
    WebhookStore,
    dateOf,
    startOfDate,
    unsettledMessages,
)

DAY = 86400.0


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.state = os.path.abspath(self.mktemp())
        self.store = WebhookStore(self.state)
        self.store.open()
        self.addCleanup(self.store.close)

    def test_layout(self) -> None:
        """
        The files live in private directories under the state directory.
        """
        for kind in (INBOUND, EVENTS):
            path = os.path.join(self.state, "webhooks", kind)
            self.assertTrue(os.path.isdir(path))
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o700)

    def test_since(self) -> None:
        self.assertIsNone(self.store.since())
        self.store.setSince(1796119200.5)
        self.assertEqual(WebhookStore(self.state).since(), 1796119200.5)
        self.store.clearSince()
        self.assertIsNone(self.store.since())
        self.store.clearSince()  # idempotent

    def test_settled(self) -> None:
        self.store.settle(INBOUND, "2026-12-01", "Q1", "delivered")
        self.store.settle(INBOUND, "2026-12-01", "Q2", "gone")
        self.store.settle(INBOUND, "2026-12-02", "Q3", "skipped")
        self.assertEqual(
            self.store.settled(INBOUND, "2026-12-01"), {"Q1": "delivered", "Q2": "gone"}
        )
        self.assertEqual(self.store.settled(EVENTS, "2026-12-01"), {})
        path = os.path.join(self.state, "webhooks", INBOUND, "2026-12-01.settled")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_tornLine(self) -> None:
        """
        A last line without its newline (a crash in the middle of a write)
        does not count.
        """
        self.store.settle(INBOUND, "2026-12-01", "Q1", "delivered")
        path = os.path.join(self.state, "webhooks", INBOUND, "2026-12-01.settled")
        with open(path, "ab") as f:
            f.write(b"Q2 deliv")
        self.assertEqual(self.store.settled(INBOUND, "2026-12-01"), {"Q1": "delivered"})

    def test_events(self) -> None:
        first = EventRecord(
            "evt_1", startOfDate("2026-12-01") + 5, "Q1", '{"type":"queued","x":"é"}'.encode()
        )
        second = EventRecord("evt_2", startOfDate("2026-12-01") + 6, "Q1", b'{"type":"delivered"}')
        self.store.appendEvent(first)
        self.store.appendEvent(second)
        self.assertEqual(self.store.events("2026-12-01"), [first, second])
        self.assertEqual(self.store.dates(EVENTS), ["2026-12-01"])
        self.assertEqual(EventRecord.fromLine(first.toJSON().encode()), first)

    def test_damagedEvent(self) -> None:
        record = EventRecord("evt_1", startOfDate("2026-12-01"), "Q1", b"{}")
        self.store.appendEvent(record)
        path = os.path.join(self.state, "webhooks", EVENTS, "2026-12-01.events")
        with open(path, "ab") as f:
            f.write(b'{"id": "evt_2"}\n{"id":')
        self.assertEqual(self.store.events("2026-12-01"), [record])

    def test_prune(self) -> None:
        self.store.settle(INBOUND, "2026-11-01", "Q1", "delivered")
        self.store.appendEvent(EventRecord("e", startOfDate("2026-11-01"), "Q1", b"{}"))
        self.store.settle(EVENTS, "2026-11-01", "e", "delivered")
        self.store.prune(INBOUND, "2026-11-01")
        self.store.prune(EVENTS, "2026-11-01")
        self.assertEqual(self.store.dates(INBOUND), [])
        self.assertEqual(self.store.dates(EVENTS), [])
        # Appending again after a prune starts a new file.
        self.store.settle(INBOUND, "2026-11-01", "Q2", "delivered")
        self.assertEqual(self.store.settled(INBOUND, "2026-11-01"), {"Q2": "delivered"})

    def test_manyFiles(self) -> None:
        """
        Only a few append files are kept open, whatever the days written.
        """
        before = len(os.listdir("/proc/self/fd"))
        for day in range(1, 29):
            self.store.settle(INBOUND, f"2026-02-{day:02d}", "Q", "delivered")
        self.assertLessEqual(len(os.listdir("/proc/self/fd")) - before, 4)
        self.assertEqual(len(self.store.dates(INBOUND)), 28)

    def test_badNames(self) -> None:
        with self.assertRaises(ValueError):
            self.store.settle("outbound", "2026-12-01", "Q", "delivered")
        with self.assertRaises(ValueError):
            self.store.settle(INBOUND, "../../etc", "Q", "delivered")


class DatesTests(SynchronousTestCase):
    def test_dates(self) -> None:
        self.assertEqual(dateOf(startOfDate("2026-12-01")), "2026-12-01")
        self.assertEqual(dateOf(startOfDate("2026-12-01") - 1), "2026-11-30")
        self.assertEqual(startOfDate("1970-01-02"), DAY)


class UnsettledMessagesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(startOfDate("2026-12-01") + 3600)
        self.spool = Spool(os.path.abspath(self.mktemp()), self.clock, runInThread=self._now)
        self.spool.open()
        self.store = WebhookStore(self.spool.stateDirectory)
        self.store.open()
        self.addCleanup(self.store.close)

    @staticmethod
    def _now(f, *args):
        from twisted.internet.defer import maybeDeferred

        return maybeDeferred(f, *args)

    def commit(self) -> str:
        d = self.spool.store(b"Subject: x\r\n\r\nx\r\n", "a@x.test", [("b@gopherpost.test", True)])
        return self.successResultOf(d).queueId

    def test_unsettled(self) -> None:
        """
        Every committed message not settled, from C{since}'s day on.
        """
        old = self.commit()
        self.clock.advance(DAY)
        first, second, third = self.commit(), self.commit(), self.commit()
        self.store.settle(INBOUND, "2026-12-02", second, "delivered")
        found = list(unsettledMessages(self.spool, self.store, startOfDate("2026-12-02")))
        self.assertEqual(sorted(found), sorted([("2026-12-02", first), ("2026-12-02", third)]))
        everything = list(unsettledMessages(self.spool, self.store, startOfDate("2026-12-01")))
        self.assertIn(("2026-12-01", old), everything)

    def test_uncommitted(self) -> None:
        """
        A message without an envelope (never acknowledged) is not listed.
        """
        queueId = self.commit()
        os.unlink(os.path.join(self.spool.path, "2026-12-01", queueId + ".envelope"))
        self.assertEqual(list(unsettledMessages(self.spool, self.store, 0.0)), [])
