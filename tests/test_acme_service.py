"""
Tests for L{gopherpost.acme.service.ACMEService}: the schedule (first order,
renewal at a third of the lifetime or inside the CA's window, retries with
backoff), the swap, the log lines, metrics, status, renew, readiness and
stopping; with a fake CA, a L{Clock} and a synchronous "thread".
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from gopherpost.acme.client import ACMEError
from gopherpost.acme.interfaces import ICertificateSource
from gopherpost.acme.renewal import RETRY_MAX, RenewalWindow
from gopherpost.acme.source import CertificateSwitch, loadServedCertificate
from tests.support.acmefakes import DAY, makeTestService

NAME = "mx.example.test"


def newClock() -> Clock:
    clock = Clock()
    clock.advance(int(time.time()))
    return clock


def heldThread() -> tuple[list[tuple[Deferred[Any], Any]], Any]:
    """
    A "thread" whose work waits until the test runs it: each call adds
    C{(deferred, work)} to the returned list.
    """
    pending: list[tuple[Deferred[Any], Any]] = []

    def runInThread(f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        pending.append((d, lambda: f(*args)))
        return d

    return pending, runInThread


class _ServiceTestCase(TestCase):
    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.clock = newClock()
        self.directory = self.mktemp()

    def logText(self) -> str:
        return "\n".join(formatEvent(e) for e in self.observer)

    def make(self, **kwargs: Any) -> Any:
        self.service, self.issuer = makeTestService(self.directory, self.clock, **kwargs)
        return self.service

    def start(self, service: Any = None) -> Any:
        service = service or self.service
        service.startService()
        self.addCleanup(service.stopService)
        self.clock.advance(0)
        return service

    def issuedOnce(self, **kwargs: Any) -> Any:
        """
        A started service that has its first certificate.
        """
        service = self.start(self.make(**kwargs))
        self.assertEqual(service.currentCertificate().origin, "acme")
        return service


class FirstCertificateTests(_ServiceTestCase):
    def test_interfaces(self) -> None:
        verifyObject(ICertificateSource, self.make())

    def test_selfSignedUntilIssued(self) -> None:
        """
        Before the first order the fallback serves and a log line says so;
        the start-up check orders at once, and the issued certificate
        serves from then on.
        """
        service = self.make()
        switch = CertificateSwitch(service)
        self.assertEqual(switch.current.origin, "self-signed")
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIn(
            "No ACME certificate for mx.example.test yet: new TLS sessions get the self-signed "
            "certificate until https://ca.example.test/directory issues one",
            self.logText(),
        )
        self.assertEqual(self.issuer.orders, [])
        self.clock.advance(0)
        self.assertEqual(self.issuer.orders, [(NAME,)])
        self.assertEqual(switch.current.origin, "acme")
        self.assertEqual(switch.current.names, (NAME,))
        self.assertEqual(service.metrics.orders, {"issued": 1, "failed": 0})
        text = self.logText()
        self.assertIn("Ordering a certificate for mx.example.test from", text)
        self.assertIn("(first certificate)", text)
        self.assertIn("ACME: registered ACME account", text)
        self.assertIn(
            "ACME certificate issued for mx.example.test by CN=Fake ACME Intermediate", text
        )
        self.assertIn("new TLS sessions use it now", text)

    def test_keptOnDisk(self) -> None:
        """
        The issued chain becomes the store's current certificate, with
        what it was ordered for.
        """
        service = self.issuedOnce()
        served = service.currentCertificate()
        self.assertEqual(served.certPath, service.store.certPath)
        again = loadServedCertificate(service.store.certPath, service.store.keyPath, "acme")
        self.assertEqual(again.serial, served.serial)
        self.assertEqual(
            service.store.certificateMetadata(),
            {"directory": "https://ca.example.test/directory", "domains": [NAME]},
        )

    def test_storedCertificateServesAtOnce(self) -> None:
        """
        A certificate kept from an earlier run serves from the start and no
        order is made until it is due.
        """
        first = self.issuedOnce()
        kept = first.currentCertificate()
        second, issuer = makeTestService(self.directory, self.clock, stored=kept)
        self.assertIs(second.currentCertificate(), kept)
        self.start(second)
        self.assertEqual(issuer.orders, [])
        self.assertIn("Serving the ACME certificate for mx.example.test", self.logText())

    def test_namesChanged(self) -> None:
        """
        A kept certificate for other names serves until the new order is
        issued, which starts at once.
        """
        first = self.issuedOnce()
        kept = first.currentCertificate()
        second, issuer = makeTestService(
            self.directory, self.clock, domains=(NAME, "smtp.example.test"), stored=kept
        )
        self.start(second)
        self.assertEqual(issuer.orders, [(NAME, "smtp.example.test")])
        self.assertEqual(second.currentCertificate().names, (NAME, "smtp.example.test"))
        self.assertIn("the names changed (SMTP_ACME_DOMAINS)", self.logText())

    def test_directoryChanged(self) -> None:
        """
        A certificate from another directory (staging, say) is replaced
        at once.
        """
        first = self.issuedOnce()
        kept = first.currentCertificate()
        second, issuer = makeTestService(self.directory, self.clock, stored=kept)
        issuer.directoryURL = "https://other.example.test/directory"
        self.start(second)
        self.assertEqual(len(issuer.orders), 1)
        self.assertIn("the directory changed (SMTP_ACME_DIRECTORY)", self.logText())

    def test_issuedWithoutAName(self) -> None:
        """
        A certificate that lacks a configured name is not served.
        """
        service = self.make(domains=(NAME, "smtp.example.test"))
        self.issuer.issuedNames = (NAME,)
        self.start(service)
        self.assertEqual(service.currentCertificate().origin, "self-signed")
        self.assertEqual(service.lastError, "the issued certificate lacks smtp.example.test")
        self.assertEqual(service.metrics.orders, {"issued": 0, "failed": 1})


class ScheduleTests(_ServiceTestCase):
    def test_renewalWhenAThirdRemains(self) -> None:
        """
        A 90-day certificate is renewed on day 60, and the renewal swaps.
        """
        service = self.issuedOnce()
        first = service.currentCertificate()
        self.assertEqual(service.status()["nextAttemptReason"], "renewal")
        self.clock.advance(60 * DAY - 1)
        self.assertEqual(len(self.issuer.orders), 1)
        self.assertIs(service.currentCertificate(), first)
        self.clock.advance(1)
        self.assertEqual(len(self.issuer.orders), 2)
        self.assertIsNot(service.currentCertificate(), first)
        self.assertIn("(renewal)", self.logText())

    def test_shortLived(self) -> None:
        """
        A six-day certificate is renewed on day four.
        """
        service = self.issuedOnce(lifetime=6 * DAY)
        self.clock.advance(4 * DAY - 1)
        self.assertEqual(len(self.issuer.orders), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.issuer.orders), 2)
        self.assertEqual(service.failures, 0)

    def test_backoff(self) -> None:
        """
        Failed orders are retried after 5, 10, 20, ... minutes, at most six
        hours apart, each failure logged with its reason; the fallback
        keeps serving and the service keeps running.
        """
        service = self.make()
        self.issuer.outcomes = [ACMEError("the CA refused: serverInternal: oops")] * 9
        self.start(service)
        delays = []
        for attempt in range(1, 10):
            self.assertEqual(len(self.issuer.orders), attempt)
            self.assertEqual(service.currentCertificate().origin, "self-signed")
            self.assertTrue(service.running)
            self.assertEqual(service.status()["nextAttemptReason"], "retry")
            delay = service.nextAttempt - self.clock.seconds()
            delays.append(delay)
            self.clock.advance(delay)
        self.assertEqual(delays, [300, 600, 1200, 2400, 4800, 9600, 19200, RETRY_MAX, RETRY_MAX])
        text = self.logText()
        self.assertIn(
            "ACME order for mx.example.test failed (attempt 1): the CA refused: serverInternal: "
            "oops; next attempt in 5 minutes; new TLS sessions keep the self-signed certificate",
            text,
        )
        self.assertIn("(attempt 9)", text)
        # The tenth attempt succeeds.
        self.assertEqual(service.currentCertificate().origin, "acme")
        self.assertEqual(service.metrics.orders, {"issued": 1, "failed": 9})
        self.assertEqual((service.failures, service.lastError), (0, None))

    def test_unexpectedErrorLoggedAndRetried(self) -> None:
        """
        A bug in the ACME work is logged with its traceback, counted as a
        failed order, and retried like any failure.
        """
        service = self.make()
        self.issuer.outcomes = [RuntimeError("a bug")]
        self.start(service)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(service.lastError, "unexpected error: a bug")
        self.assertEqual(service.status()["nextAttemptReason"], "retry")
        self.clock.advance(300)
        self.assertEqual(service.currentCertificate().origin, "acme")

    def test_expiryWarningRepeats(self) -> None:
        """
        Once fewer than 14 days remain on a certificate that cannot be
        renewed, every failed attempt warns.
        """
        service = self.issuedOnce()
        self.issuer.outcomes = [ACMEError("cannot reach the CA: Connection refused")] * 1000

        def warnings() -> list[str]:
            return [
                formatEvent(e) or ""
                for e in self.observer
                if "cannot be renewed" in (formatEvent(e) or "")
            ]

        self.clock.advance(60 * DAY)  # renewal due, failing from now on
        while self.clock.seconds() < service.currentCertificate().notAfter.timestamp() - 15 * DAY:
            self.clock.advance(service.nextAttempt - self.clock.seconds())
        self.assertGreater(service.failures, 5)
        self.assertEqual(warnings(), [])
        self.clock.advance(DAY + 1)  # fewer than 14 days left
        for _ in range(3):
            self.clock.advance(service.nextAttempt - self.clock.seconds())
        self.assertGreaterEqual(len(warnings()), 3)
        self.assertIn("The TLS certificate for mx.example.test expires in 14 days", warnings()[0])
        self.assertIn("Connection refused", warnings()[-1])

    def test_noWarningBeforeFourteenDays(self) -> None:
        service = self.issuedOnce()
        self.issuer.outcomes = [ACMEError("no")] * 5
        self.clock.advance(60 * DAY)
        self.assertEqual(service.failures, 1)
        self.assertNotIn("cannot be renewed", self.logText())


class RenewalInformationTests(_ServiceTestCase):
    def test_window(self) -> None:
        """
        With the CA's window the renewal comes inside it (the middle, with
        this test's random), and the window is asked for again after its
        Retry-After.
        """
        service = self.make()
        start = self.clock.seconds() + 30 * DAY
        self.issuer.windows = [RenewalWindow(start, start + 2 * DAY, retryAfter=3600)]
        self.start(service)
        status = service.status()
        self.assertEqual(
            status["renewalWindow"]["start"][:10], time.strftime("%Y-%m-%d", time.gmtime(start))
        )
        self.assertEqual(status["nextAttemptReason"], "renewal information check")
        self.assertEqual(service.nextAttempt, self.clock.seconds() + 3600)
        self.clock.advance(3600)
        self.assertEqual(self.issuer.windowRequests, 2)
        self.clock.advance(start + DAY - self.clock.seconds() - 1)
        self.assertEqual(len(self.issuer.orders), 1)
        self.issuer.windows = [None]
        self.clock.advance(1)
        self.assertEqual(len(self.issuer.orders), 2)

    def test_staleWindow(self) -> None:
        """
        A window that is already past for every new certificate (a stale
        answer) renews once, then not again for an hour.
        """
        service = self.make()
        past = self.clock.seconds() - DAY
        self.issuer.windows = [RenewalWindow(past, past + 60, retryAfter=60)]
        self.start(service)
        self.assertEqual(len(self.issuer.orders), 1)
        self.clock.advance(3599)
        self.assertEqual(len(self.issuer.orders), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.issuer.orders), 2)

    def test_windowMovesEarlier(self) -> None:
        """
        A CA that moves the window to now (a revocation coming) gets a
        renewal at once.
        """
        service = self.make()
        later = self.clock.seconds() + 30 * DAY
        self.issuer.windows = [RenewalWindow(later, later + DAY, retryAfter=3600)]
        self.start(service)
        now = self.clock.seconds() + 3600
        self.issuer.windows = [RenewalWindow(now - 60, now, retryAfter=3600)]
        self.clock.advance(3600)
        self.assertEqual(len(self.issuer.orders), 2)
        self.assertIn("The CA suggests renewing the certificate", self.logText())

    def test_windowUnavailable(self) -> None:
        """
        When asking for the window fails, the third-of-lifetime rule holds
        and the CA is asked again six hours later.
        """
        service = self.make()
        self.issuer.windows = [None]
        self.start(service)
        self.assertEqual(service.status()["nextAttemptReason"], "renewal")
        stored = service.currentCertificate()
        other, issuer = makeTestService(self.directory, self.clock, stored=stored)
        issuer.windows = [ACMEError("cannot reach the CA: Connection refused")]
        self.start(other)
        self.assertIn(
            "No renewal information from https://ca.example.test/directory", self.logText()
        )
        self.assertEqual(other.status()["nextAttemptReason"], "renewal information check")
        self.assertEqual(other.nextAttempt, self.clock.seconds() + 6 * 3600)


class CommandTests(_ServiceTestCase):
    def test_status(self) -> None:
        """
        The facts of C{gopherpostctl tls status}, ready for JSON.
        """
        service = self.issuedOnce()
        status = service.status()
        json.dumps(status)
        certificate = status["certificate"]
        self.assertEqual(certificate["origin"], "acme")
        self.assertEqual(certificate["names"], [NAME])
        self.assertEqual(certificate["issuer"], "CN=Fake ACME Intermediate")
        self.assertEqual(status["domains"], [NAME])
        self.assertEqual(status["account"], "https://ca.example.test/acct/1")
        self.assertEqual(status["failures"], 0)
        self.assertFalse(status["ordering"])
        served = service.currentCertificate()
        expected = served.notBefore.timestamp() + 60 * DAY
        self.assertEqual(
            status["nextRenewal"],
            time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(expected)),
        )

    def test_renewNow(self) -> None:
        """
        C{renew} orders at once even when nothing is due, and fires with
        the new status.
        """
        service = self.issuedOnce()
        first = service.currentCertificate().serial
        result = self.successResultOf(service.renew())
        self.assertNotEqual(result["certificate"]["serial"], first)
        self.assertIn("(requested by the operator)", self.logText())
        self.assertEqual(service.status()["nextAttemptReason"], "renewal")

    def test_renewFails(self) -> None:
        """
        A failed C{renew} says why; the schedule of a valid certificate
        stands (no retry).
        """
        service = self.issuedOnce()
        self.issuer.outcomes = [ACMEError("the CA refused: rateLimited: too many certificates")]
        failure = self.failureResultOf(service.renew(), ACMEError)
        self.assertIn("rateLimited", failure.value.reason)
        self.assertEqual(service.status()["nextAttemptReason"], "renewal")
        self.assertIn("the current certificate stays", self.logText())

    def test_renewJoinsAnOrderInProgress(self) -> None:
        """
        C{renew} during an order waits for that order instead of making
        another.
        """
        pending, runInThread = heldThread()
        service = self.make(runInThread=runInThread)
        self.start(service)
        self.assertEqual(len(pending), 1)
        self.assertTrue(service.status()["ordering"])
        waiters = [service.renew(), service.renew()]
        self.assertEqual(len(pending), 1)
        d, work = pending.pop()
        d.callback(work())
        for waiter in waiters:
            self.assertEqual(self.successResultOf(waiter)["certificate"]["origin"], "acme")
        self.assertEqual(len(self.issuer.orders), 1)

    def test_renewWhenStopped(self) -> None:
        self.failureResultOf(self.make().renew(), ACMEError)


class ReadinessTests(_ServiceTestCase):
    def test_selfSignedIsReady(self) -> None:
        service = self.make()
        self.issuer.outcomes = [ACMEError("no")]
        self.start(service)
        self.assertEqual(service.readiness(), (True, ""))

    def test_failedRenewalWhileValidIsReady(self) -> None:
        service = self.issuedOnce(lifetime=30 * DAY)
        self.issuer.outcomes = [ACMEError("no")] * 1000
        self.clock.advance(29 * DAY)
        self.assertGreater(service.failures, 0)
        self.assertEqual(service.readiness(), (True, ""))

    def test_expiredIsNotReady(self) -> None:
        service = self.issuedOnce(lifetime=30 * DAY)
        self.issuer.outcomes = [ACMEError("cannot reach the CA: Connection refused")] * 1000
        self.clock.advance(30 * DAY + 1)
        ready, reason = service.readiness()
        self.assertFalse(ready)
        self.assertIn("the TLS certificate for mx.example.test expired at", reason)
        self.assertIn("Connection refused", reason)


class StopTests(_ServiceTestCase):
    def test_stopLeavesNoTimer(self) -> None:
        service = self.issuedOnce()
        self.assertTrue(self.clock.getDelayedCalls())
        self.successResultOf(service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopDuringAnOrder(self) -> None:
        """
        Stopping interrupts an order in progress (the thread sees the
        cancellation) and waits for it; nothing is scheduled afterwards.
        """
        pending, runInThread = heldThread()
        service = self.make(runInThread=runInThread)
        self.start(service)
        waiter = service.renew()
        stopped = service.stopService()
        self.assertNoResult(stopped)
        d, work = pending.pop()
        maybeDeferred(work).chainDeferred(d)
        assert self.issuer.cancelled is not None
        self.assertTrue(self.issuer.cancelled.is_set())
        self.successResultOf(stopped)
        self.failureResultOf(waiter, ACMEError)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class MetricsTests(_ServiceTestCase):
    def test_exposition(self) -> None:
        """
        C{smtp_acme_orders_total{result}} and
        C{smtp_tls_certificate_expiry_seconds} in the Prometheus text.
        """
        service = self.make()
        self.issuer.outcomes = [ACMEError("no")]
        registry = CollectorRegistry()
        registry.register(service.metrics)
        self.start(service)
        self.clock.advance(300)
        families = {
            f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
        }
        orders = {s.labels["result"]: s.value for s in families["smtp_acme_orders"].samples}
        self.assertEqual(orders, {"issued": 1.0, "failed": 1.0})
        (expiry,) = families["smtp_tls_certificate_expiry_seconds"].samples
        self.assertEqual(expiry.value, service.currentCertificate().notAfter.timestamp())

    def test_withTheServersMetrics(self) -> None:
        """
        The collector joins the server's registry (both views).
        """
        from gopherpost.metrics import Metrics

        metrics = Metrics(clock=self.clock)
        service = self.make()
        metrics.registry.register(service.metrics)
        text = generate_latest(metrics.registry).decode()
        self.assertIn('smtp_acme_orders_total{result="issued"} 0.0', text)
        self.assertIn("smtp_tls_certificate_expiry_seconds", text)
