"""
Tests for L{gopherpost.filters.policies}: the chain's filter policies,
driven directly with stand-ins for the session's objects
(L{tests.support.filters}) and for the filters.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.config import MilterSpec
from gopherpost.filters.envelope import FilterMessage, ScanRequest, SessionFacts
from gopherpost.filters.failure import FilterProtocolError
from gopherpost.filters.interfaces import IContentScanner, IFilterPolicy
from gopherpost.filters.metrics import FilterMetrics
from gopherpost.filters.policies import FilterReply, MilterPolicy, ScannerPolicy
from gopherpost.filters.verdict import (
    AddHeader,
    AddRecipient,
    DeleteRecipient,
    InsertHeader,
    ReplaceBody,
    Verdict,
)
from tests.support.filters import FakeContext, FakeTransaction, message


def capturedEvents(test: SynchronousTestCase) -> list[dict[str, Any]]:
    """
    The log events emitted during C{test}.
    """
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


def results(metrics: FilterMetrics, name: str, result: str) -> float:
    return metrics.value("smtp_filter_results_total", {"filter": name, "result": result})


@implementer(IContentScanner)
class FakeScanner:
    name = "fake"
    timeout = 10.0

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[ScanRequest] = []

    def scan(self, request: ScanRequest) -> Deferred[Verdict]:
        self.requests.append(request)
        if isinstance(self.answer, Deferred):
            return self.answer
        if isinstance(self.answer, Exception):
            return fail(self.answer)
        return succeed(self.answer)


class ScannerPolicyTests(SynchronousTestCase):
    """
    A scanner at the end of data.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = FilterMetrics()
        self.log = capturedEvents(self)

    def scan(self, answer: Any, context: Any = None, **kwargs: Any) -> tuple[Any, Any, Any]:
        policy = ScannerPolicy(
            FakeScanner(answer),
            kwargs.pop("failAction", "tempfail"),
            kwargs.pop("scope", "inbound"),
            self.metrics,
            self.clock,
            **kwargs,
        )
        verifyObject(IFilterPolicy, policy)
        self.policy = policy
        msg = message()
        transaction = FakeTransaction()
        result = policy.message(context or FakeContext(), transaction, msg)
        reply = self.successResultOf(result) if isinstance(result, Deferred) else result
        return reply, msg, transaction

    def test_acceptWithEdits(self) -> None:
        """
        The edits reach the message; the verdict is counted, tagged and
        logged with the queue id.
        """
        verdict = Verdict.accept(
            [AddHeader(b"X-Spam-Status", b"No, score=1.0")], score=1.0, threshold=5.0
        )
        reply, msg, transaction = self.scan(verdict)
        self.assertIsNone(reply)
        self.assertTrue(msg.headerSection.endswith(b"X-Spam-Status: No, score=1.0\r\n"))
        self.assertEqual(
            transaction.tags["filters"],
            {"fake": {"result": "accept", "score": 1.0, "threshold": 5.0}},
        )
        self.assertEqual(results(self.metrics, "fake", "accept"), 1)
        self.assertEqual(self.metrics.value("smtp_spam_score_count", {"filter": "fake"}), 1)
        self.assertEqual(
            self.metrics.value("smtp_filter_duration_seconds_count", {"filter": "fake"}), 1
        )
        (line,) = [formatEvent(e) for e in self.log]
        self.assertEqual(
            line, "Filter fake: accept at message for QTEST1 from [192.0.2.10] score=1/5"
        )

    def test_reject(self) -> None:
        reply, msg, transaction = self.scan(Verdict.reject(550, "5.7.1 Gtube pattern", score=15.0))
        self.assertEqual(reply, FilterReply(550, "5.7.1 Gtube pattern", "content-filter"))
        self.assertEqual(msg.sectionReplaced, 0)
        self.assertEqual(transaction.tags["filters"]["fake"]["reply"], "550 5.7.1 Gtube pattern")
        self.assertEqual(results(self.metrics, "fake", "reject"), 1)
        self.assertIn("(550 5.7.1 Gtube pattern)", formatEvent(self.log[0]))

    def test_discard(self) -> None:
        reply, _, _ = self.scan(Verdict.discard())
        self.assertEqual((reply.code, reply.reason), (250, "discard"))

    def test_quarantine(self) -> None:
        reply, msg, transaction = self.scan(Verdict.accept(quarantine="suspicious"))
        self.assertIsNone(reply)
        self.assertEqual(transaction.tags["quarantine"], "fake: suspicious")
        self.assertTrue(
            msg.headerSection.startswith(b"X-GopherPost-Quarantine: fake: suspicious\r\n")
        )
        self.assertEqual(results(self.metrics, "fake", "quarantine"), 1)

    def test_scope(self) -> None:
        """
        C{inbound} skips clients that may relay or authenticated; C{all}
        does not.
        """
        for context in (FakeContext(relayClient=True), FakeContext(authenticatedUser="alice")):
            reply, _, transaction = self.scan(Verdict.reject(), context)
            self.assertIsNone(reply)
            self.assertEqual(self.policy.scanner.requests, [])  # type: ignore[attr-defined]
        reply, _, _ = self.scan(Verdict.reject(), FakeContext(relayClient=True), scope="all")
        self.assertEqual(reply.code, 550)

    def test_failureTempfail(self) -> None:
        reply, msg, _ = self.scan(ConnectionRefusedError())
        self.assertEqual(
            reply,
            FilterReply(451, "4.7.1 Content filter unavailable, try again later", "content-filter"),
        )
        self.assertEqual(results(self.metrics, "fake", "error"), 1)
        (event,) = self.log
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertIn("cannot connect", formatEvent(event))
        self.assertNotIn("log_failure", event)

    def test_failureAccept(self) -> None:
        reply, msg, transaction = self.scan(FilterProtocolError("nonsense"), failAction="accept")
        self.assertIsNone(reply)
        self.assertEqual(msg.sectionReplaced, 0)
        self.assertEqual(transaction.tags["filters"]["fake"]["result"], "error")

    def test_timeout(self) -> None:
        pending: Deferred[Verdict] = Deferred()
        policy = ScannerPolicy(FakeScanner(pending), "tempfail", "all", self.metrics, self.clock)
        d = policy.message(FakeContext(), FakeTransaction(), message())
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d).code, 451)
        self.assertEqual(results(self.metrics, "fake", "timeout"), 1)

    def test_clientTimeLeft(self) -> None:
        """
        The client's DATA time left (C{message.deadline}) bounds the
        scanner's time when it is shorter than the scanner's timeout; none
        left: the failure action at once.
        """
        pending: Deferred[Verdict] = Deferred()
        policy = ScannerPolicy(FakeScanner(pending), "tempfail", "all", self.metrics, self.clock)
        d = policy.message(FakeContext(), FakeTransaction(), message(deadline=3.0))
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d).code, 451)
        late = message(deadline=self.clock.seconds())
        reply = self.successResultOf(policy.message(FakeContext(), FakeTransaction(), late))
        self.assertEqual(reply.code, 451)
        self.assertEqual(results(self.metrics, "fake", "timeout"), 2)

    def test_discardQueueId(self) -> None:
        """
        A discard is answered like a delivery: C{250} with the queue id.
        """
        reply, _, _ = self.scan(Verdict.discard())
        self.assertEqual((reply.code, reply.text), (250, "2.0.0 Ok: queued as QTEST1"))
        self.assertEqual(reply.reason, "discard")

    def test_badEdit(self) -> None:
        """
        An edit that cannot be made is the filter's failure; the message
        is left as it was.
        """
        reply, msg, _ = self.scan(Verdict.accept([AddHeader(b"Bad Name", b"x")]))
        self.assertEqual(reply.code, 451)
        self.assertEqual(msg.sectionReplaced, 0)

    def test_replyType(self) -> None:
        made: list[tuple[Any, ...]] = []

        def reply(code: int, text: str, reason: str | None = None) -> str:
            made.append((code, text, reason))
            return "a reply"

        answer, _, _ = self.scan(Verdict.reject(554, "5.7.1 no"), replyType=reply)
        self.assertEqual(answer, "a reply")
        self.assertEqual(made, [(554, "5.7.1 no", "content-filter")])


class FakeConversation:
    """
    Answers each stage with a verdict (or a Deferred, or an exception).
    """

    def __init__(self, name: str, answers: dict[str, Any] | None = None) -> None:
        self.name = name
        self.answers = answers or {}
        self.calls: list[str] = []
        self.seen: list[bytes] = []
        self.sessionDone = False
        self.messageDone = False
        self.quitted = False
        self.dropped = False

    def _answer(self, stage: str) -> Deferred[Verdict]:
        self.calls.append(stage)
        answer = self.answers.get(stage, Verdict.accept())
        if stage == "connect" and answer == "accept-session":
            self.sessionDone = True
            return succeed(Verdict.accept())
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)

    def connect(self, facts: SessionFacts) -> Deferred[Verdict]:
        return self._answer("connect")

    def helo(self, facts: SessionFacts) -> Deferred[Verdict]:
        return self._answer("helo")

    def mail(self, facts: SessionFacts, sender: str, arguments: Any = ()) -> Deferred[Verdict]:
        return self._answer("mail")

    def rcpt(
        self, facts: SessionFacts, sender: str, recipient: str, arguments: Any = ()
    ) -> Deferred[Verdict]:
        return self._answer("rcpt")

    def data(self, facts: SessionFacts, sender: str) -> Deferred[Verdict]:
        return self._answer("data")

    def message(self, facts: SessionFacts, working: FilterMessage) -> Deferred[Verdict]:
        self.seen.append(working.content)
        return self._answer("message")

    def quit(self) -> None:
        self.quitted = True

    def drop(self) -> None:
        self.dropped = True


class FakeClient:
    def __init__(self, name: str, conversation: Any, **spec: Any) -> None:
        self.spec = MilterSpec(f"inet:127.0.0.1:{len(name)}", "127.0.0.1", 1, name=name, **spec)
        self.name = name
        self.timeout = self.spec.timeout
        self._conversation = conversation

    def open(self) -> Deferred[Any]:
        if isinstance(self._conversation, Exception):
            return fail(self._conversation)
        return succeed(self._conversation)


class MilterPolicyTests(SynchronousTestCase):
    """
    Milters in order, at every stage.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = FilterMetrics()
        self.log = capturedEvents(self)
        self.context = FakeContext()
        self.transaction = FakeTransaction()
        self.msg = message()

    def policy(self, *clients: FakeClient, failAction: str = "tempfail") -> MilterPolicy:
        policy = MilterPolicy(clients, failAction, self.metrics, self.clock)  # type: ignore[arg-type]
        verifyObject(IFilterPolicy, policy)
        return policy

    def result(self, d: Any) -> Any:
        return self.successResultOf(d) if isinstance(d, Deferred) else d

    def session(self, policy: MilterPolicy, endOfData: bool = True) -> list[Any]:
        """
        Every stage up to the end of data; their replies.
        """
        replies = [self.result(policy.connect(self.context))]
        replies.append(self.result(policy.helo(self.context)))
        replies.append(self.result(policy.mail(self.context, self.transaction)))
        replies.append(
            self.result(policy.rcpt(self.context, self.transaction, self.transaction.recipients[0]))
        )
        replies.append(self.result(policy.data(self.context, self.transaction)))
        if endOfData:
            replies.append(self.result(policy.message(self.context, self.transaction, self.msg)))
        return replies

    def test_inOrderEachSeesTheOthersEdits(self) -> None:
        """
        The second milter sees the first one's edits; both reach the
        message once, at the end.
        """
        first = FakeConversation(
            "virus", {"message": Verdict.accept([AddHeader(b"X-Virus-Status", b"Clean")])}
        )
        second = FakeConversation(
            "dkim", {"message": Verdict.accept([InsertHeader(0, b"DKIM-Signature", b"v=1")])}
        )
        policy = self.policy(FakeClient("virus", first), FakeClient("dkim", second))
        self.assertEqual(self.session(policy), [None] * 6)
        stages = ["connect", "helo", "mail", "rcpt", "data", "message"]
        self.assertEqual((first.calls, second.calls), (stages, stages))
        self.assertIn(b"X-Virus-Status: Clean", second.seen[0])
        self.assertTrue(self.msg.headerSection.startswith(b"DKIM-Signature: v=1\r\n"))
        self.assertTrue(self.msg.headerSection.endswith(b"X-Virus-Status: Clean\r\n"))
        self.assertEqual(self.msg.sectionReplaced, 1)
        self.assertEqual(
            self.transaction.tags["filters"],
            {"virus": {"result": "accept"}, "dkim": {"result": "accept"}},
        )
        lines = [formatEvent(e) for e in self.log]
        self.assertEqual(
            lines,
            [
                "Filter virus: accept at message for QTEST1 from [192.0.2.10]",
                "Filter dkim: accept at message for QTEST1 from [192.0.2.10]",
            ],
        )
        policy.disconnect(self.context)
        self.assertTrue(first.quitted and second.quitted)

    def test_laterRefusalLeavesMessageUntouched(self) -> None:
        first = FakeConversation(
            "one", {"message": Verdict.accept([AddHeader(b"X-One", b"1"), ReplaceBody(b"x\r\n")])}
        )
        second = FakeConversation("two", {"message": Verdict.reject(550, "5.7.1 Virus found")})
        replies = self.session(self.policy(FakeClient("one", first), FakeClient("two", second)))
        self.assertEqual(replies[-1], FilterReply(550, "5.7.1 Virus found", "content-filter"))
        self.assertEqual((self.msg.sectionReplaced, self.msg.bodyReplaced), (0, 0))

    def test_rejectAtRcpt(self) -> None:
        """
        A milter refuses one recipient; the first refusal ends the stage.
        """
        first = FakeConversation("one", {"rcpt": Verdict.reject()})
        second = FakeConversation("two")
        replies = self.session(self.policy(FakeClient("one", first), FakeClient("two", second)))
        self.assertEqual(replies[3], FilterReply(550, "5.7.1 Command rejected", "content-filter"))
        self.assertNotIn("rcpt", second.calls)
        self.assertIsNone(replies[5])

    def test_connectFailureTempfail(self) -> None:
        """
        A milter that cannot be reached, default tempfail: every stage of
        the session is refused for now.
        """
        policy = self.policy(FakeClient("down", ConnectionRefusedError()))
        replies = self.session(policy)
        tempfail = FilterReply(
            451, "4.7.1 Content filter unavailable, try again later", "content-filter"
        )
        self.assertEqual(replies, [tempfail] * 6)
        self.assertEqual(results(self.metrics, "down", "error"), 1)
        self.assertIn("cannot connect", formatEvent(self.log[0]))

    def test_failureAccept(self) -> None:
        """
        C{default=accept}: the milter is left out, the others go on.
        """
        broken = FakeConversation("broken", {"mail": FilterProtocolError("nonsense")})
        good = FakeConversation("good", {"message": Verdict.accept([AddHeader(b"X-Good", b"1")])})
        policy = self.policy(
            FakeClient("broken", broken, default="accept"), FakeClient("good", good)
        )
        self.assertEqual(self.session(policy), [None] * 6)
        self.assertEqual(broken.calls, ["connect", "helo", "mail"])
        self.assertTrue(broken.dropped)
        self.assertTrue(self.msg.headerSection.endswith(b"X-Good: 1\r\n"))

    def test_failureReject(self) -> None:
        broken = FakeConversation("broken", {"rcpt": FilterProtocolError("nonsense")})
        replies = self.session(self.policy(FakeClient("broken", broken, default="reject")))
        self.assertEqual(replies[3].code, 550)
        self.assertEqual(replies[5].code, 550)

    def test_timeoutAtEndOfData(self) -> None:
        """
        A milter that does not answer in its time: the failure action,
        the connection dropped, the message untouched.
        """
        slow = FakeConversation("slow", {"message": Deferred()})
        policy = self.policy(FakeClient("slow", slow, timeout=10.0))
        self.assertEqual(self.session(policy, endOfData=False), [None] * 5)
        d = policy.message(self.context, self.transaction, self.msg)
        self.clock.advance(10)
        self.assertEqual(self.successResultOf(d).code, 451)
        self.assertTrue(slow.dropped)
        self.assertEqual(results(self.metrics, "slow", "timeout"), 1)
        self.assertEqual(self.msg.sectionReplaced, 0)

    def test_discardAtRcpt(self) -> None:
        milter = FakeConversation("m", {"rcpt": Verdict.discard()})
        replies = self.session(self.policy(FakeClient("m", milter)))
        self.assertIsNone(replies[3])
        self.assertEqual((replies[5].code, replies[5].reason), (250, "discard"))

    def test_everyRecipientRemoved(self) -> None:
        milter = FakeConversation(
            "m", {"message": Verdict.accept([DeleteRecipient("<rcpt@example.test>")])}
        )
        replies = self.session(self.policy(FakeClient("m", milter)))
        self.assertEqual(replies[5].reason, "discard")

    def test_envelopeEdits(self) -> None:
        milter = FakeConversation(
            "m", {"message": Verdict.accept([AddRecipient("<archive@example.test>")])}
        )
        self.session(self.policy(FakeClient("m", milter)))
        self.assertEqual(
            [r if isinstance(r, str) else r.address for r in self.transaction.recipients],
            ["rcpt@example.test", "archive@example.test"],
        )

    def test_acceptAtConnect(self) -> None:
        milter = FakeConversation("m", {"connect": "accept-session"})
        self.session(self.policy(FakeClient("m", milter)))
        self.assertEqual(milter.calls, ["connect"])
        self.assertTrue(milter.quitted)

    def test_scopeInbound(self) -> None:
        """
        A milter with C{scope=inbound} is not opened for a client that may
        relay.
        """
        milter = FakeConversation("m", {"message": Verdict.reject()})
        self.context = replace(self.context, relayClient=True)
        replies = self.session(self.policy(FakeClient("m", milter, scope="inbound")))
        self.assertEqual(replies, [None] * 6)
        self.assertEqual(milter.calls, [])

    def test_noSession(self) -> None:
        """
        Stages of a session the policy never saw connect go on.
        """
        policy = self.policy(FakeClient("m", FakeConversation("m")))
        self.assertIsNone(policy.mail(FakeContext(), self.transaction))
        policy.disconnect(FakeContext())

    def test_sessionDroppedWithContext(self) -> None:
        """
        Without a disconnect, the conversation ends when the context goes.
        """
        milter = FakeConversation("m")
        policy = self.policy(FakeClient("m", milter))
        context = FakeContext()
        self.result(policy.connect(context))
        del context
        import gc

        gc.collect()
        self.assertTrue(milter.quitted)

    def test_unexpectedError(self) -> None:
        """
        A bug (here: the message cannot take the edits) is logged with its
        traceback and answered as a local error, never raised into the
        chain.
        """

        def broken(section: bytes) -> None:
            raise RuntimeError("cannot replace")

        self.msg.replaceFullHeaderSection = broken  # type: ignore[method-assign]
        milter = FakeConversation("m", {"message": Verdict.accept([AddHeader(b"X-A", b"1")])})
        replies = self.session(self.policy(FakeClient("m", milter)))
        self.assertEqual(
            replies[5], FilterReply(451, "4.3.0 Error: local error in processing", "policy-error")
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
