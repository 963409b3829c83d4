"""
Tests for L{gopherpost.tlspolicy.service}: transport security as the
settings say, its state in the spool's state directory, its place in the
server (L{gopherpost.wiring}).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from gopherpost.config import ConfigError, settingsFromEnvironment
from gopherpost.dns import Resolver
from gopherpost.spool import Spool
from gopherpost.tap import Options, makeService
from gopherpost.tlspolicy.interfaces import IDestinationTLS, IHostTLSPolicy, ITransportSecurity
from gopherpost.tlspolicy.reportstore import PolicyKey
from gopherpost.tlspolicy.service import TLSPolicyService, makeTransportSecurity
from tests.support.certs import makeTestPKI
from tests.support.dnsserver import startDNSServer
from tests.support.server import serverEnvironment

InlineCallbacks = Generator[Deferred[Any], Any, None]


class ServiceTests(TestCase):
    """
    L{makeTransportSecurity}.
    """

    def setUp(self) -> None:
        self.dns = startDNSServer(self)
        self.resolver = Resolver([self.dns.address], reactor)
        self.spool = Spool(os.path.abspath(self.mktemp()), reactor)
        self.spool.open()
        self.pki = makeTestPKI(self.mktemp(), "mx.example.test")

    def build(self, **environ: str) -> TLSPolicyService:
        settings = settingsFromEnvironment(
            {"SMTP_HOSTNAME": "gopher.test", **environ}, checkFiles=False
        )
        return makeTransportSecurity(
            settings, self.spool, self.resolver, reactor, trustRoot=self.pki.ca.trustRoot()
        )

    @inlineCallbacks
    def test_defaults(self) -> InlineCallbacks:
        """
        By default DANE and MTA-STS are on, reports are not sent; the state
        lives in the spool's state directory.
        """
        service = self.build()
        self.assertIsNone(service.reporter)
        self.assertTrue(verifyObject(ITransportSecurity, service.security))
        state = self.spool.stateDirectory
        self.assertTrue(os.path.isdir(os.path.join(state, "mta-sts")))
        self.assertTrue(os.path.isdir(os.path.join(state, "tlsrpt")))
        self.dns.addMX("example.test", 10, "mx.example.test")
        self.dns.markSecure("example.test")
        destination = yield service.security.forDestination("example.test", 25)
        self.assertTrue(verifyObject(IDestinationTLS, destination))
        self.assertTrue(destination.mxSecure)
        host = yield destination.forHost("mx.example.test")
        self.assertTrue(verifyObject(IHostTLSPolicy, host))
        self.assertIn((b"_mta-sts.example.test", 16), self.dns.authority.queries)

    @inlineCallbacks
    def test_off(self) -> InlineCallbacks:
        """
        C{SMTP_MTA_STS=false}, C{SMTP_DANE=false}: neither is looked up.
        """
        service = self.build(SMTP_MTA_STS="false", SMTP_DANE="false")
        destination = yield service.security.forDestination("example.test", 25)
        self.assertFalse(destination.mxSecure)
        self.assertIsNone(destination.stsMode)
        self.assertEqual(self.dns.authority.queries, [])

    @inlineCallbacks
    def test_smarthost(self) -> InlineCallbacks:
        service = self.build(SMTP_RELAY_HOST="smarthost.test:587")
        yield service.security.forDestination("example.test", 25)
        self.assertEqual(self.dns.authority.queries, [])

    def test_reporter(self) -> None:
        self.assertIsNotNone(self.build(SMTP_TLSRPT="true").reporter)

    @inlineCallbacks
    def test_stopFlushes(self) -> InlineCallbacks:
        """
        Statistics are written when the service stops.
        """
        service = self.build()
        service.startService()
        service.reports.recordSuccess("example.test", PolicyKey("no-policy-found"))
        yield service.stopService()
        files = os.listdir(os.path.join(self.spool.stateDirectory, "tlsrpt"))
        self.assertEqual(len(files), 1)

    def test_badTrustStore(self) -> None:
        """
        A C{SSL_CERT_FILE} that does not exist fails at start-up, naming it.
        """
        settings = settingsFromEnvironment({"SMTP_HOSTNAME": "gopher.test"}, checkFiles=False)
        self.patch(os, "environ", {"SSL_CERT_FILE": "/nonexistent/ca.pem"})
        with self.assertRaises(ConfigError) as caught:
            makeTransportSecurity(settings, self.spool, self.resolver, reactor)
        self.assertEqual(caught.exception.variable, "SSL_CERT_FILE")


class WiringTests(TestCase):
    """
    The server holds the transport security service.
    """

    def test_inTheServer(self) -> None:
        path = os.path.abspath(self.mktemp())
        service = makeService(Options(), serverEnvironment(path, 2525), Clock())
        self.assertIsInstance(service.transportSecurity, TLSPolicyService)
        self.assertIs(service.getServiceNamed("tlspolicy"), service.transportSecurity)
        names = {family.name for family in service.metrics.registry.collect()}
        self.assertIn("smtp_outbound_tls_sessions", names)

    def test_notInCaptureMode(self) -> None:
        path = os.path.abspath(self.mktemp())
        environ = serverEnvironment(path, 2525, SMTP_CAPTURE="true")
        service = makeService(Options(), environ, Clock())
        self.assertIsNone(service.transportSecurity)


class SettingsTests(TestCase):
    """
    C{SMTP_MTA_STS}, C{SMTP_MTA_STS_PORT}, C{SMTP_DANE}, C{SMTP_TLSRPT}.
    """

    def settings(self, **environ: str) -> Any:
        return settingsFromEnvironment(
            {"SMTP_HOSTNAME": "gopher.test", **environ}, checkFiles=False
        )

    def test_defaults(self) -> None:
        settings = self.settings()
        self.assertEqual(
            (settings.mtaSts, settings.mtaStsPort, settings.dane, settings.tlsrpt),
            (True, 443, True, False),
        )

    def test_set(self) -> None:
        settings = self.settings(
            SMTP_MTA_STS="false", SMTP_MTA_STS_PORT="8443", SMTP_DANE="false", SMTP_TLSRPT="true"
        )
        self.assertEqual(
            (settings.mtaSts, settings.mtaStsPort, settings.dane, settings.tlsrpt),
            (False, 8443, False, True),
        )

    def test_bad(self) -> None:
        for variable, value in [
            ("SMTP_MTA_STS", "sometimes"),
            ("SMTP_MTA_STS_PORT", "0"),
            ("SMTP_MTA_STS_PORT", "https"),
            ("SMTP_DANE", "2"),
            ("SMTP_TLSRPT", "daily"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                self.settings(**{variable: value})
            self.assertEqual(caught.exception.variable, variable)


class ServerDeliveryTests(TestCase):
    """
    The whole server: its relay's courier consults the transport security
    it built.
    """

    timeout = 60

    @inlineCallbacks
    def test_daneInTheRelay(self) -> InlineCallbacks:
        """
        With DNSSEC-validated MX and TLSA records that the MX certificate
        does not match, the server's relay defers the message and sends
        nothing; the state says why.
        """
        from gopherpost.relay.state import PENDING, StateStore
        from tests.support.relay import eventually
        from tests.support.server import freePort, startInProcess
        from tests.support.smtpserver import SMTPTestServer

        pki = makeTestPKI(self.mktemp(), "mx.example.test")
        dns = startDNSServer(self)
        receiver = SMTPTestServer(hostname="mx.example.test", certificate=pki.good)
        receiver.start("127.0.0.2")
        self.addCleanup(receiver.stop)
        dns.addMX("example.test", 10, "mx.example.test")
        dns.addA("mx.example.test", "127.0.0.2")
        dns.markSecure("example.test")
        dns.addTLSA(f"_{receiver.port}._tcp.mx.example.test", 3, 1, 1, b"\x00" * 32)
        path = os.path.abspath(self.mktemp())
        environ = serverEnvironment(
            path,
            freePort("127.0.0.1"),
            SMTP_DNS_SERVERS="%s:%d" % dns.address,
            SMTP_OUTBOUND_PORT=str(receiver.port),
            SMTP_OUTBOUND_TLS="may",
            SMTP_MTA_STS="false",
        )
        service = startInProcess(self, environ)
        envelope = yield service.spool.store(
            b"Subject: t\r\n\r\nbody\r\n", "alice@gopherpost.test", [("bob@example.test", False)]
        )
        store = StateStore(path)

        def deferred() -> bool:
            state = store.load(envelope.dateDirectory, envelope.queueId)
            return bool(state and state.recipients[0].attempts and state.recipients[0].lastError)

        yield eventually(deferred)
        state = store.load(envelope.dateDirectory, envelope.queueId)
        assert state is not None
        [recipient] = state.recipients
        self.assertEqual(recipient.status, PENDING)
        self.assertIn("DANE", recipient.lastError)
        self.assertEqual(receiver.connectionsMade, 1)
        self.assertEqual(receiver.messages, [])
