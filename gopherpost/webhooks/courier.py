# -*- test-case-name: tests.test_webhook_courier -*-
"""
The courier: everything that delivers webhooks, as one service.  It runs in
a child process of its own (L{gopherpost.webhooks.process}), at a lower CPU
priority than SMTP, so that parsing messages and HTTP never take time from
accepting mail; tests also run it in-process.

At start it takes in what is unsettled (L{findUnsettled}: the spool's
envelopes since the inbound webhook was turned on, the event journal),
gives up what is past its lifetime, and deletes the files of days long
past (L{prune}); then the L{WebhookDispatcher} posts, and new webhooks come
from L{takeMessages} and L{takeEvents}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.config import Settings
from gopherpost.durable import readFile
from gopherpost.webhooks.dispatcher import (
    IWebhookReporter,
    MessageGone,
    PendingWebhook,
    WebhookDispatcher,
)
from gopherpost.webhooks.http import WebhookPoster, WebhookTarget
from gopherpost.webhooks.payload import encode, inboundPayload, inScope
from gopherpost.webhooks.records import (
    EVENTS,
    INBOUND,
    KINDS,
    EventRecord,
    WebhookStore,
    dateOf,
    startOfDate,
    unsettledMessages,
)
from gopherpost.webhooks.signing import parseSecret

__all__ = [
    "BatchedBuilder",
    "LocalCourier",
    "Unsettled",
    "buildInboundDocument",
    "findUnsettled",
    "prune",
    "targetsFromSettings",
    "PRUNE_INTERVAL",
    "BUILD_BATCH",
]

_log = Logger()

#: Seconds between two runs of L{prune}.
PRUNE_INTERVAL = 6 * 3600.0
#: Days of settled marks kept beyond the lifetime and the longest delay.
_KEEP_EXTRA = 86400.0
#: Inbound documents built in one thread hop at most.
BUILD_BATCH = 64
#: Seconds the courier collects settled marks before writing them (see
#: L{records}).
MARK_INTERVAL = 0.5


def targetsFromSettings(settings: Settings) -> dict[str, WebhookTarget]:
    """
    The configured webhooks by kind.
    """
    targets = {}
    if settings.webhookURL and settings.webhookSecret:
        targets[INBOUND] = WebhookTarget.fromSetting(
            INBOUND, settings.webhookURL, parseSecret(settings.webhookSecret)
        )
    eventsSecret = settings.eventsWebhookSecret or settings.webhookSecret
    if settings.eventsWebhookURL and eventsSecret:
        targets[EVENTS] = WebhookTarget.fromSetting(
            EVENTS, settings.eventsWebhookURL, parseSecret(eventsSecret)
        )
    return targets


def buildInboundDocument(spool: Any, dateDirectory: str, queueId: str, settings: Settings) -> bytes:
    """
    The inbound webhook's body for a spooled message (blocking: in a
    thread).  The spool's files are read without touching their access
    time (L{gopherpost.durable.readFile}): the SMTP side's next sync then
    has no inode of ours to write.

    @raise MessageGone: the message is not in the spool any more.
    """
    try:
        envelope = spool.envelopeIn(dateDirectory, queueId)
        content = readFile(spool.messagePath(envelope))
    except FileNotFoundError:
        raise MessageGone(queueId) from None
    document = inboundPayload(
        envelope,
        content,
        allRecipients=settings.webhookScope == "all",
        maxInline=settings.webhookMaxInline,
        includeRaw=settings.webhookRaw,
    )
    return encode(document)


def _buildEach(
    build: Callable[[str, str], bytes], requests: Sequence[tuple[str, str]]
) -> list[bytes | Failure]:
    """
    C{build} for each request, its failures as values (in a thread).
    """
    results: list[bytes | Failure] = []
    for dateDirectory, queueId in requests:
        try:
            results.append(build(dateDirectory, queueId))
        except Exception:
            results.append(Failure())
    return results


class BatchedBuilder:
    """
    Builds documents in a thread, every request waiting at the moment in
    one hop (at most L{BUILD_BATCH}), one batch at a time.  A thread hop
    (a queue put, a wake-up of the reactor, the GIL passed to and fro) costs
    about as much as building a small message's document; while one batch
    is built the requests pile up for the next, so under load the hops are
    shared.

    @param runInThread: C{runInThread(f, *args) -> Deferred}.
    @param build: C{build(dateDirectory, queueId) -> bytes}, blocking.
    """

    def __init__(
        self,
        runInThread: Callable[..., Deferred[Any]],
        build: Callable[[str, str], bytes],
        limit: int = BUILD_BATCH,
    ) -> None:
        self._runInThread = runInThread
        self._build = build
        self._limit = limit
        self._waiting: list[tuple[str, str, Deferred[bytes]]] = []
        self._running = False

    def __call__(self, dateDirectory: str, queueId: str) -> Deferred[bytes]:
        """
        The document of one message, built soon.  Cancelling the
        L{Deferred} drops the request (or ignores its result).
        """
        d: Deferred[bytes] = Deferred()
        self._waiting.append((dateDirectory, queueId, d))
        if not self._running:
            self._next()
        return d

    def _next(self) -> None:
        # Cancelled requests are left out.
        waiting = [w for w in self._waiting if not w[2].called]
        batch, self._waiting = waiting[: self._limit], waiting[self._limit :]
        if not batch:
            self._running = False
            return
        self._running = True
        try:
            d = self._runInThread(_buildEach, self._build, [(w[0], w[1]) for w in batch])
        except Exception:
            d = fail()

        def built(results: list[bytes | Failure] | Failure) -> None:
            for index, (_, _, waiter) in enumerate(batch):
                if waiter.called:
                    continue
                result = results if isinstance(results, Failure) else results[index]
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
            self._next()

        d.addBoth(built)


@dataclass
class Unsettled:
    """
    What start-up found still owing a webhook.

    @ivar messages: C{(dateDirectory, queueId, received)} in scope.
    @ivar skipped: C{(dateDirectory, queueId)} out of scope (or from
        before the webhook was on): to be marked.
    @ivar events: event records.
    """

    messages: list[tuple[str, str, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)


def findUnsettled(spool: Any, store: WebhookStore, kinds: Sequence[str], scope: str) -> Unsettled:
    """
    Every webhook not settled yet (blocking: in a thread).

    @param kinds: the webhooks that are on.
    @param scope: C{SMTP_WEBHOOK_SCOPE}.
    """
    found = Unsettled()
    since = store.since()
    if INBOUND in kinds and since is not None:
        for dateDirectory, queueId in unsettledMessages(spool, store, since):
            try:
                envelope = spool.envelopeIn(dateDirectory, queueId)
            except (OSError, ValueError, TypeError, KeyError):
                continue  # gone meanwhile, or unreadable (the spool logs those)
            if envelope.received < since or not inScope(envelope, scope):
                found.skipped.append((dateDirectory, queueId))
            else:
                found.messages.append((dateDirectory, queueId, envelope.received))
    if EVENTS in kinds:
        for date in store.dates(EVENTS):
            settled = store.settled(EVENTS, date)
            found.events.extend(r for r in store.events(date) if r.id not in settled)
    return found


def prune(store: WebhookStore, now: float, keep: float) -> list[str]:
    """
    Delete the files of days that ended more than C{keep} seconds ago
    (blocking: in a thread), first moving the inbound webhook's C{since}
    past them, so that start-up never looks at those days again.

    @return: the days pruned, as C{"kind/date"}.
    """
    cutoff = dateOf(now - keep)
    since = store.since()
    if since is not None and since < startOfDate(cutoff):
        store.setSince(startOfDate(cutoff))
    pruned = []
    for kind in KINDS:
        for date in store.dates(kind):
            if date < cutoff:
                store.prune(kind, date)
                pruned.append(f"{kind}/{date}")
    return pruned


class LocalCourier(Service):
    """
    Delivers webhooks in this process.

    @param settings: the webhook settings.
    @param spool: the spool (read only: envelopes and messages).
    @param reactor: time, TCP and the thread pool.
    @param store: the webhooks' files.
    @param reporter: gets the metrics' numbers.
    @param poster: makes the requests (default: a L{WebhookPoster}).
    @param runInThread: C{runInThread(f, *args) -> Deferred}; default the
        reactor's thread pool.
    """

    name = "webhook-courier"

    def __init__(
        self,
        settings: Settings,
        spool: Any,
        reactor: Any,
        store: WebhookStore,
        reporter: IWebhookReporter | None = None,
        poster: Any = None,
        runInThread: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self._spool = spool
        self._reactor = reactor
        self._store = store
        if runInThread is None:

            def runInThread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
                return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

        self._runInThread = runInThread
        self._builder = BatchedBuilder(runInThread, self._buildOne)
        self.targets = targetsFromSettings(settings)
        self.poster = poster or WebhookPoster(
            reactor, settings.webhookTimeout, settings.webhookConcurrency
        )
        self.dispatcher = WebhookDispatcher(
            reactor,
            store,
            self.targets,
            self.poster,
            self._buildInbound,
            concurrency=settings.webhookConcurrency,
            retryInitial=settings.webhookRetryInitial,
            retryMax=settings.webhookRetryMax,
            lifetime=settings.webhookLifetime,
            reporter=reporter,
            markInterval=MARK_INTERVAL,
        )
        self._pruning = LoopingCall(self._prune)
        self._pruning.clock = reactor
        self.recovered: Deferred[None] = Deferred()

    def _buildOne(self, dateDirectory: str, queueId: str) -> bytes:
        return buildInboundDocument(self._spool, dateDirectory, queueId, self.settings)

    def _buildInbound(self, dateDirectory: str, queueId: str) -> Deferred[bytes]:
        return self._builder(dateDirectory, queueId)

    def startService(self) -> None:
        """
        Open the files, take in what is unsettled (in a thread), then prune
        now and every L{PRUNE_INTERVAL} seconds.
        """
        Service.startService(self)
        self._store.open()
        d = self._runInThread(
            findUnsettled, self._spool, self._store, list(self.targets), self.settings.webhookScope
        )

        def found(unsettled: Unsettled) -> None:
            added = self.dispatcher.recovered(
                unsettled.messages, unsettled.skipped, unsettled.events
            )
            _log.info("Webhooks ready: {count} pending from before the start", count=added)
            if self.running:
                self._pruning.start(PRUNE_INTERVAL, now=True)

        def failed(failure: Failure) -> None:
            _log.failure("Could not read the pending webhooks", failure)
            self.dispatcher.recovered([], [], [])

        d.addCallbacks(found, failed)
        d.addBoth(lambda _: self.recovered.callback(None))

    def _prune(self) -> Deferred[Any]:
        keep = self.settings.webhookLifetime + self.settings.webhookRetryMax + _KEEP_EXTRA
        d = self._runInThread(prune, self._store, self._reactor.seconds(), keep)
        d.addErrback(lambda f: _log.failure("Could not prune old webhook records", f))
        return d

    def stopService(self) -> Deferred[Any]:
        """
        Cancel the requests in flight (they are tried again at the next
        start) and close the connections and files.
        """
        Service.stopService(self)
        if self._pruning.running:
            self._pruning.stop()
        d = self.dispatcher.stop()
        d.addBoth(lambda _: self.poster.close())
        d.addBoth(lambda _: self._store.close())
        return d

    # What the server hands over

    def takeMessages(self, messages: Sequence[tuple[str, str, float]]) -> None:
        """
        Committed messages in scope: C{(queueId, dateDirectory, received)}.
        """
        for queueId, dateDirectory, received in messages:
            self.dispatcher.takeMessage(queueId, dateDirectory, received)

    def skipMessages(self, messages: Sequence[tuple[str, str]]) -> None:
        """
        Committed messages out of scope: C{(queueId, dateDirectory)}.
        """
        for queueId, dateDirectory in messages:
            self.dispatcher.skipMessage(queueId, dateDirectory)

    def takeEvents(self, records: Sequence[EventRecord]) -> None:
        """
        Delivery events recorded in the journal.
        """
        for record in records:
            self.dispatcher.takeEvent(record)

    # Operations

    def listPending(
        self, kind: str | None = None, offset: int = 0, limit: int = 100
    ) -> Deferred[tuple[int, list[dict[str, Any]]]]:
        """
        The pending webhooks, oldest first: C{(total, page)}.
        """
        items: list[PendingWebhook] = self.dispatcher.pending(kind)
        page = [i.describe() for i in items[offset : offset + limit]]
        return succeed((len(items), page))

    def retryNow(self, ids: Sequence[str] | None = None, kind: str | None = None) -> Deferred[int]:
        """
        Try these pending webhooks (default all) now.
        """
        return succeed(self.dispatcher.retryNow(ids, kind))

    def drop(self, ids: Sequence[str], kind: str | None = None) -> Deferred[int]:
        """
        Give these pending webhooks up.
        """
        return succeed(self.dispatcher.drop(ids, kind))
