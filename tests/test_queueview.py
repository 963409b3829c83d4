"""
Tests for L{gopherpost.queueview}: the queue read from the spool's files.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.queueview import InvalidQueueId, MessageView, QueueView, normalizeQueueId
from gopherpost.relay.state import DELIVERED, FAILED
from tests.support.operations import SpoolFixture


def _found(view: QueueView, queueId: str) -> MessageView:
    message = view.find(queueId)
    assert message is not None, queueId
    return message


class QueueViewTests(SynchronousTestCase):
    """
    Messages, their recipients' states, content, the queue's shape.
    """

    def setUp(self) -> None:
        self.fixture = SpoolFixture(self)
        self.view = QueueView(self.fixture.path)

    def test_empty(self) -> None:
        """
        An empty spool (or none at all) has an empty queue.
        """
        self.assertEqual(list(self.view.messages()), [])
        self.assertEqual(list(QueueView(self.fixture.path + "-missing").messages()), [])

    def test_arrivedWithoutState(self) -> None:
        """
        A message the relay has not written a state for yet is queued: its
        remote recipients pending, never tried, due when it arrived; its
        local ones delivered into the spool.
        """
        envelope = self.fixture.message([("far@remote.test", False), ("me@local.test", True)])
        [message] = self.view.messages()
        self.assertEqual(message.queueId, envelope.queueId)
        self.assertEqual(message.state, "queued")
        far, me = message.recipients
        self.assertEqual((far.address, far.status, far.attempts), ("far@remote.test", "pending", 0))
        self.assertEqual(far.nextAttempt, envelope.received)
        self.assertEqual(me.status, "local")

    def test_stateOfRecipients(self) -> None:
        """
        The relay's state says how often each recipient was tried, when it
        is due and why it failed last.
        """
        envelope = self.fixture.message([("a@remote.test", False), ("b@remote.test", False)])
        self.fixture.relayState(
            envelope,
            {"b@remote.test": DELIVERED},
            attempts=3,
            nextAttempt=1_800_000_600.0,
            lastError="4.4.1 No answer from any mail exchanger",
            lastHost="mx.remote.test",
        )
        [message] = self.view.messages()
        a, b = message.recipients
        self.assertEqual(a.status, "pending")
        self.assertEqual(a.attempts, 3)
        self.assertEqual(a.nextAttempt, 1_800_000_600.0)
        self.assertEqual(a.lastError, "4.4.1 No answer from any mail exchanger")
        self.assertEqual(a.lastHost, "mx.remote.test")
        self.assertEqual(b.status, DELIVERED)
        self.assertIsNone(b.nextAttempt)
        self.assertEqual([r.address for r in message.pending], ["a@remote.test"])

    def test_finishedAndLocalNotQueued(self) -> None:
        """
        Finished messages and local mail are not in the queue, but every
        spooled message can be listed and found.
        """
        finished = self.fixture.message()
        self.fixture.relayState(finished, {"rcpt@remote.test": FAILED})
        local = self.fixture.message([("me@local.test", True)])
        queued = self.fixture.message()
        self.assertEqual([m.queueId for m in self.view.messages()], [queued.queueId])
        everything = {m.queueId: m.state for m in self.view.messages(queuedOnly=False)}
        self.assertEqual(
            everything,
            {finished.queueId: "finished", local.queueId: "local", queued.queueId: "queued"},
        )
        self.assertEqual(_found(self.view, finished.queueId.lower()).state, "finished")

    def test_find(self) -> None:
        """
        A message is found by its id in any case; an unknown id is
        L{None}; something that cannot be an id is refused before any file
        name is built from it.
        """
        envelope = self.fixture.message()
        self.assertEqual(_found(self.view, envelope.queueId.lower()).queueId, envelope.queueId)
        self.assertIsNone(self.view.find("0" * 19))
        self.assertRaises(InvalidQueueId, self.view.find, "../../etc/passwd")
        self.assertRaises(InvalidQueueId, normalizeQueueId, "")

    def test_contentAndHeaders(self) -> None:
        """
        The content as stored, and its header section alone.
        """
        content = b"Subject: hello\r\nX-Test: 1\r\n\r\nline one\r\n"
        envelope = self.fixture.message(content=content)
        message = _found(self.view, envelope.queueId)
        self.assertEqual(self.view.content(message), content)
        self.assertEqual(self.view.headers(message), b"Subject: hello\r\nX-Test: 1\r\n")

    def test_contentGone(self) -> None:
        """
        A message whose content was deleted by hand raises L{OSError}.
        """
        envelope = self.fixture.message()
        os.unlink(self.fixture.spool.messagePath(envelope))
        message = _found(self.view, envelope.queueId)
        self.assertRaises(OSError, self.view.content, message)

    def test_unreadableStateSkipped(self) -> None:
        """
        A broken envelope is skipped; a broken state counts as none.
        """
        broken = self.fixture.message()
        kept = self.fixture.message()
        base = os.path.join(self.fixture.path, broken.dateDirectory)
        with open(os.path.join(base, broken.queueId + ".envelope"), "wb") as f:
            f.write(b"{not json")
        with open(os.path.join(base, kept.queueId + ".relay"), "wb") as f:
            f.write(b"{not json")
        self.assertEqual([m.queueId for m in self.view.messages()], [kept.queueId])

    def test_summary(self) -> None:
        """
        Pending recipients per destination domain, by the age of their
        message in qshape's columns, busiest domain first.
        """
        clock = self.fixture.clock
        self.fixture.message([("a@one.test", False), ("b@two.test", False)])
        clock.advance(3600)
        self.fixture.message([("c@two.test", False)])
        summary = self.view.summary(clock.seconds() + 60)
        self.assertEqual(summary["columns"][:3], ["total", "5", "10"])
        self.assertEqual(summary["total"]["total"], 3)
        two, one = summary["domains"]
        self.assertEqual((two["domain"], two["total"], two["5"], two["80"]), ("two.test", 2, 1, 1))
        self.assertEqual((one["domain"], one["total"], one["80"]), ("one.test", 1, 1))
