"""
Real milters from Debian through L{gopherpost.filters.policies.MilterPolicy}:
clamav-milter (with a local test signature), OpenDKIM (its signature
verified by dkimpy), and milters that answer tempfail, time out, or go away
in the middle of the conversation.

Every failure here is a real milter's: clamav-milter without a clamd
answers tempfail (C{OnFail Defer}); a stopped (SIGSTOP) milter accepts the
connection and never answers; a killed one closes it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, cast

import dkim
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import TestCase

from gopherpost.config import MilterSpec
from gopherpost.filters.headers import HeaderSection
from gopherpost.filters.metrics import FilterMetrics
from gopherpost.filters.milter.client import MilterClient
from gopherpost.filters.policies import MilterPolicy
from tests.filters import services
from tests.filters.services import EICAR
from tests.support.filterchain import runSession, runStage
from tests.support.filters import FakeContext, FakeMessage, FakeTransaction, message

TEMPFAIL = (451, "4.7.1 Service unavailable - try again later")
UNAVAILABLE = (451, "4.7.1 Content filter unavailable, try again later")


def spec(daemon: Any, name: str, **options: Any) -> MilterSpec:
    return MilterSpec(daemon.milterAddress, "127.0.0.1", daemon.port, name=name, **options)


class MilterTestCase(TestCase):
    timeout = 400

    def setUp(self) -> None:
        self.metrics = FilterMetrics()
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def tearDown(self) -> None:
        # Nothing a milter does may put a traceback in the log.
        self.assertEqual([e for e in self.events if "log_failure" in e], [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def policy(self, *specs: MilterSpec, failAction: str = "tempfail") -> MilterPolicy:
        return MilterPolicy(
            [MilterClient(reactor, s) for s in specs], failAction, self.metrics, reactor
        )

    def result(self, name: str, result: str) -> float:
        return self.metrics.value("smtp_filter_results_total", {"filter": name, "result": result})


class ClamavTests(MilterTestCase):
    @defer.inlineCallbacks
    def test_virusRejected(self) -> Generator[Deferred[Any], Any, None]:
        """
        The test string: clamav-milter's reply; its header fields (sent
        before the reject) are not put in.
        """
        milter = yield services.clamavMilter()
        msg = message(b"Here it is:\r\n" + EICAR + b"\r\n")
        before = msg.content
        replies = yield runSession(
            [self.policy(spec(milter, "clamav"))], FakeContext(), FakeTransaction(), msg
        )
        reply = replies["message"]
        self.assertEqual(reply.code, 550)
        self.assertEqual(reply.text, "5.7.1 Virus found: GopherPost.Test.Signature.UNOFFICIAL")
        self.assertEqual(msg.content, before)
        self.assertEqual(self.result("clamav", "reject"), 1)

    @defer.inlineCallbacks
    def test_cleanAccepted(self) -> Generator[Deferred[Any], Any, None]:
        milter = yield services.clamavMilter()
        msg = message()
        transaction = FakeTransaction()
        replies = yield runSession(
            [self.policy(spec(milter, "clamav"))], FakeContext(), transaction, msg
        )
        self.assertIsNone(replies["message"])
        section = HeaderSection(msg.headerSection)
        self.assertEqual(section.values(b"X-Virus-Status"), [b" Clean"])
        self.assertEqual(len(section.values(b"X-Virus-Scanned")), 1)
        self.assertEqual(transaction.tags["filters"], {"clamav": {"result": "accept"}})
        self.assertEqual(self.result("clamav", "accept"), 1)


class OpenDKIMTests(MilterTestCase):
    @defer.inlineCallbacks
    def test_signatureVerifies(self) -> Generator[Deferred[Any], Any, None]:
        """
        OpenDKIM signs what 127.0.0.1 sends (simple/simple, so every octet
        of the signed fields counts): its DKIM-Signature is inserted at the
        top and dkimpy verifies the message as it will be stored.
        """
        signer = yield services.opendkim()
        msg = message(b"Line one.\r\n\r\nLine three, after an empty line.\r\n")
        # A folded field, and a value without a space after the colon.
        msg.headerSection = msg.headerSection.replace(
            b"Subject: Hello\r\n", b"Subject: Hello,\r\n\tfolded\r\n  twice\r\nX-Tight:value\r\n"
        )
        transaction = FakeTransaction()
        context = FakeContext(clientAddress="127.0.0.1", relayClient=True)
        replies = yield runSession(
            [self.policy(spec(signer, "opendkim"))], context, transaction, msg
        )
        self.assertIsNone(replies["message"])
        self.assertTrue(msg.headerSection.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"))
        self.assertIn(b"d=example.test", msg.headerSection)
        received = b"Received: from client.example.test ([127.0.0.1])\r\n\tby mx.example.test\r\n"
        stored = received + msg.content
        self.assertTrue(dkim.verify(stored, dnsfunc=signer.dnsTXT))
        self.assertFalse(
            dkim.verify(stored.replace(b"Line one.", b"Line 1."), dnsfunc=signer.dnsTXT)
        )


class FailureTests(MilterTestCase):
    """
    A milter that answers tempfail, times out, or closes the connection in
    the middle: the configured failure action, the message untouched.
    """

    @defer.inlineCallbacks
    def test_tempfail(self) -> Generator[Deferred[Any], Any, None]:
        """
        clamav-milter without its clamd answers tempfail at the end of the
        message.
        """
        milter = yield services.privateClamavMilter(self, clamdPort=services.freePort())
        msg = message()
        replies = yield runSession(
            [self.policy(spec(milter, "clamav"))], FakeContext(), FakeTransaction(), msg
        )
        self.assertEqual((replies["message"].code, replies["message"].text), TEMPFAIL)
        self.assertEqual(msg.sectionReplaced, 0)
        self.assertEqual(self.result("clamav", "tempfail"), 1)

    @defer.inlineCallbacks
    def stopped(
        self, default: str | None, pause: str
    ) -> Generator[Deferred[Any], Any, tuple[Any, FakeMessage, FakeTransaction, Any]]:
        """
        A session with a good clamav-milter and a private one that is
        stopped (SIGSTOP) before C{pause} ("connect" or "message"), with a
        1 s timeout.
        """
        good = yield services.clamavMilter()
        broken = yield services.privateClamavMilter(self)
        self.addCleanup(broken.resume)
        policy = self.policy(
            spec(broken, "broken", timeout=1.0, default=default), spec(good, "clamav")
        )
        context, transaction, msg = FakeContext(), FakeTransaction(), message()
        if pause == "connect":
            broken.pause()
        replies = {}
        for stage in ("connect", "helo"):
            replies[stage] = yield runStage([policy], stage, context)
        replies["mail"] = yield runStage([policy], "mail", context, transaction)
        replies["rcpt"] = yield runStage(
            [policy], "rcpt", context, transaction, transaction.recipients[0]
        )
        if pause == "message":
            broken.pause()
        started = reactor.seconds()
        replies["message"] = yield runStage([policy], "message", context, transaction, msg)
        self.assertLess(reactor.seconds() - started, 10)
        policy.disconnect(context)
        return replies, msg, transaction, broken

    @defer.inlineCallbacks
    def test_timeoutTempfail(self) -> Generator[Deferred[Any], Any, None]:
        replies, msg, _, _ = yield self.stopped(None, "message")
        self.assertEqual((replies["message"].code, replies["message"].text), UNAVAILABLE)
        self.assertEqual(msg.sectionReplaced, 0)
        self.assertEqual(self.result("broken", "timeout"), 1)
        self.assertIn("no answer in 1 s", str([e.get("why") for e in self.events]))

    @defer.inlineCallbacks
    def test_timeoutAccept(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{default=accept}: the message goes on with the other milter's
        fields only.
        """
        replies, msg, transaction, _ = yield self.stopped("accept", "message")
        self.assertIsNone(replies["message"])
        self.assertEqual(HeaderSection(msg.headerSection).values(b"X-Virus-Status"), [b" Clean"])
        self.assertEqual(transaction.tags["filters"]["broken"]["result"], "timeout")
        self.assertEqual(transaction.tags["filters"]["clamav"]["result"], "accept")

    @defer.inlineCallbacks
    def test_timeoutAtConnect(self) -> Generator[Deferred[Any], Any, None]:
        """
        A milter that never negotiates: every stage of the session is
        refused for now (default tempfail).
        """
        replies, msg, _, _ = yield self.stopped(None, "connect")
        for stage in ("connect", "helo", "mail", "rcpt", "message"):
            self.assertEqual((replies[stage].code, replies[stage].text), UNAVAILABLE, stage)
        self.assertEqual(msg.sectionReplaced, 0)

    @defer.inlineCallbacks
    def test_closesMidConversation(self) -> Generator[Deferred[Any], Any, None]:
        """
        The milter dies after RCPT: default tempfail refuses the message;
        default=reject refuses it for good; default=accept lets it go on.
        """
        for default, expected in [
            (None, UNAVAILABLE),
            ("reject", (550, "5.7.1 Content filter unavailable")),
            ("accept", None),
        ]:
            good = yield services.clamavMilter()
            broken = yield services.privateClamavMilter(self)
            policy = self.policy(spec(broken, "broken", default=default), spec(good, "clamav"))
            context, transaction, msg = FakeContext(), FakeTransaction(), message()
            for stage in ("connect", "helo"):
                self.assertIsNone((yield runStage([policy], stage, context)))
            self.assertIsNone((yield runStage([policy], "mail", context, transaction)))
            recipient = transaction.recipients[0]
            self.assertIsNone((yield runStage([policy], "rcpt", context, transaction, recipient)))
            broken.kill()
            reply = yield runStage([policy], "message", context, transaction, msg)
            policy.disconnect(context)
            if expected is None:
                self.assertIsNone(reply)
                self.assertEqual(
                    HeaderSection(msg.headerSection).values(b"X-Virus-Status"), [b" Clean"]
                )
            else:
                self.assertEqual((reply.code, reply.text), expected, default)
                self.assertEqual(msg.sectionReplaced, 0)
            self.assertEqual(transaction.tags["filters"]["broken"]["result"], "error")

    @defer.inlineCallbacks
    def test_notListening(self) -> Generator[Deferred[Any], Any, None]:
        """
        Nothing listens at the milter's address: refused for now at once.
        """
        port = services.freePort()
        missing = MilterSpec(f"inet:127.0.0.1:{port}", "127.0.0.1", port, name="missing")
        msg: FakeMessage = message()
        replies = yield runSession([self.policy(missing)], FakeContext(), FakeTransaction(), msg)
        self.assertEqual((replies["connect"].code, replies["connect"].text), UNAVAILABLE)
        self.assertEqual(self.result("missing", "error"), 1)
