# -*- test-case-name: tests.test_auth_users -*-
"""
The users file (C{SMTP_USERS_FILE}): one user per line, comments kept::

    # GopherPost users: NAME HASH [SENDER,...]
    alice@example.org scrypt:32768:8:1$7cOQ...$5f0e...
    bob scrypt:32768:8:1$Jx1p...$a3c4... bob@example.org,*@example.net

A line holds the user name, the password hash (L{gopherpost.auth.passwords})
and optionally the sender patterns the user owns besides their own name
(L{gopherpost.auth.senders}), comma-separated, the fields separated by
spaces or tabs.  Blank lines and lines starting with C{#} are comments.
User names are unique whatever their case, and are matched in any case.

L{UsersFile} keeps every line it does not change as it was, so an edit by
C{gopherpostctl user} leaves comments, order and spacing alone.
L{updateUsersFile} rewrites the file atomically: a temporary file in the
same directory, the old file's mode and owner, fsync, rename, fsync of the
directory; one writer at a time (a lock on the directory).
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from gopherpost.auth.passwords import ScryptHash, parseUserHash
from gopherpost.auth.senders import SenderPatternError, SenderRights, parseSenderPattern

__all__ = [
    "NEW_FILE_HEADER",
    "NEW_FILE_MODE",
    "UserRecord",
    "UsersFile",
    "UsersFileError",
    "checkUserName",
    "readUsersFile",
    "updateUsersFile",
]

#: The first lines of a users file C{gopherpostctl user add} creates.
NEW_FILE_HEADER = (
    "# GopherPost users: NAME HASH [SENDER,...], one per line.\n"
    "# Managed with gopherpostctl user add|passwd|remove|list|senders;\n"
    "# lines starting with # are comments and are kept.\n"
)
#: The mode of a new users file: the server's group may read it.
NEW_FILE_MODE = 0o640

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*(@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?\Z")
_MAX_NAME = 255


class UsersFileError(ValueError):
    """
    The users file, or a change to it, is not valid.

    @ivar line: the line number (from 1), or L{None}.
    @ivar problem: one line.
    """

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem, line)
        self.problem = problem
        self.line = line

    def __str__(self) -> str:
        return self.problem if self.line is None else f"line {self.line}: {self.problem}"


def checkUserName(name: str) -> str:
    """
    Check a user name: letters, digits and C{. _ + = -}, optionally
    followed by C{@domain}; at most 255 characters.

    @return: C{name}.
    @raise UsersFileError: why it is not valid.
    """
    if len(name) > _MAX_NAME or not _NAME.match(name):
        raise UsersFileError(
            f"{name!r} is not a valid user name: use letters, digits and . _ + = - "
            "(starting with a letter or digit), optionally @domain, at most 255 characters"
        )
    return name


@dataclass(frozen=True)
class UserRecord:
    """
    One user.

    @ivar name: the user name as written.
    @ivar hash: the password hash.
    @ivar senders: the sender patterns beyond the user's own name.
    """

    name: str
    hash: ScryptHash = field(repr=False)
    senders: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """
        The name as it is looked up (lower case).
        """
        return self.name.lower()

    @property
    def rights(self) -> SenderRights:
        """
        The addresses the user may send as.
        """
        return SenderRights(self.name, self.senders)

    def line(self) -> str:
        """
        The record as a line of the file (without the newline).
        """
        fields = [self.name, str(self.hash)]
        if self.senders:
            fields.append(",".join(self.senders))
        return " ".join(fields)


def _parseLine(text: str, number: int) -> UserRecord:
    fields = text.split()
    if len(fields) < 2:
        raise UsersFileError("a user line needs a name and a password hash", number)
    if len(fields) > 3:
        raise UsersFileError(
            "too many fields (NAME HASH [SENDER,...]; no spaces between senders)", number
        )
    try:
        name = checkUserName(fields[0])
    except UsersFileError as e:
        raise UsersFileError(e.problem, number) from None
    try:
        hashed = parseUserHash(fields[1])
    except ValueError as e:
        raise UsersFileError(f"user {name}: {e}", number) from None
    senders: tuple[str, ...] = ()
    if len(fields) == 3:
        try:
            senders = tuple(parseSenderPattern(p) for p in fields[2].split(",") if p)
        except SenderPatternError as e:
            raise UsersFileError(f"user {name}: {e}", number) from None
    return UserRecord(name, hashed, senders)


@dataclass
class _Line:
    text: str
    record: UserRecord | None = None


class UsersFile:
    """
    The lines of a users file: its users, in order, and everything else as
    it was written.
    """

    def __init__(self, lines: list[_Line] | None = None) -> None:
        self._lines: list[_Line] = lines or []

    @classmethod
    def parse(cls, text: str) -> UsersFile:
        """
        Parse the file's text.

        @raise UsersFileError: for the first bad line (or a name given
            twice).
        """
        lines = []
        seen: dict[str, int] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                lines.append(_Line(raw))
                continue
            record = _parseLine(stripped, number)
            if record.key in seen:
                raise UsersFileError(
                    f"user {record.name} is also on line {seen[record.key]}", number
                )
            seen[record.key] = number
            lines.append(_Line(raw, record))
        return cls(lines)

    @classmethod
    def new(cls) -> UsersFile:
        """
        An empty file with the usual header.
        """
        return cls([_Line(line) for line in NEW_FILE_HEADER.splitlines()])

    def render(self) -> str:
        """
        The file's text.
        """
        return "".join(line.text + "\n" for line in self._lines)

    def __iter__(self) -> Iterator[UserRecord]:
        return (line.record for line in self._lines if line.record is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def get(self, name: str) -> UserRecord | None:
        """
        The user called C{name} (any case), or L{None}.
        """
        key = name.lower()
        for record in self:
            if record.key == key:
                return record
        return None

    def _index(self, name: str) -> int:
        key = name.lower()
        for i, line in enumerate(self._lines):
            if line.record is not None and line.record.key == key:
                return i
        raise UsersFileError(f"there is no user {name}")

    def add(self, record: UserRecord) -> None:
        """
        Add a user at the end.

        @raise UsersFileError: the name is taken (in any case).
        """
        existing = self.get(record.name)
        if existing is not None:
            raise UsersFileError(f"user {existing.name} already exists")
        self._lines.append(_Line(record.line(), record))

    def replace(self, record: UserRecord) -> None:
        """
        Write C{record} in place of the user of the same name.

        @raise UsersFileError: there is no such user.
        """
        i = self._index(record.name)
        self._lines[i] = _Line(record.line(), record)

    def setPassword(self, name: str, hashed: ScryptHash) -> UserRecord:
        """
        Give user C{name} a new password hash.

        @raise UsersFileError: there is no such user.
        """
        record = self._lines[self._index(name)].record
        assert record is not None
        updated = replace(record, hash=hashed)
        self.replace(updated)
        return updated

    def setSenders(self, name: str, senders: tuple[str, ...]) -> UserRecord:
        """
        Give user C{name} these sender patterns (normalized).

        @raise UsersFileError: no such user, or a bad pattern.
        """
        record = self._lines[self._index(name)].record
        assert record is not None
        try:
            patterns = tuple(dict.fromkeys(parseSenderPattern(p) for p in senders))
        except SenderPatternError as e:
            raise UsersFileError(str(e)) from None
        updated = replace(record, senders=patterns)
        self.replace(updated)
        return updated

    def remove(self, name: str) -> UserRecord:
        """
        Remove user C{name}.

        @raise UsersFileError: there is no such user.
        """
        line = self._lines.pop(self._index(name))
        assert line.record is not None
        return line.record


def readUsersFile(path: str) -> UsersFile:
    """
    Read and parse the users file at C{path}.

    @raise FileNotFoundError: it does not exist.
    @raise UsersFileError: it cannot be read or is not valid; the problem
        names the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise
    except UnicodeDecodeError:
        raise UsersFileError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise UsersFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return UsersFile.parse(text)
    except UsersFileError as e:
        raise UsersFileError(f"{path}: {e}") from None


def _writeReplacement(path: str, text: str, previous: os.stat_result | None) -> None:
    """
    Put C{text} at C{path} atomically, with C{previous}'s mode and owner
    (or, for a new file, L{NEW_FILE_MODE} and the directory's group).
    """
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(prefix=".users.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if previous is not None:
                mode = previous.st_mode & 0o7777
                uid, gid = previous.st_uid, previous.st_gid
            else:
                mode = NEW_FILE_MODE
                uid, gid = -1, os.stat(directory).st_gid
            os.fchmod(f.fileno(), mode)
            try:
                os.fchown(f.fileno(), uid, gid)
            except PermissionError:
                if previous is not None:
                    raise UsersFileError(
                        f"cannot keep the owner of {path} (uid {uid}, gid {gid}): "
                        "run as root or as its owner"
                    ) from None
            os.fsync(f.fileno())
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    directoryFd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directoryFd)
    finally:
        os.close(directoryFd)


def updateUsersFile(path: str, change: Callable[[UsersFile], object]) -> UsersFile:
    """
    Read the users file, apply C{change} to it, and write it back
    atomically (creating it if it does not exist).  Writers on the same
    directory take turns.

    @param change: edits the L{UsersFile} (or raises L{UsersFileError}, and
        nothing is written).
    @return: the file as written.
    @raise UsersFileError: the file cannot be read, written or changed.
    """
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    try:
        lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise UsersFileError(f"cannot use the directory {directory}: {e.strerror or e}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            previous: os.stat_result | None = os.stat(path)
            users = readUsersFile(path)
        except FileNotFoundError:
            previous, users = None, UsersFile.new()
        except OSError as e:
            raise UsersFileError(f"cannot read {path}: {e.strerror or e}") from None
        change(users)
        try:
            _writeReplacement(path, users.render(), previous)
        except OSError as e:
            raise UsersFileError(f"cannot write {path}: {e.strerror or e}") from None
        return users
    finally:
        os.close(lock)
