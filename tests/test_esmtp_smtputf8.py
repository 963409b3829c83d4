"""
Tests for L{gopherpost.esmtp.smtputf8}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.esmtp.smtputf8 import addressKey, needsSMTPUTF8


class SMTPUTF8Tests(SynchronousTestCase):
    """
    Whether a message needs SMTPUTF8, and mailbox keys.
    """

    def test_needs(self) -> None:
        """
        A non-ASCII sender, recipient or header section needs SMTPUTF8.
        """
        self.assertFalse(needsSMTPUTF8("a@x.test", ["b@y.test"], b"Subject: x\r\n\r\n"))
        self.assertFalse(needsSMTPUTF8("", ["b@y.test"], b""))
        self.assertTrue(needsSMTPUTF8("jü@x.test", ["b@y.test"], b""))
        self.assertTrue(needsSMTPUTF8("a@x.test", ["b@bücher.test"], b""))
        self.assertTrue(needsSMTPUTF8("a@x.test", ["b@y.test"], "Subject: ü\r\n".encode()))

    def test_addressKey(self) -> None:
        """
        ASCII: lower case.  UTF-8: the local part NFC and lower case, the
        domain as A-labels, so both forms of a name are one mailbox.
        """
        self.assertEqual(addressKey("Bob@Example.TEST"), "bob@example.test")
        self.assertEqual(addressKey("B@Bücher.test"), "b@xn--bcher-kva.test")
        self.assertEqual(addressKey("b@xn--bcher-kva.test"), addressKey("B@bücher.test"))
        self.assertEqual(addressKey("Ju\u0308rgen@x.test"), addressKey("jürgen@x.test"))
