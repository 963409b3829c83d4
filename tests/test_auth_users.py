"""
Tests for L{gopherpost.auth.users} and L{gopherpost.auth.passwords}: the
users file, its hashes, and its atomic rewrite.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.auth.passwords import MAX_MEMORY, MIN_N, hashPassword, parseUserHash
from gopherpost.auth.users import (
    NEW_FILE_MODE,
    UserRecord,
    UsersFile,
    UsersFileError,
    checkUserName,
    readUsersFile,
    updateUsersFile,
)
from gopherpost.webui.password import hashPassword as anyHash
from tests.support.auth import hashFor

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HashTests(SynchronousTestCase):
    """
    L{gopherpost.auth.passwords}.
    """

    def test_newHash(self) -> None:
        """
        New hashes use N=2^15, r=8, p=1 and a random salt, and verify.
        """
        first, second = hashPassword("s3cret"), hashPassword("s3cret")
        self.assertEqual((first.n, first.r, first.p), (2**15, 8, 1))
        self.assertNotEqual(first.salt, second.salt)
        self.assertTrue(first.verify("s3cret"))
        self.assertFalse(first.verify("s3cret "))
        self.assertEqual(parseUserHash(str(first)), first)

    def test_tooWeak(self) -> None:
        """
        Hashes cheaper than N=2^14, r=8 are refused.
        """
        for n, r in ((2**13, 8), (MIN_N, 4)):
            error = self.assertRaises(ValueError, parseUserHash, str(anyHash("x", n=n, r=r)))
            self.assertIn("too weak", str(error))

    def test_tooCostly(self) -> None:
        """
        A hash that would take more than L{MAX_MEMORY} to check is refused.
        """
        text = str(hashFor("x")).replace(f"scrypt:{MIN_N}:8:", "scrypt:1048576:8:")
        error = self.assertRaises(ValueError, parseUserHash, text)
        self.assertIn(f"{MAX_MEMORY // 2**20} MiB", str(error))

    def test_notAHash(self) -> None:
        """
        Something else is refused with the expected form.
        """
        error = self.assertRaises(ValueError, parseUserHash, "$2b$12$abcdefg")
        self.assertIn("scrypt:", str(error))


class UserNameTests(SynchronousTestCase):
    """
    L{checkUserName}.
    """

    def test_valid(self) -> None:
        for name in ("alice", "alice@example.org", "a.b-c_d+e=f@mail.example.org", "x" * 255):
            self.assertEqual(checkUserName(name), name)

    def test_invalid(self) -> None:
        for name in (
            "",
            "a b",
            "-alice",
            ".alice",
            "alice@",
            "a@b@c",
            "al:ice",
            "#alice",
            "j\u00fcrgen",
            "alice\n",
            "x" * 256,
            "*",
            "a,b",
        ):
            error = self.assertRaises(UsersFileError, checkUserName, name)
            self.assertIn("not a valid user name", str(error))


class ParseTests(SynchronousTestCase):
    """
    L{UsersFile.parse} and L{UsersFile.render}.
    """

    def setUp(self) -> None:
        self.alice = hashFor("alice-pw")
        self.bob = hashFor("bob-pw")
        self.text = (
            "# our users\n"
            "\n"
            f"alice@example.org   {self.alice}\n"
            "   # indented comment\n"
            f"bob\t{self.bob}\tbob@example.org,@Example.NET\n"
        )

    def test_users(self) -> None:
        """
        Users in order, with their senders normalized.
        """
        users = UsersFile.parse(self.text)
        self.assertEqual(
            [(u.name, u.senders) for u in users],
            [("alice@example.org", ()), ("bob", ("bob@example.org", "*@example.net"))],
        )
        self.assertEqual(len(users), 2)
        self.assertEqual(users.get("ALICE@example.org").name, "alice@example.org")  # type: ignore[union-attr]
        self.assertIsNone(users.get("carol"))

    def test_renderUnchanged(self) -> None:
        """
        An unchanged file renders as it was read, comments and spacing
        included.
        """
        self.assertEqual(UsersFile.parse(self.text).render(), self.text)

    def test_editsKeepOtherLines(self) -> None:
        """
        Changing one user rewrites only their line.
        """
        users = UsersFile.parse(self.text)
        users.setSenders("BOB", ("bob@example.org",))
        users.add(UserRecord("carol", self.alice))
        users.remove("alice@example.org")
        self.assertEqual(
            users.render(),
            "# our users\n"
            "\n"
            "   # indented comment\n"
            f"bob {self.bob} bob@example.org\n"
            f"carol {self.alice}\n",
        )

    def test_errors(self) -> None:
        """
        A bad line is refused with its number and the reason.
        """
        for text, expected in (
            ("alice\n", "line 1: a user line needs a name and a password hash"),
            (f"a b {self.alice} c\n", "line 1: too many fields"),
            (f"#\nal:ice {self.alice}\n", "line 2: 'al:ice' is not a valid user name"),
            ("alice scrypt:nope\n", "line 1: user alice: the hash must look like"),
            (f"alice {self.alice} nope\n", "line 1: user alice: 'nope' is not a sender"),
            (
                f"alice {self.alice}\n\nAlice {self.bob}\n",
                "line 3: user Alice is also on line 1",
            ),
        ):
            error = self.assertRaises(UsersFileError, UsersFile.parse, text)
            self.assertTrue(str(error).startswith(expected), (str(error), expected))

    def test_changeErrors(self) -> None:
        """
        Adding a name that exists (any case), or changing one that does not,
        is refused.
        """
        users = UsersFile.parse(self.text)
        error = self.assertRaises(UsersFileError, users.add, UserRecord("Bob", self.bob))
        self.assertEqual(str(error), "user bob already exists")
        self.assertRaises(UsersFileError, users.remove, "carol")
        self.assertRaises(UsersFileError, users.setPassword, "carol", self.bob)
        self.assertRaises(UsersFileError, users.setSenders, "bob", ("nope",))

    def test_readErrorsNameTheFile(self) -> None:
        """
        L{readUsersFile} names the file in its errors.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xff\xfe\n")
        self.assertIn(path, str(self.assertRaises(UsersFileError, readUsersFile, path)))
        with open(path, "w") as f:
            f.write("alice\n")
        self.assertEqual(
            str(self.assertRaises(UsersFileError, readUsersFile, path)),
            f"{path}: line 1: a user line needs a name and a password hash",
        )
        self.assertRaises(FileNotFoundError, readUsersFile, path + ".missing")


class UpdateTests(SynchronousTestCase):
    """
    L{updateUsersFile}.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "users")
        self.hash = hashFor("pw")

    def add(self, name: str) -> UsersFile:
        return updateUsersFile(self.path, lambda users: users.add(UserRecord(name, self.hash)))

    def test_newFile(self) -> None:
        """
        A new file gets the header comment, mode 0640 and the directory's
        group.
        """
        if os.geteuid() == 0:
            os.chown(self.directory, -1, 65534)
        self.add("alice")
        st = os.stat(self.path)
        self.assertEqual(stat.S_IMODE(st.st_mode), NEW_FILE_MODE)
        self.assertEqual(st.st_gid, os.stat(self.directory).st_gid)
        text = open(self.path).read()
        self.assertTrue(text.startswith("# GopherPost users: NAME HASH"))
        self.assertEqual([u.name for u in readUsersFile(self.path)], ["alice"])

    def test_keepsModeOwnerAndComments(self) -> None:
        """
        A rewrite keeps the old file's mode, owner and group, and its
        comments.
        """
        with open(self.path, "w") as f:
            f.write(f"# hand-written\nbob {self.hash}\n")
        os.chmod(self.path, 0o600)
        if os.geteuid() == 0:
            os.chown(self.path, 65534, 65534)
        before = os.stat(self.path)
        self.add("alice")
        after = os.stat(self.path)
        self.assertEqual(stat.S_IMODE(after.st_mode), 0o600)
        self.assertEqual((after.st_uid, after.st_gid), (before.st_uid, before.st_gid))
        self.assertNotEqual(after.st_ino, before.st_ino)
        self.assertEqual(
            open(self.path).read(), f"# hand-written\nbob {self.hash}\nalice {self.hash}\n"
        )
        self.assertEqual(os.listdir(self.directory), ["users"])

    def test_symlink(self) -> None:
        """
        A users file that is a symbolic link is written where it points.
        """
        target = os.path.join(self.directory, "real-users")
        os.symlink(target, self.path)
        self.add("alice")
        self.assertTrue(os.path.islink(self.path))
        self.assertEqual([u.name for u in readUsersFile(target)], ["alice"])

    def test_failedChangeWritesNothing(self) -> None:
        """
        A change that fails leaves the file (and the directory) as they were.
        """
        self.add("alice")
        before = open(self.path).read()
        self.assertRaises(UsersFileError, self.add, "Alice")
        self.assertEqual(open(self.path).read(), before)
        self.assertEqual(os.listdir(self.directory), ["users"])

    def test_invalidFileIsNotRewritten(self) -> None:
        """
        A file that does not parse is not touched: the error names its line.
        """
        with open(self.path, "w") as f:
            f.write("broken\n")
        error = self.assertRaises(UsersFileError, self.add, "alice")
        self.assertIn("line 1", str(error))
        self.assertEqual(open(self.path).read(), "broken\n")

    def test_missingDirectory(self) -> None:
        """
        A users file in a directory that does not exist: one clear error.
        """
        error = self.assertRaises(
            UsersFileError,
            updateUsersFile,
            os.path.join(self.directory, "nope", "users"),
            lambda users: None,
        )
        self.assertIn("cannot use the directory", str(error))

    def test_concurrentWriters(self) -> None:
        """
        Writers take turns: two processes adding users at once lose none.
        """
        script = textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {_ROOT!r})
            from gopherpost.auth.passwords import parseUserHash
            from gopherpost.auth.users import UserRecord, updateUsersFile
            hashed = parseUserHash({str(self.hash)!r})
            for i in range(25):
                name = f"{{sys.argv[1]}}{{i}}"
                updateUsersFile({self.path!r}, lambda u: u.add(UserRecord(name, hashed)))
            """
        )
        processes = [
            subprocess.Popen([sys.executable, "-c", script, prefix]) for prefix in ("a", "b")
        ]
        for process in processes:
            self.assertEqual(process.wait(timeout=120), 0)
        names = {u.name for u in readUsersFile(self.path)}
        self.assertEqual(names, {f"{p}{i}" for p in "ab" for i in range(25)})
