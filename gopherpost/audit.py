# -*- test-case-name: tests.test_audit -*-
"""
The audit log: structured events about sessions, messages and deliveries,
fanned out to subscribers.

Every event is a plain C{dict} with an C{"event"} name (e.g.
C{"session.start"}), a C{"time"} (seconds since the epoch, from the injected
clock) and the caller's fields.  L{AuditLog.emit} sends it:

    - to the global L{twisted.logger} publisher, in the C{gopherpost.audit}
      namespace, under the key C{"audit"}.  With debugging on the event also
      has a C{log_format}, so text log observers print one line for it; with
      debugging off it has none, and text observers print nothing;
    - to every subscriber (L{AuditLog.subscribe}).  A subscriber is an
      L{IPushProducer}: pause it and its events wait in a bounded buffer;
      when the buffer is full the oldest are dropped, and on resume the
      subscriber is first told how many (an C{"audit.dropped"} event, which
      L{formatAuditLine} renders as C{"... N lines dropped"}).

Mail addresses (fields C{sender}, C{recipient}, and C{recipients} unless it is
a count) are only kept when debugging is on.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

from gopherpost.interfaces import IAuditLog, IAuditSubscription

__all__ = [
    "AuditLog",
    "AuditSubscription",
    "DEFAULT_MAX_BUFFERED",
    "DROPPED_EVENT",
    "formatAuditLine",
]

#: How many events a paused subscriber keeps by default.
DEFAULT_MAX_BUFFERED = 256

#: The name of the event that tells a subscriber how many events it lost.
DROPPED_EVENT = "audit.dropped"

#: The namespace of the log events L{AuditLog} emits.
_NAMESPACE = "gopherpost.audit"

_ADDRESS_FIELDS = frozenset(("sender", "recipient", "recipients"))

# Values made only of these characters are written without quotes.
_BARE = re.compile(r"[A-Za-z0-9_.:@/+\-]+\Z")

EventDict = dict[str, Any]
Callback = Callable[[EventDict], None]

_log = Logger(namespace=_NAMESPACE)


def _formatTime(when: float) -> str:
    seconds = int(when)
    millis = int((when - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _formatValue(value: object) -> str:
    if value is None:
        return "-"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    if isinstance(value, str):
        if _BARE.match(value):
            return value
        return json.dumps(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except ValueError:
        return json.dumps(repr(value))


def formatAuditLine(eventDict: Mapping[str, Any], includeTime: bool = True) -> str:
    """
    Render one audit event as one line of text (without a line ending).

    The line is C{<time> <event> key=value key=value...}, the fields in the
    order they were given.  Values with characters other than letters,
    digits and C{_.:@/+-} are JSON strings, so a value can never break the
    line or forge a field.  A L{DROPPED_EVENT} renders as
    C{<time> ... N lines dropped}.

    @param eventDict: an event as given to subscribers.
    @param includeTime: start with the event's time (ISO 8601, UTC, ms).
    @return: the line.
    """
    parts = []
    if includeTime:
        parts.append(_formatTime(eventDict.get("time", 0.0)))
    event = eventDict.get("event", "?")
    if event == DROPPED_EVENT:
        parts.append(f"... {eventDict.get('count', 0)} lines dropped")
        return " ".join(parts)
    parts.append(_formatValue(event))
    for key, value in eventDict.items():
        if key == "event" or key == "time":
            continue
        parts.append(f"{key}={_formatValue(value)}")
    return " ".join(parts)


@implementer(IAuditSubscription, IPushProducer)
class AuditSubscription:
    """
    One subscriber of an L{AuditLog}, with a bounded buffer.

    While running, each event is passed straight to the callback.  While
    paused (L{pauseProducing}), events are buffered; beyond C{maxBuffered}
    the oldest are dropped and counted.  L{resumeProducing} first delivers
    a L{DROPPED_EVENT} with that count, then the buffered events, until
    the buffer is empty or the subscriber is paused again.

    It is an L{IPushProducer}, so it can be registered directly as the
    producer of a consumer such as a twisted.web request: a consumer whose
    transport is full pauses it.

    @ivar droppedTotal: how many events this subscriber lost in all.
    """

    def __init__(self, audit: AuditLog, callback: Callback, maxBuffered: int) -> None:
        """
        @param audit: the log this subscribes to (for L{cancel}).
        @param callback: called with each event dict; must not mutate it.
        @param maxBuffered: the most events kept while paused (at least 1).
        """
        if maxBuffered < 1:
            raise ValueError("maxBuffered must be at least 1")
        self._audit: AuditLog | None = audit
        self._callback = callback
        self._maxBuffered = maxBuffered
        self._buffer: deque[EventDict] = deque()
        self._dropped = 0
        self._paused = False
        self._draining = False
        self.droppedTotal = 0

    @property
    def active(self) -> bool:
        """
        Whether the subscription still receives events (not cancelled).
        """
        return self._audit is not None

    @property
    def paused(self) -> bool:
        """
        Whether events are being buffered rather than delivered.
        """
        return self._paused

    @property
    def buffered(self) -> int:
        """
        How many events are waiting in the buffer.
        """
        return len(self._buffer)

    def deliver(self, eventDict: EventDict) -> None:
        """
        Called by L{AuditLog.emit}: pass C{eventDict} on or buffer it.

        @raise Exception: whatever the callback raises (the audit log
            catches and logs it).
        """
        if self._audit is None:
            return
        if self._paused or self._buffer or self._dropped:
            if len(self._buffer) >= self._maxBuffered:
                self._buffer.popleft()
                self._dropped += 1
                self.droppedTotal += 1
            self._buffer.append(eventDict)
            return
        self._callback(eventDict)

    def pauseProducing(self) -> None:
        """
        Buffer events instead of delivering them.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        Deliver what was buffered (the drop notice first), then go on
        delivering events as they come.
        """
        self._paused = False
        if self._draining:
            # Resumed from inside our own callback: the loop below goes on.
            return
        self._draining = True
        try:
            while not self._paused and self._audit is not None:
                if self._dropped:
                    count, self._dropped = self._dropped, 0
                    event: EventDict = {
                        "event": DROPPED_EVENT,
                        "time": self._audit.clock.seconds(),
                        "count": count,
                    }
                elif self._buffer:
                    event = self._buffer.popleft()
                else:
                    break
                try:
                    self._callback(event)
                except Exception:
                    _log.failure("Audit subscriber {callback!r} failed", callback=self._callback)
        finally:
            self._draining = False

    def stopProducing(self) -> None:
        """
        The consumer is gone: L{cancel}.
        """
        self.cancel()

    def cancel(self) -> None:
        """
        Unsubscribe now and forget anything buffered; idempotent.
        """
        audit, self._audit = self._audit, None
        self._buffer.clear()
        self._dropped = 0
        if audit is not None:
            audit._unsubscribe(self)


@implementer(IAuditLog)
class AuditLog:
    """
    The audit log of one server: see the module docstring.

    @ivar debug: whether addresses are kept and lines are written to the log.
    @ivar clock: where event times come from.
    """

    def __init__(
        self,
        debug: bool,
        clock: IReactorTime,
        logger: Logger | None = None,
    ) -> None:
        """
        @param debug: C{SMTP_DEBUG}.
        @param clock: the reactor (or a L{twisted.internet.task.Clock}).
        @param logger: where structured events go (default: a L{Logger} in
            the C{gopherpost.audit} namespace, which publishes to the global
            log publisher).
        """
        self.debug = debug
        self.clock = clock
        self._log = logger if logger is not None else Logger(namespace=_NAMESPACE)
        self._subscribers: tuple[AuditSubscription, ...] = ()

    @property
    def subscriptions(self) -> tuple[AuditSubscription, ...]:
        """
        The active subscriptions, oldest first.
        """
        return self._subscribers

    def emit(self, event: str, **fields: object) -> None:
        """
        Record one event: log it and fan it out.  Never blocks, never raises.

        @param event: the dotted event name.
        @param fields: JSON-able values; C{event} and C{time} are reserved.
        """
        try:
            eventDict: EventDict = dict(fields)
            eventDict["event"] = event
            eventDict["time"] = self.clock.seconds()
            if not self.debug and not _ADDRESS_FIELDS.isdisjoint(eventDict):
                _dropAddresses(eventDict)
            if self.debug:
                self._log.emit(
                    LogLevel.info,
                    "{auditLine}",
                    audit=eventDict,
                    auditLine=formatAuditLine(eventDict, includeTime=False),
                )
            # Without SMTP_DEBUG nothing would print them, and publishing a
            # handful of events per message to every log observer costs
            # more than the rest of the audit path: only subscribers get them.
            for subscriber in self._subscribers:
                try:
                    subscriber.deliver(eventDict)
                except Exception:
                    _log.failure(
                        "Audit subscriber {callback!r} failed",
                        callback=subscriber._callback,
                    )
        except Exception:
            _log.failure("Could not emit audit event {event!r}", event=event)

    def subscribe(
        self, callback: Any, maxBuffered: int = DEFAULT_MAX_BUFFERED
    ) -> AuditSubscription:
        """
        Call C{callback(eventDict)} for every later event.

        @param callback: a C{Callable[[dict], None]}; receives each event
            dict (shared with the other subscribers: do not mutate it).
        @param maxBuffered: the most events kept while the subscription is
            paused; older ones are dropped and counted.
        @return: the subscription, to pause, resume or cancel.
        """
        subscription = AuditSubscription(self, callback, maxBuffered)
        self._subscribers = self._subscribers + (subscription,)
        return subscription

    def _unsubscribe(self, subscription: AuditSubscription) -> None:
        self._subscribers = tuple(s for s in self._subscribers if s is not subscription)


def _dropAddresses(eventDict: EventDict) -> None:
    eventDict.pop("sender", None)
    eventDict.pop("recipient", None)
    recipients = eventDict.get("recipients")
    if recipients is not None and (isinstance(recipients, bool) or not isinstance(recipients, int)):
        del eventDict["recipients"]
