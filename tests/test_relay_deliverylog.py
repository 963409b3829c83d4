"""
Tests for the delivery log lines (L{gopherpost.relay.deliverylog}) as the
relay queue writes them, asserted with an L{EventLoggingObserver}, and for
the count of delivery attempts (C{smtp_delivery_attempts_total}).
"""

from __future__ import annotations

import re
from typing import Any, cast

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.metrics import Metrics
from gopherpost.relay.courier import RecipientDelivery
from gopherpost.relay.deliverylog import formatSeconds, queuedLine, recipientLine, relayOf
from gopherpost.relay.outcome import DEFERRED, FAILED, SENT
from tests.test_queue import QueueTestCase


class FormatTests(SynchronousTestCase):
    def test_seconds(self) -> None:
        """
        Postfix's way: two decimals at most, no trailing zeros, whole
        seconds from 10 on.
        """
        self.assertEqual(
            [formatSeconds(s) for s in (0, 0.004, 0.05, 0.3, 1.25, 9.999, 12.4, 3600, -1)],
            ["0", "0", "0.05", "0.3", "1.25", "10", "12", "3600", "0"],
        )

    def test_relay(self) -> None:
        self.assertEqual(
            relayOf("mx.example.test", "192.0.2.1", 25), "mx.example.test[192.0.2.1]:25"
        )
        self.assertEqual(relayOf("", "", 0), "none")

    def test_lines(self) -> None:
        self.assertEqual(queuedLine("ABC", "", 10, 2), "ABC: from=<>, size=10, nrcpt=2")
        self.assertEqual(
            recipientLine(
                "ABC",
                "b@example.test",
                "none",
                1.5,
                (1, 0.25, 0),
                "4.4.3",
                "deferred",
                "4.4.3 no\r\nDNS",
            ),
            "ABC: to=<b@example.test>, relay=none, delay=1.5, delays=1/0.25/0, dsn=4.4.3, "
            "status=deferred (4.4.3 no DNS)",
        )

    def test_connectionUse(self) -> None:
        """
        A delivery over a connection taken up again says which use it was,
        after the relay, as Postfix does; the first use says nothing.
        """
        arguments = ("ABC", "b@example.test", "mx.example.test[192.0.2.25]:25", 0.5)
        rest = ((0, 0, 0.5), "2.0.0", "sent", "250 2.0.0 Ok")
        self.assertEqual(
            recipientLine(*arguments, *rest, "", 3),
            "ABC: to=<b@example.test>, relay=mx.example.test[192.0.2.25]:25, conn_use=3, "
            "delay=0.5, delays=0/0/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        )
        self.assertNotIn("conn_use", recipientLine(*arguments, *rest, "", 1))


def remote(
    recipient: str, status: str, reply: str, dsn: str, connect: float = 0.5, transfer: float = 0.25
) -> RecipientDelivery:
    return RecipientDelivery(
        recipient,
        status,
        reply,
        dsn,
        True,
        "mx.example.test",
        "192.0.2.25",
        25,
        connectSeconds=connect,
        transferSeconds=transfer,
    )


class QueueLogTests(QueueTestCase):
    def setUp(self) -> None:
        self.log = EventLoggingObserver.createWithCleanup(cast(Any, self), globalLogPublisher)
        super().setUp()

    def lines(self) -> list[str]:
        return [
            formatEvent(e) for e in self.log if e["log_namespace"] == "gopherpost.relay.deliverylog"
        ]

    def test_sent(self) -> None:
        """
        Queued, sent (relay, delay, delays, dsn, the remote's reply), removed;
        at info level.
        """
        [envelope] = self.spoolMessages(1)
        [(_, [message], listener, d)] = self.courier.attempts
        self.clock.advance(2)
        reply = "250 2.0.0 Ok: queued as X1"
        listener.settled(message, [remote(message.recipients[0], SENT, reply, "2.0.0")])
        d.callback(None)
        q = envelope.queueId
        self.assertEqual(
            self.lines(),
            [
                f"{q}: from=<alice@gopherpost.test>, size={envelope.size}, nrcpt=1",
                f"{q}: to=<r0.0@example.test>, relay=mx.example.test[192.0.2.25]:25, delay=2, "
                f"delays=0/0.5/0.25, dsn=2.0.0, status=sent ({reply})",
                f"{q}: removed",
            ],
        )
        levels = {e["log_level"] for e in self.log if e["log_namespace"].endswith("deliverylog")}
        self.assertEqual(levels, {LogLevel.info})

    def test_deferredByDNS(self) -> None:
        """
        A DNS failure is a deferral with C{relay=none}, and counts as an
        attempt in C{smtp_delivery_attempts_total}.
        """
        [envelope] = self.spoolMessages(1)
        [(_, [message], listener, d)] = self.courier.attempts
        reason = "4.4.3 example.test: DNS server timed out"
        listener.settled(
            message,
            [RecipientDelivery(message.recipients[0], DEFERRED, reason, "4.4.3", False)],
        )
        d.callback(None)
        [_, deferred] = self.lines()
        self.assertEqual(
            deferred,
            f"{envelope.queueId}: to=<r0.0@example.test>, relay=none, delay=0, "
            f"delays=0/0/0, dsn=4.4.3, status=deferred ({reason})",
        )
        metrics = Metrics(clock=self.clock)
        for name, fields in self.audit.events:
            metrics.eventReceived({"event": name, **fields})
        counts = metrics.asJSON()
        self.assertEqual(counts["smtp_delivery_attempts_total"], 1)
        self.assertEqual(counts["smtp_delivery_deferrals_total"], 1)

    def test_bounced(self) -> None:
        """
        A refusal: a C{bounced} line with the recipient and the remote's
        reply, then the DSN's own queue id, then the DSN's own lines.
        """
        stored = self.spool.store(
            b"Subject: x\r\n\r\ny\r\n", "al@sender.test", [("r0.0@example.test", False)]
        )
        self.clock.advance(0)
        envelope = self.successResultOf(stored)
        self.clock.advance(0)
        [(_, [message], listener, d)] = self.courier.attempts
        reply = "550 5.1.1 no such user"
        listener.settled(message, [remote(message.recipients[0], FAILED, reply, "5.1.1")])
        d.callback(None)
        self.clock.advance(0)
        self.clock.advance(0)
        [bounce] = [e for e in self.spool.envelopes() if e.sender == ""]
        self.assertEqual([r.address for r in bounce.recipients], ["al@sender.test"])
        q, b = envelope.queueId, bounce.queueId
        lines = self.lines()
        self.assertEqual(
            lines[1],
            f"{q}: to=<r0.0@example.test>, relay=mx.example.test[192.0.2.25]:25, delay=0, "
            f"delays=0/0.5/0.25, dsn=5.1.1, status=bounced ({reply})",
        )
        self.assertIn(f"{q}: sender non-delivery notification: {b}", lines)
        self.assertIn(f"{q}: removed", lines)
        self.assertIn(f"{b}: from=<>, size={bounce.size}, nrcpt=1", lines)

    def test_expired(self) -> None:
        """
        A recipient still deferred when the queue lifetime ran out: a
        C{bounced} line with C{dsn=5.4.7} and the last error.
        """
        [envelope] = self.spoolMessages(1)
        [(_, [message], listener, d)] = self.courier.attempts
        self.clock.advance(self.settings.queueLifetime)
        listener.settled(
            message, [remote(message.recipients[0], DEFERRED, "451 4.3.0 later", "4.3.0")]
        )
        d.callback(None)
        expired = [line for line in self.lines() if "status=bounced" in line]
        self.assertEqual(len(expired), 1)
        self.assertRegex(
            expired[0],
            re.escape(
                f"{envelope.queueId}: to=<r0.0@example.test>, relay=mx.example.test[192.0.2.25]:25, "
            )
            + r"delay=\d+, delays=0/0.5/0.25, dsn=5\.4\.7, status=bounced "
            + re.escape("(5.4.7 Delivery time expired; last error: 451 4.3.0 later)"),
        )

    def test_attemptsCountedPerMessage(self) -> None:
        """
        One attempt per message per delivery attempt, whatever the hosts
        tried.
        """
        self.spoolMessages(2)
        [(_, messages, listener, d)] = self.courier.attempts
        listener.attempting(messages, "mx1.example.test", "192.0.2.1", 25)
        listener.attempting(messages, "mx2.example.test", "192.0.2.2", 25)
        for message in messages:
            listener.settled(message, [remote(message.recipients[0], SENT, "250 ok", "2.0.0")])
        d.callback(None)
        self.assertEqual(len(self.audit.named("delivery.attempt")), 2)
        self.assertEqual(len(self.audit.named("delivery.connect")), 4)
