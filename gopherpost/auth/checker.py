# -*- test-case-name: tests.test_auth_checker -*-
"""
Passwords through L{twisted.cred}: the checker the inbound portal gets
beside its allow-list checker, the realm that makes an
L{IAuthenticatedUser} avatar with the user's sender rights, and the small
thread pool the scrypt checks run in.

scrypt is slow on purpose (tens of milliseconds and 32 MiB per check), so
it never runs on the reactor: L{VerifierPool} has L{VERIFY_THREADS}
threads of its own, apart from the DNS and spool threads, and a flood of
attempts waits in its queue rather than starting more threads (the
connection limits bound that queue: one check at a time per session).
Its threads run at a lower scheduling priority (nice L{VERIFY_NICENESS},
for those threads only), so that a flood of checks slows down the checks,
not the reactor thread that serves every other session.
A user name that does not exist costs the same check against a decoy
hash, so answer times do not tell which names exist.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from gopherpost.auth.directory import UserDirectory
from gopherpost.auth.interfaces import IAuthenticatedUser
from gopherpost.auth.passwords import decoyHash
from gopherpost.auth.senders import SenderRights

__all__ = [
    "VERIFY_NICENESS",
    "VERIFY_THREADS",
    "AuthenticatedUser",
    "PasswordChecker",
    "SubmissionRealm",
    "VerifierPool",
    "addPasswordChecker",
]

#: Threads checking passwords (scrypt is CPU-bound: one per core here).
VERIFY_THREADS = 2
#: How much nicer than the rest of the process the checking threads are.
VERIFY_NICENESS = 10

_niced = threading.local()


def _lowerPriority() -> None:
    """
    Make the calling thread (only it: Linux's setpriority takes a thread id)
    nicer, once.
    """
    if getattr(_niced, "done", False):
        return
    _niced.done = True
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + VERIFY_NICENESS)
    except OSError:
        pass


def _nicely(f: Callable[..., Any], *args: Any) -> Any:
    _lowerPriority()
    return f(*args)


class VerifierPool(Service):
    """
    The password checks' own threads, started and stopped with the server.

    @ivar pool: the L{ThreadPool}.
    """

    def __init__(self, reactor: Any, threads: int = VERIFY_THREADS) -> None:
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="gopherpost-auth")
        #: Checks asked for and not finished (running or queued).
        self.pending = 0

    def run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        C{f(*args)} in one of the threads (queued while all are busy).
        """
        self.pending += 1

        def done(result: object) -> object:
            self.pending -= 1
            return result

        return deferToThreadPool(self._reactor, self.pool, _nicely, f, *args).addBoth(done)

    def startService(self) -> None:
        Service.startService(self)
        self.pool.start()

    def stopService(self) -> None:
        Service.stopService(self)
        self.pool.stop()


@implementer(IAuthenticatedUser)
class AuthenticatedUser:
    """
    A user who authenticated (see L{IAuthenticatedUser}).
    """

    def __init__(self, name: str, rights: SenderRights) -> None:
        self.name = name
        self.rights = rights

    def __repr__(self) -> str:
        return f"<AuthenticatedUser {self.name}>"


@implementer(ICredentialsChecker)
class PasswordChecker:
    """
    Checks user names and passwords against the users file.

    The avatar id is the user name as the file writes it (UTF-8).

    @param directory: the users.
    @param runInThread: C{runInThread(f, *args) -> Deferred}
        (L{VerifierPool.run}).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, directory: UserDirectory, runInThread: Callable[..., Deferred[Any]]) -> None:
        self._directory = directory
        self._runInThread = runInThread
        self._decoy = decoyHash()

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        """
        The user's name if the password is right, else L{UnauthorizedLogin}.
        """
        try:
            name = credentials.username.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            return fail(UnauthorizedLogin("credentials are not UTF-8"))
        record = self._directory.get(name)
        hashed = record.hash if record is not None else self._decoy

        def checked(ok: bool) -> bytes | tuple[()]:
            if ok and record is not None:
                return record.name.encode("utf-8")
            raise UnauthorizedLogin("no such user" if record is None else "wrong password")

        return self._runInThread(hashed.verify, password).addCallback(checked)


@implementer(IRealm)
class SubmissionRealm:
    """
    Makes the L{IAuthenticatedUser} of a user the password checker admitted;
    any other avatar comes from C{fallback} (the allow-list's realm).
    """

    def __init__(self, directory: UserDirectory, fallback: IRealm | None = None) -> None:
        self._directory = directory
        self._fallback = fallback

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Any:
        """
        C{(IAuthenticatedUser, user, logout)}, or the fallback's avatar.
        """
        if IAuthenticatedUser in interfaces:
            name = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
            record = self._directory.get(name)
            if record is None:
                # Removed while the password was being checked.
                raise UnauthorizedLogin(f"user {name} is gone")
            return (IAuthenticatedUser, AuthenticatedUser(record.name, record.rights), _noLogout)
        if self._fallback is not None:
            return self._fallback.requestAvatar(avatarId, mind, *interfaces)
        raise NotImplementedError("this realm only makes authenticated users")


def _noLogout() -> None:
    return None


def addPasswordChecker(portal: Portal, checker: PasswordChecker, directory: UserDirectory) -> None:
    """
    Give an existing portal (the allow-list's) the password checker, and a
    realm that makes authenticated users besides what it made before.
    """
    portal.registerChecker(checker)
    portal.realm = SubmissionRealm(directory, portal.realm)
