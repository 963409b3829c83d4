"""
Tests for L{gopherpost.checks.authresults}.
"""

from __future__ import annotations

import authres
from twisted.trial import unittest

from gopherpost.checks.authresults import (
    authservIdOf,
    claimsAuthservId,
    formatAuthenticationResults,
)
from gopherpost.checks.dkimverify import ARCResult, DKIMResult
from gopherpost.checks.dmarc import DMARCResult
from gopherpost.checks.spf import SPFResult


class FormatTests(unittest.TestCase):
    """
    L{formatAuthenticationResults}: one field, every method, parsable by
    authres.
    """

    def test_allMethods(self) -> None:
        value = formatAuthenticationResults(
            "mx.gopher.test",
            SPFResult("pass", "mailfrom", "example.test", "alice@example.test", ""),
            [
                DKIMResult("pass", "example.test", "sel", "abc+/def", "rsa-sha256"),
                DKIMResult("fail", "lists.test", "s2", "zzzzzzzz", "ed25519-sha256"),
            ],
            DMARCResult("pass", "example.test", policy="reject"),
            ARCResult("none"),
        )
        self.assertTrue(value.startswith("mx.gopher.test;\r\n\t"))
        parsed = authres.AuthenticationResultsHeader.parse_value(value.replace("\r\n", ""))
        self.assertEqual(parsed.authserv_id, "mx.gopher.test")
        methods = [(r.method, r.result) for r in parsed.results]
        self.assertEqual(
            methods,
            [
                ("spf", "pass"),
                ("dkim", "pass"),
                ("dkim", "fail"),
                ("dmarc", "pass"),
                ("arc", "none"),
            ],
        )
        self.assertIn("smtp.mailfrom=alice@example.test", value)
        self.assertIn('header.b="abc+/def"', value)
        self.assertIn("header.d=example.test", value)
        self.assertIn("header.s=sel", value)
        self.assertIn("header.from=example.test", value)
        self.assertIn("policy.dmarc=reject", value)

    def test_heloAndNoSignature(self) -> None:
        value = formatAuthenticationResults(
            "mx.gopher.test",
            SPFResult("none", "helo", "client.test", "postmaster@client.test", ""),
            [],
            None,
            None,
        )
        self.assertEqual(
            value, "mx.gopher.test;\r\n\tspf=none smtp.helo=client.test;\r\n\tdkim=none"
        )

    def test_linesAreShortAndPrintable(self) -> None:
        value = formatAuthenticationResults(
            "mx.gopher.test",
            SPFResult("fail", "mailfrom", "example.test", "a@example.test", ""),
            [DKIMResult("pass", "example.test", "sel", "12345678", "rsa-sha256")] * 5,
            DMARCResult("fail", "example.test", policy="quarantine"),
            ARCResult("pass", 2, "lists.test"),
        )
        for line in value.split("\r\n"):
            self.assertLess(len(line), 998)
            self.assertTrue(all(" " <= c <= "~" or c == "\t" for c in line))


class AuthservIdTests(unittest.TestCase):
    """
    Recognising fields that claim to be ours.
    """

    def test_authservIdOf(self) -> None:
        self.assertEqual(authservIdOf("mx.gopher.test; spf=pass"), "mx.gopher.test")
        self.assertEqual(authservIdOf(" (c (nested)) MX.Gopher.TEST. 1; none"), "mx.gopher.test")
        self.assertEqual(authservIdOf("\r\n\tmx.gopher.test;\r\n\tdkim=pass"), "mx.gopher.test")
        self.assertEqual(authservIdOf('"mx.gopher.test"; none'), "mx.gopher.test")
        self.assertEqual(authservIdOf(""), "")

    def test_claims(self) -> None:
        self.assertTrue(claimsAuthservId("MX.gopher.test; dmarc=pass", "mx.gopher.test"))
        self.assertFalse(claimsAuthservId("mx.gopher.test.evil.test; dmarc=pass", "mx.gopher.test"))
        self.assertFalse(claimsAuthservId("lists.test; dmarc=pass", "mx.gopher.test"))
