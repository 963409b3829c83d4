"""
Tests for L{gopherpost.auth.lockout}: lockouts per client network and per
user, growing, and what a locked-out attacker can do to the real user.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost.auth.lockout import LockoutParameters, Lockouts, LockoutsStarted
from gopherpost.checks.store import LocalStore, MemoryStore

ATTACKER = "198.51.100.7"
ATTACKER_NEIGHBOUR = "198.51.100.8"
OTHER_ATTACKER = "203.0.113.9"
REAL_USER = "192.0.2.1"

PARAMETERS = LockoutParameters(
    clientThreshold=3, userThreshold=5, window=600, duration=600, maxDuration=4800
)


class LockoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.lockouts = Lockouts(MemoryStore(), self.clock, PARAMETERS)

    def failFrom(self, address: str, user: str | None = "alice", times: int = 1) -> LockoutsStarted:
        started = LockoutsStarted()
        for _ in range(times):
            started = self.successResultOf(self.lockouts.failed(address, user))
        return started

    def clientLocked(self, address: str) -> float | None:
        result: float | None = self.successResultOf(self.lockouts.clientLockedUntil(address))
        return result

    def userLocked(self, address: str, user: str = "alice") -> float | None:
        result: float | None = self.successResultOf(self.lockouts.userLockedUntil(user, address))
        return result

    def test_clientThreshold(self) -> None:
        """
        The third failure from one address locks its network out for the
        base duration.
        """
        self.assertEqual(self.failFrom(ATTACKER, None, 2), LockoutsStarted())
        self.assertIsNone(self.clientLocked(ATTACKER))
        started = self.failFrom(ATTACKER, None)
        now = self.clock.seconds()
        self.assertEqual(started.client, now + 600)
        self.assertEqual(self.clientLocked(ATTACKER), now + 600)
        self.assertIsNone(self.clientLocked(REAL_USER))

    def test_ipv6Network(self) -> None:
        """
        IPv6 clients are counted by their /64.
        """
        self.failFrom("2001:db8:1:2::1", None, 2)
        self.failFrom("2001:db8:1:2:ffff::9", None)
        self.assertIsNotNone(self.clientLocked("2001:db8:1:2::77"))
        self.assertIsNone(self.clientLocked("2001:db8:1:3::1"))

    def test_ipv4Address(self) -> None:
        """
        IPv4 clients are counted by their address alone.
        """
        self.failFrom(ATTACKER, None, 3)
        self.assertIsNone(self.clientLocked(ATTACKER_NEIGHBOUR))

    def test_windowForgets(self) -> None:
        """
        Failures further apart than the window never add up.
        """
        for _ in range(6):
            self.failFrom(ATTACKER, None)
            self.clock.advance(301)
            self.failFrom(ATTACKER, None)
            self.clock.advance(301)
        self.assertIsNone(self.clientLocked(ATTACKER))

    def test_growing(self) -> None:
        """
        Each lockout of a network lasts twice as long as the one before, up
        to the maximum.
        """
        durations = []
        for _ in range(5):
            started = self.failFrom(ATTACKER, None, 3)
            assert started.client is not None
            durations.append(started.client - self.clock.seconds())
            self.clock.advance(started.client - self.clock.seconds() + 1)
        self.assertEqual(durations, [600, 1200, 2400, 4800, 4800])

    def test_lockedClientIsNotCounted(self) -> None:
        """
        While a network is locked out its failures count against nobody.
        """
        self.failFrom(ATTACKER, "alice", 3)
        for _ in range(10):
            self.assertEqual(self.failFrom(ATTACKER, "alice"), LockoutsStarted())
        self.assertIsNone(self.userLocked(REAL_USER))

    def test_userThreshold(self) -> None:
        """
        Failures for one user from several networks lock the user out.
        """
        self.failFrom(ATTACKER, "alice", 2)
        self.failFrom(OTHER_ATTACKER, "Alice", 2)
        self.assertIsNone(self.userLocked(REAL_USER))
        started = self.failFrom("192.0.2.200", "ALICE")
        self.assertEqual(started.user, self.clock.seconds() + 600)
        self.assertEqual(self.userLocked(REAL_USER), self.clock.seconds() + 600)
        self.assertIsNone(self.userLocked(REAL_USER, "bob"))

    def test_unknownUserNotCounted(self) -> None:
        """
        Failures without a user (unknown names, malformed) count only for
        the network.
        """
        for address in ("192.0.2.50", "192.0.2.51", "192.0.2.52"):
            self.failFrom(address, None, 2)
        self.assertIsNone(self.userLocked(REAL_USER))

    def test_realUserNotKeptOut(self) -> None:
        """
        An attack that goes on from new addresses makes the user's lockout
        grow for those addresses, but a client that never failed for the
        user is kept out for at most the base duration after each round.
        """
        attackers = iter(f"203.0.113.{i}" for i in range(1, 200))
        for round in range(4):
            # A round: five failures from new addresses, two each at most.
            for _ in range(3):
                self.failFrom(next(attackers), "alice", 2)
            now = self.clock.seconds()
            real = self.userLocked(REAL_USER)
            self.assertEqual(real, now + 600, f"round {round}")
            attacked = self.userLocked("203.0.113.1")
            self.assertEqual(attacked, now + 600 * 2**round, f"round {round}")
            # The real user is in again after the base duration.
            self.clock.advance(601)
            self.assertIsNone(self.userLocked(REAL_USER))

    def test_off(self) -> None:
        """
        A threshold of 0 turns that lockout off.
        """
        lockouts = Lockouts(
            MemoryStore(), self.clock, LockoutParameters(clientThreshold=0, userThreshold=0)
        )
        for _ in range(20):
            self.assertEqual(
                self.successResultOf(lockouts.failed(ATTACKER, "alice")), LockoutsStarted()
            )
        self.assertIsNone(self.successResultOf(lockouts.clientLockedUntil(ATTACKER)))
        self.assertIsNone(self.successResultOf(lockouts.userLockedUntil("alice", ATTACKER)))

    def test_fromSettings(self) -> None:
        settings: Any = type(
            "S",
            (),
            {
                "authLockoutFailures": 4,
                "authUserLockoutFailures": 9,
                "authLockoutWindow": 60.0,
                "authLockoutDuration": 30.0,
                "authLockoutMaxDuration": 90.0,
            },
        )()
        parameters = LockoutParameters.fromSettings(settings)
        self.assertEqual(
            (parameters.clientThreshold, parameters.userThreshold, parameters.window),
            (4, 9, 60.0),
        )
        self.assertEqual(parameters.user.maxDuration, 90.0)
        self.assertEqual(parameters.userBase.maxDuration, 30.0)


class LocalStoreLockoutTests(TestCase):
    """
    The same decisions in the node's SQLite store, which every process of
    the node opens.
    """

    @defer.inlineCallbacks
    def test_sharedFile(self) -> Any:
        """
        Failures counted through two store objects on one file add up.
        """
        path = self.mktemp()
        clock = Clock()
        clock.advance(5000)
        stores = [LocalStore(path, reactor), LocalStore(path, reactor)]
        for store in stores:
            store.open()
            self.addCleanup(store.close)
        first, second = (Lockouts(store, clock, PARAMETERS) for store in stores)
        yield first.failed(ATTACKER, None)
        yield second.failed(ATTACKER, None)
        started = yield first.failed(ATTACKER, None)
        self.assertEqual(started.client, 5600.0)
        until = yield second.clientLockedUntil(ATTACKER)
        self.assertEqual(until, 5600.0)
