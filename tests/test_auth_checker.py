"""
Tests for L{gopherpost.auth.checker}: the password checker, the realm and
avatar, the portal shared with the allow-list, and the verifier threads.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import Interface, implementer
from zope.interface.verify import verifyObject

from gopherpost.auth.checker import (
    VERIFY_NICENESS,
    VERIFY_THREADS,
    AuthenticatedUser,
    PasswordChecker,
    SubmissionRealm,
    VerifierPool,
    addPasswordChecker,
)
from gopherpost.auth.directory import UserDirectory
from gopherpost.auth.interfaces import IAuthenticatedUser
from gopherpost.inbound.access import AllowListChecker, PeerAddress
from tests.support.auth import writeUsers


class _Counting:
    """
    Runs checks at once, remembering what it ran.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, f: Any, *args: Any) -> defer.Deferred[Any]:
        self.calls.append(f)
        return defer.maybeDeferred(f, *args)


def _directory(testCase: SynchronousTestCase, users: list) -> UserDirectory:
    path = writeUsers(os.path.join(testCase.mktemp(), "users"), users)
    directory = UserDirectory(path, Clock())
    directory.load()
    return directory


class CheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = _directory(self, [("alice@example.org", "right", ["@example.net"])])
        self.counting = _Counting()
        self.checker = PasswordChecker(self.directory, self.counting)

    def check(self, user: bytes, password: bytes) -> Any:
        return self.checker.requestAvatarId(UsernamePassword(user, password))

    def test_interface(self) -> None:
        verifyObject(ICredentialsChecker, self.checker)

    def test_rightPassword(self) -> None:
        """
        The avatar id is the name as the file writes it, whatever case the
        client used.
        """
        self.assertEqual(
            self.successResultOf(self.check(b"ALICE@example.org", b"right")),
            b"alice@example.org",
        )

    def test_wrongPassword(self) -> None:
        self.failureResultOf(self.check(b"alice@example.org", b"wrong"), UnauthorizedLogin)

    def test_unknownUserCostsACheck(self) -> None:
        """
        A user name that does not exist is refused after a check of the same
        cost as a real one.
        """
        self.failureResultOf(self.check(b"bob", b"right"), UnauthorizedLogin)
        self.assertEqual(len(self.counting.calls), 1)
        decoy = self.counting.calls[0].__self__
        real = self.directory.get("alice@example.org").hash  # type: ignore[union-attr]
        self.assertEqual((decoy.n, decoy.r, decoy.p), (2**15, 8, 1))
        self.assertNotEqual(decoy, real)

    def test_notUTF8(self) -> None:
        self.failureResultOf(self.check(b"\xff", b"right"), UnauthorizedLogin)
        self.failureResultOf(self.check(b"alice@example.org", b"\xff"), UnauthorizedLogin)
        self.assertEqual(self.counting.calls, [])


class _Client(Interface):
    pass


@implementer(IRealm)
class _AllowListRealm:
    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Any:
        return (_Client, ("client", avatarId), lambda: None)


class RealmTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = _directory(self, [("alice@example.org", "right", ["@example.net"])])
        self.checker = PasswordChecker(self.directory, _Counting())

    def test_avatar(self) -> None:
        """
        The avatar carries the user's name and sender rights.
        """
        realm = SubmissionRealm(self.directory)
        verifyObject(IRealm, realm)
        interface, avatar, logout = realm.requestAvatar(
            b"alice@example.org", None, IAuthenticatedUser
        )
        self.assertIs(interface, IAuthenticatedUser)
        verifyObject(IAuthenticatedUser, avatar)
        self.assertEqual(avatar.name, "alice@example.org")
        self.assertTrue(avatar.rights.owns("alice@example.org"))
        self.assertTrue(avatar.rights.owns("anyone@example.net"))
        self.assertFalse(avatar.rights.owns("bob@example.org"))
        self.assertIsNone(logout())
        self.assertIn("alice@example.org", repr(avatar))

    def test_goneUser(self) -> None:
        """
        A user removed while their password was checked is refused.
        """
        self.assertRaises(
            UnauthorizedLogin,
            SubmissionRealm(self.directory).requestAvatar,
            b"bob",
            None,
            IAuthenticatedUser,
        )

    def test_sharedPortal(self) -> None:
        """
        The allow-list's portal takes the password checker beside its own:
        addresses still get the allow-list's avatars, passwords get
        authenticated users.
        """
        portal = Portal(
            _AllowListRealm(), [AllowListChecker([ipaddress.ip_network("192.0.2.0/24")], [])]
        )
        addPasswordChecker(portal, self.checker, self.directory)
        # (main's PeerAddress does not declare ICredentials; the inbound
        # rework's does.)
        allowed: Any = PeerAddress("192.0.2.7", 25)
        refused: Any = PeerAddress("198.51.100.1")
        _, client, _ = self.successResultOf(portal.login(allowed, None, _Client))
        self.assertEqual(client, ("client", b"192.0.2.7"))
        self.failureResultOf(portal.login(refused, None, _Client))
        _, user, _ = self.successResultOf(
            portal.login(UsernamePassword(b"alice@example.org", b"right"), None, IAuthenticatedUser)
        )
        self.assertIsInstance(user, AuthenticatedUser)
        self.failureResultOf(
            portal.login(UsernamePassword(b"alice@example.org", b"x"), None, IAuthenticatedUser),
            UnauthorizedLogin,
        )


class VerifierPoolTests(TestCase):
    """
    L{VerifierPool}: real threads.
    """

    def test_floodQueues(self) -> defer.Deferred[None]:
        """
        Eight checks at once run in the pool's own threads, never more than
        L{VERIFY_THREADS} of them, off the reactor thread and nicer than it;
        all answer.
        """
        directory = _directory(self, [("alice", "right")])
        verifier = VerifierPool(reactor)
        verifier.startService()
        self.addCleanup(verifier.stopService)
        checker = PasswordChecker(directory, verifier.run)
        threadNames: set[str] = set()
        record = directory.get("alice")
        assert record is not None
        original = record.hash.verify

        niceness: set[int] = set()

        def verify(password: str) -> bool:
            threadNames.add(threading.current_thread().name)
            niceness.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return original(password)

        self.patch(type(record.hash), "verify", lambda self_, password: verify(password))
        checks = [
            checker.requestAvatarId(UsernamePassword(b"alice", b"right" if i % 2 else b"wrong"))
            for i in range(8)
        ]
        self.assertEqual(verifier.pending, 8)
        self.assertLessEqual(len(verifier.pool.threads), VERIFY_THREADS)
        results = defer.DeferredList(checks, consumeErrors=True)

        def done(outcomes: list[tuple[bool, Any]]) -> None:
            self.assertEqual([ok for ok, _ in outcomes], [i % 2 == 1 for i in range(8)])
            self.assertEqual(verifier.pending, 0)
            self.assertLessEqual(len(threadNames), VERIFY_THREADS)
            self.assertNotIn(threading.main_thread().name, threadNames)
            self.assertTrue(all("gopherpost-auth" in name for name in threadNames))
            # Nicer than the reactor's thread, which keeps its priority.
            mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            self.assertEqual(niceness, {min(19, mine + VERIFY_NICENESS)})

        return results.addCallback(done)
