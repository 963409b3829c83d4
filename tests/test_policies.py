"""
Tests for L{gopherpost.inbound.policies}: each of today's checks as a
policy, the relay-permission matrix, and the chains of the listener roles.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.inbound.access import makePortal
from gopherpost.inbound.address import NULL_PATH, Mailbox
from gopherpost.inbound.context import EnvelopeRecipient, SessionContext, TLSInfo, Transaction
from gopherpost.inbound.interfaces import IPolicy
from gopherpost.inbound.policies import (
    AllowListPolicy,
    LocalSenderPolicy,
    MessageSizePolicy,
    RecipientLimitPolicy,
    RelayPermissionPolicy,
    RequireTLSPolicy,
    policiesFor,
)
from gopherpost.inbound.replies import Reply
from gopherpost.inbound.roles import SMTP, SUBMISSION, SUBMISSIONS
from tests.support.inbound import InboundHarness, replies, testSettings


def net(*texts: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


def isLocal(domain: str) -> bool:
    return domain.lower() in ("gopherpost.test", "mx.gopherpost.test")


def recipient(address: str) -> EnvelopeRecipient:
    local, _, domain = address.partition("@")
    return EnvelopeRecipient(Mailbox(local, domain))


class ForwardConfirmed:
    """
    A resolver whose forward-confirmed names come from a table.
    """

    def __init__(self, table: dict[str, set[str]]) -> None:
        self.table = table

    def forwardConfirmedNames(self, address: str) -> Any:
        return succeed(self.table.get(address, set()))


class PolicyUnitTests(SynchronousTestCase):
    """
    Each policy on its own.
    """

    def test_interfaces(self) -> None:
        """
        Every policy provides L{IPolicy}.
        """
        portal = makePortal(net("127.0.0.0/8"), ())
        for policy in (
            AllowListPolicy(portal),
            RelayPermissionPolicy(None, isLocal),
            RequireTLSPolicy(),
            MessageSizePolicy(10),
            LocalSenderPolicy(isLocal),
            RecipientLimitPolicy(1),
        ):
            self.assertTrue(verifyObject(IPolicy, policy), policy)

    def test_allowList(self) -> None:
        """
        The portal admits or refuses; the avatar becomes the identity.
        """
        policy = AllowListPolicy(makePortal(net("192.0.2.0/24"), ()))
        admitted = SessionContext("192.0.2.9")
        self.assertIsNone(self.successResultOf(policy.connect(admitted)))
        self.assertEqual(admitted.identity.name, "192.0.2.9")
        self.assertEqual(
            self.successResultOf(policy.connect(SessionContext("198.51.100.1"))),
            Reply(554, "5.7.1 Access denied", reason="access"),
        )

    def test_relayPermission(self) -> None:
        """
        Connect decides C{relayClient}; RCPT refuses non-local recipients
        of clients that may not relay.
        """
        policy = RelayPermissionPolicy(net("127.0.0.1/32", "2001:db8::/32"), isLocal)
        for address, may in (
            ("127.0.0.1", True),
            ("::ffff:127.0.0.1", True),
            ("2001:db8::5", True),
            ("127.0.0.2", False),
            ("not an address", False),
        ):
            context = SessionContext(address)
            policy.connect(context)
            self.assertEqual(context.relayClient, may, address)
        outsider = SessionContext("192.0.2.1")
        policy.connect(outsider)
        transaction = Transaction(NULL_PATH)
        self.assertIsNone(policy.rcpt(outsider, transaction, recipient("b@GopherPost.Test")))
        self.assertEqual(
            policy.rcpt(outsider, transaction, recipient("b@example.test")),
            Reply(554, "5.7.1 <b@example.test>: Relay access denied", reason="relay"),
        )
        outsider.authenticatedUser = "bob"
        self.assertIsNone(policy.rcpt(outsider, transaction, recipient("b@example.test")))

    def test_relayEveryAdmittedClient(self) -> None:
        """
        Without C{SMTP_RELAY_NETWORKS}, every admitted client may relay.
        """
        context = SessionContext("203.0.113.9")
        RelayPermissionPolicy(None, isLocal).connect(context)
        self.assertTrue(context.mayRelay)

    def test_requireTLS(self) -> None:
        """
        MAIL before TLS is C{530 5.7.0}.
        """
        context = SessionContext("192.0.2.1")
        transaction = Transaction(Mailbox("a", "b.test"))
        self.assertEqual(
            RequireTLSPolicy().mail(context, transaction),
            Reply(530, "5.7.0 Must issue a STARTTLS command first", reason="tls-required"),
        )
        context.tls = TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
        self.assertIsNone(RequireTLSPolicy().mail(context, transaction))

    def test_size(self) -> None:
        """
        A declared size over the limit is C{552 5.3.4}.
        """
        transaction = Transaction(Mailbox("a", "b.test"), declaredSize=11)
        refusal = MessageSizePolicy(10).mail(SessionContext("x"), transaction)
        self.assertEqual(refusal and refusal.code, 552)
        self.assertIsNone(MessageSizePolicy(11).mail(SessionContext("x"), transaction))

    def test_localSender(self) -> None:
        """
        Only clients that may relay must use a local sender; the null sender
        always passes.
        """
        policy = LocalSenderPolicy(isLocal)
        relay = SessionContext("127.0.0.1", relayClient=True)
        mx = SessionContext("192.0.2.1")
        foreign = Transaction(Mailbox("m", "example.test"))
        refusal = policy.mail(relay, foreign)
        self.assertEqual(refusal and refusal.code, 553)
        self.assertIsNone(policy.mail(relay, Transaction(Mailbox("a", "gopherpost.test"))))
        self.assertIsNone(policy.mail(relay, Transaction(NULL_PATH)))
        self.assertIsNone(policy.mail(mx, foreign))

    def test_recipientLimit(self) -> None:
        """
        Past the limit, C{452 4.5.3}.
        """
        transaction = Transaction(Mailbox("a", "b.test"), recipients=[recipient("x@y.test")])
        self.assertEqual(
            RecipientLimitPolicy(1).rcpt(SessionContext("x"), transaction, recipient("z@y.test")),
            Reply(452, "4.5.3 Error: too many recipients", reason="recipients"),
        )
        self.assertIsNone(
            RecipientLimitPolicy(2).rcpt(SessionContext("x"), transaction, recipient("z@y.test"))
        )

    def test_roles(self) -> None:
        """
        Every role's chain starts with the allow-list; only submission
        requires TLS; local-sender only with SMTP_REQUIRE_LOCAL_DOMAIN.
        """
        settings = testSettings("/nonexistent")
        portal = makePortal(settings.allowNetworks, ())
        names = {
            role.name: [p.name for p in policiesFor(role, settings, portal)]
            for role in (SMTP, SUBMISSION, SUBMISSIONS)
        }
        self.assertEqual(
            names["smtp"],
            ["allow-list", "message-size", "local-sender", "recipient-limit", "relay-permission"],
        )
        self.assertEqual(names["submissions"], names["smtp"])
        self.assertEqual(names["submission"][:2], ["allow-list", "require-tls"])
        relaxed = testSettings("/nonexistent", requireLocalDomain=False)
        self.assertNotIn("local-sender", [p.name for p in policiesFor(SMTP, relaxed, portal)])


class RelayMatrixTests(SynchronousTestCase):
    """
    Who may send where: allow-listed clients, relay networks, neither;
    local and non-local recipients (issue 13, "Who may connect, who may
    relay").
    """

    def attempt(
        self, harness: InboundHarness, client: str, sender: bytes, to: bytes
    ) -> list[bytes]:
        proto, transport = harness.connect(client)
        proto.dataReceived(b"EHLO c.test\r\n")
        proto.dataReceived(b"MAIL FROM:<" + sender + b">\r\n")
        proto.dataReceived(b"RCPT TO:<" + to + b">\r\n")
        return replies(transport)

    def test_matrix(self) -> None:
        """
        With C{SMTP_ALLOW_NETWORKS=0.0.0.0/0,::/0} and
        C{SMTP_RELAY_NETWORKS=127.0.0.1/32} (the MX role): the relay network
        may send anywhere; any other client only to local domains, with any
        sender; a client outside the allow-list cannot connect.
        """
        mx = InboundHarness(
            self,
            allowNetworks=net("0.0.0.0/0", "::/0"),
            relayNetworks=net("127.0.0.1/32"),
        )
        closed = InboundHarness(self, relayNetworks=net("127.0.0.1/32"))
        ok, denied = b"250 2.1.5 Ok", b"554 5.7.1 <bob@example.test>: Relay access denied"
        for harness, client, to, expected in (
            (mx, "127.0.0.1", b"carol@gopherpost.test", ok),
            (mx, "127.0.0.1", b"bob@example.test", ok),
            (mx, "192.0.2.7", b"carol@gopherpost.test", ok),
            (mx, "192.0.2.7", b"bob@example.test", denied),
            (mx, "2001:db8::7", b"bob@example.test", denied),
            (closed, "127.0.0.5", b"carol@gopherpost.test", ok),
            (closed, "127.0.0.5", b"bob@example.test", denied),
        ):
            sender = b"alice@gopherpost.test" if client == "127.0.0.1" else b"x@example.test"
            lines = self.attempt(harness, client, sender, to)
            self.assertEqual(lines[-2:], [b"250 2.1.0 Ok", expected], (client, to))
        proto, transport = closed.connect("192.0.2.7")
        self.assertEqual(replies(transport), [b"554 5.7.1 Access denied"])
        rcpt = [e for e in mx.audit.named("smtp.rcpt") if not e["accepted"]]
        self.assertEqual({e["code"] for e in rcpt}, {554})

    def test_defaultRelayNetworks(self) -> None:
        """
        Without C{SMTP_RELAY_NETWORKS} every allow-listed client may relay
        (the behaviour before the setting), also one admitted by name
        through C{SMTP_ALLOW_HOSTS}.
        """
        harness = InboundHarness(self)
        self.assertEqual(
            self.attempt(harness, "127.0.0.9", b"a@gopherpost.test", b"bob@example.test")[-1],
            b"250 2.1.5 Ok",
        )
        portal = makePortal(
            (), ("relay.example.test",), ForwardConfirmed({"192.0.2.44": {"relay.example.test"}})
        )
        named = InboundHarness(
            self,
            allowNetworks=(),
            allowHosts=("relay.example.test",),
            policies=lambda defaults: [AllowListPolicy(portal), *defaults[1:]],
        )
        self.assertEqual(
            self.attempt(named, "192.0.2.44", b"a@gopherpost.test", b"bob@example.test")[-1],
            b"250 2.1.5 Ok",
        )
        proto, transport = named.connect("192.0.2.45")
        self.assertEqual(replies(transport), [b"554 5.7.1 Access denied"])

    def test_localSenderOnlyForRelayClients(self) -> None:
        """
        SMTP_REQUIRE_LOCAL_DOMAIN applies to clients that may relay; an MX
        client's sender may be anyone.
        """
        harness = InboundHarness(
            self, allowNetworks=net("0.0.0.0/0"), relayNetworks=net("127.0.0.1/32")
        )
        proto, transport = harness.connect("127.0.0.1")
        proto.dataReceived(b"EHLO c.test\r\nMAIL FROM:<m@example.test>\r\n")
        self.assertTrue(replies(transport)[-1].startswith(b"553 5.7.1 <m@example.test>"))
        proto, transport = harness.connect("192.0.2.7")
        proto.dataReceived(b"EHLO c.test\r\n")
        proto.dataReceived(b"MAIL FROM:<m@example.test>\r\n")
        self.assertEqual(replies(transport)[-1], b"250 2.1.0 Ok")


class SubmissionTests(SynchronousTestCase):
    """
    The submission role requires STARTTLS before MAIL.
    """

    def test_tlsFirst(self) -> None:
        """
        MAIL in the clear is C{530 5.7.0}; after STARTTLS it goes on.
        """
        harness = InboundHarness(self, contextFactory=object(), tlsDisable=False, role=SUBMISSION)
        proto, transport = harness.connect(tls=True)
        proto.dataReceived(b"EHLO c.test\r\n")
        self.assertIn(b"250-STARTTLS", replies(transport))
        proto.dataReceived(b"MAIL FROM:<a@gopherpost.test>\r\n")
        self.assertEqual(replies(transport), [b"530 5.7.0 Must issue a STARTTLS command first"])
        proto.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(replies(transport), [b"220 2.0.0 Ready to start TLS"])
        proto.handshakeCompleted()
        proto.dataReceived(b"EHLO c.test\r\n")
        replies(transport)
        proto.dataReceived(b"MAIL FROM:<a@gopherpost.test>\r\n")
        self.assertEqual(replies(transport), [b"250 2.1.0 Ok"])
