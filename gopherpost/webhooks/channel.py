# -*- test-case-name: tests.test_webhook_process -*-
"""
What the server and its webhook courier process tell each other, over AMP
on the courier's standard input and output.

Server to courier: new webhooks (L{TakeMessages}, L{SkipMessages},
L{TakeEvents}; no answer expected: whatever is lost with a dying courier is
found again by the next one's start-up scan) and operations
(L{ListPending}, L{RetryNow}, L{Drop}).  Courier to server: the metrics'
numbers (L{Report}), in small batches.

AMP values are at most 64 KiB, so lists go in chunks (L{chunks}).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols import amp
from zope.interface import implementer

from gopherpost.webhooks.dispatcher import IWebhookReporter
from gopherpost.webhooks.records import EventRecord

__all__ = [
    "TakeMessages",
    "SkipMessages",
    "TakeEvents",
    "ListPending",
    "RetryNow",
    "Drop",
    "Report",
    "CourierUnavailable",
    "ServerSide",
    "CourierSide",
    "ForwardingReporter",
    "chunks",
    "MAX_PAGE",
]

_log = Logger()

#: Bytes of text in one AMP value at most (AMP's limit is 65,535).
MAX_VALUE = 60000
#: Pending webhooks listed in one L{ListPending} answer at most.
MAX_PAGE = 100
#: Seconds the courier holds metric numbers before sending them.
REPORT_INTERVAL = 0.5


def chunks(lines: Sequence[str], limit: int = MAX_VALUE) -> Iterator[str]:
    """
    C{lines} joined with newlines, in pieces of at most C{limit} bytes
    (a longer single line is a piece of its own).
    """
    piece: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode("utf-8")) + 1
        if piece and size + length > limit:
            yield "\n".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += length
    if piece:
        yield "\n".join(piece)


class CourierUnavailable(Exception):
    """
    The courier process is not running (starting, or restarting after a
    crash); try again in a moment.
    """


class TakeMessages(amp.Command):
    """
    Committed messages in scope: lines of C{"queueId dateDirectory received"}.
    """

    arguments = [(b"messages", amp.Unicode())]
    response = []
    requiresAnswer = False


class SkipMessages(amp.Command):
    """
    Committed messages out of scope: lines of C{"queueId dateDirectory"}.
    """

    arguments = [(b"messages", amp.Unicode())]
    response = []
    requiresAnswer = False


class TakeEvents(amp.Command):
    """
    Recorded delivery events: lines of L{EventRecord.toJSON}.
    """

    arguments = [(b"events", amp.Unicode())]
    response = []
    requiresAnswer = False


class ListPending(amp.Command):
    """
    A page of the pending webhooks: C{total} and C{items} (JSON list of
    L{PendingWebhook.describe} objects).
    """

    arguments = [
        (b"kind", amp.Unicode(optional=True)),
        (b"offset", amp.Integer()),
        (b"limit", amp.Integer()),
    ]
    response = [(b"total", amp.Integer()), (b"items", amp.Unicode())]


class RetryNow(amp.Command):
    """
    Try pending webhooks now: C{ids} is a JSON list, or null for all.
    """

    arguments = [(b"kind", amp.Unicode(optional=True)), (b"ids", amp.Unicode())]
    response = [(b"count", amp.Integer())]


class Drop(amp.Command):
    """
    Give pending webhooks up: C{ids} is a JSON list.
    """

    arguments = [(b"kind", amp.Unicode(optional=True)), (b"ids", amp.Unicode())]
    response = [(b"count", amp.Integer())]


class Report(amp.Command):
    """
    Courier to server: C{counts} (JSON C{[[kind, result, n], ...]}) since
    the last report, and C{pending} (JSON C{{kind: n}}) now.
    """

    arguments = [(b"counts", amp.Unicode()), (b"pending", amp.Unicode())]
    response = []
    requiresAnswer = False


class _QuietAMP(amp.AMP):
    """
    L{amp.AMP} without its log lines for every connection made and lost.
    """

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Any = None) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)


class ServerSide(_QuietAMP):
    """
    The server's end: reports go to C{reporter}.
    """

    def __init__(self, reporter: IWebhookReporter) -> None:
        _QuietAMP.__init__(self)
        self._reporter = reporter

    @Report.responder
    def report(self, counts: str, pending: str) -> dict[str, Any]:
        for kind, result, amount in json.loads(counts):
            for _ in range(int(amount)):
                self._reporter.count(kind, result)
        for kind, count in json.loads(pending).items():
            self._reporter.pending(kind, count)
        return {}


class CourierSide(_QuietAMP):
    """
    The courier process's end: hands what comes to C{courier}, and calls
    C{lost} when the server goes away.

    @ivar courier: a L{gopherpost.webhooks.courier.LocalCourier} (set
        before the channel is connected).
    """

    courier: Any = None

    def __init__(self, lost: Callable[[], None]) -> None:
        _QuietAMP.__init__(self)
        self._lost = lost

    def connectionLost(self, reason: Any = None) -> None:
        _QuietAMP.connectionLost(self, reason)
        self._lost()

    @TakeMessages.responder
    def takeMessages(self, messages: str) -> dict[str, Any]:
        taken = []
        for line in messages.splitlines():
            queueId, dateDirectory, received = line.split(" ")
            taken.append((queueId, dateDirectory, float(received)))
        self.courier.takeMessages(taken)
        return {}

    @SkipMessages.responder
    def skipMessages(self, messages: str) -> dict[str, Any]:
        skipped = []
        for line in messages.splitlines():
            queueId, dateDirectory = line.split(" ")
            skipped.append((queueId, dateDirectory))
        self.courier.skipMessages(skipped)
        return {}

    @TakeEvents.responder
    def takeEvents(self, events: str) -> dict[str, Any]:
        records = [EventRecord.fromLine(line.encode("utf-8")) for line in events.splitlines()]
        self.courier.takeEvents(records)
        return {}

    @ListPending.responder
    def listPending(self, offset: int, limit: int, kind: str | None = None) -> Any:
        d = self.courier.listPending(kind, offset, min(limit, MAX_PAGE))
        return d.addCallback(lambda page: {"total": page[0], "items": json.dumps(page[1])})

    @RetryNow.responder
    def retryNow(self, ids: str, kind: str | None = None) -> Any:
        d = self.courier.retryNow(json.loads(ids), kind)
        return d.addCallback(lambda count: {"count": count})

    @Drop.responder
    def drop(self, ids: str, kind: str | None = None) -> Any:
        d = self.courier.drop(json.loads(ids), kind)
        return d.addCallback(lambda count: {"count": count})


@implementer(IWebhookReporter)
class ForwardingReporter:
    """
    The courier's reporter: numbers go to the server in a L{Report} at most
    every L{REPORT_INTERVAL} seconds.

    @param send: C{send(command, **arguments)}, e.g. C{AMP.callRemote}.
    """

    def __init__(self, clock: IReactorTime, send: Callable[..., Any]) -> None:
        self._clock = clock
        self._send = send
        self._counts: dict[tuple[str, str], int] = {}
        self._pending: dict[str, int] = {}
        self._timer: Any = None

    def count(self, kind: str, result: str) -> None:
        self._counts[kind, result] = self._counts.get((kind, result), 0) + 1
        self._soon()

    def pending(self, kind: str, count: int) -> None:
        self._pending[kind] = count
        self._soon()

    def _soon(self) -> None:
        if self._timer is None:
            self._timer = self._clock.callLater(REPORT_INTERVAL, self.flush)

    def flush(self) -> None:
        """
        Send what has changed now.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, {}
        pending, self._pending = self._pending, {}
        if not (counts or pending):
            return
        try:
            self._send(
                Report,
                counts=json.dumps([[k, r, n] for (k, r), n in counts.items()]),
                pending=json.dumps(pending),
            )
        except Exception:
            _log.failure("Could not report webhook numbers to the server")
