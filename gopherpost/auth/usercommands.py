# -*- test-case-name: tests.test_auth_usercommands -*-
"""
C{gopherpostctl user}: the users file, from the command line.

  - C{user add NAME [--sender PATTERN]...}: a new user (the password asked
    twice on the terminal, or read from C{--password-stdin});
  - C{user passwd NAME}: a new password (and today's hash parameters);
  - C{user remove NAME};
  - C{user list [--json]}: the users and what they may send as (never the
    hashes);
  - C{user senders NAME [PATTERN...] [--clear]}: show, replace or clear a
    user's sender patterns.

The file (C{SMTP_USERS_FILE}, else C{.gopherpost/users} in the spool) is
rewritten atomically, keeping its mode, owner and comments
(L{gopherpost.auth.users.updateUsersFile}).  A running server reads it
again by itself within a second; when it runs, it is also told through the
control socket (C{users.reload}), and says how many users it has.

The handlers work with C{gopherpostctl}'s context
(L{gopherpost.ctl.registry.Context}: its C{args}, C{out}, C{err},
C{loaded()}, C{spoolPath}, C{tryCall()}, C{printJSON()}, C{note()});
L{configure} adds the subcommands to the group's parser (L{GROUP}).
Exit status: 0 done, 1 failed (no such user, a name taken, a file that
cannot be written), 2 wrong usage (a bad name, pattern or password).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

from gopherpost.auth.passwords import hashPassword
from gopherpost.auth.sasl import MAX_FIELD
from gopherpost.auth.senders import SenderPatternError, parseSenderPattern
from gopherpost.auth.users import (
    UserRecord,
    UsersFile,
    UsersFileError,
    checkUserName,
    readUsersFile,
    updateUsersFile,
)
from gopherpost.ctl.registry import CommandGroup

__all__ = ["GROUP", "HELP", "configure", "usersFileOf"]

#: The group's one-line help.
HELP = "users who may authenticate (AUTH) and send as which addresses"

_OK, _FAILED, _USAGE = 0, 1, 2


class _Refused(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def usersFileOf(context: Any) -> str:
    """
    The users file a server started here would read.
    """
    path = context.loaded().variables.get("SMTP_USERS_FILE", "").strip()
    return path or os.path.join(context.spoolPath, ".gopherpost", "users")


def _handler(f: Callable[[Any, str], int]) -> Callable[[Any], int]:
    def handle(context: Any) -> int:
        try:
            return f(context, usersFileOf(context))
        except _Refused as e:
            context.note(e.message)
            return e.status
        except UsersFileError as e:
            context.note(str(e))
            return _FAILED

    handle.__doc__ = f.__doc__
    return handle


def _name(text: str) -> str:
    try:
        return checkUserName(text)
    except UsersFileError as e:
        raise _Refused(str(e), _USAGE) from None


def _patterns(texts: list[str]) -> tuple[str, ...]:
    try:
        return tuple(dict.fromkeys(parseSenderPattern(t) for t in texts))
    except SenderPatternError as e:
        raise _Refused(str(e), _USAGE) from None


def _password(args: argparse.Namespace) -> str:
    """
    The new password: one line of standard input, or asked twice on the
    terminal.
    """
    if args.password_stdin:
        password = sys.stdin.readline()
        if password.endswith("\n"):
            password = password[:-1]
        if password.endswith("\r"):
            password = password[:-1]
    else:
        if not sys.stdin.isatty():
            raise _Refused("no terminal to ask for the password on: use --password-stdin", _USAGE)
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            raise _Refused("the passwords differ", _USAGE)
    if not password:
        raise _Refused("the password is empty", _USAGE)
    if len(password.encode("utf-8")) > MAX_FIELD or "\0" in password:
        raise _Refused(f"the password must be at most {MAX_FIELD} octets, without NUL", _USAGE)
    return password


def _tellServer(context: Any) -> None:
    """
    Ask a running server to read the file now (it would within a second).
    """
    try:
        running, result = context.tryCall("users.reload")
    except Exception as e:
        message = getattr(e, "message", None) or str(e)
        context.note(f"the running server was not told ({message}); it reads the file by itself")
        return
    if not running:
        return
    if isinstance(result, dict) and result.get("reloaded"):
        context.note(f"the running server read it again (users: {result.get('users')})")
    elif isinstance(result, dict):
        context.note(f"the running server did not take the file: {result.get('error')}")


def _owned(record: UserRecord) -> list[str]:
    return list(record.rights.owned)


def _describe(record: UserRecord) -> str:
    owned = _owned(record)
    return ", ".join(owned) if owned else "nothing but <> (no sender patterns)"


def _add(context: Any, path: str) -> int:
    """
    Add a user.
    """
    args = context.args
    name = _name(args.name)
    senders = _patterns(args.sender or [])
    existing = _read(path).get(name)
    if existing is not None:
        raise _Refused(f"user {existing.name} already exists (use passwd or senders)", _FAILED)
    record = UserRecord(name, hashPassword(_password(args)), senders)
    updateUsersFile(path, lambda users: users.add(record))
    context.out.write(f"added user {name} to {path}; sends as: {_describe(record)}\n")
    if not record.rights.owned:
        context.note(
            f"{name} is not an address and has no sender patterns: it may only send with "
            "MAIL FROM:<> (give it some with: user senders NAME PATTERN...)"
        )
    _tellServer(context)
    return _OK


def _passwd(context: Any, path: str) -> int:
    """
    Set a user's password.
    """
    args = context.args
    name = _name(args.name)
    if _read(path).get(name) is None:
        raise _Refused(f"there is no user {name} in {path}", _FAILED)
    hashed = hashPassword(_password(args))
    users = updateUsersFile(path, lambda users: users.setPassword(name, hashed))
    context.out.write(f"new password for user {users.get(name).name}\n")  # type: ignore[union-attr]
    _tellServer(context)
    return _OK


def _remove(context: Any, path: str) -> int:
    """
    Remove a user.
    """
    name = _name(context.args.name)
    removed: list[UserRecord] = []
    updateUsersFile(path, lambda users: removed.append(users.remove(name)))
    context.out.write(f"removed user {removed[0].name} from {path}\n")
    _tellServer(context)
    return _OK


def _read(path: str) -> UsersFile:
    try:
        return readUsersFile(path)
    except FileNotFoundError:
        return UsersFile()


def _list(context: Any, path: str) -> int:
    """
    List the users.
    """
    users = list(_read(path))
    if context.args.json:
        context.printJSON(
            [
                {
                    "name": u.name,
                    "senders": list(u.senders),
                    "sendsAs": _owned(u),
                    "hash": {"n": u.hash.n, "r": u.hash.r, "p": u.hash.p},
                }
                for u in users
            ]
        )
        return _OK
    if not users:
        context.note(f"no users in {path}")
        return _OK
    width = max(len(u.name) for u in users)
    for user in users:
        context.out.write(f"{user.name.ljust(width)}  {_describe(user)}\n")
    return _OK


def _senders(context: Any, path: str) -> int:
    """
    Show or set a user's sender patterns.
    """
    args = context.args
    name = _name(args.name)
    if args.clear and args.patterns:
        raise _Refused("give patterns or --clear, not both", _USAGE)
    if not args.patterns and not args.clear:
        record = _read(path).get(name)
        if record is None:
            raise _Refused(f"there is no user {name} in {path}", _FAILED)
        context.out.write(f"{record.name} sends as: {_describe(record)}\n")
        return _OK
    patterns = () if args.clear else _patterns(args.patterns)
    updated: list[UserRecord] = []
    updateUsersFile(path, lambda users: updated.append(users.setSenders(name, patterns)))
    context.out.write(f"{updated[0].name} sends as: {_describe(updated[0])}\n")
    _tellServer(context)
    return _OK


def _addPasswordOption(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from one line of standard input (for scripts)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """
    Add the C{user} subcommands to the group's parser.
    """
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    commands.required = True

    add = commands.add_parser(
        "add",
        help="add a user (asks for the password)",
        description="Add a user.  A user whose name is an address may send as that "
        "address; --sender gives more (alice@example.org, *@example.org, @example.org).",
    )
    add.add_argument("name", metavar="NAME", help="the user name, e.g. alice@example.org")
    add.add_argument(
        "--sender",
        action="append",
        metavar="PATTERN",
        help="an address or pattern the user may send as (repeatable)",
    )
    _addPasswordOption(add)
    add.set_defaults(handler=_handler(_add))

    passwd = commands.add_parser(
        "passwd",
        help="set a user's password",
        description="Set a user's password (and today's hash parameters).",
    )
    passwd.add_argument("name", metavar="NAME")
    _addPasswordOption(passwd)
    passwd.set_defaults(handler=_handler(_passwd))

    remove = commands.add_parser("remove", help="remove a user", description="Remove a user.")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=_handler(_remove))

    listing = commands.add_parser(
        "list", help="list the users and what they may send as", description="List the users."
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(handler=_handler(_list))

    senders = commands.add_parser(
        "senders",
        help="show or set the addresses a user may send as",
        description="Without PATTERN, show what NAME may send as; with PATTERNs, replace "
        "its sender patterns; --clear removes them (its own address stays).",
    )
    senders.add_argument("name", metavar="NAME")
    senders.add_argument("patterns", metavar="PATTERN", nargs="*")
    senders.add_argument("--clear", action="store_true", help="remove every sender pattern")
    senders.set_defaults(handler=_handler(_senders))


#: The C{user} group of C{gopherpostctl} (L{gopherpost.ctl.registry.GROUPS}).
GROUP = CommandGroup("user", HELP, configure)
