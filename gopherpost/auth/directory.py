# -*- test-case-name: tests.test_auth_directory -*-
"""
The users a running server knows: the users file, read at start-up and
again whenever it changes.

Before each password check the file's identity (inode, size, times) is
looked at, at most once a second; when it changed, the file is read again,
as Dovecot's passwd-file does.  So a change made by C{gopherpostctl user}
or by hand takes effect within a second, in every process (inbound
workers included), without a signal.  A file that no longer parses leaves
the users as they were, with one error in the log per change; a file that
is gone means no users.  L{UserDirectory.prepare} does the same in two
steps, for a reload that must validate before it applies anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gopherpost.auth.users import UserRecord, UsersFileError, readUsersFile

__all__ = ["UserDirectory", "CHECK_EVERY"]

_log = Logger()

#: Seconds between two looks at the users file.
CHECK_EVERY = 1.0

_Signature = tuple[Any, ...] | None


def _signature(path: str) -> _Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return ("error", e.errno)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read(path: str) -> dict[str, UserRecord]:
    """
    The users of the file at C{path} by lower-case name; none if it does
    not exist.

    @raise UsersFileError: it cannot be read or is not valid.
    """
    try:
        users = readUsersFile(path)
    except FileNotFoundError:
        return {}
    return {record.key: record for record in users}


class UserDirectory:
    """
    The users of one users file.

    @ivar path: the users file.
    """

    def __init__(self, path: str, clock: IReactorTime, checkEvery: float = CHECK_EVERY) -> None:
        self.path = path
        self._clock = clock
        self._checkEvery = checkEvery
        self._users: dict[str, UserRecord] = {}
        self._signature: _Signature = None
        self._checked = float("-inf")

    def __len__(self) -> int:
        return len(self._users)

    @property
    def exists(self) -> bool:
        """
        Whether the users file existed when it was last read.
        """
        return self._signature is not None

    def get(self, name: str) -> UserRecord | None:
        """
        The user called C{name} (any case), or L{None}.
        """
        return self._users.get(name.lower())

    def load(self) -> int:
        """
        Read the file now.

        @return: how many users it has.
        @raise UsersFileError: it cannot be read or is not valid (nothing
            changes then).
        """
        self.prepare(self.path)()
        return len(self._users)

    def prepare(self, path: str) -> Callable[[], None]:
        """
        Read the users file at C{path} without using it yet.

        @return: a callable that makes it this directory's file and users.
        @raise UsersFileError: it cannot be read or is not valid.
        """
        signature = _signature(path)
        users = _read(path)

        def apply() -> None:
            self.path = path
            self._users = users
            self._signature = signature
            self._checked = self._clock.seconds()

        return apply

    def refresh(self) -> None:
        """
        Read the file again if it changed since it was last read (looking
        at most once every L{CHECK_EVERY} seconds).
        """
        now = self._clock.seconds()
        if now - self._checked < self._checkEvery:
            return
        self._checked = now
        signature = _signature(self.path)
        if signature == self._signature:
            return
        before = len(self._users)
        try:
            self.load()
        except UsersFileError as e:
            # Not tried again until the file changes again.
            self._signature = signature
            _log.error(
                "Users file not re-read, the users from before ({count}) stay: {problem}",
                count=before,
                problem=str(e),
            )
            return
        _log.info(
            "Users file {path} re-read, users: {count}", path=self.path, count=len(self._users)
        )
