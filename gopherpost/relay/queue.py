# -*- test-case-name: tests.test_queue -*-
"""
The outbound queue: every spooled recipient outside our local domains is
delivered to its domain's mail exchangers, retried with capped exponential
backoff and jitter, and bounced to the sender when it finally fails.

The queue is the spool: its state is L{gopherpost.relay.state} files beside
the messages, saved after every attempt, and found again at start-up.  All
protocol work is Deferred-driven on the reactor; only file I/O, DKIM signing
and DNS run in threads.  Time comes from the injected reactor, so tests
drive it with a clock.

Work is grouped by destination (MX domain, or the smarthost): the
recipients of one message for one destination go in one transaction, and one
connection carries up to L{BATCH_SIZE} messages to the same destination.
At most C{SMTP_QUEUE_WORKERS} deliveries run at once, and at most
C{SMTP_DESTINATION_CONCURRENCY} to one destination.
"""

from __future__ import annotations

import os
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    inlineCallbacks,
    maybeDeferred,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.config import Settings
from gopherpost.dns import PermanentDNSError, TemporaryDNSError
from gopherpost.interfaces import IAuditLog, ISpoolObserver
from gopherpost.relay import client as _client
from gopherpost.relay import dsn
from gopherpost.relay.state import (
    DELIVERED,
    FAILED,
    PENDING,
    MessageState,
    RecipientState,
    StateStore,
)
from gopherpost.spool import Envelope, Spool

__all__ = [
    "RelayQueue",
    "retryDelay",
    "makeRelayService",
    "BATCH_SIZE",
    "MAX_CONNECTIONS_PER_ATTEMPT",
]

_log = Logger()

#: Messages sent over one connection at most.
BATCH_SIZE = 20
#: Connections tried for one attempt at most (hosts x addresses).
MAX_CONNECTIONS_PER_ATTEMPT = 6
#: Bytes of message content one batch reads on the reactor thread at most;
#: larger messages are read in the thread pool.  A thread hop costs more
#: than reading a few small files from the page cache.
INLINE_READ_BUDGET = 1024 * 1024


def retryDelay(attempts: int, initial: float, maximum: float, randomSource: random.Random) -> float:
    """
    Seconds to wait after the C{attempts}-th failed attempt: C{initial},
    doubling each time, capped at C{maximum}, scaled by a random factor in
    [0.75, 1] so that retries of many messages spread out.
    """
    base = min(maximum, initial * (2.0 ** max(0, attempts - 1)))
    return base * randomSource.uniform(0.75, 1.0)


def _domainOf(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".").lower()


class _Work:
    """
    One message's recipients for one destination in one attempt.
    """

    def __init__(self, state: MessageState, recipients: list[RecipientState]) -> None:
        self.state = state
        self.recipients = recipients
        self.content = b""
        self.remaining: dict[str, RecipientState] = {r.address: r for r in recipients}
        self.lastError = ""
        self.lastHost = ""


@implementer(ISpoolObserver)
class RelayQueue(Service):
    """
    Delivers spooled mail for remote recipients.

    @param settings: hostname, TLS policy, retry schedule, concurrency.
    @param spool: where messages and their state live.
    @param audit: delivery events go here.
    @param destinations: an L{gopherpost.relay.mx.IDestinationResolver}.
    @param reactor: provides time and TCP (and a thread pool unless
        C{runInThread} is given).
    @param signer: a L{gopherpost.dkim.DKIMSigner}, or L{None}.
    @param deliverMany: the SMTP client (L{gopherpost.relay.client.deliverMany}).
    @param bounce: C{bounce(state, content, failures) -> Deferred} sends
        the delivery status notification; the default builds an RFC 3464
        report and spools it.
    """

    name = "relay"

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        audit: IAuditLog,
        destinations: Any,
        reactor: Any,
        signer: Any = None,
        deliverMany: Callable[..., Deferred] = _client.deliverMany,
        randomSource: random.Random | None = None,
        runInThread: Callable[..., Deferred] | None = None,
        contextFactoryFor: Callable[..., Any] | None = None,
    ) -> None:
        self._settings = settings
        self._spool = spool
        self._audit = audit
        self._destinations = destinations
        self._reactor = reactor
        self._signer = signer
        self._deliverMany = deliverMany
        self._random = randomSource or random.Random()
        if runInThread is None:

            def runInThread(f: Callable[..., Any], *args: Any) -> Deferred:
                return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

        self._runInThread = runInThread
        self._contextFactoryFor = contextFactoryFor
        self._store = StateStore(spool.path)
        self._messages: dict[str, MessageState] = {}
        self._timers: dict[str, Any] = {}
        #: destination key -> queue id -> recipients due now
        self._due: dict[str, OrderedDict[str, list[RecipientState]]] = {}
        self._domains: dict[str, str] = {}
        self._inFlight: set[tuple[str, str]] = set()
        self._active = 0
        self._activePerDestination: Counter = Counter()
        self._tasks: set[Deferred] = set()
        self._stopping = False
        self._pumpCall: Any = None
        #: queue id -> (date directory, envelope if known) of messages
        #: spooled but not yet taken on
        self._arriving: dict[str, tuple[str, Envelope | None]] = {}
        #: queue ids of messages being read
        self._reading: set[str] = set()
        self._arrivalCall: Any = None

    # Service

    def startService(self) -> None:
        """
        Find every undelivered recipient in the spool and schedule it.
        """
        Service.startService(self)
        self._stopping = False
        recovered = 0
        for envelope in self._spool.envelopes():
            if not envelope.relayRecipients:
                continue
            if self._store.isFinished(envelope.dateDirectory, envelope.queueId):
                continue
            state = self._store.load(envelope.dateDirectory, envelope.queueId)
            if state is None:
                # Spooled, but the crash came before the relay saved its
                # state: start it as new.
                self.messageSpooled(envelope.queueId, envelope.dateDirectory, envelope)
                continue
            if not state.done:
                self._register(state)
                recovered += 1
        if recovered:
            _log.info("Relay queue recovered {count} messages from the spool", count=recovered)

    def stopService(self) -> Deferred:
        """
        Cancel timers and deliveries in flight (their recipients stay
        pending), and wait for state writes to finish.
        """
        Service.stopService(self)
        self._stopping = True
        for timer in list(self._timers.values()) + [self._pumpCall, self._arrivalCall]:
            if timer is not None and timer.active():
                timer.cancel()
        self._timers.clear()
        self._pumpCall = None
        self._arrivalCall = None
        self._arriving.clear()
        self._reading.clear()
        self._due.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return DeferredList(tasks, consumeErrors=True).addCallback(lambda _: None)

    # ISpoolObserver

    def messageCommitted(self, envelope: Envelope) -> None:
        """
        A message is in the spool: take on its remote recipients, if any.
        """
        if envelope.relayRecipients:
            self.messageSpooled(envelope.queueId, envelope.dateDirectory, envelope)

    def messageSpooled(
        self, queueId: str, dateDirectory: str, envelope: Envelope | None = None
    ) -> None:
        """
        Take on a newly spooled message: sign it once and schedule it now.

        Messages spooled in the same reactor turn (one group commit) are
        taken on together (read, or signed in one thread hop) and become due
        together, so that they can share connections.
        """
        if (
            queueId in self._messages
            or queueId in self._arriving
            or queueId in self._reading
            or self._stopping
        ):
            return
        self._arriving[queueId] = (dateDirectory, envelope)
        if self._arrivalCall is None:
            self._arrivalCall = self._reactor.callLater(0, self._takeArrivals)

    def _takeArrivals(self) -> None:
        self._arrivalCall = None
        arrivals = list(self._arriving.items())
        self._arriving.clear()
        self._reading.update(queueId for queueId, _ in arrivals)
        now = self._reactor.seconds()

        def prepare() -> list[tuple[str, object]]:
            prepared: list[tuple[str, object]] = []
            for queueId, (dateDirectory, envelope) in arrivals:
                try:
                    if envelope is None:
                        envelope = self._spool.envelopeIn(dateDirectory, queueId)
                    if not envelope.relayRecipients:
                        prepared.append((queueId, None))
                        continue
                    state = MessageState.forEnvelope(envelope, now)
                    if self._signer is not None:
                        state.dkimHeader = self._dkimHeader(envelope)
                except Exception:
                    prepared.append((queueId, Failure()))
                    continue
                # Not saved yet: until the first attempt, "no state file"
                # means exactly this, and start-up rebuilds it.
                prepared.append((queueId, state))
            return prepared

        def registered(prepared: list[tuple[str, object]]) -> None:
            for queueId, outcome in prepared:
                self._reading.discard(queueId)
                if isinstance(outcome, Failure):
                    _log.failure("Could not queue {queueId} for relay", outcome, queueId=queueId)
                elif isinstance(outcome, MessageState) and not self._stopping:
                    self._audit.emit(
                        "delivery.queued", queueId=queueId, recipients=len(outcome.recipients)
                    )
                    self._register(outcome)

        def failed(failure: Failure) -> None:
            for queueId, _ in arrivals:
                self._reading.discard(queueId)
            if not failure.check(CancelledError):
                _log.failure(
                    "Could not queue {count} messages for relay", failure, count=len(arrivals)
                )

        # Reading a few small envelopes costs less than a thread hop; DKIM
        # signing (an RSA signature over each message) goes to the pool.
        d = maybeDeferred(prepare) if self._signer is None else self._runInThread(prepare)
        d.addCallbacks(registered, failed)
        self._track(d)

    def _dkimHeader(self, envelope: Envelope) -> str:
        with open(self._spool.messagePath(envelope), "rb") as f:
            content = f.read()
        try:
            signed = self._signer.sign(content, _domainOf(envelope.sender) or None)
        except Exception as e:
            _log.error(
                "DKIM signing of {queueId} failed, sending unsigned: {error}",
                queueId=envelope.queueId,
                error=e,
            )
            return ""
        if not signed.endswith(content):
            return ""
        return signed[: len(signed) - len(content)].decode("ascii")

    def queueDepth(self) -> int:
        """
        Messages with at least one recipient still to deliver.
        """
        return len(self._messages)

    # Scheduling

    def _track(self, d: Deferred) -> Deferred:
        self._tasks.add(d)

        def untrack(result: object) -> object:
            self._tasks.discard(d)
            return result

        return d.addBoth(untrack)

    def _register(self, state: MessageState) -> None:
        self._messages[state.queueId] = state
        self._schedule(state)

    def _schedule(self, state: MessageState) -> None:
        timer = self._timers.pop(state.queueId, None)
        if timer is not None and timer.active():
            timer.cancel()
        waiting = [r for r in state.pending if (state.queueId, r.address) not in self._inFlight]
        if not waiting or self._stopping:
            return
        delay = max(0.0, min(r.nextAttempt for r in waiting) - self._reactor.seconds())
        self._timers[state.queueId] = self._reactor.callLater(delay, self._wake, state.queueId)

    def _wake(self, queueId: str) -> None:
        self._timers.pop(queueId, None)
        state = self._messages.get(queueId)
        if state is None:
            return
        now = self._reactor.seconds()
        for recipient in state.pending:
            if recipient.nextAttempt > now or (queueId, recipient.address) in self._inFlight:
                continue
            domain = _domainOf(recipient.address)
            key = self._destinations.destinationKey(domain)
            self._domains.setdefault(key, domain)
            self._due.setdefault(key, OrderedDict()).setdefault(queueId, []).append(recipient)
            self._inFlight.add((queueId, recipient.address))
        self._schedule(state)
        self._pumpSoon()

    def _pumpSoon(self) -> None:
        """
        Start due work at the end of this reactor turn, so that everything
        that became due together can share connections.
        """
        if self._pumpCall is None and not self._stopping:
            self._pumpCall = self._reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        self._pumpCall = None
        for key in list(self._due):
            due = self._due[key]
            while (
                due
                and self._active < self._settings.queueWorkers
                and self._activePerDestination[key] < self._settings.destinationConcurrency
            ):
                batch = []
                while due and len(batch) < BATCH_SIZE:
                    queueId, recipients = due.popitem(last=False)
                    state = self._messages.get(queueId)
                    if state is not None:
                        batch.append(_Work(state, recipients))
                if not batch:
                    break
                self._active += 1
                self._activePerDestination[key] += 1
                d = self._deliverBatch(self._domains[key], batch)
                d.addErrback(lambda f: f.trap(CancelledError) and None)
                d.addErrback(self._batchFailed, batch)
                d.addBoth(self._batchFinished, key, batch)
                self._track(d)
            if not due:
                self._due.pop(key, None)

    def _batchFailed(self, failure: Any, batch: list[_Work]) -> None:
        """
        Something unexpected went wrong (a spool file gone, a bug): log it
        and back off like a temporary failure, never retry in a loop.
        """
        _log.failure("Relay batch failed", failure)
        now = self._reactor.seconds()
        for work in batch:
            for recipient in work.recipients:
                if recipient.status == PENDING:
                    recipient.lastError = f"4.3.0 Local error: {failure.getErrorMessage()}"
                    recipient.nextAttempt = now + retryDelay(
                        max(1, recipient.attempts),
                        self._settings.retryInitial,
                        self._settings.retryMax,
                        self._random,
                    )

    def _batchFinished(self, result: object, key: str, batch: list[_Work]) -> None:
        self._active -= 1
        self._activePerDestination[key] -= 1
        if self._activePerDestination[key] <= 0:
            del self._activePerDestination[key]
        for work in batch:
            for recipient in work.recipients:
                self._inFlight.discard((work.state.queueId, recipient.address))
            if work.state.done:
                self._messages.pop(work.state.queueId, None)
            elif not self._stopping:
                self._schedule(work.state)
        if not self._stopping:
            self._pumpSoon()

    # Delivery

    @inlineCallbacks
    def _deliverBatch(self, domain: str, batch: list[_Work]):
        settings = self._settings
        paths = []
        for work in batch:
            for recipient in work.recipients:
                recipient.attempts += 1
            state = work.state
            paths.append(
                self._spool.contentPath(
                    state.dateDirectory, state.queueId, state.recipients[0].token
                )
            )
        contents = _readSmall(paths, INLINE_READ_BUDGET)
        large = [path for path, content in zip(paths, contents) if content is None]
        if large:
            read = iter((yield self._runInThread(_readAll, large)))
            contents = [next(read) if content is None else content for content in contents]
        for work, content in zip(batch, contents):
            work.content = work.state.dkimHeader.encode("ascii") + content
        try:
            exchanges = yield self._destinations.resolveDestination(domain)
        except PermanentDNSError as e:
            for work in batch:
                for recipient in list(work.remaining.values()):
                    self._final(work, recipient, FAILED, f"{getattr(e, 'status', '5.4.4')} {e}", "")
            yield self._finish(batch)
            return
        except TemporaryDNSError as e:
            for work in batch:
                work.lastError = f"{getattr(e, 'status', '4.4.3')} {e}"
            yield self._finish(batch)
            return

        connections = 0
        for exchange in exchanges:
            if connections >= MAX_CONNECTIONS_PER_ATTEMPT or not self._remaining(batch):
                break
            try:
                addresses = yield self._destinations.resolveHostAddresses(exchange.hostname)
            except (PermanentDNSError, TemporaryDNSError) as e:
                for work in batch:
                    work.lastError = f"4.4.3 {exchange.hostname}: {e}"
                continue
            for address in addresses[:2]:
                active = [w for w in batch if w.remaining]
                if not active or connections >= MAX_CONNECTIONS_PER_ATTEMPT:
                    break
                connections += 1
                for work in active:
                    self._audit.emit(
                        "delivery.attempt", queueId=work.state.queueId, mx=exchange.hostname
                    )
                kwargs = {}
                if self._contextFactoryFor is not None:
                    kwargs["contextFactoryFor"] = self._contextFactoryFor
                results = yield self._deliverMany(
                    self._reactor,
                    exchange.hostname,
                    address,
                    self._destinations.port,
                    settings.hostname,
                    [
                        _client.Envelope(w.state.sender, tuple(w.remaining), w.content)
                        for w in active
                    ],
                    settings.outboundTLS,
                    settings.outboundTimeoutScale,
                    **kwargs,
                )
                for work, result in zip(active, results):
                    self._record(work, exchange.hostname, result)
        yield self._finish(batch)

    @staticmethod
    def _remaining(batch: list[_Work]) -> bool:
        return any(w.remaining for w in batch)

    def _record(self, work: _Work, host: str, result: Any) -> None:
        """
        Apply one host's per-recipient outcomes to C{work}.
        """
        sent: list[str] = []
        for outcome in result.outcomes:
            recipient = work.remaining.get(outcome.recipient)
            if recipient is None:
                continue
            reply = f"{outcome.code} {outcome.enhancedCode} {outcome.text}".strip()
            if outcome.status == _client.SENT:
                self._final(work, recipient, DELIVERED, reply, host)
                sent.append(outcome.recipient)
            elif outcome.status == _client.FAILED:
                self._final(work, recipient, FAILED, reply, host)
            else:
                work.lastError, work.lastHost = reply, host
        if sent:
            self._audit.emit(
                "delivery.success",
                queueId=work.state.queueId,
                mx=host,
                reply=self._replyOf(result, sent[0]),
                recipients=len(sent),
                latency=self._reactor.seconds() - work.state.received,
            )

    @staticmethod
    def _replyOf(result: Any, recipient: str) -> str:
        outcome = result.outcomeFor(recipient)
        return f"{outcome.code} {outcome.enhancedCode} {outcome.text}".strip()

    def _final(
        self, work: _Work, recipient: RecipientState, status: str, reply: str, host: str
    ) -> None:
        recipient.status = status
        recipient.lastError = "" if status == DELIVERED else reply
        recipient.lastHost = host
        work.remaining.pop(recipient.address, None)
        if status == FAILED:
            self._audit.emit("delivery.failure", queueId=work.state.queueId, mx=host, reply=reply)

    def _finish(self, batch: list[_Work]) -> Deferred:
        """
        Defer or expire what is left, save every state, send bounces.
        """
        now = self._reactor.seconds()
        settings = self._settings
        bounces = []
        for work in batch:
            failedBefore = {r.address for r in work.state.recipients if r.status == FAILED} - {
                r.address for r in work.recipients
            }
            expired = now - work.state.received >= settings.queueLifetime
            for recipient in list(work.remaining.values()):
                error = work.lastError or "4.4.1 No answer from any mail exchanger"
                if expired:
                    self._final(
                        work,
                        recipient,
                        FAILED,
                        f"5.4.7 Delivery time expired; last error: {error}",
                        work.lastHost,
                    )
                    continue
                recipient.lastError, recipient.lastHost = error, work.lastHost
                recipient.nextAttempt = now + retryDelay(
                    recipient.attempts, settings.retryInitial, settings.retryMax, self._random
                )
                self._audit.emit(
                    "delivery.deferral",
                    queueId=work.state.queueId,
                    mx=work.lastHost,
                    reply=error,
                )
            newlyFailed = [
                r for r in work.recipients if r.status == FAILED and r.address not in failedBefore
            ]
            if newlyFailed and dsn.shouldBounce(work.state.sender):
                bounces.append((work.state, work.content, newlyFailed))
        # Small, unsynced writes: on the reactor thread (see relay.state).
        d = maybeDeferred(self._saveAll, [w.state for w in batch])
        for state, content, failures in bounces:
            d.addCallback(lambda _, s=state, c=content, f=failures: self._bounce(s, c, f))
        return d

    def _saveAll(self, states: Sequence[MessageState]) -> None:
        self._store.saveAll(states)

    def _bounce(
        self, state: MessageState, content: bytes, failures: list[RecipientState]
    ) -> Deferred:
        """
        Tell the sender about final failures with an RFC 3464 report.
        """
        report = dsn.buildDSN(
            reportingMTA=self._settings.hostname,
            originalSender=state.sender,
            failures=[
                dsn.RecipientFailure(
                    recipient=r.address,
                    status=_statusOf(r.lastError),
                    reason=r.lastError,
                    diagnosticCode=_diagnosticOf(r.lastError),
                    remoteMTA=r.lastHost or None,
                )
                for r in failures
            ],
            originalMessage=content,
            arrivalDate=state.received,
            now=self._reactor.seconds(),
            queueId=state.queueId,
        )
        senderLocal = self._settings.isLocalDomain(_domainOf(state.sender))
        d = self._spool.store(report, "", [(state.sender, senderLocal)])

        def stored(envelope: Envelope) -> None:
            _log.info(
                "Bounced {count} recipients of {queueId} to the sender as {bounceId}",
                count=len(failures),
                queueId=state.queueId,
                bounceId=envelope.queueId,
            )

        # The spool tells its observers (this queue among them) of the
        # bounce: its remote recipient is taken on from there.
        d.addCallback(stored)
        d.addErrback(
            lambda f: _log.failure(
                "Could not store a bounce for {queueId}", f, queueId=state.queueId
            )
        )
        return d


def _readSmall(paths: Sequence[str], budget: int) -> list[bytes | None]:
    """
    Read spool files now, on the reactor thread, while their sizes add up
    to at most C{budget} bytes; L{None} for each file left to L{_readAll}.
    """
    contents: list[bytes | None] = []
    for path in paths:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > budget:
                contents.append(None)
                continue
            budget -= size
            contents.append(f.read())
    return contents


def _readAll(paths: Sequence[str]) -> list[bytes]:
    """
    Read several spool files (in a thread).
    """
    contents = []
    for path in paths:
        with open(path, "rb") as f:
            contents.append(f.read())
    return contents


def _diagnosticOf(error: str) -> str | None:
    """
    C{error} when it is a remote SMTP reply (starts with a reply code),
    else L{None}.
    """
    code = error[:3]
    if code.isdigit() and error[3:4] == " ":
        return error
    return None


def _statusOf(error: str) -> str:
    parts = error.split()
    for part in parts[:2]:
        pieces = part.split(".")
        if len(pieces) == 3 and all(p.isdigit() for p in pieces) and part[0] in "45":
            return "5" + part[1:]
    return "5.0.0"


def makeRelayService(
    settings: Settings, spool: Spool, audit: IAuditLog, resolver: Any, reactor: Any
) -> RelayQueue:
    """
    The relay queue as configured: MX or smarthost, DKIM signer if enabled.
    """
    from gopherpost import dkim
    from gopherpost.relay.mx import destinationResolverFromSettings

    return RelayQueue(
        settings,
        spool,
        audit,
        destinationResolverFromSettings(settings, resolver),
        reactor,
        signer=dkim.loadSigner(settings),
    )
