# -*- test-case-name: tests.test_checks_failover -*-
"""
A shared store with a local one behind it: when Redis is down or slow, the
checks go on with the node's own state (with a warning and a metric) and
never refuse or lose mail because of Redis; Redis is tried again by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.checks.metrics import CheckMetrics
from gopherpost.checks.store import BanParameters, GreylistParameters, IStateStore

__all__ = ["FailoverStore"]

_log = Logger()


@implementer(IStateStore)
class FailoverStore:
    """
    Uses C{primary} while it answers in time, C{fallback} otherwise.

    @ivar failovers: how many calls went to the fallback because the
        primary failed or was down.
    @ivar available: whether the primary is thought to be up.
    """

    def __init__(
        self,
        primary: IStateStore,
        fallback: IStateStore,
        clock: Any,
        timeout: float = 1.0,
        retryAfter: float = 5.0,
        name: str = "Redis",
        metrics: CheckMetrics | None = None,
    ) -> None:
        """
        @param primary: the shared store (L{gopherpost.checks.redisstore.RedisStore}).
        @param fallback: the local store.
        @param clock: an C{IReactorTime}.
        @param timeout: seconds the primary may take for one call.
        @param retryAfter: seconds to wait before trying a failed primary
            again.
        @param name: how log lines call the primary.
        @param metrics: counts C{smtp_state_store_failovers}.
        """
        self._primary = primary
        self._fallback = fallback
        self._clock = clock
        self.timeout = timeout
        self.retryAfter = retryAfter
        self.name = name
        self.available = True
        self._retryAt = 0.0
        self.failovers = 0
        self._metrics = metrics

    def _failedOver(self) -> None:
        self.failovers += 1
        if self._metrics is not None:
            self._metrics.inc("smtp_state_store_failovers")

    def _call(self, method: Callable[[IStateStore], defer.Deferred]) -> defer.Deferred:
        now = self._clock.seconds()
        if not self.available and now < self._retryAt:
            self._failedOver()
            return method(self._fallback)

        def succeeded(result: object) -> object:
            if not self.available:
                self.available = True
                _log.info("{name} answers again: shared state in use", name=self.name)
            return result

        def failed(failure: Failure) -> defer.Deferred:
            self._failedOver()
            if self.available:
                _log.warn(
                    "{name} unavailable ({problem}): using this node's own state, "
                    "trying {name} again every {retry:g} s",
                    name=self.name,
                    problem=failure.getErrorMessage() or repr(failure.value),
                    retry=self.retryAfter,
                )
            self.available = False
            self._retryAt = self._clock.seconds() + self.retryAfter
            return method(self._fallback)

        d = defer.maybeDeferred(method, self._primary)
        d.addTimeout(self.timeout, self._clock)
        return d.addCallbacks(succeeded, failed)

    def increment(self, key: str, now: float, lifetime: float, amount: int = 1) -> defer.Deferred:
        return self._call(lambda s: s.increment(key, now, lifetime, amount))

    def greylist(
        self, triplet: str, client: str, now: float, parameters: GreylistParameters
    ) -> defer.Deferred:
        return self._call(lambda s: s.greylist(triplet, client, now, parameters))

    def addViolation(self, subject: str, now: float, parameters: BanParameters) -> defer.Deferred:
        return self._call(lambda s: s.addViolation(subject, now, parameters))

    def bannedUntil(self, subject: str, now: float) -> defer.Deferred:
        return self._call(lambda s: s.bannedUntil(subject, now))

    def close(self) -> defer.Deferred:
        return defer.gatherResults([self._primary.close(), self._fallback.close()])
