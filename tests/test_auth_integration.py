"""
Authenticated submission with real clients over loopback: Python's smtplib
(STARTTLS + login, SMTP_SSL), swaks (C{--auth PLAIN}, C{--auth LOGIN},
C{--tls}, C{--tlsc}) and msmtp configured as a user would, against the
submission listeners (STARTTLS on the submission role, implicit TLS on the
submissions role) with a real spool, real TLS and the real verifier
threads.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import smtplib
import ssl
import subprocess
import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gopherpost.auth.service import makeAuthService
from gopherpost.checks.store import MemoryStore
from gopherpost.config import Settings
from gopherpost.inbound.replies import Reply
from gopherpost.inbound.roles import SUBMISSION, SUBMISSIONS, ListenerRole
from tests.support.auth import TEST_PASSWORD, TEST_USER, addTestUser
from tests.support.haproxy import startHAProxy
from tests.support.inbound import LiveServer
from tests.support.server import freePort, serverEnvironment, startInProcess
from tests.test_haproxy import storedWith

TIMEOUT = 30


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"{name} is not installed (Debian package {name}): .ci/run installs it"
        )
    return path


def _context(cafile: str | None = None) -> ssl.SSLContext:
    if cafile is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    return context


class SubmissionServer:
    """
    A L{LiveServer} of one role with AUTH and one user.
    """

    def __init__(self, testCase: TestCase, role: ListenerRole) -> None:
        def auth(settings: Settings) -> Any:
            addTestUser(settings.queuePath)
            service = makeAuthService(
                dataclasses.replace(settings, submissionListen=("x",)),  # type: ignore[arg-type]
                os.path.join(settings.queuePath, ".gopherpost"),
                reactor,
                store=MemoryStore(),
                replyType=Reply,
            )
            assert service is not None
            return service

        self.live = LiveServer(testCase, role=role, tls=True, auth=auth, relayNetworks=())
        assert self.live.pki is not None
        self.pki = self.live.pki
        self.port = self.live.port

    def stored(self, token: bytes) -> bytes | None:
        for relative in self.live.storedFiles():
            content = self.live.read(relative)
            if token in content:
                return content
        return None


class SmtplibTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_starttlsLogin(self) -> Any:
        """
        C{starttls()} then C{login()} (PLAIN) on the submission listener: the
        message is stored, relayed as ESMTPSA, the user in the metadata.
        """
        server = SubmissionServer(self, SUBMISSION)
        token = uuid.uuid4().hex.encode()

        def send() -> tuple[Any, ...]:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
                client.ehlo("client.test")
                before = client.has_extn("auth")
                client.starttls(context=_context(server.pki.ca.certPath))
                client.ehlo("client.test")
                mechanisms = client.esmtp_features.get("auth")
                login = client.login(TEST_USER, TEST_PASSWORD)
                client.sendmail(TEST_USER, ["bob@example.test"], b"Subject: hi\r\n\r\n" + token)
                return before, mechanisms, login

        before, mechanisms, login = yield deferToThread(send)
        self.assertFalse(before)
        self.assertEqual(mechanisms, " PLAIN LOGIN")
        self.assertEqual(login, (235, b"2.7.0 Authentication successful"))
        content = server.stored(token)
        assert content is not None
        self.assertIn(b"with ESMTPSA", content)
        [envelope] = list(server.live.spool.envelopes())
        self.assertEqual(envelope.metadata["authUser"], TEST_USER)

    @defer.inlineCallbacks
    def test_smtpSSLLogin(self) -> Any:
        """
        C{SMTP_SSL} and LOGIN (smtplib sends the user name as its initial
        response) on the submissions listener.
        """
        server = SubmissionServer(self, SUBMISSIONS)
        token = uuid.uuid4().hex.encode()

        def send() -> Any:
            with smtplib.SMTP_SSL(
                "127.0.0.1", server.port, timeout=TIMEOUT, context=_context(server.pki.ca.certPath)
            ) as client:
                client.ehlo("client.test")
                client.user, client.password = TEST_USER, TEST_PASSWORD
                reply = client.auth("LOGIN", client.auth_login)
                client.sendmail(TEST_USER, ["bob@example.test"], b"\r\n" + token)
                return reply

        reply = yield deferToThread(send)
        self.assertEqual(reply[0], 235)
        self.assertIsNotNone(server.stored(token))

    @defer.inlineCallbacks
    def test_wrongPasswordAndSenders(self) -> Any:
        """
        A wrong password is C{535} (after the delay); MAIL before AUTH is
        C{530}; a sender the user does not own is C{553}.
        """
        server = SubmissionServer(self, SUBMISSIONS)

        def run() -> tuple[Any, ...]:
            with smtplib.SMTP_SSL(
                "127.0.0.1", server.port, timeout=TIMEOUT, context=_context()
            ) as client:
                client.ehlo("client.test")
                early = client.mail(TEST_USER)
                try:
                    client.login(TEST_USER, "wrong")
                    wrong: Any = None
                except smtplib.SMTPAuthenticationError as e:
                    wrong = (e.smtp_code, e.smtp_error)
                client.login(TEST_USER, TEST_PASSWORD)
                notOwned = client.mail("ceo@gopherpost.test")
                return early, wrong, notOwned

        early, wrong, notOwned = yield deferToThread(run)
        self.assertEqual(early, (530, b"5.7.0 Authentication required"))
        self.assertEqual(wrong, (535, b"5.7.8 Authentication credentials invalid"))
        self.assertEqual(notOwned[0], 553)
        self.assertIn(b"not owned by user alice@gopherpost.test", notOwned[1])


class SwaksTests(TestCase):
    timeout = 120

    def swaks(self, server: SubmissionServer, *arguments: str) -> tuple[int, str, bytes]:
        token = uuid.uuid4().hex
        result = subprocess.run(
            [
                _tool("swaks"),
                "--server",
                f"127.0.0.1:{server.port}",
                "--helo",
                "client.test",
                "--from",
                TEST_USER,
                "--to",
                "bob@example.test",
                "--auth-user",
                TEST_USER,
                "--auth-password",
                TEST_PASSWORD,
                "--body",
                f"token {token}",
                "--timeout",
                str(TIMEOUT),
                *arguments,
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
        )
        return result.returncode, result.stdout + result.stderr, token.encode()

    @defer.inlineCallbacks
    def test_plainWithSTARTTLS(self) -> Any:
        """
        C{swaks --tls --auth PLAIN} on the submission listener.
        """
        server = SubmissionServer(self, SUBMISSION)
        status, output, token = yield deferToThread(self.swaks, server, "--tls", "--auth", "PLAIN")
        self.assertEqual(status, 0, output)
        self.assertIn("<~  235 2.7.0 Authentication successful", output)
        self.assertIsNotNone(server.stored(token))

    @defer.inlineCallbacks
    def test_loginWithImplicitTLS(self) -> Any:
        """
        C{swaks --tlsc --auth LOGIN} on the submissions listener.
        """
        server = SubmissionServer(self, SUBMISSIONS)
        status, output, token = yield deferToThread(self.swaks, server, "--tlsc", "--auth", "LOGIN")
        self.assertEqual(status, 0, output)
        self.assertIn("334 VXNlcm5hbWU6", output)
        self.assertIn("235 2.7.0 Authentication successful", output)
        self.assertIsNotNone(server.stored(token))

    @defer.inlineCallbacks
    def test_noAuthBeforeTLS(self) -> Any:
        """
        Without C{--tls}, swaks finds no AUTH to use (it is not advertised in
        the clear) and gives up.
        """
        server = SubmissionServer(self, SUBMISSION)
        status, output, token = yield deferToThread(self.swaks, server, "--auth", "PLAIN")
        self.assertNotEqual(status, 0, output)
        self.assertIn("Host did not advertise authentication", output)
        self.assertIsNone(server.stored(token))


class MsmtpTests(TestCase):
    timeout = 120

    def msmtp(self, server: SubmissionServer, starttls: bool) -> tuple[int, str, bytes]:
        token = uuid.uuid4().hex
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write(
                "defaults\n"
                "auth on\n"
                "tls on\n"
                f"tls_trust_file {server.pki.ca.certPath}\n"
                f"tls_host_override {server.pki.hostname}\n"
                f"tls_starttls {'on' if starttls else 'off'}\n"
                "\n"
                "account gopherpost\n"
                "host 127.0.0.1\n"
                f"port {server.port}\n"
                f"from {TEST_USER}\n"
                f"user {TEST_USER}\n"
                f"password {TEST_PASSWORD}\n"
                "account default : gopherpost\n"
            )
        os.chmod(config, 0o600)
        message = (
            f"From: Alice <{TEST_USER}>\nTo: bob@example.test\nSubject: msmtp\n\ntoken {token}\n"
        )
        result = subprocess.run(
            [_tool("msmtp"), "-C", config, "--timeout", str(TIMEOUT), "-t"],
            input=message,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
        )
        return result.returncode, result.stdout + result.stderr, token.encode()

    @defer.inlineCallbacks
    def test_submission(self) -> Any:
        """
        msmtp with STARTTLS on the submission listener, verifying the
        certificate.
        """
        server = SubmissionServer(self, SUBMISSION)
        status, output, token = yield deferToThread(self.msmtp, server, True)
        self.assertEqual(status, 0, output)
        content = server.stored(token)
        assert content is not None
        self.assertIn(b"with ESMTPSA", content)

    @defer.inlineCallbacks
    def test_submissions(self) -> Any:
        """
        msmtp with implicit TLS on the submissions listener.
        """
        server = SubmissionServer(self, SUBMISSIONS)
        status, output, token = yield deferToThread(self.msmtp, server, False)
        self.assertEqual(status, 0, output)
        self.assertIsNotNone(server.stored(token))


class WholeServerTests(TestCase):
    """
    The whole server as C{twistd gopherpost} builds it (the wiring), with
    the submission role behind HAProxy (PROXY protocol, then STARTTLS).
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_submissionBehindHAProxy(self) -> Any:
        """
        Through HAProxy, STARTTLS and AUTH work, the client's own address is
        the one the lockouts count, and a user added to the file while the
        server runs can authenticate within a second.
        """
        path = os.path.abspath(self.mktemp())
        usersFile = addTestUser(path)
        submission = freePort()
        startInProcess(
            self,
            serverEnvironment(
                path,
                freePort(),
                SMTP_TLS_DISABLE="false",
                SMTP_SUBMISSION_LISTEN=f"haproxy:tcp:{submission}:interface=127.0.0.1",
                SMTP_ALLOW_NETWORKS="127.0.0.5/32,127.0.0.6/32",
                SMTP_RELAY_NETWORKS="127.0.0.1/32",
                SMTP_AUTH_LOCKOUT_FAILURES="2",
            ),
        )
        proxy = startHAProxy(self, os.path.join(path, "..", "haproxy"), [("p", submission, 2)])
        port = proxy.frontends["p"].port

        def login(source: str, user: str, password: str) -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT, source_address=(source, 0)) as c:
                c.ehlo("client.test")
                c.starttls(context=_context())
                c.ehlo("client.test")
                text: bytes | str
                try:
                    code, text = c.login(user, password)
                except smtplib.SMTPResponseException as e:
                    code, text = e.smtp_code, e.smtp_error
                return code, text if isinstance(text, bytes) else text.encode()

        token = uuid.uuid4().hex.encode()

        def submit() -> None:
            with smtplib.SMTP(
                "127.0.0.1", port, timeout=TIMEOUT, source_address=("127.0.0.5", 0)
            ) as c:
                c.ehlo("client.test")
                c.starttls(context=_context())
                c.login(TEST_USER, TEST_PASSWORD)
                c.sendmail(TEST_USER, ["bob@example.test"], b"\r\n" + token)

        yield deferToThread(submit)
        self.assertIsNotNone(storedWith(path, token))
        # Two failures from 127.0.0.6 lock it out (smtplib's login() tries
        # PLAIN, then LOGIN); 127.0.0.5 is not.
        code, _ = yield deferToThread(login, "127.0.0.6", TEST_USER, "wrong")
        self.assertEqual(code, 535)
        code, text = yield deferToThread(login, "127.0.0.6", TEST_USER, TEST_PASSWORD)
        self.assertEqual((code, text), (454, b"4.7.0 Temporary authentication failure"))
        code, _ = yield deferToThread(login, "127.0.0.5", TEST_USER, TEST_PASSWORD)
        self.assertEqual(code, 235)
        # A user added while the server runs.
        from gopherpost.auth.passwords import hashPassword
        from gopherpost.auth.users import UserRecord, updateUsersFile

        record = UserRecord("bob@gopherpost.test", hashPassword("bob's"))
        updateUsersFile(usersFile, lambda users: users.add(record))
        yield deferLater(reactor, 1.1, lambda: None)
        code, _ = yield deferToThread(login, "127.0.0.5", "bob@gopherpost.test", "bob's")
        self.assertEqual(code, 235)
