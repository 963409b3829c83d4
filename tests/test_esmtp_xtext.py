"""
Tests for L{gopherpost.esmtp.xtext}.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.esmtp.xtext import (
    decodeUTF8Address,
    decodeXtext,
    encodeUTF8Address,
    encodeXtext,
    isXtext,
)
from tests.support.properties import propertySettings


class XtextTests(SynchronousTestCase):
    """
    xtext (RFC 3461 4).
    """

    def test_decode(self) -> None:
        """
        C{+XX} escapes in either case decode; a bare C{+}, C{=}, a space or
        a bad escape is not xtext.
        """
        self.assertEqual(decodeXtext("a+2Bb+3dc"), "a+b=c")
        self.assertEqual(decodeXtext("plain"), "plain")
        for bad in ("a+", "a+4", "a+zz", "a=b", "a b", "é"):
            self.assertFalse(isXtext(bad), bad)
            self.assertIsNone(decodeXtext(bad), bad)

    @given(st.text(st.characters(max_codepoint=255)))
    @propertySettings(200)
    def test_roundTrip(self, text: str) -> None:
        """
        L{encodeXtext} gives xtext that decodes back.
        """
        encoded = encodeXtext(text)
        self.assertTrue(isXtext(encoded))
        self.assertEqual(decodeXtext(encoded), text)


class UTF8AddressTests(SynchronousTestCase):
    """
    utf-8-addr-xtext and utf-8-addr-unitext (RFC 6533 3).
    """

    def test_decode(self) -> None:
        """
        C{\\x{HEX}} escapes decode; raw non-ASCII only as unitext.
        """
        self.assertEqual(decodeUTF8Address("j\\x{FC}@x.test", unitext=False), "jü@x.test")
        self.assertEqual(decodeUTF8Address("jü@x.test", unitext=True), "jü@x.test")
        self.assertIsNone(decodeUTF8Address("jü@x.test", unitext=False))

    def test_invalid(self) -> None:
        """
        An escape of a character that needs none, a control character, a
        surrogate, a bare backslash or C{+}/C{=} unescaped is refused.
        """
        for bad in ("\\x{41}", "\\x{0}", "\\x{D800}", "a\\b", "a+b", "a=b", "", "\\x{110000}"):
            self.assertIsNone(decodeUTF8Address(bad, unitext=True), bad)
        self.assertEqual(decodeUTF8Address("a\\x{2B}b", unitext=False), "a+b")

    @given(
        st.text(st.characters(min_codepoint=0x21, blacklist_categories=("Cs", "Cc")), min_size=1)
    )
    @propertySettings(200)
    def test_roundTrip(self, address: str) -> None:
        """
        L{encodeUTF8Address} gives US-ASCII that decodes back.
        """
        encoded = encodeUTF8Address(address)
        self.assertTrue(encoded.isascii())
        self.assertEqual(decodeUTF8Address(encoded, unitext=False), address)
