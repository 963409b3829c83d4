# -*- test-case-name: tests.test_filters_service -*-
"""
The content filters built from the settings (L{makeContentFilters}).

L{ContentFilters.policies} is the ordered list to put on the inbound
chain, after the chain's own checks (allow-list, relay permission,
recipients, size) and the MX checks:

    rspamd (SMTP_RSPAMD_URL), SpamAssassin (SMTP_SPAMD), then the milters
    (SMTP_MILTERS, in their order)

so that a DKIM-signing milter signs the message as it will be stored,
after the scanners' header fields and Subject rewrite.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer

from gopherpost.config import Settings
from gopherpost.filters.interfaces import IEnvelopeEditor, IFilterMetrics
from gopherpost.filters.metrics import FilterMetrics
from gopherpost.filters.milter.client import MilterClient
from gopherpost.filters.policies import MilterPolicy, ReplyType, ScannerPolicy
from gopherpost.filters.rspamd import RspamdClient
from gopherpost.filters.spamd import SpamdClient

__all__ = ["ContentFilters", "makeContentFilters"]


class ContentFilters(Service):
    """
    The filters of one server.

    @ivar policies: the chain's policies, in order (empty when no filter
        is configured).
    @ivar metrics: their metrics (a L{FilterMetrics}, a prometheus_client
        collector; in a worker process an L{AuditFilterMetrics}).
    """

    def __init__(
        self, policies: list[Any], metrics: IFilterMetrics, rspamd: RspamdClient | None
    ) -> None:
        self.policies = policies
        self.metrics = metrics
        self._rspamd = rspamd

    def stopService(self) -> Any:
        Service.stopService(self)
        if self._rspamd is not None:
            return self._rspamd.close()
        return defer.succeed(None)


def makeContentFilters(
    settings: Settings,
    reactor: Any,
    metrics: IFilterMetrics | None = None,
    replyType: ReplyType | None = None,
    editor: IEnvelopeEditor | None = None,
) -> ContentFilters:
    """
    Build the filters the settings switch on.

    @param reactor: for connections and time.
    @param metrics: where verdicts are counted (default: a new
        L{FilterMetrics}).
    @param replyType: C{replyType(code, text, reason=...)} for the chain's
        replies (the inbound C{Reply}).
    @param editor: changes recipients and sender for milters (default: an
        L{gopherpost.filters.envelope.AttributeEnvelopeEditor} that keeps
        addresses as text).
    """
    if metrics is None:
        metrics = FilterMetrics()
    policies: list[Any] = []
    rspamd = None
    if settings.rspamdURL:
        rspamd = RspamdClient(reactor, settings.rspamdURL, settings.rspamdTimeout)
        policies.append(
            ScannerPolicy(
                rspamd,
                settings.filterFail,
                settings.rspamdScope,
                metrics,
                reactor,
                editor,
                replyType,
            )
        )
    if settings.spamd is not None:
        spamd = SpamdClient(
            reactor,
            settings.spamd,
            settings.spamdTimeout,
            settings.spamRejectScore,
            settings.spamdMaxSize,
        )
        policies.append(
            ScannerPolicy(
                spamd, settings.filterFail, settings.spamdScope, metrics, reactor, editor, replyType
            )
        )
    if settings.milters:
        clients = [MilterClient(reactor, spec) for spec in settings.milters]
        policies.append(
            MilterPolicy(clients, settings.filterFail, metrics, reactor, editor, replyType)
        )
    return ContentFilters(policies, metrics, rspamd)
