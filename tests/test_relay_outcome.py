"""
Tests for L{gopherpost.relay.outcome}: replies, recipient outcomes and
delivery results.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.outcome import (
    DEFERRED,
    FAILED,
    SENT,
    DeliveryResult,
    RecipientOutcome,
    Reply,
    cleanText,
    defaultEnhancedCode,
    describeConnectionError,
    statusFor,
)


class ReplyTests(SynchronousTestCase):
    """
    L{Reply}: enhanced codes and text.
    """

    def test_enhanced(self) -> None:
        """
        The enhanced code is taken from the first line when its class
        matches the reply code, and stripped from the text of every line.
        """
        reply = Reply(550, ("5.1.1 no such user", "5.1.1 really"))
        self.assertEqual(reply.enhancedCode, "5.1.1")
        self.assertEqual(reply.text, "no such user really")
        self.assertEqual(str(reply), "550 5.1.1 no such user really")

    def test_noEnhanced(self) -> None:
        """
        No code, or a code of another class: L{None}, text kept.
        """
        self.assertIsNone(Reply(250, ("ok",)).enhancedCode)
        reply = Reply(451, ("5.1.1 confused",))
        self.assertIsNone(reply.enhancedCode)
        self.assertEqual(reply.text, "5.1.1 confused")
        self.assertIsNone(Reply(250).enhancedCode)


class StatusTests(SynchronousTestCase):
    """
    Reply codes as recipient statuses.
    """

    def test_statusFor(self) -> None:
        """
        2xx is sent, 5xx failed, 4xx and anything else deferred.
        """
        self.assertEqual(
            [statusFor(c) for c in (250, 251, 450, 421, 550, 554, 354, 199)],
            [SENT, SENT, DEFERRED, DEFERRED, FAILED, FAILED, DEFERRED, DEFERRED],
        )

    def test_defaultEnhancedCode(self) -> None:
        """
        A reply without an enhanced code gets its class with C{.0.0}; a code
        outside 2xx/4xx/5xx gets C{4.0.0}.
        """
        self.assertEqual(
            [defaultEnhancedCode(c) for c in (250, 451, 550, 354)],
            ["2.0.0", "4.0.0", "5.0.0", "4.0.0"],
        )


class RecipientOutcomeTests(SynchronousTestCase):
    """
    L{RecipientOutcome}'s one-line forms.
    """

    def test_remote(self) -> None:
        """
        A remote reply is a DSN diagnostic code and a one-line last error.
        """
        outcome = RecipientOutcome("b@example.test", FAILED, 550, "5.1.1", "no such user", True)
        self.assertEqual(outcome.diagnosticCode, "smtp; 550 5.1.1 no such user")
        self.assertEqual(outcome.line, "550 5.1.1 no such user")

    def test_local(self) -> None:
        """
        Our own diagnosis is no diagnostic code, but has the same line.
        """
        outcome = RecipientOutcome("b@example.test", DEFERRED, 421, "4.4.1", "refused", False)
        self.assertIsNone(outcome.diagnosticCode)
        self.assertEqual(outcome.line, "421 4.4.1 refused")


class DeliveryResultTests(SynchronousTestCase):
    """
    L{DeliveryResult}'s views of its outcomes.
    """

    def test_byStatus(self) -> None:
        """
        C{sent}, C{deferred} and C{failed} list the recipients by status, in
        order; C{outcomeFor} finds one and raises L{KeyError} for others.
        """
        outcomes = (
            RecipientOutcome("a@x.test", SENT, 250, "2.0.0", "ok", True),
            RecipientOutcome("b@x.test", FAILED, 550, "5.1.1", "no", True),
            RecipientOutcome("c@x.test", DEFERRED, 451, "4.3.0", "later", True),
            RecipientOutcome("d@x.test", SENT, 250, "2.0.0", "ok", True),
        )
        result = DeliveryResult("mx.x.test", "192.0.2.1", 25, outcomes, accepted=True)
        self.assertEqual(result.sent, ("a@x.test", "d@x.test"))
        self.assertEqual(result.failed, ("b@x.test",))
        self.assertEqual(result.deferred, ("c@x.test",))
        self.assertIs(result.outcomeFor("c@x.test"), outcomes[2])
        self.assertRaises(KeyError, result.outcomeFor, "e@x.test")
        self.assertEqual((result.connectSeconds, result.transferSeconds), (0.0, 0.0))


class DescribeTests(SynchronousTestCase):
    """
    Connection errors and remote text as one clean line.
    """

    def test_openSSL(self) -> None:
        """
        An OpenSSL error lists its distinct reasons.
        """
        error = SSL.Error(
            [
                ("SSL routines", "", "certificate verify failed"),
                ("SSL routines", "", "certificate verify failed"),
                ("SSL routines", "", "unknown CA"),
            ]
        )
        self.assertEqual(
            describeConnectionError(Failure(error)), "certificate verify failed, unknown CA"
        )

    def test_nameMismatch(self) -> None:
        """
        A service_identity verification error names the mismatches.
        """

        class DNSMismatch:
            pass

        class VerificationError(Exception):
            errors = [DNSMismatch()]

        self.assertEqual(
            describeConnectionError(Failure(VerificationError())),
            "certificate does not match the host name (DNSMismatch)",
        )

    def test_other(self) -> None:
        """
        Anything else: its first line, control characters replaced; an
        empty message gives the type's name.
        """
        self.assertEqual(
            describeConnectionError(Failure(ValueError("bad\x1b[2J thing\nmore"))),
            "bad?[2J thing",
        )
        self.assertIn("refused", describeConnectionError(Failure(ConnectionRefusedError())))
        self.assertEqual(describeConnectionError(Failure(KeyError())), "KeyError")

    def test_cleanText(self) -> None:
        """
        Control characters become C{?}; the rest stays.
        """
        self.assertEqual(cleanText("a\x00b\rc\x7fd \u00e9"), "a?b?c?d \u00e9")
