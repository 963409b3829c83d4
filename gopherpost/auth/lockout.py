# -*- test-case-name: tests.test_auth_lockout -*-
"""
Lockouts after failed AUTH attempts, kept in the checks' state store
(L{gopherpost.checks.store.IStateStore}: SQLite shared by the node's
processes, or Redis shared by every node).

Failures are counted per client network (an IPv4 address, an IPv6 /64,
as L{gopherpost.checks.abuse.clientNetwork}) and per user name, each
within a window from its first failure.  A client network that reaches
its threshold is locked out; so is a user name.  A locked-out client gets
C{454 4.7.0} without its password being checked, and its attempts no
longer count against anyone.  Each lockout within the store's memory of
earlier ones lasts twice as long as the one before, up to the maximum.

A user's lockout must not let an attacker keep the real user out: it
grows only for the client networks that failed for that user.  Every
other client sees a lockout of the user that never grows beyond the base
duration.  An attacker whose own network is locked out cannot extend
anything, and one who comes back from a new address gets at most one base
duration of lockout of the user per round of failures: the real user,
from an address that never failed, is kept out for at most the base
duration after the last failure, however long the attack goes on.

(Kept as store keys: C{auth-client:<network>}, C{auth-user:<name>} (the
growing lockout), C{auth-user-base:<name>} (the base one) and
C{auth-failed:<name>:<network>}, which marks a network that failed for a
user, for as long as the store remembers lockouts.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from gopherpost.checks.abuse import clientNetwork
from gopherpost.checks.store import BanParameters, IStateStore

__all__ = ["LockoutParameters", "Lockouts", "LockoutsStarted"]


@dataclass(frozen=True)
class LockoutParameters:
    """
    @ivar clientThreshold: failures from one client network within
        L{window} that lock it out (0: never).
    @ivar userThreshold: failures for one user within L{window} that lock
        the user out (0: never).
    @ivar window: seconds failures are counted over.
    @ivar duration: seconds of a first lockout (and of every lockout of a
        user as seen from a network that never failed for them).
    @ivar maxDuration: the longest lockout.
    @ivar memory: seconds an earlier lockout still makes the next one
        longer.
    """

    clientThreshold: int = 5
    userThreshold: int = 10
    window: float = 600.0
    duration: float = 600.0
    maxDuration: float = 86400.0
    memory: float = 7 * 86400.0

    @classmethod
    def fromSettings(cls, settings: Any) -> LockoutParameters:
        """
        The parameters of C{SMTP_AUTH_LOCKOUT_*}.
        """
        return cls(
            clientThreshold=settings.authLockoutFailures,
            userThreshold=settings.authUserLockoutFailures,
            window=settings.authLockoutWindow,
            duration=settings.authLockoutDuration,
            maxDuration=settings.authLockoutMaxDuration,
        )

    def _bans(self, threshold: int, maxDuration: float) -> BanParameters:
        return BanParameters(
            threshold=threshold,
            window=self.window,
            duration=self.duration,
            maxDuration=maxDuration,
            memory=self.memory,
        )

    @property
    def client(self) -> BanParameters:
        """
        The client networks' lockouts.
        """
        return self._bans(self.clientThreshold, self.maxDuration)

    @property
    def user(self) -> BanParameters:
        """
        The users' lockouts, as the networks that failed for them see them.
        """
        return self._bans(self.userThreshold, self.maxDuration)

    @property
    def userBase(self) -> BanParameters:
        """
        The users' lockouts, as every other network sees them.
        """
        return self._bans(self.userThreshold, self.duration)


@dataclass(frozen=True)
class LockoutsStarted:
    """
    What one failure started: the end of the client network's lockout and
    of the user's (the growing one), each L{None} if none started.
    """

    client: float | None = None
    user: float | None = None


def _firstFailure(failure: Failure) -> Failure:
    """
    The failure inside L{defer.FirstError}.
    """
    error = failure.value
    return error.subFailure if isinstance(error, defer.FirstError) else failure


class Lockouts:
    """
    Decides and records AUTH lockouts.

    @param store: where the counters and lockouts live.
    @param clock: an C{IReactorTime}; times are its seconds.
    @param parameters: thresholds and durations.
    """

    def __init__(self, store: IStateStore, clock: Any, parameters: LockoutParameters) -> None:
        self._store = store
        self._clock = clock
        self.parameters = parameters

    @staticmethod
    def network(address: str) -> str:
        """
        The network a client address is counted under.
        """
        return clientNetwork(address)

    def clientLockedUntil(self, address: str) -> defer.Deferred:
        """
        @return: a Deferred firing with the end of the lockout of
            C{address}'s network, or L{None}.
        """
        if self.parameters.clientThreshold <= 0:
            return defer.succeed(None)
        return self._store.bannedUntil(
            "auth-client:" + self.network(address), self._clock.seconds()
        )

    def userLockedUntil(self, user: str, address: str) -> defer.Deferred:
        """
        @param user: the user name (any case).
        @return: a Deferred firing with the end of C{user}'s lockout as a
            client at C{address} sees it, or L{None}.
        """
        if self.parameters.userThreshold <= 0:
            return defer.succeed(None)
        key = user.lower()
        now = self._clock.seconds()

        def growing(until: float | None) -> Any:
            if until is None:
                return None
            # Locked out: for as long as that, if this network failed for
            # the user; else only for the base lockout.
            marker = f"auth-failed:{key}:{self.network(address)}"
            d = self._store.increment(marker, now, self.parameters.memory, 0)
            return d.addCallback(lambda failedHere: until if failedHere > 0 else base())

        def base() -> defer.Deferred:
            return self._store.bannedUntil("auth-user-base:" + key, now)

        return self._store.bannedUntil("auth-user:" + key, now).addCallback(growing)

    def failed(self, address: str, user: str | None) -> defer.Deferred:
        """
        Count a failure of a client at C{address}, for C{user} when a
        password of an existing user was checked (L{None} otherwise).
        Nothing counts while the client's network is locked out.

        @return: a Deferred firing with the L{LockoutsStarted}.
        """
        parameters = self.parameters
        network = self.network(address)
        now = self._clock.seconds()
        d = self.clientLockedUntil(address)

        def count(lockedUntil: float | None) -> Any:
            if lockedUntil is not None:
                return LockoutsStarted()
            calls: list[defer.Deferred] = [defer.succeed(None), defer.succeed(None)]
            if parameters.clientThreshold > 0:
                calls[0] = self._store.addViolation(
                    "auth-client:" + network, now, parameters.client
                )
            if user is not None and parameters.userThreshold > 0:
                key = user.lower()
                calls[1] = self._store.addViolation("auth-user:" + key, now, parameters.user)
                calls.append(
                    self._store.addViolation("auth-user-base:" + key, now, parameters.userBase)
                )
                calls.append(
                    self._store.increment(f"auth-failed:{key}:{network}", now, parameters.memory)
                )
            gathered = defer.gatherResults(calls, consumeErrors=True)
            gathered.addErrback(_firstFailure)
            return gathered.addCallback(lambda r: LockoutsStarted(r[0], r[1]))

        return d.addCallback(count)
