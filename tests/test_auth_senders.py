"""
Tests for L{gopherpost.auth.senders}: what an authenticated user may send
as.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.auth.senders import SenderPatternError, SenderRights, parseSenderPattern


class PatternTests(SynchronousTestCase):
    """
    L{parseSenderPattern}.
    """

    def test_normalized(self) -> None:
        """
        Patterns are lower case; C{@domain} means C{*@domain}; a trailing
        dot goes.
        """
        self.assertEqual(parseSenderPattern("Alice@Example.ORG"), "alice@example.org")
        self.assertEqual(parseSenderPattern("@example.org"), "*@example.org")
        self.assertEqual(parseSenderPattern("*@*.example.org."), "*@*.example.org")
        self.assertEqual(parseSenderPattern(" sales-*@example.org "), "sales-*@example.org")

    def test_invalid(self) -> None:
        """
        Anything that is not an address pattern is refused with a reason.
        """
        for text in (
            "",
            "alice",
            "alice@",
            "a b@example.org",
            "a@b@c",
            "a@exa mple.org",
            "a@example..org",
            "a,b@example.org",
            "x" * 250 + "@example.org",
        ):
            error = self.assertRaises(SenderPatternError, parseSenderPattern, text)
            self.assertIn("not a sender address or pattern", str(error))


class RightsTests(SynchronousTestCase):
    """
    L{SenderRights.owns}.
    """

    def test_ownAddress(self) -> None:
        """
        A user whose name is an address owns it, in any case.
        """
        rights = SenderRights("Alice@Example.org")
        self.assertTrue(rights.owns("alice@example.org"))
        self.assertTrue(rights.owns("ALICE@EXAMPLE.ORG"))
        self.assertFalse(rights.owns("bob@example.org"))
        self.assertEqual(rights.owned, ("alice@example.org",))

    def test_plainName(self) -> None:
        """
        A user name that is not an address owns nothing by itself.
        """
        rights = SenderRights("alice")
        self.assertFalse(rights.owns("alice"))
        self.assertFalse(rights.owns("alice@example.org"))
        self.assertEqual(rights.owned, ())

    def test_nullSender(self) -> None:
        """
        The null sender is everyone's.
        """
        self.assertTrue(SenderRights("alice").owns(""))

    def test_patterns(self) -> None:
        """
        Addresses and C{*} patterns; C{*} never crosses the C{@}.
        """
        rights = SenderRights.of("app", ["noreply@example.org", "*@example.net", "ops-*@*.test"])
        self.assertTrue(rights.owns("noreply@example.org"))
        self.assertFalse(rights.owns("reply@example.org"))
        self.assertTrue(rights.owns("anyone@example.net"))
        self.assertFalse(rights.owns("anyone@sub.example.net"))
        self.assertFalse(rights.owns("a@b@example.net"))
        self.assertTrue(rights.owns("ops-paging@mail.test"))
        self.assertFalse(rights.owns("dev@mail.test"))
        self.assertFalse(rights.owns("anyone@example.net.evil.test"))

    def test_extension(self) -> None:
        """
        An address extension belongs to the owner of the address without it.
        """
        rights = SenderRights("alice@example.org")
        self.assertTrue(rights.owns("alice+lists@example.org"))
        self.assertFalse(rights.owns("alicex+lists@example.org"))
        self.assertFalse(SenderRights("+x@example.org").owns("+y@example.org"))

    def test_badPattern(self) -> None:
        """
        L{SenderRights.of} checks its patterns.
        """
        self.assertRaises(SenderPatternError, SenderRights.of, "alice", ["nope"])
