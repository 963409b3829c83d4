# -*- test-case-name: tests.test_checks_store,tests.test_checks_failover -*-
"""
L{IStateStore} in Redis, shared by every GopherPost node (C{SMTP_REDIS_URL}).

redis-py (Debian's C{python3-redis}) runs in a small thread pool of its own,
so no Redis call ever blocks the reactor thread, with short socket timeouts.
txredisapi would avoid the threads but is packaged neither by Debian nor
updated for every Python; redis-py is, and it speaks TLS (C{rediss://}),
passwords and ACL users from the URL.

Counters are one C{INCRBY} and C{EXPIRE} in a Lua script.  The other
decisions are L{gopherpost.checks.store.Decisions}, the same code as the
local store's, run as an optimistic transaction: every key read is
C{WATCH}ed first and the writes go in one C{MULTI}/C{EXEC}, which Redis
refuses (and redis-py retries) when another node changed a key in between.
Every key has a TTL and starts with the prefix (C{SMTP_REDIS_PREFIX}).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from gopherpost.checks.store import (
    BanParameters,
    Decisions,
    GreylistParameters,
    IStateStore,
    StoreUnavailable,
)
from gopherpost.config import redactURL

__all__ = ["REDIS_THREADS", "RedisStore"]

#: Threads that wait for Redis.
REDIS_THREADS = 4

_INCREMENT = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return value
"""


class _WatchedView:
    """
    Reads through a watching pipeline, buffers the writes.
    """

    def __init__(self, pipe: Any, prefix: str, now: float) -> None:
        self._pipe = pipe
        self._prefix = prefix
        self._now = now
        self.writes: dict[str, tuple[dict[str, Any], float] | None] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self.writes:
            written = self.writes[key]
            return None if written is None else dict(written[0])
        name = self._prefix + key
        self._pipe.watch(name)
        raw = self._pipe.get(name)
        if raw is None:
            return None
        try:
            value: dict[str, Any] = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any], expires: float) -> None:
        self.writes[key] = (dict(value), expires)

    def delete(self, key: str) -> None:
        self.writes[key] = None

    def queueWrites(self) -> None:
        self._pipe.multi()
        for key, written in self.writes.items():
            name = self._prefix + key
            if written is None:
                self._pipe.delete(name)
            else:
                value, expires = written
                ttl = max(1, math.ceil(expires - self._now))
                self._pipe.set(name, json.dumps(value), ex=ttl)


@implementer(IStateStore)
class RedisStore:
    """
    Decisions in Redis.

    @ivar prefix: the start of every key.
    """

    def __init__(
        self,
        url: str,
        reactor: Any,
        prefix: str = "gopherpost:",
        socketTimeout: float = 1.0,
        client: Any = None,
    ) -> None:
        """
        @param url: C{redis://[[user]:password@]host[:port][/db]},
            C{rediss://...} for TLS, or C{unix:///path}.
        @param reactor: runs results back on the reactor thread.
        @param prefix: see L{prefix}.
        @param socketTimeout: seconds to connect and for each reply.
        @param client: a C{redis.Redis} to use instead of one built from
            C{url} (tests).
        """
        import redis

        self._redis = redis
        self.url = url
        #: the URL as log lines show it (no password).
        self.displayURL = redactURL(url)
        self.prefix = prefix
        self._reactor = reactor
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=socketTimeout,
                socket_connect_timeout=socketTimeout,
                health_check_interval=30,
            )
        self._client = client
        self._increment = client.register_script(_INCREMENT)
        self._pool = ThreadPool(minthreads=0, maxthreads=REDIS_THREADS, name="gopherpost-redis")
        self._started = False

    def _inThread(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        if not self._started:
            self._pool.start()
            self._started = True

        def unavailable(failure: Failure) -> None:
            failure.trap(self._redis.RedisError, OSError)
            raise StoreUnavailable(f"Redis {self.displayURL}: {failure.value}")

        return deferToThreadPool(self._reactor, self._pool, f, *args).addErrback(unavailable)

    def _transaction(self, f: Callable[..., Any], now: float, *args: Any) -> Any:
        outcome: list[Any] = []

        def attempt(pipe: Any) -> None:
            view = _WatchedView(pipe, self.prefix, now)
            result = f(view, *args)
            view.queueWrites()
            outcome[:] = [result]

        self._client.transaction(attempt)
        return outcome[0]

    def ping(self) -> defer.Deferred:
        """
        @return: a L{defer.Deferred} firing when Redis answered C{PING}.
        """
        return self._inThread(self._client.ping)

    def increment(self, key: str, now: float, lifetime: float, amount: int = 1) -> defer.Deferred:
        ttl = max(1, math.ceil(lifetime))
        return self._inThread(
            lambda: int(self._increment(keys=[self.prefix + key], args=[amount, ttl]))
        )

    def greylist(
        self, triplet: str, client: str, now: float, parameters: GreylistParameters
    ) -> defer.Deferred:
        return self._inThread(
            self._transaction, Decisions.greylist, now, triplet, client, now, parameters
        )

    def addViolation(self, subject: str, now: float, parameters: BanParameters) -> defer.Deferred:
        return self._inThread(
            self._transaction, Decisions.addViolation, now, subject, now, parameters
        )

    def bannedUntil(self, subject: str, now: float) -> defer.Deferred:
        return self._inThread(self._transaction, Decisions.bannedUntil, now, subject, now)

    def close(self) -> defer.Deferred:
        """
        Stop the threads and drop the connections.
        """
        if self._started:
            self._pool.stop()
            self._started = False
        self._client.close() if hasattr(self._client, "close") else None
        return defer.succeed(None)
