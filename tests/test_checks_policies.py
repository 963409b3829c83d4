"""
Tests for L{gopherpost.checks.policies}: each policy driven directly, as
the inbound chain will call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.checks.abuse import BanList, Greylister, RateLimiter, RateLimits
from gopherpost.checks.dmarc import DMARCChecker
from gopherpost.checks.dnsbl import DNSBLChecker
from gopherpost.checks.interfaces import (
    IMessageView,
    IMXPolicy,
    ISessionView,
    ITransactionView,
    IViolationSink,
)
from gopherpost.checks.metrics import CheckMetrics
from gopherpost.checks.policies import (
    BanPolicy,
    BufferedMessage,
    DNSBLPolicy,
    GreylistPolicy,
    MessageAuthenticationPolicy,
    PolicyBase,
    RateLimitPolicy,
    SPFPolicy,
    notesOf,
)
from gopherpost.checks.psl import PublicSuffixList
from gopherpost.checks.store import BanParameters, GreylistParameters, MemoryStore
from tests.support.mxchecks import InlineCallbacks, SigningKey, message, startCheckEnvironment

CLIENT = "192.0.2.10"
HOST = "mx.gopher.test"


@implementer(ISessionView)
@dataclass
class Session:
    clientAddress: str = CLIENT
    helo: str | None = "client.example.test"
    mayRelay: bool = False
    authenticatedUser: str | None = None


@dataclass
class Mailbox:
    text: str


@implementer(ITransactionView)
@dataclass
class Transaction:
    """
    In the shape of the inbound chain's transaction: the sender is a
    mailbox, what policies learn goes into tags.
    """

    sender: Mailbox = field(default_factory=lambda: Mailbox("alice@example.test"))
    tags: dict[str, Any] = field(default_factory=dict)

    def tag(self, name: str, value: Any = True) -> None:
        self.tags[name] = value


def reply(d: object) -> Any:
    """
    The result of a hook that answers at once (a Deferred already fired,
    or a plain value).
    """
    if isinstance(d, defer.Deferred):
        results: list[Any] = []
        d.addBoth(results.append)
        assert results, "the hook did not answer at once"
        return results[0]
    return d


def later(result: object) -> defer.Deferred[Any]:
    """
    What a hook returned, as a Deferred (it may already be one).
    """
    return defer.maybeDeferred(lambda: result)


class InterfaceTests(unittest.TestCase):
    def test_verify(self) -> None:
        store, clock, metrics = MemoryStore(), task.Clock(), CheckMetrics()
        self.assertTrue(verifyObject(ISessionView, Session()))
        self.assertTrue(verifyObject(ITransactionView, Transaction()))
        self.assertTrue(verifyObject(IMessageView, BufferedMessage(message())))
        bans = BanPolicy(BanList(store, clock, BanParameters()), metrics, HOST)
        self.assertTrue(verifyObject(IViolationSink, bans))
        for policy in [
            PolicyBase(),
            bans,
            RateLimitPolicy(RateLimiter(store, clock, RateLimits()), metrics, HOST),
            GreylistPolicy(Greylister(store, clock), metrics),
            DNSBLPolicy(DNSBLChecker(None, []), metrics),
            SPFPolicy(None, metrics, True),  # type: ignore[arg-type]
            MessageAuthenticationPolicy(None, None, metrics, HOST, True),  # type: ignore[arg-type]
        ]:
            self.assertTrue(verifyObject(IMXPolicy, policy), policy)


class RateLimitPolicyTests(unittest.TestCase):
    """
    Boundaries of each limit, driven by a Clock.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1000 * 60)
        self.metrics = CheckMetrics()
        limits = RateLimits(connections=3, messages=2, recipients=4, userMessages=2)
        self.policy = RateLimitPolicy(
            RateLimiter(MemoryStore(), self.clock, limits), self.metrics, HOST
        )

    def test_connections(self) -> None:
        session = Session()
        self.assertEqual([reply(self.policy.connect(session)) for _ in range(3)], [None] * 3)
        refused = reply(self.policy.connect(session))
        self.assertEqual(
            refused,
            (
                421,
                f"4.7.0 {HOST} Error: too many connections from [{CLIENT}]; "
                "rate limit exceeded, try again later",
            ),
        )
        self.assertEqual(self.metrics.value("smtp_rate_limited", "connections"), 1)
        self.assertIsNone(reply(self.policy.connect(Session(clientAddress="192.0.2.11"))))
        self.clock.advance(59)
        self.assertIsNotNone(reply(self.policy.connect(session)))
        self.clock.advance(1)
        self.assertIsNone(reply(self.policy.connect(session)))

    def test_ipv6Slash64(self) -> None:
        """
        IPv6 clients are counted by /64.
        """
        for n in range(3):
            self.assertIsNone(reply(self.policy.connect(Session(clientAddress=f"2001:db8::{n}"))))
        self.assertIsNotNone(reply(self.policy.connect(Session(clientAddress="2001:db8::ff:1"))))
        self.assertIsNone(reply(self.policy.connect(Session(clientAddress="2001:db8:0:1::1"))))

    def test_messagesAndRecipients(self) -> None:
        session, transaction = Session(), Transaction()
        self.assertIsNone(reply(self.policy.mail(session, transaction)))
        self.assertIsNone(reply(self.policy.mail(session, transaction)))
        code, text = reply(self.policy.mail(session, transaction))
        self.assertEqual((code, text[:6]), (450, "4.7.1 "))
        self.assertIn("rate limit exceeded, try again later", text)
        answers = [reply(self.policy.rcpt(session, transaction, "b@mx.test")) for _ in range(5)]
        self.assertEqual(answers[:4], [None] * 4)
        self.assertEqual(answers[4][0], 450)

    def test_relayClientsExempt(self) -> None:
        session = Session(mayRelay=True)
        for _ in range(10):
            self.assertIsNone(reply(self.policy.connect(session)))
            self.assertIsNone(reply(self.policy.mail(session, Transaction())))

    def test_userMessagesPerHour(self) -> None:
        session = Session(mayRelay=True, authenticatedUser="Alice")
        self.assertIsNone(reply(self.policy.mail(session, Transaction())))
        self.assertIsNone(reply(self.policy.mail(session, Transaction())))
        code, text = reply(self.policy.mail(session, Transaction()))
        self.assertEqual(code, 450)
        self.assertIn("too many messages from Alice", text)
        self.clock.advance(3600)
        self.assertIsNone(reply(self.policy.mail(session, Transaction())))

    def test_storeDown(self) -> None:
        """
        When no store answers, mail goes on (counted, logged).
        """

        class Broken(MemoryStore):
            def increment(self, *args: object, **kw: object) -> defer.Deferred:
                return defer.fail(RuntimeError("down"))

        policy = RateLimitPolicy(
            RateLimiter(Broken(), self.clock, RateLimits()), self.metrics, HOST
        )
        self.assertIsNone(reply(policy.connect(Session())))
        self.assertEqual(self.metrics.value("smtp_state_store_errors"), 1)
        self.flushLoggedErrors()


class GreylistPolicyTests(unittest.TestCase):
    """
    First try, too soon, after the delay, after the window, auto-whitelist.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(10**6)
        self.metrics = CheckMetrics()
        self.policy = GreylistPolicy(
            Greylister(MemoryStore(), self.clock, GreylistParameters()), self.metrics
        )

    def attempt(self, recipient: str = "bob@mx.test", client: str = CLIENT) -> object:
        return reply(self.policy.rcpt(Session(clientAddress=client), Transaction(), recipient))

    def test_sequence(self) -> None:
        self.assertEqual(self.attempt(), (451, "4.7.1 Greylisted, try again in 300 seconds"))
        self.clock.advance(100)
        self.assertEqual(self.attempt(), (451, "4.7.1 Greylisted, try again in 200 seconds"))
        self.clock.advance(200)
        self.assertIsNone(self.attempt())
        self.assertIsNone(self.attempt(client="192.0.2.77"))  # the same /24
        self.assertEqual(self.metrics.value("smtp_greylist", "greylisted"), 2)

    def test_afterWindow(self) -> None:
        self.attempt()
        self.clock.advance(2 * 86400 + 1)
        self.assertEqual(self.attempt(), (451, "4.7.1 Greylisted, try again in 300 seconds"))

    def test_autoWhitelist(self) -> None:
        for n in range(5):
            self.attempt(f"r{n}@mx.test")
            self.clock.advance(300)
            self.assertIsNone(self.attempt(f"r{n}@mx.test"))
        self.assertIsNone(self.attempt("new@mx.test"))
        self.assertEqual(self.metrics.value("smtp_greylist", "whitelisted"), 1)

    def test_submissionSkipped(self) -> None:
        session = Session(authenticatedUser="alice")
        self.assertIsNone(reply(self.policy.rcpt(session, Transaction(), "x@y.test")))


class BanPolicyTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.metrics = CheckMetrics()
        self.policy = BanPolicy(
            BanList(MemoryStore(), self.clock, BanParameters(threshold=3, duration=600)),
            self.metrics,
            HOST,
        )

    def test_banAfterViolations(self) -> None:
        session = Session()
        for kind in ("relay_denied", "unknown_recipient", "protocol"):
            self.assertIsNone(reply(self.policy.connect(session)))
            reply(self.policy.violation(session, kind))
        self.assertEqual(
            reply(self.policy.connect(Session())),
            (421, f"4.7.0 {HOST} Too many errors from [{CLIENT}], try again later"),
        )
        self.assertEqual(self.metrics.value("smtp_bans"), 1)
        self.clock.advance(600)
        self.assertIsNone(reply(self.policy.connect(session)))

    def test_relayClientsNeverBanned(self) -> None:
        session = Session(mayRelay=True)
        for _ in range(5):
            reply(self.policy.violation(session, "protocol"))
        self.assertIsNone(reply(self.policy.connect(session)))


class DNSBLPolicyTests(unittest.TestCase):
    def setUp(self) -> None:
        self.env = startCheckEnvironment(self, dnsTimeout=1.0)
        self.metrics = CheckMetrics()
        self.bans = BanPolicy(
            BanList(MemoryStore(), task.Clock(), BanParameters(threshold=1)), self.metrics, HOST
        )
        self.policy = DNSBLPolicy(
            DNSBLChecker(self.env.resolver, ["zen.bl.test"]), self.metrics, self.bans
        )

    @defer.inlineCallbacks
    def session(self, client: str = CLIENT, **kw: Any) -> Any:
        session = Session(clientAddress=client, **kw)
        self.assertIsNone(self.policy.connect(session))
        answer = yield later(self.policy.rcpt(session, Transaction(), "bob@mx.test"))
        return session, answer

    @defer.inlineCallbacks
    def test_listed(self) -> InlineCallbacks:
        self.env.dnsServer.addA("10.2.0.192.zen.bl.test", "127.0.0.2")
        session, answer = yield self.session()
        self.assertEqual(
            answer,
            (554, f"5.7.1 Service unavailable; client [{CLIENT}] blocked using zen.bl.test"),
        )
        again = yield later(self.policy.rcpt(session, Transaction(), "carol@mx.test"))
        self.assertEqual(again, answer)
        self.assertEqual(self.metrics.value("smtp_dnsbl_hits", "zen.bl.test"), 1)
        banned = yield later(self.bans.connect(Session()))
        self.assertEqual(banned[0], 421)

    @defer.inlineCallbacks
    def test_notListed(self) -> InlineCallbacks:
        _, answer = yield self.session()
        self.assertIsNone(answer)

    @defer.inlineCallbacks
    def test_errorAnswer(self) -> InlineCallbacks:
        self.env.dnsServer.addA("10.2.0.192.zen.bl.test", "127.255.255.254")
        _, answer = yield self.session()
        self.assertIsNone(answer)
        self.assertEqual(self.metrics.value("smtp_dnsbl_errors", "zen.bl.test", "error_answer"), 1)
        self.assertEqual(self.metrics.value("smtp_dnsbl_hits", "zen.bl.test"), 0)

    @defer.inlineCallbacks
    def test_temporary(self) -> InlineCallbacks:
        self.env.dnsServer.dropQueries("10.2.0.192.zen.bl.test")
        _, answer = yield self.session()
        self.assertEqual(answer[0], 451)
        self.assertIn("could not be checked against zen.bl.test", answer[1])

    @defer.inlineCallbacks
    def test_ipv6(self) -> InlineCallbacks:
        from gopherpost.checks.dnsbl import queryName

        self.env.dnsServer.addA(queryName("2001:db8::5", "zen.bl.test"), "127.0.0.10")
        _, answer = yield self.session("2001:db8::5")
        self.assertEqual(answer[0], 554)

    @defer.inlineCallbacks
    def test_relayClientNotLookedUp(self) -> InlineCallbacks:
        self.env.dnsServer.addA("10.2.0.192.zen.bl.test", "127.0.0.2")
        _, answer = yield self.session(mayRelay=True)
        self.assertIsNone(answer)
        self.assertEqual(self.env.dnsServer.authority.queries, [])


class SPFPolicyTests(unittest.TestCase):
    def setUp(self) -> None:
        self.env = startCheckEnvironment(self, dnsTimeout=1.0)
        self.env.dnsServer.addTXT("example.test", "v=spf1 ip4:198.51.100.1 -all")
        self.metrics = CheckMetrics()
        self.checker = self.env.spfChecker()

    @defer.inlineCallbacks
    def test_rejectFail(self) -> InlineCallbacks:
        transaction = Transaction()
        answer = yield later(
            SPFPolicy(self.checker, self.metrics, True).mail(Session(), transaction)
        )
        self.assertEqual(answer, (550, "5.7.23 SPF validation failed"))
        self.assertEqual(transaction.tags["authentication"]["spf"]["result"], "fail")
        self.assertEqual(self.metrics.value("smtp_spf_results", "fail"), 1)

    @defer.inlineCallbacks
    def test_recordOnly(self) -> InlineCallbacks:
        transaction = Transaction()
        answer = yield later(
            SPFPolicy(self.checker, self.metrics, False).mail(Session(), transaction)
        )
        self.assertIsNone(answer)
        self.assertEqual(transaction.tags["authentication"]["spf"]["result"], "fail")

    @defer.inlineCallbacks
    def test_temperror(self) -> InlineCallbacks:
        self.env.dnsServer.failWithServFail("broken.test")
        transaction = Transaction(sender=Mailbox("a@broken.test"))
        answer = yield later(
            SPFPolicy(self.checker, self.metrics, True).mail(Session(), transaction)
        )
        self.assertEqual(answer, (451, "4.7.24 SPF validation error, try again later"))
        answer = yield later(
            SPFPolicy(self.checker, self.metrics, False).mail(Session(), transaction)
        )
        self.assertIsNone(answer)

    def test_submissionSkipped(self) -> None:
        transaction = Transaction()
        policy = SPFPolicy(self.checker, self.metrics, True)
        self.assertIsNone(policy.mail(Session(mayRelay=True), transaction))
        self.assertEqual(transaction.tags, {})


class MessageAuthenticationPolicyTests(unittest.TestCase):
    """
    End of data: DKIM, ARC, DMARC, the Authentication-Results field.
    """

    def setUp(self) -> None:
        self.env = startCheckEnvironment(self, dnsTimeout=1.0)
        self.dns = self.env.dnsServer
        self.dns.addTXT("example.test", "v=spf1 ip4:198.51.100.1 -all")
        self.metrics = CheckMetrics()
        self.key = SigningKey("example.test")
        self.key.publish(self.dns)

    def policy(self, enforce: bool = True) -> MessageAuthenticationPolicy:
        dmarc = DMARCChecker(self.env.resolver, PublicSuffixList(["test"]), ["lists.test"])
        return MessageAuthenticationPolicy(
            self.env.dkimVerifier(), dmarc, self.metrics, HOST, enforce
        )

    @defer.inlineCallbacks
    def deliver(self, data: bytes, enforce: bool = True, session: Session | None = None) -> Any:
        session = session or Session()
        transaction = Transaction()
        spf = yield later(
            SPFPolicy(self.env.spfChecker(), self.metrics, False).mail(session, transaction)
        )
        self.assertIsNone(spf)
        view = BufferedMessage(data)
        answer = yield later(self.policy(enforce).message(session, transaction, view))
        return answer, transaction, view

    def authResults(self, view: BufferedMessage) -> list[str]:
        return [v for n, v in view.headers if n == "Authentication-Results"]

    @defer.inlineCallbacks
    def test_dmarcRejectEnforced(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        answer, transaction, view = yield self.deliver(message())
        self.assertEqual(answer, (550, "5.7.1 Email rejected per DMARC policy for example.test"))
        self.assertEqual(transaction.tags["authentication"]["dmarc"]["disposition"], "reject")
        self.assertEqual(self.metrics.value("smtp_dmarc_results", "fail", "reject"), 1)

    @defer.inlineCallbacks
    def test_dmarcRejectNotEnforced(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        answer, transaction, view = yield self.deliver(message(), enforce=False)
        self.assertIsNone(answer)
        [value] = self.authResults(view)
        self.assertIn("dmarc=fail header.from=example.test policy.dmarc=reject", value)
        self.assertIn("spf=fail smtp.mailfrom=alice@example.test", value)
        self.assertEqual(self.metrics.value("smtp_dmarc_results", "fail", "none"), 1)

    @defer.inlineCallbacks
    def test_signedPasses(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        answer, transaction, view = yield self.deliver(self.key.sign(message()))
        self.assertIsNone(answer)
        [value] = self.authResults(view)
        self.assertTrue(value.startswith(f" {HOST};"))
        self.assertIn("dkim=pass", value)
        self.assertIn("header.d=example.test header.s=sel", value)
        self.assertIn("dmarc=pass", value)
        self.assertIn("arc=none", value)
        authentication = transaction.tags["authentication"]
        self.assertEqual(
            [authentication[k]["result"] for k in ("spf", "arc", "dmarc")],
            ["fail", "none", "pass"],
        )
        self.assertEqual(authentication["dkim"][0]["result"], "pass")
        self.assertEqual(self.metrics.value("smtp_dkim_results", "pass"), 1)

    @defer.inlineCallbacks
    def test_quarantine(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=quarantine")
        answer, transaction, view = yield self.deliver(message())
        self.assertIsNone(answer)
        self.assertEqual(transaction.tags["quarantine"], "dmarc")
        self.assertIn(("X-GopherPost-Quarantine", " dmarc"), view.headers)
        self.assertTrue(view.render().startswith(b"X-GopherPost-Quarantine: dmarc\r\n"))

    @defer.inlineCallbacks
    def test_spoofedAuthenticationResultsRemoved(self) -> InlineCallbacks:
        """
        Incoming fields with our authserv-id (any case, with comments) and
        quarantine fields are removed; another server's field is kept; ours
        is the only one with our id.
        """
        forged = (
            f"Authentication-Results: {HOST.upper()}; dmarc=pass header.from=example.test\r\n"
            f"Authentication-Results: (hello) {HOST}; dkim=pass\r\n"
            "Authentication-Results: lists.test; spf=pass\r\n"
            "X-GopherPost-Quarantine: none\r\n"
        ).encode() + message()
        answer, transaction, view = yield self.deliver(forged)
        values = self.authResults(view)
        self.assertEqual(len(values), 2)
        self.assertTrue(values[0].startswith(f" {HOST};\r\n"))
        self.assertIn("dmarc=none", values[0])
        self.assertEqual(values[1], " lists.test; spf=pass")
        self.assertNotIn("X-GopherPost-Quarantine", [n for n, _ in view.headers])

    @defer.inlineCallbacks
    def test_submissionOnlyCleaned(self) -> InlineCallbacks:
        forged = f"Authentication-Results: {HOST}; dmarc=pass\r\n".encode() + message()
        view = BufferedMessage(forged)
        answer = yield later(self.policy().message(Session(mayRelay=True), Transaction(), view))
        self.assertIsNone(answer)
        self.assertEqual(self.authResults(view), [])

    @defer.inlineCallbacks
    def test_trustedARC(self) -> InlineCallbacks:
        """
        A list that changed the message (the author's signature no longer
        verifies) and sealed it: accepted when the sealer is trusted.
        """
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        sealer = SigningKey("lists.test", "arc")
        sealer.publish(self.dns)
        relayed = self.key.sign(message()).replace(b"Subject: Hello", b"Subject: [list] Hello")
        sealed = sealer.arcSeal(
            b"Authentication-Results: lists.test; dkim=pass header.d=example.test\r\n" + relayed,
            "lists.test",
        )
        answer, transaction, view = yield self.deliver(sealed)
        self.assertIsNone(answer)
        dmarc = transaction.tags["authentication"]["dmarc"]
        self.assertEqual((dmarc["result"], dmarc["override"]), ("fail", "trusted_forwarder"))
        self.assertIn("arc=pass header.as-d=lists.test", self.authResults(view)[0])

    @defer.inlineCallbacks
    def test_dmarcTempfail(self) -> InlineCallbacks:
        self.dns.failWithServFail("_dmarc.example.test")
        answer, _, _ = yield self.deliver(message())
        self.assertEqual(answer[0], 451)
        self.assertTrue(answer[1].startswith("4.7.1 "))


class NotesTests(unittest.TestCase):
    """
    L{notesOf} for objects with and without a C{notes} dict.
    """

    def test_ownNotes(self) -> None:
        class WithNotes:
            notes: dict[str, Any] = {}

        thing = WithNotes()
        thing.notes = {}
        notesOf(thing)["x"] = 1
        self.assertEqual(thing.notes, {"x": 1})

    def test_keptAsideAndDropped(self) -> None:
        """
        An unhashable object without notes (a dataclass) gets a dict of its
        own, dropped with it.
        """
        import gc

        from gopherpost.checks import policies

        session = Session()
        notesOf(session)["x"] = 1
        self.assertEqual(notesOf(session), {"x": 1})
        self.assertEqual(notesOf(Session()), {})
        key = id(session)
        del session
        gc.collect()
        self.assertNotIn(key, policies._notes)
