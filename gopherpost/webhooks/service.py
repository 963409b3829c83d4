# -*- test-case-name: tests.test_webhook_service -*-
"""
The webhooks as the server sees them: L{makeWebhookService} builds a
L{WebhookService}, which

  - is an L{ISpoolObserver}: each committed message is handed to the
    courier by name (in batches, at most L{HANDOVER_INTERVAL} seconds
    later; the client's 250 never waits, and the spool's envelope is the
    durable record, see L{records});
  - offers an L{IDeliveryObserver} (L{WebhookService.deliveryObserver}) for
    the relay queue's delivery events;
  - offers the operations C{gopherpostctl webhook list|retry|drop} needs
    (L{WebhookService.listPending}, L{WebhookService.retryNow},
    L{WebhookService.drop});
  - keeps the metrics (L{WebhookService.metrics}, a C{prometheus_client}
    collector).

The courier runs in a child process (L{process.CourierProcess}), or in this
one for tests (C{inProcess=True}).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from gopherpost.config import ConfigError, Settings
from gopherpost.interfaces import IDeliveryObserver, ISpoolObserver
from gopherpost.webhooks.channel import MAX_PAGE
from gopherpost.webhooks.events import DeliveryEventRecorder
from gopherpost.webhooks.http import checkTrustStore
from gopherpost.webhooks.metrics import WebhookMetrics
from gopherpost.webhooks.payload import inScope
from gopherpost.webhooks.records import EventRecord, WebhookStore

__all__ = ["WebhookService", "makeWebhookService", "HANDOVER_INTERVAL", "HANDOVER_BATCH"]

_log = Logger()

#: Seconds webhooks are collected before they are handed to the courier:
#: one hand-over (an AMP message to the courier process) then serves many
#: messages instead of costing one per commit.
HANDOVER_INTERVAL = 0.02
#: Webhooks that are handed over at once, without waiting for the interval.
HANDOVER_BATCH = 500


@implementer(ISpoolObserver)
class WebhookService(MultiService):
    """
    The server's side of the webhooks (see the module's description).

    @param settings: which webhooks are on, and the scope.
    @param reactor: schedules the hand-over at the end of a reactor turn.
    @param store: the webhooks' files (the event journal is written here).
    @param courier: a L{LocalCourier} or L{CourierProcess}; it becomes a
        child service.
    @param metrics: the numbers the courier reports.
    @param handOverInterval: seconds to collect webhooks before handing
        them to the courier.
    @ivar deliveryObserver: the L{IDeliveryObserver} to give the relay
        queue, or L{None} when the events webhook is off.
    """

    name = "webhooks"

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        store: WebhookStore,
        courier: Any,
        metrics: WebhookMetrics,
        handOverInterval: float = HANDOVER_INTERVAL,
    ) -> None:
        MultiService.__init__(self)
        self._handOverInterval = handOverInterval
        self.settings = settings
        self._reactor = reactor
        self.store = store
        self.courier = courier
        self.metrics = metrics
        courier.setServiceParent(self)
        self._inbound = bool(settings.webhookURL)
        self._taken: list[tuple[str, str, float]] = []
        self._skipped: list[tuple[str, str]] = []
        self._events: list[EventRecord] = []
        self._handOver: Any = None
        self.deliveryObserver: IDeliveryObserver | None = None
        if settings.eventsWebhookURL:
            self.deliveryObserver = DeliveryEventRecorder(reactor, store, self._takeEvent)

    def messageCommitted(self, envelope: Any) -> None:
        """
        A message is durably spooled: it gets an inbound webhook if it is in
        scope.  Costs a list append; the courier hears of it within
        L{HANDOVER_INTERVAL} seconds.
        """
        if not self._inbound:
            return
        if inScope(envelope, self.settings.webhookScope):
            self._taken.append((envelope.queueId, envelope.dateDirectory, envelope.received))
        else:
            self._skipped.append((envelope.queueId, envelope.dateDirectory))
        self._soon()

    def _takeEvent(self, record: EventRecord) -> None:
        self._events.append(record)
        self._soon()

    def _soon(self) -> None:
        if len(self._taken) + len(self._skipped) + len(self._events) >= HANDOVER_BATCH:
            self.flush()
        elif self._handOver is None:
            self._handOver = self._reactor.callLater(self._handOverInterval, self.flush)

    def flush(self) -> None:
        """
        Hand everything collected so far to the courier now.
        """
        if self._handOver is not None:
            if self._handOver.active():
                self._handOver.cancel()
            self._handOver = None
        taken, self._taken = self._taken, []
        skipped, self._skipped = self._skipped, []
        events, self._events = self._events, []
        try:
            if taken:
                self.courier.takeMessages(taken)
            if skipped:
                self.courier.skipMessages(skipped)
            if events:
                self.courier.takeEvents(events)
        except Exception:
            # Not lost: the courier's next start finds them.
            _log.failure("Could not hand webhooks to the courier")

    def stopService(self) -> Deferred[Any] | None:
        self.flush()
        return MultiService.stopService(self)

    # Operations, for gopherpostctl webhook list|retry|drop

    def listPending(
        self, kind: str | None = None, offset: int = 0, limit: int = MAX_PAGE
    ) -> Deferred[tuple[int, list[dict[str, Any]]]]:
        """
        A page of the pending webhooks, oldest first.

        @param kind: C{"inbound"}, C{"events"}, or L{None} for both.
        @param limit: at most L{MAX_PAGE}.
        @return: a L{Deferred} of C{(total, items)}, each item a dict with
            C{kind}, C{id}, C{queue_id}, C{created}, C{attempts},
            C{next_attempt}, C{in_flight}, C{last_status}, C{last_error};
            it fails with L{CourierUnavailable} while the courier restarts.
        """
        return self.courier.listPending(kind, offset, min(limit, MAX_PAGE))

    def retryNow(self, ids: Sequence[str] | None = None, kind: str | None = None) -> Deferred[int]:
        """
        Try pending webhooks now, whatever their schedule (C{ids} L{None}:
        every one of C{kind}, or all).

        @return: a L{Deferred} of how many will be tried.
        """
        return self.courier.retryNow(ids, kind)

    def drop(self, ids: Sequence[str], kind: str | None = None) -> Deferred[int]:
        """
        Give pending webhooks up (they are never posted).

        @return: a L{Deferred} of how many were dropped.
        """
        return self.courier.drop(ids, kind)


def makeWebhookService(
    settings: Settings,
    spool: Any,
    reactor: Any,
    environ: Mapping[str, str],
    inProcess: bool = False,
    handOverInterval: float = HANDOVER_INTERVAL,
) -> WebhookService | None:
    """
    The webhooks as configured, or L{None} when both are off (then mail
    received until the inbound webhook is turned on again gets none).

    Blocking and small: call it at start-up.

    @param spool: the opened spool.
    @param environ: the configuration the server runs with (the courier
        process gets it; C{SSL_CERT_FILE}/C{SSL_CERT_DIR} are read from it
        and the real environment).
    @param inProcess: run the courier in this process (tests).
    @param handOverInterval: see L{WebhookService}.
    @raise ConfigError: an https URL with a trust store that does not load,
        or the records cannot be kept.
    """
    store = WebhookStore(spool.stateDirectory)
    if not (settings.webhookURL or settings.eventsWebhookURL):
        store.clearSince()
        return None
    environment = dict(os.environ)
    environment.update(environ)
    for variable, url in (
        ("SMTP_WEBHOOK_URL", settings.webhookURL),
        ("SMTP_EVENTS_WEBHOOK_URL", settings.eventsWebhookURL),
    ):
        if url and url.lower().startswith("https:"):
            checkTrustStore(variable, environment)
    try:
        store.open()
        if not settings.webhookURL:
            store.clearSince()
        elif store.since() is None:
            store.setSince(reactor.seconds())
    except OSError as e:
        raise ConfigError(
            "SMTP_QUEUE_PATH", f"cannot keep webhook records in {store.path}: {e.strerror or e}"
        ) from None
    metrics = WebhookMetrics()
    courier: Any
    if inProcess:
        from gopherpost.webhooks.courier import LocalCourier

        courier = LocalCourier(settings, spool, reactor, store, metrics)
    else:
        from gopherpost.webhooks.process import CourierProcess

        courier = CourierProcess(environ, reactor, metrics)
    return WebhookService(settings, reactor, store, courier, metrics, handOverInterval)
