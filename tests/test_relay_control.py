"""
Tests for the relay queue's operations (L{gopherpost.relay.queue.RelayQueue}
C{flush}, C{hold}, C{release}, C{delete}, C{bounce}) and their control
commands (L{gopherpost.relay.control}), driven by a scripted courier on a
real spool with a clock.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.control.registry import BAD_REQUEST, CommandRegistry, ControlError, IControlCommands
from gopherpost.queueview import QueueView
from gopherpost.relay.control import QueueCommands
from gopherpost.relay.outcome import DEFERRED, SENT
from gopherpost.relay.queue import RelayQueue
from gopherpost.relay.state import DELETED, DELIVERED, FAILED, PENDING
from gopherpost.retention import RetentionPolicy, RetentionService
from tests.support.inbound import RecordingAudit, testSettings
from tests.test_queue import QueueTestCase, ScriptedCourier, _synchronous, delivery


class OperationsTestCase(QueueTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.registry = CommandRegistry()
        self.registry.addProvider(QueueCommands(self.queue))

    def call(self, name: str, **arguments: Any) -> Any:
        return self.successResultOf(self.registry.dispatch(name, arguments))

    def refused(self, name: str, **arguments: Any) -> ControlError:
        failure = self.failureResultOf(self.registry.dispatch(name, arguments), ControlError)
        error = failure.value
        assert isinstance(error, ControlError)
        return error

    def deferAll(self) -> None:
        """
        Finish every attempt in progress with a deferral for each recipient.
        """
        attempts, self.courier.attempts[:] = list(self.courier.attempts), []
        for _, messages, listener, d in attempts:
            for message in messages:
                listener.settled(message, [delivery(r, DEFERRED) for r in message.recipients])
            d.callback(None)

    def restarted(self) -> RelayQueue:
        """
        A new queue on the same spool (the old one stopped).
        """
        self.queue.stopService()
        for stop in self.courier.stops:
            stop.callback(None)
        self.courier = ScriptedCourier()
        queue = RelayQueue(
            self.settings,
            self.spool,
            RecordingAudit(),
            self.courier,
            self.clock,
            randomSource=random.Random(4),
            runInThread=_synchronous,
        )
        queue.startService()
        self.clock.advance(0)
        return queue


class CommandTests(OperationsTestCase):
    """
    The commands' contract: arguments checked, results as gopherpostctl
    prints them.
    """

    def test_interface(self) -> None:
        """
        L{QueueCommands} offers the five actions.
        """
        commands = QueueCommands(self.queue)
        self.assertTrue(verifyObject(IControlCommands, commands))
        self.assertEqual(
            sorted(commands.controlCommands()),
            ["queue.bounce", "queue.delete", "queue.flush", "queue.hold", "queue.release"],
        )

    def test_badArguments(self) -> None:
        """
        Ids that are not queue ids, no ids, or ids with all: a bad request
        naming the problem.
        """
        self.assertEqual(self.refused("queue.hold", ids=["../etc"]).code, BAD_REQUEST)
        self.assertIn("not a queue id", self.refused("queue.hold", ids=["../etc"]).message)
        self.assertEqual(self.refused("queue.flush", ids=[]).message, "name queue ids or all")
        self.assertEqual(self.refused("queue.bounce", ids=[]).message, "name queue ids")
        self.assertEqual(self.refused("queue.hold", ids="ABC").code, BAD_REQUEST)
        [envelope] = self.spoolMessages(1)
        error = self.refused("queue.delete", ids=[envelope.queueId], all=True)
        self.assertEqual(error.message, "name queue ids or all, not both")

    def test_notFound(self) -> None:
        """
        An id not in the queue is reported as C{notFound}; ids are taken
        in any case.
        """
        [envelope] = self.spoolMessages(1)
        result = self.call("queue.hold", ids=[envelope.queueId.lower(), "0" * 19])
        self.assertEqual(result, {"held": [envelope.queueId], "notFound": ["0" * 19]})


class FlushTests(OperationsTestCase):
    def test_flushOne(self) -> None:
        """
        A deferred message is tried again at once; the others keep their
        schedule.
        """
        first, second = self.spoolMessages(2)
        self.deferAll()
        self.clock.advance(1)
        self.assertEqual(self.courier.attempts, [])
        result = self.call("queue.flush", ids=[second.queueId])
        self.assertEqual(result, {"flushed": [second.queueId], "held": [], "notFound": []})
        self.clock.advance(0)
        [(_, messages, _, _)] = self.courier.attempts
        self.assertEqual([m.queueId for m in messages], [second.queueId])

    def test_flushAll(self) -> None:
        """
        C{all}: every message is tried at once.
        """
        envelopes = self.spoolMessages(3)
        self.deferAll()
        result = self.call("queue.flush", all=True)
        self.assertEqual(sorted(result["flushed"]), sorted(e.queueId for e in envelopes))
        self.clock.advance(0)
        [(_, messages, _, _)] = self.courier.attempts
        self.assertEqual(len(messages), 3)


class HoldTests(OperationsTestCase):
    def test_heldNeverAttempted(self) -> None:
        """
        A held message is not tried when it comes due, nor by a flush,
        nor after a restart; the queue view says C{held}.
        """
        [envelope] = self.spoolMessages(1)
        self.deferAll()
        self.call("queue.hold", ids=[envelope.queueId])
        self.clock.advance(100000)
        result = self.call("queue.flush", all=True)
        self.assertEqual(result["held"], [envelope.queueId])
        self.clock.advance(0)
        self.assertEqual(self.courier.attempts, [])
        [view] = QueueView(self.path).messages()
        self.assertEqual(view.state, "held")
        self.assertTrue(view.asJSON()["held"])
        queue = self.restarted()
        self.clock.advance(100000)
        self.assertEqual(self.courier.attempts, [])
        self.assertEqual(queue.queueDepth(), 1)

    def test_heldKeptPastLifetime(self) -> None:
        """
        A held message outlives the queue lifetime; released, it gets one
        more attempt, and is bounced only when that one fails too.
        """
        [envelope] = self.spoolMessages(1)
        self.deferAll()
        self.call("queue.hold", ids=[envelope.queueId])
        self.clock.advance(self.settings.queueLifetime * 2)
        self.assertEqual(self.state(envelope).recipients[0].status, PENDING)
        self.assertEqual(self.queue.queueDepth(), 1)
        result = self.call("queue.release", ids=[envelope.queueId, envelope.queueId])
        self.assertEqual(result, {"released": [envelope.queueId], "notHeld": [], "notFound": []})
        self.assertFalse(self.state(envelope).held)
        self.clock.advance(0)
        self.assertEqual(len(self.courier.attempts), 1)
        self.deferAll()
        self.clock.advance(0)
        [recipient] = self.state(envelope).recipients
        self.assertEqual(recipient.status, FAILED)
        self.assertTrue(recipient.lastError.startswith("5.4.7"), recipient.lastError)

    def test_holdWhileDelivering(self) -> None:
        """
        An attempt in progress when the message is held finishes; a
        deferral then is not retried until release.
        """
        [envelope] = self.spoolMessages(1)
        self.call("queue.hold", ids=[envelope.queueId])
        self.deferAll()
        self.clock.advance(100000)
        self.assertEqual(self.courier.attempts, [])
        self.call("queue.release", ids=[envelope.queueId])
        self.clock.advance(0)
        self.assertEqual(len(self.courier.attempts), 1)

    def test_heldDuringLastAttempt(self) -> None:
        """
        A message held while an attempt runs past its lifetime is kept, not
        bounced, when that attempt fails.
        """
        [envelope] = self.spoolMessages(1)
        self.call("queue.hold", ids=[envelope.queueId])
        self.clock.advance(self.settings.queueLifetime + 1)
        self.deferAll()
        [recipient] = self.state(envelope).recipients
        self.assertEqual(recipient.status, PENDING)
        self.assertEqual([e for e in self.spool.envelopes() if e.sender == ""], [])

    def test_releaseNotHeld(self) -> None:
        """
        Releasing a message that is not held says so.
        """
        [envelope] = self.spoolMessages(1)
        result = self.call("queue.release", ids=[envelope.queueId])
        self.assertEqual(result, {"released": [], "notHeld": [envelope.queueId], "notFound": []})


class DeleteTests(OperationsTestCase):
    def sweep(self) -> None:
        """
        One retention sweep, as the server runs them.
        """
        # Retention compares the state file's time with its clock's.
        clock = Clock()
        clock.advance(time.time() + 1)
        retention = RetentionService(self.path, RetentionPolicy(), clock, _synchronous)
        self.successResultOf(retention.sweep())

    def test_deleteRemoteOnly(self) -> None:
        """
        A deleted message without local recipients leaves the queue at once
        and the spool at the next retention sweep, and no bounce is sent.
        """
        [envelope] = self.spoolMessages(1)
        self.deferAll()
        result = self.call("queue.delete", ids=[envelope.queueId])
        self.assertEqual(result, {"deleted": [envelope.queueId], "notFound": []})
        self.clock.advance(0)
        self.assertEqual(self.queue.queueDepth(), 0)
        [recipient] = self.state(envelope).recipients
        self.assertEqual(recipient.status, DELETED)
        self.assertEqual(list(QueueView(self.path).messages()), [])
        self.sweep()
        self.assertEqual(
            [n for n in os.listdir(os.path.join(self.path, envelope.dateDirectory))], []
        )
        self.assertEqual([e for e in self.spool.envelopes() if e.sender == ""], [])
        self.clock.advance(100000)
        self.assertEqual(self.courier.attempts, [])

    def test_deleteKeepsLocalCopy(self) -> None:
        """
        A message with a local recipient stays in the spool (local mail is
        the spool's product); its remote recipients are marked deleted.
        """
        d = self.spool.store(
            b"Subject: x\r\n\r\nbody\r\n",
            "alice@gopherpost.test",
            [("bob@gopherpost.test", True), ("carol@example.test", False)],
        )
        self.clock.advance(0)
        envelope = self.successResultOf(d)
        self.clock.advance(0)
        self.deferAll()
        self.call("queue.delete", all=True)
        self.assertEqual(self.queue.queueDepth(), 0)
        [recipient] = self.state(envelope).recipients
        self.assertEqual(recipient.status, DELETED)
        self.assertEqual(self.stateFiles(envelope), [".relayed"])
        self.sweep()
        self.assertEqual([v.state for v in QueueView(self.path).messages(False)], ["finished"])
        self.assertTrue(os.path.exists(self.spool.messagePath(envelope)))

    def test_deleteWhileDelivering(self) -> None:
        """
        A message being delivered is deleted when its attempt ends: a
        recipient delivered meanwhile stays delivered, the deferred one is
        deleted (not retried, not bounced).
        """
        [envelope] = self.spoolMessages(1, recipients=2)
        [(_, [message], listener, d)] = self.courier.attempts
        result = self.successResultOf(
            self.registry.dispatch("queue.delete", {"ids": [envelope.queueId]})
        )
        self.assertEqual(result["deleted"], [envelope.queueId])
        a, b = message.recipients
        listener.settled(message, [delivery(a, SENT), delivery(b, DEFERRED)])
        d.callback(None)
        self.clock.advance(0)
        self.assertEqual(self.queue.queueDepth(), 0)
        statuses = {r.address: r.status for r in self.state(envelope).recipients}
        self.assertEqual(statuses, {a: DELIVERED, b: DELETED})
        self.clock.advance(100000)
        self.assertEqual(len(self.courier.attempts), 1)
        self.assertEqual([e for e in self.spool.envelopes() if e.sender == ""], [])


class BounceTests(OperationsTestCase):
    def test_bounceNow(self) -> None:
        """
        A bounced message leaves the queue at once and its sender gets a DSN
        with the original message.
        """
        [envelope] = self.spoolMessages(1)
        self.deferAll()
        result = self.call("queue.bounce", ids=[envelope.queueId])
        self.assertEqual(result, {"bounced": [envelope.queueId], "notFound": []})
        self.clock.advance(0)
        self.assertEqual(self.queue.queueDepth(), 0)
        [recipient] = self.state(envelope).recipients
        self.assertEqual(recipient.status, FAILED)
        self.assertEqual(recipient.lastError, "5.4.7 Message administratively expired")
        [bounce] = [e for e in self.spool.envelopes() if e.sender == ""]
        self.assertEqual([r.address for r in bounce.recipients], ["alice@gopherpost.test"])
        with open(self.spool.messagePath(bounce), "rb") as f:
            report = f.read()
        self.assertIn(b"Status: 5.4.7", report)
        self.assertIn(b"Subject: 0", report)

    def test_bounceWithoutContent(self) -> None:
        """
        A message whose content is gone is still bounced (the DSN without
        the original).
        """
        [envelope] = self.spoolMessages(1)
        self.deferAll()
        os.unlink(self.spool.messagePath(envelope))
        result = self.call("queue.bounce", ids=[envelope.queueId])
        self.assertEqual(result["bounced"], [envelope.queueId])
        self.clock.advance(0)
        self.assertEqual(len([e for e in self.spool.envelopes() if e.sender == ""]), 1)

    def test_bounceWhileDelivering(self) -> None:
        """
        A message being delivered is bounced when the attempt ends; a
        recipient delivered meanwhile is not in the DSN.
        """
        [envelope] = self.spoolMessages(1, recipients=2)
        [(_, [message], listener, d)] = self.courier.attempts
        self.call("queue.bounce", ids=[envelope.queueId])
        a, b = message.recipients
        listener.settled(message, [delivery(a, SENT), delivery(b, DEFERRED)])
        d.callback(None)
        self.clock.advance(0)
        statuses = {r.address: r.status for r in self.state(envelope).recipients}
        self.assertEqual(statuses, {a: DELIVERED, b: FAILED})
        [bounce] = [e for e in self.spool.envelopes() if e.sender == ""]
        with open(self.spool.messagePath(bounce), "rb") as f:
            report = f.read()
        self.assertIn(b"Final-Recipient: rfc822; " + b.encode(), report)
        self.assertNotIn(b"Final-Recipient: rfc822; " + a.encode(), report)


class SettingsTests(SynchronousTestCase):
    def test_queueLifetimeDefault(self) -> None:
        """
        The tests above assume a queue lifetime long past the first retry.
        """
        settings = testSettings("/nonexistent")
        self.assertGreater(settings.queueLifetime, settings.retryInitial * 4)
