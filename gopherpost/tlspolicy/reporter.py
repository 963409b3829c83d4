# -*- test-case-name: tests.test_tlspolicy_report -*-
"""
Sending TLS reports (RFC 8460 section 5), with C{SMTP_TLSRPT=true}: after
each UTC day, the report of every policy domain GopherPost delivered to
goes to the C{rua} URIs of the domain's C{_smtp._tls} TXT record:

  - C{mailto:}: a report message (L{gopherpost.tlspolicy.report.reportMessage})
    stored in GopherPost's own spool (L{gopherpost.spool.Spool.store}); the
    relay queue, a spool observer, delivers it like any other message (and
    signs it, when DKIM is configured: RFC 8460 5.3 wants it signed).
  - C{https:}: a POST of the gzipped report (C{application/tlsrpt+gzip}).

The reporter looks every L{CHECK_INTERVAL} seconds (the first time a
random part of that after start-up, so that many servers do not report at
the same minute) for days that are over and domains not reported yet.  A
domain without a record is done; one whose every URI failed is tried again
at the next check, for up to L{RETRY_FOR} seconds after its day ended.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gopherpost.dns import DNSError, IDNSResolver, PermanentDNSError
from gopherpost.tlspolicy.https import HTTPSClient, HTTPSError
from gopherpost.tlspolicy.report import (
    CONTENT_TYPE,
    ReportRecordError,
    buildReport,
    reportBody,
    reportId,
    reportMessage,
    selectReportRecord,
)
from gopherpost.tlspolicy.reportstore import DomainDay, TLSReportStore, dayOf

__all__ = ["CHECK_INTERVAL", "RETRY_FOR", "TLSReporter"]

_log = Logger()

#: Seconds between two looks for reports to send.
CHECK_INTERVAL = 3600.0
#: Seconds after its day a report is retried at most.
RETRY_FOR = 86400.0


class TLSReporter(Service):
    """
    Sends the daily reports; see the module docstring.

    @ivar sent: how many reports went out (to one URI each).
    """

    name = "tlsrpt"

    def __init__(
        self,
        store: TLSReportStore,
        resolver: IDNSResolver,
        spool: Any,
        client: HTTPSClient,
        clock: IReactorTime,
        submitter: str,
        isLocalDomain: Callable[[str], bool],
        randomSource: random.Random | None = None,
    ) -> None:
        """
        @param store: the statistics.
        @param resolver: for the C{_smtp._tls} records.
        @param spool: where report messages are stored (C{store(content,
            sender, [(recipient, local)])}).
        @param client: posts reports to C{https:} URIs.
        @param clock: what day it is, and the schedule.
        @param submitter: this server's name (C{SMTP_HOSTNAME}): the
            reports' submitter and organization, C{postmaster@} it their
            contact and sender.
        @param isLocalDomain: whether a recipient domain is ours.
        @param randomSource: spreads the first check.
        """
        self._store = store
        self._resolver = resolver
        self._spool = spool
        self._client = client
        self._clock = clock
        self._submitter = submitter
        self._isLocalDomain = isLocalDomain
        self._random = randomSource or random.Random()
        self._loop: LoopingCall | None = None
        self._first: Any = None
        self._running = False
        self._waiters: list[Deferred[None]] = []
        self.sent = 0

    @property
    def sender(self) -> str:
        return f"postmaster@{self._submitter}"

    def startService(self) -> None:
        Service.startService(self)
        self._first = self._clock.callLater(
            self._random.uniform(60.0, CHECK_INTERVAL), self._startLoop
        )

    def _startLoop(self) -> None:
        self._first = None
        loop = LoopingCall(self.sendDue)
        loop.clock = self._clock
        self._loop = loop
        loop.start(CHECK_INTERVAL, now=True).addErrback(
            lambda f: _log.failure("The TLS report loop stopped", f)
        )

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        if self._first is not None and self._first.active():
            self._first.cancel()
        self._first = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if not self._running:
            return None
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def sendDue(self) -> Deferred[None]:
        """
        Send every report due now (the loop calls it; so may tests).

        @return: a L{Deferred} firing once done (with a run already in
            progress: once that is done); it never fails.
        """
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._running:
            return waiter
        self._running = True

        def finished(result: object) -> None:
            self._running = False
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

        d = self._sendDue()
        d.addErrback(lambda f: _log.failure("Sending TLS reports failed", f))
        d.addBoth(finished)
        return waiter

    @inlineCallbacks
    def _sendDue(self) -> Generator[Deferred[Any], Any, None]:
        today = dayOf(self._clock.seconds())
        for day in self._store.days():
            if day >= today:
                continue
            for domain, statistics in list(self._store.domains(day)):
                if statistics.reported or not statistics.policies:
                    continue
                done = yield self._report(domain, day, statistics)
                if done or self._tooLate(day):
                    self._store.markReported(day, domain)
        yield self._store.flush()

    def _tooLate(self, day: str) -> bool:
        endOfDay = dayOf(self._clock.seconds() - RETRY_FOR)
        return day < endOfDay

    @inlineCallbacks
    def _report(
        self, domain: str, day: str, statistics: DomainDay
    ) -> Generator[Deferred[Any], Any, bool]:
        """
        Send one report.

        @return: (via Deferred) whether it is done with (sent, or nowhere
            to send it).
        """
        try:
            texts = yield self._resolver.lookupTXT(f"_smtp._tls.{domain}")
        except PermanentDNSError:
            return True
        except DNSError as e:
            _log.info("TLS report for {domain} postponed: {error}", domain=domain, error=e)
            return False
        try:
            uris = selectReportRecord(texts)
        except ReportRecordError as e:
            _log.info("No TLS report for {domain}: _smtp._tls: {error}", domain=domain, error=e)
            return True
        if not uris:
            return True
        identifier = reportId(self._submitter)
        report = buildReport(domain, day, statistics, self._submitter, self.sender, identifier)
        body = reportBody(report)
        delivered = False
        for uri in uris:
            ok = yield self._send(uri, domain, day, identifier, body)
            delivered = delivered or ok
        return delivered

    def _send(
        self, uri: str, domain: str, day: str, identifier: str, body: bytes
    ) -> Deferred[bool]:
        if uri.startswith("mailto:"):
            address = uri[len("mailto:") :]
            message = reportMessage(
                self._submitter,
                self.sender,
                address,
                domain,
                day,
                identifier,
                body,
                self._clock.seconds(),
            )
            local = self._isLocalDomain(address.rpartition("@")[2])
            d = self._spool.store(message, self.sender, [(address, local)])

            def stored(envelope: Any) -> bool:
                self.sent += 1
                _log.info(
                    "TLS report for {domain} ({day}) queued to {address} as {queueId}",
                    domain=domain,
                    day=day,
                    address=address,
                    queueId=envelope.queueId,
                )
                return True

            def notStored(failure: Any) -> bool:
                _log.error(
                    "Could not queue the TLS report for {domain}: {error}",
                    domain=domain,
                    error=failure.getErrorMessage(),
                )
                return False

            return d.addCallbacks(stored, notStored)
        if not uri.startswith("https:"):
            return succeed(False)

        def posted(response: Any) -> bool:
            if 200 <= response.status < 300:
                self.sent += 1
                _log.info(
                    "TLS report for {domain} ({day}) posted to {uri}",
                    domain=domain,
                    day=day,
                    uri=uri,
                )
                return True
            _log.warn(
                "TLS report for {domain} refused by {uri}: HTTP {status}",
                domain=domain,
                uri=uri,
                status=response.status,
            )
            return False

        def failed(failure: Any) -> bool:
            failure.trap(HTTPSError)
            _log.warn(
                "TLS report for {domain} not posted to {uri}: {error}",
                domain=domain,
                uri=uri,
                error=failure.getErrorMessage(),
            )
            return False

        return self._client.post(uri, body, CONTENT_TYPE).addCallbacks(posted, failed)
