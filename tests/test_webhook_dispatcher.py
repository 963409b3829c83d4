"""
Tests for L{gopherpost.webhooks.dispatcher}: the schedule, driven by a
L{Clock} and a poster whose answers the test gives.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.webhooks.dispatcher import (
    IWebhookReporter,
    MessageGone,
    WebhookDispatcher,
    retryDelay,
)
from gopherpost.webhooks.http import PostResult, WebhookTarget
from gopherpost.webhooks.metrics import WebhookMetrics
from gopherpost.webhooks.records import EVENTS, INBOUND, EventRecord, WebhookStore, dateOf
from gopherpost.webhooks.signing import signature

START = 1796119200.0  # 2026-12-01T10:00:00Z
KEY = bytes(range(32))


@dataclass
class Request:
    target: WebhookTarget
    headers: dict[str, str]
    body: bytes
    deferred: Deferred[PostResult]
    cancelled: bool = False


class ScriptedPoster:
    """
    A poster that keeps each request until the test answers it.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def post(
        self, target: WebhookTarget, headers: dict[str, str], body: bytes
    ) -> Deferred[PostResult]:
        def cancel(d: Deferred[PostResult]) -> None:
            request.cancelled = True
            d.callback(PostResult(None, "cancelled", 0.0))

        d: Deferred[PostResult] = Deferred(cancel)
        request = Request(target, dict(headers), body, d)
        self.requests.append(request)
        return d

    def open(self) -> list[Request]:
        return [r for r in self.requests if not r.deferred.called]

    def answer(self, status: int | None, index: int = 0, error: str = "") -> Request:
        request = self.open()[index]
        if status is not None and not 200 <= status < 300 and not error:
            error = f"HTTP {status}"
        request.deferred.callback(PostResult(status, error, 0.004))
        return request


def event(number: int, created: float = START) -> EventRecord:
    body = f'{{"id":"evt_{number}","type":"queued"}}'.encode()
    return EventRecord(f"evt_{number}", created, f"Q{number}", body)


class DispatcherTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = WebhookStore(os.path.abspath(self.mktemp()))
        self.store.open()
        self.addCleanup(self.store.close)
        self.poster = ScriptedPoster()
        self.metrics = WebhookMetrics()
        self.built: list[tuple[str, str]] = []
        self.log = EventLoggingObserver.createWithCleanup(cast(Any, self), globalLogPublisher)

    def dispatcher(self, **kwargs: Any) -> WebhookDispatcher:
        targets = {
            kind: WebhookTarget(
                kind, f"http://127.0.0.1:1/{kind}".encode(), f"http://127.0.0.1:1/{kind}", None, KEY
            )
            for kind in (INBOUND, EVENTS)
        }
        options: dict[str, Any] = dict(
            concurrency=2,
            retryInitial=10.0,
            retryMax=80.0,
            lifetime=3600.0,
            reporter=self.metrics,
            randomSource=random.Random(7),
        )
        options.update(kwargs)
        return WebhookDispatcher(
            self.clock, self.store, targets, self.poster, self.buildInbound, **options
        )

    def buildInbound(self, dateDirectory: str, queueId: str) -> Deferred[bytes]:
        self.built.append((dateDirectory, queueId))
        if queueId.startswith("GONE"):
            return fail(MessageGone(queueId))
        from twisted.internet.defer import succeed

        return succeed(f'{{"id":"{queueId}"}}'.encode())

    def settled(self, kind: str = EVENTS, date: str | None = None) -> dict[str, str]:
        return self.store.settled(kind, date or dateOf(START))

    def lines(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.log]


class DeliveryTests(DispatcherTestCase):
    def test_delivered(self) -> None:
        """
        A webhook is posted at once, signed, and a 2xx settles it: marked
        delivered, counted, one log line.
        """
        dispatcher = self.dispatcher()
        dispatcher.takeEvent(event(1))
        [request] = self.poster.requests
        self.assertEqual(request.body, event(1).body)
        self.assertEqual(request.headers["webhook-id"], "evt_1")
        self.assertEqual(request.headers["webhook-timestamp"], str(int(START)))
        self.assertEqual(
            request.headers["webhook-signature"], signature(KEY, "evt_1", int(START), request.body)
        )
        self.assertEqual(request.target.kind, EVENTS)
        self.clock.advance(0.2)
        self.poster.answer(204)
        self.assertEqual(self.settled(), {"evt_1": "delivered"})
        self.assertEqual(dispatcher.pending(), [])
        self.assertEqual(self.metrics.deliveries[EVENTS, "delivered"], 1)
        self.assertEqual(self.metrics.pendingByKind[EVENTS], 0)
        self.assertEqual(
            self.lines(),
            [
                "webhook=events id=evt_1 attempt=1 status=204 delay=0.200 time=0.200 "
                "result=delivered"
            ],
        )

    def test_inbound(self) -> None:
        """
        An inbound webhook's body is built from the spool for the attempt;
        its id is the queue id.
        """
        dispatcher = self.dispatcher()
        dispatcher.takeMessage("Q9", "2026-12-01", START)
        [request] = self.poster.requests
        self.assertEqual(self.built, [("2026-12-01", "Q9")])
        self.assertEqual(request.body, b'{"id":"Q9"}')
        self.assertEqual(request.headers["webhook-id"], "Q9")
        self.assertEqual(request.target.kind, INBOUND)
        self.poster.answer(200)
        self.assertEqual(self.settled(INBOUND, "2026-12-01"), {"Q9": "delivered"})

    def test_duplicate(self) -> None:
        dispatcher = self.dispatcher()
        dispatcher.takeEvent(event(1))
        dispatcher.takeEvent(event(1))
        self.assertEqual(len(self.poster.requests), 1)
        self.assertEqual(dispatcher.pendingCount(EVENTS), 1)

    def test_skip(self) -> None:
        dispatcher = self.dispatcher()
        dispatcher.skipMessage("Q1", "2026-12-01")
        self.assertEqual(self.poster.requests, [])
        self.assertEqual(self.settled(INBOUND, "2026-12-01"), {"Q1": "skipped"})

    def test_messageGone(self) -> None:
        """
        A webhook whose message left the spool is dropped, with an error.
        """
        dispatcher = self.dispatcher()
        dispatcher.takeMessage("GONE1", "2026-12-01", START)
        self.assertEqual(self.poster.requests, [])
        self.assertEqual(self.settled(INBOUND, "2026-12-01"), {"GONE1": "dropped"})
        self.assertEqual(dispatcher.pending(), [])
        self.assertIn("no longer in the spool", self.lines()[-1])
        self.assertEqual(self.metrics.deliveries[INBOUND, "dropped"], 1)

    def test_unknownKind(self) -> None:
        """
        Webhooks of a kind that is off are ignored.
        """
        dispatcher = WebhookDispatcher(self.clock, self.store, {}, self.poster, self.buildInbound)
        dispatcher.takeEvent(event(1))
        dispatcher.takeMessage("Q1", "2026-12-01", START)
        self.assertEqual(self.poster.requests, [])

    def test_reporter(self) -> None:
        verifyObject(IWebhookReporter, self.metrics)


class RetryTests(DispatcherTestCase):
    def test_failedThenAccepted(self) -> None:
        """
        A 500 is retried after C{retryInitial} (times a factor in
        [0.75, 1]); the next attempt's 200 settles it.
        """
        dispatcher = self.dispatcher()
        dispatcher.takeEvent(event(1))
        self.poster.answer(500, error="HTTP 500 Internal Server Error")
        self.assertEqual(self.settled(), {})
        [item] = dispatcher.pending()
        self.assertEqual((item.attempts, item.lastStatus), (1, 500))
        self.assertEqual(item.lastError, "HTTP 500 Internal Server Error")
        delay = item.nextAttempt - START
        self.assertTrue(7.5 <= delay <= 10.0, delay)
        self.clock.advance(7.49)
        self.assertEqual(len(self.poster.requests), 1)
        self.clock.advance(2.51)
        self.assertEqual(len(self.poster.requests), 2)
        self.assertEqual(self.poster.requests[1].headers["webhook-id"], "evt_1")
        self.poster.answer(200)
        self.assertEqual(self.settled(), {"evt_1": "delivered"})
        self.assertEqual(self.metrics.deliveries[EVENTS, "failed"], 1)
        self.assertEqual(self.metrics.deliveries[EVENTS, "delivered"], 1)
        self.assertIn("status=500", self.lines()[0])
        self.assertIn("result=failed next=", self.lines()[0])
        self.assertIn("error='HTTP 500 Internal Server Error'", self.lines()[0])
        self.assertIn("attempt=2 status=200", self.lines()[1])

    def test_noAnswer(self) -> None:
        dispatcher = self.dispatcher()
        dispatcher.takeEvent(event(1))
        self.poster.answer(None, error="connection refused")
        self.assertIn("status=- ", self.lines()[0])
        self.assertEqual(dispatcher.pending()[0].lastError, "connection refused")

    def test_gone(self) -> None:
        """
        410 Gone settles the webhook without another attempt, with a
        warning.
        """
        dispatcher = self.dispatcher()
        dispatcher.takeEvent(event(1))
        self.poster.answer(410)
        self.clock.advance(10000)
        self.assertEqual(len(self.poster.requests), 1)
        self.assertEqual(self.settled(), {"evt_1": "gone"})
        self.assertIn("result=gone", self.lines()[0])
        self.assertEqual(self.log[0]["log_level"].name, "warn")
        self.assertEqual(self.metrics.deliveries[EVENTS, "gone"], 1)

    def test_backoffCapped(self) -> None:
        """
        Delays double from C{retryInitial} up to C{retryMax}.
        """
        rng = random.Random(1)
        delays = [retryDelay(n, 10.0, 80.0, rng) for n in range(1, 8)]
        for delay, base in zip(delays, [10, 20, 40, 80, 80, 80, 80]):
            self.assertTrue(0.75 * base <= delay <= base, (delay, base))
        self.assertLessEqual(retryDelay(10_000, 10.0, 80.0, rng), 80.0)

    def test_lifetime(self) -> None:
        """
        Failing past the lifetime, the webhook expires: logged, marked and
        counted, never tried again.
        """
        dispatcher = self.dispatcher(lifetime=100.0)
        dispatcher.takeEvent(event(1))
        attempts = 0
        while dispatcher.pending():
            self.poster.answer(503)
            attempts += 1
            self.clock.advance(200)
        self.assertEqual(self.settled(), {"evt_1": "expired"})
        self.assertEqual(self.metrics.deliveries[EVENTS, "expired"], 1)
        self.assertIn("result=expired", self.lines()[-1])
        self.assertIn("SMTP_WEBHOOK_LIFETIME", self.lines()[-1])
        self.assertGreater(attempts, 1)
        self.clock.advance(10000)
        self.assertEqual(self.poster.open(), [])

    def test_expiredAtStart(self) -> None:
        """
        What start-up finds older than the lifetime is given up at once.
        """
        dispatcher = self.dispatcher(lifetime=100.0)
        dispatcher.recovered([], [], [event(1, created=START - 101)])
        self.assertEqual(self.poster.requests, [])
        self.assertEqual(self.settled(), {"evt_1": "expired"})


class ConcurrencyTests(DispatcherTestCase):
    def test_limit(self) -> None:
        """
        At most C{concurrency} requests per URL are in flight, oldest
        first; each kind has its own limit.
        """
        dispatcher = self.dispatcher(concurrency=2)
        for number in range(5):
            dispatcher.takeEvent(event(number, created=START + number))
        dispatcher.takeMessage("Q1", "2026-12-01", START)
        self.assertEqual(
            [r.headers["webhook-id"] for r in self.poster.open()], ["evt_0", "evt_1", "Q1"]
        )
        self.poster.answer(200)
        self.assertEqual(
            [r.headers["webhook-id"] for r in self.poster.open()], ["evt_1", "Q1", "evt_2"]
        )
        while self.poster.open():
            self.poster.answer(200)
        self.assertEqual(len(self.settled()), 5)

    def test_stalledReceiverPauses(self) -> None:
        """
        When the receiver is down (no answer, 5xx, 429), its lane pauses:
        other due webhooks wait instead of each failing at once.
        """
        dispatcher = self.dispatcher(concurrency=1)
        for number in range(3):
            dispatcher.takeEvent(event(number))
        self.poster.answer(None, error="timed out after 15 s")
        # evt_1 and evt_2 are due, but the lane waits.
        self.assertEqual(self.poster.open(), [])
        self.clock.advance(10.0)
        # One probe, then (it succeeded) the rest, one at a time.
        answered = [self.poster.answer(200).headers["webhook-id"] for _ in range(3)]
        self.assertEqual(answered, ["evt_1", "evt_2", "evt_0"])
        self.assertEqual(len(self.settled()), 3)

    def test_clientErrorDoesNotPause(self) -> None:
        """
        A 4xx (other than 410 and 429) is about that webhook: the others go
        on.
        """
        dispatcher = self.dispatcher(concurrency=1)
        dispatcher.takeEvent(event(1))
        dispatcher.takeEvent(event(2))
        self.poster.answer(422)
        [request] = self.poster.open()
        self.assertEqual(request.headers["webhook-id"], "evt_2")


class OperationsTests(DispatcherTestCase):
    def test_pending(self) -> None:
        dispatcher = self.dispatcher(concurrency=1)
        dispatcher.takeEvent(event(2, created=START + 2))
        dispatcher.takeMessage("Q1", "2026-12-01", START + 1)
        dispatcher.takeEvent(event(3, created=START + 3))
        self.assertEqual([i.id for i in dispatcher.pending()], ["Q1", "evt_2", "evt_3"])
        self.assertEqual([i.id for i in dispatcher.pending(EVENTS)], ["evt_2", "evt_3"])
        description = dispatcher.pending(EVENTS)[1].describe()
        self.assertEqual(
            description,
            {
                "kind": "events",
                "id": "evt_3",
                "queue_id": "Q3",
                "created": "2026-12-01T10:00:03.000Z",
                "attempts": 0,
                "next_attempt": "2026-12-01T10:00:00.000Z",
                "in_flight": False,
                "last_status": None,
                "last_error": "",
            },
        )
        self.assertTrue(dispatcher.pending(EVENTS)[0].describe()["in_flight"])

    def test_retryNow(self) -> None:
        """
        Retry-now posts pending webhooks at once, whatever their schedule
        or their lane's pause.
        """
        dispatcher = self.dispatcher()
        dispatcher.takeEvent(event(1))
        dispatcher.takeEvent(event(2))
        self.poster.answer(503)
        self.poster.answer(503)
        self.assertEqual(self.poster.open(), [])
        self.assertEqual(dispatcher.retryNow(["evt_2"]), 1)
        self.assertEqual([r.headers["webhook-id"] for r in self.poster.open()], ["evt_2"])
        self.assertEqual(dispatcher.retryNow(), 1)  # evt_2 is in flight already
        self.assertEqual(len(self.poster.open()), 2)
        self.assertEqual(dispatcher.retryNow(["nothing"]), 0)

    def test_drop(self) -> None:
        """
        Dropping settles webhooks at once; a request in flight is
        cancelled and its outcome ignored.
        """
        dispatcher = self.dispatcher(concurrency=1)
        dispatcher.takeEvent(event(1))
        dispatcher.takeEvent(event(2))
        self.assertEqual(dispatcher.drop(["evt_1", "evt_2"]), 2)
        self.assertTrue(self.poster.requests[0].cancelled)
        self.assertEqual(self.settled(), {"evt_1": "dropped", "evt_2": "dropped"})
        self.assertEqual(dispatcher.pending(), [])
        self.assertEqual(len(self.poster.requests), 1)
        self.assertEqual(self.metrics.deliveries[EVENTS, "dropped"], 2)
        self.assertEqual(dispatcher.drop(["evt_1"]), 0)

    def test_stop(self) -> None:
        """
        Stopping cancels what is in flight without settling it, and stops
        the timers.
        """
        dispatcher = self.dispatcher()
        dispatcher.takeEvent(event(1))
        dispatcher.takeEvent(event(2))
        self.poster.answer(500)
        self.successResultOf(dispatcher.stop())
        self.assertTrue(self.poster.requests[1].cancelled)
        self.assertEqual(self.settled(), {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        dispatcher.takeEvent(event(3))
        self.assertEqual(len(self.poster.requests), 2)

    def test_recoveredAfterSettled(self) -> None:
        """
        What start-up recovery reports but this run already settled is not
        posted again.
        """
        dispatcher = self.dispatcher()
        dispatcher.takeEvent(event(1))
        self.poster.answer(200)
        dispatcher.takeMessage("Q5", "2026-12-01", START)
        self.poster.answer(200)
        added = dispatcher.recovered(
            [("2026-12-01", "Q5", START), ("2026-12-01", "Q6", START)], [], [event(1), event(2)]
        )
        self.assertEqual(added, 2)
        self.assertEqual(
            sorted(r.headers["webhook-id"] for r in self.poster.open()), ["Q6", "evt_2"]
        )

    def test_markFails(self) -> None:
        """
        A settled mark that cannot be written is logged; the webhook is
        still done with in this run.
        """
        dispatcher = self.dispatcher()
        self.store.close()
        os.chmod(os.path.join(self.store.path, EVENTS), 0o500)
        self.addCleanup(os.chmod, os.path.join(self.store.path, EVENTS), 0o700)
        if os.geteuid() == 0:
            # root ignores the mode: make the file a directory instead.
            os.mkdir(os.path.join(self.store.path, EVENTS, dateOf(START) + ".settled"))
        dispatcher.takeEvent(event(1))
        self.poster.answer(200)
        self.assertEqual(dispatcher.pending(), [])
        self.assertIn("could not mark 1 webhooks", self.lines()[-1])
        self.assertIn("(evt_1)", self.lines()[-1])

    def test_marksCollected(self) -> None:
        """
        With a C{markInterval}, the settled marks of that many seconds are
        written together; until then the webhooks are done with in memory.
        """
        dispatcher = self.dispatcher(markInterval=0.5)
        dispatcher.takeEvent(event(1))
        dispatcher.takeEvent(event(2))
        self.poster.answer(200)
        self.poster.answer(200)
        self.assertEqual(dispatcher.pending(), [])
        self.assertEqual(self.settled(), {})
        self.clock.advance(0.5)
        self.assertEqual(self.settled(), {"evt_1": "delivered", "evt_2": "delivered"})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_marksWrittenAtStop(self) -> None:
        """
        Stopping writes the marks still collected.
        """
        dispatcher = self.dispatcher(markInterval=60.0)
        dispatcher.takeEvent(event(1))
        self.poster.answer(200)
        self.assertEqual(self.settled(), {})
        self.successResultOf(dispatcher.stop())
        self.assertEqual(self.settled(), {"evt_1": "delivered"})
        self.assertEqual(self.clock.getDelayedCalls(), [])
