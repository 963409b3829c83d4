"""
Authenticated submission and the operations tooling, with a real server in
this process: a reload (SIGHUP) reads the users file again even when no
setting changed, takes new C{SMTP_AUTH_*} settings, refuses a users file
that does not parse (nothing changes), and C{gopherpostctl user} tells the
running server through its control socket.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost.config import Settings
from gopherpost.inbound.worker import _prepareAuthReload
from gopherpost.tap import Options, makeService
from tests.support.auth import writeUsers
from tests.support.certs import makeTestPKI
from tests.support.operations import runCtlInThread, shortDirectory
from tests.support.server import freePort, serverEnvironment

HOST = "mx.gopherpost.test"


class _Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


class AuthReloadTests(TestCase):
    """
    A server with a submissions listener, its configuration in an env file.
    """

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        pki = makeTestPKI(os.path.join(self.directory, "pki"), HOST)
        self.usersPath = os.path.join(self.directory, "users")
        self.envFile = os.path.join(self.directory, "gopherpost.env")
        self.spool = os.path.join(self.directory, "spool")
        self.variables = {
            "SMTP_TLS_CERT": pki.good.certPath,
            "SMTP_TLS_KEY": pki.good.keyPath,
            "SMTP_SUBMISSIONS_LISTEN": f"tcp:{freePort()}:interface=127.0.0.1",
            "SMTP_USERS_FILE": self.usersPath,
        }
        writeUsers(self.usersPath, [("alice@gopherpost.test", "alice-pw")])
        self.write()
        environ = serverEnvironment(self.spool, freePort())
        del environ["SMTP_TLS_DISABLE"]
        options = Options()
        options.parseOptions(["--env-file", self.envFile])
        self.service: Any = makeService(options, environ=environ, reactor=reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def write(self, **variables: str) -> None:
        self.variables.update(variables)
        with open(self.envFile, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in self.variables.items()))

    @inlineCallbacks
    def test_reloadRereadsUsers(self) -> Any:
        """
        A reload with no setting changed still reads the users file again
        (as SIGHUP does), and a changed C{SMTP_AUTH_MAX_FAILURES} reaches
        the sessions to come.
        """
        auth = self.service.auth
        self.assertEqual(len(auth.directory), 1)
        writeUsers(self.usersPath, [("alice@gopherpost.test", "a"), ("bob@gopherpost.test", "b")])
        outcome = yield self.service.reload()
        self.assertTrue(outcome.succeeded)
        self.assertEqual(len(auth.directory), 2)
        self.assertEqual(auth.maxFailures, 3)
        self.write(SMTP_AUTH_MAX_FAILURES="5")
        outcome = yield self.service.reload()
        self.assertTrue(outcome.succeeded, outcome.describe())
        self.assertIn("SMTP_AUTH_MAX_FAILURES", outcome.describe())
        self.assertEqual(auth.maxFailures, 5)

    @inlineCallbacks
    def test_badUsersFile(self) -> Any:
        """
        A users file that does not parse: a reload that changes an AUTH
        setting fails naming C{SMTP_USERS_FILE} and changes nothing; the
        users from before stay.
        """
        auth = self.service.auth
        with open(self.usersPath, "w") as f:
            f.write("alice@gopherpost.test\n")
        self.write(SMTP_AUTH_MAX_FAILURES="5")
        outcome = yield self.service.reload()
        self.assertFalse(outcome.succeeded)
        self.assertIn("SMTP_USERS_FILE", outcome.describe())
        self.assertEqual(auth.maxFailures, 3)
        self.assertEqual(len(auth.directory), 1)

    @inlineCallbacks
    def test_gopherpostctlTellsServer(self) -> Any:
        """
        C{gopherpostctl user add} against the running server: the file is
        written and the server, told through the control socket, has the
        user at once.
        """
        self.patch(sys, "stdin", _Stdin("bob-pw\n"))
        environ = {"SMTP_ENV_FILE": self.envFile, "SMTP_QUEUE_PATH": self.spool}
        status, out, err = yield runCtlInThread(
            ["user", "add", "bob@gopherpost.test", "--password-stdin"], environ
        )
        self.assertEqual(status, 0, err)
        self.assertIn("the running server read it again (users: 2)", err)
        self.assertIsNotNone(self.service.auth.directory.get("bob@gopherpost.test"))


class WorkerAuthReloadTests(SynchronousTestCase):
    """
    A worker (C{SMTP_WORKERS} > 1) reloads its authenticated submission
    only when the users file or an C{SMTP_AUTH_*} setting changed.
    """

    def setUp(self) -> None:
        self.prepared: list[Settings] = []
        self.applied: list[Settings] = []

    def prepareReload(self, settings: Settings) -> Any:
        self.prepared.append(settings)
        return lambda: self.applied.append(settings)

    def test_changed(self) -> None:
        """
        A changed AUTH setting: prepared at once, applied when told.
        """
        old = Settings()
        new = dataclasses.replace(old, authMaxFailures=5)
        apply = _prepareAuthReload(self, old, new)
        self.assertEqual((self.prepared, self.applied), ([new], []))
        apply()
        self.assertEqual(self.applied, [new])

    def test_unchanged(self) -> None:
        """
        Other settings changed: nothing read, nothing applied.
        """
        old = Settings()
        _prepareAuthReload(self, old, dataclasses.replace(old, banner="other"))()
        self.assertEqual((self.prepared, self.applied), ([], []))

    def test_noAuth(self) -> None:
        """
        No listener offers AUTH: nothing to do.
        """
        old = Settings()
        _prepareAuthReload(None, old, dataclasses.replace(old, authMaxFailures=5))()
