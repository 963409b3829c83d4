"""
Tests for L{gopherpost.checks.failover}: Redis down or slow never stops the
checks, and it is used again once it answers.
"""

from __future__ import annotations

from typing import cast

from twisted.internet import defer, reactor, task
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from gopherpost.checks.failover import FailoverStore
from gopherpost.checks.metrics import CheckMetrics
from gopherpost.checks.redisstore import RedisStore
from gopherpost.checks.store import GreylistParameters, IStateStore, MemoryStore
from tests.support.mxchecks import InlineCallbacks
from tests.support.redisserver import startRedis


class _Hanging(MemoryStore):
    """
    A store that never answers (a Redis that accepts and stays silent).
    """

    def increment(self, *args: object, **kw: object) -> defer.Deferred:
        return defer.Deferred()


class FailoverTests(unittest.TestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def warnings(self) -> list[dict]:
        return [e for e in self.events if "unavailable" in str(e.get("log_format", ""))]

    def test_interface(self) -> None:
        store = FailoverStore(MemoryStore(), MemoryStore(), task.Clock())
        self.assertTrue(verifyObject(IStateStore, store))

    def test_slowPrimary(self) -> None:
        """
        A primary slower than the timeout is left for the fallback; it is
        not asked again until the retry interval passed.
        """
        clock = task.Clock()
        fallback = MemoryStore()
        metrics = CheckMetrics()
        store = FailoverStore(
            _Hanging(), fallback, clock, timeout=1.0, retryAfter=5.0, metrics=metrics
        )
        results: list[object] = []
        store.increment("k", 0.0, 60.0).addCallback(results.append)
        self.assertEqual(results, [])
        clock.advance(1.0)
        self.assertEqual(results, [1])
        self.assertFalse(store.available)
        store.increment("k", 1.0, 60.0).addCallback(results.append)
        self.assertEqual(results, [1, 2])
        self.assertEqual(metrics.value("smtp_state_store_failovers"), 2)
        self.assertEqual(len(self.warnings()), 1)

    @defer.inlineCallbacks
    def test_redisStoppedAndBack(self) -> InlineCallbacks:
        """
        Redis killed: decisions go on locally, with one warning; Redis
        started again on the same port: it is used again by itself.
        """
        redis = yield startRedis(self)
        shared = RedisStore(redis.url, reactor, prefix="t:")
        local = MemoryStore()
        store = FailoverStore(shared, local, reactor, timeout=2.0, retryAfter=0.2)
        self.addCleanup(store.close)
        grey = GreylistParameters()
        first = yield store.greylist("t1", "c", 1000.0, grey)
        self.assertEqual(first.wait, 300)
        self.assertEqual(len(local), 0)
        redis.stop()
        during = yield store.greylist("t1", "c", 1300.0, grey)
        self.assertEqual(during.wait, 300)  # the local store had not seen it
        self.assertFalse(store.available)
        self.assertEqual(len(self.warnings()), 1)
        yield redis.start()
        yield task.deferLater(reactor, 0.3, lambda: None)
        after = yield store.increment("k", 0.0, 60.0)
        self.assertEqual(after, 1)
        self.assertTrue(store.available)
