"""
Tests for L{gopherpost.auth.policies}: AUTH required before MAIL, the
sender rights, the header From, the envelope metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.auth.policies import (
    HeaderFromPolicy,
    RequireAuthPolicy,
    SenderRightsPolicy,
    authMetadata,
    fromAddresses,
)
from gopherpost.auth.replies import AuthReply
from gopherpost.auth.senders import SenderRights
from tests.support.auth import FakeContext

RIGHTS = {
    "alice@example.org": SenderRights.of("alice@example.org", ["*@lists.example.org"]),
    "app": SenderRights.of("app", ["noreply@example.org"]),
}


@dataclass
class Mailbox:
    text: str


@dataclass
class Transaction:
    sender: Any
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    headers: list[tuple[str, str]]


@dataclass(frozen=True)
class OtherReply:
    """
    A reply type of another shape (the inbound chain's: an action before
    the reason).
    """

    code: int
    text: str = ""
    action: str = "none"
    reason: str | None = None


def authenticated(user: str | None) -> FakeContext:
    return FakeContext(authenticatedUser=user, authMechanism="PLAIN" if user else None)


class RequireAuthTests(SynchronousTestCase):
    def test_beforeAuth(self) -> None:
        """
        C{530 5.7.0 Authentication required} until AUTH.
        """
        policy = RequireAuthPolicy()
        self.assertEqual(
            policy.mail(authenticated(None), Transaction(Mailbox("a@example.org"))),
            AuthReply(530, "5.7.0 Authentication required", "auth-required"),
        )
        self.assertIsNone(policy.mail(authenticated("app"), Transaction(Mailbox(""))))

    def test_otherStagesPass(self) -> None:
        policy = RequireAuthPolicy()
        context = authenticated(None)
        self.assertIsNone(policy.connect(context))
        self.assertIsNone(policy.helo(context))
        self.assertIsNone(policy.rcpt(context, None, None))
        self.assertIsNone(policy.data(context, None))
        self.assertIsNone(policy.message(context, None, None))
        self.assertIn("require-auth", repr(policy))

    def test_replyType(self) -> None:
        """
        The replies are made by the reply type given (by keyword).
        """
        reply = RequireAuthPolicy(OtherReply).mail(authenticated(None), Transaction(Mailbox("")))
        self.assertEqual(
            reply, OtherReply(530, "5.7.0 Authentication required", reason="auth-required")
        )


class SenderRightsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = SenderRightsPolicy(RIGHTS.get)

    def mail(self, user: str | None, sender: str) -> Any:
        return self.policy.mail(authenticated(user), Transaction(Mailbox(sender)))

    def test_owned(self) -> None:
        self.assertIsNone(self.mail("alice@example.org", "alice@example.org"))
        self.assertIsNone(self.mail("alice@example.org", "Alice+news@Example.ORG"))
        self.assertIsNone(self.mail("alice@example.org", "digest@lists.example.org"))
        self.assertIsNone(self.mail("app", "noreply@example.org"))

    def test_nullSender(self) -> None:
        self.assertIsNone(self.mail("app", ""))

    def test_notOwned(self) -> None:
        """
        C{553 5.7.1}, as Postfix's reject_sender_login_mismatch words it.
        """
        self.assertEqual(
            self.mail("app", "ceo@example.org"),
            AuthReply(
                553,
                "5.7.1 <ceo@example.org>: Sender address rejected: not owned by user app",
                "sender",
            ),
        )

    def test_unauthenticatedUntouched(self) -> None:
        """
        Sessions without AUTH are not this policy's business.
        """
        self.assertIsNone(self.mail(None, "ceo@example.org"))

    def test_goneUser(self) -> None:
        """
        A user removed after authenticating owns nothing (but <>).
        """
        self.assertEqual(self.mail("carol@example.org", "carol@example.org").code, 553)
        self.assertIsNone(self.mail("carol@example.org", ""))

    def test_plainStringSender(self) -> None:
        """
        A transaction whose sender is text works too.
        """
        reply = self.policy.mail(authenticated("app"), Transaction("x@example.org"))
        self.assertEqual(reply.code, 553)


class HeaderFromTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = HeaderFromPolicy(RIGHTS.get)

    def message(self, user: str | None, *froms: str) -> Any:
        headers = [("Subject", "hi")] + [("From", value) for value in froms]
        return self.policy.message(authenticated(user), Transaction(Mailbox("")), Message(headers))

    def test_owned(self) -> None:
        self.assertIsNone(self.message("alice@example.org", "Alice <alice@example.org>"))
        self.assertIsNone(
            self.message("alice@example.org", "=?utf-8?q?Al=C3=AFce?= <ALICE@example.org>")
        )
        self.assertIsNone(
            self.message("alice@example.org", "alice@example.org, x@lists.example.org")
        )

    def test_notOwned(self) -> None:
        reply = self.message("app", '"noreply@example.org" <ceo@example.org>')
        self.assertEqual(
            (reply.code, reply.text),
            (550, "5.7.1 <ceo@example.org>: From header address rejected: not owned by user app"),
        )

    def test_everyFromField(self) -> None:
        """
        Each From field counts (a second one cannot hide behind the first).
        """
        self.assertEqual(self.message("app", "noreply@example.org", "ceo@example.org").code, 550)

    def test_unclear(self) -> None:
        """
        No From, a From without an address, or one that only parses with
        defects (what parsers and mail readers may read differently):
        refused.
        """
        for froms in (
            (),
            ("undisclosed-recipients:;",),
            ("",),
            ("noreply@example.org <ceo@example.org>",),
            ("noreply@example.org)<ceo@example.org>",),
            ("noreply@example.org@ceo.example.org",),
            ("noreply",),
        ):
            reply = self.message("app", *froms)
            self.assertEqual(reply.code, 550, froms)
            self.assertIn("5.7.1", reply.text)

    def test_unauthenticatedUntouched(self) -> None:
        self.assertIsNone(self.message(None, "ceo@example.org"))

    def test_fromAddresses(self) -> None:
        self.assertEqual(
            fromAddresses([("FROM", "A <a@example.org>, b@example.org")]),
            ["a@example.org", "b@example.org"],
        )
        self.assertIsNone(fromAddresses([("Sender", "a@example.org")]))


class MetadataTests(SynchronousTestCase):
    def test_authenticated(self) -> None:
        """
        The user and the mechanism go into the envelope's metadata.
        """
        self.assertEqual(
            authMetadata(authenticated("alice@example.org")),
            {"authUser": "alice@example.org", "authMechanism": "PLAIN"},
        )

    def test_notAuthenticated(self) -> None:
        self.assertEqual(authMetadata(authenticated(None)), {})
        self.assertEqual(authMetadata(object()), {})
