# -*- test-case-name: tests.test_tlspolicy_service -*-
"""
Outbound transport security as configured, in one service:
L{makeTransportSecurity} builds the L{TransportSecurity} the relay's
courier consults (C{SMTP_DANE}, C{SMTP_MTA_STS}, C{SMTP_MTA_STS_PORT},
C{SMTP_OUTBOUND_TLS}), the TLS report store, and with C{SMTP_TLSRPT=true}
the daily reporter.  State lives in the spool's state directory:
C{.gopherpost/mta-sts/} (cached policies) and C{.gopherpost/tlsrpt/}
(report statistics).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gopherpost.config import ConfigError, Settings
from gopherpost.tls import platformTrustRoot
from gopherpost.tlspolicy.connection import ClientTLSContexts
from gopherpost.tlspolicy.dane import DANEResolver
from gopherpost.tlspolicy.https import HTTPSClient
from gopherpost.tlspolicy.mtasts import STSResolver
from gopherpost.tlspolicy.policy import TransportSecurity
from gopherpost.tlspolicy.reporter import TLSReporter
from gopherpost.tlspolicy.reportstore import TLSReportStore
from gopherpost.tlspolicy.stscache import STSPolicyCache

__all__ = ["FLUSH_INTERVAL", "HTTPS_TIMEOUT", "TLSPolicyService", "makeTransportSecurity"]

_log = Logger()

#: Seconds between two writes of the TLS report statistics.
FLUSH_INTERVAL = 60.0
#: Seconds an MTA-STS policy fetch or a report POST may take.
HTTPS_TIMEOUT = 20.0


class TLSPolicyService(MultiService):
    """
    Runs the parts of outbound transport security that run: the
    statistics' periodic writes and the reporter.

    @ivar security: the L{TransportSecurity} for the courier.
    @ivar reports: the L{TLSReportStore}.
    @ivar reporter: the L{TLSReporter}, or L{None} (C{SMTP_TLSRPT=false}).
    @ivar metrics: the collector, for the metrics registry.
    """

    name = "tlspolicy"

    def __init__(
        self,
        security: TransportSecurity,
        reports: TLSReportStore,
        reporter: TLSReporter | None,
        clock: Any,
    ) -> None:
        MultiService.__init__(self)
        self.security = security
        self.reports = reports
        self.reporter = reporter
        self.metrics = security.metrics
        self._clock = clock
        self._flushing: LoopingCall | None = None
        if reporter is not None:
            reporter.setServiceParent(self)

    def startService(self) -> None:
        MultiService.startService(self)
        loop = LoopingCall(self.reports.flush)
        loop.clock = self._clock
        self._flushing = loop
        loop.start(FLUSH_INTERVAL, now=False).addErrback(
            lambda f: _log.failure("Writing TLS report data stopped", f)
        )

    def stopService(self) -> Deferred[None]:
        if self._flushing is not None and self._flushing.running:
            self._flushing.stop()
        self._flushing = None
        d: Deferred[Any] = MultiService.stopService(self)
        return d.addCallback(lambda _: self.reports.flush())


def makeTransportSecurity(
    settings: Settings,
    spool: Any,
    resolver: Any,
    reactor: Any,
    trustRoot: Any = None,
) -> TLSPolicyService:
    """
    Outbound transport security as configured (blocking: reads the state
    directory; call it at start-up).

    @param settings: C{SMTP_OUTBOUND_TLS}, C{SMTP_DANE}, C{SMTP_MTA_STS},
        C{SMTP_MTA_STS_PORT}, C{SMTP_TLSRPT}, C{SMTP_RELAY_HOST},
        C{SMTP_HOSTNAME}, local domains.
    @param spool: its state directory holds the cache and statistics;
        report messages are stored in it.
    @param resolver: the DNS (a L{gopherpost.dns.Resolver}).
    @param reactor: time, TCP, TLS and the thread pool for file writes.
    @param trustRoot: the CAs to trust (default C{SSL_CERT_FILE} /
        C{SSL_CERT_DIR} or the system's).
    @raise ConfigError: the state directory or the trust store cannot be
        used.
    """
    smarthost = settings.relayHost is not None
    stsOn = settings.mtaSts and not smarthost
    if trustRoot is None and (stsOn or settings.tlsrpt):
        trustRoot = platformTrustRoot()
        check = getattr(trustRoot, "check", None)
        if check is not None:
            try:
                check()
            except ValueError as e:
                variable = "SSL_CERT_DIR" if "SSL_CERT_DIR" in str(e) else "SSL_CERT_FILE"
                raise ConfigError(variable, f"{e} (MTA-STS and TLS reports need it)") from None

    def runInThread(f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    state = spool.stateDirectory
    reports = TLSReportStore(os.path.join(state, "tlsrpt"), reactor, runInThread)
    try:
        reports.load()
    except OSError as e:
        raise ConfigError("SMTP_QUEUE_PATH", f"cannot keep TLS report data: {e}") from None
    client = HTTPSClient(reactor, resolver, timeout=HTTPS_TIMEOUT, trustRoot=trustRoot)
    security = TransportSecurity(
        settings.outboundTLS,
        ClientTLSContexts(trustRoot),
        dane=DANEResolver(resolver) if settings.dane else None,
        reports=reports,
        smarthost=smarthost,
    )
    if stsOn:
        cache = STSPolicyCache(os.path.join(state, "mta-sts"), runInThread)
        try:
            cache.load()
        except OSError as e:
            raise ConfigError("SMTP_QUEUE_PATH", f"cannot keep MTA-STS policies: {e}") from None
        security.useSTS(
            STSResolver(
                resolver,
                client,
                cache,
                reactor,
                port=settings.mtaStsPort,
                onProblem=security.stsProblem,
                onFetched=security.stsFetched,
            )
        )
    reporter = None
    if settings.tlsrpt:
        reporter = TLSReporter(
            reports,
            resolver,
            spool,
            client,
            reactor,
            settings.hostname,
            settings.isLocalDomain,
        )
    return TLSPolicyService(security, reports, reporter, reactor)
