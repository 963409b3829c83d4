"""
Tests for L{gopherpost.inbound.parameters}: the tables of MAIL and RCPT
parameters.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.inbound.address import Mailbox
from gopherpost.inbound.context import EnvelopeRecipient, SessionContext, Transaction
from gopherpost.inbound.parameters import (
    MAIL_PARAMETERS,
    applyMailParameters,
    applyRcptParameters,
    splitParameters,
)
from gopherpost.inbound.replies import Reply


def context(extended: bool = True) -> SessionContext:
    context = SessionContext("192.0.2.1")
    context.helo = "client.test"
    context.extended = extended
    return context


class MailParameterTests(SynchronousTestCase):
    """
    SIZE and BODY, unknown and malformed parameters.
    """

    def apply(self, raw: bytes, extended: bool = True) -> tuple[Reply | None, Transaction]:
        transaction = Transaction(Mailbox("a", "b.test"))
        return applyMailParameters(raw, transaction, context(extended)), transaction

    def test_size(self) -> None:
        """
        SIZE is recorded; a malformed one is C{501}.
        """
        refusal, transaction = self.apply(b"SIZE=12345")
        self.assertIsNone(refusal)
        self.assertEqual(transaction.declaredSize, 12345)
        self.assertEqual(transaction.parameters, {"SIZE": "12345"})
        for bad in (b"SIZE", b"SIZE=-1", b"SIZE=1x", b"SIZE=" + b"9" * 21):
            refusal, _ = self.apply(bad)
            self.assertEqual(refusal, Reply(501, "5.5.4 Bad SIZE parameter syntax"), bad)

    def test_body(self) -> None:
        """
        BODY=7BIT and BODY=8BITMIME (any case) are recorded; others are
        C{501}; 8BITMIME is kept in the envelope's metadata.
        """
        refusal, transaction = self.apply(b"body=8bitmime")
        self.assertIsNone(refusal)
        self.assertEqual(transaction.body, "8BITMIME")
        self.assertEqual(transaction.metadata(), {"body": "8BITMIME"})
        refusal, transaction = self.apply(b"BODY=7BIT")
        self.assertEqual(transaction.metadata(), {})
        refusal, _ = self.apply(b"BODY=BINARYMIME")
        self.assertEqual(refusal, Reply(501, "5.5.4 Unsupported BODY parameter"))

    def test_afterHelo(self) -> None:
        """
        After a plain HELO, parameters are an error: extensions need EHLO.
        """
        refusal, _ = self.apply(b"BODY=8BITMIME", extended=False)
        assert refusal is not None
        self.assertEqual(refusal.code, 555)
        self.assertIn("BODY=8BITMIME", refusal.text)

    def test_unknown(self) -> None:
        """
        An unknown keyword is C{555}, echoed printably.
        """
        refusal, _ = self.apply(b"FOO=1")
        self.assertEqual(refusal, Reply(555, "5.5.4 Unsupported option: FOO=1"))
        refusal, _ = self.apply(b"SMTPUTF8")
        self.assertEqual(refusal, Reply(555, "5.5.4 Unsupported option: SMTPUTF8"))

    def test_malformed(self) -> None:
        """
        Bad keywords, control characters in values and repeats are C{501}.
        """
        for raw in (b"=1", b"-X=1", b"X=\x00\x1b[2J", b"X=a=b", b"SIZE=1 SIZE=2", b"X=\xff"):
            refusal, _ = self.apply(raw)
            assert refusal is not None
            self.assertEqual(refusal.code, 501, raw)
            self.assertTrue(refusal.text.isascii() and refusal.text.isprintable())

    def test_extensible(self) -> None:
        """
        An extension adds its keyword to a table.
        """
        seen = []

        def ret(value, transaction, context):
            seen.append(value)
            return None

        table = dict(MAIL_PARAMETERS, RET=ret)
        transaction = Transaction(Mailbox("a", "b.test"))
        self.assertIsNone(applyMailParameters(b"RET=HDRS SIZE=1", transaction, context(), table))
        self.assertEqual(seen, ["HDRS"])
        self.assertEqual(transaction.parameters, {"RET": "HDRS", "SIZE": "1"})


class RcptParameterTests(SynchronousTestCase):
    """
    RCPT takes no parameters yet; its table works like MAIL's.
    """

    def test_none(self) -> None:
        """
        Any RCPT parameter is C{555} today; a table entry records one.
        """
        recipient = EnvelopeRecipient(Mailbox("b", "c.test"))
        transaction = Transaction(Mailbox("a", "b.test"))
        refusal = applyRcptParameters(b"NOTIFY=NEVER", recipient, transaction, context())
        self.assertEqual(refusal, Reply(555, "5.5.4 Unsupported option: NOTIFY=NEVER"))
        table = {"NOTIFY": lambda value, recipient, transaction, context: None}
        self.assertIsNone(
            applyRcptParameters(b"NOTIFY=NEVER", recipient, transaction, context(), table)
        )
        self.assertEqual(recipient.parameters, {"NOTIFY": "NEVER"})

    def test_split(self) -> None:
        """
        L{splitParameters} gives keywords in upper case, values as given.
        """
        self.assertEqual(splitParameters(b"a=B c", context()), [("A", "B"), ("C", None)])
