"""
Live reload with a real server: in this process (certificate swap, banner
and limits for new sessions only, an invalid change that changes nothing,
gopherpostctl over the control socket) and as a real twistd process (SIGHUP
after editing the env file, workers, the second SIGTERM).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import time
from typing import Any, cast

from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import TestCase

from gopherpost.tap import Options, makeService
from tests.support.certs import makeTestPKI
from tests.support.operations import ServerProcess, runCtl, shortDirectory
from tests.support.server import freePort, serverEnvironment, waitForPort

HOST = "mx.gopherpost.test"
_DER = Encoding.DER


def _greeting(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    return sock, _reply(sock)


def _reply(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and lines[-2][3:4] == b" ":
            return data


def _startTLS(sock: socket.socket) -> bytes:
    """
    STARTTLS on a greeted session; the server's certificate (DER).
    """
    sock.sendall(b"EHLO client.test\r\n")
    _reply(sock)
    sock.sendall(b"STARTTLS\r\n")
    assert _reply(sock).startswith(b"220"), "STARTTLS refused"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    secure = context.wrap_socket(sock, server_hostname=HOST)
    der = secure.getpeercert(binary_form=True)
    secure.close()
    assert der is not None
    return der


class InProcessReloadTests(TestCase):
    """
    A server in this process, its configuration in an env file.
    """

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        self.pki = makeTestPKI(os.path.join(self.directory, "pki"), HOST)
        self.certPath = os.path.join(self.directory, "current.crt")
        self.keyPath = os.path.join(self.directory, "current.key")
        self.install(self.pki.good)
        self.envFile = os.path.join(self.directory, "gopherpost.env")
        self.port = freePort()
        self.write()
        environ = serverEnvironment(os.path.join(self.directory, "spool"), self.port)
        del environ["SMTP_TLS_DISABLE"]
        options = Options()
        options.parseOptions(["--env-file", self.envFile])
        self.service = makeService(options, environ=environ, reactor=reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def install(self, files) -> None:
        shutil.copyfile(files.certPath, self.certPath + ".new")
        shutil.copyfile(files.keyPath, self.keyPath + ".new")
        os.replace(self.keyPath + ".new", self.keyPath)
        os.replace(self.certPath + ".new", self.certPath)

    def write(self, **variables: str) -> None:
        settings = {
            "SMTP_BANNER": "first banner",
            "SMTP_TLS_CERT": self.certPath,
            "SMTP_TLS_KEY": self.keyPath,
            "SMTP_MAX_MESSAGE_SIZE": "1000000",
        }
        settings.update(variables)
        with open(self.envFile, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in settings.items()))

    def reload(self):
        return blockingCallFromThread(cast(Any, reactor), self.service.reload)

    def test_newSessionsOnly(self):
        """
        After a reload new sessions get the new banner, size limit and
        certificate (read again from disk under the same name); a session
        that started before finishes with what it started with, its
        STARTTLS included.
        """
        renewed = self.pki.ca.issue([HOST], basename="renewed")

        def scenario():
            old, banner = _greeting(self.port)
            self.assertIn(b"first banner", banner)
            before = _startTLS(_greeting(self.port)[0])
            self.install(renewed)
            self.write(SMTP_BANNER="second banner", SMTP_MAX_MESSAGE_SIZE="2000000")
            outcome = self.reload()
            new, newBanner = _greeting(self.port)
            new.sendall(b"EHLO client.test\r\n")
            newEHLO = _reply(new)
            new.close()
            after = _startTLS(_greeting(self.port)[0])
            old.sendall(b"EHLO client.test\r\n")
            oldEHLO = _reply(old)
            old.close()
            return outcome, banner, newBanner, newEHLO, oldEHLO, before, after

        def check(result):
            outcome, banner, newBanner, newEHLO, oldEHLO, before, after = result
            self.assertTrue(outcome.succeeded, outcome.error)
            self.assertEqual(
                set(outcome.changed),
                {
                    "SMTP_BANNER",
                    "SMTP_MAX_MESSAGE_SIZE",
                    "SMTP_TLS_CERT (file)",
                    "SMTP_TLS_KEY (file)",
                },
            )
            self.assertIn(b"second banner", newBanner)
            self.assertIn(b"SIZE 2000000", newEHLO)
            self.assertIn(b"SIZE 1000000", oldEHLO)
            self.assertEqual(before, self.pki.good.certificate.public_bytes(_DER))
            self.assertEqual(after, renewed.certificate.public_bytes(_DER))

        return deferToThread(scenario).addCallback(check)

    def test_sessionBeforeKeepsCertificate(self):
        """
        A session greeted before the certificate was renewed gets the old
        certificate at its STARTTLS.
        """
        renewed = self.pki.ca.issue([HOST], basename="renewed")

        def scenario():
            old, _ = _greeting(self.port)
            self.install(renewed)
            self.reload()
            return _startTLS(old)

        def check(der):
            self.assertEqual(der, self.pki.good.certificate.public_bytes(_DER))

        return deferToThread(scenario).addCallback(check)

    def test_invalidChangesNothing(self):
        """
        A reload with an invalid value applies nothing of the file, also
        what is valid in it, and the server goes on serving.
        """

        def scenario():
            self.write(SMTP_BANNER="never", SMTP_MAX_RECIPIENTS="many")
            outcome = self.reload()
            sock, banner = _greeting(self.port)
            sock.close()
            return outcome, banner

        def check(result):
            outcome, banner = result
            self.assertFalse(outcome.succeeded)
            self.assertIn(
                "SMTP_MAX_RECIPIENTS: 'many' is not a whole number (set in the env file",
                outcome.error,
            )
            self.assertIn(b"first banner", banner)
            self.assertEqual(self.service.settings.banner, "first banner")

        return deferToThread(scenario).addCallback(check)

    def test_badCertificateChangesNothing(self):
        """
        A renewed certificate that does not match its key: nothing changes,
        new sessions keep the certificate in use.
        """
        other = self.pki.ca.issue([HOST], basename="other")

        def scenario():
            shutil.copyfile(other.certPath, self.certPath)
            self.write(SMTP_BANNER="never")
            outcome = self.reload()
            sock, banner = _greeting(self.port)
            der = _startTLS(sock)
            return outcome, banner, der

        def check(result):
            outcome, banner, der = result
            self.assertFalse(outcome.succeeded)
            self.assertTrue(outcome.error.startswith("SMTP_TLS_KEY: "), outcome.error)
            self.assertIn(b"first banner", banner)
            self.assertEqual(der, self.pki.good.certificate.public_bytes(_DER))

        return deferToThread(scenario).addCallback(check)

    def test_ctl(self):
        """
        gopherpostctl reaches the running server: status, the configuration
        as the server sees it, a reload, the queue; an action the server
        carries out (an empty flush).
        """
        spool = self.service.spool.path

        def scenario():
            results = {}
            for name, args in [
                ("status", ["status", "--json"]),
                ("show", ["config", "show", "--json"]),
                ("list", ["queue", "list"]),
                ("flush", ["queue", "flush", "--all"]),
                ("tls", ["tls", "status"]),
            ]:
                results[name] = runCtl(["-q", spool, *args])
            self.write(SMTP_BANNER="from ctl")
            results["reload"] = runCtl(["-q", spool, "config", "reload"])
            return results

        def check(results):
            status, out, _ = results["status"]
            self.assertEqual(status, 0)
            self.assertEqual(json.loads(out)["listeners"][0]["role"], "smtp")
            status, out, _ = results["show"]
            rows = {r["variable"]: r for r in json.loads(out)["variables"]}
            self.assertEqual(rows["SMTP_BANNER"]["origin"], f"env file {self.envFile}, line 1")
            self.assertEqual(rows["SMTP_PORT"]["origin"], "environment")
            self.assertEqual(results["list"], (0, "Mail queue is empty\n", ""))
            self.assertEqual(
                results["flush"], (0, "flushed: none\nheld: none\nnotFound: none\n", "")
            )
            self.assertEqual(
                results["tls"],
                (
                    1,
                    "",
                    "gopherpostctl: the running server does not use ACME "
                    "(SMTP_ACME_DOMAINS is empty)\n",
                ),
            )
            self.assertEqual(
                results["reload"], (0, "Configuration reloaded: SMTP_BANNER changed\n", "")
            )
            self.assertEqual(self.service.settings.banner, "from ctl")

        return deferToThread(scenario).addCallback(check)


class DaemonReloadTests(TestCase):
    """
    A real twistd process, as systemd runs it: SIGHUP, and signals to stop.
    """

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        self.port = freePort()
        self.envFile = os.path.join(self.directory, "gopherpost.env")

    def start(self, **variables: str) -> ServerProcess:
        environ = serverEnvironment(os.path.join(self.directory, "spool"), self.port)
        for name in ("SMTP_WORKERS",):
            environ.pop(name)
        environ.update(variables)
        self.writeFile(SMTP_BANNER="first banner")
        server = ServerProcess(
            environ, ["--env-file", self.envFile], os.path.join(self.directory, "server.log")
        )
        self.addCleanup(server.kill)
        return server

    def writeFile(self, **variables: str) -> None:
        with open(self.envFile, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in variables.items()))

    def banner(self) -> bytes:
        sock, banner = _greeting(self.port)
        sock.close()
        return banner

    def test_sighup(self):
        """
        SIGHUP reads the edited env file: a valid change is applied and
        logged in one line; an invalid one changes nothing and is one error
        line naming the variable, the file and the line.  No traceback.
        """
        server = self.start()

        def scenario():
            server.waitForLog("GopherPost ")
            waitForPort(self.port, time.monotonic() + 30)
            first = self.banner()
            self.writeFile(SMTP_BANNER="second banner")
            server.signal(signal.SIGHUP)
            server.waitForLog("Configuration reloaded: SMTP_BANNER changed")
            second = self.banner()
            self.writeFile(SMTP_BANNER="third banner", SMTP_COMMAND_TIMEOUT="soon")
            server.signal(signal.SIGHUP)
            server.waitForLog("Reload failed, nothing changed")
            third = self.banner()
            server.signal(signal.SIGTERM)
            return first, second, third, server.finish(), server.log()

        def check(result):
            first, second, third, status, log = result
            self.assertIn(b"first banner", first)
            self.assertIn(b"second banner", second)
            self.assertIn(b"second banner", third)
            self.assertIn(
                "Reload failed, nothing changed: SMTP_COMMAND_TIMEOUT: 'soon' is not a number of "
                f"seconds (set in the env file {self.envFile}, line 2)",
                log,
            )
            self.assertIn(status, (0, -signal.SIGTERM))
            self.assertNotIn("Traceback", log)

        return deferToThread(scenario).addCallback(check)

    def test_workersReload(self):
        """
        With SMTP_WORKERS=2 every worker reloads: new connections, whichever
        worker takes them, get the new banner.
        """
        server = self.start(SMTP_WORKERS="2")

        def scenario():
            server.waitForLog("accepting on", count=2)
            waitForPort(self.port, time.monotonic() + 30)
            self.writeFile(SMTP_BANNER="second banner")
            server.signal(signal.SIGHUP)
            server.waitForLog("reloaded", count=3)
            banners = [self.banner() for _ in range(8)]
            server.signal(signal.SIGTERM)
            server.finish()
            return banners, server.log()

        def check(result):
            banners, log = result
            self.assertEqual(log.count(" reloaded"), 3, log)
            for banner in banners:
                self.assertIn(b"second banner", banner)
            self.assertNotIn("Traceback", log)

        return deferToThread(scenario).addCallback(check)

    def test_secondSignal(self):
        """
        SIGTERM with a session in DATA waits for it and says so; a second
        SIGTERM ends the process at once, without a traceback.
        """
        server = self.start()

        def scenario():
            server.waitForLog("GopherPost ")
            waitForPort(self.port, time.monotonic() + 30)
            sock, _ = _greeting(self.port)
            for command in (
                b"EHLO client.test\r\n",
                b"MAIL FROM:<a@gopherpost.test>\r\n",
                b"RCPT TO:<b@gopherpost.test>\r\n",
                b"DATA\r\n",
            ):
                sock.sendall(command)
                _reply(sock)
            server.signal(signal.SIGTERM)
            server.waitForLog("Stopping: waiting up to 30 s for 1 sessions in DATA")
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            status = server.finish(20)
            sock.close()
            return status, time.monotonic() - started, server.log()

        def check(result):
            status, took, log = result
            self.assertEqual(status, -signal.SIGTERM)
            self.assertLess(took, 15)
            self.assertIn("Received SIGTERM again while stopping: stopping at once", log)
            self.assertNotIn("Traceback", log)

        return deferToThread(scenario).addCallback(check)
