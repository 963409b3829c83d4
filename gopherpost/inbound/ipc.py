# -*- test-case-name: tests.test_workers -*-
"""
What inbound worker processes tell the parent process, over AMP on the
worker's standard input and output.

A worker stores messages in the spool itself; it tells the parent (which runs
the relay queue, metrics and the audit stream) that a message was spooled,
and forwards its audit events in small batches, and the increments of the
counters its policies keep (the MX checks') added up about once a second.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.interfaces import IAuditLog, IAuditSubscription, ISpoolObserver
from gopherpost.spool import Envelope

__all__ = [
    "MessagesSpooled",
    "AuditEvents",
    "CounterIncrements",
    "ForwardingCounters",
    "Reconfigure",
    "ParentChannel",
    "QuietAMP",
    "ForwardingAuditLog",
    "ForwardingSpoolObserver",
]

_log = Logger()

#: Events sent to the parent in one AMP message at most.
MAX_EVENTS_PER_BATCH = 100
#: Messages announced to the parent in one AMP message at most.
MAX_MESSAGES_PER_NOTICE = 200

#: Seconds a worker holds audit events before sending them.
FLUSH_INTERVAL = 0.05
#: Seconds a worker adds up counter increments before sending them.
COUNTER_FLUSH_INTERVAL = 1.0


class MessagesSpooled(amp.Command):
    """
    Worker to parent: messages are durably in the spool (those of one
    reactor turn, usually one group commit, together).
    """

    arguments = [
        (
            b"messages",
            amp.AmpList([(b"queueId", amp.Unicode()), (b"dateDirectory", amp.Unicode())]),
        ),
    ]
    response: ClassVar[list[Any]] = []
    requiresAnswer = False


class AuditEvents(amp.Command):
    """
    Worker to parent: audit events, a JSON list of C{[name, fields]}.
    """

    arguments = [(b"events", amp.Unicode())]
    response: ClassVar[list[Any]] = []
    requiresAnswer = False


class CounterIncrements(amp.Command):
    """
    Worker to parent: counter increments, a JSON list of C{[source, name,
    labels, amount]} (C{source} names a set of counters, e.g. C{"checks"}).
    """

    arguments = [(b"counts", amp.Unicode())]
    response: ClassVar[list[Any]] = []
    requiresAnswer = False


class Reconfigure(amp.Command):
    """
    Parent to worker (live reload, issue 14): the configuration changed;
    C{variables} is a JSON object of the new C{SMTP_*} variables.  The
    worker answers C{error}: C{""} once its new sessions use them, else why
    it could not.
    """

    arguments = [(b"variables", amp.Unicode())]
    response = [(b"error", amp.Unicode())]


class QuietAMP(amp.AMP):
    """
    L{amp.AMP} without its log lines for every connection made and lost.
    """

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)


class ParentChannel(QuietAMP):
    """
    The parent's end of one worker's channel.

    @param audit: where forwarded audit events are emitted again.
    @param spool: the parent's spool, whose observers (the relay queue) are
        told about the messages the worker committed
        (C{spool.announceStored(dateDirectory, queueId)}).
    @param counters: the parent's counters by source name, each with
        C{inc(name, *labels, amount=n)}, for the workers' increments.
    """

    def __init__(
        self, audit: IAuditLog, spool: Any, counters: Mapping[str, Any] | None = None
    ) -> None:
        QuietAMP.__init__(self)
        self._audit = audit
        self._spool = spool
        self._counters = dict(counters or {})

    @MessagesSpooled.responder
    def messagesSpooled(self, messages: list[dict]) -> dict:
        for message in messages:
            self._spool.announceStored(message["dateDirectory"], message["queueId"])
        return {}

    @AuditEvents.responder
    def auditEvents(self, events: str) -> dict:
        for name, fields in json.loads(events):
            fields.pop("time", None)
            self._audit.emit(name, **fields)
        return {}

    @CounterIncrements.responder
    def counterIncrements(self, counts: str) -> dict:
        for source, name, labels, amount in json.loads(counts):
            counters = self._counters.get(source)
            if counters is None:
                continue
            try:
                counters.inc(name, *labels, amount=amount)
            except (KeyError, ValueError, TypeError):
                _log.warn("Ignored a worker's count of {source} {name}", source=source, name=name)
        return {}


@implementer(IAuditLog)
class ForwardingAuditLog:
    """
    A worker's audit log: events go to the parent in small batches (at most
    L{FLUSH_INTERVAL} seconds late), where subscribers and metrics live.

    @param send: C{send(command, **arguments)}, e.g. C{AMP.callRemote}.
    """

    def __init__(self, clock: IReactorTime, send: Callable[..., Any]) -> None:
        self._clock = clock
        self._send = send
        self._pending: list[list] = []
        self._timer: Any = None

    def emit(self, event: str, **fields: object) -> None:
        """
        Queue one event for the parent.
        """
        self._pending.append([event, fields])
        if len(self._pending) >= MAX_EVENTS_PER_BATCH:
            self.flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """
        Send what is queued now.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if pending:
            try:
                self._send(AuditEvents, events=json.dumps(pending))
            except Exception:
                _log.failure("Could not forward {count} audit events", count=len(pending))

    def subscribe(self, callback: object) -> IAuditSubscription:
        """
        Subscribers live in the parent process.
        """
        raise NotImplementedError("subscribe to the parent's audit log")


@implementer(ISpoolObserver)
class ForwardingSpoolObserver:
    """
    A worker's spool observer: the parent's observers (the relay queue) hear
    of the worker's commits.

    Messages spooled in one reactor turn go to the parent in one
    L{MessagesSpooled} at the end of the turn.

    @param clock: schedules the end-of-turn send.
    @param send: C{send(command, **arguments)}, e.g. C{AMP.callRemote}.
    @param beforeSend: called first (flushes audit events, so that the
        parent sees C{message.queued} before the delivery events).
    """

    def __init__(
        self, clock: IReactorTime, send: Callable[..., Any], beforeSend: Callable[[], None]
    ) -> None:
        self._clock = clock
        self._send = send
        self._beforeSend = beforeSend
        self._pending: list[dict] = []
        self._timer: Any = None

    def messageCommitted(self, envelope: Envelope) -> None:
        """
        Tell the parent at the end of this reactor turn (by name: the parent
        reads the envelope from the spool).
        """
        self._pending.append({"queueId": envelope.queueId, "dateDirectory": envelope.dateDirectory})
        if self._timer is None:
            self._timer = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """
        Tell the parent about every message spooled since the last flush.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        self._beforeSend()
        for start in range(0, len(pending), MAX_MESSAGES_PER_NOTICE):
            self._send(MessagesSpooled, messages=pending[start : start + MAX_MESSAGES_PER_NOTICE])


class ForwardingCounters:
    """
    A worker's counter increments, added up and sent to the parent about
    once every L{COUNTER_FLUSH_INTERVAL} seconds.

    @param send: C{send(command, **arguments)}, e.g. C{AMP.callRemote}.
    """

    def __init__(self, clock: IReactorTime, send: Callable[..., Any]) -> None:
        self._clock = clock
        self._send = send
        self._pending: Counter[tuple[str, str, tuple[str, ...]]] = Counter()
        self._timer: Any = None

    def add(self, source: str, name: str, labels: tuple[str, ...], amount: int = 1) -> None:
        """
        Count C{amount} more on a counter of C{source} in the parent.
        """
        self._pending[(source, name, tuple(labels))] += amount
        if self._timer is None:
            self._timer = self._clock.callLater(COUNTER_FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """
        Send what is added up now.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, Counter()
        if pending:
            counts = [
                [source, name, list(labels), n] for (source, name, labels), n in pending.items()
            ]
            try:
                self._send(CounterIncrements, counts=json.dumps(counts))
            except Exception:
                _log.failure("Could not forward {count} counter increments", count=len(counts))
