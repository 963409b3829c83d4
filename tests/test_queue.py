"""
Unit tests for L{gopherpost.relay.queue}: the retry schedule, and the queue
driven by a scripted L{ICourier} on a real spool with a L{Clock}: outcomes
recorded as they are reported, graceful stops, bounces.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.interfaces import ISpoolObserver
from gopherpost.relay.courier import (
    ICourier,
    IDeliveryListener,
    OutboundMessage,
    RecipientDelivery,
)
from gopherpost.relay.outcome import DEFERRED, FAILED, SENT
from gopherpost.relay.queue import STOP_GRACE, RelayQueue, retryDelay
from gopherpost.relay.state import DELIVERED, PENDING, StateStore
from gopherpost.spool import Envelope, Spool
from tests.support.inbound import RecordingAudit, testSettings


def _synchronous(f: Any, *args: Any) -> Deferred[Any]:
    return maybeDeferred(f, *args)


class RetryDelayTests(SynchronousTestCase):
    """
    Capped exponential backoff with jitter.
    """

    def test_doublesAndCaps(self) -> None:
        """
        The upper bound doubles from SMTP_RETRY_INITIAL and stops at
        SMTP_RETRY_MAX; jitter only shortens, by at most a quarter.
        """
        rnd = random.Random(1)
        for attempts, bound in [(1, 60), (2, 120), (3, 240), (7, 3840), (8, 3840), (40, 3840)]:
            for _ in range(50):
                delay = retryDelay(attempts, 60, 3840, rnd)
                self.assertTrue(0.75 * bound <= delay <= bound, (attempts, delay))

    def test_spread(self) -> None:
        """
        Retries of many messages at the same step spread out.
        """
        rnd = random.Random(2)
        delays = {round(retryDelay(3, 60, 3840, rnd)) for _ in range(100)}
        self.assertGreater(len(delays), 30)


@implementer(ICourier)
class ScriptedCourier:
    """
    An L{ICourier} whose attempts the test finishes by hand.

    @ivar attempts: C{(domain, messages, listener, deferred)} per
        L{deliver} call.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[str, list[OutboundMessage], Any, Deferred[None]]] = []
        self.stops: list[Deferred[None]] = []
        self.cancelled = 0

    def destinationKey(self, domain: str) -> str:
        return domain

    def deliver(
        self, domain: str, messages: Sequence[OutboundMessage], listener: IDeliveryListener
    ) -> Deferred[None]:
        def cancel(d: Deferred[None]) -> None:
            self.cancelled += 1

        d: Deferred[None] = Deferred(cancel)
        self.attempts.append((domain, list(messages), listener, d))
        return d

    def stop(self) -> Deferred[None]:
        self.stops.append(Deferred())
        return self.stops[-1]


def delivery(recipient: str, status: str, host: str = "mx.example.test") -> RecipientDelivery:
    code = {SENT: "250 2.0.0 Ok", DEFERRED: "451 4.3.0 later", FAILED: "550 5.1.1 no such user"}
    return RecipientDelivery(recipient, status, code[status], code[status][4:9], True, host=host)


class QueueTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1795000000)
        self.path = os.path.abspath(self.mktemp())
        self.settings = testSettings(self.path)
        self.spool = Spool(self.path, self.clock, runInThread=_synchronous)
        self.spool.open()
        self.store = StateStore(self.path)
        self.courier = ScriptedCourier()
        self.audit = RecordingAudit()
        self.queue = RelayQueue(
            self.settings,
            self.spool,
            self.audit,
            self.courier,
            self.clock,
            randomSource=random.Random(3),
            runInThread=_synchronous,
        )
        self.spool.addObserver(self.queue)
        self.queue.startService()

    def spoolMessages(self, count: int, recipients: int = 1) -> list[Envelope]:
        """
        Commit C{count} messages for example.test and let the queue take
        them on and start one attempt for them.
        """
        ds = [
            self.spool.store(
                b"Subject: %d\r\n\r\nbody\r\n" % n,
                "alice@gopherpost.test",
                [(f"r{n}.{i}@example.test", False) for i in range(recipients)],
            )
            for n in range(count)
        ]
        self.clock.advance(0)
        envelopes = [self.successResultOf(d) for d in ds]
        self.clock.advance(0)
        self.clock.advance(0)
        return envelopes

    def state(self, envelope: Envelope) -> Any:
        return self.store.load(envelope.dateDirectory, envelope.queueId)

    def stateFiles(self, envelope: Envelope) -> list[str]:
        directory = os.path.join(self.path, envelope.dateDirectory)
        return sorted(
            n[len(envelope.queueId) :]
            for n in os.listdir(directory)
            if n.startswith(envelope.queueId + ".relay")
        )


class RecordingTests(QueueTestCase):
    """
    Outcomes are on disk (in the journal, then in the state files) as soon
    as the courier reports them.
    """

    def afterCrash(self) -> dict[str, dict[str, str]]:
        """
        What a new queue finds in a copy of the spool taken now (what a
        kill -9 at this instant would leave): queue id -> recipient ->
        status, for every message with a state.
        """
        copy = os.path.abspath(self.mktemp())
        shutil.copytree(self.path, copy)
        spool = Spool(copy, self.clock, runInThread=_synchronous)
        spool.open()
        queue = RelayQueue(
            testSettings(copy), spool, RecordingAudit(), ScriptedCourier(), self.clock
        )
        queue.startService()
        store = StateStore(copy)
        found = {}
        for envelope in spool.envelopes():
            state = store.load(envelope.dateDirectory, envelope.queueId)
            if state is not None:
                found[envelope.queueId] = {r.address: r.status for r in state.recipients}
        queue.stopService()
        return found

    def doneAfterCrash(self) -> set[str]:
        return {
            queueId
            for queueId, statuses in self.afterCrash().items()
            if PENDING not in statuses.values()
        }

    def test_interfaces(self) -> None:
        """
        The queue is a spool observer; the listener it gives the courier is
        an L{IDeliveryListener}.
        """
        self.spoolMessages(1)
        self.assertTrue(verifyObject(ISpoolObserver, self.queue))
        [(_, _, listener, _)] = self.courier.attempts
        self.assertTrue(verifyObject(IDeliveryListener, listener))

    def test_eachOutcomeRecordedAtOnce(self) -> None:
        """
        One attempt carries the due messages; each delivered message is
        recorded right when it is reported, before the next one is: a crash
        then would not send it again.  The state files are written once
        each, together, when the attempt ends, and the journal goes.
        """
        envelopes = self.spoolMessages(3)
        [(domain, messages, listener, d)] = self.courier.attempts
        self.assertEqual(domain, "example.test")
        self.assertEqual([m.queueId for m in messages], [e.queueId for e in envelopes])
        self.assertEqual(self.doneAfterCrash(), set())
        saves: list[str] = []
        save = self.queue._store.save

        def counted(state: Any) -> None:
            saves.append(state.queueId)
            save(state)

        self.patch(self.queue._store, "save", counted)
        for n, message in enumerate(messages):
            listener.attempting([message], "mx.example.test", "192.0.2.1", 25)
            listener.settled(message, [delivery(message.recipients[0], SENT)])
            self.assertEqual(self.doneAfterCrash(), {m.queueId for m in messages[: n + 1]})
        self.assertEqual(saves, [])
        d.callback(None)
        self.assertEqual(saves, [e.queueId for e in envelopes])
        self.assertEqual([self.stateFiles(e) for e in envelopes], [[".relayed"]] * 3)
        self.assertEqual(os.listdir(self.queue._journal.directory), [])
        self.assertEqual(self.queue.queueDepth(), 0)
        self.assertEqual(
            [f["queueId"] for f in self.audit.named("delivery.success")],
            [e.queueId for e in envelopes],
        )
        self.assertEqual(len(self.audit.named("delivery.attempt")), 3)

    def test_deferredNotSavedUntilTheEnd(self) -> None:
        """
        A deferred outcome is kept in memory: the next host may take the
        recipient.  At the end of the attempt it is rescheduled and saved.
        """
        [envelope] = self.spoolMessages(1)
        [(_, [message], listener, d)] = self.courier.attempts
        listener.settled(message, [delivery(message.recipients[0], DEFERRED)])
        self.assertEqual(self.stateFiles(envelope), [])
        d.callback(None)
        [recipient] = self.state(envelope).recipients
        self.assertEqual((recipient.status, recipient.attempts), (PENDING, 1))
        self.assertEqual(recipient.lastError, "451 4.3.0 later")
        self.assertEqual(recipient.lastHost, "mx.example.test")
        delay = recipient.nextAttempt - self.clock.seconds()
        self.assertTrue(45 <= delay <= 60, delay)

    def test_mixedRecipients(self) -> None:
        """
        A message with one recipient delivered, one deferred and one failed:
        the final two are recorded at once (a crash then leaves them final
        and the deferred one pending), and the bounce for the failed one
        goes out with them.
        """
        [envelope] = self.spoolMessages(1, recipients=3)
        [(_, [message], listener, d)] = self.courier.attempts
        a, b, c = message.recipients
        listener.settled(message, [delivery(a, SENT), delivery(b, DEFERRED), delivery(c, FAILED)])
        self.assertEqual(
            self.afterCrash()[envelope.queueId], {a: DELIVERED, b: PENDING, c: "failed"}
        )
        self.clock.advance(0)
        bounces = [e for e in self.spool.envelopes() if e.sender == ""]
        self.assertEqual(len(bounces), 1)
        listener.settled(message, [delivery(b, FAILED)])
        d.callback(None)
        self.clock.advance(0)
        self.assertEqual(len([e for e in self.spool.envelopes() if e.sender == ""]), 2)
        statuses = {r.address: r.status for r in self.state(envelope).recipients}
        self.assertEqual(statuses, {a: DELIVERED, b: "failed", c: "failed"})


class StopTests(QueueTestCase):
    """
    Stopping the queue loses track of nothing the remote accepted.
    """

    def test_graceful(self) -> None:
        """
        The courier is asked to stop; an outcome reported while it stops is
        saved; a recipient never tried keeps its schedule and has no state
        written; the stop ends when the courier's attempts have ended.
        """
        first, second = self.spoolMessages(2)
        [(_, [m1, m2], listener, d)] = self.courier.attempts
        stopped = self.queue.stopService()
        self.assertEqual(len(self.courier.stops), 1)
        self.assertNoResult(stopped)
        listener.settled(m1, [delivery(m1.recipients[0], SENT)])
        listener.settled(m2, [delivery(m2.recipients[0], DEFERRED)])
        self.courier.stops[0].callback(None)
        d.callback(None)
        self.successResultOf(stopped)
        self.assertTrue(self.state(first).done)
        self.assertEqual(self.stateFiles(second), [])

    def test_graceExpires(self) -> None:
        """
        A courier that does not stop within L{STOP_GRACE} has its attempts
        cancelled; what was known is saved (a deferral: its error, without
        moving its schedule).
        """
        first, second = self.spoolMessages(2)
        [(_, [m1, m2], listener, d)] = self.courier.attempts
        listener.settled(m1, [delivery(m1.recipients[0], DEFERRED)])
        listener.settled(m2, [delivery(m2.recipients[0], SENT)])
        stopped = self.queue.stopService()
        self.clock.advance(STOP_GRACE - 1)
        self.assertNoResult(stopped)
        self.clock.advance(1)
        self.assertEqual(self.courier.cancelled, 1)
        self.successResultOf(stopped)
        self.assertTrue(self.state(second).done)
        [recipient] = self.state(first).recipients
        self.assertEqual((recipient.status, recipient.lastError), (PENDING, "451 4.3.0 later"))
        self.assertLessEqual(recipient.nextAttempt, self.clock.seconds())

    def test_waitsForBounces(self) -> None:
        """
        A bounce being stored when the queue stops is waited for, not
        dropped.
        """
        [envelope] = self.spoolMessages(1)
        [(_, [message], listener, d)] = self.courier.attempts
        held: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

        def hold(f: Any, *args: Any) -> Deferred[Any]:
            held.append((f, args, Deferred()))
            return held[-1][2]

        self.spool._runInThread = hold
        listener.settled(message, [delivery(message.recipients[0], FAILED)])
        d.callback(None)
        stopped = self.queue.stopService()
        self.courier.stops[0].callback(None)
        while held:
            self.clock.advance(0)
            self.assertNoResult(stopped)
            f, args, result = held.pop(0)
            result.callback(f(*args))
            self.clock.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(len([e for e in self.spool.envelopes() if e.sender == ""]), 1)
