"""
Tests for L{gopherpost.webhooks.logfile}.
"""

from __future__ import annotations

import io
import threading

from twisted.internet.task import Clock
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
)
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.webhooks.logfile import LOG_INTERVAL, BatchedTextLog

WHEN = 1796119200.25


class BatchedTextLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(WHEN)
        self.stream = io.StringIO()
        self.observer = BatchedTextLog(self.stream, self.clock)
        publisher = LogPublisher(self.observer)
        self.log = Logger(namespace="test", observer=publisher)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(ILogObserver, self.observer))

    def test_batched(self) -> None:
        """
        Informational lines wait up to L{LOG_INTERVAL} seconds and are then
        written together, as the text file observer writes them, the time
        stamp text made once per second.
        """
        events = [
            dict(
                log_format="webhook={kind} id={id}",
                log_level=LogLevel.info,
                log_namespace="test",
                log_time=when,
                kind="inbound",
                id=f"Q{number}",
            )
            for number, when in enumerate((WHEN, WHEN + 0.5, WHEN + 1), 1)
        ]
        for event in events:
            self.observer(event)
        self.assertEqual(self.stream.getvalue(), "")
        self.clock.advance(LOG_INTERVAL)
        self.assertEqual(
            self.stream.getvalue(), "".join(formatEventAsClassicLogText(e) or "" for e in events)
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sameTextAsTwisted(self) -> None:
        """
        A line reads as L{formatEventAsClassicLogText} makes it (the time
        stamp in the local zone, as Twisted's text observer writes it).
        """
        events: list[dict] = []
        self.log.observer.addObserver(events.append)  # type: ignore[attr-defined]
        self.log.info("hello {who}", who="world")
        self.log.info("again {who}", who="world")
        self.observer.flush()
        expected = "".join(formatEventAsClassicLogText(e) or "" for e in events)
        self.assertEqual(self.stream.getvalue(), expected)

    def test_warningAtOnce(self) -> None:
        """
        A warning is written at once, after what waited before it.
        """
        self.log.info("first")
        self.log.warn("second")
        lines = self.stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("first", lines[0])
        self.assertIn("[test#warn] second", lines[1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_otherThread(self) -> None:
        """
        An event from another thread is written at once (the clock is the
        reactor's, for its own thread only).
        """
        thread = threading.Thread(target=lambda: self.log.info("from a thread"))
        thread.start()
        thread.join()
        self.assertIn("from a thread", self.stream.getvalue())

    def test_noInterval(self) -> None:
        """
        With an interval of 0 every line is written at once.
        """
        observer = BatchedTextLog(self.stream, self.clock, interval=0)
        Logger(namespace="test", observer=observer).info("now")
        self.assertIn("now", self.stream.getvalue())
        self.assertEqual(self.clock.getDelayedCalls(), [])
