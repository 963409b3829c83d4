# -*- test-case-name: tests.test_webhook_dispatcher -*-
"""
The webhooks' schedule: which pending webhook is posted when.

Per webhook URL (a I{lane}): at most C{SMTP_WEBHOOK_CONCURRENCY} requests in
flight, oldest due first.  A 2xx answer settles a webhook; 410 Gone settles
it too (the receiver wants no more of it; logged); anything else (another
4xx, a 5xx, a redirect, no answer, a TLS error, a time-out) is tried again
after C{SMTP_WEBHOOK_RETRY_INITIAL} seconds, doubling up to
C{SMTP_WEBHOOK_RETRY_MAX}, each delay scaled by a random factor in
[0.75, 1] so retries spread out, until C{SMTP_WEBHOOK_LIFETIME} has passed
since the webhook was created; then it expires (logged).  When the receiver
itself seems down (no answer, 5xx, 429), the whole lane pauses on the same
schedule, so a dead receiver gets one request per delay, not one per
webhook; any success resumes it.

Every attempt logs one line::

    webhook=inbound id=0190... attempt=1 status=200 delay=0.052 time=0.004 result=delivered

(C{delay}: since the webhook was created; C{time}: this request.)

Settled webhooks are marked in the L{WebhookStore}; what is pending lives in
memory and is found again at start-up from the spool and the event journal
(see L{records}), so a restart tries every unsettled webhook again at once.
Time comes from the injected clock; requests from an injected poster.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from gopherpost.webhooks.http import PostResult, WebhookTarget
from gopherpost.webhooks.payload import rfc3339
from gopherpost.webhooks.records import INBOUND, EventRecord, WebhookStore, dateOf
from gopherpost.webhooks.signing import signedHeaders

__all__ = [
    "DELIVERED",
    "FAILED",
    "GONE",
    "EXPIRED",
    "DROPPED",
    "RESULTS",
    "SKIPPED",
    "MessageGone",
    "PendingWebhook",
    "IWebhookReporter",
    "WebhookDispatcher",
    "retryDelay",
]

_log = Logger()

#: Results counted in C{smtp_webhook_deliveries_total{result}}: an attempt
#: answered 2xx; an attempt failed (to be retried, or expired); an attempt
#: answered 410 Gone; a webhook gave up after its lifetime; a webhook was
#: dropped (by an operator, or its message left the spool).
DELIVERED = "delivered"
FAILED = "failed"
GONE = "gone"
EXPIRED = "expired"
DROPPED = "dropped"
RESULTS = (DELIVERED, FAILED, GONE, EXPIRED, DROPPED)

#: Settled without a request: the message is out of the webhook's scope
#: (or came before the webhook was turned on).
SKIPPED = "skipped"


class MessageGone(Exception):
    """
    The spooled message of an inbound webhook is no longer there.
    """


def retryDelay(attempts: int, initial: float, maximum: float, randomSource: random.Random) -> float:
    """
    Seconds to wait after the C{attempts}-th failure: C{initial}, doubling
    each time, capped at C{maximum}, scaled by a random factor in [0.75, 1].
    """
    base = min(maximum, initial * (2.0 ** min(64, max(0, attempts - 1))))
    return base * randomSource.uniform(0.75, 1.0)


@dataclass
class PendingWebhook:
    """
    One webhook not yet settled.

    @ivar kind: C{"inbound"} or C{"events"}.
    @ivar id: its C{webhook-id}: the queue id (inbound) or the event id.
    @ivar date: the day of its settled file: the message's date directory,
        or the event's day.
    @ivar created: when the message was received or the event happened.
    @ivar queueId: the message it is about.
    @ivar body: the document (events); L{None} for inbound, whose document
        is built from the spool for each attempt.
    """

    kind: str
    id: str
    date: str
    created: float
    queueId: str
    body: bytes | None = None
    attempts: int = 0
    nextAttempt: float = 0.0
    lastStatus: int | None = None
    lastError: str = ""
    inFlight: bool = False

    def describe(self) -> dict[str, Any]:
        """
        A JSON-able summary, for listings.
        """
        return {
            "kind": self.kind,
            "id": self.id,
            "queue_id": self.queueId,
            "created": rfc3339(self.created),
            "attempts": self.attempts,
            "next_attempt": None if self.inFlight else rfc3339(self.nextAttempt),
            "in_flight": self.inFlight,
            "last_status": self.lastStatus,
            "last_error": self.lastError,
        }


class IWebhookReporter(Interface):
    """
    Told the numbers the webhook metrics show.
    """

    def count(kind: str, result: str) -> None:
        """
        One more C{result} (one of L{RESULTS}) for webhook C{kind}.
        """

    def pending(kind: str, count: int) -> None:
        """
        C{count} webhooks of C{kind} are pending now.
        """


@implementer(IWebhookReporter)
class _SilentReporter:
    def count(self, kind: str, result: str) -> None:
        pass

    def pending(self, kind: str, count: int) -> None:
        pass


@dataclass
class _Lane:
    """
    The schedule of one webhook URL.
    """

    target: WebhookTarget
    inFlight: int = 0
    due: list[tuple[float, int, str]] = field(default_factory=list)
    pausedUntil: float = 0.0
    failures: int = 0
    timer: Any = None


def _pausesLane(result: PostResult) -> bool:
    """
    Whether a failure says the receiver itself is down or overloaded.
    """
    return result.status is None or result.status >= 500 or result.status == 429


class WebhookDispatcher:
    """
    Posts pending webhooks on schedule (see the module's description).

    @param clock: time and timers.
    @param store: where settled webhooks are marked.
    @param targets: the configured webhooks by kind.
    @param poster: C{post(target, headers, body) -> Deferred[PostResult]}
        (a L{gopherpost.webhooks.http.WebhookPoster}).
    @param buildInbound: C{buildInbound(dateDirectory, queueId) ->
        Deferred[bytes]}: the inbound document of a spooled message, failing
        with L{MessageGone} when it is not in the spool any more.
    @param concurrency: requests in flight per webhook URL at most.
    @param retryInitial: seconds before the first retry.
    @param retryMax: the longest delay between attempts.
    @param lifetime: seconds after which a webhook is given up.
    @param reporter: an L{IWebhookReporter} for the metrics.
    @param markInterval: seconds the settled marks are collected before
        they are written together (one C{write(2)} per day's file); C{0}
        writes each at once.  A mark still waiting when the process dies
        only makes its webhook be posted again (at least once).
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: WebhookStore,
        targets: Mapping[str, WebhookTarget],
        poster: Any,
        buildInbound: Callable[[str, str], Deferred[bytes]],
        concurrency: int = 4,
        retryInitial: float = 10.0,
        retryMax: float = 3600.0,
        lifetime: float = 259200.0,
        reporter: IWebhookReporter | None = None,
        randomSource: random.Random | None = None,
        markInterval: float = 0.0,
    ) -> None:
        self._clock = clock
        self._store = store
        self._lanes = {kind: _Lane(target) for kind, target in targets.items()}
        self._poster = poster
        self._buildInbound = buildInbound
        self.concurrency = concurrency
        self.retryInitial = retryInitial
        self.retryMax = retryMax
        self.lifetime = lifetime
        self._reporter = reporter or _SilentReporter()
        self._random = randomSource or random.Random()
        self._items: dict[tuple[str, str], PendingWebhook] = {}
        self._counts: dict[str, int] = dict.fromkeys(self._lanes, 0)
        self._attempts: dict[tuple[str, str], Deferred[Any]] = {}
        #: Settled in this run before start-up recovery was taken in.
        self._settledEarly: set[tuple[str, str]] | None = set()
        self._sequence = 0
        self._stopping = False
        self.markInterval = markInterval
        #: Settled marks not written yet, by kind and day, in order.
        self._marks: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._markTimer: Any = None

    # Taking webhooks on

    def takeMessage(self, queueId: str, dateDirectory: str, received: float) -> None:
        """
        A committed message gets an inbound webhook.
        """
        self._add(PendingWebhook(INBOUND, queueId, dateDirectory, received, queueId))

    def skipMessage(self, queueId: str, dateDirectory: str) -> None:
        """
        A committed message gets no inbound webhook (out of scope): mark it
        so start-up does not consider it again.
        """
        self._mark(INBOUND, dateDirectory, queueId, SKIPPED)

    def takeEvent(self, record: EventRecord) -> None:
        """
        A delivery event (already in the journal) is to be posted.
        """
        self._add(
            PendingWebhook(
                "events", record.id, dateOf(record.time), record.time, record.queueId, record.body
            )
        )

    def recovered(
        self,
        messages: Iterable[tuple[str, str, float]],
        skipped: Iterable[tuple[str, str]],
        events: Iterable[EventRecord],
    ) -> int:
        """
        Take in what start-up found unsettled.

        @param messages: C{(dateDirectory, queueId, received)} of messages
            in scope.
        @param skipped: C{(dateDirectory, queueId)} of messages out of scope.
        @param events: event records.
        @return: how many of them were not known yet.
        """
        early, self._settledEarly = self._settledEarly or set(), None
        before = len(self._items)
        for dateDirectory, queueId in skipped:
            if (INBOUND, queueId) not in early:
                self.skipMessage(queueId, dateDirectory)
        for dateDirectory, queueId, received in messages:
            if (INBOUND, queueId) not in early:
                self.takeMessage(queueId, dateDirectory, received)
        for record in events:
            if ("events", record.id) not in early:
                self.takeEvent(record)
        return len(self._items) - before

    def _add(self, item: PendingWebhook) -> None:
        key = (item.kind, item.id)
        lane = self._lanes.get(item.kind)
        if lane is None or key in self._items or self._stopping:
            return
        now = self._clock.seconds()
        self._items[key] = item
        self._counts[item.kind] += 1
        if now - item.created >= self.lifetime:
            self._giveUp(item, "it was still pending at start-up")
            return
        item.nextAttempt = now
        self._reportPending(item.kind)
        self._push(lane, item)
        self._pump(item.kind)

    # The schedule

    def _push(self, lane: _Lane, item: PendingWebhook) -> None:
        self._sequence += 1
        heapq.heappush(lane.due, (item.nextAttempt, self._sequence, item.id))

    def _wakeAt(self, kind: str, lane: _Lane, when: float) -> None:
        if lane.timer is not None and lane.timer.active():
            if lane.timer.getTime() <= when:
                return
            lane.timer.cancel()
        delay = max(0.0, when - self._clock.seconds())
        lane.timer = self._clock.callLater(delay, self._pump, kind)

    def _pump(self, kind: str) -> None:
        """
        Start every due webhook of C{kind} the concurrency allows.
        """
        lane = self._lanes[kind]
        if self._stopping:
            return
        now = self._clock.seconds()
        while lane.inFlight < self.concurrency and lane.due:
            if now < lane.pausedUntil:
                self._wakeAt(kind, lane, lane.pausedUntil)
                return
            due, _, webhookId = lane.due[0]
            item = self._items.get((kind, webhookId))
            if item is None or item.inFlight or item.nextAttempt != due:
                heapq.heappop(lane.due)  # settled, started, or rescheduled since
                continue
            if due > now:
                self._wakeAt(kind, lane, due)
                return
            heapq.heappop(lane.due)
            self._start(lane, item)

    def _start(self, lane: _Lane, item: PendingWebhook) -> None:
        key = (item.kind, item.id)
        item.inFlight = True
        item.attempts += 1
        lane.inFlight += 1
        started = self._clock.seconds()
        if item.body is not None:
            d: Deferred[Any] = succeed(item.body)
        else:
            d = self._buildInbound(item.date, item.queueId)

        def post(body: bytes) -> Deferred[PostResult]:
            headers = signedHeaders(lane.target.key, item.id, int(self._clock.seconds()), body)
            return self._poster.post(lane.target, headers, body)

        d.addCallback(post)
        self._attempts[key] = d
        d.addBoth(self._attempted, lane, item, started)

    def _attempted(
        self, result: PostResult | Failure, lane: _Lane, item: PendingWebhook, started: float
    ) -> None:
        key = (item.kind, item.id)
        self._attempts.pop(key, None)
        lane.inFlight -= 1
        item.inFlight = False
        if self._stopping:
            return None
        if self._items.get(key) is not item:  # dropped meanwhile
            self._pump(item.kind)
            return None
        if isinstance(result, Failure):
            if result.check(MessageGone):
                _log.error(
                    "webhook={kind} id={id} result=dropped: its message is no longer in the spool",
                    kind=item.kind,
                    id=item.id,
                )
                self._settle(item, DROPPED)
                self._pump(item.kind)
                return None
            _log.failure(
                "webhook={kind} id={id}: could not build the request",
                result,
                kind=item.kind,
                id=item.id,
            )
            result = PostResult(None, f"could not build the request: {result.value}", 0.0)
        now = self._clock.seconds()
        item.lastStatus, item.lastError = result.status, result.error
        status = "-" if result.status is None else str(result.status)
        fields = dict(
            kind=item.kind,
            id=item.id,
            attempt=item.attempts,
            status=status,
            delay=now - item.created,
            time=now - started,
        )
        if result.succeeded:
            _log.info(
                "webhook={kind} id={id} attempt={attempt} status={status} "
                "delay={delay:.3f} time={time:.3f} result=delivered",
                **fields,
            )
            lane.failures, lane.pausedUntil = 0, 0.0
            self._settle(item, DELIVERED)
        elif result.status == 410:
            _log.warn(
                "webhook={kind} id={id} attempt={attempt} status={status} "
                "delay={delay:.3f} time={time:.3f} result=gone: the receiver "
                "answered 410 Gone; not trying again",
                **fields,
            )
            lane.failures, lane.pausedUntil = 0, 0.0
            self._settle(item, GONE)
        else:
            self._failed(lane, item, result, now, fields)
        self._pump(item.kind)
        return None

    def _failed(
        self,
        lane: _Lane,
        item: PendingWebhook,
        result: PostResult,
        now: float,
        fields: dict[str, Any],
    ) -> None:
        self._reporter.count(item.kind, FAILED)
        if _pausesLane(result) and now >= lane.pausedUntil:
            lane.failures += 1
            lane.pausedUntil = now + retryDelay(
                lane.failures, self.retryInitial, self.retryMax, self._random
            )
        if now - item.created >= self.lifetime:
            _log.info(
                "webhook={kind} id={id} attempt={attempt} status={status} "
                "delay={delay:.3f} time={time:.3f} result=failed error={error!r}",
                error=result.error,
                **fields,
            )
            self._giveUp(item, f"last error: {result.error}")
            return
        delay = retryDelay(item.attempts, self.retryInitial, self.retryMax, self._random)
        item.nextAttempt = now + delay
        _log.info(
            "webhook={kind} id={id} attempt={attempt} status={status} "
            "delay={delay:.3f} time={time:.3f} result=failed next={next:.0f}s error={error!r}",
            error=result.error,
            next=delay,
            **fields,
        )
        self._push(lane, item)

    def _giveUp(self, item: PendingWebhook, why: str) -> None:
        _log.warn(
            "webhook={kind} id={id} result=expired attempts={attempts} "
            "delay={delay:.0f}: giving up after SMTP_WEBHOOK_LIFETIME ({lifetime:.0f} s); {why}",
            kind=item.kind,
            id=item.id,
            attempts=item.attempts,
            delay=self._clock.seconds() - item.created,
            lifetime=self.lifetime,
            why=why,
        )
        self._settle(item, EXPIRED)

    def _settle(self, item: PendingWebhook, result: str) -> None:
        if self._items.pop((item.kind, item.id), None) is not None:
            self._counts[item.kind] -= 1
        self._mark(item.kind, item.date, item.id, result)
        self._reporter.count(item.kind, result)
        self._reportPending(item.kind)

    def _mark(self, kind: str, date: str, webhookId: str, outcome: str) -> None:
        if self._settledEarly is not None:
            self._settledEarly.add((kind, webhookId))
        self._marks.setdefault((kind, date), []).append((webhookId, outcome))
        if self.markInterval <= 0:
            self.writeMarks()
        elif self._markTimer is None:
            self._markTimer = self._clock.callLater(self.markInterval, self.writeMarks)

    def writeMarks(self) -> None:
        """
        Write the settled marks collected so far (also done by L{stop}).
        """
        if self._markTimer is not None:
            if self._markTimer.active():
                self._markTimer.cancel()
            self._markTimer = None
        marks, self._marks = self._marks, {}
        for (kind, date), lines in marks.items():
            try:
                self._store.settleMany(kind, date, lines)
            except (OSError, ValueError) as e:
                # Not lost: they are posted again after a restart (at least once).
                _log.error(
                    "webhook={kind}: could not mark {count} webhooks of {date} settled "
                    "({ids}): {error}",
                    kind=kind,
                    count=len(lines),
                    date=date,
                    ids=" ".join(webhookId for webhookId, _ in lines[:10])
                    + (" ..." if len(lines) > 10 else ""),
                    error=e,
                )

    def _reportPending(self, kind: str) -> None:
        self._reporter.pending(kind, self.pendingCount(kind))

    # Operations (for gopherpostctl webhook list|retry|drop)

    def pendingCount(self, kind: str) -> int:
        """
        How many webhooks of C{kind} are pending.
        """
        return self._counts.get(kind, 0)

    def pending(self, kind: str | None = None) -> list[PendingWebhook]:
        """
        The pending webhooks (of C{kind}, or all), oldest first.
        """
        found = [i for i in self._items.values() if kind is None or i.kind == kind]
        return sorted(found, key=lambda i: (i.created, i.id))

    def _matching(self, ids: Sequence[str] | None, kind: str | None) -> list[PendingWebhook]:
        if ids is None:
            return self.pending(kind)
        wanted = set(ids)
        return [i for i in self.pending(kind) if i.id in wanted]

    def retryNow(self, ids: Sequence[str] | None = None, kind: str | None = None) -> int:
        """
        Try these webhooks (default: every one of C{kind}, or all) now,
        whatever their schedule, and lift any pause of their lanes.

        @return: how many will be tried (those in flight already are not
            counted).
        """
        now = self._clock.seconds()
        count = 0
        kinds = set()
        for item in self._matching(ids, kind):
            if item.inFlight:
                continue
            item.nextAttempt = now
            lane = self._lanes[item.kind]
            lane.pausedUntil = 0.0
            self._push(lane, item)
            kinds.add(item.kind)
            count += 1
        for k in kinds:
            self._pump(k)
        return count

    def drop(self, ids: Sequence[str], kind: str | None = None) -> int:
        """
        Give these webhooks up now (a request in flight is cancelled).

        @return: how many were dropped.
        """
        dropped = self._matching(list(ids), kind)
        for item in dropped:
            _log.info(
                "webhook={kind} id={id} result=dropped by request after {attempts} attempts",
                kind=item.kind,
                id=item.id,
                attempts=item.attempts,
            )
            self._settle(item, DROPPED)
        for item in dropped:
            attempt = self._attempts.get((item.kind, item.id))
            if attempt is not None:
                attempt.cancel()
        return len(dropped)

    def stop(self) -> Deferred[Any]:
        """
        Stop: cancel the requests in flight (they stay pending, to be tried
        again at the next start) and every timer.
        """
        self._stopping = True
        self.writeMarks()
        for lane in self._lanes.values():
            if lane.timer is not None and lane.timer.active():
                lane.timer.cancel()
        attempts = list(self._attempts.values())
        for attempt in attempts:
            attempt.cancel()
        return DeferredList(attempts, consumeErrors=True)
