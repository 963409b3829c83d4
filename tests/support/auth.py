"""
What the authenticated-submission tests share: users files with real
scrypt hashes (made once per password and cost), a session context, a
verifier that checks at once, and an L{AuthService} over a memory store.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import provider

from gopherpost.auth.directory import UserDirectory
from gopherpost.auth.lockout import LockoutParameters, Lockouts
from gopherpost.auth.passwords import MIN_N, ScryptHash
from gopherpost.auth.service import AuthService
from gopherpost.checks.store import MemoryStore
from gopherpost.webui.password import hashPassword

__all__ = [
    "TEST_USER",
    "TEST_PASSWORD",
    "addTestUser",
    "captureLogs",
    "FakeContext",
    "InstantVerifier",
    "SyncVerifier",
    "TLS",
    "hashFor",
    "makeService",
    "usersText",
    "writeUsers",
]

#: Stands for an encrypted session's C{context.tls}.
TLS = object()

#: The user L{addTestUser} adds (it owns its own address).
TEST_USER = "alice@gopherpost.test"
TEST_PASSWORD = "alice's password"


def captureLogs(testCase: SynchronousTestCase) -> list[LogEvent]:
    """
    The log events of the rest of the test, in order.
    """
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    testCase.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


@functools.lru_cache(maxsize=64)
def hashFor(password: str, n: int = MIN_N) -> ScryptHash:
    """
    A real scrypt hash of C{password} (the cheapest the users file takes),
    made once.
    """
    return hashPassword(password, n=n)


def usersText(users: Iterable[tuple[str, str] | tuple[str, str, Sequence[str]]]) -> str:
    """
    A users file: C{(name, password)} or C{(name, password, senders)}.
    """
    lines = ["# test users"]
    for user in users:
        name, password = user[0], user[1]
        senders = user[2] if len(user) > 2 else ()
        line = f"{name} {hashFor(password)}"
        if senders:
            line += " " + ",".join(senders)
        lines.append(line)
    return "\n".join(lines) + "\n"


def writeUsers(path: str, users: Iterable[Any]) -> str:
    """
    Write a users file at C{path}.

    @return: C{path}.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(usersText(users))
    return path


def addTestUser(spoolPath: str, users: Iterable[Any] = ((TEST_USER, TEST_PASSWORD),)) -> str:
    """
    Give the server that will run on C{spoolPath} a users file (in its
    default place, the spool's state directory), for clients of the
    submission listeners, which must authenticate.

    @return: the users file.
    """
    return writeUsers(os.path.join(spoolPath, ".gopherpost", "users"), users)


@dataclass
class FakeContext:
    """
    The session context AUTH reads and sets (L{IAuthContext}).
    """

    clientAddress: str = "192.0.2.10"
    role: str = "submission"
    tls: Any = TLS
    helo: str | None = "client.example.test"
    extended: bool = True
    serverName: str = "mx.example.test"
    authenticatedUser: str | None = None
    authMechanism: str | None = None


class SyncVerifier(Service):
    """
    Stands for the verifier pool: runs the check at once, in this thread.
    """

    pending = 0

    def run(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        return defer.maybeDeferred(f, *args)


class InstantVerifier(SyncVerifier):
    """
    Answers a check as scrypt would, without scrypt (for fuzzing): only
    L{TEST_PASSWORD} against its own hash.
    """

    def run(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        hashed = getattr(f, "__self__", None)
        return defer.succeed(hashed == hashFor(TEST_PASSWORD) and args == (TEST_PASSWORD,))


def makeService(
    directory: str,
    users: Iterable[Any] = (),
    clock: Clock | None = None,
    parameters: LockoutParameters | None = None,
    store: Any = None,
    verifier: Service | None = None,
    **kwargs: Any,
) -> AuthService:
    """
    An L{AuthService} whose users file (in C{directory}) holds C{users},
    with a memory store and a verifier that checks at once.
    """
    clock = clock or Clock()
    path = writeUsers(os.path.join(directory, "users"), users)
    users_ = UserDirectory(path, clock)
    users_.load()
    lockouts = Lockouts(
        store if store is not None else MemoryStore(), clock, parameters or LockoutParameters()
    )
    return AuthService(
        users_,
        lockouts,
        verifier or SyncVerifier(),  # type: ignore[arg-type]
        clock,
        **kwargs,
    )
