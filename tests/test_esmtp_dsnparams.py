"""
Tests for L{gopherpost.esmtp.dsnparams} (the over-the-wire checks are in
L{tests.test_esmtp_inbound}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.esmtp.dsnparams import (
    DSNRequest,
    RecipientDSN,
    checkEnvelopeId,
    dsnMetadata,
    parseNotify,
    parseOriginalRecipient,
    parseReturn,
)


class CheckTests(SynchronousTestCase):
    """
    The value checks.
    """

    def test_notify(self) -> None:
        self.assertEqual(parseNotify("never"), ("NEVER",))
        self.assertEqual(parseNotify("Delay,SUCCESS"), ("DELAY", "SUCCESS"))
        for bad in (None, "", "NEVER,FAILURE", "FAILURE,FAILURE", "X", "SUCCESS,"):
            self.assertIsNone(parseNotify(bad), bad)

    def test_return(self) -> None:
        self.assertEqual(parseReturn("full"), "FULL")
        self.assertEqual(parseReturn("HDRS"), "HDRS")
        self.assertIsNone(parseReturn("BOTH"))
        self.assertIsNone(parseReturn(None))

    def test_envelopeId(self) -> None:
        self.assertTrue(checkEnvelopeId("abc+2B1"))
        self.assertTrue(checkEnvelopeId("x" * 100))
        self.assertFalse(checkEnvelopeId("x" * 101))
        self.assertFalse(checkEnvelopeId("a+0A"))
        self.assertFalse(checkEnvelopeId(""))

    def test_originalRecipient(self) -> None:
        self.assertEqual(parseOriginalRecipient("RFC822;a+2Bb@x.test"), ("rfc822", "a+b@x.test"))
        self.assertEqual(parseOriginalRecipient("utf-8;j\\x{FC}@x.test"), ("utf-8", "jü@x.test"))
        self.assertIsNone(parseOriginalRecipient("utf-8;jü@x.test"))
        self.assertEqual(parseOriginalRecipient("utf-8;jü@x.test", True), ("utf-8", "jü@x.test"))
        for bad in ("a@x.test", ";a@x.test", "rfc822;", "rfc822;a b", "x" * 501):
            self.assertIsNone(parseOriginalRecipient(bad), bad)


class MetadataTests(SynchronousTestCase):
    """
    Kept in the metadata and read back.
    """

    def test_empty(self) -> None:
        """
        No parameter, no entry; an empty or malformed entry reads as none.
        """
        self.assertEqual(dsnMetadata(None, None, [("a@x.test", None, None)]), {})
        self.assertFalse(DSNRequest.fromMetadata({}).anyParameter)
        self.assertFalse(DSNRequest.fromMetadata({"dsn": "junk"}).anyParameter)
        request = DSNRequest.fromMetadata({"dsn": {"ret": 1, "recipients": {"a": 2}}})
        self.assertFalse(request.anyParameter)
        self.assertTrue(request.forRecipient("a").notifyFailure)

    def test_roundTrip(self) -> None:
        metadata = dsnMetadata(
            "FULL",
            "id+2B",
            [("a@x.test", ("SUCCESS",), "rfc822;a@x.test"), ("b@x.test", None, None)],
        )
        request = DSNRequest.fromMetadata(metadata)
        self.assertTrue(request.returnFull)
        self.assertEqual(request.envelopeIdText, "id+")
        self.assertEqual(
            request.forRecipient("a@x.test"), RecipientDSN(("SUCCESS",), "rfc822;a@x.test")
        )
        self.assertEqual(request.forRecipient("b@x.test"), RecipientDSN())

    def test_orcptParameter(self) -> None:
        """
        A utf-8 ORCPT goes on as it is with SMTPUTF8, escaped without.
        """
        recipient = RecipientDSN(None, "utf-8;jü@x.test")
        self.assertEqual(recipient.orcptParameter(True), "utf-8;jü@x.test")
        self.assertEqual(recipient.orcptParameter(False), "utf-8;j\\x{FC}@x.test")
        self.assertEqual(
            RecipientDSN(None, "rfc822;a@x.test").orcptParameter(False), "rfc822;a@x.test"
        )
        self.assertIsNone(RecipientDSN().orcptParameter(True))
