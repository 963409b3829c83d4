"""
Delivery events from the relay queue (L{gopherpost.deliveryevents} values
to L{gopherpost.interfaces.IDeliveryObserver} objects): unit tests with a
scripted courier, and end to end with a real server relaying to a loopback
receiver while the delivery events webhook posts to a loopback HTTP
receiver.
"""

from __future__ import annotations

import json
import os
import smtplib
from dataclasses import replace

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from gopherpost import deliveryevents as events
from gopherpost.interfaces import IDeliveryObserver
from gopherpost.relay.courier import RecipientDelivery
from gopherpost.relay.outcome import DEFERRED, FAILED, SENT
from tests.support.operations import shortDirectory
from tests.support.server import freePort, serverEnvironment, startInProcess
from tests.support.smtpserver import SMTPTestServer
from tests.support.webhooks import WebhookReceiver, newSecret, verifyWebhook
from tests.test_queue import QueueTestCase


@implementer(IDeliveryObserver)
class RecordingObserver:
    def __init__(self) -> None:
        self.events: list[events.DeliveryEvent] = []

    def deliveryEvent(self, event: events.DeliveryEvent) -> None:
        self.events.append(event)


@implementer(IDeliveryObserver)
class BrokenObserver:
    def deliveryEvent(self, event: events.DeliveryEvent) -> None:
        raise RuntimeError("observer bug")


def tlsDelivery(recipient: str) -> RecipientDelivery:
    return RecipientDelivery(
        recipient,
        SENT,
        "250 2.0.0 Ok: queued as X1",
        "2.0.0",
        True,
        "mx.example.test",
        "192.0.2.25",
        25,
        tlsUsed=True,
        tlsVersion="TLSv1.3",
    )


def refused(recipient: str, status: str, reply: str) -> RecipientDelivery:
    return RecipientDelivery(recipient, status, reply, reply[4:9], True, "mx.example.test")


class EmissionTests(QueueTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.broken = BrokenObserver()
        self.observer = RecordingObserver()
        self.queue.addDeliveryObserver(self.observer)

    def test_queuedAndDelivered(self) -> None:
        """
        C{queued} once per message (with sender, recipients, size), then
        C{delivered} per recipient with the remote and TLS; a failing
        observer is logged and the others are still told.
        """
        self.queue.removeDeliveryObserver(self.observer)
        self.queue.addDeliveryObserver(self.broken)
        self.queue.addDeliveryObserver(self.observer)
        [envelope] = self.spoolMessages(1, recipients=2)
        [(_, [message], listener, d)] = self.courier.attempts
        a, b = message.recipients
        listener.settled(message, [tlsDelivery(a), tlsDelivery(b)])
        d.callback(None)
        now = self.clock.seconds()
        self.assertEqual(
            self.observer.events,
            [
                events.MessageQueued(
                    envelope.queueId, now, "alice@gopherpost.test", (a, b), envelope.size
                ),
                events.RecipientDelivered(
                    envelope.queueId,
                    now,
                    a,
                    "mx.example.test",
                    "192.0.2.25",
                    25,
                    "250 2.0.0 Ok: queued as X1",
                    "TLSv1.3",
                    True,
                ),
                events.RecipientDelivered(
                    envelope.queueId,
                    now,
                    b,
                    "mx.example.test",
                    "192.0.2.25",
                    25,
                    "250 2.0.0 Ok: queued as X1",
                    "TLSv1.3",
                    True,
                ),
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_deferredBouncedExpired(self) -> None:
        """
        C{deferred} with the attempt number, the error and the next attempt;
        C{bounced} with the DSN code and the bounce's queue id; C{expired}
        when the lifetime ran out.
        """
        stored = self.spool.store(
            b"Subject: x\r\n\r\ny\r\n",
            "al@sender.test",
            [("a@example.test", False), ("b@example.test", False)],
        )
        self.clock.advance(0)
        envelope = self.successResultOf(stored)
        self.clock.advance(0)
        [(_, [message], listener, d)] = self.courier.attempts
        listener.settled(
            message,
            [
                refused("a@example.test", DEFERRED, "451 4.3.0 later"),
                refused("b@example.test", FAILED, "550 5.1.1 no such user"),
            ],
        )
        d.callback(None)
        self.clock.advance(0)
        bounces = [e for e in self.spool.envelopes() if e.sender == ""]
        [first] = bounces
        # The DSN is queued too (to al@sender.test), as a message of its own.
        self.assertEqual(
            [e.queueId for e in self.observer.events if isinstance(e, events.MessageQueued)],
            [envelope.queueId, first.queueId],
        )
        self.observer.events[:] = [e for e in self.observer.events if e.queueId == envelope.queueId]
        kinds = [type(e) for e in self.observer.events]
        self.assertEqual(
            kinds, [events.MessageQueued, events.RecipientBounced, events.RecipientDeferred]
        )
        bounced = self.observer.events[1]
        assert isinstance(bounced, events.RecipientBounced)
        self.assertEqual(
            (bounced.recipient, bounced.dsnCode, bounced.bounceQueueId, bounced.remoteHost),
            ("b@example.test", "5.1.1", first.queueId, "mx.example.test"),
        )
        deferred = self.observer.events[2]
        assert isinstance(deferred, events.RecipientDeferred)
        self.assertEqual((deferred.recipient, deferred.attempt), ("a@example.test", 1))
        self.assertEqual(deferred.error, "451 4.3.0 later")
        self.assertEqual(deferred.nextAttempt, self.state(envelope).recipients[0].nextAttempt)
        del self.observer.events[:]
        self.queue.reconfigure(replace(self.settings, queueLifetime=1.0))
        self.clock.advance(deferred.nextAttempt - self.clock.seconds())
        attempts = [a for a in self.courier.attempts if a[1][0].queueId == envelope.queueId]
        [(_, [again], listener, d)] = attempts[-1:]
        listener.settled(again, [refused("a@example.test", DEFERRED, "451 4.3.0 later")])
        d.callback(None)
        self.clock.advance(0)
        expired = [e for e in self.observer.events if isinstance(e, events.RecipientExpired)]
        [event] = expired
        self.assertEqual(event.recipient, "a@example.test")
        self.assertEqual(event.dsnCode, "5.4.7")
        self.assertIn("451 4.3.0 later", event.lastError)
        self.assertIsNotNone(event.bounceQueueId)

    def test_nullSender(self) -> None:
        """
        A refused message from C{<>}: C{bounced} without a bounce queue id.
        """
        stored = self.spool.store(b"Subject: x\r\n\r\ny\r\n", "", [("a@example.test", False)])
        self.clock.advance(0)
        self.successResultOf(stored)
        self.clock.advance(0)
        [(_, [message], listener, d)] = self.courier.attempts
        listener.settled(message, [refused("a@example.test", FAILED, "550 5.1.1 no")])
        d.callback(None)
        [_, bounced] = self.observer.events
        assert isinstance(bounced, events.RecipientBounced)
        self.assertIsNone(bounced.bounceQueueId)


class EndToEndTests(TestCase):
    """
    A real server relays to a loopback receiver; the delivery events
    webhook posts C{queued} and C{delivered}, signed.
    """

    timeout = 120

    @inlineCallbacks
    def test_deliveredWebhook(self):
        directory = shortDirectory(self)
        sink = SMTPTestServer().start()
        self.addCleanup(sink.stop)
        receiver = WebhookReceiver([], default=200).start()
        self.addCleanup(receiver.stop)
        secret = newSecret()
        port = freePort()
        startInProcess(
            self,
            serverEnvironment(
                os.path.join(directory, "spool"),
                port,
                SMTP_RELAY_HOST=f"127.0.0.1:{sink.port}",
                SMTP_OUTBOUND_TLS="may",
                SMTP_EVENTS_WEBHOOK_URL=receiver.url,
                SMTP_EVENTS_WEBHOOK_SECRET=secret,
            ),
        )

        def send():
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail(
                    "alice@gopherpost.test", ["bob@example.test"], b"Subject: e\r\n\r\nx\r\n"
                )

        yield deferToThread(send)
        yield receiver.waitFor(2)
        documents = [json.loads(r.body) for r in receiver.requests]
        for request in receiver.requests:
            verifyWebhook(secret, request)
        byType = {d["type"]: d for d in documents}
        self.assertEqual(sorted(byType), ["delivered", "queued"])
        delivered = byType["delivered"]
        self.assertEqual(delivered["recipient"], "bob@example.test")
        self.assertEqual(delivered["remote"]["ip"], "127.0.0.1")
        self.assertEqual(delivered["remote"]["port"], sink.port)
        self.assertTrue(delivered["reply"].startswith("250 "), delivered["reply"])
        self.assertEqual(byType["queued"]["recipients"], ["bob@example.test"])
        self.assertEqual(delivered["queue_id"], byType["queued"]["queue_id"])
        self.assertEqual(len(sink.messages), 1)
