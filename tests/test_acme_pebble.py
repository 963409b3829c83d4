"""
ACME against a real CA: Pebble (Debian's C{pebble}) on loopback, with its
own test CA and C{PEBBLE_VA_ALWAYS_VALID=0}, validating HTTP-01 against
GopherPost's challenge listener and resolving the names through a DNS
server the test starts.

  - the whole server (L{gopherpost.tap.makeService}): the first certificate
    is issued and served to a new STARTTLS client that verifies it against
    Pebble's root; a renewal swaps it for new sessions while a session in
    progress keeps its old one and still delivers a message;
  - the ACME service with an injected clock and a short-lived certificate:
    renewed when a third of its lifetime remains, swapped without restart;
  - a CA that refuses (every nonce rejected) and a validation that fails:
    a failed order, a log line, a retry with backoff, never a crash; the
    retry succeeds once the CA behaves;
  - a restart reuses the kept account and certificate.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from gopherpost.acme import makeACMEService
from gopherpost.acme.client import ACMEError
from gopherpost.config import settingsFromEnvironment
from tests.support.dnsserver import startDNSServer
from tests.support.operations import runCtlInThread, shortDirectory
from tests.support.pebble import startPebble
from tests.support.server import freePort, serverEnvironment, startInProcess
from tests.support.tlsprobe import STARTTLSClient, listenMinimalSTARTTLS

NAME = "mx.gopherpost.test"


def acmeEnvironment(pebble: Any, challengePort: int, **overrides: str) -> dict[str, str]:
    environ = {
        "SMTP_TLS_DISABLE": "false",
        "SMTP_ACME_DOMAINS": NAME,
        "SMTP_ACME_EMAIL": "postmaster@gopherpost.test",
        "SMTP_ACME_AGREE_TOS": "true",
        "SMTP_ACME_DIRECTORY": pebble.directoryURL,
        "SMTP_ACME_DIRECTORY_CA": pebble.caFile,
        "SMTP_ACME_CHALLENGE_LISTEN": f"tcp:{challengePort}:interface=127.0.0.1",
    }
    environ.update(overrides)
    return environ


def realTimeClock() -> Clock:
    """
    A clock that starts at the real time (the CA's certificates are valid
    from now) and then moves only when the test says.
    """
    clock = Clock()
    clock.advance(time.time())
    return clock


def messages(observer: EventLoggingObserver) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(event) for event in observer]


def probe(port: int, rootPEM: bytes | None) -> Any:
    return deferToThread(STARTTLSClient, port, NAME, rootPEM)


class _PebbleTestCase(TestCase):
    timeout = 180

    @inlineCallbacks
    def startCA(self, **pebbleOptions: Any) -> Any:
        self.dns = startDNSServer(self)
        self.dns.addA(NAME, "127.0.0.1")
        self.challengePort = freePort()
        self.pebble = yield startPebble(
            self, self.mktemp(), self.dns.address, self.challengePort, **pebbleOptions
        )
        return self.pebble

    def clockedService(self, stateDirectory: str, clock: Clock, **overrides: str) -> Any:
        """
        The ACME service alone, with an injected clock, not started.
        """
        environ = acmeEnvironment(self.pebble, self.challengePort, SMTP_HOSTNAME=NAME, **overrides)
        settings = settingsFromEnvironment(environ)
        return makeACMEService(settings, stateDirectory, reactor, clock=clock, random=lambda: 0.5)

    @inlineCallbacks
    def startClocked(self, service: Any, clock: Clock) -> Any:
        service.startService()
        self.addCleanup(service.stopService)
        clock.advance(0)  # the start-up check
        yield deferLater(reactor, 0, lambda: None)


class WholeServerTests(_PebbleTestCase):
    """
    The real server, wired by L{gopherpost.tap.makeService}.
    """

    @inlineCallbacks
    def test_firstCertificateThenRenewalWhileASessionGoesOn(self) -> Any:
        """
        At start-up the self-signed certificate serves while the first
        order runs; then a new STARTTLS client gets Pebble's certificate
        and verifies it against Pebble's root.  A renewal swaps in a new
        certificate for new sessions; a session opened before keeps its
        certificate and still delivers a message.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pebble = yield self.startCA()
        smtpPort = freePort()
        # A short spool path: the control socket's must fit a UNIX address.
        environ = serverEnvironment(
            os.path.join(shortDirectory(self), "spool"),
            smtpPort,
            **acmeEnvironment(pebble, self.challengePort),
        )
        service = startInProcess(self, environ)
        acme = service.acme
        self.assertEqual(acme.currentCertificate().origin, "self-signed")
        self.assertIn(
            "No ACME certificate for mx.gopherpost.test yet: new TLS sessions get the "
            "self-signed certificate",
            " ".join(messages(observer)),
        )
        yield deferLater(reactor, 0, lambda: None)
        self.assertTrue(acme.status()["ordering"], "no order at start-up")
        first = yield acme.renew()  # joins the start-up order
        self.assertEqual(first["certificate"]["origin"], "acme")
        self.assertEqual(first["certificate"]["names"], [NAME])
        self.assertIn("Pebble Intermediate CA", first["certificate"]["issuer"])
        root = yield pebble.rootPEM()

        session = yield probe(smtpPort, root)
        self.addCleanup(deferToThread, session.close)
        self.assertEqual(
            format(session.certificate.serial_number, "x"), first["certificate"]["serial"]
        )
        self.assertIn("ESMTP", session.banner[1])

        # gopherpostctl tls status / renew, through the control socket.
        spoolPath = service.spool.path
        status, out, err = yield runCtlInThread(["-q", spoolPath, "tls", "status", "--json"])
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(json.loads(out)["certificate"]["serial"], first["certificate"]["serial"])
        status, out, err = yield runCtlInThread(["-q", spoolPath, "tls", "status"])
        self.assertEqual(status, 0, err)
        self.assertIn(f"Certificate: {NAME} (acme)", out)
        self.assertIn("Pebble Intermediate CA", out)
        status, out, err = yield runCtlInThread(["-q", spoolPath, "tls", "renew", "--json"])
        self.assertEqual((status, err), (0, ""))
        second = json.loads(out)
        self.assertNotEqual(second["certificate"]["serial"], first["certificate"]["serial"])
        newSession = yield probe(smtpPort, root)
        self.addCleanup(deferToThread, newSession.close)
        self.assertEqual(
            format(newSession.certificate.serial_number, "x"), second["certificate"]["serial"]
        )

        # The session from before the swap goes on with its certificate.
        def deliver() -> list[tuple[int, str]]:
            return [
                session.command("MAIL FROM:<sender@gopherpost.test>"),
                session.command("RCPT TO:<postmaster@gopherpost.test>"),
                session.command("DATA"),
                session.command("Subject: over the old TLS session\r\n\r\nhello\r\n."),
            ]

        replies = yield deferToThread(deliver)
        self.assertEqual([code for code, _ in replies], [250, 250, 354, 250], replies)
        self.assertEqual(
            format(session.certificate.serial_number, "x"), first["certificate"]["serial"]
        )
        self.assertEqual(acme.metrics.orders, {"issued": 2, "failed": 0})
        text = " ".join(messages(observer))
        self.assertIn("registered ACME account", text)
        self.assertIn("ACME certificate issued for mx.gopherpost.test", text)


class RenewalTests(_PebbleTestCase):
    """
    The ACME service with an injected clock.
    """

    @inlineCallbacks
    def test_shortLivedCertificateRenewedAndSwapped(self) -> Any:
        """
        A one-hour certificate is renewed when a third of its lifetime
        remains (after 40 minutes on the clock), and new sessions get the
        new one while a session opened before keeps the old one.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        yield self.startCA(validity=3600)
        clock = realTimeClock()
        service = self.clockedService(self.mktemp(), clock)
        port = listenMinimalSTARTTLS(self, service.contextFactory)
        yield self.startClocked(service, clock)
        first = yield service.renew()
        root = yield self.pebble.rootPEM()
        served = service.currentCertificate()
        self.assertEqual(
            round((served.notAfter - served.notBefore).total_seconds() / 60), 60, served.facts()
        )
        renewAt = served.notBefore.timestamp() + 2 * 3600 / 3
        old = yield probe(port, root)
        self.addCleanup(deferToThread, old.close)

        clock.advance(renewAt - clock.seconds() - 60)
        self.assertFalse(service.status()["ordering"], "renewed too early")
        clock.advance(61)
        self.assertTrue(service.status()["ordering"], "not renewed when a third remains")
        second = yield service.renew()  # joins the renewal
        self.assertNotEqual(second["certificate"]["serial"], first["certificate"]["serial"])
        new = yield probe(port, root)
        self.addCleanup(deferToThread, new.close)
        self.assertEqual(
            format(new.certificate.serial_number, "x"), second["certificate"]["serial"]
        )
        self.assertEqual(format(old.certificate.serial_number, "x"), first["certificate"]["serial"])
        code, _ = yield deferToThread(old.command, "NOOP")
        self.assertEqual(code, 250)
        self.assertIn("(renewal)", " ".join(messages(observer)))


class RefusingCATests(_PebbleTestCase):
    """
    A CA that refuses, a validation that fails: logged, retried, no crash.
    """

    @inlineCallbacks
    def test_everyNonceRejected(self) -> Any:
        """
        With Pebble rejecting every nonce the order fails with a log line
        naming the reason, the self-signed certificate keeps serving, and
        the next attempt comes after the backoff; it succeeds once the CA
        (restarted on the same port) behaves.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pebble = yield self.startCA(environment={"PEBBLE_WFE_NONCEREJECT": "100"})
        clock = realTimeClock()
        service = self.clockedService(self.mktemp(), clock)
        yield self.startClocked(service, clock)
        failure = yield self.assertFailure(service.renew(), ACMEError)
        self.assertIn("badNonce", failure.reason)
        self.assertEqual(service.metrics.orders, {"issued": 0, "failed": 1})
        self.assertEqual(service.currentCertificate().origin, "self-signed")
        self.assertTrue(service.running)
        status = service.status()
        self.assertEqual((status["failures"], status["nextAttemptReason"]), (1, "retry"))
        self.assertIn("badNonce", status["lastError"])
        text = " ".join(messages(observer))
        self.assertIn("ACME order for mx.gopherpost.test failed (attempt 1)", text)
        self.assertIn("next attempt in 5 minutes", text)

        yield pebble.stop()
        self.pebble = yield startPebble(
            self, self.mktemp(), self.dns.address, self.challengePort, reuse=pebble
        )
        clock.advance(299)
        self.assertFalse(service.status()["ordering"])
        clock.advance(1)
        self.assertTrue(service.status()["ordering"], "no retry after the backoff")
        issued = yield service.renew()
        self.assertEqual(issued["certificate"]["origin"], "acme")
        self.assertEqual(service.metrics.orders, {"issued": 1, "failed": 1})
        self.assertEqual(service.status()["failures"], 0)

    @inlineCallbacks
    def test_validationFails(self) -> Any:
        """
        When the CA cannot reach the challenge listener (the name points
        elsewhere) the order fails with the CA's reason, and is retried.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        yield self.startCA()
        self.dns.removeName(NAME)
        self.dns.addA(NAME, "127.0.0.2")
        clock = realTimeClock()
        service = self.clockedService(self.mktemp(), clock)
        yield self.startClocked(service, clock)
        failure = yield self.assertFailure(service.renew(), ACMEError)
        self.assertIn("validation failed for mx.gopherpost.test", failure.reason)
        self.assertEqual(service.status()["nextAttemptReason"], "retry")
        self.assertIn("validation failed for mx.gopherpost.test", " ".join(messages(observer)))


class RestartTests(_PebbleTestCase):
    @inlineCallbacks
    def test_accountAndCertificateKept(self) -> Any:
        """
        A new service on the same state directory serves the kept
        certificate at once, orders nothing until it is due, and orders
        with the kept account.
        """
        yield self.startCA()
        state = self.mktemp()
        clock = realTimeClock()
        first = self.clockedService(state, clock)
        yield self.startClocked(first, clock)
        issued = yield first.renew()
        yield first.stopService()

        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        second = self.clockedService(state, clock)
        self.assertEqual(second.currentCertificate().origin, "acme")
        self.assertEqual(second.currentCertificate().serial, issued["certificate"]["serial"])
        yield self.startClocked(second, clock)
        self.assertFalse(second.status()["ordering"])
        self.assertEqual(second.metrics.orders, {"issued": 0, "failed": 0})
        again = yield second.renew()
        self.assertEqual(again["account"], issued["account"])
        self.assertNotIn("registered ACME account", " ".join(messages(observer)))
        for name in ("key.pem", "cert.pem", "cert.json"):
            mode = os.stat(os.path.join(state, "acme", name)).st_mode & 0o777
            self.assertEqual(mode, 0o600, name)
        self.assertEqual(os.stat(os.path.join(state, "acme")).st_mode & 0o777, 0o700)

    @inlineCallbacks
    def test_accountForgottenByTheCA(self) -> Any:
        """
        A CA that no longer knows the kept account (Pebble restarted with
        fresh state) gets a new registration with the same key, and the
        order goes through.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pebble = yield self.startCA()
        clock = realTimeClock()
        service = self.clockedService(self.mktemp(), clock)
        yield self.startClocked(service, clock)
        first = yield service.renew()
        yield pebble.stop()
        self.pebble = yield startPebble(
            self, self.mktemp(), self.dns.address, self.challengePort, reuse=pebble
        )
        again = yield service.renew()
        self.assertNotEqual(again["account"], first["account"])
        self.assertEqual(again["certificate"]["origin"], "acme")
        self.assertIn("the CA no longer knows the account", " ".join(messages(observer)))
