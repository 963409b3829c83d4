"""
Tests for L{gopherpost.tlspolicy.reportstore}: per domain and day counts,
written durably and read back.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.tlspolicy.reportstore import (
    FailureDetail,
    PolicyKey,
    TLSReportStore,
    dayOf,
)

DAY = 86400.0
# 2026-12-01T12:00:00Z
NOON = 1796126400.0
STS = PolicyKey("sts", ("version: STSv1", "mode: enforce"), ("*.example.test",))
NONE = PolicyKey("no-policy-found")


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOON)
        self.directory = self.mktemp()
        self.store = self.newStore()

    def newStore(self) -> TLSReportStore:
        store = TLSReportStore(self.directory, self.clock)
        store.load()
        return store

    def test_dayOf(self) -> None:
        self.assertEqual(dayOf(NOON), "2026-12-01")
        self.assertEqual(dayOf(NOON + 12 * 3600 - 1), "2026-12-01")
        self.assertEqual(dayOf(NOON + 12 * 3600), "2026-12-02")

    def test_counts(self) -> None:
        """
        Successes and failures per policy, failures by kind.
        """
        mismatch = FailureDetail("certificate-host-mismatch", "mx.example.test", "192.0.2.1", "why")
        self.store.recordSuccess("example.test", STS)
        self.store.recordSuccess("example.test", STS)
        self.store.recordFailure("example.test", STS, mismatch)
        self.store.recordFailure("example.test", STS, mismatch)
        self.store.recordFailure("other.test", NONE, FailureDetail("starttls-not-supported"))
        [(domain, day), (other, _)] = list(self.store.domains("2026-12-01"))
        self.assertEqual((domain, other), ("example.test", "other.test"))
        counts = day.policies[STS]
        self.assertEqual((counts.successes, counts.failures), (2, {mismatch: 2}))
        self.assertEqual(counts.failureCount, 2)

    def test_durable(self) -> None:
        """
        Flushed counts are there after a restart, reported flags too.
        """
        self.store.recordSuccess("example.test", STS)
        self.store.recordFailure(
            "example.test", STS, FailureDetail("tlsa-invalid", "mx", "ip", "r")
        )
        self.successResultOf(self.store.flush())
        self.assertEqual(os.listdir(self.directory), ["2026-12-01.json"])
        again = self.newStore()
        [(domain, day)] = list(again.domains("2026-12-01"))
        self.assertEqual(day.policies[STS].successes, 1)
        self.assertEqual(list(day.policies[STS].failures.values()), [1])
        again.markReported("2026-12-01", "example.test")
        self.successResultOf(again.flush())
        [(_, day)] = list(self.newStore().domains("2026-12-01"))
        self.assertTrue(day.reported)

    def test_unflushedNotWritten(self) -> None:
        self.store.recordSuccess("example.test", STS)
        self.assertEqual(os.listdir(self.directory), [])

    def test_daysApart(self) -> None:
        self.store.recordSuccess("example.test", STS)
        self.clock.advance(DAY)
        self.store.recordSuccess("example.test", STS)
        self.assertEqual(self.store.days(), ["2026-12-01", "2026-12-02"])

    def test_prune(self) -> None:
        """
        Days older than a week are dropped, on disk too.
        """
        self.store.recordSuccess("example.test", STS)
        self.successResultOf(self.store.flush())
        self.clock.advance(8 * DAY)
        self.store.recordSuccess("example.test", STS)
        self.successResultOf(self.store.flush())
        self.assertEqual(self.store.days(), ["2026-12-09"])
        self.assertEqual(os.listdir(self.directory), ["2026-12-09.json"])

    def test_longReason(self) -> None:
        self.store.recordFailure(
            "a.test", NONE, FailureDetail("validation-failure", reason="x" * 500)
        )
        [(_, day)] = list(self.store.domains("2026-12-01"))
        [detail] = day.policies[NONE].failures
        self.assertEqual(len(detail.reason), 200)

    def test_badFileIgnored(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, "2026-11-30.json"), "wb") as f:
            f.write(b"[1, 2")
        self.assertEqual(self.newStore().days(), [])
