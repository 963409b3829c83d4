"""
Tests for L{gopherpost.auth.usercommands}: C{gopherpostctl user}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.auth import usercommands
from gopherpost.auth.passwords import parseUserHash
from gopherpost.auth.users import readUsersFile
from tests.support.auth import hashFor


class _Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


class _Context:
    """
    C{gopherpostctl}'s context, as the handlers use it.
    """

    def __init__(
        self, args: argparse.Namespace, variables: dict[str, str], spool: str, server: Any = None
    ) -> None:
        self.args = args
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.variables = variables
        self.spoolPath = spool
        self.server = server
        self.calls: list[str] = []

    def loaded(self) -> Any:
        return argparse.Namespace(variables=self.variables)

    def tryCall(self, command: str, **arguments: Any) -> tuple[bool, Any]:
        self.calls.append(command)
        if isinstance(self.server, Exception):
            raise self.server
        if self.server is None:
            return False, None
        return True, self.server(command)

    def printJSON(self, value: Any) -> None:
        self.out.write(json.dumps(value) + "\n")

    def note(self, line: str) -> None:
        self.err.write(f"gopherpostctl: {line}\n")


class UserCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.spool = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.spool, ".gopherpost"))
        self.path = os.path.join(self.spool, ".gopherpost", "users")
        self.variables: dict[str, str] = {}
        self.server: Any = None
        # Real hashes are slow on purpose: the same one, made once.
        self.patch(usercommands, "hashPassword", lambda password: hashFor(password))

    def ctl(
        self, *argv: str, stdin: str = "", tty: bool = False, typed: list[str] | None = None
    ) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="gopherpostctl user")
        usercommands.configure(parser)
        args = parser.parse_args(list(argv))
        self.patch(sys, "stdin", _Stdin(stdin, tty))
        answers = iter(typed or [])
        self.patch(usercommands.getpass, "getpass", lambda prompt="": next(answers))
        context = _Context(args, self.variables, self.spool, self.server)
        self.context = context
        status = args.handler(context)
        return status, context.out.getvalue(), context.err.getvalue()

    def users(self) -> dict[str, Any]:
        return {u.name: u for u in readUsersFile(self.path)}

    def test_addPasswordStdin(self) -> None:
        """
        C{user add} with C{--password-stdin} and senders: the file is made
        (mode 0640) with the user, whose password is what was read.
        """
        status, out, err = self.ctl(
            "add",
            "alice@example.org",
            "--sender",
            "@Lists.Example.org",
            "--password-stdin",
            stdin="s3cret pass\n",
        )
        self.assertEqual((status, err), (0, ""))
        self.assertIn("added user alice@example.org", out)
        self.assertIn("alice@example.org, *@lists.example.org", out)
        user = self.users()["alice@example.org"]
        self.assertEqual(user.senders, ("*@lists.example.org",))
        self.assertTrue(user.hash.verify("s3cret pass"))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)

    def test_addOnTerminal(self) -> None:
        """
        On a terminal the password is asked twice.
        """
        status, _, _ = self.ctl(
            "add", "bob", "--sender", "bob@example.org", tty=True, typed=["pw one", "pw one"]
        )
        self.assertEqual(status, 0)
        self.assertTrue(self.users()["bob"].hash.verify("pw one"))

    def test_passwordsDiffer(self) -> None:
        status, _, err = self.ctl("add", "bob", tty=True, typed=["one", "two"])
        self.assertEqual(status, 2)
        self.assertIn("the passwords differ", err)
        self.assertFalse(os.path.exists(self.path))

    def test_noTerminal(self) -> None:
        """
        Without a terminal and without C{--password-stdin}: a clear refusal.
        """
        status, _, err = self.ctl("add", "bob", stdin="pw\n")
        self.assertEqual(status, 2)
        self.assertIn("use --password-stdin", err)

    def test_emptyPassword(self) -> None:
        for stdin in ("\n", ""):
            status, _, err = self.ctl("add", "bob", "--password-stdin", stdin=stdin)
            self.assertEqual(status, 2)
            self.assertIn("the password is empty", err)
        self.assertFalse(os.path.exists(self.path))

    def test_badName(self) -> None:
        status, _, err = self.ctl("add", "bad name", "--password-stdin", stdin="pw\n")
        self.assertEqual(status, 2)
        self.assertIn("is not a valid user name", err)

    def test_badPattern(self) -> None:
        status, _, err = self.ctl(
            "add", "bob", "--sender", "nope", "--password-stdin", stdin="pw\n"
        )
        self.assertEqual(status, 2)
        self.assertIn("'nope' is not a sender address or pattern", err)

    def test_addExisting(self) -> None:
        """
        A name taken (in any case) is refused before the password is asked.
        """
        self.ctl("add", "alice", "--password-stdin", stdin="pw\n")
        status, _, err = self.ctl("add", "ALICE", tty=True, typed=[])
        self.assertEqual(status, 1)
        self.assertIn("user alice already exists", err)

    def test_plainNameWarning(self) -> None:
        """
        A user that may only send with <> is warned about.
        """
        _, _, err = self.ctl("add", "app", "--password-stdin", stdin="pw\n")
        self.assertIn("it may only send with MAIL FROM:<>", err)

    def test_passwd(self) -> None:
        self.ctl("add", "alice", "--password-stdin", stdin="old\n")
        status, out, _ = self.ctl("passwd", "Alice", "--password-stdin", stdin="new\n")
        self.assertEqual(status, 0)
        self.assertIn("new password for user alice", out)
        self.assertTrue(self.users()["alice"].hash.verify("new"))

    def test_passwdUnknown(self) -> None:
        status, _, err = self.ctl("passwd", "carol", tty=True, typed=[])
        self.assertEqual(status, 1)
        self.assertIn("there is no user carol", err)

    def test_remove(self) -> None:
        self.ctl("add", "alice", "--password-stdin", stdin="pw\n")
        self.ctl("add", "bob", "--password-stdin", stdin="pw\n")
        status, out, _ = self.ctl("remove", "ALICE")
        self.assertEqual(status, 0)
        self.assertIn("removed user alice", out)
        self.assertEqual(list(self.users()), ["bob"])
        status, _, err = self.ctl("remove", "alice")
        self.assertEqual(status, 1)
        self.assertIn("there is no user alice", err)

    def test_list(self) -> None:
        self.ctl("add", "alice@example.org", "--password-stdin", stdin="pw\n")
        self.ctl("add", "app", "--sender", "noreply@example.org", "--password-stdin", stdin="pw\n")
        status, out, _ = self.ctl("list")
        self.assertEqual(status, 0)
        self.assertEqual(
            out,
            "alice@example.org  alice@example.org\napp                noreply@example.org\n",
        )
        _, out, _ = self.ctl("list", "--json")
        listed = json.loads(out)
        self.assertEqual(
            listed[1],
            {
                "name": "app",
                "senders": ["noreply@example.org"],
                "sendsAs": ["noreply@example.org"],
                "hash": {"n": 16384, "r": 8, "p": 1},
            },
        )
        self.assertNotIn("scrypt", out)

    def test_listEmpty(self) -> None:
        status, out, err = self.ctl("list")
        self.assertEqual((status, out), (0, ""))
        self.assertIn("no users in", err)
        self.assertEqual(self.ctl("list", "--json")[1], "[]\n")

    def test_senders(self) -> None:
        self.ctl("add", "alice@example.org", "--password-stdin", stdin="pw\n")
        status, out, _ = self.ctl("senders", "alice@example.org", "*@example.net", "x@example.org")
        self.assertEqual(status, 0)
        self.assertIn("alice@example.org, *@example.net, x@example.org", out)
        self.assertEqual(
            self.users()["alice@example.org"].senders, ("*@example.net", "x@example.org")
        )
        _, out, _ = self.ctl("senders", "alice@example.org")
        self.assertEqual(
            out, "alice@example.org sends as: alice@example.org, *@example.net, x@example.org\n"
        )
        self.ctl("senders", "alice@example.org", "--clear")
        self.assertEqual(self.users()["alice@example.org"].senders, ())
        status, _, err = self.ctl("senders", "alice@example.org", "x@example.org", "--clear")
        self.assertEqual(status, 2)
        status, _, err = self.ctl("senders", "carol", "x@example.org")
        self.assertEqual(status, 1)

    def test_usersFileVariable(self) -> None:
        """
        C{SMTP_USERS_FILE} (from the environment or the env file) names the
        file.
        """
        other = os.path.join(self.spool, "elsewhere")
        self.variables["SMTP_USERS_FILE"] = other
        self.ctl("add", "alice", "--password-stdin", stdin="pw\n")
        self.assertEqual([u.name for u in readUsersFile(other)], ["alice"])
        self.assertFalse(os.path.exists(self.path))

    def test_keepsComments(self) -> None:
        with open(self.path, "w") as f:
            f.write(f"# keep me\nbob {hashFor('pw')}\n")
        self.ctl("add", "alice", "--password-stdin", stdin="pw\n")
        self.assertTrue(
            open(self.path).read().startswith(f"# keep me\nbob {hashFor('pw')}\nalice ")
        )

    def test_badFile(self) -> None:
        with open(self.path, "w") as f:
            f.write("broken\n")
        status, _, err = self.ctl("add", "alice", "--password-stdin", stdin="pw\n")
        self.assertEqual(status, 1)
        self.assertIn("line 1", err)

    def test_tellsRunningServer(self) -> None:
        """
        A running server is told (C{users.reload}) and says how many users
        it has; one that is not running is not mentioned; one that cannot be
        reached is a note.
        """
        self.ctl("add", "alice", "--password-stdin", stdin="pw\n")
        self.assertEqual(self.context.calls, ["users.reload"])
        self.server = lambda command: {"reloaded": True, "users": 2}
        _, _, err = self.ctl("add", "bob", "--password-stdin", stdin="pw\n")
        self.assertIn("the running server read it again (users: 2)", err)
        self.server = lambda command: {"reloaded": False, "error": "line 9: broken"}
        _, _, err = self.ctl("remove", "bob")
        self.assertIn("did not take the file: line 9: broken", err)
        self.server = RuntimeError("the running server does not offer users.reload")
        status, _, err = self.ctl("remove", "alice")
        self.assertEqual(status, 0)
        self.assertIn("was not told (the running server does not offer users.reload)", err)

    def test_listDoesNotTell(self) -> None:
        self.ctl("list")
        self.assertEqual(self.context.calls, [])


class RealHashTests(SynchronousTestCase):
    def test_newHashesAreStrong(self) -> None:
        """
        Without the test shortcut, new passwords get today's parameters.
        """
        spool = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(spool, ".gopherpost"))
        parser = argparse.ArgumentParser()
        usercommands.configure(parser)
        args = parser.parse_args(["add", "alice", "--password-stdin"])
        self.patch(sys, "stdin", _Stdin("pw\n", False))
        self.assertEqual(args.handler(_Context(args, {}, spool)), 0)
        [user] = readUsersFile(os.path.join(spool, ".gopherpost", "users"))
        self.assertEqual((user.hash.n, user.hash.r, user.hash.p), (2**15, 8, 1))
        self.assertEqual(parseUserHash(str(user.hash)), user.hash)


class GopherpostctlTests(SynchronousTestCase):
    def test_main(self) -> None:
        """
        C{gopherpostctl user} runs the same commands, with the spool from
        C{SMTP_QUEUE_PATH} (or C{--queue-path}), and C{--help} lists the
        group.
        """
        from gopherpost.ctl.main import main

        spool = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(spool, ".gopherpost"))
        # An env file of its own: never the Debian package's, nor a .env here.
        envFile = os.path.join(spool, "env")
        with open(envFile, "w"):
            pass
        environ = {"SMTP_QUEUE_PATH": spool, "SMTP_ENV_FILE": envFile}
        out, err = io.StringIO(), io.StringIO()
        self.patch(usercommands, "hashPassword", lambda password: hashFor(password))
        self.patch(sys, "stdin", _Stdin("pw\n", False))
        status = main(["user", "add", "alice", "--password-stdin"], environ, out, err)
        self.assertEqual(status, 0, err.getvalue())
        self.assertEqual(main(["user", "list", "--json"], environ, out, err), 0)
        self.assertIn('"name": "alice"', out.getvalue())
        self.assertEqual(
            main(
                ["--queue-path", spool, "user", "remove", "alice"],
                {"SMTP_ENV_FILE": envFile},
                out,
                err,
            ),
            0,
        )
        self.assertEqual(list(readUsersFile(os.path.join(spool, ".gopherpost", "users"))), [])
        self.assertEqual(main(["user", "nope"], environ, out, err), 2)
        help = io.StringIO()
        self.patch(sys, "stdout", help)
        main(["--help"], environ, out, err)
        self.assertIn("user", help.getvalue())
