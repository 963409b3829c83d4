"""
Tests for ACME's place in the server (L{gopherpost.tap}): with
C{SMTP_ACME_DOMAINS} the SMTP listener serves the ACME service's
certificate switch, its metrics join the server's, and C{/readyz} asks it.
"""

from __future__ import annotations

import os

from prometheus_client import generate_latest
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from gopherpost.acme import ACMEService, CertificateSwitch
from gopherpost.tap import Options, makeService
from tests.support.server import serverEnvironment


def environment(queuePath: str, **overrides: str) -> dict[str, str]:
    return serverEnvironment(
        queuePath,
        2525,
        SMTP_TLS_DISABLE="false",
        SMTP_ACME_DOMAINS="mx.gopherpost.test",
        SMTP_ACME_AGREE_TOS="true",
        SMTP_ACME_DIRECTORY="https://ca.gopherpost.test/directory",
        SMTP_ACME_CHALLENGE_LISTEN="tcp:8402:interface=127.0.0.1",
        **overrides,
    )


class WiringTests(TestCase):
    def build(self, **overrides: str):
        reactor = MemoryReactorClock()
        queue = self.mktemp()
        return makeService(
            Options(), environ=environment(queue, **overrides), reactor=reactor
        ), queue

    def test_switchServesSMTP(self) -> None:
        """
        The SMTP factory's TLS is the ACME service's certificate switch,
        serving the self-signed certificate until the first is issued.
        """
        service, queue = self.build()
        self.assertIsInstance(service.acme, ACMEService)
        self.assertIn(service.acme, list(service))
        contextFactory = service.inbound.factory.contextFactory
        self.assertIsInstance(contextFactory, CertificateSwitch)
        self.assertIs(contextFactory, service.acme.contextFactory)
        self.assertEqual(contextFactory.current.origin, "self-signed")
        self.assertEqual(contextFactory.current.names, ("mx.gopherpost.test",))
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
        service.inbound = type("Bound", (), {"listening": True})()
        service.acme.readiness = lambda: (False, "the TLS certificate for x expired")
        self.assertEqual(service.ready(), (False, "the TLS certificate for x expired"))
        service.acme.readiness = lambda: (True, "")
        self.assertTrue(service.ready()[0])

    def test_off(self) -> None:
        reactor = MemoryReactorClock()
        service = makeService(
            Options(), environ=serverEnvironment(self.mktemp(), 2525), reactor=reactor
        )
        self.assertIsNone(service.acme)
