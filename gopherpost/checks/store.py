# -*- test-case-name: tests.test_checks_store -*-
"""
The state the abuse checks keep: rate counters, greylist triplets, bans
(and the AUTH lockout of the submission work, through the same ban calls).

L{IStateStore} is the seam.  Its operations are whole decisions, made
atomically by the store, so that several processes or nodes sharing one
store never double-count or lose an update:

  - L{LocalStore}: SQLite in the spool's state directory.  Every process of
    a node (C{SMTP_WORKERS}) opens the same file, SQLite's locking makes
    each decision atomic across them, and greylist entries survive
    restarts.  Its calls run in one thread of their own.
  - L{MemoryStore}: the same decisions in a dict, synchronous; for tests
    and for one-process tools.
  - L{gopherpost.checks.redisstore.RedisStore}: shared by every node.

The decisions themselves (L{Decisions}) are written once, over a small
key-value view that each backend provides inside its transaction.  Every
value carries its own expiry time from the caller's clock, so decisions do
not depend on the backend's expiry (which only collects garbage).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

__all__ = [
    "BanParameters",
    "Decisions",
    "GreylistDecision",
    "GreylistParameters",
    "IStateStore",
    "LocalStore",
    "MemoryStore",
    "StoreUnavailable",
]


class StoreUnavailable(Exception):
    """
    The store could not be reached or answered too late.
    """


@dataclass(frozen=True)
class GreylistParameters:
    """
    Greylisting as postgrey does it by default.

    @ivar delay: seconds before a new triplet may pass.
    @ivar retryWindow: seconds after the first attempt during which a retry
        must come; later, the triplet starts over.
    @ivar expiry: seconds a triplet that passed (or a whitelisted client)
        is remembered after it was last seen.
    @ivar autoWhitelist: a client with this many triplets that passed is no
        longer greylisted (0: never).
    """

    delay: float = 300.0
    retryWindow: float = 2 * 86400.0
    expiry: float = 35 * 86400.0
    autoWhitelist: int = 5


@dataclass(frozen=True)
class GreylistDecision:
    """
    @ivar wait: seconds the client must still wait; 0 means it passes.
    @ivar whitelisted: whether it passed because its client is
        auto-whitelisted.
    """

    wait: int
    whitelisted: bool = False

    @property
    def passed(self) -> bool:
        """
        Whether the triplet may pass now.
        """
        return self.wait <= 0


@dataclass(frozen=True)
class BanParameters:
    """
    @ivar threshold: violations within L{window} that start a ban.
    @ivar window: seconds violations are counted over (from the first).
    @ivar duration: seconds of the first ban; each further ban within
        L{memory} lasts twice as long as the one before, up to
        L{maxDuration}.
    @ivar maxDuration: the longest ban.
    @ivar memory: seconds an earlier ban still counts as a repeat.
    """

    threshold: int = 10
    window: float = 600.0
    duration: float = 600.0
    maxDuration: float = 86400.0
    memory: float = 7 * 86400.0


class IStateStore(Interface):
    """
    Atomic decisions over shared state.  Every method returns a
    L{defer.Deferred}; it fails with L{StoreUnavailable} when the store
    cannot be used now.  C{now} is the caller's clock, in seconds.
    """

    def increment(key: str, now: float, lifetime: float, amount: int = 1) -> defer.Deferred:
        """
        Add C{amount} to the counter C{key}, which is created at 0 and
        forgotten C{lifetime} seconds after it was created.

        @return: a L{defer.Deferred} firing with the new value.
        """

    def greylist(
        triplet: str, client: str, now: float, parameters: GreylistParameters
    ) -> defer.Deferred:
        """
        Record an attempt of C{triplet} from C{client} and decide.

        @return: a L{defer.Deferred} firing with a L{GreylistDecision}.
        """

    def addViolation(subject: str, now: float, parameters: BanParameters) -> defer.Deferred:
        """
        Count one violation of C{subject} (a client network, a user name);
        ban it when it reaches the threshold.

        @return: a L{defer.Deferred} firing with the time the ban that this
            violation started ends, or L{None}.
        """

    def bannedUntil(subject: str, now: float) -> defer.Deferred:
        """
        @return: a L{defer.Deferred} firing with the time C{subject}'s ban
            ends, or L{None} when it is not banned.
        """

    def close() -> defer.Deferred:
        """
        Release connections and threads.
        """


class KeyValues(Protocol):
    """
    The view of a store the decisions work on, inside one transaction.
    """

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any], expires: float) -> None: ...

    def delete(self, key: str) -> None: ...


class Decisions:
    """
    The decisions, written once over L{KeyValues}; each backend runs them
    inside a transaction of its own.
    """

    @staticmethod
    def _live(kv: KeyValues, key: str, now: float) -> dict[str, Any] | None:
        value = kv.get(key)
        if value is None or value.get("expires", math.inf) <= now:
            return None
        return value

    @classmethod
    def increment(cls, kv: KeyValues, key: str, now: float, lifetime: float, amount: int) -> int:
        value = cls._live(kv, key, now) or {"n": 0, "expires": now + lifetime}
        value["n"] = int(value["n"]) + amount
        kv.put(key, value, value["expires"])
        return int(value["n"])

    @classmethod
    def greylist(
        cls,
        kv: KeyValues,
        triplet: str,
        client: str,
        now: float,
        parameters: GreylistParameters,
    ) -> GreylistDecision:
        clientKey = "awl:" + client
        tripletKey = "grey:" + triplet
        awl = cls._live(kv, clientKey, now)
        if parameters.autoWhitelist and awl and awl["count"] >= parameters.autoWhitelist:
            awl["expires"] = now + parameters.expiry
            kv.put(clientKey, awl, awl["expires"])
            return GreylistDecision(0, whitelisted=True)
        entry = cls._live(kv, tripletKey, now)
        if (
            entry is not None
            and not entry["passed"]
            and now - entry["first"] > parameters.retryWindow
        ):
            entry = None
        if entry is None:
            entry = {"first": now, "passed": False, "expires": now + parameters.retryWindow}
            kv.put(tripletKey, entry, entry["expires"])
            return GreylistDecision(math.ceil(parameters.delay))
        if not entry["passed"]:
            waited = now - entry["first"]
            if waited < parameters.delay:
                return GreylistDecision(max(1, math.ceil(parameters.delay - waited)))
            entry["passed"] = True
            awl = awl or {"count": 0}
            awl["count"] = int(awl["count"]) + 1
            awl["expires"] = now + parameters.expiry
            kv.put(clientKey, awl, awl["expires"])
        entry["expires"] = now + parameters.expiry
        kv.put(tripletKey, entry, entry["expires"])
        return GreylistDecision(0)

    @classmethod
    def addViolation(
        cls, kv: KeyValues, subject: str, now: float, parameters: BanParameters
    ) -> float | None:
        countKey = "violations:" + subject
        count = cls._live(kv, countKey, now) or {"n": 0, "expires": now + parameters.window}
        count["n"] = int(count["n"]) + 1
        if count["n"] < parameters.threshold:
            kv.put(countKey, count, count["expires"])
            return None
        kv.delete(countKey)
        historyKey = "bans:" + subject
        history = cls._live(kv, historyKey, now) or {"n": 0}
        duration = min(parameters.duration * 2 ** int(history["n"]), parameters.maxDuration)
        history["n"] = int(history["n"]) + 1
        history["expires"] = now + parameters.memory
        kv.put(historyKey, history, history["expires"])
        until = now + duration
        kv.put("ban:" + subject, {"until": until, "expires": until}, until)
        return until

    @classmethod
    def bannedUntil(cls, kv: KeyValues, subject: str, now: float) -> float | None:
        ban = cls._live(kv, "ban:" + subject, now)
        return None if ban is None else float(ban["until"])


class _DictView:
    def __init__(self, data: dict[str, tuple[dict[str, Any], float]]) -> None:
        self._data = data

    def get(self, key: str) -> dict[str, Any] | None:
        found = self._data.get(key)
        return None if found is None else dict(found[0])

    def put(self, key: str, value: dict[str, Any], expires: float) -> None:
        self._data[key] = (dict(value), expires)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)


@implementer(IStateStore)
class MemoryStore:
    """
    L{IStateStore} in a dict of this process; answers at once.
    """

    def __init__(self) -> None:
        self._data: dict[str, tuple[dict[str, Any], float]] = {}
        self._view = _DictView(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def _decide(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        return defer.maybeDeferred(f, self._view, *args)

    def increment(self, key: str, now: float, lifetime: float, amount: int = 1) -> defer.Deferred:
        return self._decide(Decisions.increment, key, now, lifetime, amount)

    def greylist(
        self, triplet: str, client: str, now: float, parameters: GreylistParameters
    ) -> defer.Deferred:
        return self._decide(Decisions.greylist, triplet, client, now, parameters)

    def addViolation(self, subject: str, now: float, parameters: BanParameters) -> defer.Deferred:
        return self._decide(Decisions.addViolation, subject, now, parameters)

    def bannedUntil(self, subject: str, now: float) -> defer.Deferred:
        return self._decide(Decisions.bannedUntil, subject, now)

    def purge(self, now: float) -> int:
        """
        Forget expired entries.

        @return: how many.
        """
        expired = [k for k, (_, expires) in self._data.items() if expires <= now]
        for key in expired:
            del self._data[key]
        return len(expired)

    def close(self) -> defer.Deferred:
        return defer.succeed(None)


class _SQLiteView:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._connection.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value: dict[str, Any] = json.loads(row[0])
        return value

    def put(self, key: str, value: dict[str, Any], expires: float) -> None:
        self._connection.execute(
            "INSERT OR REPLACE INTO state (key, value, expires) VALUES (?, ?, ?)",
            (key, json.dumps(value), expires),
        )

    def delete(self, key: str) -> None:
        self._connection.execute("DELETE FROM state WHERE key = ?", (key,))


#: Decisions between two purges of expired rows.
_PURGE_EVERY = 1000


@implementer(IStateStore)
class LocalStore:
    """
    L{IStateStore} in an SQLite file that every process of a node shares.

    @ivar path: the database file.
    """

    def __init__(self, path: str, reactor: Any, busyTimeout: float = 5.0) -> None:
        """
        @param path: the database file (created, mode 0600, when missing).
        @param reactor: runs the results back on the reactor thread.
        @param busyTimeout: seconds to wait for another process's lock.
        """
        self.path = path
        self._reactor = reactor
        self._busyTimeout = busyTimeout
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="gopherpost-state")
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._decisions = 0
        self._started = False

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            connection = sqlite3.connect(
                self.path,
                timeout=self._busyTimeout,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS state "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)"
            )
            connection.execute("CREATE INDEX IF NOT EXISTS state_expires ON state (expires)")
            self._connection = connection
        return self._connection

    def open(self) -> None:
        """
        Open (and create) the database now, in this thread: at start-up, so
        that an unusable file stops the server before it binds.

        @raise StoreUnavailable: when it cannot be opened.
        """
        try:
            with self._lock:
                self._connect()
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"cannot open {self.path}: {e}") from None

    def _transaction(self, f: Callable[..., Any], now: float, *args: Any) -> Any:
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = f(_SQLiteView(connection), *args)
                self._decisions += 1
                if self._decisions % _PURGE_EVERY == 0:
                    connection.execute("DELETE FROM state WHERE expires <= ?", (now,))
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

    def _decide(self, f: Callable[..., Any], now: float, *args: Any) -> defer.Deferred:
        if not self._started:
            self._pool.start()
            self._started = True

        def unavailable(failure: Any) -> None:
            failure.trap(sqlite3.Error, OSError)
            raise StoreUnavailable(f"{self.path}: {failure.value}")

        d = deferToThreadPool(self._reactor, self._pool, self._transaction, f, now, *args)
        return d.addErrback(unavailable)

    def increment(self, key: str, now: float, lifetime: float, amount: int = 1) -> defer.Deferred:
        return self._decide(Decisions.increment, now, key, now, lifetime, amount)

    def greylist(
        self, triplet: str, client: str, now: float, parameters: GreylistParameters
    ) -> defer.Deferred:
        return self._decide(Decisions.greylist, now, triplet, client, now, parameters)

    def addViolation(self, subject: str, now: float, parameters: BanParameters) -> defer.Deferred:
        return self._decide(Decisions.addViolation, now, subject, now, parameters)

    def bannedUntil(self, subject: str, now: float) -> defer.Deferred:
        return self._decide(Decisions.bannedUntil, now, subject, now)

    def close(self) -> defer.Deferred:
        """
        Stop the thread and close the database.
        """
        if self._started:
            self._pool.stop()
            self._started = False
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        return defer.succeed(None)
