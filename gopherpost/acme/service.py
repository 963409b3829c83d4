# -*- test-case-name: tests.test_acme_service -*-
"""
The ACME service: obtains the server's certificate, renews it, and swaps it
into new TLS sessions without a restart.

It is the L{ICertificateSource} of the inbound TLS
(L{gopherpost.acme.source.CertificateSwitch}): until the first certificate
is issued the self-signed one serves; each issued certificate replaces it
for new sessions at once, while sessions in progress keep theirs.

Timing (L{gopherpost.acme.renewal}): an order at start-up when there is no
usable certificate for the configured names and directory; a renewal when a
third of the lifetime remains, or inside the CA's renewal window (ARI) when
it offers one; after a failure, retries from five minutes doubling to six
hours, each logged, with a warning at each one once fewer than 14 days
remain.  Time comes from the injected clock; the ACME conversation runs in
one thread of the service's own (L{gopherpost.acme.client}).

L{ACMEService.status} and L{ACMEService.renew} are what C{gopherpostctl tls
status} and C{gopherpostctl tls renew} call.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from gopherpost.acme.client import (
    EXPECTED_ERRORS,
    ACMECancelled,
    ACMEError,
    Issued,
    describeError,
)
from gopherpost.acme.interfaces import ICertificateSource
from gopherpost.acme.metrics import ACMEMetrics
from gopherpost.acme.renewal import (
    ARI_DEFAULT_RETRY,
    EXPIRY_WARNING,
    RenewalWindow,
    renewalTime,
    retryDelay,
)
from gopherpost.acme.source import MakeServerTLS, ServedCertificate, loadServedCertificate
from gopherpost.acme.store import ACMEStore
from gopherpost.config import ConfigError
from gopherpost.control.registry import FAILED, ControlError, IControlCommands

__all__ = ["ACMEService", "IssuingClient", "OrderOutcome"]

_log = Logger(namespace="gopherpost.acme")

#: However early the CA's window, a certificate is kept this long (or a
#: third of its lifetime if that is shorter) after it was issued.
MIN_RENEWAL_AGE = 3600.0


class IssuingClient(Protocol):
    """
    What the service needs from L{gopherpost.acme.client.ACMEClient}
    (blocking; called in the service's thread).
    """

    directoryURL: str

    def issue(self, domains: Sequence[str], cancelled: threading.Event | None = None) -> Issued:
        """
        Order a certificate; see L{gopherpost.acme.client.ACMEClient.issue}.
        """

    def renewalWindow(self, certificate: Any) -> RenewalWindow | None:
        """
        The CA's renewal window, or L{None} if it offers none.
        """


@dataclasses.dataclass(frozen=True)
class OrderOutcome:
    """
    What an order brought: the certificate, ready to serve, how it was
    issued, and the CA's renewal window for it (if any).
    """

    served: ServedCertificate
    issued: Issued
    window: RenewalWindow | None
    windowProblem: str | None = None


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


def _inDays(seconds: float) -> str:
    days = seconds / 86400.0
    if days >= 2:
        return f"{days:.0f} days"
    hours = seconds / 3600.0
    if hours >= 2:
        return f"{hours:.0f} hours"
    return f"{max(seconds, 0) / 60.0:.0f} minutes"


@implementer(ICertificateSource, IControlCommands)
class ACMEService(MultiService):
    """
    Keeps an ACME certificate for C{domains} current.

    @param domains: C{SMTP_ACME_DOMAINS}, the first being the subject.
    @param client: does the ACME work (blocking, in the thread).
    @param store: the ACME files.
    @param fallback: what to serve until a certificate is issued (the
        self-signed one).
    @param stored: the certificate kept from an earlier run, if it loads.
    @param clock: schedules renewals and retries, and tells the time.
    @param runInThread: C{runInThread(f, *args) -> Deferred}; runs the ACME
        work off the reactor.
    @param threadPool: the pool C{runInThread} uses, started and stopped
        with the service (L{None} if the caller manages it).
    @param makeServerTLS: builds the TLS for a certificate and key file.
    @param random: a float in [0, 1), for a moment inside an ARI window.

    @ivar metrics: the service's L{ACMEMetrics} collector.
    @ivar contextFactory: the L{gopherpost.acme.source.CertificateSwitch}
        serving this source (set by L{gopherpost.acme.makeACMEService}).
    @ivar challengeListener: the HTTP-01 listener service, if any.
    @ivar failures: failed orders in a row.
    @ivar lastError: why the last order failed, or L{None}.
    """

    def __init__(
        self,
        domains: Sequence[str],
        client: IssuingClient,
        store: ACMEStore,
        fallback: ServedCertificate,
        clock: IReactorTime,
        runInThread: Callable[..., Deferred[Any]],
        stored: ServedCertificate | None = None,
        threadPool: ThreadPool | None = None,
        makeServerTLS: MakeServerTLS | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        MultiService.__init__(self)
        self.domains = tuple(domains)
        self.client = client
        self.store = store
        self.fallback = fallback
        self.clock = clock
        self._runInThread = runInThread
        self._threadPool = threadPool
        self._makeServerTLS = makeServerTLS
        self._random = random
        self._current = stored if stored is not None else fallback
        self.metrics = ACMEMetrics(self)
        self.contextFactory: Any = None
        self.challengeListener: Any = None
        self.failures = 0
        self.lastError: str | None = None
        self.lastAttempt: float | None = None
        self.lastIssued: float | None = None
        self.accountURI: str | None = None
        self.nextAttempt: float | None = None
        self.nextAttemptReason: str | None = None
        self._window: RenewalWindow | None = None
        self._renewAt: float | None = None
        self._ariOffered: bool | None = None
        self._nextWindowCheck: float = 0.0
        self._timer: IDelayedCall | None = None
        self._order: Deferred[None] | None = None
        self._windowFetch: Deferred[None] | None = None
        self._waiters: list[Deferred[dict[str, Any]]] = []
        self._cancelled = threading.Event()
        self._stopping = False
        if stored is not None:
            self._renewAt = self._thirdRule(stored)

    # ICertificateSource

    def currentCertificate(self) -> ServedCertificate:
        """
        The certificate new TLS sessions get.
        """
        return self._current

    # Facts and commands (gopherpostctl tls status | renew)

    def status(self) -> dict[str, Any]:
        """
        The facts C{gopherpostctl tls status} shows, as JSON-ready values:
        C{certificate} (origin, names, issuer, serial, validity,
        fingerprint), C{domains}, C{directory}, C{account},
        C{nextRenewal}, C{renewalWindow}, C{ordering}, C{lastAttempt},
        C{lastIssued}, C{lastError}, C{failures}.
        """
        window = self._window
        return {
            "certificate": self._current.facts(),
            "domains": list(self.domains),
            "directory": self.client.directoryURL,
            "account": self.accountURI,
            "nextRenewal": _iso(self._renewAt) if self._current.origin == "acme" else None,
            "renewalWindow": (
                None if window is None else {"start": _iso(window.start), "end": _iso(window.end)}
            ),
            "nextAttempt": _iso(self.nextAttempt),
            "nextAttemptReason": self.nextAttemptReason,
            "ordering": self._order is not None,
            "lastAttempt": _iso(self.lastAttempt),
            "lastIssued": _iso(self.lastIssued),
            "lastError": self.lastError,
            "failures": self.failures,
        }

    def renew(self) -> Deferred[dict[str, Any]]:
        """
        Order a certificate now, whether or not one is due (C{gopherpostctl
        tls renew}); joins an order already in progress.

        @return: fires with L{status} once the new certificate serves, or
            fails with L{ACMEError} saying why the order failed.
        """
        if not self.running or self._stopping:
            return fail(ACMEError("the ACME service is not running"))
        waiter: Deferred[dict[str, Any]] = Deferred()
        self._waiters.append(waiter)
        if self._order is None:
            self._startOrder("requested by the operator")
        return waiter

    def controlCommands(self) -> dict[str, Callable[..., Any]]:
        """
        C{tls.status} and C{tls.renew} for C{gopherpostctl tls}.
        """
        return {"tls.status": self._statusCommand, "tls.renew": self._renewCommand}

    def _statusCommand(self) -> dict[str, Any]:
        """
        The certificate served, its issuer, names, expiry and next renewal.
        """
        return self.status()

    def _renewCommand(self) -> Deferred[dict[str, Any]]:
        """
        Order a new certificate now; answers once it serves.
        """

        def failed(failure: Failure) -> dict[str, Any]:
            failure.trap(ACMEError)
            raise ControlError(FAILED, str(failure.value))

        return self.renew().addErrback(failed)

    def readiness(self) -> tuple[bool, str]:
        """
        For C{/readyz}: not ready only once the ACME certificate being
        served has expired; a failed renewal alone does not matter while
        the certificate is valid, and the self-signed certificate serves
        until the first is issued.
        """
        current = self._current
        if current.origin == "acme" and current.expired(self.clock.seconds()):
            return (
                False,
                f"the TLS certificate for {current.names[0]} expired at "
                f"{current.notAfter.isoformat()}: {self.lastError or 'not renewed'}",
            )
        return (True, "")

    # Service

    def startService(self) -> None:
        """
        Start the thread and the challenge listener, and check at once
        whether an order is needed.
        """
        self._cancelled.clear()
        self._stopping = False
        if self._threadPool is not None:
            self._threadPool.start()
        MultiService.startService(self)
        current = self._current
        if current.origin == "acme":
            _log.info(
                "Serving the ACME certificate for {names} (issuer {issuer}, expires {expires}); "
                "renewal from {renewal}",
                names=", ".join(current.names),
                issuer=current.issuer,
                expires=current.notAfter.isoformat(),
                renewal=_iso(self._renewAt),
            )
        else:
            _log.info(
                "No ACME certificate for {names} yet: new TLS sessions get the {origin} "
                "certificate until {directory} issues one",
                names=", ".join(self.domains),
                origin=current.origin,
                directory=self.client.directoryURL,
            )
        self._schedule(0.0, "start-up check")

    def stopService(self) -> Deferred[None]:
        """
        Cancel the timer, interrupt an order in progress (between requests:
        a validation being polled stops within a second; a finalization
        runs to its end, at most 45 s), wait for the thread, stop.
        """
        if self._stopping or not self.running:
            return succeed(None)
        self._stopping = True
        self._cancelTimer()
        self._cancelled.set()
        busy = [d for d in (self._order, self._windowFetch) if d is not None]
        waiting: Deferred[Any] = _whenAll(busy)

        def stopped(_: object) -> Deferred[None] | None:
            if self._threadPool is not None:
                self._threadPool.stop()
            result: Deferred[None] | None = MultiService.stopService(self)
            return result

        waiting.addCallback(stopped)
        return waiting

    # Scheduling

    def _thirdRule(self, served: ServedCertificate) -> float:
        return renewalTime(served.notBefore.timestamp(), served.notAfter.timestamp())

    def _whyOrderNow(self, now: float) -> str | None:
        current = self._current
        if current.origin != "acme":
            return "first certificate"
        if set(current.names) != set(self.domains):
            return "the names changed (SMTP_ACME_DOMAINS)"
        directory = self.store.certificateMetadata().get("directory")
        if directory is not None and directory != self.client.directoryURL:
            return "the directory changed (SMTP_ACME_DIRECTORY)"
        if self._renewAt is not None and now >= self._renewAt:
            return "renewal"
        return None

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.nextAttempt = None
        self.nextAttemptReason = None

    def _schedule(self, delay: float, reason: str) -> None:
        self._cancelTimer()
        if not self.running or self._stopping:
            return
        self.nextAttempt = self.clock.seconds() + max(delay, 0.0)
        self.nextAttemptReason = reason
        self._timer = self.clock.callLater(max(delay, 0.0), self._check)

    def _scheduleRenewal(self) -> None:
        now = self.clock.seconds()
        why = self._whyOrderNow(now)
        if why is not None:
            self._schedule(0.0, why)
            return
        assert self._renewAt is not None
        at, reason = self._renewAt, "renewal"
        if self._ariOffered is not False and self._nextWindowCheck < at:
            at, reason = self._nextWindowCheck, "renewal information check"
        self._schedule(at - now, reason)

    def _check(self) -> None:
        self._timer = None
        self.nextAttempt = None
        self.nextAttemptReason = None
        if self._order is not None or self._windowFetch is not None:
            return
        now = self.clock.seconds()
        why = self._whyOrderNow(now)
        if why is not None:
            self._startOrder(why)
        elif self._ariOffered is not False and now >= self._nextWindowCheck:
            self._fetchWindow()
        else:
            self._scheduleRenewal()

    # Renewal information

    def _fetchWindow(self) -> None:
        leaf = self._current.leaf
        d = self._runInThread(self.client.renewalWindow, leaf)
        self._windowFetch = d
        d.addCallbacks(self._gotWindow, self._noWindow).addErrback(self._bug)

    def _setWindow(self, window: RenewalWindow | None) -> None:
        now = self.clock.seconds()
        self._ariOffered = window is not None
        self._window = window
        current = self._current
        notBefore, notAfter = current.notBefore.timestamp(), current.notAfter.timestamp()
        renewAt = renewalTime(notBefore, notAfter, window, self._random)
        if window is not None:
            # A window already past for a certificate just issued (a stale
            # answer) must not make an order after every order.
            issued = self.lastIssued if self.lastIssued is not None else notBefore
            renewAt = max(renewAt, issued + min(MIN_RENEWAL_AGE, (notAfter - notBefore) / 3))
        self._renewAt = renewAt
        self._nextWindowCheck = now + (window.retryAfter if window else ARI_DEFAULT_RETRY)

    def _gotWindow(self, window: RenewalWindow | None) -> None:
        self._windowFetch = None
        if window is not None and (self._window is None or window != self._window):
            _log.info(
                "The CA suggests renewing the certificate for {names} between {start} and "
                "{end}: renewal at {renewal}",
                names=", ".join(self._current.names),
                start=_iso(window.start),
                end=_iso(window.end),
                renewal=_iso(renewalTime(0, 0, window, self._random)),
            )
        if window is None or window != self._window:
            self._setWindow(window)
        else:
            self._nextWindowCheck = self.clock.seconds() + window.retryAfter
        if self.running:
            self._scheduleRenewal()

    def _noWindow(self, failure: Failure) -> None:
        self._windowFetch = None
        if not failure.check(*EXPECTED_ERRORS):
            _log.failure("Fetching ACME renewal information failed", failure)
        else:
            _log.info(
                "No renewal information from {directory} ({reason}): renewing when a third "
                "of the lifetime remains; asking again in six hours",
                directory=self.client.directoryURL,
                reason=describeError(cast(BaseException, failure.value), self.client.directoryURL),
            )
        self._nextWindowCheck = self.clock.seconds() + ARI_DEFAULT_RETRY
        if self.running:
            self._scheduleRenewal()

    # Orders

    def _startOrder(self, reason: str) -> None:
        self._cancelTimer()
        self.lastAttempt = self.clock.seconds()
        _log.info(
            "Ordering a certificate for {names} from {directory} ({reason})",
            names=", ".join(self.domains),
            directory=self.client.directoryURL,
            reason=reason,
        )
        d = self._runInThread(self._orderInThread)
        self._order = d
        d.addCallbacks(self._issued, self._failed).addErrback(self._bug)

    def _bug(self, failure: Failure) -> None:
        _log.failure("The ACME service failed", failure)

    def _orderInThread(self) -> OrderOutcome:
        """
        Order, check and keep a certificate (in the thread).
        """
        issued = self.client.issue(self.domains, self._cancelled)
        staged = self.store.stageCertificate(issued.chainPEM)
        try:
            served = loadServedCertificate(
                staged, self.store.keyPath, "acme", self._makeServerTLS, "SMTP_ACME_DOMAINS"
            )
        except ConfigError as e:
            self.store.discardStaged()
            raise ACMEError(f"the issued certificate cannot be served: {e.problem}") from None
        missing = set(self.domains) - set(served.names)
        if missing:
            self.store.discardStaged()
            raise ACMEError(f"the issued certificate lacks {', '.join(sorted(missing))}")
        self.store.commitCertificate(self.client.directoryURL, self.domains)
        served = dataclasses.replace(served, certPath=self.store.certPath)
        window: RenewalWindow | None = None
        problem: str | None = None
        try:
            window = self.client.renewalWindow(served.leaf)
        except EXPECTED_ERRORS as e:
            problem = describeError(e, self.client.directoryURL)
        return OrderOutcome(served, issued, window, problem)

    def _issued(self, outcome: OrderOutcome) -> None:
        self._order = None
        now = self.clock.seconds()
        served = outcome.served
        self._current = served
        self.metrics.orderFinished("issued")
        self.failures = 0
        self.lastError = None
        self.lastIssued = now
        self.accountURI = outcome.issued.accountURI
        for note in outcome.issued.notes:
            _log.info("ACME: {note}", note=note)
        self._setWindow(outcome.window)
        _log.info(
            "ACME certificate issued for {names} by {issuer} (serial {serial}, expires {expires}); "
            "new TLS sessions use it now; renewal from {renewal}",
            names=", ".join(served.names),
            issuer=served.issuer,
            serial=served.serial,
            expires=served.notAfter.isoformat(),
            renewal=_iso(self._renewAt),
        )
        if self.running:
            self._scheduleRenewal()
        waiters, self._waiters = self._waiters, []
        status = self.status()
        for waiter in waiters:
            waiter.callback(status)

    def _failed(self, failure: Failure) -> None:
        self._order = None
        waiters, self._waiters = self._waiters, []
        if failure.check(ACMECancelled) or not self.running or self._stopping:
            for waiter in waiters:
                waiter.errback(Failure(ACMECancelled()))
            return
        if failure.check(*EXPECTED_ERRORS):
            reason = describeError(cast(BaseException, failure.value), self.client.directoryURL)
        else:
            _log.failure("ACME order failed unexpectedly", failure)
            reason = f"unexpected error: {failure.getErrorMessage()}"
        self.metrics.orderFinished("failed")
        self.failures += 1
        self.lastError = reason
        now = self.clock.seconds()
        if self._whyOrderNow(now) is None:
            # Not due (an operator's renewal): the schedule stands.
            _log.warn(
                "ACME order for {names} failed: {reason}; the current certificate stays "
                "(expires {expires})",
                names=", ".join(self.domains),
                reason=reason,
                expires=self._current.notAfter.isoformat(),
            )
            self._scheduleRenewal()
        else:
            delay = retryDelay(self.failures)
            _log.warn(
                "ACME order for {names} failed (attempt {attempt}): {reason}; next attempt in "
                "{delay}; new TLS sessions keep the {origin} certificate",
                names=", ".join(self.domains),
                attempt=self.failures,
                reason=reason,
                delay=_inDays(delay),
                origin=self._current.origin,
            )
            self._schedule(delay, "retry")
        self._warnIfExpiring(now)
        for waiter in waiters:
            waiter.errback(Failure(ACMEError(reason)))

    def _warnIfExpiring(self, now: float) -> None:
        current = self._current
        if current.origin != "acme":
            return
        left = current.notAfter.timestamp() - now
        if left < EXPIRY_WARNING:
            _log.warn(
                "The TLS certificate for {names} expires in {left} ({expires}) and cannot be "
                "renewed: {reason}",
                names=", ".join(current.names),
                left=_inDays(left) if left > 0 else "no time: it has expired",
                expires=current.notAfter.isoformat(),
                reason=self.lastError,
            )


def _whenAll(deferreds: list[Deferred[Any]]) -> Deferred[Any]:
    if not deferreds:
        return succeed(None)
    return DeferredList(deferreds, consumeErrors=True)
