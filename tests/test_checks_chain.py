"""
Tests for L{gopherpost.checks.chain}: the MX checks as policies of the
inbound chain, driven through a real session (L{InboundHarness}: a real
spool, a L{Clock}, a StringTransport), and their place on every role's chain
as the wiring builds it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.checks.abuse import BanList, Greylister, RateLimiter, RateLimits
from gopherpost.checks.chain import ChainPolicy, MessageView, chainPolicies
from gopherpost.checks.interfaces import IMessageView, IMXPolicy
from gopherpost.checks.metrics import CheckMetrics
from gopherpost.checks.policies import (
    BanPolicy,
    GreylistPolicy,
    MessageAuthenticationPolicy,
    PolicyBase,
    RateLimitPolicy,
)
from gopherpost.checks.store import BanParameters, GreylistParameters, MemoryStore
from gopherpost.inbound.interfaces import IPolicy
from gopherpost.inbound.policy import PolicyChain
from gopherpost.inbound.replies import Action, Reply
from tests.support.inbound import InboundHarness, replies

OUTSIDE = "192.0.2.7"
HELLO = b"EHLO client.test\r\n"


def mail(sender: bytes = b"a@sender.test", *recipients: bytes) -> bytes:
    lines = [b"MAIL FROM:<" + sender + b">"]
    lines += [b"RCPT TO:<" + r + b">" for r in recipients]
    return b"".join(line + b"\r\n" for line in lines)


@implementer(IMXPolicy)
class Answers(PolicyBase):
    """
    An MX check that gives fixed answers by stage and records what it saw.
    """

    name = "answers"

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.seen: list[Any] = []

    def connect(self, session: Any) -> object:
        return self.answers.get("connect")

    def mail(self, session: Any, transaction: Any) -> object:
        return self.answers.get("mail")

    def rcpt(self, session: Any, transaction: Any, recipient: Any) -> object:
        return self.answers.get("rcpt")

    def message(self, session: Any, transaction: Any, message: Any) -> object:
        self.seen.append(message)
        transaction.tag("authentication", {"spf": {"result": "pass"}})
        d = message.read()
        d.addCallback(self.seen.append)
        return d.addCallback(lambda _: self.answers.get("message"))


class ChainPolicyTests(SynchronousTestCase):
    """
    L{ChainPolicy} turns a check's answers into inbound replies.
    """

    def test_interface(self) -> None:
        policy = ChainPolicy(Answers())
        self.assertTrue(verifyObject(IPolicy, policy))
        self.assertEqual(policy.name, "answers")
        self.assertFalse(hasattr(policy, "violation"))

    def test_stages(self) -> None:
        """
        The adapter names the stages its check overrides, so the chain asks
        it only there; a check that is not a L{PolicyBase} is asked at every
        stage.
        """

        @implementer(IMXPolicy)
        class OnlyRcpt(PolicyBase):
            name = "only-rcpt"

            def rcpt(self, session: Any, transaction: Any, recipient: Any) -> object:
                return None

        self.assertEqual(ChainPolicy(OnlyRcpt()).stages, frozenset({"rcpt"}))
        self.assertEqual(
            ChainPolicy(Answers()).stages, frozenset({"connect", "mail", "rcpt", "message"})
        )

        @implementer(IMXPolicy)
        class Standalone:
            name = "standalone"

            def connect(self, session: Any) -> object:
                return None

            def helo(self, session: Any) -> object:
                return None

            def mail(self, session: Any, transaction: Any) -> object:
                return None

            def rcpt(self, session: Any, transaction: Any, recipient: Any) -> object:
                return None

            def data(self, session: Any, transaction: Any) -> object:
                return None

            def message(self, session: Any, transaction: Any, message: Any) -> object:
                return None

        self.assertEqual(len(ChainPolicy(Standalone()).stages), 6)
        log: list = []

        @implementer(IMXPolicy)
        class Counting(PolicyBase):
            name = "counting"

            def mail(self, session: Any, transaction: Any) -> object:
                log.append("mail")
                return None

        chain = PolicyChain(chainPolicies([Counting()]))
        chain.run("connect", None)
        chain.run("mail", None, None)
        chain.run("rcpt", None, None, None)
        self.assertEqual(log, ["mail"])

    def test_replies(self) -> None:
        """
        A C{(code, text)} becomes a L{Reply} with the check's reason; a
        C{421} closes the connection; L{None} and a L{Reply} pass as they
        are; a Deferred's result is converted when it fires.
        """
        later: Deferred = Deferred()
        check = Answers(connect=(421, "4.7.0 banned"), mail=(450, "4.7.1 slow down"), rcpt=later)
        policy = ChainPolicy(check, reason="test")
        connect = policy.connect(None)
        self.assertEqual(
            (connect.code, connect.text, connect.action, connect.reason),
            (421, "4.7.0 banned", Action.CLOSE, "test"),
        )
        refused = policy.mail(None, None)
        self.assertEqual((refused.code, refused.action), (450, Action.NONE))
        self.assertIsNone(policy.helo(None))
        d = policy.rcpt(None, None, None)
        later.callback((554, "5.7.1 listed"))
        converted = self.successResultOf(d)
        self.assertEqual((converted.code, converted.text), (554, "5.7.1 listed"))
        reply = Reply(250, "2.0.0 fine")
        self.assertIs(ChainPolicy(Answers(mail=reply)).mail(None, None), reply)

    def test_reasons(self) -> None:
        """
        Each check's refusals carry the reason named for it.
        """
        metrics = CheckMetrics()
        store = MemoryStore()
        clock = Clock()
        checks = [
            BanPolicy(BanList(store, clock, BanParameters()), metrics, "mx.test"),
            RateLimitPolicy(RateLimiter(store, clock, RateLimits()), metrics, "mx.test"),
            GreylistPolicy(Greylister(store, clock), metrics),
        ]
        self.assertEqual(
            [p.reason for p in chainPolicies(checks)], ["ban", "rate-limit", "greylist"]
        )
        # Only the ban check hears violations.
        self.assertEqual(
            [hasattr(p, "violation") for p in chainPolicies(checks)], [True, False, False]
        )


class Checked:
    """
    A session harness whose chain ends with the given checks, as the wiring
    builds it: any address may connect, only 127.0.0.1 may relay.
    """

    def __init__(self, testCase: Any, build: Callable[[Clock], list[Any]]) -> None:
        #: The checks' clock.
        self.clock = Clock()
        self.checks = chainPolicies(build(self.clock))
        self.harness = InboundHarness(
            testCase,
            policies=lambda defaults: [*defaults, *self.checks],
            allowNetworks=(ipaddress.ip_network("0.0.0.0/0"),),
            relayNetworks=(ipaddress.ip_network("127.0.0.1/32"),),
        )

    def connect(self, host: str = OUTSIDE) -> tuple[Any, Any]:
        return self.harness.connect(host)

    def greeted(self, host: str = OUTSIDE) -> tuple[Any, Any]:
        """
        A session past its EHLO (replies cleared).
        """
        proto, transport = self.harness.connect(host)
        proto.dataReceived(HELLO)
        replies(transport)
        return proto, transport


class ChainOrderTests(SynchronousTestCase):
    """
    The checks sit after the chain's own allow-list, relay permission and
    recipient checks, and see the session as those left it.
    """

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.metrics = CheckMetrics()

    def bans(self, clock: Clock, threshold: int) -> BanPolicy:
        return BanPolicy(
            BanList(self.store, clock, BanParameters(threshold=threshold)), self.metrics, "mx.test"
        )

    def greylisting(self) -> Checked:
        return Checked(
            self,
            lambda clock: [
                GreylistPolicy(
                    Greylister(self.store, clock, GreylistParameters(delay=300)), self.metrics
                )
            ],
        )

    def test_greylistedAtRcpt(self) -> None:
        """
        A client without relay permission is greylisted at RCPT, and passes
        once the delay is over (the clock of the session's reactor).
        """
        checked = self.greylisting()
        proto, transport = checked.greeted()
        proto.dataReceived(mail(b"a@sender.test", b"b@gopherpost.test"))
        self.assertEqual(replies(transport)[-1], b"451 4.7.1 Greylisted, try again in 300 seconds")
        checked.clock.advance(301)
        proto.dataReceived(b"RSET\r\n" + mail(b"a@sender.test", b"b@gopherpost.test"))
        self.assertEqual(replies(transport)[-2:], [b"250 2.1.0 Ok", b"250 2.1.5 Ok"])

    def test_relayClientSkipsGreylisting(self) -> None:
        """
        A client with relay permission (submission) is not greylisted.
        """
        checked = self.greylisting()
        proto, transport = checked.greeted("127.0.0.1")
        proto.dataReceived(mail(b"a@gopherpost.test", b"b@gopherpost.test"))
        self.assertEqual(replies(transport)[-1], b"250 2.1.5 Ok")

    def test_relayDeniedBeforeGreylisting(self) -> None:
        """
        Relay permission runs first: a relaying attempt gets the relay
        refusal, not a greylisting, and leaves no greylist triplet.
        """
        checked = self.greylisting()
        proto, transport = checked.greeted()
        proto.dataReceived(mail(b"a@sender.test", b"b@elsewhere.test"))
        self.assertTrue(replies(transport)[-1].startswith(b"554 5.7.1"))
        self.assertEqual(len(self.store), 0)

    def test_violationsBan(self) -> None:
        """
        RCPTs refused as relaying count as violations; at the threshold the
        client is banned: the next connection gets C{421 4.7.0} and is
        closed.  A client with relay permission is not banned.
        """
        checked = Checked(self, lambda clock: [self.bans(clock, 3)])
        proto, transport = checked.greeted()
        proto.dataReceived(mail(b"a@sender.test", b"x@elsewhere.test", b"y@elsewhere.test"))
        proto.dataReceived(b"RCPT TO:<z@elsewhere.test>\r\n")
        self.assertTrue(replies(transport)[-1].startswith(b"554 5.7.1"))
        self.assertEqual(self.metrics.value("smtp_bans"), 1)
        _, second = checked.connect()
        self.assertEqual(
            replies(second),
            [b"421 4.7.0 mx.test Too many errors from [192.0.2.7], try again later"],
        )
        self.assertTrue(second.disconnecting)
        _, relay = checked.connect("127.0.0.1")
        self.assertTrue(replies(relay)[0].startswith(b"220 "))

    def test_protocolErrorsAreViolations(self) -> None:
        """
        A session ended for too many errors counts as a violation.
        """
        checked = Checked(self, lambda clock: [self.bans(clock, 1)])
        proto, transport = checked.greeted()
        proto.dataReceived(b"BOGUS\r\n" * 25)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.metrics.value("smtp_bans"), 1)

    def test_failedAuthenticationIsViolation(self) -> None:
        """
        A C{535} (authentication credentials invalid) counts as a violation:
        here from a stand-in for the AUTH exchange, a check answering it.
        """
        checked = Checked(
            self,
            lambda clock: [
                Answers(mail=(535, "5.7.8 Authentication credentials invalid")),
                self.bans(clock, 2),
            ],
        )
        proto, transport = checked.greeted()
        proto.dataReceived(mail(b"a@sender.test"))
        self.assertEqual(self.metrics.value("smtp_bans"), 0)
        proto.dataReceived(mail(b"a@sender.test"))
        self.assertEqual(replies(transport), [b"535 5.7.8 Authentication credentials invalid"] * 2)
        self.assertEqual(self.metrics.value("smtp_bans"), 1)

    def test_connectionRate(self) -> None:
        """
        Over the connection rate, a client gets C{421 4.7.0} instead of the
        banner and is closed; a minute later it is welcome again.
        """
        checked = Checked(
            self,
            lambda clock: [
                RateLimitPolicy(
                    RateLimiter(self.store, clock, RateLimits(connections=2)),
                    self.metrics,
                    "mx.test",
                )
            ],
        )
        for _ in range(2):
            _, transport = checked.connect()
            self.assertTrue(replies(transport)[0].startswith(b"220 "))
        _, refused = checked.connect()
        [line] = replies(refused)
        self.assertTrue(line.startswith(b"421 4.7.0 "), line)
        self.assertIn(b"rate limit exceeded", line)
        self.assertTrue(refused.disconnecting)
        checked.clock.advance(61)
        _, again = checked.connect()
        self.assertTrue(replies(again)[0].startswith(b"220 "))

    def test_messageSeenAsReceived(self) -> None:
        """
        At the end of data a check reads the message as it arrived (its
        header section and body, not our C{Received:} field) and its tags
        are keys of the envelope's metadata.
        """
        check = Answers()
        checked = Checked(self, lambda clock: [check])
        proto, transport = checked.greeted()
        proto.dataReceived(mail(b"a@sender.test", b"b@gopherpost.test") + b"DATA\r\n")
        proto.dataReceived(b"Subject: hi\r\nFrom: a@sender.test\r\n\r\nbody\r\n.\r\n")
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued"))
        view, raw = check.seen
        self.assertTrue(verifyObject(IMessageView, view))
        self.assertEqual(raw, b"Subject: hi\r\nFrom: a@sender.test\r\n\r\nbody\r\n")
        self.assertEqual(view.headers, [("Subject", "hi"), ("From", "a@sender.test")])
        [envelope] = checked.harness.spool.envelopes()
        self.assertEqual(envelope.metadata, {"authentication": {"spf": {"result": "pass"}}})

    def test_messageRefusal(self) -> None:
        """
        A check's refusal at the end of data is the reply to the final dot
        and nothing is stored.
        """
        check = Answers(message=(550, "5.7.1 Email rejected per DMARC policy for sender.test"))
        checked = Checked(self, lambda clock: [check])
        proto, transport = checked.greeted()
        proto.dataReceived(mail(b"a@sender.test", b"b@gopherpost.test") + b"DATA\r\n")
        proto.dataReceived(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(
            replies(transport)[-1], b"550 5.7.1 Email rejected per DMARC policy for sender.test"
        )
        self.assertEqual(checked.harness.storedFiles(), [])

    def test_forgedAuthenticationResultsRemoved(self) -> None:
        """
        Through the chain, an C{Authentication-Results} field naming our
        authserv-id is removed before the message is stored; another
        server's is kept.  (A relay client: no DNS is needed.)
        """
        authentication = MessageAuthenticationPolicy(
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            self.metrics,
            "mx.gopherpost.test",
            True,
        )
        checked = Checked(self, lambda clock: [authentication])
        proto, transport = checked.greeted("127.0.0.1")
        proto.dataReceived(mail(b"a@gopherpost.test", b"b@gopherpost.test") + b"DATA\r\n")
        proto.dataReceived(
            b""
            + b"Authentication-Results: mx.gopherpost.test;\r\n\tdkim=pass header.d=bank.test\r\n"
            + b"Authentication-Results: other.test; spf=pass\r\n"
            + b"Subject: hi\r\n\r\nbody\r\n.\r\n"
        )
        self.assertTrue(replies(transport)[-1].startswith(b"250 2.0.0 Ok: queued"))
        [stored] = checked.harness.storedFiles()
        content = checked.harness.read(stored)
        self.assertNotIn(b"mx.gopherpost.test;\r\n\tdkim=pass", content)
        self.assertIn(b"Authentication-Results: other.test; spf=pass\r\n", content)


class MessageViewTests(SynchronousTestCase):
    """
    L{MessageView} over a stand-in for L{IReceivedMessage}.
    """

    class Received:
        def __init__(self) -> None:
            self.headers = [("Subject", "x")]
            self.headerSection = b"Subject: x\r\n"
            self.added: list[tuple[str, str]] = []
            self.removed: list[tuple[str, Any]] = []

        def readBody(self) -> Deferred:
            return succeed(b"body\r\n")

        def addHeader(self, name: str, value: str) -> None:
            self.added.append((name, value))

        def removeHeaders(self, name: str, predicate: Any = None) -> int:
            self.removed.append((name, predicate))
            return 2

    def test_view(self) -> None:
        """
        read() is the header section, the empty line and the body;
        prependHeader unfolds CRLFs into the inbound side's line breaks;
        removeHeaders passes the predicate on.
        """
        received = self.Received()
        view = MessageView(received)  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(view.read()), b"Subject: x\r\n\r\nbody\r\n")
        view.prependHeader("Authentication-Results", "mx.test;\r\n\tspf=pass")
        self.assertEqual(received.added, [("Authentication-Results", "mx.test;\n\tspf=pass")])

        def predicate(value: str) -> bool:
            return True

        self.assertEqual(view.removeHeaders("Authentication-Results", predicate), 2)
        self.assertEqual(received.removed, [("Authentication-Results", predicate)])
        self.assertEqual(view.headers, [("Subject", "x")])


class WiringTests(SynchronousTestCase):
    """
    The wiring puts the checks on every role's chain, after the role's own
    policies.
    """

    def test_everyRole(self) -> None:
        import tempfile

        from twisted.internet import reactor

        from gopherpost.config import settingsFromEnvironment
        from gopherpost.spool import Spool
        from gopherpost.wiring import ROLES, makeMXChecks, smtpFactories
        from tests.support.inbound import RecordingAudit

        path = tempfile.mkdtemp(dir=self.mktemp().rpartition("/")[0] or ".")
        settings = settingsFromEnvironment(
            {
                "SMTP_HOSTNAME": "mx.gopherpost.test",
                "SMTP_QUEUE_PATH": path,
                "SMTP_SENDER_AUTH": "false",
                "SMTP_GREYLIST": "true",
                "SMTP_TLS_DISABLE": "true",
            },
            checkFiles=False,
        )
        spool = Spool(path, reactor)
        spool.open()
        checks = makeMXChecks(settings, None, reactor, spool)
        factories = smtpFactories(
            settings,
            spool,
            RecordingAudit(),
            None,
            reactor,
            None,
            ROLES,
            extraPolicies=checks.chainPolicies,
        )
        self.addCleanup(checks.store.close)
        self.assertEqual(set(factories), {role.name for role in ROLES})
        for name, factory in factories.items():
            names = [p.name for p in factory.chain.policies]
            self.assertEqual(names[-3:], ["bans", "rate-limits", "greylist"], name)
            self.assertIn("relay-permission", names[:-3], name)
            self.assertEqual(len(names), len(set(names)), names)

    def test_reloadNeedsRestart(self) -> None:
        """
        The checks read their settings once: a reload reports their
        variables as needing a restart instead of rebuilding the chains
        with checks that would not see the change.
        """
        import dataclasses

        from gopherpost.config import Settings
        from gopherpost.reload.parts import INBOUND_FIELDS, MXCHECK_FIELDS, STATIC_PARTS

        self.assertIn(("MX checks", MXCHECK_FIELDS), STATIC_PARTS)
        self.assertEqual(MXCHECK_FIELDS & INBOUND_FIELDS, frozenset())
        names = [f.name for f in dataclasses.fields(Settings)]
        block = names[names.index("senderAuth") : names.index("redisPrefix") + 1]
        self.assertEqual(set(block), set(MXCHECK_FIELDS))


class AuthViolationTests(SynchronousTestCase):
    """
    Failed AUTH (the submission issue's exchange) counts towards a ban; the
    lockouts and the bans share the checks' store.
    """

    def test_failedAuthBans(self) -> None:
        import base64

        from gopherpost.auth.command import FAILURE_DELAY
        from gopherpost.inbound.roles import SUBMISSION
        from tests.support.auth import makeService

        store = MemoryStore()
        metrics = CheckMetrics()

        def auth(clock: Clock) -> Any:
            return makeService(
                self.mktemp(),
                [("alice@gopherpost.test", "s3cret")],
                clock,
                hostname="mx.gopherpost.test",
                replyType=Reply,
            )

        bans = chainPolicies(
            [
                BanPolicy(
                    BanList(store, Clock(), BanParameters(threshold=2)),
                    metrics,
                    "mx.gopherpost.test",
                )
            ]
        )
        harness = InboundHarness(
            self,
            contextFactory=object(),
            role=SUBMISSION,
            auth=auth,
            policies=lambda defaults: [*defaults, *bans],
            tlsDisable=False,
            allowNetworks=(ipaddress.ip_network("0.0.0.0/0"),),
            relayNetworks=(),
        )
        wrong = base64.b64encode(b"\0alice@gopherpost.test\0wrong")

        def session() -> tuple[Any, Any]:
            proto, transport = harness.connect("192.0.2.9", tls=True)
            banner = replies(transport)
            if banner[0].startswith(b"421"):
                return proto, banner
            proto.dataReceived(b"EHLO client.test\r\n")
            proto.dataReceived(b"STARTTLS\r\n")
            self.assertEqual(replies(transport)[-1], b"220 2.0.0 Ready to start TLS")
            proto.handshakeCompleted()
            proto.dataReceived(b"EHLO client.test\r\n")
            replies(transport)
            return proto, transport

        proto, transport = session()
        for _ in range(2):
            proto.dataReceived(b"AUTH PLAIN " + wrong + b"\r\n")
            harness.clock.advance(FAILURE_DELAY)
            self.assertEqual(replies(transport), [b"535 5.7.8 Authentication credentials invalid"])
        self.assertEqual(metrics.value("smtp_bans"), 1)
        _, banner = session()
        self.assertEqual(
            banner,
            [b"421 4.7.0 mx.gopherpost.test Too many errors from [192.0.2.9], try again later"],
        )
