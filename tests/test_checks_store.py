"""
Tests for L{gopherpost.checks.store} and L{gopherpost.checks.redisstore}:
the same decisions on every backend.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from gopherpost.checks.redisstore import RedisStore
from gopherpost.checks.store import (
    BanParameters,
    GreylistParameters,
    IStateStore,
    LocalStore,
    MemoryStore,
    StoreUnavailable,
)
from tests.support.mxchecks import InlineCallbacks
from tests.support.redisserver import startRedis

GREY = GreylistParameters(delay=300, retryWindow=2 * 86400, expiry=35 * 86400, autoWhitelist=5)
BANS = BanParameters(threshold=3, window=600, duration=600, maxDuration=2400, memory=86400)


if TYPE_CHECKING:
    _Base = unittest.TestCase
else:
    _Base = object


class _StoreBehaviour(_Base):
    """
    The decisions every L{IStateStore} makes alike.  Subclasses set
    C{self.store} in C{setUp}.
    """

    store: Any

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IStateStore, self.store))

    @defer.inlineCallbacks
    def test_increment(self) -> InlineCallbacks:
        values = []
        for _ in range(3):
            values.append((yield self.store.increment("k", 100.0, 60.0)))
        values.append((yield self.store.increment("k", 101.0, 60.0, amount=5)))
        other = yield self.store.increment("other", 100.0, 60.0)
        self.assertEqual((values, other), ([1, 2, 3, 8], 1))

    @defer.inlineCallbacks
    def test_greylist(self) -> InlineCallbacks:
        """
        First try, too soon, after the delay, later retries.
        """
        first = yield self.store.greylist("t1", "c", 1000.0, GREY)
        tooSoon = yield self.store.greylist("t1", "c", 1100.0, GREY)
        after = yield self.store.greylist("t1", "c", 1300.0, GREY)
        later = yield self.store.greylist("t1", "c", 1300.0 + 30 * 86400, GREY)
        self.assertEqual([d.wait for d in (first, tooSoon, after, later)], [300, 200, 0, 0])

    @defer.inlineCallbacks
    def test_greylistWindowMissed(self) -> InlineCallbacks:
        """
        A retry after the retry window starts over.
        """
        yield self.store.greylist("t1", "c", 1000.0, GREY)
        late = yield self.store.greylist("t1", "c", 1000.0 + 2 * 86400 + 1, GREY)
        self.assertEqual(late.wait, 300)

    @defer.inlineCallbacks
    def test_greylistExpiry(self) -> InlineCallbacks:
        """
        A triplet that passed is forgotten 35 days after it was last seen.
        """
        yield self.store.greylist("t1", "c", 1000.0, GREY)
        yield self.store.greylist("t1", "c", 1300.0, GREY)
        again = yield self.store.greylist("t1", "c", 1300.0 + 36 * 86400, GREY)
        self.assertEqual(again.wait, 300)

    @defer.inlineCallbacks
    def test_autoWhitelist(self) -> InlineCallbacks:
        """
        Once five triplets of a client passed, new ones pass at once.
        """
        now = 1000.0
        for n in range(5):
            yield self.store.greylist(f"t{n}", "c", now, GREY)
            passed = yield self.store.greylist(f"t{n}", "c", now + 300, GREY)
            self.assertTrue(passed.passed)
            now += 600
        fresh = yield self.store.greylist("new", "c", now, GREY)
        self.assertEqual((fresh.wait, fresh.whitelisted), (0, True))
        otherClient = yield self.store.greylist("new2", "d", now, GREY)
        self.assertEqual(otherClient.wait, 300)

    @defer.inlineCallbacks
    def test_bans(self) -> InlineCallbacks:
        """
        The third violation within the window bans; the next ban lasts
        twice as long, up to the maximum.
        """
        self.assertIsNone((yield self.store.bannedUntil("s", 0.0)))
        results = []
        for t in (0.0, 10.0, 20.0):
            results.append((yield self.store.addViolation("s", t, BANS)))
        self.assertEqual(results, [None, None, 620.0])
        self.assertEqual((yield self.store.bannedUntil("s", 619.0)), 620.0)
        self.assertIsNone((yield self.store.bannedUntil("s", 620.0)))
        self.assertIsNone((yield self.store.bannedUntil("other", 100.0)))
        for t in (700.0, 710.0):
            yield self.store.addViolation("s", t, BANS)
        second = yield self.store.addViolation("s", 720.0, BANS)
        self.assertEqual(second, 720.0 + 1200)
        for t in (3000.0, 3001.0, 3002.0, 6000.0, 6001.0):
            yield self.store.addViolation("s", t, BANS)
        capped = yield self.store.addViolation("s", 6002.0, BANS)
        self.assertEqual(capped, 6002.0 + 2400)

    @defer.inlineCallbacks
    def test_violationWindow(self) -> InlineCallbacks:
        """
        Violations further apart than the window do not add up.
        """
        for t in (0.0, 10.0, 700.0, 710.0):
            self.assertIsNone((yield self.store.addViolation("s", t, BANS)))


class MemoryStoreTests(_StoreBehaviour, unittest.TestCase):
    def setUp(self) -> None:
        self.store = MemoryStore()

    def test_purge(self) -> None:
        self.store.increment("k", 0.0, 60.0)
        self.assertEqual(self.store.purge(59.0), 0)
        self.assertEqual(self.store.purge(60.0), 1)


class LocalStoreTests(_StoreBehaviour, unittest.TestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp() + ".sqlite3")
        self.store = LocalStore(self.path, reactor)
        self.store.open()
        self.addCleanup(self.store.close)

    @defer.inlineCallbacks
    def test_survivesRestart(self) -> InlineCallbacks:
        """
        Greylist entries are still there after the store is reopened (a
        restart), and another store on the same file (another worker
        process) sees them too.
        """
        yield self.store.greylist("t1", "c", 1000.0, GREY)
        other = LocalStore(self.path, reactor)
        self.addCleanup(other.close)
        seen = yield other.greylist("t1", "c", 1300.0, GREY)
        self.assertEqual(seen.wait, 0)
        yield self.store.close()
        reopened = LocalStore(self.path, reactor)
        self.addCleanup(reopened.close)
        again = yield reopened.greylist("t1", "c", 1400.0, GREY)
        self.assertEqual(again.wait, 0)

    @defer.inlineCallbacks
    def test_sharedCounters(self) -> InlineCallbacks:
        """
        Two stores on one file (two workers) count together.
        """
        other = LocalStore(self.path, reactor)
        self.addCleanup(other.close)
        results = yield defer.gatherResults(
            [s.increment("k", 0.0, 60.0) for s in (self.store, other) * 10]
        )
        self.assertEqual(sorted(results), list(range(1, 21)))

    def test_unusablePath(self) -> None:
        store = LocalStore(os.path.join(self.mktemp(), "missing", "x.sqlite3"), reactor)
        self.assertRaises(StoreUnavailable, store.open)

    def test_fileMode(self) -> None:
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)


class RedisStoreTests(_StoreBehaviour, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> InlineCallbacks:  # type: ignore[override]
        self.redis = yield startRedis(self)
        self.store = RedisStore(self.redis.url, reactor, prefix="test:")
        self.addCleanup(self.store.close)

    @defer.inlineCallbacks
    def test_keysHavePrefixAndTTL(self) -> InlineCallbacks:
        import redis

        yield self.store.increment("k", 0.0, 60.0)
        yield self.store.greylist("t1", "c", 1000.0, GREY)
        client = redis.Redis.from_url(self.redis.url)
        self.addCleanup(client.close)
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in client.keys("*"))
        self.assertEqual(keys, ["test:grey:t1", "test:k"])
        for key in keys:
            ttl = client.ttl(key)
            self.assertGreater(ttl, 0, key)

    @defer.inlineCallbacks
    def test_concurrentDecisions(self) -> InlineCallbacks:
        """
        Many concurrent violations from two stores (two nodes) are each
        counted once: exactly one of them starts the ban.
        """
        other = RedisStore(self.redis.url, reactor, prefix="test:")
        self.addCleanup(other.close)
        parameters = BanParameters(threshold=8, window=600, duration=60)
        results = yield defer.gatherResults(
            [s.addViolation("s", 0.0, parameters) for s in (self.store, other) * 4]
        )
        self.assertEqual([r for r in results if r is not None], [60.0])

    @defer.inlineCallbacks
    def test_unavailable(self) -> InlineCallbacks:
        """
        A stopped Redis fails calls with L{StoreUnavailable}, quickly.
        """
        self.redis.stop()
        yield self.assertFailure(self.store.increment("k", 0.0, 60.0), StoreUnavailable)
