"""
Tests for L{gopherpost.webhooks.service}: what the server builds and
offers (configuration checks at start-up, the observers, the metrics), and
its wiring by L{gopherpost.tap}.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.config import ConfigError
from gopherpost.deliveryevents import MessageQueued
from gopherpost.interfaces import IDeliveryObserver, ISpoolObserver
from gopherpost.spool import Envelope, Recipient, Spool
from gopherpost.tap import Options, makeService
from gopherpost.webhooks.events import DeliveryEventRecorder, newEventId
from gopherpost.webhooks.metrics import WebhookMetrics
from gopherpost.webhooks.process import CourierProcess
from gopherpost.webhooks.records import EVENTS, INBOUND, EventRecord, WebhookStore, dateOf
from gopherpost.webhooks.service import (
    HANDOVER_BATCH,
    HANDOVER_INTERVAL,
    WebhookService,
    makeWebhookService,
)
from tests.support.server import freePort, serverEnvironment
from tests.test_webhook_courier import SECRET, settingsFor

START = 1796119200.0


def envelopeFor(queueId: str) -> Envelope:
    return Envelope(
        queueId,
        "2026-12-01",
        START,
        "a@x.test",
        (Recipient("b@gopherpost.test", "0" * 16, True),),
        "127.0.0.1",
        "client.test",
        10,
        False,
    )


class MakeWebhookServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(START)
        self.spool = Spool(self.path, self.clock)
        self.spool.open()

    def make(self, environ: dict[str, str] | None = None, **overrides: Any) -> Any:
        return makeWebhookService(
            settingsFor(self.path, **overrides),
            self.spool,
            self.clock,
            environ or {},
            inProcess=True,
        )

    def test_off(self) -> None:
        """
        Both webhooks off: no service, and the inbound webhook's start is
        forgotten (mail received while it is off never gets one).
        """
        self.assertIsInstance(self.make(webhookURL="http://127.0.0.1:1/"), WebhookService)
        store = WebhookStore(self.spool.stateDirectory)
        self.assertEqual(store.since(), START)
        self.assertIsNone(self.make())
        self.assertIsNone(store.since())

    def test_since(self) -> None:
        """
        The inbound webhook's start is recorded once, and kept.
        """
        self.make(webhookURL="http://127.0.0.1:1/")
        self.clock.advance(100)
        self.make(webhookURL="http://127.0.0.1:1/")
        self.assertEqual(WebhookStore(self.spool.stateDirectory).since(), START)
        # The events webhook alone does not need it.
        self.make(eventsWebhookURL="http://127.0.0.1:1/")
        self.assertIsNone(WebhookStore(self.spool.stateDirectory).since())

    def test_trustStore(self) -> None:
        """
        An https URL with a trust store that does not load stops start-up,
        naming the variable.
        """
        with self.assertRaises(ConfigError) as caught:
            self.make({"SSL_CERT_FILE": "/nonexistent.pem"}, webhookURL="https://127.0.0.1:1/")
        self.assertEqual(caught.exception.variable, "SSL_CERT_FILE")
        self.assertIn("SMTP_WEBHOOK_URL", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            self.make({"SSL_CERT_DIR": "/nonexistent"}, eventsWebhookURL="https://127.0.0.1:1/")
        self.assertEqual(caught.exception.variable, "SSL_CERT_DIR")
        self.assertIn("SMTP_EVENTS_WEBHOOK_URL", str(caught.exception))
        # http does not need one.
        self.make({"SSL_CERT_FILE": "/nonexistent.pem"}, webhookURL="http://127.0.0.1:1/")

    def test_stateNotWritable(self) -> None:
        os.makedirs(os.path.join(self.spool.stateDirectory), exist_ok=True)
        with open(os.path.join(self.spool.stateDirectory, "webhooks"), "w") as f:
            f.write("in the way")
        with self.assertRaises(ConfigError) as caught:
            self.make(webhookURL="http://127.0.0.1:1/")
        self.assertEqual(caught.exception.variable, "SMTP_QUEUE_PATH")

    def test_interfaces(self) -> None:
        service = self.make(
            webhookURL="http://127.0.0.1:1/", eventsWebhookURL="http://127.0.0.1:2/"
        )
        verifyObject(ISpoolObserver, service)
        verifyObject(IDeliveryObserver, service.deliveryObserver)
        self.assertIsNone(self.make(webhookURL="http://127.0.0.1:1/").deliveryObserver)

    def test_process(self) -> None:
        """
        Outside tests, the courier is a child process.
        """
        service = makeWebhookService(
            settingsFor(self.path, webhookURL="http://127.0.0.1:1/"), self.spool, self.clock, {}
        )
        assert service is not None
        self.assertIsInstance(service.courier, CourierProcess)


class DeliveryEventRecorderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = WebhookStore(os.path.abspath(self.mktemp()))
        self.store.open()
        self.addCleanup(self.store.close)
        self.submitted: list[EventRecord] = []
        self.recorder = DeliveryEventRecorder(self.clock, self.store, self.submitted.append)

    def test_recorded(self) -> None:
        """
        An event is in the journal, with a fresh id, before it is handed on
        and before C{deliveryEvent} returns.
        """

        def submit(record: EventRecord) -> None:
            self.assertEqual(self.store.events(dateOf(START)), [record])
            self.submitted.append(record)

        recorder = DeliveryEventRecorder(self.clock, self.store, submit)
        recorder.deliveryEvent(MessageQueued("Q1", START, "a@x.test", ("b@y.test",), 100))
        [record] = self.submitted
        self.assertTrue(record.id.startswith("evt_"))
        self.assertEqual(record.queueId, "Q1")
        self.assertIn(b'"type":"queued"', record.body)
        self.assertIn(f'"id":"{record.id}"'.encode(), record.body)

    def test_idsUnique(self) -> None:
        ids = {newEventId(START) for _ in range(1000)}
        self.assertEqual(len(ids), 1000)
        self.assertLess(newEventId(START), newEventId(START + 1))

    def test_journalFails(self) -> None:
        """
        A journal that cannot be written does not stop the event.
        """
        self.store.close()
        os.rmdir(os.path.join(self.store.path, EVENTS))
        with open(os.path.join(self.store.path, EVENTS), "w") as f:
            f.write("in the way")
        self.recorder.deliveryEvent(MessageQueued("Q1", START, "a@x.test", ("b@y.test",), 100))
        self.assertEqual(len(self.submitted), 1)
        self.flushLoggedErrors()

    def test_neverRaises(self) -> None:
        def broken(record: EventRecord) -> None:
            raise RuntimeError("boom")

        recorder = DeliveryEventRecorder(self.clock, self.store, broken)
        recorder.deliveryEvent(MessageQueued("Q1", START, "a@x.test", ("b@y.test",), 100))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MetricsTests(SynchronousTestCase):
    def test_exposition(self) -> None:
        """
        The numbers reach Prometheus' text format, and parse with its own
        parser.
        """
        metrics = WebhookMetrics()
        metrics.count(INBOUND, "delivered")
        metrics.count(INBOUND, "delivered")
        metrics.count(EVENTS, "failed")
        metrics.count(EVENTS, "no-such-result")
        metrics.pending(EVENTS, 3)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics)
        families = {
            f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
        }
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in families.values()
            for s in family.samples
        }
        self.assertEqual(
            samples[
                "smtp_webhook_deliveries_total", (("kind", "inbound"), ("result", "delivered"))
            ],
            2,
        )
        self.assertEqual(
            samples["smtp_webhook_deliveries_total", (("kind", "events"), ("result", "failed"))], 1
        )
        self.assertEqual(samples["smtp_webhook_pending", (("kind", "events"),)], 3)
        self.assertEqual(samples["smtp_webhook_pending", (("kind", "inbound"),)], 0)
        self.assertEqual(
            metrics.asJSON()["smtp_webhook_deliveries_total"]["inbound"]["delivered"], 2
        )


class WiringTests(SynchronousTestCase):
    def test_tap(self) -> None:
        """
        With a webhook URL set, C{makeService} builds the webhooks, has the
        spool tell them of commits, and shows their metrics.
        """
        path = os.path.abspath(self.mktemp())
        environ = serverEnvironment(
            path,
            freePort(),
            SMTP_WEBHOOK_URL="http://127.0.0.1:9/hook",
            SMTP_WEBHOOK_SECRET=SECRET,
        )
        clock = Clock()
        service = makeService(Options(), environ=environ, reactor=clock)
        self.assertIsInstance(service.webhooks, WebhookService)
        self.assertIn(service.webhooks, list(service))
        taken: list[Any] = []
        service.webhooks.courier.takeMessages = taken.extend
        envelope = envelopeFor("0190ABCDEF0123456")
        service.spool.announce(envelope)
        self.assertEqual(taken, [])
        clock.advance(HANDOVER_INTERVAL)
        self.assertEqual([t[0] for t in taken], [envelope.queueId])
        body, _ = service.metrics.exposition()
        self.assertIn(b'smtp_webhook_pending{kind="inbound"} 0.0', body)

    def test_tapOff(self) -> None:
        path = os.path.abspath(self.mktemp())
        service = makeService(
            Options(), environ=serverEnvironment(path, freePort()), reactor=Clock()
        )
        self.assertIsNone(service.webhooks)

    def test_tapBadURL(self) -> None:
        path = os.path.abspath(self.mktemp())
        environ = serverEnvironment(
            path, freePort(), SMTP_WEBHOOK_URL="hooks.example.test", SMTP_WEBHOOK_SECRET=SECRET
        )
        with self.assertRaises(SystemExit) as caught:
            makeService(Options(), environ=environ, reactor=Clock())
        self.assertIn("SMTP_WEBHOOK_URL", str(caught.exception))


class HandOverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        path = os.path.abspath(self.mktemp())
        spool = Spool(path, self.clock)
        spool.open()
        service = makeWebhookService(
            settingsFor(path, webhookURL="http://127.0.0.1:1/"),
            spool,
            self.clock,
            {},
            inProcess=True,
        )
        assert service is not None
        self.service = service
        self.taken: list[list[Any]] = []
        self.skipped: list[list[Any]] = []
        service.courier.takeMessages = self.taken.append
        service.courier.skipMessages = self.skipped.append

    def test_batched(self) -> None:
        """
        Commits are handed to the courier together, once per interval.
        """
        for number in range(10):
            self.service.messageCommitted(envelopeFor(f"Q{number}"))
        self.assertEqual(self.taken, [])
        self.clock.advance(HANDOVER_INTERVAL)
        self.assertEqual(len(self.taken), 1)
        self.assertEqual([t[0] for t in self.taken[0]], [f"Q{n}" for n in range(10)])
        self.clock.advance(1)
        self.assertEqual(len(self.taken), 1)

    def test_bigBatchAtOnce(self) -> None:
        for number in range(HANDOVER_BATCH):
            self.service.messageCommitted(envelopeFor(f"Q{number}"))
        self.assertEqual(len(self.taken), 1)
        self.assertEqual(len(self.taken[0]), HANDOVER_BATCH)

    def test_outOfScope(self) -> None:
        """
        A relay-only message is handed over to be marked, not posted.
        """
        remote = replace(
            envelopeFor("R1"), recipients=(Recipient("x@elsewhere.test", "1" * 16, False),)
        )
        self.service.messageCommitted(remote)
        self.clock.advance(HANDOVER_INTERVAL)
        self.assertEqual(self.taken, [])
        self.assertEqual(self.skipped, [[("R1", "2026-12-01")]])
