"""
Integration tests for receiving mail: real sockets on 127.0.0.1, Python's
C{smtplib} as the client, a loopback DNS server, a real C{twistd} process.
"""

from __future__ import annotations

import os
import signal
import smtplib
import ssl
import threading
import time
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from gopherpost.spool import Spool
from tests.support.certs import makeTestPKI
from tests.support.dnsserver import DNSTestServer
from tests.support.server import (
    TwistdProcess,
    freePort,
    serverEnvironment,
    startInProcess,
    waitForPort,
)


def storedMessages(queuePath: str) -> dict:
    """
    C{{queue id: [contents of each .eml]}} and the set of envelopes.
    """
    messages: dict = {}
    envelopes = set()
    for directory in sorted(os.listdir(queuePath)):
        if not directory[:4].isdigit():
            continue
        for name in os.listdir(os.path.join(queuePath, directory)):
            path = os.path.join(queuePath, directory, name)
            if name.endswith(".eml"):
                with open(path, "rb") as f:
                    messages.setdefault(name.split("_")[0], []).append(f.read())
            elif name.endswith(".envelope"):
                envelopes.add(name[: -len(".envelope")])
    return {"messages": messages, "envelopes": envelopes}


class InProcessTests(TestCase):
    """
    The server wired by C{makeService}, talked to with C{smtplib}.
    """

    def test_sendmail(self) -> Deferred[Any]:
        """
        smtplib sends a message to three recipients; the reply names the
        queue id and the message is stored once per recipient.
        """
        path = os.path.abspath(self.mktemp())
        port = freePort()
        startInProcess(self, serverEnvironment(path, port))

        def send():
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                code, greeting = client.ehlo("client.test")
                client.mail("alice@gopherpost.test")
                for r in ("bob@gopherpost.test", "carol@gopherpost.test", "dan@gopherpost.test"):
                    client.rcpt(r)
                reply = client.data(b"Subject: integration\r\n\r\n.leading dot\r\n")
                return greeting, reply

        def check(result):
            greeting, (code, text) = result
            self.assertIn(b"SIZE 10485760", greeting)
            self.assertEqual(code, 250)
            queueId = text.split()[-1].decode()
            stored = storedMessages(path)
            self.assertEqual(len(stored["messages"][queueId]), 3)
            self.assertIn(queueId, stored["envelopes"])
            self.assertTrue(stored["messages"][queueId][0].endswith(b"\r\n.leading dot\r\n"))

        return deferToThread(send).addCallback(check)

    def test_startTLS(self) -> Deferred[Any]:
        """
        With SMTP_TLS_CERT/KEY, a client that verifies against the test CA
        upgrades with STARTTLS (TLS 1.2 or later) and the message records it.
        """
        path = os.path.abspath(self.mktemp())
        pki = makeTestPKI(self.mktemp(), "mx.gopherpost.test")
        port = freePort()
        startInProcess(
            self,
            serverEnvironment(
                path,
                port,
                SMTP_TLS_DISABLE="false",
                SMTP_TLS_CERT=pki.chained.certPath,
                SMTP_TLS_KEY=pki.chained.keyPath,
            ),
        )

        def send():
            context = ssl.create_default_context(cafile=pki.ca.certPath)
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("client.test")
                self.assertTrue(client.has_extn("starttls"))
                client._host = "mx.gopherpost.test"  # type: ignore[attr-defined]
                client.starttls(context=context)
                version = cast(ssl.SSLSocket, client.sock).version()
                client.ehlo("client.test")
                self.assertFalse(client.has_extn("starttls"))
                client.sendmail(
                    "alice@gopherpost.test", ["bob@gopherpost.test"], b"Subject: tls\r\n\r\nx\r\n"
                )
                return version

        def check(version):
            self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
            [content] = [c for cs in storedMessages(path)["messages"].values() for c in cs]
            self.assertIn(b"with ESMTPS id", content)
            self.assertIn(b"(using TLSv1.", content)

        return deferToThread(send).addCallback(check)

    def test_oldTLSRefused(self) -> Deferred[Any]:
        """
        A client limited to TLS 1.1 cannot complete the handshake.
        """
        path = os.path.abspath(self.mktemp())
        port = freePort()
        startInProcess(self, serverEnvironment(path, port, SMTP_TLS_DISABLE="false"))

        def send():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            # Let the client offer TLS 1.0/1.1 so only the server can refuse.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            try:
                context.maximum_version = ssl.TLSVersion.TLSv1_1
                context.minimum_version = ssl.TLSVersion.TLSv1
            except ValueError:
                raise SkipTest("this OpenSSL cannot offer TLS 1.1 as a client") from None
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("client.test")
                try:
                    client.starttls(context=context)
                except (ssl.SSLError, OSError, smtplib.SMTPException):
                    return "refused"
                return "accepted"

        return deferToThread(send).addCallback(
            lambda outcome: self.assertNotEqual(outcome, "accepted")
        )

    def test_allowHostsForwardConfirmed(self) -> Deferred[Any]:
        """
        SMTP_ALLOW_HOSTS names match only by forward-confirmed reverse DNS,
        asked of the server in SMTP_DNS_SERVERS.
        """
        dnsServer = DNSTestServer(reactor)
        dnsServer.start()
        self.addCleanup(dnsServer.stop)
        dnsServer.addPTR("127.0.0.1", "client.gopherpost.test")
        dnsServer.addA("client.gopherpost.test", "127.0.0.1")
        dnsServer.addPTR("127.0.0.2", "liar.gopherpost.test")
        dnsServer.addA("liar.gopherpost.test", "192.0.2.99")
        path = os.path.abspath(self.mktemp())
        port = freePort()
        startInProcess(
            self,
            serverEnvironment(
                path,
                port,
                SMTP_LISTEN_ADDR="0.0.0.0",
                SMTP_ALLOW_NETWORKS="",
                SMTP_ALLOW_HOSTS="client.gopherpost.test,liar.gopherpost.test",
                SMTP_DNS_SERVERS="%s:%d" % dnsServer.address,
            ),
        )

        def connect(source):
            try:
                with smtplib.SMTP(timeout=30, source_address=(source, 0)) as client:
                    return client.connect("127.0.0.1", port)
            except smtplib.SMTPConnectError as e:
                return (e.smtp_code, e.smtp_error)

        def check(results):
            allowed, refused = results
            self.assertEqual(allowed[0], 220)
            self.assertEqual(refused, (554, b"5.7.1 Access denied"))

        def both():
            return connect("127.0.0.1"), connect("127.0.0.2")

        return deferToThread(both).addCallback(check)


class DaemonTests(TestCase):
    """
    The real C{twistd -n gopherpost} process.
    """

    timeout = 240

    def test_badConfiguration(self) -> Deferred[Any]:
        """
        An invalid variable stops start-up with exit code 1 and one line
        naming it, without a traceback, before anything is bound.
        """
        port = freePort()
        cases = [
            ({"SMTP_PORT": "twenty-five"}, "SMTP_PORT"),
            ({"SMTP_ALLOW_NETWORKS": "192.0.2.0/33"}, "SMTP_ALLOW_NETWORKS"),
            ({"SMTP_DEBUG": "yes"}, "SMTP_DEBUG"),
            ({"SMTP_MAX_MESSAGE_SIZE": "big"}, "SMTP_MAX_MESSAGE_SIZE"),
            (
                {
                    "SMTP_TLS_DISABLE": "false",
                    "SMTP_TLS_CERT": "/nonexistent.pem",
                    "SMTP_TLS_KEY": "/nonexistent.pem",
                },
                "SMTP_TLS_CERT",
            ),
        ]
        path = os.path.abspath(self.mktemp())
        garbage = os.path.abspath(self.mktemp())
        with open(garbage, "w") as f:
            f.write("not a certificate\n")
        cases.append(
            (
                {"SMTP_TLS_DISABLE": "false", "SMTP_TLS_CERT": garbage, "SMTP_TLS_KEY": garbage},
                "SMTP_TLS_CERT",
            )
        )

        def runAll():
            results = []
            for overrides, variable in cases:
                process = TwistdProcess(serverEnvironment(path, port, **overrides))
                results.append((variable, process.finish()))
            return results

        def check(results):
            for variable, (code, out, err) in results:
                self.assertNotEqual(code, 0, variable)
                lines = [line for line in err.decode().splitlines() if line.strip()]
                self.assertEqual(len(lines), 1, (variable, err))
                self.assertIn(variable, lines[0])
                self.assertNotIn(b"Traceback", out + err)
            assertPortFree(port)

        return deferToThread(runAll).addCallback(check)

    def test_killNineKeepsAcknowledgedMail(self) -> None:
        """
        Clients send mail while the server is killed with SIGKILL: every
        acknowledged message is on disk, complete; every visible message is
        complete; after the restart's recovery every message has an envelope.
        """
        return self.killNine(workers=1)

    def test_killNineWorkers(self) -> None:
        """
        The same for a parent and two inbound workers killed together.
        """
        return self.killNine(workers=2)

    def killNine(self, workers: int):
        path = os.path.abspath(self.mktemp())
        port = freePort()
        server = TwistdProcess(serverEnvironment(path, port, SMTP_WORKERS=str(workers)))
        self.addCleanup(server.kill)
        acknowledged = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(number):
            sequence = 0
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                    smtp.ehlo("client%d.test" % number)
                    while not stop.is_set() and sequence < 500:
                        marker = b"END %d-%d" % (number, sequence)
                        body = (
                            b"Subject: kill test\r\n\r\n"
                            + (b"x" * 70 + b"\r\n") * 200
                            + marker
                            + b"\r\n"
                        )
                        smtp.mail("alice@gopherpost.test")
                        smtp.rcpt("bob@gopherpost.test")
                        smtp.rcpt("carol@gopherpost.test")
                        code, text = smtp.data(body)
                        if code == 250:
                            with lock:
                                acknowledged.append((text.split()[-1].decode(), marker))
                        sequence += 1
            except (OSError, smtplib.SMTPException):
                pass

        def scenario():
            waitForPort(port, time.monotonic() + 60)
            threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while len(acknowledged) < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            server.killGroup()
            server.process.wait(timeout=30)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            return list(acknowledged)

        def check(acked):
            self.assertGreaterEqual(len(acked), 40)
            stored = storedMessages(path)
            for queueId, marker in acked:
                self.assertIn(queueId, stored["envelopes"])
                contents = stored["messages"][queueId]
                self.assertEqual(len(contents), 2)
                for content in contents:
                    self.assertTrue(content.endswith(marker + b"\r\n"))
            for _queueId, contents in stored["messages"].items():
                for content in contents:
                    self.assertTrue(content.startswith(b"Received: "))
                    self.assertTrue(content.endswith(b"\r\n") and b"\r\nEND " in content[-40:])
            Spool(path, reactor).open()
            after = storedMessages(path)
            self.assertEqual(set(after["messages"]), after["envelopes"])
            self.assertTrue({q for q, _ in acked} <= after["envelopes"])

        return deferToThread(scenario).addCallback(check)


class ShutdownTests(TestCase):
    """
    SIGTERM stops accepting, lets a message in DATA finish, then exits.
    """

    timeout = 120

    def test_sigtermFinishesData(self) -> None:
        """
        A client in the middle of DATA when SIGTERM arrives still gets its
        250 (and the message is stored), then 421; new connections are
        refused and the process exits with a clean status.
        """
        return self.sigterm(workers=1)

    def test_sigtermFinishesDataWorkers(self) -> None:
        """
        The same with two inbound worker processes.
        """
        return self.sigterm(workers=2)

    def sigterm(self, workers: int):
        import socket

        path = os.path.abspath(self.mktemp())
        port = freePort()
        server = TwistdProcess(serverEnvironment(path, port, SMTP_WORKERS=str(workers)))
        self.addCleanup(server.kill)

        def scenario():
            waitForPort(port, time.monotonic() + 60)
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                reader = sock.makefile("rb")

                def reply():
                    lines = []
                    while True:
                        line = reader.readline()
                        lines.append(line)
                        if not line or line[3:4] != b"-":
                            return lines

                reply()
                sock.sendall(b"EHLO c.test\r\n")
                reply()
                sock.sendall(
                    b"MAIL FROM:<a@gopherpost.test>\r\nRCPT TO:<b@gopherpost.test>\r\nDATA\r\n"
                )
                reply(), reply(), reply()
                sock.sendall(b"Subject: shutdown\r\n\r\nfirst half\r\n")
                os.kill(server.process.pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                refused = False
                while time.monotonic() < deadline:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    except OSError:
                        refused = True
                        break
                    time.sleep(0.05)
                sock.sendall(b"second half\r\n.\r\n")
                final = reply()
                after = reply()
            code, out, err = server.finish(timeout=60)
            return refused, final, after, code

        def check(result):
            refused, final, after, code = result
            self.assertTrue(refused, "still accepting connections after SIGTERM")
            self.assertTrue(final[0].startswith(b"250 2.0.0 Ok: queued as"), final)
            self.assertTrue(after[0].startswith(b"421 4.3.2"), after)
            # twistd re-raises SIGTERM after a clean shutdown; systemd
            # counts death by SIGTERM as a successful stop.
            self.assertIn(code, (0, -signal.SIGTERM))
            [contents] = storedMessages(path)["messages"].values()
            self.assertTrue(contents[0].endswith(b"first half\r\nsecond half\r\n"))

        return deferToThread(scenario).addCallback(check)


def assertPortFree(port: int) -> None:
    """
    Nothing listens on C{port}: start-up failed before binding.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
