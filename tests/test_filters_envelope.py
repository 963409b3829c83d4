"""
Tests for L{gopherpost.filters.envelope} and L{gopherpost.filters.verdict}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.filters.envelope import (
    AttributeEnvelopeEditor,
    FilterMessage,
    SessionFacts,
    stripBrackets,
)
from gopherpost.filters.interfaces import IEnvelopeEditor, IFilterableMessage
from gopherpost.filters.verdict import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    DeleteHeader,
    DeleteRecipient,
    Disposition,
    InsertHeader,
    ReplaceBody,
    Verdict,
)
from tests.support.filters import TLS, FakeContext, FakeRecipient, FakeTransaction, message


def editor() -> AttributeEnvelopeEditor:
    def recipient(address: str, parameters: dict) -> FakeRecipient:
        if "@" not in address:
            raise ValueError(address)
        return FakeRecipient(address, parameters)

    return AttributeEnvelopeEditor(makeRecipient=recipient)


class VerdictTests(SynchronousTestCase):
    def test_results(self) -> None:
        self.assertEqual(Verdict.accept().result, "accept")
        self.assertEqual(Verdict.accept(quarantine="x").result, "quarantine")
        self.assertEqual(Verdict.reject().result, "reject")
        self.assertEqual(Verdict.tempfail().result, "tempfail")
        self.assertEqual(Verdict.discard().result, "discard")
        self.assertEqual(Verdict.tempfail(result="timeout").result, "timeout")
        self.assertEqual(Verdict.reject().withResult("error").result, "error")
        self.assertTrue(Verdict.reject().refuses)
        self.assertFalse(Verdict.discard().refuses)
        self.assertEqual(Verdict.discard().code, 250)


class SessionFactsTests(SynchronousTestCase):
    def test_fromContext(self) -> None:
        facts = SessionFacts.fromContext(
            FakeContext(tls=TLS(), authenticatedUser="alice", role="submission")
        )
        self.assertEqual(facts.clientAddress, "192.0.2.10")
        self.assertEqual(facts.clientPort, 40000)
        self.assertEqual(facts.daemonName, "submission")
        self.assertEqual((facts.tlsVersion, facts.tlsCipher), ("TLSv1.3", "TLS_AES_256_GCM_SHA384"))
        self.assertEqual(facts.authenticatedUser, "alice")
        self.assertTrue(facts.mayRelay)
        plain = SessionFacts.fromContext(FakeContext())
        self.assertIsNone(plain.tlsVersion)
        self.assertFalse(plain.mayRelay)


class FilterMessageTests(SynchronousTestCase):
    """
    The working copy and its edits.
    """

    def working(self) -> FilterMessage:
        fake = message()
        transaction = FakeTransaction()
        transaction.recipients.append(FakeRecipient("two@example.test", {"NOTIFY": "NEVER"}))
        return FilterMessage.fromTransaction(
            fake.queueId, fake.headerSection, fake.body, transaction
        )

    def test_fromTransaction(self) -> None:
        working = self.working()
        self.assertEqual(working.sender, "sender@example.test")
        self.assertEqual(
            working.recipients, [("rcpt@example.test", ""), ("two@example.test", "NOTIFY=NEVER")]
        )
        self.assertEqual(working.content, message().content)
        request = working.scanRequest(SessionFacts("192.0.2.10"))
        self.assertEqual(request.recipients, ("rcpt@example.test", "two@example.test"))
        self.assertEqual(request.content, message().content)

    def test_headerEdits(self) -> None:
        working = self.working()
        working.apply(
            [
                InsertHeader(0, b"DKIM-Signature", b"v=1"),
                AddHeader(b"X-Virus-Status", b"Clean"),
                ChangeHeader(b"Subject", 1, b"[SPAM] Hello"),
                DeleteHeader(b"MIME-Version"),
            ],
            editor(),
        )
        section = working.headers.render()
        self.assertTrue(section.startswith(b"DKIM-Signature: v=1\r\nFrom:"))
        self.assertTrue(section.endswith(b"X-Virus-Status: Clean\r\n"))
        self.assertIn(b"Subject: [SPAM] Hello\r\n", section)
        self.assertNotIn(b"MIME-Version", section)

    def test_envelopeEdits(self) -> None:
        working = self.working()
        working.apply(
            [
                ReplaceBody(b"new\r\n"),
                ChangeSender("<bounces@example.test>", "SIZE=10"),
                AddRecipient("<archive@example.test>", "NOTIFY=NEVER"),
                AddRecipient("RCPT@example.test"),
                DeleteRecipient("<two@EXAMPLE.test>"),
            ],
            editor(),
        )
        self.assertEqual(working.body, b"new\r\n")
        self.assertEqual(
            (working.sender, working.senderParameters), ("bounces@example.test", "SIZE=10")
        )
        self.assertEqual(
            working.recipients,
            [("rcpt@example.test", ""), ("archive@example.test", "NOTIFY=NEVER")],
        )

    def test_badEditChangesNothing(self) -> None:
        """
        An invalid header name or address refuses the whole verdict.
        """
        working = self.working()
        before = working.content
        for edits in (
            [AddHeader(b"X-Good", b"1"), AddHeader(b"Bad Name", b"x")],
            [AddHeader(b"X-Good", b"1"), AddRecipient("<not an address>")],
            [AddHeader(b"X-Good", b"1"), ChangeSender("nobody")],
        ):
            self.assertRaises(ValueError, working.apply, edits, editor())
            self.assertEqual(working.content, before)
            self.assertFalse(working.headers.changed)
        working.apply([ChangeSender("<>")], editor())
        self.assertEqual(working.sender, "")

    def test_writeBack(self) -> None:
        """
        The edits reach the message and the transaction; untouched parts
        are left alone.
        """
        fake = message()
        transaction = FakeTransaction()
        working = FilterMessage.fromTransaction(
            fake.queueId, fake.headerSection, fake.body, transaction
        )
        self.successResultOf(working.writeBack(fake, transaction, editor()))
        self.assertEqual((fake.sectionReplaced, fake.bodyReplaced), (0, 0))

        working.apply(
            [
                AddHeader(b"X-A", b"1"),
                ReplaceBody(b"replaced\r\n"),
                AddRecipient("<new@example.test>"),
                DeleteRecipient("rcpt@example.test"),
                ChangeSender("<bounces@example.test>", "BODY=8BITMIME"),
            ],
            editor(),
        )
        self.successResultOf(working.writeBack(fake, transaction, editor()))
        self.assertTrue(fake.headerSection.endswith(b"X-A: 1\r\n"))
        self.assertEqual(fake.body, b"replaced\r\n")
        self.assertEqual([r.address for r in transaction.recipients], ["new@example.test"])
        self.assertEqual(transaction.sender, "bounces@example.test")
        self.assertEqual(transaction.parameters, {"BODY": "8BITMIME"})

    def test_interfaces(self) -> None:
        verifyObject(IEnvelopeEditor, editor())
        verifyObject(IFilterableMessage, message())

    def test_stripBrackets(self) -> None:
        self.assertEqual(stripBrackets(" <a@b> "), "a@b")
        self.assertEqual(stripBrackets("a@b"), "a@b")
        self.assertEqual(stripBrackets("<>"), "")

    def test_dispositionValues(self) -> None:
        self.assertEqual(Disposition("discard"), Disposition.DISCARD)
