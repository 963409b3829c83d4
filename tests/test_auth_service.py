"""
Tests for L{gopherpost.auth.service} and the C{SMTP_USERS_FILE} and
C{SMTP_AUTH_*} settings.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost.auth.interfaces import IAuthenticatedUser
from gopherpost.auth.policies import HeaderFromPolicy, RequireAuthPolicy, SenderRightsPolicy
from gopherpost.auth.service import (
    AUTH_FIELDS,
    authEnabled,
    makeAuthService,
    usersFilePath,
)
from gopherpost.checks.service import STATE_FILE
from gopherpost.checks.store import MemoryStore
from gopherpost.config import ConfigError, Settings, settingsFromEnvironment
from tests.support.auth import FakeContext, captureLogs, makeService, writeUsers


def settingsFor(**environ: str) -> Settings:
    return settingsFromEnvironment(
        dict(environ), checkFiles=False, defaultHostname=lambda: "mx.example.test"
    )


class SettingsTests(SynchronousTestCase):
    """
    The variables of authenticated submission.
    """

    def test_defaults(self) -> None:
        settings = settingsFor()
        self.assertEqual(
            (
                settings.usersFile,
                settings.authOnSMTP,
                settings.authMaxFailures,
                settings.authCheckFrom,
                settings.authLockoutFailures,
                settings.authUserLockoutFailures,
                settings.authLockoutWindow,
                settings.authLockoutDuration,
                settings.authLockoutMaxDuration,
            ),
            (None, False, 3, False, 5, 10, 600.0, 600.0, 86400.0),
        )

    def test_values(self) -> None:
        settings = settingsFor(
            SMTP_USERS_FILE="/etc/gopherpost/users",
            SMTP_AUTH_ON_SMTP="true",
            SMTP_AUTH_MAX_FAILURES="5",
            SMTP_AUTH_CHECK_FROM="true",
            SMTP_AUTH_LOCKOUT_FAILURES="0",
            SMTP_AUTH_USER_LOCKOUT_FAILURES="20",
            SMTP_AUTH_LOCKOUT_WINDOW="60",
            SMTP_AUTH_LOCKOUT_DURATION="120",
            SMTP_AUTH_LOCKOUT_MAX_DURATION="120",
        )
        self.assertEqual(settings.usersFile, "/etc/gopherpost/users")
        self.assertEqual((settings.authOnSMTP, settings.authCheckFrom), (True, True))
        self.assertEqual(
            (
                settings.authMaxFailures,
                settings.authLockoutFailures,
                settings.authUserLockoutFailures,
            ),
            (5, 0, 20),
        )
        self.assertEqual(
            (
                settings.authLockoutWindow,
                settings.authLockoutDuration,
                settings.authLockoutMaxDuration,
            ),
            (60.0, 120.0, 120.0),
        )

    def test_badValues(self) -> None:
        """
        A bad value stops start-up with one line naming the variable.
        """
        for variable, value, problem in (
            ("SMTP_AUTH_ON_SMTP", "yes", "is not a boolean"),
            ("SMTP_AUTH_MAX_FAILURES", "0", "out of range"),
            ("SMTP_AUTH_MAX_FAILURES", "three", "not a whole number"),
            ("SMTP_AUTH_LOCKOUT_FAILURES", "-1", "out of range"),
            ("SMTP_AUTH_LOCKOUT_WINDOW", "0", "at least 1 seconds"),
            ("SMTP_AUTH_LOCKOUT_DURATION", "soon", "not a number of seconds"),
            ("SMTP_USERS_FILE", "/", "is a directory"),
        ):
            error = self.assertRaises(ConfigError, settingsFor, **{variable: value})
            self.assertEqual(error.variable, variable)
            self.assertIn(problem, error.problem)

    def test_maxBelowBase(self) -> None:
        error = self.assertRaises(
            ConfigError,
            settingsFor,
            SMTP_AUTH_LOCKOUT_DURATION="600",
            SMTP_AUTH_LOCKOUT_MAX_DURATION="60",
        )
        self.assertEqual(error.variable, "SMTP_AUTH_LOCKOUT_MAX_DURATION")

    def test_authOnSMTPNeedsTLS(self) -> None:
        error = self.assertRaises(
            ConfigError, settingsFor, SMTP_AUTH_ON_SMTP="true", SMTP_TLS_DISABLE="true"
        )
        self.assertEqual(error.variable, "SMTP_AUTH_ON_SMTP")
        self.assertIn("only offered over TLS", error.problem)

    def test_usersFilePath(self) -> None:
        """
        By default the users file is in the spool's state directory.
        """
        settings = settingsFor(SMTP_QUEUE_PATH="spool")
        self.assertEqual(
            usersFilePath(settings), os.path.join(os.path.abspath("spool"), ".gopherpost", "users")
        )
        self.assertEqual(usersFilePath(settingsFor(SMTP_USERS_FILE="/x/users")), "/x/users")

    def test_authEnabled(self) -> None:
        self.assertFalse(authEnabled(settingsFor()))
        self.assertTrue(authEnabled(settingsFor(SMTP_SUBMISSION_LISTEN="tcp:2587")))
        self.assertTrue(authEnabled(settingsFor(SMTP_SUBMISSIONS_LISTEN="tcp:2465")))
        self.assertTrue(authEnabled(settingsFor(SMTP_AUTH_ON_SMTP="true")))

    def test_fieldsExist(self) -> None:
        """
        The fields a reload hands the service are settings fields.
        """
        names = {f for f in Settings.__dataclass_fields__}
        self.assertEqual(AUTH_FIELDS - names, set())


class MakeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.spool = os.path.abspath(self.mktemp())
        self.state = os.path.join(self.spool, ".gopherpost")
        os.makedirs(self.state)
        self.log = captureLogs(self)

    def settings(self, **environ: str) -> Settings:
        environ.setdefault("SMTP_SUBMISSION_LISTEN", "tcp:2587")
        return settingsFor(SMTP_QUEUE_PATH=self.spool, **environ)

    def test_off(self) -> None:
        """
        Without a listener that offers AUTH there is no service.
        """
        self.assertIsNone(makeAuthService(settingsFor(), self.state, Clock()))

    def test_missingUsersFile(self) -> None:
        """
        No users file yet: a warning saying how to add users.
        """
        service = makeAuthService(self.settings(), self.state, Clock(), store=MemoryStore())
        assert service is not None
        self.assertEqual(len(service.directory), 0)
        text = "\n".join(formatEvent(e) for e in self.log)
        self.assertIn("does not exist yet: nobody can authenticate", text)
        self.assertIn("gopherpostctl user add NAME", text)

    def test_badUsersFile(self) -> None:
        """
        A users file that does not parse stops start-up, naming
        C{SMTP_USERS_FILE}, the file and the line.
        """
        path = os.path.join(self.state, "users")
        with open(path, "w") as f:
            f.write("# users\nalice\n")
        error = self.assertRaises(
            ConfigError, makeAuthService, self.settings(), self.state, Clock(), MemoryStore()
        )
        self.assertEqual(error.variable, "SMTP_USERS_FILE")
        self.assertIn(f"{path}: line 2:", error.problem)

    def test_settingsReachTheService(self) -> None:
        writeUsers(os.path.join(self.state, "users"), [("alice", "pw")])
        service = makeAuthService(
            self.settings(
                SMTP_AUTH_ON_SMTP="true",
                SMTP_AUTH_MAX_FAILURES="7",
                SMTP_AUTH_CHECK_FROM="true",
                SMTP_AUTH_LOCKOUT_FAILURES="9",
            ),
            self.state,
            Clock(),
            store=MemoryStore(),
        )
        assert service is not None
        self.assertEqual(len(service.directory), 1)
        self.assertEqual(
            (service.maxFailures, service.onSMTP, service.checkFrom, service.hostname),
            (7, True, True, "mx.example.test"),
        )
        self.assertEqual(service.lockouts.parameters.clientThreshold, 9)
        self.assertIn("users: 1", "\n".join(formatEvent(e) for e in self.log))

    def test_ownStore(self) -> None:
        """
        Without a store given, the node's local state store is opened (in
        the state directory) and closed when the service stops.
        """
        service = makeAuthService(self.settings(), self.state, Clock())
        assert service is not None
        self.assertTrue(os.path.exists(os.path.join(self.state, STATE_FILE)))
        service.startService()
        self.successResultOf(defer.maybeDeferred(service.stopService))


class AuthServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.service = makeService(self.directory, [("alice@example.org", "pw")])
        self.log = captureLogs(self)

    def test_enabledFor(self) -> None:
        self.assertTrue(self.service.enabledFor("submission"))
        self.assertTrue(self.service.enabledFor(FakeContext(role="submissions").role))
        self.assertFalse(self.service.enabledFor("smtp"))
        self.service.onSMTP = True
        self.assertTrue(self.service.enabledFor("smtp"))

    def test_policiesFor(self) -> None:
        """
        The submission roles require AUTH; every role offering AUTH checks
        sender rights; the header From only with C{SMTP_AUTH_CHECK_FROM}.
        """

        def kinds(role: str) -> dict[str, list[type]]:
            return {k: [type(p) for p in v] for k, v in self.service.policiesFor(role).items()}

        self.assertEqual(
            kinds("submission"),
            {"afterTLS": [RequireAuthPolicy], "mail": [SenderRightsPolicy], "message": []},
        )
        self.assertEqual(kinds("smtp"), {"afterTLS": [], "mail": [], "message": []})
        self.service.onSMTP = True
        self.service.checkFrom = True
        self.assertEqual(
            kinds("smtp"),
            {"afterTLS": [], "mail": [SenderRightsPolicy], "message": [HeaderFromPolicy]},
        )

    def test_rightsOf(self) -> None:
        rights = self.service.rightsOf("ALICE@example.org")
        assert rights is not None
        self.assertTrue(rights.owns("alice@example.org"))
        self.assertIsNone(self.service.rightsOf("bob"))

    def test_extendPortal(self) -> None:
        """
        A role's portal gets the password checker.
        """
        portal = self.service.extendPortal(Portal(None, []))  # type: ignore[arg-type]
        user: Any
        _, user, _ = self.successResultOf(
            portal.login(UsernamePassword(b"alice@example.org", b"pw"), None, IAuthenticatedUser)
        )
        self.assertEqual(user.name, "alice@example.org")

    def test_prepareReload(self) -> None:
        """
        A reload reads the (new) users file and settings, and applies them
        only when asked.
        """
        other = writeUsers(os.path.join(self.directory, "other"), [("bob", "pw")])
        settings = settingsFor(
            SMTP_USERS_FILE=other,
            SMTP_AUTH_MAX_FAILURES="9",
            SMTP_AUTH_ON_SMTP="true",
            SMTP_AUTH_CHECK_FROM="true",
            SMTP_AUTH_LOCKOUT_WINDOW="60",
        )
        apply = self.service.prepareReload(settings)
        self.assertIsNone(self.service.directory.get("bob"))
        apply()
        self.assertIsNotNone(self.service.directory.get("bob"))
        self.assertEqual(
            (self.service.maxFailures, self.service.onSMTP, self.service.checkFrom),
            (9, True, True),
        )
        self.assertEqual(self.service.lockouts.parameters.window, 60.0)

    def test_prepareReloadBadFile(self) -> None:
        """
        A users file that does not parse fails the reload, naming the
        variable; nothing changes.
        """
        bad = os.path.join(self.directory, "bad")
        with open(bad, "w") as f:
            f.write("nope\n")
        error = self.assertRaises(
            ConfigError,
            self.service.prepareReload,
            settingsFor(SMTP_USERS_FILE=bad, SMTP_AUTH_MAX_FAILURES="9"),
        )
        self.assertEqual(error.variable, "SMTP_USERS_FILE")
        self.assertEqual(self.service.maxFailures, 3)
        self.assertIsNotNone(self.service.directory.get("alice@example.org"))

    def test_reloadUsersCommand(self) -> None:
        """
        C{users.reload} reads the file now and says what it found; a bad
        file is an answer, not an error.
        """
        command = self.service.controlCommands()["users.reload"]
        path = self.service.directory.path
        writeUsers(path, [("alice@example.org", "pw"), ("bob", "pw")])
        self.assertEqual(command(), {"reloaded": True, "path": path, "users": 2})
        with open(path, "a") as f:
            f.write("broken\n")
        result: Any = command()
        self.assertFalse(result["reloaded"])
        self.assertIn("line 4", result["error"])
        self.assertEqual(len(self.service.directory), 2)

    def test_metrics(self) -> None:
        """
        C{smtp_auth_attempts_total{mechanism,result}} through a registry,
        zeros included.
        """
        registry = CollectorRegistry()
        registry.register(self.service.metrics)
        self.service.metrics.count("PLAIN", "success")
        text = generate_latest(registry).decode()
        self.assertIn('smtp_auth_attempts_total{mechanism="PLAIN",result="success"} 1.0', text)
        self.assertIn('smtp_auth_attempts_total{mechanism="LOGIN",result="locked"} 0.0', text)
        self.assertRaises(ValueError, self.service.metrics.count, "CRAM-MD5", "success")


class VerifierLifecycleTests(TestCase):
    def test_startStop(self) -> defer.Deferred[Any]:
        """
        The service starts and stops the verifier threads with itself.
        """
        from twisted.internet import reactor

        spool = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(spool, ".gopherpost"))
        writeUsers(os.path.join(spool, ".gopherpost", "users"), [("alice", "pw")])
        service = makeAuthService(
            settingsFor(SMTP_QUEUE_PATH=spool, SMTP_SUBMISSION_LISTEN="tcp:2587"),
            os.path.join(spool, ".gopherpost"),
            reactor,
            store=MemoryStore(),
        )
        assert service is not None
        service.startService()
        self.assertTrue(service.verifier.pool.started)
        d = service.checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
        d.addCallback(self.assertEqual, b"alice")
        d.addCallback(lambda _: service.stopService())
        d.addCallback(lambda _: self.assertFalse(service.verifier.pool.started))
        return d
