"""
Tests for ACME's place in the server (L{gopherpost.tap}): with
C{SMTP_ACME_DOMAINS} the SMTP listener serves the ACME service's
certificate switch, its metrics join the server's, and C{/readyz} asks it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from prometheus_client import generate_latest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gopherpost.acme import ACMEService, CertificateSwitch, makeACMEService
from gopherpost.acme.challenge import ChallengeSite
from gopherpost.config import ConfigError, settingsFromEnvironment
from gopherpost.listeners.proxy import ProxyProtocolFactory
from gopherpost.tap import Options, makeService
from tests.support.server import freePort, serverEnvironment, startInProcess
from tests.support.tlsprobe import STARTTLSClient


def environment(queuePath: str, **overrides: str) -> dict[str, str]:
    acme = {
        "SMTP_TLS_DISABLE": "false",
        "SMTP_ACME_DOMAINS": "mx.gopherpost.test",
        "SMTP_ACME_AGREE_TOS": "true",
        "SMTP_ACME_DIRECTORY": "https://ca.gopherpost.test/directory",
        "SMTP_ACME_CHALLENGE_LISTEN": "tcp:8402:interface=127.0.0.1",
    }
    acme.update(overrides)
    return serverEnvironment(queuePath, 2525, **acme)


class WiringTests(TestCase):
    timeout = 60

    def build(self, **overrides: str) -> tuple[Any, str]:
        reactor = MemoryReactorClock()
        queue = self.mktemp()
        return makeService(
            Options(), environ=environment(queue, **overrides), reactor=reactor
        ), queue

    @inlineCallbacks
    def test_switchServesSMTP(self) -> Any:
        """
        A STARTTLS client of the running server gets the certificate the
        ACME service holds: the self-signed one until the first is issued
        (the CA here cannot be reached).
        """
        port = freePort()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        queue = self.mktemp()
        environ = environment(
            queue,
            SMTP_PORT=str(port),
            SMTP_ACME_DIRECTORY=f"https://127.0.0.1:{closed}/dir",
            SMTP_ACME_CHALLENGE_LISTEN=f"tcp:{freePort()}:interface=127.0.0.1",
        )
        service = startInProcess(self, environ)
        self.assertIsInstance(service.acme, ACMEService)
        self.assertIn(service.acme, list(service))
        self.assertIsInstance(service.acme.contextFactory, CertificateSwitch)
        client = yield deferToThread(STARTTLSClient, port, "mx.gopherpost.test", None)
        self.addCleanup(deferToThread, client.close)
        served = service.acme.currentCertificate()
        self.assertEqual(served.origin, "self-signed")
        self.assertEqual(client.certificate.serial_number, served.leaf.serial_number)
        state = os.path.join(queue, ".gopherpost", "acme")
        self.assertEqual(os.stat(state).st_mode & 0o777, 0o700)

    def test_metrics(self) -> None:
        service, _ = self.build()
        text = generate_latest(service.metrics.registry).decode()
        self.assertIn('smtp_acme_orders_total{result="failed"} 0.0', text)
        self.assertIn("smtp_tls_certificate_expiry_seconds ", text)

    def test_readiness(self) -> None:
        """
        C{ready()} asks the ACME service.
        """
        service, _ = self.build()

        class Bound:
            listening = True

            def notReady(self) -> None:
                return None

        service.inbound = Bound()
        service.spool.isWritable = lambda: (True, "")
        service.acme.readiness = lambda: (False, "the TLS certificate for x expired")
        self.assertEqual(service.ready(), (False, "the TLS certificate for x expired"))
        service.acme.readiness = lambda: (True, "")
        self.assertEqual(service.ready(), (True, ""))

    def test_off(self) -> None:
        reactor = MemoryReactorClock()
        service = makeService(
            Options(), environ=serverEnvironment(self.mktemp(), 2525), reactor=reactor
        )
        self.assertIsNone(service.acme)


class ChallengeListenerTests(TestCase):
    """
    The HTTP-01 listener is one of the server's listeners.
    """

    def acme(self, listen: str) -> Any:
        environ = environment(self.mktemp(), SMTP_ACME_CHALLENGE_LISTEN=listen)
        settings = settingsFromEnvironment(environ)
        return makeACMEService(settings, self.mktemp(), reactor)

    def test_bindsBeforePrivilegesDrop(self) -> Any:
        """
        Bound in C{privilegedStartService}, serving the challenge site;
        closed at stop.
        """
        service = self.acme("tcp:0:interface=127.0.0.1")
        service.challengeListener.privilegedStartService()
        self.assertTrue(service.challengeListener.bound)
        self.assertIsInstance(service.challengeListener.factory, ChallengeSite)
        return service.challengeListener.stopService()

    def test_busyPort(self) -> None:
        """
        A port in use ends start-up with one line naming
        SMTP_ACME_CHALLENGE_LISTEN.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        service = self.acme(f"tcp:{port}:interface=127.0.0.1")
        with self.assertRaises(ConfigError) as caught:
            service.privilegedStartService()
        self.assertEqual(caught.exception.variable, "SMTP_ACME_CHALLENGE_LISTEN")
        self.assertIn("Address already in use", caught.exception.problem)
        self.assertNotIn("\n", str(caught.exception))

    def test_proxyProtocol(self) -> None:
        """
        C{haproxy:} puts the PROXY-protocol reader in front of the site.
        """
        service = self.acme("haproxy:tcp:0:interface=127.0.0.1")
        self.assertIsInstance(service.challengeListener.factory, ProxyProtocolFactory)
