# -*- test-case-name: tests.test_queue,tests.test_relay_integration,tests.test_relay_duplicates,tests.test_relay_journal,tests.test_relay_control,tests.test_relay_deliverylog,tests.test_relay_reconfigure,tests.test_relay_events -*-
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
delivery carries up to L{BATCH_SIZE} messages to the same destination over
one connection (which the next delivery to that host may take up again, see
L{gopherpost.relay.connectioncache}).
At most C{SMTP_QUEUE_WORKERS} deliveries run at once, and at most
C{SMTP_DESTINATION_CONCURRENCY} to one destination.

The queue also says what it does: Postfix-style delivery log lines
(L{gopherpost.relay.deliverylog}), delivery events to
L{IDeliveryObserver}s (L{addDeliveryObserver}), and audit events for the
metrics.  Operators steer it through L{flush}, L{hold}, L{release},
L{delete} and L{bounce} (the control commands of
L{gopherpost.relay.control}); a live reload calls L{reconfigure}.
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
    succeed,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost import deliveryevents as events
from gopherpost.config import Settings
from gopherpost.esmtp.dsnparams import DSNRequest
from gopherpost.esmtp.metadata import DSN
from gopherpost.interfaces import IAuditLog, IDeliveryObserver, ISpoolObserver
from gopherpost.relay import content, dsn
from gopherpost.relay.courier import (
    ICourier,
    IDeliveryListener,
    OutboundMessage,
    RecipientDelivery,
)
from gopherpost.relay.deliverylog import BOUNCED, DeliveryLog
from gopherpost.relay.deliverylog import DEFERRED as LOG_DEFERRED
from gopherpost.relay.deliverylog import SENT as LOG_SENT
from gopherpost.relay.esmtp import dueDelayWarnings, relayMetadata, wantsSuccessNotice
from gopherpost.relay.journal import JOURNAL_DIRECTORY, Journal, JournalFile, replayJournals
from gopherpost.relay.outcome import DEFERRED, SENT
from gopherpost.relay.state import (
    DELETED,
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
    @ivar started: when the attempt started.
    @ivar deferrals: the last deferral reported for each recipient.
    @ivar expired: the recipients given up on when the queue lifetime ran
        out.
    @ivar lastTLS: the transport security facts of the last deferral.
    """

    def __init__(self, state: MessageState, recipients: list[RecipientState]) -> None:
        self.state = state
        self.recipients = recipients
        self.content = b""
        self.message: OutboundMessage | None = None
        self.remaining: dict[str, RecipientState] = {r.address: r for r in recipients}
        self.lastError = ""
        self.lastHost = ""
        self.lastTLS: Any = None
        self.dirty = False
        self.tried = False
        self.bounced: set[str] = set()
        self.unbounced = False
        self.started = 0.0
        self.deferrals: dict[str, RecipientDelivery] = {}
        self.expired: set[str] = set()


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
    @param courierFactory: C{courierFactory(settings)} builds a courier
        for other settings (a live reload), or L{None}.
    @ivar buildCourier: C{courierFactory}, for the reload.
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
        courierFactory: Callable[[Settings], ICourier] | None = None,
    ) -> None:
        self.buildCourier = courierFactory
        #: Couriers a reload replaced, still finishing their attempts.
        self._retiredCouriers: list[ICourier] = []
        self._observers: list[IDeliveryObserver] = []
        self._log = DeliveryLog()
        #: queue id -> what the operator asked for while it was delivered
        #: (C{"delete"} or C{"bounce"}), done when its attempts end.
        self._afterAttempt: dict[str, str] = {}
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
        for courier in self._retiredCouriers + [self._courier]:
            courier.stop().addErrback(lambda f: _log.failure("The relay courier failed to stop", f))
        self._retiredCouriers.clear()

        def waitForWrites(_: object) -> Deferred[Any]:
            if graceTimer.active():
                graceTimer.cancel()
            return DeferredList(list(self._writes), consumeErrors=True)

        d = DeferredList(deliveries + list(self._preparing), consumeErrors=True)
        return d.addCallback(waitForWrites).addCallback(lambda _: None)

    def _cancelDeliveries(self) -> None:
        for task in list(self._deliveries):
            task.cancel()

    # Live reload

    def reconfigure(
        self, settings: Settings, courier: ICourier | None = None, signer: Any = None
    ) -> None:
        """
        Live reload: new delivery attempts use C{settings} (retry schedule,
        queue lifetime, concurrency), C{courier} (smarthost or MX, outbound
        TLS, timeouts, HELO name) and C{signer} (the DKIM key, L{None} for
        none); attempts in progress finish with what they started with.
        A shorter retry schedule applies to the messages already queued at
        once: a recipient due later than the new schedule allows is due
        then.

        @param courier: the courier for new attempts (L{None}: keep it).
        """
        old, self._settings = self._settings, settings
        if courier is not None and courier is not self._courier:
            self._retiredCouriers.append(self._courier)
            self._courier = courier
        self._signer = signer
        if (old.retryInitial, old.retryMax) != (settings.retryInitial, settings.retryMax):
            now = self._reactor.seconds()
            for state in list(self._messages.values()):
                sooner = False
                for recipient in state.pending:
                    if (state.queueId, recipient.address) in self._inFlight:
                        continue
                    due = now + retryDelay(
                        max(1, recipient.attempts),
                        settings.retryInitial,
                        settings.retryMax,
                        self._random,
                    )
                    if recipient.nextAttempt > due:
                        recipient.nextAttempt = due
                        sooner = True
                if sooner:
                    self._schedule(state)
        self._pumpSoon()

    # Delivery events

    def addDeliveryObserver(self, observer: IDeliveryObserver) -> None:
        """
        Tell C{observer} every later L{gopherpost.deliveryevents} event.
        """
        self._observers.append(observer)

    def removeDeliveryObserver(self, observer: IDeliveryObserver) -> None:
        """
        Stop telling C{observer}.
        """
        if observer in self._observers:
            self._observers.remove(observer)

    def _notify(self, event: events.DeliveryEvent) -> None:
        for observer in list(self._observers):
            try:
                observer.deliveryEvent(event)
            except Exception:
                _log.failure(
                    "A delivery observer failed on a {type} event of {queueId}",
                    type=event.type,
                    queueId=event.queueId,
                )

    # ISpoolObserver

    def messageCommitted(self, envelope: Envelope) -> None:
        """
        A message is in the spool: take on its remote recipients, if any.
        """
        if envelope.relayRecipients:
            self._takeOn(envelope)
        if DSN in envelope.metadata:
            # esmtp: NOTIFY=SUCCESS for a local recipient: delivered.
            self._deliveredNotice(envelope)

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
            for (queueId, outcome), envelope in zip(prepared, arrivals):
                self._reading.discard(queueId)
                if isinstance(outcome, Failure):
                    _log.failure("Could not queue {queueId} for relay", outcome, queueId=queueId)
                elif not self._stopping:
                    self._audit.emit(
                        "delivery.queued", queueId=queueId, recipients=len(outcome.recipients)
                    )
                    self._queued(envelope, outcome)
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

    def _queued(self, envelope: Envelope, state: MessageState) -> None:
        """
        Say that C{envelope}'s message entered the queue: the log line, the
        L{events.MessageQueued} event.
        """
        recipients = tuple(r.address for r in state.recipients)
        self._log.queued(state.queueId, state.sender, envelope.size, len(recipients))
        if self._observers:
            self._notify(
                events.MessageQueued(
                    state.queueId,
                    self._reactor.seconds(),
                    sender=state.sender,
                    recipients=recipients,
                    size=envelope.size,
                )
            )

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

    # Operations (gopherpostctl queue flush|hold|release|delete|bounce)

    def _select(self, queueIds: Sequence[str] | None) -> tuple[list[MessageState], list[str]]:
        """
        The queued messages called C{queueIds} (every one for L{None}) and
        the ids not in the queue.
        """
        if queueIds is None:
            return list(self._messages.values()), []
        found, missing = [], []
        for queueId in dict.fromkeys(queueIds):
            state = self._messages.get(queueId)
            if state is None:
                missing.append(queueId)
            else:
                found.append(state)
        return found, missing

    def flush(self, queueIds: Sequence[str] | None = None) -> dict[str, list[str]]:
        """
        Try these messages now (C{postqueue -f}, C{-i}); held ones stay
        held.

        @param queueIds: the messages, or L{None} for every one.
        @return: C{flushed}, C{held} (not flushed) and C{notFound} ids.
        """
        found, missing = self._select(queueIds)
        flushed, held = [], []
        now = self._reactor.seconds()
        for state in found:
            if state.held:
                held.append(state.queueId)
                continue
            for recipient in state.pending:
                recipient.nextAttempt = min(recipient.nextAttempt, now)
            self._schedule(state)
            flushed.append(state.queueId)
        return {"flushed": flushed, "held": held, "notFound": missing}

    def hold(self, queueIds: Sequence[str]) -> dict[str, list[str]]:
        """
        Never try these messages until they are released (C{postsuper
        -h}); they are kept past the queue lifetime.  An attempt in
        progress finishes.  Survives restarts.

        @return: C{held} and C{notFound} ids.
        """
        found, missing = self._select(queueIds)
        for state in found:
            if not state.held:
                state.held = True
                self._cancelTimer(state.queueId)
                self._undue(state.queueId)
                self._saveState(state)
                self._log.operator(state.queueId, "held")
        return {"held": [s.queueId for s in found], "notFound": missing}

    def release(self, queueIds: Sequence[str]) -> dict[str, list[str]]:
        """
        Release held messages (C{postsuper -H}): due at once.  One whose
        queue lifetime ran out while it was held gets one more attempt,
        and is bounced if that one fails too.

        @return: C{released}, C{notHeld} and C{notFound} ids.
        """
        found, missing = self._select(queueIds)
        released, notHeld = [], []
        now = self._reactor.seconds()
        for state in found:
            if not state.held:
                notHeld.append(state.queueId)
                continue
            state.held = False
            for recipient in state.pending:
                recipient.nextAttempt = now
            self._saveState(state)
            self._log.operator(state.queueId, "released")
            self._schedule(state)
            released.append(state.queueId)
        return {"released": released, "notHeld": notHeld, "notFound": missing}

    def delete(self, queueIds: Sequence[str] | None = None) -> Deferred[dict[str, list[str]]]:
        """
        Remove these messages from the queue, without a bounce (C{postsuper
        -d}): their remote recipients still pending are marked deleted, so
        the message is finished, and retention removes it from the spool as
        any finished message (L{gopherpost.retention}: after
        C{SMTP_KEEP_DELIVERED}, unless it has a local recipient).  A
        message being delivered is deleted when the attempt ends (a
        recipient it delivered meanwhile stays delivered).

        @param queueIds: the messages, or L{None} for every one.
        @return: a Deferred of the C{deleted} and C{notFound} ids.
        """
        return self._operate(queueIds, "delete", "deleted")

    def bounce(self, queueIds: Sequence[str]) -> Deferred[dict[str, list[str]]]:
        """
        Give up on these messages now: every pending recipient fails, and
        the sender gets a DSN (as Postfix's C{postsuper -e} expires a
        message).  A message being delivered is bounced when the attempt
        ends.

        @return: a Deferred of the C{bounced} and C{notFound} ids.
        """
        return self._operate(queueIds, "bounce", "bounced")

    def _operate(
        self, queueIds: Sequence[str] | None, action: str, done: str
    ) -> Deferred[dict[str, list[str]]]:
        found, missing = self._select(queueIds)
        work = []
        for state in found:
            self._cancelTimer(state.queueId)
            self._undue(state.queueId)
            if self._delivering(state.queueId):
                self._afterAttempt[state.queueId] = action
            else:
                work.append(self._act(action, state))
        result = {done: [s.queueId for s in found], "notFound": missing}
        d = DeferredList(work, consumeErrors=True)
        return d.addCallback(lambda _: result)

    def _act(self, action: str, state: MessageState) -> Deferred[None]:
        """
        Delete or bounce C{state}'s message now.
        """
        now = self._reactor.seconds()
        pending = state.pending
        if action == "delete":
            for recipient in pending:
                recipient.status = DELETED
                recipient.lastError = "deleted by the operator"
            self._saveState(state)
            self._leave(state)
            return succeed(None)
        reason = "5.4.7 Message administratively expired"
        for recipient in pending:
            recipient.status = FAILED
            recipient.lastError = reason
            self._log.outcome(
                state.queueId, recipient.address, BOUNCED, reason, "5.4.7", state.received, now, now
            )
        self._saveState(state)
        self._leave(state)
        # (Small files are read at once: a missing one raises here.)
        read = maybeDeferred(content.readContents, [self._contentPath(state)], self._runInThread)

        def bounceWith(contents: list[bytes]) -> None:
            body = state.dkimHeader.encode("ascii") + contents[0]
            self._bounceOrTell(state, body, pending)

        def withoutContent(failure: Failure) -> None:
            failure.trap(OSError)
            self._bounceOrTell(state, b"", pending)

        return self._track(self._writes, read.addCallbacks(bounceWith, withoutContent))

    def _cancelTimer(self, queueId: str) -> None:
        timer = self._timers.pop(queueId, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _undue(self, queueId: str) -> None:
        """
        Take C{queueId}'s recipients waiting for the pump off it.
        """
        for key, due in list(self._due.items()):
            recipients = due.pop(queueId, None)
            for recipient in recipients or ():
                self._inFlight.discard((queueId, recipient.address))
            if not due:
                del self._due[key]

    def _delivering(self, queueId: str) -> bool:
        """
        Whether an attempt for C{queueId} is in progress (after L{_undue}).
        """
        return any(q == queueId for q, _ in self._inFlight)

    def _saveState(self, state: MessageState) -> bool:
        try:
            self._store.save(state)
        except OSError as e:
            _log.error(
                "Could not save the relay state of {queueId}: {error}",
                queueId=state.queueId,
                error=e,
            )
            return False
        return True

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
        if state.held:
            return
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
        if state is None or state.held:
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
        for work in batch:
            queueId = work.state.queueId
            if queueId in self._afterAttempt and not self._delivering(queueId):
                action = self._afterAttempt.pop(queueId)
                if not work.state.done:
                    self._act(action, work.state)
            if work.state.done:
                self._leave(work.state)
            elif not self._stopping:
                self._schedule(work.state)
        if not self._stopping:
            self._pumpSoon()

    def _leave(self, state: MessageState) -> None:
        """
        C{state}'s message is done: out of the queue, with its log line.
        """
        if self._messages.pop(state.queueId, None) is not None:
            self._log.removed(state.queueId)

    # Delivery

    @inlineCallbacks
    def _deliverBatch(self, domain: str, batch: list[_Work]) -> Generator[Deferred[Any], Any, None]:
        now = self._reactor.seconds()
        for work in batch:
            work.started = now
            for recipient in work.recipients:
                recipient.attempts += 1
            # Every attempt counts, also one that ends at the DNS.
            self._audit.emit("delivery.attempt", queueId=work.state.queueId)
        contents = yield self._readContents(batch)
        if not batch:
            return
        for work, body in zip(batch, contents):
            work.content = work.state.dkimHeader.encode("ascii") + body
            work.message = OutboundMessage(
                work.state.queueId,
                work.state.sender,
                tuple(work.remaining),
                work.content,
                esmtp=work.state.esmtp,
                requireTLS=work.state.requireTLS,
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

    def _contentPath(self, state: MessageState) -> str:
        return self._spool.contentPath(
            state.dateDirectory, state.queueId, state.recipients[0].token
        )

    @inlineCallbacks
    def _readContents(self, batch: list[_Work]) -> Generator[Deferred[Any], Any, list[bytes]]:
        """
        The contents of C{batch}'s messages.  A message whose content is
        gone from the spool (removed by hand) leaves the queue, with one
        warning, and leaves C{batch}.
        """
        try:
            contents: list[bytes] = yield content.readContents(
                [self._contentPath(work.state) for work in batch], self._runInThread
            )
        except FileNotFoundError:
            pass
        else:
            return contents
        for work in list(batch):
            if not os.path.exists(self._contentPath(work.state)):
                batch.remove(work)
                self._vanished(work)
        if not batch:
            return []
        contents = yield content.readContents(
            [self._contentPath(work.state) for work in batch], self._runInThread
        )
        return contents

    def _vanished(self, work: _Work) -> None:
        """
        C{work}'s message is no longer in the spool: drop it.
        """
        state = work.state
        for recipient in work.recipients:
            self._inFlight.discard((state.queueId, recipient.address))
        self._cancelTimer(state.queueId)
        self._undue(state.queueId)
        self._afterAttempt.pop(state.queueId, None)
        if self._messages.pop(state.queueId, None) is not None:
            _log.warn(
                "{queueId}: removed from the relay queue: its content is gone from the spool "
                "(deleted by hand?)",
                queueId=state.queueId,
            )

    def _closeJournal(self, journal: JournalFile, discard: bool) -> None:
        try:
            journal.close(discard)
        except OSError as e:
            _log.error("Could not close relay journal {path}: {error}", path=journal.path, error=e)

    def _attempting(self, work: _Work, host: str) -> None:
        """
        The courier is about to try C{host} for C{work}.
        """
        self._audit.emit("delivery.connect", queueId=work.state.queueId, mx=host)

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
        now = self._reactor.seconds()
        for delivery in deliveries:
            recipient = work.remaining.get(delivery.recipient)
            if recipient is None:
                continue
            if delivery.status == SENT:
                self._final(work, recipient, DELIVERED, delivery.reply, delivery.host)
                sent.append(delivery)
                final.append(recipient)
                self._logOutcome(work, recipient.address, LOG_SENT, delivery.reply, delivery, now)
                if self._observers:
                    self._notifyDelivered(work, delivery, now)
            elif delivery.status != DEFERRED:
                self._final(work, recipient, FAILED, delivery.reply, delivery.host)
                final.append(recipient)
                self._logOutcome(work, recipient.address, BOUNCED, delivery.reply, delivery, now)
            elif not self._stopping:
                work.lastError = delivery.reply
                work.lastTLS = delivery.tls
                if delivery.host:
                    work.lastHost = delivery.host
                work.deferrals[recipient.address] = delivery
                work.tried = work.dirty = True
        if sent and work.state.esmtp:
            # esmtp: NOTIFY=SUCCESS, and the next hop does not report it.
            request = DSNRequest.fromMetadata(work.state.esmtp)
            relayed = [d for d in sent if wantsSuccessNotice(request, d.recipient, d.dsnOffered)]
            if relayed and dsn.shouldBounce(work.state.sender):
                notices = [
                    dsn.RecipientFailure(
                        recipient=d.recipient,
                        status=d.dsn if d.dsn.startswith("2.") else "2.0.0",
                        reason=f"relayed to {d.host}, which does not report delivery",
                        diagnosticCode=d.reply if d.remote else None,
                        remoteMTA=d.host or None,
                        action="relayed",
                        originalRecipient=request.forRecipient(d.recipient).originalRecipient,
                    )
                    for d in relayed
                ]
                self._track(self._writes, self._notice(work.state, work.content, notices))
        if sent:
            self._audit.emit(
                "delivery.success",
                queueId=work.state.queueId,
                mx=sent[0].host,
                reply=sent[0].reply,
                recipients=len(sent),
                latency=self._reactor.seconds() - work.state.received,
                **_tlsFields(sent[0].tls),
            )
        if final:
            work.tried = True
            self._journalOutcomes(work, final, journal)
            self._bounceNewFailures(work)
            if work.state.done:
                self._leave(work.state)

    def _logOutcome(
        self,
        work: _Work,
        recipient: str,
        status: str,
        reason: str,
        delivery: RecipientDelivery | None,
        now: float,
        dsnCode: str | None = None,
    ) -> None:
        if dsnCode is None:
            dsnCode = delivery.dsn if delivery is not None and delivery.dsn else _dsnOf(reason)
        self._log.outcome(
            work.state.queueId,
            recipient,
            status,
            reason,
            dsnCode,
            work.state.received,
            work.started,
            now,
            delivery if delivery is not None and delivery.host else None,
        )

    def _notifyDelivered(self, work: _Work, delivery: RecipientDelivery, now: float) -> None:
        tls = delivery.tlsUsed
        self._notify(
            events.RecipientDelivered(
                work.state.queueId,
                now,
                recipient=delivery.recipient,
                remoteHost=delivery.host,
                remoteIP=delivery.address or None,
                remotePort=delivery.port or None,
                reply=delivery.reply,
                tlsVersion=(delivery.tlsVersion or "TLS") if tls else None,
                tlsVerified=(self._settings.outboundTLS in ("verify", "require")) if tls else None,
            )
        )

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
            if work.state.queueId in self._afterAttempt:
                # Deleted or bounced by the operator meanwhile: done when
                # the attempt has ended.
                continue
            # A message held meanwhile is kept past its lifetime.
            expired = not work.state.held and now - work.state.received >= settings.queueLifetime
            for recipient in list(work.remaining.values()):
                error = work.lastError or "4.4.1 No answer from any mail exchanger"
                last = work.deferrals.get(recipient.address)
                reason = last.reply if last is not None else error
                if expired:
                    reply = f"5.4.7 Delivery time expired; last error: {error}"
                    self._final(work, recipient, FAILED, reply, work.lastHost)
                    work.expired.add(recipient.address)
                    self._logOutcome(work, recipient.address, BOUNCED, reply, last, now, "5.4.7")
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
                    **_tlsFields(work.lastTLS),
                )
                self._logOutcome(work, recipient.address, LOG_DEFERRED, reason, last, now)
                if self._observers:
                    self._notify(
                        events.RecipientDeferred(
                            work.state.queueId,
                            now,
                            recipient=recipient.address,
                            attempt=recipient.attempts,
                            error=reason,
                            nextAttempt=recipient.nextAttempt,
                            remoteHost=(last.host if last is not None else work.lastHost) or None,
                        )
                    )
        # Small, unsynced writes: on the reactor thread (see relay.state),
        # together (a burst of writes costs less than the same writes
        # spread between network events).
        # esmtp: NOTIFY=DELAY, once per recipient (marked before the save).
        warnings = []
        for work in batch:
            if work.remaining and work.state.esmtp:
                due = dueDelayWarnings(
                    work.state.esmtp,
                    work.state.received,
                    now,
                    settings.delayWarning,
                    list(work.remaining),
                )
                if due:
                    work.dirty = True
                    warnings.append((work, due))
        saved = True
        for work in batch:
            if work.dirty:
                saved = self._save(work) and saved
        for work in batch:
            self._bounceNewFailures(work)
        for work, due in warnings:
            self._delayNotice(work, due)
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
        if self._afterAttempt.get(work.state.queueId) == "delete":
            # Deleted by the operator: no bounce.
            return
        self._bounceOrTell(work.state, work.content, failures, work.expired)

    def _bounceOrTell(
        self,
        state: MessageState,
        content: bytes,
        failures: list[RecipientState],
        expired: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """
        Send the DSN for C{failures} (unless the sender is null), and tell
        the delivery observers once its queue id is known.
        """
        # esmtp: NOTIFY (RFC 3461 4.1): NEVER, or a list without FAILURE,
        # means no DSN for that recipient (the observers are still told).
        request = DSNRequest.fromMetadata(state.esmtp)
        unwanted = [r for r in failures if not request.forRecipient(r.address).notifyFailure]
        if unwanted:
            failures = [r for r in failures if r not in unwanted]
            self._notifyFailures(state, unwanted, expired, None)
        if not failures:
            return
        if dsn.shouldBounce(state.sender):
            self._track(self._writes, self._bounce(state, content, failures, expired))
        else:
            self._notifyFailures(state, failures, expired, None)

    def _notifyFailures(
        self,
        state: MessageState,
        failures: list[RecipientState],
        expired: set[str] | frozenset[str],
        bounceId: str | None,
    ) -> None:
        if not self._observers:
            return
        now = self._reactor.seconds()
        for r in failures:
            event: events.DeliveryEvent
            if r.address in expired:
                event = events.RecipientExpired(
                    state.queueId,
                    now,
                    recipient=r.address,
                    lastError=r.lastError,
                    bounceQueueId=bounceId,
                )
            else:
                event = events.RecipientBounced(
                    state.queueId,
                    now,
                    recipient=r.address,
                    dsnCode=_statusOf(r.lastError),
                    dsnText=r.lastError,
                    bounceQueueId=bounceId,
                    remoteHost=r.lastHost or None,
                )
            self._notify(event)

    def _bounce(
        self,
        state: MessageState,
        content: bytes,
        failures: list[RecipientState],
        expired: set[str] | frozenset[str] = frozenset(),
    ) -> Deferred[None]:
        """
        Tell the sender about final failures with an RFC 3464 report (with
        the sender's RET, ENVID and ORCPT, RFC 3461).
        """
        request = DSNRequest.fromMetadata(state.esmtp)
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
                    originalRecipient=request.forRecipient(r.address).originalRecipient,
                )
                for r in failures
            ],
            originalMessage=content,
            arrivalDate=state.received,
            now=self._reactor.seconds(),
            queueId=state.queueId,
            envelopeId=request.envelopeIdText,
            returnContent=request.returnFull,
        )
        senderLocal = self._settings.isLocalDomain(_domainOf(state.sender))
        d = self._spool.store(report, "", [(state.sender, senderLocal)])

        def stored(envelope: Envelope) -> None:
            self._log.notification(state.queueId, envelope.queueId)
            self._notifyFailures(state, failures, expired, envelope.queueId)

        def failed(failure: Failure) -> None:
            _log.failure("Could not store a bounce for {queueId}", failure, queueId=state.queueId)
            self._notifyFailures(state, failures, expired, None)

        # The spool tells its observers (this queue among them) of the
        # bounce: its remote recipient is taken on from there.
        return d.addCallbacks(stored, failed)

    # Success and delay DSNs the sender asked for (esmtp, RFC 3461)

    def _notice(
        self, state: MessageState, content: bytes, entries: list[dsn.RecipientFailure]
    ) -> Deferred[None]:
        """
        Send a DSN other than a failure (C{relayed}, C{delivered},
        C{delayed}): the original's header section is returned.
        """
        request = DSNRequest.fromMetadata(state.esmtp)
        try:
            report = dsn.buildDSN(
                reportingMTA=self._settings.hostname,
                originalSender=state.sender,
                failures=entries,
                originalMessage=content,
                arrivalDate=state.received,
                now=self._reactor.seconds(),
                queueId=state.queueId,
                envelopeId=request.envelopeIdText,
            )
        except ValueError as e:
            _log.error(
                "Could not build a DSN for {queueId}: {error}", queueId=state.queueId, error=e
            )
            return succeed(None)
        senderLocal = self._settings.isLocalDomain(_domainOf(state.sender))
        d = self._spool.store(report, "", [(state.sender, senderLocal)])
        action = entries[0].action

        def stored(envelope: Envelope) -> None:
            _log.info(
                "Told the sender of {queueId} ({action}: {count} recipients) as {noticeId}",
                queueId=state.queueId,
                action=action,
                count=len(entries),
                noticeId=envelope.queueId,
            )

        def failed(failure: Failure) -> None:
            _log.failure("Could not store a DSN for {queueId}", failure, queueId=state.queueId)

        return d.addCallbacks(stored, failed)

    def _delayNotice(self, work: _Work, due: list[str]) -> None:
        """
        Tell the sender that C{due} (recipients of C{work}) are delayed.
        """
        state = work.state
        if not dsn.shouldBounce(state.sender):
            return
        request = DSNRequest.fromMetadata(state.esmtp)
        recipients = {r.address: r for r in state.recipients}
        entries = []
        for address in due:
            recipient = recipients.get(address)
            error = recipient.lastError if recipient is not None else ""
            # _statusOf gives the permanent form of the last status.
            status = "4" + _statusOf(error)[1:]
            entries.append(
                dsn.RecipientFailure(
                    recipient=address,
                    status=status,
                    reason=error or "not delivered yet",
                    diagnosticCode=_diagnosticOf(error),
                    remoteMTA=(recipient.lastHost or None) if recipient is not None else None,
                    action="delayed",
                    originalRecipient=request.forRecipient(address).originalRecipient,
                    willRetryUntil=state.received + self._settings.queueLifetime,
                )
            )
        self._track(self._writes, self._notice(state, work.content, entries))

    def _deliveredNotice(self, envelope: Envelope) -> None:
        """
        NOTIFY=SUCCESS for local recipients: they have the message now.
        """
        request = DSNRequest.fromMetadata(envelope.metadata)
        local = [
            r.address
            for r in envelope.recipients
            if r.local and request.forRecipient(r.address).notifySuccess
        ]
        if not local or not dsn.shouldBounce(envelope.sender):
            return
        state = MessageState(
            envelope.queueId,
            envelope.dateDirectory,
            envelope.received,
            envelope.sender,
            esmtp=relayMetadata(envelope.metadata),
        )
        entries = [
            dsn.RecipientFailure(
                recipient=address,
                status="2.0.0",
                reason="delivered to the mailbox",
                action="delivered",
                originalRecipient=request.forRecipient(address).originalRecipient,
            )
            for address in local
        ]

        def send(content: bytes) -> Deferred[None]:
            return self._notice(state, content, entries)

        def unreadable(failure: Failure) -> None:
            _log.failure("Could not read {queueId} for its DSN", failure, queueId=envelope.queueId)

        d = self._spool.readMessage(envelope).addCallback(send)
        self._track(self._writes, d.addErrback(unreadable))


def _tlsFields(facts: Any) -> dict[str, object]:
    """
    The delivery log's transport security fields (issue 19): C{tls=} the
    policy that applied (C{dane}, C{mta-sts}, C{verify}, C{may}, C{none})
    and C{tlsResult=} C{verified}, C{unverified} or C{cleartext}; none
    without a transport security policy.

    @param facts: a L{gopherpost.tlspolicy.policy.TLSFacts}, or L{None}.
    """
    if facts is None:
        return {}
    result = "cleartext" if not facts.tls else "verified" if facts.verified else "unverified"
    return {"tls": facts.label, "tlsResult": result}


def _diagnosticOf(error: str) -> str | None:
    """
    C{error} when it is a remote SMTP reply (starts with a reply code),
    else L{None}.
    """
    code = error[:3]
    if code.isdigit() and error[3:4] == " ":
        return error
    return None


def _dsnOf(text: str) -> str:
    """
    The RFC 3463 status C{text} (a reply or a local reason) starts with,
    else one from its reply code's class.
    """
    for part in text.split()[:2]:
        pieces = part.split(".")
        if len(pieces) == 3 and all(p.isdigit() for p in pieces) and part[0] in "245":
            return part
    if text[:1] in ("2", "4", "5") and text[:3].isdigit():
        return f"{text[0]}.0.0"
    return "4.0.0"


def _statusOf(error: str) -> str:
    parts = error.split()
    for part in parts[:2]:
        pieces = part.split(".")
        if len(pieces) == 3 and all(p.isdigit() for p in pieces) and part[0] in "45":
            return "5" + part[1:]
    return "5.0.0"


def makeRelayService(
    settings: Settings,
    spool: Spool,
    audit: IAuditLog,
    resolver: Any,
    reactor: Any,
    transportSecurity: Any = None,
) -> RelayQueue:
    """
    The relay queue as configured: a courier for MX or smarthost delivery,
    the DKIM signer if enabled.

    @param transportSecurity: the courier's
        L{gopherpost.tlspolicy.interfaces.ITransportSecurity} (DANE,
        MTA-STS), or L{None} for C{SMTP_OUTBOUND_TLS} alone.
    """
    from gopherpost import dkim
    from gopherpost.relay.connectioncache import ConnectionCache
    from gopherpost.relay.courier import Courier
    from gopherpost.relay.mx import destinationResolverFromSettings

    def buildCourier(settings: Settings) -> ICourier:
        if transportSecurity is not None:
            # A reload's SMTP_OUTBOUND_TLS applies where DANE and MTA-STS
            # do not.
            transportSecurity.configured = settings.outboundTLS
        return Courier(
            reactor,
            destinationResolverFromSettings(settings, resolver),
            heloName=settings.hostname,
            tlsPolicy=settings.outboundTLS,
            timeoutScale=settings.outboundTimeoutScale,
            transportSecurity=transportSecurity,
            connectionCache=ConnectionCache(reactor),
        )

    return RelayQueue(
        settings,
        spool,
        audit,
        buildCourier(settings),
        reactor,
        signer=dkim.loadSigner(settings),
        courierFactory=buildCourier,
    )
