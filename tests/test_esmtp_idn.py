"""
Tests for L{gopherpost.esmtp.idn}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.esmtp.idn import domainKey, isValidDomain, toALabel


class IDNTests(SynchronousTestCase):
    """
    IDNA 2008 A-labels.
    """

    def test_aLabels(self) -> None:
        """
        U-labels become A-labels (case folded, trailing dot dropped); ASCII
        names are lower-cased.
        """
        self.assertEqual(toALabel("Bücher.test."), "xn--bcher-kva.test")
        self.assertEqual(toALabel("EXAMPLE.test"), "example.test")
        self.assertEqual(domainKey("δοκιμή.test"), "xn--jxalpdlp.test")

    def test_nonTransitional(self) -> None:
        """
        IDNA 2008, not 2003: C{ß} stays C{ß} (2003 mapped it to C{ss}).
        """
        self.assertEqual(toALabel("straße.test"), "xn--strae-oqa.test")
        self.assertNotEqual(toALabel("straße.test"), "strasse.test")

    def test_invalid(self) -> None:
        """
        Names IDNA 2008 does not allow have no A-label.
        """
        self.assertIsNone(toALabel("☃.test"))
        self.assertIsNone(toALabel("ü" * 64 + ".test"))
        self.assertFalse(isValidDomain("☃.test"))
        self.assertTrue(isValidDomain("bücher.test"))
        self.assertEqual(domainKey("☃.TEST"), "☃.test")
