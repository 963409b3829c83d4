"""
The inbound side's hooks for the content filters (L{gopherpost.filters}):
the message as it will be stored and its replacement, a discarding 2xx
reply, the chain's C{disconnect}, and the client's DATA time left given to
the end-of-data policies.  Driven through the production factory and
protocol (L{tests.support.inbound.InboundHarness}) on a L{Clock}.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.inbound.policy import Policy, PolicyChain
from gopherpost.inbound.replies import Reply
from gopherpost.inbound.timeouts import DataDeadline
from gopherpost.spool import SPILL_THRESHOLD, MessageWriter
from tests.support.inbound import InboundHarness, replies

CONTENT = b"Subject: hooks\r\nFrom: a@client.test\r\n\r\nfirst line\r\n"


class EndOfData(Policy):
    """
    A policy that does C{action(message)} at the end of data and answers
    what it returns.
    """

    name = "end-of-data"

    def __init__(self, action: Any) -> None:
        self.action = action
        self.disconnected: list[Any] = []
        self.seen: list[Any] = []

    def message(self, context: Any, transaction: Any, message: Any) -> Any:
        self.seen.append(message)
        return self.action(message)

    def disconnect(self, context: Any) -> None:
        self.disconnected.append(context)


class HookTestCase(SynchronousTestCase):
    def harness(self, action: Any, **settings: Any) -> tuple[InboundHarness, EndOfData]:
        policy = EndOfData(action)
        harness = InboundHarness(self, policies=lambda ps: [*ps, policy], **settings)
        return harness, policy

    def send(self, harness: InboundHarness, content: bytes = CONTENT) -> tuple[Any, Any, list]:
        proto, transport = harness.connect()
        proto.dataReceived(
            b"EHLO client.test\r\nMAIL FROM:<a@gopherpost.test>\r\n"
            b"RCPT TO:<b@gopherpost.test>\r\nDATA\r\n"
        )
        replies(transport)
        proto.dataReceived(content + b".\r\n")
        return proto, transport, replies(transport)


class MessageEditTests(HookTestCase):
    def test_fullHeaderSection(self) -> None:
        """
        The filters see the header section as it will be stored: our
        C{Received:}, the fields policies added, the message's own.
        """
        sections = []

        def look(message: Any) -> None:
            message.addHeader("X-Added", "yes")
            sections.append(message.fullHeaderSection)

        harness, _ = self.harness(look)
        _, _, lines = self.send(harness)
        self.assertTrue(lines[0].startswith(b"250 2.0.0 Ok: queued as"), lines)
        [section] = sections
        self.assertTrue(section.startswith(b"Received: from client.test"), section)
        self.assertTrue(
            section.endswith(b"X-Added: yes\r\nSubject: hooks\r\nFrom: a@client.test\r\n")
        )
        [stored] = harness.storedFiles()
        self.assertEqual(harness.read(stored), section + b"\r\nfirst line\r\n")

    def edit(self, content: bytes) -> bytes:
        """
        A message whose whole header section and body a filter replaced.
        """

        def replace(message: Any) -> Deferred[None]:
            section = b"X-Filter: first\r\n" + message.fullHeaderSection
            message.replaceFullHeaderSection(section)
            return message.replaceBody(b"new body\r\n")

        harness, _ = self.harness(replace)
        _, _, lines = self.send(harness, content)
        self.assertTrue(lines[0].startswith(b"250 "), lines)
        [stored] = harness.storedFiles()
        return harness.read(stored)

    def test_replaced(self) -> None:
        """
        The stored message is the filter's section (our C{Received:} where
        the filter left it, once) and body.
        """
        stored = self.edit(CONTENT)
        self.assertTrue(stored.startswith(b"X-Filter: first\r\nReceived: from client.test"))
        self.assertEqual(stored.count(b"Received:"), 1)
        self.assertTrue(stored.endswith(b"From: a@client.test\r\n\r\nnew body\r\n"))

    def test_replacedSpilled(self) -> None:
        """
        The same for a message large enough to go to a file as it came.
        """
        big = CONTENT + b"x" * 76 + b"\r\n" * (SPILL_THRESHOLD // 78 + 10)
        stored = self.edit(big)
        self.assertTrue(stored.startswith(b"X-Filter: first\r\nReceived: from client.test"))
        self.assertTrue(stored.endswith(b"From: a@client.test\r\n\r\nnew body\r\n"))

    def test_writerReplaceBody(self) -> None:
        """
        L{MessageWriter.replaceBody} drops what was written, in memory and
        spilled, and the size follows.
        """
        for size in (10, SPILL_THRESHOLD + 10):
            directory = self.mktemp()
            os.makedirs(directory)
            writer = MessageWriter(os.path.join(directory, "m"))
            writer.setHead(b"H: 1\r\n")
            writer.write(b"y" * size)
            self.assertEqual(writer.spilled, size > SPILL_THRESHOLD)
            writer.replaceBody(b"\r\nshort\r\n")
            self.assertEqual(writer.readBody(), b"\r\nshort\r\n")
            self.assertEqual(writer.size, len(b"H: 1\r\n\r\nshort\r\n"))
            writer._finish(sync=False)
            with open(writer.path, "rb") as f:
                self.assertEqual(f.read(), b"H: 1\r\n\r\nshort\r\n")


class DiscardTests(HookTestCase):
    def test_discard(self) -> None:
        """
        A 2xx reply whose reason is C{discard}: the client gets it, nothing
        is stored, the session goes on.
        """
        harness, _ = self.harness(
            lambda m: Reply(250, f"2.0.0 Ok: queued as {m.queueId}", reason="discard")
        )
        proto, transport, lines = self.send(harness)
        self.assertTrue(lines[0].startswith(b"250 2.0.0 Ok: queued as "), lines)
        self.assertEqual(harness.storedFiles(), [])
        self.assertEqual(len(harness.audit.named("message.discarded")), 1)
        self.assertEqual(os.listdir(os.path.join(harness.path, "tmp")), [])
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(replies(transport), [b"250 2.0.0 Ok"])

    def test_otherSuccessStored(self) -> None:
        """
        Any other 2xx reply from a policy: stored, with our own 250.
        """
        harness, _ = self.harness(lambda m: Reply(250, "2.0.0 fine", reason="other"))
        _, _, lines = self.send(harness)
        self.assertTrue(lines[0].startswith(b"250 2.0.0 Ok: queued as"), lines)
        self.assertEqual(len(harness.storedFiles()), 1)


class DisconnectTests(HookTestCase):
    def test_disconnect(self) -> None:
        """
        When the connection is gone, each policy with C{disconnect} hears of
        it with the session's context.
        """
        harness, policy = self.harness(lambda m: None)
        proto, transport, _ = self.send(harness)
        self.assertEqual(policy.disconnected, [])
        transport.lost = True
        proto.connectionLost(None)
        self.assertEqual(policy.disconnected, [proto.session.context])

    def test_failureLogged(self) -> None:
        """
        A policy that raises in C{disconnect} is logged; the next still
        hears.
        """

        class Broken(Policy):
            def disconnect(self, context: Any) -> None:
                raise RuntimeError("broken")

        heard = EndOfData(lambda m: None)
        PolicyChain([Broken(), heard]).disconnect("context")
        self.assertEqual(heard.disconnected, ["context"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class DeadlineTests(HookTestCase):
    def test_leftAt(self) -> None:
        deadline = DataDeadline(300.0, 100, now=0.0)
        deadline.received(1000, 10.0)
        self.assertEqual(deadline.leftAt(10.0), 300.0)
        self.assertEqual(deadline.leftAt(50.0), 260.0)
        idle = DataDeadline(300.0, 0, now=0.0)
        self.assertEqual(idle.leftAt(1000.0), 300.0)

    def test_deadlineAtTheDot(self) -> None:
        """
        The end-of-data policies must answer by what was left of the
        client's DATA time at the final dot: a client that trickled its
        message leaves them less.
        """
        harness, policy = self.harness(lambda m: None, commandTimeout=300.0, minDataRate=10)
        proto, transport = harness.connect()
        proto.dataReceived(
            b"EHLO client.test\r\nMAIL FROM:<a@gopherpost.test>\r\n"
            b"RCPT TO:<b@gopherpost.test>\r\nDATA\r\n"
        )
        replies(transport)
        started = harness.clock.seconds()
        proto.dataReceived(CONTENT)
        harness.clock.advance(100)
        proto.dataReceived(b".\r\n")
        [message] = policy.seen
        # 300 s at the start (the content's octets earn no more than the
        # timeout), 100 s gone, the final dot's 3 octets earn 0.3 s.
        self.assertAlmostEqual(message.deadline, started + 300.0 + 0.3)
        self.assertAlmostEqual(message.deadline - harness.clock.seconds(), 200.3)

    def test_waitDoesNotTimeOut(self) -> None:
        """
        While the policies work, the client's clock is stopped: their answer
        (here after longer than the command timeout) is what the client gets.
        """
        pending: Deferred[Any] = Deferred()
        harness, _ = self.harness(lambda m: pending, commandTimeout=30.0)
        proto, transport, lines = self.send(harness)
        self.assertEqual(lines, [])
        harness.clock.advance(100)
        self.assertEqual(replies(transport), [])
        pending.callback(Reply(451, "4.7.1 Content filter unavailable", reason="content-filter"))
        self.assertEqual(replies(transport), [b"451 4.7.1 Content filter unavailable"])
        self.assertEqual(harness.storedFiles(), [])
