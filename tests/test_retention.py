"""
Tests for L{gopherpost.retention}: delivered mail leaves the spool, local
mail is pruned only when asked, nothing still queued is touched.
"""

from __future__ import annotations

import os
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost import retention
from gopherpost.queueview import QueueView
from gopherpost.relay.state import DELIVERED, FAILED
from gopherpost.reload.interfaces import IReconfigurable
from gopherpost.retention import RetentionPolicy, RetentionService, SweepResult
from gopherpost.webhooks.records import INBOUND, OwedInbound, WebhookStore
from tests.support.inbound import testSettings
from tests.support.operations import SpoolFixture, synchronous

DAY = 86400


class RetentionTests(SynchronousTestCase):
    """
    One sweep at a time, driven by a L{Clock}, file-system work run at once.
    """

    def setUp(self) -> None:
        self.fixture = SpoolFixture(self)
        self.clock = self.fixture.clock

    def service(self, **policy: Any) -> RetentionService:
        return RetentionService(
            self.fixture.path, RetentionPolicy(**policy), self.clock, synchronous
        )

    def sweep(self, service: RetentionService) -> SweepResult:
        return self.successResultOf(service.sweep())

    def setFinishedAt(self, envelope, when: float) -> None:
        path = os.path.join(
            self.fixture.path, envelope.dateDirectory, envelope.queueId + ".relayed"
        )
        os.utime(path, (when, when))

    def test_interface(self) -> None:
        """
        The service reloads its policy.
        """
        verifyObject(IReconfigurable, self.service())

    def test_deliveredRemovedAtOnce(self) -> None:
        """
        By default a message whose recipients are all remote and final
        (delivered or bounced) leaves the spool at the next sweep: envelope,
        state and content.
        """
        delivered = self.fixture.message([("a@remote.test", False), ("b@remote.test", False)])
        self.fixture.relayState(delivered, {"a@remote.test": DELIVERED, "b@remote.test": FAILED})
        result = self.sweep(self.service())
        self.assertEqual(result.delivered, 1)
        self.assertEqual(self.fixture.files(delivered), [])

    def test_queuedNeverRemoved(self) -> None:
        """
        A message with a remote recipient still pending stays, with or
        without a state file, whatever the limits, local recipients or not.
        """
        fresh = self.fixture.message()
        tried = self.fixture.message([("a@remote.test", False), ("b@remote.test", False)])
        self.fixture.relayState(tried, {"a@remote.test": DELIVERED})
        mixed = self.fixture.message([("me@local.test", True), ("far@remote.test", False)])
        self.clock.advance(40 * DAY)
        service = self.service(retentionDays=1, maxMessages=1)
        result = self.sweep(service)
        self.assertFalse(result)
        for envelope in (fresh, tried, mixed):
            self.assertIn(envelope.queueId + ".envelope", self.fixture.files(envelope))

    def test_owedWebhookKeeps(self) -> None:
        """
        A finished message the inbound webhook has not settled yet (its
        receiver is down) stays until it is settled; one received before
        the webhook was turned on does not wait.
        """
        store = WebhookStore(os.path.join(self.fixture.path, ".gopherpost"))
        store.open()
        before = self.fixture.message()
        self.fixture.relayState(before, {"rcpt@remote.test": DELIVERED})
        self.clock.advance(1)
        store.setSince(self.clock.seconds())
        owed = self.fixture.message()
        self.fixture.relayState(owed, {"rcpt@remote.test": DELIVERED})
        service = RetentionService(
            self.fixture.path,
            RetentionPolicy(),
            self.clock,
            synchronous,
            owedWebhooks=lambda: OwedInbound(store),
        )
        self.assertEqual(self.sweep(service).delivered, 1)
        self.assertEqual(self.fixture.files(before), [])
        self.assertIn(owed.queueId + ".envelope", self.fixture.files(owed))
        store.settle(INBOUND, owed.dateDirectory, owed.queueId, "delivered")
        self.assertEqual(self.sweep(service).delivered, 1)
        self.assertEqual(self.fixture.files(owed), [])

    def test_keepDelivered(self) -> None:
        """
        With C{SMTP_KEEP_DELIVERED}, a finished message stays that long
        after it became final.
        """
        envelope = self.fixture.message()
        self.fixture.relayState(envelope, {"rcpt@remote.test": DELIVERED})
        self.setFinishedAt(envelope, self.clock.seconds())
        service = self.service(keepDelivered=7 * DAY)
        self.clock.advance(6 * DAY)
        self.assertFalse(self.sweep(service))
        self.clock.advance(DAY)
        self.assertEqual(self.sweep(service).delivered, 1)
        self.assertEqual(self.fixture.files(envelope), [])

    def test_localKeptByDefault(self) -> None:
        """
        Local mail is the spool's product: kept for ever by default, also
        a message whose remote recipients are all final.
        """
        local = self.fixture.message([("me@local.test", True)])
        mixed = self.fixture.message([("me@local.test", True), ("far@remote.test", False)])
        self.fixture.relayState(mixed, {"far@remote.test": DELIVERED})
        self.clock.advance(1000 * DAY)
        self.assertFalse(self.sweep(self.service()))
        self.assertEqual(len(list(QueueView(self.fixture.path).messages(queuedOnly=False))), 2)
        self.assertNotEqual(self.fixture.files(local), [])

    def test_retentionDays(self) -> None:
        """
        C{SMTP_RETENTION_DAYS} removes local messages older than that.
        """
        old = self.fixture.message([("me@local.test", True)])
        self.clock.advance(20 * DAY)
        young = self.fixture.message([("me@local.test", True)])
        self.clock.advance(11 * DAY)
        result = self.sweep(self.service(retentionDays=30))
        self.assertEqual(result.expired, 1)
        self.assertEqual(self.fixture.files(old), [])
        self.assertNotEqual(self.fixture.files(young), [])

    def test_maxMessages(self) -> None:
        """
        C{SMTP_RETENTION_MAX_MESSAGES} removes the oldest local messages
        beyond that many; those still queued count but are not removed.
        """
        envelopes = []
        for recipients in (
            [("me@local.test", True), ("far@remote.test", False)],
            [("me@local.test", True)],
            [("me@local.test", True)],
            [("me@local.test", True)],
        ):
            envelopes.append(self.fixture.message(recipients))
            self.clock.advance(1)
        first, second, third, fourth = envelopes
        result = self.sweep(self.service(maxMessages=2))
        self.assertEqual(result.overLimit, 2)
        self.assertNotEqual(self.fixture.files(first), [])
        self.assertEqual(self.fixture.files(second), [])
        self.assertEqual(self.fixture.files(third), [])
        self.assertNotEqual(self.fixture.files(fourth), [])

    def test_batches(self) -> None:
        """
        Work goes to the thread in steps of at most L{retention.BATCH}
        messages.
        """
        self.patch(retention, "BATCH", 2)
        envelopes = [self.fixture.message() for _ in range(5)]
        for envelope in envelopes:
            self.fixture.relayState(envelope, {"rcpt@remote.test": DELIVERED})
        steps = []

        def counting(f, *args):
            steps.append(f)
            return synchronous(f, *args)

        service = RetentionService(self.fixture.path, RetentionPolicy(), self.clock, counting)
        self.assertEqual(self.sweep(service).delivered, 5)
        # The listing, three scan steps (2 + 2 + 1 envelopes), three removal
        # steps (2 + 2 + 1 messages).
        self.assertEqual(len(steps), 7)

    def test_leftoversAndOldDirectories(self) -> None:
        """
        Content a crash left without an envelope in a directory older than
        yesterday is removed, and so is such a directory once empty; today's
        and yesterday's are left alone (a commit may be writing there).
        """
        envelope = self.fixture.message()
        directory = os.path.join(self.fixture.path, envelope.dateDirectory)
        os.unlink(os.path.join(directory, envelope.queueId + ".envelope"))
        service = self.service()
        self.assertFalse(self.sweep(service))
        self.assertNotEqual(self.fixture.files(envelope), [])
        self.clock.advance(2 * DAY)
        self.assertEqual(self.sweep(service).leftovers, 1)
        self.assertTrue(os.path.isdir(directory))
        self.sweep(service)
        self.assertFalse(os.path.exists(directory))

    def test_cachedFacts(self) -> None:
        """
        Kept messages' envelopes are read once, not at every sweep.
        """
        self.fixture.message([("me@local.test", True)])
        reads = []
        original = retention._readFacts

        def counting(path):
            reads.append(path)
            return original(path)

        self.patch(retention, "_readFacts", counting)
        service = self.service()
        self.sweep(service)
        self.sweep(service)
        self.assertEqual(len(reads), 1)

    def test_logLine(self) -> None:
        """
        A sweep that removed something says so in one line.
        """
        events = EventLoggingObserver.createWithCleanup(cast(Any, self), globalLogPublisher)
        envelope = self.fixture.message()
        self.fixture.relayState(envelope, {"rcpt@remote.test": DELIVERED})
        self.sweep(self.service())
        lines = [e["line"] for e in events if "line" in e]
        self.assertEqual(
            lines, ["Retention removed 1 delivered or bounced messages from the spool"]
        )

    def test_schedule(self) -> None:
        """
        The service sweeps every L{retention.SWEEP_INTERVAL} seconds while
        it runs; a reload's policy applies from the next sweep.
        """
        envelope = self.fixture.message([("me@local.test", True)])
        service = self.service()
        service.startService()
        self.addCleanup(service.stopService)
        self.clock.advance(retention.SWEEP_INTERVAL)
        self.assertNotEqual(self.fixture.files(envelope), [])
        settings = testSettings(self.fixture.path, retentionDays=1)
        service.prepareReload(settings)()
        self.assertEqual(service.policy, RetentionPolicy(retentionDays=1))
        self.clock.advance(2 * DAY)
        self.assertEqual(self.fixture.files(envelope), [])

    def test_stopWaitsForStep(self) -> None:
        """
        Stopping waits for the thread step in progress, and no sweep starts
        after.
        """
        pending: list[Deferred] = []

        def slow(f, *args):
            d: Deferred = Deferred()
            pending.append(d)
            d.addCallback(lambda _: f(*args))
            return d

        service = RetentionService(self.fixture.path, RetentionPolicy(), self.clock, slow)
        service.startService()
        self.clock.advance(retention.SWEEP_INTERVAL)
        stopped = service.stopService()
        self.assertNoResult(stopped)
        pending[0].callback(None)
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sweepFailureLogged(self) -> None:
        """
        An unexpected error in a sweep is logged, and the next sweep runs.
        """

        def broken(f, *args):
            raise RuntimeError("boom")

        service = RetentionService(self.fixture.path, RetentionPolicy(), self.clock, broken)
        self.assertFalse(self.successResultOf(service.sweep()))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
