# -*- test-case-name: tests.test_queue,tests.test_relay_integration,tests.test_relay_duplicates,tests.test_relay_journal -*-
"""
The outbound queue: every spooled recipient outside our local domains is
handed to the courier (L{gopherpost.relay.courier}), retried with capped
exponential backoff and jitter, and bounced to the sender when it finally
fails.  The queue is schedule, retries and bounces; the courier walks the
mail exchangers and runs the SMTP client.

The queue is the spool: its state is L{gopherpost.relay.state} files beside
the messages, found again at start-up.  A recipient's final outcome is
recorded as soon as the courier reports it, before the connection carries
its next message (in the attempt's journal, L{gopherpost.relay.journal};
the state files follow when the attempt ends), so a process killed at any
moment sends again at most the message in flight on each connection.  All
protocol work is Deferred-driven on the reactor; only large reads and DKIM
signing (L{gopherpost.relay.content}) and DNS run in threads.  Time comes
from the injected reactor, so tests drive it with a clock.

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
from collections.abc import Callable, Generator, Sequence
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
from gopherpost.interfaces import IAuditLog, ISpoolObserver
from gopherpost.relay import content, dsn
from gopherpost.relay.courier import (
    ICourier,
    IDeliveryListener,
    OutboundMessage,
    RecipientDelivery,
)
from gopherpost.relay.journal import JOURNAL_DIRECTORY, Journal, JournalFile, replayJournals
from gopherpost.relay.outcome import DEFERRED, SENT
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
    "STOP_GRACE",
]

_log = Logger()

#: Messages sent over one connection at most.
BATCH_SIZE = 20
#: Seconds a stopping queue waits for replies to messages already sent
#: before it drops the connections.
STOP_GRACE = 10.0


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

    @ivar remaining: the recipients of this attempt without a final outcome.
    @ivar dirty: whether the state has changes worth saving that are not
        saved yet.
    @ivar tried: whether the courier reported anything real for it.
    @ivar bounced: the recipients whose failure a DSN already reported.
    @ivar unbounced: whether a recipient failed since the last DSN.
    """

    def __init__(self, state: MessageState, recipients: list[RecipientState]) -> None:
        self.state = state
        self.recipients = recipients
        self.content = b""
        self.message: OutboundMessage | None = None
        self.remaining: dict[str, RecipientState] = {r.address: r for r in recipients}
        self.lastError = ""
        self.lastHost = ""
        self.dirty = False
        self.tried = False
        self.bounced: set[str] = set()
        self.unbounced = False


@implementer(IDeliveryListener)
class _BatchListener:
    """
    Hears the courier's reports for one batch and records them.
    """

    def __init__(self, queue: RelayQueue, batch: Sequence[_Work], journal: JournalFile) -> None:
        self._queue = queue
        self._works = {w.state.queueId: w for w in batch}
        self._journal = journal

    def attempting(
        self, messages: Sequence[OutboundMessage], host: str, address: str, port: int
    ) -> None:
        for message in messages:
            self._queue._attempting(self._works[message.queueId], host)

    def settled(self, message: OutboundMessage, deliveries: Sequence[RecipientDelivery]) -> None:
        self._queue._settled(self._works[message.queueId], deliveries, self._journal)


@implementer(ISpoolObserver)
class RelayQueue(Service):
    """
    Delivers spooled mail for remote recipients.

    @param settings: retry schedule, concurrency, queue lifetime, hostname
        and local domains (for bounces).
    @param spool: where messages and their state live.
    @param audit: delivery events go here.
    @param courier: the L{ICourier} that carries the messages.
    @param reactor: provides time (and a thread pool unless C{runInThread}
        is given).
    @param signer: a L{gopherpost.dkim.DKIMSigner}, or L{None}.
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
        courier: ICourier,
        reactor: Any,
        signer: Any = None,
        randomSource: random.Random | None = None,
        runInThread: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self._settings = settings
        self._spool = spool
        self._audit = audit
        self._courier = courier
        self._reactor = reactor
        self._signer = signer
        self._random = randomSource or random.Random()
        if runInThread is None:

            def runInThread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
                return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

        self._runInThread = runInThread
        self._store = StateStore(spool.path)
        self._journal = Journal(os.path.join(spool.stateDirectory, JOURNAL_DIRECTORY))
        self._messages: dict[str, MessageState] = {}
        self._timers: dict[str, Any] = {}
        #: destination key -> queue id -> recipients due now
        self._due: dict[str, OrderedDict[str, list[RecipientState]]] = {}
        self._domains: dict[str, str] = {}
        self._inFlight: set[tuple[str, str]] = set()
        self._active = 0
        self._activePerDestination: Counter[str] = Counter()
        #: Deliveries in progress (stopped gracefully, then cancelled).
        self._deliveries: set[Deferred[Any]] = set()
        #: Arrivals being read or signed (cancelled at stop).
        self._preparing: set[Deferred[Any]] = set()
        #: Bounces being stored (waited for at stop).
        self._writes: set[Deferred[Any]] = set()
        self._stopping = False
        self._pumpCall: Any = None
        #: queue id -> envelope of messages spooled but not yet taken on
        self._arriving: dict[str, Envelope] = {}
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
        self._journal.open()
        restored = replayJournals(
            self._journal.directory, self._store, self._spool.envelopeIn, self._reactor.seconds()
        )
        if restored:
            _log.info(
                "Relay queue restored the outcomes of {count} messages from its journal",
                count=restored,
            )
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
                self._takeOn(envelope)
                continue
            if not state.done:
                self._register(state)
                recovered += 1
        if recovered:
            _log.info("Relay queue recovered {count} messages from the spool", count=recovered)

    def stopService(self) -> Deferred[None]:
        """
        Stop: cancel timers and the reading of new arrivals, stop the
        deliveries in progress gracefully (a message whose final dot is out
        waits up to L{STOP_GRACE} seconds for its reply, which is recorded),
        then drop what is left, save what is known and wait for bounces
        being stored.  Recipients not delivered stay pending.
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
        for task in list(self._preparing):
            task.cancel()
        deliveries = list(self._deliveries)
        graceTimer = self._reactor.callLater(STOP_GRACE, self._cancelDeliveries)
        # The deliveries in progress are the courier's attempts: they end
        # when it has stopped them (or when the grace timer cancels them).
        self._courier.stop().addErrback(
            lambda f: _log.failure("The relay courier failed to stop", f)
        )

        def waitForWrites(_: object) -> Deferred[Any]:
            if graceTimer.active():
                graceTimer.cancel()
            return DeferredList(list(self._writes), consumeErrors=True)

        d = DeferredList(deliveries + list(self._preparing), consumeErrors=True)
        return d.addCallback(waitForWrites).addCallback(lambda _: None)

    def _cancelDeliveries(self) -> None:
        for task in list(self._deliveries):
            task.cancel()

    # ISpoolObserver

    def messageCommitted(self, envelope: Envelope) -> None:
        """
        A message is in the spool: take on its remote recipients, if any.
        """
        if envelope.relayRecipients:
            self._takeOn(envelope)

    def _takeOn(self, envelope: Envelope) -> None:
        """
        Take on a newly spooled message: sign it once and schedule it now.

        Messages spooled in the same reactor turn (one group commit) are
        taken on together (signed in one thread hop) and become due
        together, so that they can share connections.
        """
        queueId = envelope.queueId
        if (
            queueId in self._messages
            or queueId in self._arriving
            or queueId in self._reading
            or self._stopping
        ):
            return
        self._arriving[queueId] = envelope
        if self._arrivalCall is None:
            self._arrivalCall = self._reactor.callLater(0, self._takeArrivals)

    def _takeArrivals(self) -> None:
        self._arrivalCall = None
        arrivals = list(self._arriving.values())
        self._arriving.clear()
        self._reading.update(envelope.queueId for envelope in arrivals)
        now = self._reactor.seconds()

        def prepare() -> list[tuple[str, MessageState | Failure]]:
            prepared: list[tuple[str, MessageState | Failure]] = []
            for envelope in arrivals:
                try:
                    state = MessageState.forEnvelope(envelope, now)
                    if self._signer is not None:
                        state.dkimHeader = self._dkimHeader(envelope)
                except Exception:
                    prepared.append((envelope.queueId, Failure()))
                    continue
                # Not saved yet: until the first outcome, "no state file"
                # means exactly this, and start-up rebuilds it.
                prepared.append((envelope.queueId, state))
            return prepared

        def registered(prepared: list[tuple[str, MessageState | Failure]]) -> None:
            for queueId, outcome in prepared:
                self._reading.discard(queueId)
                if isinstance(outcome, Failure):
                    _log.failure("Could not queue {queueId} for relay", outcome, queueId=queueId)
                elif not self._stopping:
                    self._audit.emit(
                        "delivery.queued", queueId=queueId, recipients=len(outcome.recipients)
                    )
                    self._register(outcome)

        def failed(failure: Failure) -> None:
            for envelope in arrivals:
                self._reading.discard(envelope.queueId)
            if not failure.check(CancelledError):
                _log.failure(
                    "Could not queue {count} messages for relay", failure, count=len(arrivals)
                )

        # Building a few states costs less than a thread hop; DKIM signing
        # (an RSA signature over each message) goes to the pool.
        d = maybeDeferred(prepare) if self._signer is None else self._runInThread(prepare)
        d.addCallbacks(registered, failed)
        self._track(self._preparing, d)

    def _dkimHeader(self, envelope: Envelope) -> str:
        return content.dkimHeader(
            self._signer,
            self._spool.messagePath(envelope),
            _domainOf(envelope.sender) or None,
            envelope.queueId,
        )

    def queueDepth(self) -> int:
        """
        Messages with at least one recipient still to deliver.
        """
        return len(self._messages)

    # Scheduling

    @staticmethod
    def _track(tasks: set[Deferred[Any]], d: Deferred[Any]) -> Deferred[Any]:
        tasks.add(d)

        def untrack(result: object) -> object:
            tasks.discard(d)
            return result

        return d.addBoth(untrack)

    @property
    def busy(self) -> bool:
        """
        Whether anything is in progress: deliveries, arrivals or bounces
        (for tests that wait for a quiet queue).
        """
        return bool(self._inFlight or self._deliveries or self._preparing or self._writes)

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
        delay = min(r.nextAttempt for r in waiting) - self._reactor.seconds()
        if delay <= 0:
            # Due now (a new message, or one found at start-up): no timer.
            # The pump still waits for the end of this reactor turn, so
            # what becomes due together shares connections.
            self._wake(state.queueId)
            return
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
            key = self._courier.destinationKey(domain)
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
                batch: list[_Work] = []
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
                d.addErrback(self._batchFailed, batch)
                d.addBoth(self._batchFinished, key, batch)
                self._track(self._deliveries, d)
            if not due:
                self._due.pop(key, None)

    def _batchFailed(self, failure: Failure, batch: list[_Work]) -> None:
        """
        Something unexpected went wrong (a spool file gone, a bug): log it
        and back off like a temporary failure, never retry in a loop.
        """
        if failure.check(CancelledError):
            return
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
    def _deliverBatch(self, domain: str, batch: list[_Work]) -> Generator[Deferred[Any], Any, None]:
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
        contents = yield content.readContents(paths, self._runInThread)
        for work, body in zip(batch, contents):
            work.content = work.state.dkimHeader.encode("ascii") + body
            work.message = OutboundMessage(
                work.state.queueId, work.state.sender, tuple(work.remaining), work.content
            )
        messages = [work.message for work in batch if work.message is not None]
        journal = self._journal.start()
        saved = False
        try:
            try:
                yield self._courier.deliver(domain, messages, _BatchListener(self, batch, journal))
            except CancelledError:
                # Stopped, and the grace period is over: what is known was
                # journaled as it came; save it.
                saved = self._saveKnown(batch)
                return
            if self._stopping:
                saved = self._saveKnown(batch)
                return
            saved = self._finish(batch)
        finally:
            # The journal goes once the states hold what it recorded; kept,
            # the next start-up applies it again (its outcomes are final).
            self._closeJournal(journal, saved)

    def _closeJournal(self, journal: JournalFile, discard: bool) -> None:
        try:
            journal.close(discard)
        except OSError as e:
            _log.error("Could not close relay journal {path}: {error}", path=journal.path, error=e)

    def _attempting(self, work: _Work, host: str) -> None:
        """
        The courier is about to try C{host} for C{work}.
        """
        self._audit.emit("delivery.attempt", queueId=work.state.queueId, mx=host)

    def _settled(
        self, work: _Work, deliveries: Sequence[RecipientDelivery], journal: JournalFile
    ) -> None:
        """
        Apply the courier's outcomes for some of C{work}'s recipients, and
        journal the final ones at once: the next message of the connection
        starts only after this returns.
        """
        sent: list[RecipientDelivery] = []
        final: list[RecipientState] = []
        for delivery in deliveries:
            recipient = work.remaining.get(delivery.recipient)
            if recipient is None:
                continue
            if delivery.status == SENT:
                self._final(work, recipient, DELIVERED, delivery.reply, delivery.host)
                sent.append(delivery)
                final.append(recipient)
            elif delivery.status != DEFERRED:
                self._final(work, recipient, FAILED, delivery.reply, delivery.host)
                final.append(recipient)
            elif not self._stopping:
                work.lastError = delivery.reply
                if delivery.host:
                    work.lastHost = delivery.host
                work.tried = work.dirty = True
        if sent:
            self._audit.emit(
                "delivery.success",
                queueId=work.state.queueId,
                mx=sent[0].host,
                reply=sent[0].reply,
                recipients=len(sent),
                latency=self._reactor.seconds() - work.state.received,
            )
        if final:
            work.tried = True
            self._journalOutcomes(work, final, journal)
            self._bounceNewFailures(work)
            if work.state.done:
                self._messages.pop(work.state.queueId, None)

    def _journalOutcomes(
        self, work: _Work, recipients: list[RecipientState], journal: JournalFile
    ) -> None:
        """
        Record final outcomes now, in the attempt's journal (one small
        write; the state file follows when the attempt ends), or, when the
        journal cannot be written, in the state file itself.
        """
        try:
            journal.record(work.state, recipients, withDKIM=not self._store.hasFile(work.state))
        except OSError as e:
            _log.error(
                "Could not journal the outcome of {queueId}: {error}",
                queueId=work.state.queueId,
                error=e,
            )
            self._save(work)

    def _final(
        self, work: _Work, recipient: RecipientState, status: str, reply: str, host: str
    ) -> None:
        recipient.status = status
        recipient.lastError = "" if status == DELIVERED else reply
        recipient.lastHost = host
        work.remaining.pop(recipient.address, None)
        work.dirty = True
        if status == FAILED:
            work.unbounced = True
            self._audit.emit("delivery.failure", queueId=work.state.queueId, mx=host, reply=reply)

    def _save(self, work: _Work) -> bool:
        """
        Write C{work}'s state now (atomically, into the page cache: see
        L{gopherpost.relay.state}).  A failed write is logged.

        @return: whether it was written.
        """
        try:
            self._store.save(work.state)
        except OSError as e:
            _log.error(
                "Could not save the relay state of {queueId}: {error}",
                queueId=work.state.queueId,
                error=e,
            )
            return False
        work.dirty = False
        return True

    def _saveKnown(self, batch: Sequence[_Work]) -> bool:
        """
        A stopped attempt: save the outcomes not saved yet, leave the
        schedule of what was not tried alone.

        @return: whether every state that needed it was written.
        """
        saved = True
        for work in batch:
            if not (work.dirty and work.tried):
                continue
            if work.lastError:
                for recipient in work.remaining.values():
                    recipient.lastError, recipient.lastHost = work.lastError, work.lastHost
            saved = self._save(work) and saved
        return saved

    def _finish(self, batch: Sequence[_Work]) -> bool:
        """
        The attempt is over: defer or expire what is left, save the states
        that changed, send bounces.

        @return: whether every state that changed was written.
        """
        now = self._reactor.seconds()
        settings = self._settings
        for work in batch:
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
                work.dirty = True
                self._audit.emit(
                    "delivery.deferral",
                    queueId=work.state.queueId,
                    mx=work.lastHost,
                    reply=error,
                )
        # Small, unsynced writes: on the reactor thread (see relay.state),
        # together (a burst of writes costs less than the same writes
        # spread between network events).
        saved = True
        for work in batch:
            if work.dirty:
                saved = self._save(work) and saved
        for work in batch:
            self._bounceNewFailures(work)
        return saved

    # Bounces

    def _bounceNewFailures(self, work: _Work) -> None:
        """
        Send a DSN for the recipients of C{work} that failed in this
        attempt and were not reported yet.
        """
        if not work.unbounced:
            return
        work.unbounced = False
        failures = [
            r
            for r in work.recipients
            if r.status == FAILED
            and r.address not in work.remaining
            and r.address not in work.bounced
        ]
        if not failures:
            return
        work.bounced.update(r.address for r in failures)
        if dsn.shouldBounce(work.state.sender):
            self._track(self._writes, self._bounce(work.state, work.content, failures))

    def _bounce(
        self, state: MessageState, content: bytes, failures: list[RecipientState]
    ) -> Deferred[None]:
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

        def failed(failure: Failure) -> None:
            _log.failure("Could not store a bounce for {queueId}", failure, queueId=state.queueId)

        # The spool tells its observers (this queue among them) of the
        # bounce: its remote recipient is taken on from there.
        return d.addCallbacks(stored, failed)


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
    The relay queue as configured: a courier for MX or smarthost delivery,
    the DKIM signer if enabled.
    """
    from gopherpost import dkim
    from gopherpost.relay.courier import Courier
    from gopherpost.relay.mx import destinationResolverFromSettings

    courier = Courier(
        reactor,
        destinationResolverFromSettings(settings, resolver),
        heloName=settings.hostname,
        tlsPolicy=settings.outboundTLS,
        timeoutScale=settings.outboundTimeoutScale,
    )
    return RelayQueue(settings, spool, audit, courier, reactor, signer=dkim.loadSigner(settings))
