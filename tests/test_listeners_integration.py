"""
Integration tests for the listeners: TLS as real clients see it (OpenSSL's
C{s_client}, Python's C{ssl}, C{smtplib.SMTP_SSL}) on STARTTLS and implicit
TLS, start-up errors of a real C{twistd}, socket activation through
C{systemd-socket-activate}, and inbound workers on several listeners.

Each stack runs these with its own Twisted and pyOpenSSL (the server
process is this interpreter).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import ssl
import subprocess
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.auth import TEST_PASSWORD, TEST_USER, addTestUser
from tests.support.certs import makeTestPKI
from tests.support.haproxy import startHAProxy
from tests.support.server import (
    TwistdProcess,
    freePort,
    serverEnvironment,
    startInProcess,
    waitForPort,
)
from tests.test_haproxy import storedWith


def _openssl() -> str:
    binary = shutil.which("openssl")
    if binary is None:
        raise AssertionError("openssl is not installed (apt-get install openssl)")
    return binary


def sClient(port: int, *options: str) -> tuple[int, str]:
    """
    C{openssl s_client} against 127.0.0.1:C{port}, sending C{QUIT} once
    connected.

    @return: its exit status and output.
    """
    result = subprocess.run(
        [
            _openssl(),
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "mx.test",
            # Wait for the server's reply; "QUIT" is not s_client's Q command.
            "-ign_eof",
            "-nocommands",
            *options,
        ],
        input=b"QUIT\r\n",
        capture_output=True,
        timeout=30,
    )
    return result.returncode, (result.stdout + result.stderr).decode("utf-8", "replace")


def unverified(alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


class TLSClientTests(TestCase):
    """
    STARTTLS (SMTP and submission listeners) and implicit TLS (submissions)
    with clients that offer ALPN, and the suites they can get.
    """

    timeout = 120

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.smtp, self.submission, self.submissions = freePort(), freePort(), freePort()
        addTestUser(self.path)
        startInProcess(
            self,
            serverEnvironment(
                self.path,
                self.smtp,
                SMTP_TLS_DISABLE="false",
                SMTP_SUBMISSION_LISTEN=f"tcp:{self.submission}:interface=127.0.0.1",
                SMTP_SUBMISSIONS_LISTEN=f"tcp:{self.submissions}:interface=127.0.0.1",
            ),
        )

    @inlineCallbacks
    def test_opensslALPN(self):
        """
        C{openssl s_client} offering ALPN gets a handshake (never alert 80),
        C{smtp} when it offered that, none otherwise; on every listener.
        """
        cases = [
            (self.smtp, ("-starttls", "smtp")),
            (self.submission, ("-starttls", "smtp")),
            (self.submissions, ()),
        ]
        for port, mode in cases:
            for alpn, expected in (
                ("smtp,h2", "ALPN protocol: smtp"),
                ("h2", "No ALPN negotiated"),
            ):
                status, output = yield deferToThread(sClient, port, *mode, "-alpn", alpn)
                self.assertEqual(status, 0, (port, alpn, output))
                self.assertNotIn("alert", output)
                self.assertIn(expected, output, (port, alpn))
                self.assertIn("221 ", output)

    @inlineCallbacks
    def test_opensslSuites(self):
        """
        A TLS 1.2 client gets an ECDHE AES-GCM/ChaCha20 suite, and one that
        offers only CBC or static-RSA suites gets no connection; TLS 1.3
        is offered.
        """
        for port, mode in ((self.smtp, ("-starttls", "smtp")), (self.submissions, ())):
            status, output = yield deferToThread(
                sClient,
                port,
                *mode,
                "-tls1_2",
                "-cipher",
                "AES128-SHA:AES256-SHA:AES128-GCM-SHA256",
            )
            self.assertNotEqual(status, 0, output)
            self.assertNotIn("221 ", output)
            status, output = yield deferToThread(
                sClient,
                port,
                *mode,
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-CHACHA20-POLY1305",
            )
            self.assertEqual(status, 0, output)
            self.assertIn("ECDHE-RSA-CHACHA20-POLY1305", output)
            status, output = yield deferToThread(sClient, port, *mode)
            self.assertIn("TLSv1.3", output)

    @inlineCallbacks
    def test_pythonClients(self):
        """
        Python's C{ssl} offering ALPN (as phones and Go clients do): mail
        goes through STARTTLS on the SMTP listener and through implicit TLS
        with C{smtplib.SMTP_SSL} on the submissions listener.
        """

        def starttls(token: bytes) -> None:
            with smtplib.SMTP("127.0.0.1", self.smtp, timeout=30) as client:
                client.starttls(context=unverified(["h2", "http/1.1"]))
                client.sendmail("alice@gopherpost.test", ["bob@gopherpost.test"], b"\r\n" + token)

        def implicit(token: bytes) -> tuple[str | None, object]:
            context = unverified(["smtp"])
            with smtplib.SMTP_SSL(
                "127.0.0.1", self.submissions, timeout=30, context=context
            ) as client:
                negotiated = client.sock.selected_alpn_protocol()  # type: ignore[union-attr]
                client.login(TEST_USER, TEST_PASSWORD)
                client.sendmail("alice@gopherpost.test", ["bob@gopherpost.test"], b"\r\n" + token)
                return negotiated, client.sock.version()  # type: ignore[union-attr]

        first, second = uuid.uuid4().hex.encode(), uuid.uuid4().hex.encode()
        yield deferToThread(starttls, first)
        negotiated, version = yield deferToThread(implicit, second)
        self.assertEqual(negotiated, "smtp")
        self.assertEqual(version, "TLSv1.3")
        self.assertIsNotNone(storedWith(self.path, first))
        self.assertIsNotNone(storedWith(self.path, second))


class ImplicitTLSDeadlineTests(TestCase):
    """
    The submissions listener's handshake deadline, over a real socket.
    """

    timeout = 60

    def test_implicitTLSSilentClient(self):
        """
        A client that connects to the submissions listener and says nothing
        is cut off after C{SMTP_COMMAND_TIMEOUT}, without a greeting.
        """
        path = os.path.abspath(self.mktemp())
        port = freePort()
        startInProcess(
            self,
            serverEnvironment(
                path,
                freePort(),
                SMTP_TLS_DISABLE="false",
                SMTP_COMMAND_TIMEOUT="1",
                SMTP_SUBMISSIONS_LISTEN=f"tcp:{port}:interface=127.0.0.1",
            ),
        )

        def silent() -> tuple[bytes, float]:
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                started = time.monotonic()
                try:
                    data = sock.recv(1024)
                except ConnectionResetError:
                    data = b""
                return data, time.monotonic() - started

        def check(result: tuple[bytes, float]) -> None:
            data, waited = result
            self.assertEqual(data, b"")
            self.assertLess(waited, 25)

        return deferToThread(silent).addCallback(check)


def _run(process: TwistdProcess) -> tuple[int, str]:
    code, out, err = process.finish()
    return code, (out + err).decode("utf-8", "replace")


class StartUpErrorTests(TestCase):
    """
    A real C{twistd -n gopherpost} that cannot start says why in one line,
    without a traceback.
    """

    timeout = 240

    def test_oneLineEach(self):
        """
        An endpoint that does not parse, a port in use (for each listener
        variable, and the default listener's C{SMTP_PORT}), a C{systemd:}
        listener without sockets, an open relay, an SMTP_HEALTH_ADDR without
        a port: exit status 1, exactly one line naming the variable, no
        traceback.
        """
        import socket

        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        busy = taken.getsockname()[1]
        here = "tcp:{free}:interface=127.0.0.1"
        cases = [
            ({"SMTP_LISTEN": "tcp:25:interface=mx.test"}, "SMTP_LISTEN"),
            ({"SMTP_SUBMISSIONS_LISTEN": "unix:/run/x"}, "SMTP_SUBMISSIONS_LISTEN"),
            ({"SMTP_PORT": str(busy)}, "SMTP_PORT"),
            ({"SMTP_LISTEN": f"tcp:{busy}:interface=127.0.0.1"}, "SMTP_LISTEN"),
            (
                {"SMTP_LISTEN": here, "SMTP_SUBMISSION_LISTEN": f"tcp:{busy}:interface=127.0.0.1"},
                "SMTP_SUBMISSION_LISTEN",
            ),
            (
                {
                    "SMTP_LISTEN": here,
                    "SMTP_SUBMISSIONS_LISTEN": f"haproxy:tcp:{busy}:interface=127.0.0.1",
                },
                "SMTP_SUBMISSIONS_LISTEN",
            ),
            ({"SMTP_LISTEN": "systemd:domain=INET:index=0"}, "SMTP_LISTEN"),
            ({"SMTP_ALLOW_NETWORKS": "0.0.0.0/0"}, "SMTP_RELAY_NETWORKS"),
            ({"SMTP_HEALTH_DISABLE": "false", "SMTP_HEALTH_ADDR": "nonsense"}, "SMTP_HEALTH_ADDR"),
        ]
        # One certificate for all (no key generation in each process).
        pki = makeTestPKI(self.mktemp(), "mx.gopherpost.test")

        def run(overrides: dict[str, str]) -> tuple[int, str]:
            # Each its own spool and free port: they run side by side.
            port = freePort()
            overrides = {k: v.replace("{free}", str(port)) for k, v in overrides.items()}
            environ = serverEnvironment(
                os.path.abspath(self.mktemp()),
                port,
                SMTP_TLS_DISABLE="false",
                SMTP_TLS_CERT=pki.good.certPath,
                SMTP_TLS_KEY=pki.good.keyPath,
                **overrides,
            )
            if "SMTP_LISTEN" in overrides:
                del environ["SMTP_PORT"], environ["SMTP_LISTEN_ADDR"]
            return _run(TwistdProcess(environ))

        def runAll() -> list[tuple[str, tuple[int, str]]]:
            with ThreadPoolExecutor(3) as pool:
                outcomes = list(pool.map(run, [overrides for overrides, _ in cases]))
            return [(variable, outcome) for (_, variable), outcome in zip(cases, outcomes)]

        def check(results: list[tuple[str, tuple[int, str]]]) -> None:
            for variable, (code, output) in results:
                self.assertEqual(code, 1, (variable, output))
                self.assertNotIn("Traceback", output)
                # Besides the usual start-up lines (and Twisted's "Factory
                # starting on PORT" for a listener bound before the failure).
                lines = [
                    line
                    for line in output.splitlines()
                    if line and "#info]" not in line and " starting on " not in line
                ]
                self.assertEqual(len(lines), 1, (variable, output))
                self.assertIn(variable + ": ", lines[0])

        return deferToThread(runAll).addCallback(check)


def _submit(port: int, token: bytes, implicitTLS: bool = False, source: str = "127.0.0.1") -> int:
    if implicitTLS:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            "127.0.0.1", port, timeout=30, context=unverified(), source_address=(source, 0)
        )
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0))
    with client:
        if implicitTLS:
            # The submissions role: AUTH before MAIL.
            client.login(TEST_USER, TEST_PASSWORD)
        client.sendmail(
            "alice@gopherpost.test", ["bob@gopherpost.test"], b"Subject: t\r\n\r\n" + token
        )
    return 250


class SocketActivationTests(TestCase):
    """
    C{systemd:} listeners under C{systemd-socket-activate}, which passes
    listening sockets as systemd does (and starts the server at the first
    connection).
    """

    timeout = 180

    def start(
        self, sockets: list[tuple[str, int, str]], **environ: str
    ) -> tuple[str, TwistdProcess]:
        path = os.path.abspath(self.mktemp())
        addTestUser(path)
        process = TwistdProcess(
            serverEnvironment(path, 0, SMTP_TLS_DISABLE="false", SMTP_PORT="", **environ),
            socketActivation=sockets,
        )
        self.addCleanup(process.kill)
        return path, process

    def test_index(self):
        """
        One socket, no names (as on bookworm's Twisted, C{index=} alone):
        mail goes through it.
        """
        port = freePort()
        path, _ = self.start([("127.0.0.1", port, "")], SMTP_LISTEN="systemd:domain=INET:index=0")
        token = uuid.uuid4().hex.encode()

        def send() -> None:
            waitForPort(port, time.monotonic() + 30)
            _submit(port, token)

        return deferToThread(send).addCallback(
            lambda _: self.assertIsNotNone(storedWith(path, token))
        )

    def test_namedRoles(self):
        """
        Two named sockets (C{FileDescriptorName=}): one for SMTP, one for
        implicit TLS behind... nothing: each serves its role.
        """
        smtp, submissions = freePort(), freePort()
        path, _ = self.start(
            [("127.0.0.1", smtp, "smtp"), ("127.0.0.1", submissions, "submissions")],
            SMTP_LISTEN="systemd:name=smtp",
            SMTP_SUBMISSIONS_LISTEN="systemd:domain=INET:name=submissions",
        )
        first, second = uuid.uuid4().hex.encode(), uuid.uuid4().hex.encode()

        def send() -> None:
            waitForPort(smtp, time.monotonic() + 30)
            _submit(smtp, first)
            _submit(submissions, second, implicitTLS=True)

        def check(_: object) -> None:
            self.assertIsNotNone(storedWith(path, first))
            self.assertIsNotNone(storedWith(path, second))

        return deferToThread(send).addCallback(check)

    def test_missingIndex(self):
        """
        Asking for a socket that was not passed ends start-up in one line.
        """
        port = freePort()
        _, process = self.start([("127.0.0.1", port, "")], SMTP_LISTEN="systemd:index=1")

        def run() -> tuple[int, str]:
            # The first connection starts the server (and is then closed).
            waitForPort(port, time.monotonic() + 30)
            return _run(process)

        def check(result: tuple[int, str]) -> None:
            code, output = result
            self.assertEqual(code, 1, output)
            self.assertNotIn("Traceback", output)
            [line] = [line for line in output.splitlines() if "SMTP_LISTEN" in line]
            self.assertIn("index 1, but 1 socket was passed", line)

        return deferToThread(run).addCallback(check)


class WorkerListenersTests(TestCase):
    """
    C{SMTP_WORKERS=2} with two listeners: the parent binds both, the workers
    wrap each as its listener says (here implicit TLS behind HAProxy).
    """

    timeout = 180

    def test_twoListeners(self):
        """
        Mail arrives on the plain SMTP listener and, through HAProxy, on the
        implicit-TLS listener with the client's address; /healthz is ready.
        """
        path = os.path.abspath(self.mktemp())
        addTestUser(path)
        smtp, submissions, http = freePort(), freePort(), freePort()
        process = TwistdProcess(
            serverEnvironment(
                path,
                smtp,
                SMTP_WORKERS="2",
                SMTP_TLS_DISABLE="false",
                SMTP_ALLOW_NETWORKS="127.0.0.1/32,127.0.0.5/32",
                SMTP_SUBMISSIONS_LISTEN=f"haproxy:tcp:{submissions}:interface=127.0.0.1",
                SMTP_HEALTH_DISABLE="false",
                SMTP_HEALTH_ADDR=f"127.0.0.1:{http}",
            )
        )
        self.addCleanup(process.kill)
        proxy = startHAProxy(self, os.path.join(path, "..", "haproxy"), [("tls", submissions, 2)])
        first, second = uuid.uuid4().hex.encode(), uuid.uuid4().hex.encode()

        def healthz() -> tuple[int, bytes]:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{http}/healthz", timeout=10) as response:
                return response.status, response.read()

        def send() -> tuple[int, bytes]:
            deadline = time.monotonic() + 60
            waitForPort(smtp, deadline)
            waitForPort(http, deadline)
            while True:
                try:
                    status = healthz()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            _submit(smtp, first)
            _submit(proxy.frontends["tls"].port, second, implicitTLS=True, source="127.0.0.5")
            return status

        def check(status: tuple[int, bytes]) -> None:
            self.assertEqual(status, (200, b"OK"))
            self.assertIsNotNone(storedWith(path, first))
            stored = storedWith(path, second)
            assert stored is not None
            self.assertIn(b"([127.0.0.5])", stored)

        return deferToThread(send).addCallback(check)
