"""
Integration tests for C{haproxy:} listeners with Debian's real HAProxy in
front (PROXY protocol v1 and v2), clients on their own loopback addresses:
the address HAProxy names is the client's everywhere.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import uuid

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.auth import TEST_PASSWORD, TEST_USER, addTestUser
from tests.support.haproxy import startHAProxy
from tests.support.relay import eventually
from tests.support.server import freePort, serverEnvironment, startInProcess


def storedWith(queuePath: str, token: bytes) -> bytes | None:
    """
    The stored message (one of its links) containing C{token}, if any.
    """
    for directory in os.listdir(queuePath):
        if not directory[:4].isdigit():
            continue
        for name in os.listdir(os.path.join(queuePath, directory)):
            if name.endswith(".eml"):
                with open(os.path.join(queuePath, directory, name), "rb") as f:
                    data = f.read()
                if token in data:
                    return data
    return None


def send(port: int, source: str, token: bytes, implicitTLS: bool = False) -> tuple[int, bytes]:
    """
    Send one message from C{source} through the frontend on C{port}.

    @return: the reply to DATA.
    """
    if implicitTLS:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            "127.0.0.1", port, timeout=30, source_address=(source, 0), context=context
        )
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0))
    with client:
        client.ehlo("client.test")
        if implicitTLS:
            # The submissions role: AUTH before MAIL.
            client.login(TEST_USER, TEST_PASSWORD)
        client.mail("alice@gopherpost.test")
        client.rcpt("postmaster@gopherpost.test")
        return client.data(b"Subject: via haproxy\r\n\r\n" + token + b"\r\n")


class HAProxyTests(TestCase):
    """
    A server behind HAProxy: allowed only for the clients' own addresses
    (not the balancer's, 127.0.0.1), one connection per client address.
    """

    timeout = 120

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.smtpPort, self.tlsPort = freePort(), freePort()
        addTestUser(self.path)
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.service = startInProcess(
            self,
            serverEnvironment(
                self.path,
                0,
                SMTP_LISTEN=f"haproxy:tcp:{self.smtpPort}:interface=127.0.0.1",
                SMTP_SUBMISSIONS_LISTEN=f"haproxy:tcp:{self.tlsPort}:interface=127.0.0.1",
                SMTP_TLS_DISABLE="false",
                SMTP_ALLOW_NETWORKS="127.0.0.5/32,127.0.0.6/32",
                SMTP_RELAY_NETWORKS="127.0.0.5/32",
                SMTP_MAX_CONNECTIONS_PER_IP="1",
                SMTP_PORT="",
            ),
        )
        self.proxy = startHAProxy(
            self,
            os.path.join(self.path, "..", "haproxy"),
            [
                ("v1", self.smtpPort, 1),
                ("v2", self.smtpPort, 2),
                ("tls", self.tlsPort, 2),
            ],
        )

    def frontend(self, name: str) -> int:
        return self.proxy.frontends[name].port

    @inlineCallbacks
    def test_realClientAddress(self):
        """
        Through v1 and v2, and into implicit TLS, the allow-list admits the
        client by the address in the header; the C{Received:} header and
        the log name that address, not the balancer's.
        """
        cases = [
            ("v1", "127.0.0.5", False),
            ("v2", "127.0.0.6", False),
            ("tls", "127.0.0.5", True),
        ]
        for name, source, implicitTLS in cases:
            token = uuid.uuid4().hex.encode()
            code, _ = yield deferToThread(send, self.frontend(name), source, token, implicitTLS)
            self.assertEqual(code, 250, name)
            stored = storedWith(self.path, token)
            assert stored is not None
            received = stored.split(b"\r\n\r\n")[0]
            self.assertIn(b"([%s])" % source.encode(), received, name)
            self.assertNotIn(b"127.0.0.1", received, name)
        accepted = [e for e in self.observer if "Accepted" in e.get("log_format", "")]
        self.assertEqual([e["client"] for e in accepted], ["127.0.0.5", "127.0.0.6", "127.0.0.5"])

    def test_accessUsesHeader(self) -> Deferred:
        """
        A client address outside the allow-list is refused although the
        balancer's own address is not the point: C{554} before anything.
        """

        def connect() -> tuple[int, bytes | str]:
            try:
                with smtplib.SMTP(timeout=30, source_address=("127.0.0.7", 0)) as client:
                    return client.connect("127.0.0.1", self.frontend("v2"))
            except smtplib.SMTPConnectError as e:
                return (e.smtp_code, e.smtp_error)

        return deferToThread(connect).addCallback(
            lambda reply: self.assertEqual(reply, (554, b"5.7.1 Access denied"))
        )

    def test_perAddressLimit(self) -> Deferred:
        """
        The per-address limit counts the clients' addresses: a second
        connection from 127.0.0.5 is refused while one from 127.0.0.6 is
        served.
        """

        def connectAll() -> tuple[int, int, int]:
            with smtplib.SMTP(timeout=30, source_address=("127.0.0.5", 0)) as first:
                held = first.connect("127.0.0.1", self.frontend("v1"))[0]
                try:
                    with smtplib.SMTP(timeout=30, source_address=("127.0.0.5", 0)) as second:
                        refused = second.connect("127.0.0.1", self.frontend("v2"))[0]
                except smtplib.SMTPConnectError as e:
                    refused = e.smtp_code
                with smtplib.SMTP(timeout=30, source_address=("127.0.0.6", 0)) as other:
                    served = other.connect("127.0.0.1", self.frontend("v2"))[0]
            return held, refused, served

        return deferToThread(connectAll).addCallback(
            lambda codes: self.assertEqual(codes, (220, 421, 220))
        )

    @inlineCallbacks
    def test_withoutHeader(self):
        """
        A client that reaches the C{haproxy:} listener directly, without a
        PROXY header, gets no greeting and is closed; the log names the
        address it came from.
        """

        def direct() -> bytes:
            with socket.create_connection(("127.0.0.1", self.smtpPort), timeout=30) as sock:
                sock.sendall(b"EHLO client.test\r\n")
                return sock.recv(1024)

        data = yield deferToThread(direct)
        self.assertEqual(data, b"")
        yield eventually(
            lambda: any(e["log_level"] == LogLevel.warn and "balancer" in e for e in self.observer)
        )
        [warning] = [
            e for e in self.observer if e["log_level"] == LogLevel.warn and "balancer" in e
        ]
        self.assertTrue(warning["balancer"].startswith("127.0.0.1:"))
        self.assertIn(f"haproxy:tcp:{self.smtpPort}", warning["listener"])
