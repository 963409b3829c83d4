# -*- test-case-name: tests.test_webhook_events -*-
"""
The delivery events webhook's intake: an L{IDeliveryObserver} the relay
queue tells what happened to relayed mail.

Each event gets a unique id (its C{webhook-id}), becomes its JSON document
at once, is appended to the day's event journal (durable from then on, see
L{records}) and handed to the courier, all before C{deliveryEvent} returns.
That costs one small C{write(2)} on the reactor thread; no request waits.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from gopherpost.deliveryevents import DeliveryEvent
from gopherpost.interfaces import IDeliveryObserver
from gopherpost.webhooks.payload import encode, eventPayload
from gopherpost.webhooks.records import EventRecord, WebhookStore

__all__ = ["DeliveryEventRecorder", "newEventId"]

_log = Logger()


def newEventId(seconds: float) -> str:
    """
    A new event id: C{evt_}, then 13 hex digits of microseconds and 10
    random ones, so ids sort by time and never repeat.
    """
    return f"evt_{int(seconds * 1_000_000):013x}{secrets.token_hex(5)}"


@implementer(IDeliveryObserver)
class DeliveryEventRecorder:
    """
    Records delivery events for the events webhook.

    @param clock: stamps the event ids.
    @param store: where the journal is.
    @param submit: C{submit(record)} hands a recorded event to the courier.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: WebhookStore,
        submit: Callable[[EventRecord], None],
    ) -> None:
        self._clock = clock
        self._store = store
        self._submit = submit

    def deliveryEvent(self, event: DeliveryEvent) -> None:
        """
        Record C{event} and hand it on.  Never raises: a journal that cannot
        be written is logged, and the event is still posted (but would not
        survive a restart).
        """
        try:
            eventId = newEventId(self._clock.seconds())
            record = EventRecord(
                eventId, event.time, event.queueId, encode(eventPayload(event, eventId))
            )
        except Exception:
            _log.failure("Could not record delivery event {event!r}", event=event)
            return
        try:
            self._store.appendEvent(record)
        except OSError as e:
            _log.error(
                "webhook=events id={id}: could not write the event journal ({error}); "
                "the event is not kept across a restart",
                id=record.id,
                error=e,
            )
        try:
            self._submit(record)
        except Exception:
            _log.failure("Could not hand delivery event {id} to the courier", id=record.id)
