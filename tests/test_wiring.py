"""
Tests for L{gopherpost.wiring}: the parts, built once, for every listener.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from gopherpost.inbound.factory import SMTPFactory
from gopherpost.inbound.roles import SMTP, SUBMISSION, SUBMISSIONS
from gopherpost.inbound.workers import WorkerPool
from gopherpost.listeners.implicittls import ImplicitTLSFactory
from gopherpost.listeners.proxy import ProxyProtocolFactory
from gopherpost.listeners.service import InboundService
from gopherpost.reload.switch import SwitchableFactory
from gopherpost.tap import Options, makeService
from gopherpost.wiring import GopherPostService, configuredListeners
from tests.support.server import freePort, serverEnvironment


class ListenerWiringTests(TestCase):
    """
    One SMTP factory per role, wrapped per listener.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())

    def build(self, **overrides: str) -> GopherPostService:
        environ = serverEnvironment(self.path, 2525, SMTP_TLS_DISABLE="false", **overrides)
        return makeService(Options(), environ, Clock())

    def test_default(self) -> None:
        """
        Without C{SMTP_LISTEN}: one listener on C{SMTP_LISTEN_ADDR} and
        C{SMTP_PORT}, the role's factory as it is behind the reload switch.
        """
        service = self.build()
        self.assertIsInstance(service.inbound, InboundService)
        [listener] = service.inbound.listeners
        self.assertEqual(listener.spec.description, "tcp:2525:interface=127.0.0.1")
        self.assertEqual(listener.spec.variable, "SMTP_PORT")
        self.assertIsInstance(listener.factory, SwitchableFactory)
        self.assertIsInstance(listener.factory.current, SMTPFactory)
        self.assertIs(listener.factory.current.role, SMTP)

    def test_everyRole(self) -> None:
        """
        Each variable's listeners serve its role; submissions inside
        implicit TLS, C{haproxy:} outermost; every role's factory shares
        one set of connection limits.
        """
        service = self.build(
            SMTP_LISTEN="tcp:2525:interface=127.0.0.1,haproxy:tcp:2526:interface=127.0.0.1",
            SMTP_SUBMISSION_LISTEN="tcp:2587:interface=127.0.0.1",
            SMTP_SUBMISSIONS_LISTEN="haproxy:tcp:2465:interface=127.0.0.1",
        )
        plain, proxied, submission, submissions = (
            listener.factory.current for listener in service.inbound.listeners
        )
        self.assertIs(plain.role, SMTP)
        self.assertIsInstance(proxied, ProxyProtocolFactory)
        self.assertIs(proxied.wrappedFactory, plain)
        self.assertEqual(proxied.description, "haproxy:tcp:2526:interface=127.0.0.1")
        self.assertIs(submission.role, SUBMISSION)
        self.assertIsInstance(submissions, ProxyProtocolFactory)
        tls = submissions.wrappedFactory
        self.assertIsInstance(tls, ImplicitTLSFactory)
        self.assertEqual(tls.timeout, service.settings.commandTimeout)
        self.assertIs(tls.wrappedFactory.role, SUBMISSIONS)
        factories = service.inbound.factories
        self.assertEqual([f.role for f in factories], [SMTP, SUBMISSION, SUBMISSIONS])
        self.assertEqual(len({id(f.limits) for f in factories}), 1)

    def test_configuredListeners(self) -> None:
        """
        The roles in order, with C{SMTP_LISTEN=none} leaving out the SMTP
        role.
        """
        service = self.build(SMTP_LISTEN="none", SMTP_SUBMISSIONS_LISTEN="tcp:2465")
        self.assertEqual(
            [(role, spec.description) for role, spec in configuredListeners(service.settings)],
            [(SUBMISSIONS, "tcp:2465")],
        )

    def test_workers(self) -> None:
        """
        With workers, the pool gets every listener and its role.
        """
        service = self.build(
            SMTP_WORKERS="2", SMTP_SUBMISSIONS_LISTEN="tcp:2465:interface=127.0.0.1"
        )
        self.assertIsInstance(service.inbound, WorkerPool)
        self.assertEqual(
            [(role, spec.port) for role, spec in service.inbound.listeners],
            [(SMTP, 2525), (SUBMISSIONS, 2465)],
        )
        self.assertEqual(
            service.ready()[1],
            "SMTP listener is not bound: "
            "tcp:2525:interface=127.0.0.1 (SMTP_PORT), "
            "tcp:2465:interface=127.0.0.1 (SMTP_SUBMISSIONS_LISTEN)",
        )

    def test_ignoredVariables(self) -> None:
        """
        With C{SMTP_LISTEN} set, C{SMTP_PORT} and C{SMTP_LISTEN_ADDR} are
        ignored, and a warning says so.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.build(SMTP_LISTEN="tcp:2626:interface=127.0.0.1")
        [warning] = [e for e in observer if e["log_level"] == LogLevel.warn]
        self.assertEqual(warning["ignored"], "SMTP_PORT and SMTP_LISTEN_ADDR")


class StartUpTests(TestCase):
    """
    Binding at start-up, for real.
    """

    def test_readyWhenEveryListenerBound(self) -> None:
        """
        The service is ready once every listener is bound, and stops
        cleanly.
        """
        ports = [freePort(), freePort()]
        environ = serverEnvironment(
            os.path.abspath(self.mktemp()),
            ports[0],
            SMTP_TLS_DISABLE="false",
            SMTP_SUBMISSIONS_LISTEN=f"tcp:{ports[1]}:interface=127.0.0.1",
        )
        service = makeService(Options(), environ, reactor)
        self.assertFalse(service.ready()[0])
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(service.ready(), (True, ""))

    def test_busyPortEndsStartUp(self) -> None:
        """
        A listener whose port is taken ends start-up: one critical line
        naming its variable, L{SystemExit}, and nothing left bound.
        """
        free = freePort()
        taken = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        busy = taken.getHost().port  # type: ignore[attr-defined]
        environ = serverEnvironment(
            os.path.abspath(self.mktemp()),
            free,
            SMTP_TLS_DISABLE="false",
            SMTP_SUBMISSION_LISTEN=f"tcp:{busy}:interface=127.0.0.1",
        )
        service = makeService(Options(), environ, reactor)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        error = self.assertRaises(SystemExit, service.privilegedStartService)
        self.assertEqual(error.code, 1)
        [critical] = [e for e in observer if e["log_level"] == LogLevel.critical]
        self.assertTrue(critical["error"].startswith("SMTP_SUBMISSION_LISTEN: cannot listen on"))
        self.assertEqual(
            [listener.bound for listener in service.inbound.listeners],
            [False, False],
        )
