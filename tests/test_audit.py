"""
Tests for L{gopherpost.audit}.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEventAsClassicLogText, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from gopherpost.audit import (
    DROPPED_EVENT,
    AuditLog,
    AuditSubscription,
    formatAuditLine,
)
from gopherpost.interfaces import IAuditLog, IAuditSubscription

T0 = 1763830000.25  # 2025-11-22T16:46:40.250Z
CLIENT = "192.0.2.1"


def makeLog(debug: bool = False) -> AuditLog:
    clock = Clock()
    clock.advance(T0)
    return AuditLog(debug, clock)


def auditEvents(observer: EventLoggingObserver) -> list[dict[str, Any]]:
    return [e for e in observer if e.get("log_namespace") == "gopherpost.audit"]


class InterfaceTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """
        L{AuditLog} provides L{IAuditLog}; its subscriptions provide
        L{IAuditSubscription} and L{IPushProducer}.
        """
        audit = makeLog()
        self.assertTrue(verifyObject(IAuditLog, audit))
        subscription = audit.subscribe(lambda e: None)
        self.assertTrue(verifyObject(IAuditSubscription, subscription))
        self.assertTrue(verifyObject(IPushProducer, subscription))

    def test_maxBufferedPositive(self) -> None:
        """
        A subscriber must be allowed at least one buffered event.
        """
        self.assertRaises(ValueError, makeLog().subscribe, lambda e: None, maxBuffered=0)


class EmitTests(TestCase):
    def test_fanOut(self) -> None:
        """
        Every subscriber gets the event dict: name, clock time, fields.
        """
        audit = makeLog()
        first: list[dict] = []
        second: list[dict] = []
        audit.subscribe(first.append)
        audit.subscribe(second.append)
        audit.emit("session.start", client="192.0.2.1")
        expected = {"event": "session.start", "time": T0, "client": "192.0.2.1"}
        self.assertEqual(first, [expected])
        self.assertEqual(second, [expected])

    def test_addressesDroppedWithoutDebug(self) -> None:
        """
        Without debugging, C{sender}, C{recipient} and an address list in
        C{recipients} are dropped; a recipient count is kept.
        """
        audit = makeLog(debug=False)
        seen: list[dict] = []
        audit.subscribe(seen.append)
        audit.emit("smtp.mail", client=CLIENT, accepted=True, code=250, sender="a@example.test")
        audit.emit("smtp.rcpt", client=CLIENT, accepted=False, code=550, recipient="b@example.test")
        audit.emit("message.queued", queueId="q1", recipients=3)
        audit.emit("x.list", recipients=["b@example.test"])
        self.assertNotIn("sender", seen[0])
        self.assertEqual(seen[0]["code"], 250)
        self.assertNotIn("recipient", seen[1])
        self.assertEqual(seen[2]["recipients"], 3)
        self.assertNotIn("recipients", seen[3])

    def test_addressesKeptWithDebug(self) -> None:
        """
        With debugging on, addresses are kept.
        """
        audit = makeLog(debug=True)
        seen: list[dict] = []
        audit.subscribe(seen.append)
        audit.emit("smtp.mail", client=CLIENT, accepted=True, code=250, sender="a@example.test")
        audit.emit("x.list", recipients=["b@example.test"])
        self.assertEqual(seen[0]["sender"], "a@example.test")
        self.assertEqual(seen[1]["recipients"], ["b@example.test"])

    def test_noLogEventWithoutDebug(self) -> None:
        """
        Without debugging nothing reaches the log observers (nothing would
        print it); subscribers still get the structured event.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        audit = makeLog(debug=False)
        seen: list[dict] = []
        audit.subscribe(seen.append)
        audit.emit("session.start", client="192.0.2.1")
        self.assertEqual(auditEvents(observer), [])
        self.assertEqual(seen[0]["event"], "session.start")
        self.assertEqual(seen[0]["client"], "192.0.2.1")

    def test_logLineWithDebug(self) -> None:
        """
        With debugging on, the log event is printed as one audit line.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        makeLog(debug=True).emit("smtp.helo", client="192.0.2.1", helo="mx.example.test")
        [event] = auditEvents(observer)
        text = formatEventAsClassicLogText(event) or ""
        self.assertIn("smtp.helo client=192.0.2.1 helo=mx.example.test", text)
        self.assertEqual(text.count("\n"), 1)

    def test_subscriberErrorDoesNotEscape(self) -> None:
        """
        A failing subscriber is logged; emit does not raise and the other
        subscribers still get the event.
        """
        audit = makeLog()
        seen: list[dict] = []

        def broken(event: dict) -> None:
            raise RuntimeError("subscriber bug")

        audit.subscribe(broken)
        audit.subscribe(seen.append)
        audit.emit("session.start", client="192.0.2.1")
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_brokenClockDoesNotEscape(self) -> None:
        """
        Even an internal failure does not reach the caller of emit.
        """

        class BrokenClock(Clock):
            def seconds(self) -> float:
                raise OSError("no time")

        audit = AuditLog(False, BrokenClock())
        audit.emit("session.start", client="192.0.2.1")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class SubscriptionTests(SynchronousTestCase):
    def test_cancel(self) -> None:
        """
        A cancelled subscriber is removed at once and gets nothing more;
        cancelling twice is harmless.
        """
        audit = makeLog()
        seen: list[dict] = []
        subscription = audit.subscribe(seen.append)
        subscription.cancel()
        subscription.cancel()
        audit.emit("session.start", client="192.0.2.1")
        self.assertEqual(seen, [])
        self.assertEqual(audit.subscriptions, ())
        self.assertFalse(subscription.active)

    def test_stopProducingCancels(self) -> None:
        """
        C{stopProducing} (the consumer went away) cancels.
        """
        audit = makeLog()
        subscription = audit.subscribe(lambda e: None)
        subscription.stopProducing()
        self.assertEqual(audit.subscriptions, ())

    def test_cancelOtherDuringFanOut(self) -> None:
        """
        A subscriber may cancel another while an event is being fanned out;
        the cancelled one does not get that event.
        """
        audit = makeLog()
        seen: list[dict] = []
        subscriptions: list[AuditSubscription] = []
        audit.subscribe(lambda e: subscriptions[0].cancel())
        subscriptions.append(audit.subscribe(seen.append))
        audit.emit("session.start", client="192.0.2.1")
        self.assertEqual(seen, [])
        self.assertEqual(len(audit.subscriptions), 1)

    def test_pausedBuffersThenResumes(self) -> None:
        """
        A paused subscriber gets buffered events, in order, on resume.
        """
        audit = makeLog()
        seen: list[dict] = []
        subscription = audit.subscribe(seen.append, maxBuffered=10)
        subscription.pauseProducing()
        for i in range(3):
            audit.emit("n", i=i)
        self.assertEqual(seen, [])
        self.assertEqual(subscription.buffered, 3)
        subscription.resumeProducing()
        self.assertEqual([e["i"] for e in seen], [0, 1, 2])
        audit.emit("n", i=3)
        self.assertEqual([e["i"] for e in seen], [0, 1, 2, 3])

    def test_overflowDropsOldestAndTells(self) -> None:
        """
        Past C{maxBuffered} the oldest events are dropped; on resume the
        subscriber is first told how many, then gets the newest ones.
        """
        audit = makeLog()
        seen: list[dict] = []
        subscription = audit.subscribe(seen.append, maxBuffered=3)
        subscription.pauseProducing()
        for i in range(10):
            audit.emit("n", i=i)
        self.assertEqual(subscription.buffered, 3)
        self.assertEqual(subscription.droppedTotal, 7)
        subscription.resumeProducing()
        self.assertEqual(seen[0]["event"], DROPPED_EVENT)
        self.assertEqual(seen[0]["count"], 7)
        self.assertEqual(formatAuditLine(seen[0]).split(" ", 1)[1], "... 7 lines dropped")
        self.assertEqual([e["i"] for e in seen[1:]], [7, 8, 9])

    def test_pausedAgainWhileDraining(self) -> None:
        """
        A subscriber paused by its own callback while draining stops
        receiving until resumed again, and keeps the order.
        """
        audit = makeLog()
        seen: list[dict] = []
        subscriptions: list[AuditSubscription] = []

        def callback(event: dict) -> None:
            seen.append(event)
            subscriptions[0].pauseProducing()

        subscriptions.append(audit.subscribe(callback, maxBuffered=10))
        subscriptions[0].pauseProducing()
        for i in range(3):
            audit.emit("n", i=i)
        subscriptions[0].resumeProducing()
        self.assertEqual([e["i"] for e in seen], [0])
        audit.emit("n", i=3)
        subscriptions[0].resumeProducing()
        self.assertEqual([e["i"] for e in seen], [0, 1])
        for _ in range(2):
            subscriptions[0].resumeProducing()
        self.assertEqual([e["i"] for e in seen], [0, 1, 2, 3])

    def test_resumeErrorDoesNotEscape(self) -> None:
        """
        A callback failing while the buffer drains is logged, not raised
        into the consumer that resumed it.
        """
        audit = makeLog()

        def broken(event: dict) -> None:
            raise RuntimeError("subscriber bug")

        subscription = audit.subscribe(broken)
        subscription.pauseProducing()
        audit.emit("n")
        subscription.resumeProducing()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_neverReadingSubscriberDoesNotGrowMemory(self) -> None:
        """
        A subscriber that stays paused holds at most C{maxBuffered} events,
        however many are emitted: memory does not grow with the event count.
        """
        audit = makeLog()
        subscription = audit.subscribe(lambda e: None, maxBuffered=100)
        subscription.pauseProducing()

        def burst(n: int) -> None:
            for i in range(n):
                audit.emit("delivery.attempt", queueId=f"q{i:08d}", mx="mx.example.test")

        tracemalloc.start()
        try:
            burst(2000)
            before = tracemalloc.get_traced_memory()[0]
            burst(20000)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertEqual(subscription.buffered, 100)
        self.assertEqual(subscription.droppedTotal, 22000 - 100)
        # 20000 more events kept would be megabytes.
        self.assertLess(after - before, 200_000)


class FormatTests(SynchronousTestCase):
    def test_line(self) -> None:
        """
        A line is the UTC time with milliseconds, the event, then the
        fields in order as key=value.
        """
        line = formatAuditLine(
            {
                "event": "message.queued",
                "time": T0,
                "queueId": "1a2b",
                "client": "2001:db8::1",
                "size": 1234,
                "tls": True,
                "latency": 1.5,
                "mx": None,
            }
        )
        self.assertEqual(
            line,
            "2025-11-22T16:46:40.250Z message.queued queueId=1a2b "
            "client=2001:db8::1 size=1234 tls=true latency=1.5 mx=-",
        )

    def test_quoting(self) -> None:
        """
        Values with spaces, line breaks or C{=} are JSON strings, so a value
        cannot break the line or forge a field.
        """
        line = formatAuditLine(
            {"event": "smtp.helo", "time": T0, "helo": "evil\r\nx=1 y", "reply": "250 2.0.0 Ok"},
            includeTime=False,
        )
        self.assertEqual(line, 'smtp.helo helo="evil\\r\\nx=1 y" reply="250 2.0.0 Ok"')
        self.assertNotIn("\n", line)

    def test_droppedLine(self) -> None:
        """
        The drop notice reads C{... N lines dropped}.
        """
        self.assertEqual(
            formatAuditLine({"event": DROPPED_EVENT, "time": T0, "count": 12}),
            "2025-11-22T16:46:40.250Z ... 12 lines dropped",
        )
