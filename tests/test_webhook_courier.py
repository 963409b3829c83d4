"""
Tests for L{gopherpost.webhooks.courier} with the rest of the webhooks: a
real spool, the service and the courier in this process, real receivers on
loopback; time from a L{Clock} (set to the real time, so that signatures
verify with the reference library) that the tests advance for retries.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import replace
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost.config import Settings
from gopherpost.deliveryevents import RecipientBounced, RecipientDelivered
from gopherpost.spool import Envelope, Spool
from gopherpost.webhooks.courier import BatchedBuilder, prune
from gopherpost.webhooks.dispatcher import MessageGone
from gopherpost.webhooks.http import WebhookPoster
from gopherpost.webhooks.records import EVENTS, INBOUND, EventRecord, WebhookStore, dateOf
from gopherpost.webhooks.service import WebhookService, makeWebhookService
from tests.support.certs import makeTestPKI
from tests.support.relay import SteppedReactor
from tests.support.webhooks import STALL, WebhookReceiver, newSecret, verifyWebhook, waitUntil

SECRET = newSecret()
DAY = 86400.0

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: support@gopherpost.test\r\n"
    b"Subject: =?utf-8?q?Printer_on_fire_=F0=9F=94=A5?=\r\n"
    b"Message-ID: <t1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIt is on fire.\r\n"
    b'--b\r\nContent-Type: image/jpeg; name="fire.jpg"\r\nContent-Transfer-Encoding: base64\r\n'
    b"Content-Disposition: attachment\r\n\r\n"
    + base64.encodebytes(b"\xff\xd8JPEG" * 10)
    + b"--b--\r\n"
)


def settingsFor(path: str, **overrides: Any) -> Settings:
    base = Settings(
        hostname="mx.gopherpost.test",
        localDomains=("mx.gopherpost.test", "gopherpost.test"),
        queuePath=path,
        healthDisable=True,
        tlsDisable=True,
        webhookSecret=SECRET,
        webhookRetryInitial=10.0,
        webhookRetryMax=40.0,
    )
    return replace(base, **overrides)


class Server:
    """
    The spool and the webhook service of one server run, courier in
    process, on a stepped reactor.
    """

    def __init__(
        self, testCase: TestCase, path: str, clock: Clock, poster: Any = None, **overrides: Any
    ) -> None:
        self.clock = clock
        self.reactor: Any = cast(Any, SteppedReactor(clock))
        self.settings = settingsFor(path, **overrides)
        self.spool = Spool(path, self.reactor)
        self.spool.open()
        # Handed over at once: time here moves when the test says so.
        service = makeWebhookService(
            self.settings, self.spool, self.reactor, {}, inProcess=True, handOverInterval=0
        )
        assert isinstance(service, WebhookService)
        self.service = service
        # Marks written at once too (the courier's interval would wait for
        # the test's clock).
        self.service.courier.dispatcher.markInterval = 0
        if poster is not None:
            self.service.courier.poster = poster
            self.service.courier.dispatcher._poster = poster
        self.spool.addObserver(self.service)
        self.stopped = False
        testCase.addCleanup(self.stop)

    async def start(self) -> None:
        self.service.startService()
        await self.service.courier.recovered

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await maybeDeferred(self.service.stopService)

    async def commit(
        self, recipients: list[tuple[str, bool]], content: bytes = MESSAGE
    ) -> Envelope:
        return await self.spool.store(content, "alice@example.test", recipients)

    def settled(self, kind: str = INBOUND) -> dict[str, str]:
        found: dict[str, str] = {}
        for date in self.service.store.dates(kind):
            found.update(self.service.store.settled(kind, date))
        return found


class CourierTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(time.time())
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def receiver(self, *args: Any, **kwargs: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(*args, **kwargs).start()
        self.addCleanup(receiver.stop)
        return receiver

    def server(self, **overrides: Any) -> Server:
        return Server(self, self.path, self.clock, **overrides)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.log]

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class InboundTests(CourierTestCase):
    async def _delivered(self) -> None:
        receiver = self.receiver()
        server = self.server(webhookURL=receiver.url)
        await server.start()
        envelope = await server.commit(
            [("support@gopherpost.test", True), ("x@elsewhere.test", False)]
        )
        await receiver.waitFor(1)
        [request] = receiver.requests
        document = verifyWebhook(SECRET, request)
        self.assertEqual(request.headers["webhook-id"], envelope.queueId)
        self.assertEqual(document["id"], envelope.queueId)
        self.assertEqual(document["envelope"]["rcpt_to"], ["support@gopherpost.test"])
        self.assertEqual(document["subject"], "Printer on fire 🔥")
        self.assertEqual(document["text"].strip(), "It is on fire.")
        self.assertEqual(document["attachments"][0]["filename"], "fire.jpg")
        self.assertEqual(
            base64.b64decode(document["attachments"][0]["content"]), b"\xff\xd8JPEG" * 10
        )
        await waitUntil(lambda: server.settled() == {envelope.queueId: "delivered"})
        self.assertEqual(server.service.metrics.deliveries[INBOUND, "delivered"], 1)

    def test_delivered(self):
        """
        A committed message with a local recipient is posted, signed, with
        its parsed content, and marked delivered.
        """
        return ensureDeferred(self._delivered())

    async def _failThenAccept(self) -> None:
        receiver = self.receiver([500])
        server = self.server(webhookURL=receiver.url)
        await server.start()
        envelope = await server.commit([("support@gopherpost.test", True)])
        await receiver.waitFor(1)
        await waitUntil(lambda: any("status=500" in line for line in self.lines()))
        self.assertEqual(server.settled(), {})
        self.advance(10.0)
        await receiver.waitFor(2)
        await waitUntil(lambda: server.settled() == {envelope.queueId: "delivered"})
        self.assertEqual(receiver.ids(), [envelope.queueId] * 2)
        # The same document both times; each signed anew.
        self.assertEqual(receiver.requests[0].body, receiver.requests[1].body)
        verifyWebhook(SECRET, receiver.requests[1])

    def test_failThenAccept(self):
        """
        A receiver that fails with 500 first gets the webhook again after
        the retry delay, and it is done once that answer is 2xx.
        """
        return ensureDeferred(self._failThenAccept())

    async def _gone(self) -> None:
        receiver = self.receiver([410])
        server = self.server(webhookURL=receiver.url)
        await server.start()
        envelope = await server.commit([("support@gopherpost.test", True)])
        await waitUntil(lambda: server.settled() == {envelope.queueId: "gone"})
        self.advance(1000)
        self.assertEqual(len(receiver.requests), 1)
        self.assertTrue(any("result=gone" in line for line in self.lines()))

    def test_gone(self):
        """
        410 Gone: that webhook is never posted again (logged).
        """
        return ensureDeferred(self._gone())

    async def _stall(self) -> None:
        receiver = self.receiver([STALL])
        server = self.server(webhookURL=receiver.url, webhookTimeout=15.0)
        await server.start()
        envelope = await server.commit([("support@gopherpost.test", True)])
        await receiver.waitFor(1)
        self.advance(15.0)
        await waitUntil(lambda: any("timed out after 15 s" in line for line in self.lines()))
        self.advance(10.0)
        await receiver.waitFor(2)
        await waitUntil(lambda: server.settled() == {envelope.queueId: "delivered"})

    def test_stalledReceiver(self):
        """
        A receiver that never answers times out; the webhook is retried.
        """
        return ensureDeferred(self._stall())

    async def _https(self) -> None:
        pki = makeTestPKI(self.mktemp(), "127.0.0.1")
        receiver = self.receiver(certificate=pki.good)
        poster = WebhookPoster(SteppedReactor(self.clock), 15.0, 4, trustRoot=pki.ca.trustRoot())
        server = self.server(webhookURL=receiver.url, poster=poster)
        await server.start()
        envelope = await server.commit([("support@gopherpost.test", True)])
        await receiver.waitFor(1)
        self.assertEqual(verifyWebhook(SECRET, receiver.requests[0])["id"], envelope.queueId)

    def test_https(self):
        """
        HTTPS to a receiver with a certificate from a CA made at test time.
        """
        return ensureDeferred(self._https())

    async def _scope(self) -> None:
        receiver = self.receiver()
        server = self.server(webhookURL=receiver.url)
        await server.start()
        remote = await server.commit([("x@elsewhere.test", False)])
        local = await server.commit([("support@gopherpost.test", True)])
        await receiver.waitFor(1)
        await waitUntil(lambda: len(server.settled()) == 2)
        self.assertEqual(receiver.ids(), [local.queueId])
        self.assertEqual(server.settled()[remote.queueId], "skipped")

    def test_scopeLocal(self):
        """
        With C{SMTP_WEBHOOK_SCOPE=local}, relay-only mail gets no webhook.
        """
        return ensureDeferred(self._scope())

    async def _scopeAll(self) -> None:
        receiver = self.receiver()
        server = self.server(webhookURL=receiver.url, webhookScope="all", webhookRaw=True)
        await server.start()
        remote = await server.commit([("x@elsewhere.test", False)])
        await receiver.waitFor(1)
        document = verifyWebhook(SECRET, receiver.requests[0])
        self.assertEqual(document["id"], remote.queueId)
        self.assertEqual(document["envelope"]["rcpt_to"], ["x@elsewhere.test"])
        self.assertEqual(base64.b64decode(document["raw"]), MESSAGE)

    def test_scopeAll(self):
        return ensureDeferred(self._scopeAll())


class RestartTests(CourierTestCase):
    async def _restart(self) -> None:
        receiver = self.receiver(default=503)
        server = self.server(webhookURL=receiver.url)
        await server.start()
        envelopes = [await server.commit([("support@gopherpost.test", True)]) for _ in range(3)]
        await receiver.waitFor(1)
        await server.stop()
        self.assertEqual(server.settled(), {})
        receiver.setDefault(200)
        before = len(receiver.requests)
        again = self.server(webhookURL=receiver.url)
        await again.start()
        await waitUntil(lambda: len(again.settled()) == 3)
        # Every one posted again (a POST the first server had on the wire
        # when it stopped may also arrive late: at least once, as documented).
        self.assertEqual(set(receiver.ids()[before:]), {e.queueId for e in envelopes})
        self.assertTrue(any("Webhooks ready: 3 pending" in line for line in self.lines()))
        # A third start has nothing left to send.
        await again.stop()
        count = len(receiver.requests)
        third = self.server(webhookURL=receiver.url)
        await third.start()
        self.advance(100)
        await third.stop()
        self.assertEqual(len(receiver.requests), count)

    def test_restart(self):
        """
        Webhooks pending when the server stops are posted after it starts
        again; settled ones are not.
        """
        return ensureDeferred(self._restart())

    async def _since(self) -> None:
        receiver = self.receiver()
        # Mail received while the webhook is off...
        off = Spool(self.path, cast(Any, SteppedReactor(self.clock)))
        off.open()
        self.assertIsNone(makeWebhookService(settingsFor(self.path), off, self.clock, {}))
        old = await off.store(MESSAGE, "a@example.test", [("support@gopherpost.test", True)])
        self.advance(1)
        # ... gets none when it is turned on.
        server = self.server(webhookURL=receiver.url)
        await server.start()
        new = await server.commit([("support@gopherpost.test", True)])
        await receiver.waitFor(1)
        await waitUntil(lambda: new.queueId in server.settled())
        self.assertEqual(receiver.ids(), [new.queueId])
        self.assertEqual(server.settled()[old.queueId], "skipped")

    def test_turnedOn(self):
        """
        Turning the inbound webhook on does not post the mail already in
        the spool.
        """
        return ensureDeferred(self._since())

    async def _events(self) -> None:
        receiver = self.receiver(default=503)
        server = self.server(eventsWebhookURL=receiver.url)
        await server.start()
        observer = server.service.deliveryObserver
        assert observer is not None
        now = self.clock.seconds()
        observer.deliveryEvent(
            RecipientDelivered("Q1", now, "b@x.test", "mx.x.test", "192.0.2.1", 25, "250 ok")
        )
        observer.deliveryEvent(RecipientBounced("Q2", now, "c@x.test", "5.1.1", "550 no", "Q3"))
        # Recorded before deliveryEvent returned.
        records = server.service.store.events(dateOf(now))
        self.assertEqual([r.queueId for r in records], ["Q1", "Q2"])
        await receiver.waitFor(2)
        await server.stop()
        receiver.setDefault(200)
        before = len(receiver.requests)
        again = self.server(eventsWebhookURL=receiver.url)
        await again.start()
        await waitUntil(lambda: len(again.settled(EVENTS)) == 2)
        documents = [verifyWebhook(SECRET, r) for r in receiver.requests[before:]]
        self.assertEqual(sorted(d["type"] for d in documents), ["bounced", "delivered"])
        self.assertEqual(
            sorted(r.headers["webhook-id"] for r in receiver.requests[before:]),
            sorted(r.id for r in records),
        )
        self.assertEqual({d["id"] for d in documents}, {r.id for r in records})

    def test_eventsSurviveRestart(self):
        """
        Delivery events are in the journal as soon as they happen; those not
        acknowledged are posted after a restart, with the same ids.
        """
        return ensureDeferred(self._events())


class PruneTests(CourierTestCase):
    def test_prune(self) -> None:
        """
        Days long past are deleted; the inbound webhook's start moves past
        them so start-up never looks at them again.
        """
        store = WebhookStore(os.path.join(self.path, "state"))
        store.open()
        self.addCleanup(store.close)
        now = 1796119200.0  # 2026-12-01
        store.setSince(now - 30 * DAY)
        store.settle(INBOUND, dateOf(now - 10 * DAY), "Q1", "delivered")
        store.settle(INBOUND, dateOf(now - DAY), "Q2", "delivered")
        store.appendEvent(EventRecord("e1", now - 10 * DAY, "Q1", b"{}"))
        pruned = prune(store, now, 5 * DAY)
        self.assertEqual(sorted(pruned), ["events/2026-11-21", "inbound/2026-11-21"])
        self.assertEqual(store.dates(INBOUND), ["2026-11-30"])
        self.assertEqual(store.since(), now - 5 * DAY - (now - 5 * DAY) % DAY)


class ServiceTests(CourierTestCase):
    async def _handOver(self) -> None:
        receiver = self.receiver()
        server = self.server(webhookURL=receiver.url)
        taken: list[Any] = []
        server.service.courier.takeMessages = taken.extend
        await server.start()
        first = await server.commit([("support@gopherpost.test", True)])
        self.assertEqual(taken, [])  # not during the commit: the 250 never waits
        await waitUntil(lambda: bool(taken))
        self.assertEqual(taken, [(first.queueId, first.dateDirectory, first.received)])

    def test_handedOverAfterTheCommit(self):
        return ensureDeferred(self._handOver())

    def test_stopFlushes(self) -> Deferred[None]:
        receiver = self.receiver()
        server = self.server(webhookURL=receiver.url)
        taken: list[Any] = []
        server.service.courier.takeMessages = taken.extend

        class FakeEnvelope:
            queueId, dateDirectory, received = "Q1", "2026-12-01", 1.0
            recipients = (type("R", (), {"local": True})(),)

        server.service.messageCommitted(FakeEnvelope())
        server.service.flush()
        self.assertEqual(taken, [("Q1", "2026-12-01", 1.0)])
        return ensureDeferred(server.stop())


class BatchedBuilderTests(SynchronousTestCase):
    """
    L{BatchedBuilder}: the requests waiting meanwhile go in one thread hop.
    """

    def setUp(self) -> None:
        self.hops: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []
        self.builder = BatchedBuilder(self.runInThread, self.build, limit=3)

    def runInThread(self, f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.hops.append((f, args, d))
        return d

    def build(self, dateDirectory: str, queueId: str) -> bytes:
        if queueId == "GONE":
            raise MessageGone(queueId)
        return f"{dateDirectory}/{queueId}".encode()

    def runHop(self, index: int = -1) -> None:
        f, args, d = self.hops[index]
        d.callback(f(*args))

    def test_batches(self) -> None:
        """
        The first request goes at once; those made while it is built go
        together in the next hop, at most C{limit} per hop.
        """
        first = self.builder("2026-12-01", "Q1")
        rest = [self.builder("2026-12-01", f"Q{n}") for n in range(2, 7)]
        self.assertEqual(len(self.hops), 1)
        self.runHop()
        self.assertEqual(self.successResultOf(first), b"2026-12-01/Q1")
        self.assertEqual(len(self.hops), 2)
        self.assertEqual(len(self.hops[1][1][1]), 3)
        self.runHop()
        self.runHop()
        self.assertEqual(len(self.hops), 3)
        self.assertEqual(
            [self.successResultOf(d) for d in rest],
            [f"2026-12-01/Q{n}".encode() for n in range(2, 7)],
        )

    def test_failures(self) -> None:
        """
        A build that raises fails its own request only.
        """
        self.builder("2026-12-01", "Q0")
        gone = self.builder("2026-12-01", "GONE")
        fine = self.builder("2026-12-01", "Q1")
        self.runHop(0)
        self.runHop(1)
        self.failureResultOf(gone, MessageGone)
        self.assertEqual(self.successResultOf(fine), b"2026-12-01/Q1")

    def test_threadFails(self) -> None:
        """
        If the hop itself fails, every request of it fails.
        """
        d = self.builder("2026-12-01", "Q1")
        self.hops[0][2].errback(RuntimeError("no threads"))
        self.failureResultOf(d, RuntimeError)

    def test_cancelled(self) -> None:
        """
        A request cancelled while it waits is left out of the next hop; one
        cancelled while built is ignored when its result comes.
        """
        first = self.builder("2026-12-01", "Q1")
        waiting = self.builder("2026-12-01", "Q2")
        kept = self.builder("2026-12-01", "Q3")
        first.cancel()
        waiting.cancel()
        self.failureResultOf(first, CancelledError)
        self.failureResultOf(waiting, CancelledError)
        self.runHop()
        self.assertEqual(self.hops[1][1][1], [("2026-12-01", "Q3")])
        self.runHop()
        self.assertEqual(self.successResultOf(kept), b"2026-12-01/Q3")
