"""
Tests for L{gopherpost.checks.dkimverify}: DKIM signatures (RSA, Ed25519)
and ARC chains verified with keys published in a loopback DNS zone.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.mxchecks import InlineCallbacks, SigningKey, message, startCheckEnvironment


class DKIMVerificationTests(unittest.TestCase):
    """
    L{DKIMVerifier.verify}.
    """

    def setUp(self) -> None:
        self.env = startCheckEnvironment(self, dnsTimeout=1.0)
        self.verifier = self.env.dkimVerifier()

    @defer.inlineCallbacks
    def test_none(self) -> InlineCallbacks:
        """
        An unsigned message has no results.
        """
        results = yield self.verifier.verify(message())
        self.assertEqual(results, [])

    @defer.inlineCallbacks
    def test_passRSA(self) -> InlineCallbacks:
        key = SigningKey("example.test")
        key.publish(self.env.dnsServer)
        signed = key.sign(message())
        results = yield self.verifier.verify(signed)
        self.assertEqual(len(results), 1)
        result = results[0]
        self.assertEqual(
            (result.result, result.domain, result.selector, result.algorithm),
            ("pass", "example.test", "sel", "rsa-sha256"),
        )
        self.assertEqual(len(result.b), 8)

    @defer.inlineCallbacks
    def test_passEd25519(self) -> InlineCallbacks:
        key = SigningKey("example.test", "ed", algorithm="ed25519")
        key.publish(self.env.dnsServer)
        results = yield self.verifier.verify(key.sign(message()))
        self.assertEqual([(r.result, r.algorithm) for r in results], [("pass", "ed25519-sha256")])

    @defer.inlineCallbacks
    def test_failModifiedBody(self) -> InlineCallbacks:
        key = SigningKey("example.test")
        key.publish(self.env.dnsServer)
        signed = key.sign(message(body=b"Pay 10 euros.\r\n"))
        tampered = signed.replace(b"Pay 10", b"Pay 99")
        results = yield self.verifier.verify(tampered)
        self.assertEqual([r.result for r in results], ["fail"])

    @defer.inlineCallbacks
    def test_everySignature(self) -> InlineCallbacks:
        """
        Each signature gets its own result, in header order: here an
        Ed25519 one that passes above an RSA one whose key is gone.
        """
        rsaKey = SigningKey("lists.test", "old")
        edKey = SigningKey("example.test", "ed", algorithm="ed25519")
        edKey.publish(self.env.dnsServer)
        self.env.dnsServer.addTXT("lists.test", "v=spf1 -all")
        signed = edKey.sign(rsaKey.sign(message()))
        results = yield self.verifier.verify(signed)
        self.assertEqual(
            [(r.result, r.domain) for r in results],
            [("pass", "example.test"), ("permerror", "lists.test")],
        )

    @defer.inlineCallbacks
    def test_temperror(self) -> InlineCallbacks:
        """
        A key lookup that gets SERVFAIL is a temperror, not a fail.
        """
        key = SigningKey("example.test")
        self.env.dnsServer.failWithServFail("sel._domainkey.example.test")
        results = yield self.verifier.verify(key.sign(message()))
        self.assertEqual([r.result for r in results], ["temperror"])

    @defer.inlineCallbacks
    def test_brokenSignature(self) -> InlineCallbacks:
        """
        A signature field missing its tags is neutral (RFC 8601).
        """
        broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test\r\n" + message()
        results = yield self.verifier.verify(broken)
        self.assertEqual([r.result for r in results], ["neutral"])


class ARCVerificationTests(unittest.TestCase):
    """
    L{DKIMVerifier.verifyARC}.
    """

    def setUp(self) -> None:
        self.env = startCheckEnvironment(self, dnsTimeout=1.0)
        self.verifier = self.env.dkimVerifier()

    def forwarded(self, key: SigningKey) -> bytes:
        data = (
            b"Authentication-Results: lists.test; spf=pass smtp.mailfrom=alice@example.test\r\n"
            + message()
        )
        return key.arcSeal(data, "lists.test")

    @defer.inlineCallbacks
    def test_none(self) -> InlineCallbacks:
        result = yield self.verifier.verifyARC(message())
        self.assertEqual(result.result, "none")

    @defer.inlineCallbacks
    def test_pass(self) -> InlineCallbacks:
        key = SigningKey("lists.test", "arc")
        key.publish(self.env.dnsServer)
        result = yield self.verifier.verifyARC(self.forwarded(key))
        self.assertEqual(
            (result.result, result.instances, result.sealer), ("pass", 1, "lists.test")
        )

    @defer.inlineCallbacks
    def test_failModified(self) -> InlineCallbacks:
        key = SigningKey("lists.test", "arc")
        key.publish(self.env.dnsServer)
        tampered = self.forwarded(key).replace(b"Hi there.", b"Buy now!!")
        result = yield self.verifier.verifyARC(tampered)
        self.assertEqual(result.result, "fail")

    @defer.inlineCallbacks
    def test_temperror(self) -> InlineCallbacks:
        key = SigningKey("lists.test", "arc")
        self.env.dnsServer.failWithServFail("arc._domainkey.lists.test")
        result = yield self.verifier.verifyARC(self.forwarded(key))
        self.assertEqual(result.result, "temperror")
