"""
Tests for L{gopherpost.inbound.policy}: the chain's ordering and
short-circuit rules, directly and through StringTransport sessions.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.inbound.context import SessionContext
from gopherpost.inbound.interfaces import IPolicy
from gopherpost.inbound.policy import INTERNAL_ERROR, STAGES, Policy, PolicyChain
from gopherpost.inbound.replies import Reply
from tests.support.inbound import InboundHarness, replies


class Recorder(Policy):
    """
    A policy that records every call and answers from a table.

    @param answers: C{{stage: answer}}; an answer that is a callable is
        called to make the result.
    """

    def __init__(self, name: str, log: list, answers: dict | None = None) -> None:
        self.name = name
        self._log = log
        self._answers = answers or {}

    def _answer(self, stage: str) -> Any:
        self._log.append((self.name, stage))
        answer = self._answers.get(stage)
        return answer() if callable(answer) else answer

    def connect(self, context):
        return self._answer("connect")

    def helo(self, context):
        return self._answer("helo")

    def mail(self, context, transaction):
        return self._answer("mail")

    def rcpt(self, context, transaction, recipient):
        return self._answer("rcpt")

    def data(self, context, transaction):
        return self._answer("data")

    def message(self, context, transaction, message):
        return self._answer("message")


@implementer(IPolicy)
class Plain:
    """
    An L{IPolicy} that is not a L{Policy} subclass.
    """

    name = "plain"

    def __init__(self, log: list) -> None:
        self.log = log

    def connect(self, context):
        self.log.append("connect")

    def helo(self, context):
        pass

    def mail(self, context, transaction):
        pass

    def rcpt(self, context, transaction, recipient):
        pass

    def data(self, context, transaction):
        pass

    def message(self, context, transaction, message):
        pass


class ChainTests(SynchronousTestCase):
    """
    L{PolicyChain.run}.
    """

    def setUp(self) -> None:
        self.context = SessionContext("192.0.2.1")

    def test_interfaces(self) -> None:
        """
        L{Policy} and a plain implementation provide L{IPolicy}.
        """
        self.assertTrue(verifyObject(IPolicy, Policy()))
        self.assertTrue(verifyObject(IPolicy, Recorder("r", [])))
        self.assertTrue(verifyObject(IPolicy, Plain([])))
        self.assertEqual(STAGES, ("connect", "helo", "mail", "rcpt", "data", "message"))

    def test_order(self) -> None:
        """
        Policies are asked in order; when all let it pass, so does the stage.
        """
        log: list = []
        chain = PolicyChain([Recorder("a", log), Recorder("b", log), Recorder("c", log)])
        self.assertIsNone(chain.run("mail", self.context, None))
        self.assertEqual(log, [("a", "mail"), ("b", "mail"), ("c", "mail")])

    def test_refusalStops(self) -> None:
        """
        The first reply ends the stage: later policies are not asked.
        """
        log: list = []
        refusal = Reply(550, "5.7.1 No")
        chain = PolicyChain(
            [Recorder("a", log), Recorder("b", log, {"rcpt": refusal}), Recorder("c", log)]
        )
        self.assertIs(chain.run("rcpt", self.context, None, None), refusal)
        self.assertEqual(log, [("a", "rcpt"), ("b", "rcpt")])

    def test_acceptStops(self) -> None:
        """
        A positive reply accepts the stage at once.
        """
        log: list = []
        accept = Reply(250, "2.1.5 Ok")
        chain = PolicyChain([Recorder("a", log, {"rcpt": accept}), Recorder("b", log)])
        self.assertIs(chain.run("rcpt", self.context, None, None), accept)
        self.assertEqual(log, [("a", "rcpt")])

    def test_deferred(self) -> None:
        """
        A pending L{Deferred} pauses the chain; the next policy is asked when
        it fires with L{None}; a reply it fires with ends the stage.
        """
        log: list = []
        pending: list[Deferred] = []

        def later() -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            return d

        chain = PolicyChain([Recorder("a", log, {"mail": later}), Recorder("b", log)])
        result = chain.run("mail", self.context, None)
        assert isinstance(result, Deferred)
        self.assertEqual(log, [("a", "mail")])
        pending[0].callback(None)
        self.assertIsNone(self.successResultOf(result))
        self.assertEqual(log, [("a", "mail"), ("b", "mail")])

        refusal = Reply(451, "4.7.1 Try later")
        chain = PolicyChain([Recorder("a", log, {"mail": later}), Recorder("b", log)])
        result = chain.run("mail", self.context, None)
        assert isinstance(result, Deferred)
        pending[1].callback(refusal)
        self.assertIs(self.successResultOf(result), refusal)

    def test_firedDeferredIsSynchronous(self) -> None:
        """
        A L{Deferred} that has already fired does not make the stage
        asynchronous.
        """
        log: list = []
        chain = PolicyChain(
            [Recorder("a", log, {"helo": lambda: succeed(None)}), Recorder("b", log)]
        )
        self.assertIsNone(chain.run("helo", self.context))
        self.assertEqual(log, [("a", "helo"), ("b", "helo")])

    def test_failures(self) -> None:
        """
        An exception, a failed L{Deferred}, or a result that is not a reply
        become L{INTERNAL_ERROR} (logged), and later policies are not asked.
        """
        log: list = []

        def boom() -> None:
            raise RuntimeError("policy bug")

        for answer, error in (
            (boom, RuntimeError),
            (lambda: fail(ValueError("lookup")), ValueError),
            (lambda: "yes", None),
        ):
            del log[:]
            chain = PolicyChain([Recorder("a", log, {"data": answer}), Recorder("b", log)])
            self.assertIs(chain.run("data", self.context, None), INTERNAL_ERROR)
            self.assertEqual(log, [("a", "data")])
            if error is not None:
                self.assertEqual(len(self.flushLoggedErrors(error)), 1)

    def test_violations(self) -> None:
        """
        L{PolicyChain.violation} tells only the policies that have a
        C{violation} method; one that raises or fails is logged and the
        others still hear it.
        """
        heard: list = []

        class Counting(Policy):
            def __init__(self, name: str, result: Any = None) -> None:
                self.name = name
                self.result = result

            def violation(self, context, kind):
                heard.append((self.name, context, kind))
                if isinstance(self.result, Exception):
                    raise self.result
                return self.result

        chain = PolicyChain(
            [
                Counting("raises", RuntimeError("boom")),
                Recorder("plain", []),
                Counting("fails", fail(RuntimeError("later"))),
                Counting("counts"),
            ]
        )
        chain.violation("ctx", "protocol")
        self.assertEqual(
            heard,
            [
                ("raises", "ctx", "protocol"),
                ("fails", "ctx", "protocol"),
                ("counts", "ctx", "protocol"),
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_onlyOverridingPoliciesAsked(self) -> None:
        """
        A L{Policy} subclass is asked only at the stages it overrides; any
        other L{IPolicy} provider at every stage.
        """
        plainLog: list = []

        class OnlyMail(Policy):
            name = "only-mail"

            def mail(self, context, transaction):
                plainLog.append("mail")

        chain = PolicyChain([OnlyMail(), Plain(plainLog)])
        chain.run("connect", self.context)
        chain.run("mail", self.context, None)
        self.assertEqual(plainLog, ["connect", "mail"])

    def test_declaredStagesAsked(self) -> None:
        """
        A policy with a C{stages} attribute (an adapter that has every hook)
        is asked only at the stages it names.
        """
        log: list = []
        skipped, asked = Plain(log), Plain(log)
        skipped.stages = frozenset({"mail"})  # type: ignore[attr-defined]
        asked.stages = frozenset({"connect"})  # type: ignore[attr-defined]
        PolicyChain([skipped]).run("connect", self.context)
        self.assertEqual(log, [])
        PolicyChain([asked]).run("connect", self.context)
        self.assertEqual(log, ["connect"])


class SessionChainTests(SynchronousTestCase):
    """
    The chain as a session consults it, over a StringTransport.
    """

    def session(self, *policies: Policy) -> tuple[Any, Any, InboundHarness]:
        harness = InboundHarness(self, policies=lambda defaults: [*policies, *defaults])
        proto, transport = harness.connect()
        return proto, transport, harness

    def test_everyStage(self) -> None:
        """
        A transaction consults connect, HELO, MAIL, RCPT (per recipient),
        DATA and the end of data, in that order.
        """
        log: list = []
        proto, transport, _ = self.session(Recorder("r", log))
        proto.dataReceived(
            b"EHLO c.test\r\nMAIL FROM:<a@gopherpost.test>\r\nRCPT TO:<b@gopherpost.test>\r\n"
            b"RCPT TO:<c@gopherpost.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
        )
        self.assertEqual(
            [stage for _, stage in log],
            ["connect", "helo", "mail", "rcpt", "rcpt", "data", "message"],
        )
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))

    def test_shortCircuit(self) -> None:
        """
        A refusal by the first policy answers the client and the second
        policy (and the default chain after it) is not asked.
        """
        log: list = []
        proto, transport, _ = self.session(
            Recorder("first", log, {"rcpt": Reply(550, "5.1.1 <b@gopherpost.test>: unknown")}),
            Recorder("second", log),
        )
        proto.dataReceived(
            b"EHLO c.test\r\nMAIL FROM:<a@gopherpost.test>\r\nRCPT TO:<b@gopherpost.test>\r\n"
        )
        self.assertEqual(replies(transport)[-1], b"550 5.1.1 <b@gopherpost.test>: unknown")
        self.assertEqual([e for e in log if e[1] == "rcpt"], [("first", "rcpt")])

    def test_connectRefusalCloses(self) -> None:
        """
        A refusal at connect is the reply instead of the banner, and the
        connection closes; a 4xx becomes a 421.
        """
        log: list = []
        proto, transport, harness = self.session(
            Recorder("gate", log, {"connect": Reply(450, "4.7.1 Greylisted", reason="grey")})
        )
        self.assertEqual(replies(transport), [b"421 4.7.1 Greylisted"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            harness.audit.named("session.reject"), [{"client": "127.0.0.1", "reason": "grey"}]
        )

    def test_pendingStageKeepsOrder(self) -> None:
        """
        While a policy's Deferred is pending, pipelined commands wait; their
        replies follow in order when it fires.
        """
        pending: list[Deferred] = []

        def later() -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            return d

        proto, transport, _ = self.session(Recorder("slow", [], {"rcpt": later}))
        proto.dataReceived(b"EHLO c.test\r\n")
        replies(transport)
        proto.dataReceived(
            b"MAIL FROM:<a@gopherpost.test>\r\nRCPT TO:<b@gopherpost.test>\r\n"
            b"RCPT TO:<c@gopherpost.test>\r\nNOOP\r\n"
        )
        self.assertEqual(replies(transport), [b"250 2.1.0 Ok"])
        pending[0].callback(Reply(450, "4.2.0 Later"))
        self.assertEqual(replies(transport), [b"450 4.2.0 Later"])
        pending[1].callback(None)
        self.assertEqual(replies(transport), [b"250 2.1.5 Ok", b"250 2.0.0 Ok"])

    def test_tagsAndHeaders(self) -> None:
        """
        Tags recorded by policies are kept in the envelope's metadata;
        headers they add go below our Received: header.
        """

        class Tagger(Policy):
            name = "tagger"

            def mail(self, context, transaction):
                transaction.tag("checked", True)
                transaction.addHeader("X-Checked", "by tagger")

            def message(self, context, transaction, message):
                transaction.tag("subject", message.headers[0][1])
                message.addHeader("Authentication-Results", "mx.gopherpost.test;\n none")

        proto, transport, harness = self.session(Tagger())
        proto.dataReceived(
            b"EHLO c.test\r\nMAIL FROM:<a@gopherpost.test>\r\nRCPT TO:<b@gopherpost.test>\r\n"
            b"DATA\r\nSubject: tagged\r\n\r\nhi\r\n.\r\n"
        )
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued as"))
        [stored] = harness.storedFiles()
        content = harness.read(stored)
        received, rest = content.split(b"\r\nX-Checked", 1)
        self.assertTrue(received.startswith(b"Received: "))
        self.assertEqual(
            b"X-Checked" + rest,
            b"X-Checked: by tagger\r\n"
            b"Authentication-Results: mx.gopherpost.test;\r\n\tnone\r\n"
            b"Subject: tagged\r\n\r\nhi\r\n",
        )
        [envelope] = harness.spool.envelopes()
        self.assertEqual(envelope.metadata, {"checked": True, "subject": "tagged"})

    def test_messageRefusal(self) -> None:
        """
        A refusal at the end of data throws the message away; the session
        goes on.
        """
        proto, transport, harness = self.session(
            Recorder("filter", [], {"message": Reply(554, "5.7.1 Spam", reason="spam")})
        )
        proto.dataReceived(
            b"EHLO c.test\r\nMAIL FROM:<a@gopherpost.test>\r\nRCPT TO:<b@gopherpost.test>\r\n"
            b"DATA\r\nSubject: x\r\n\r\nbuy\r\n.\r\nNOOP\r\n"
        )
        self.assertEqual(replies(transport)[-2:], [b"554 5.7.1 Spam", b"250 2.0.0 Ok"])
        self.assertEqual(harness.storedFiles(), [])
        self.assertEqual(harness.audit.named("message.rejected")[-1]["reason"], "spam")
