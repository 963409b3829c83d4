"""
Tests for L{gopherpost.tlspolicy.sts}: the MTA-STS TXT record, the policy
grammar of RFC 8461 section 3.2 and MX pattern matching.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.tlspolicy.sts import (
    ENFORCE,
    NONE,
    TESTING,
    STSError,
    STSRecord,
    matchesPattern,
    parsePolicy,
    parseRecord,
    selectRecord,
)

GOOD = b"version: STSv1\nmode: enforce\nmx: mx1.example.test\nmx: *.mail.example.test\nmax_age: 86400\n"


class RecordTests(SynchronousTestCase):
    """
    The C{_mta-sts} TXT record (RFC 8461 3.1).
    """

    def test_minimal(self) -> None:
        self.assertEqual(parseRecord("v=STSv1; id=20160831085700Z"), STSRecord("20160831085700Z"))

    def test_separators(self) -> None:
        """
        Spaces and tabs around C{;}, a trailing C{;}, extensions.
        """
        self.assertEqual(parseRecord("v=STSv1 ;\tid=abc ; ext=v-1;"), STSRecord("abc"))
        self.assertEqual(parseRecord("v=STSv1;ext=x;id=Z9"), STSRecord("Z9"))

    def test_firstIdWins(self) -> None:
        self.assertEqual(parseRecord("v=STSv1; id=one; id=two"), STSRecord("one"))

    def test_invalid(self) -> None:
        for text in [
            "v=STSv1",
            "v=STSv1;",
            "v=STSv2; id=1",
            "v=STSv1; id=",
            "v=STSv1; id=has-dash",
            "v=STSv1; id=" + "a" * 33,
            "v=STSv1; ext=1",
            "v=STSv1 id=1",
            "v=STSv1; id=1 junk",
            "v=STSv1; =1; id=1",
            "id=1; v=STSv1",
        ]:
            with self.assertRaises(STSError, msg=text):
                parseRecord(text)

    def test_select(self) -> None:
        """
        Records not beginning with C{v=STSv1;} are ignored; none is no
        policy; two are an error.
        """
        self.assertIsNone(selectRecord([]))
        self.assertIsNone(selectRecord([b"v=spf1 -all", b"hello"]))
        self.assertEqual(selectRecord([b"v=spf1 -all", b"v=STSv1; id=x1"]), STSRecord("x1"))
        with self.assertRaises(STSError):
            selectRecord([b"v=STSv1; id=x1", b"v=STSv1; id=x2"])
        with self.assertRaises(STSError):
            selectRecord([b"v=STSv1; id=bad!"])


class PolicyTests(SynchronousTestCase):
    """
    The policy file (RFC 8461 3.2).
    """

    def test_good(self) -> None:
        policy = parsePolicy(GOOD)
        self.assertEqual(policy.mode, ENFORCE)
        self.assertEqual(policy.maxAge, 86400)
        self.assertEqual(policy.mx, ("mx1.example.test", "*.mail.example.test"))
        self.assertEqual(
            policy.lines,
            [
                "version: STSv1",
                "mode: enforce",
                "mx: mx1.example.test",
                "mx: *.mail.example.test",
                "max_age: 86400",
            ],
        )

    def test_lineEnds(self) -> None:
        """
        CRLF or LF, the last line with or without one, mixed; spaces after
        the colon and at the end of a line.
        """
        for data in [
            GOOD.replace(b"\n", b"\r\n"),
            GOOD.rstrip(b"\n"),
            b"version:STSv1\r\nmode:\ttesting  \nmx: a.test\r\nmax_age: 0",
        ]:
            policy = parsePolicy(data)
            self.assertIn(policy.mode, (ENFORCE, TESTING))

    def test_orderAndExtensions(self) -> None:
        """
        Fields in any order; unknown fields are ignored; the first of a
        repeated field wins, except C{mx}, which adds up.
        """
        policy = parsePolicy(
            b"max_age: 600\nmx: B.test\nfoo_bar-1.x: any value, with spaces\n"
            b"mode: testing\nmode: enforce\nversion: STSv1\nmx: c.test\nmax_age: 5\n"
        )
        self.assertEqual(
            (policy.mode, policy.maxAge, policy.mx), (TESTING, 600, ("b.test", "c.test"))
        )

    def test_noneWithoutMX(self) -> None:
        policy = parsePolicy(b"version: STSv1\nmode: none\nmax_age: 86400\n")
        self.assertEqual((policy.mode, policy.mx), (NONE, ()))

    def test_maxAgeLimit(self) -> None:
        self.assertEqual(parsePolicy(GOOD.replace(b"86400", b"31557600")).maxAge, 31557600)
        with self.assertRaises(STSError):
            parsePolicy(GOOD.replace(b"86400", b"31557601"))

    def test_invalid(self) -> None:
        """
        Everything the grammar does not allow is refused.
        """
        cases = [
            b"",
            b"\n",
            GOOD + b"\n",  # a blank line
            b"\n" + GOOD,
            GOOD.replace(b"STSv1", b"STSv2"),
            GOOD.replace(b"version", b"Version"),
            GOOD.replace(b"enforce", b"Enforce"),
            GOOD.replace(b"enforce", b"reject"),
            GOOD.replace(b"86400", b"1 day"),
            GOOD.replace(b"86400", b"-1"),
            GOOD.replace(b"86400", b"12345678901"),
            GOOD.replace(b"86400", b""),
            GOOD.replace(b"version: STSv1\n", b""),
            GOOD.replace(b"mode: enforce\n", b""),
            GOOD.replace(b"max_age: 86400\n", b""),
            b"version: STSv1\nmode: enforce\nmax_age: 86400\n",  # no mx
            GOOD.replace(b"mx1.example.test", b"mx1.example.test."),
            GOOD.replace(b"mx1.example.test", b"mx_1.example.test"),
            GOOD.replace(b"mx1.example.test", b"*mx.example.test"),
            GOOD.replace(b"mx1.example.test", b"mx.*.example.test"),
            GOOD.replace(b"mx1.example.test", "m\u00fcller.test".encode()),
            GOOD.replace(b"mx1.example.test", b"-mx.example.test"),
            GOOD.replace(b"mode: enforce", b"mode : enforce"),
            GOOD.replace(b"mode: enforce", b"mode enforce"),
            GOOD.replace(b"mode: enforce", b" mode: enforce"),
            GOOD.replace(b"mode: enforce", b"mode: enforce\rmx: x.test"),
            GOOD + b"ext: \x01",
            b"\xff" + GOOD,
        ]
        for data in cases:
            with self.assertRaises(STSError, msg=repr(data)):
                parsePolicy(data)

    def test_fuzz(self) -> None:
        """
        Random mutations of a good policy either parse or raise
        L{STSError}: nothing else (bounded, seeded).
        """
        rng = random.Random(8461)
        alphabet = b"\r\n\t :;*.-_abcmxSTv0123456789\x00\xff"
        for _ in range(3000):
            data = bytearray(GOOD)
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(len(data) + 1)
                if rng.random() < 0.5 and position < len(data):
                    del data[position]
                else:
                    data.insert(position, rng.choice(alphabet))
            try:
                parsePolicy(bytes(data))
            except STSError:
                pass


class MatchTests(SynchronousTestCase):
    """
    MX patterns (RFC 8461 4.1).
    """

    def test_exact(self) -> None:
        self.assertTrue(matchesPattern("mx.example.test", "MX.Example.Test."))
        self.assertFalse(matchesPattern("mx.example.test", "mx2.example.test"))

    def test_wildcard(self) -> None:
        """
        C{*.} matches exactly one more label on the left.
        """
        self.assertTrue(matchesPattern("*.example.test", "mx.example.test"))
        self.assertFalse(matchesPattern("*.example.test", "example.test"))
        self.assertFalse(matchesPattern("*.example.test", "a.mx.example.test"))
        self.assertFalse(matchesPattern("*.example.test", ".example.test"))

    def test_policy(self) -> None:
        policy = parsePolicy(GOOD)
        self.assertTrue(policy.matches("mx1.example.test"))
        self.assertTrue(policy.matches("b.mail.example.test"))
        self.assertFalse(policy.matches("evil.test"))


class RecordFuzzTests(SynchronousTestCase):
    """
    Random mutations of a good TXT record parse or raise L{STSError}.
    """

    def test_fuzz(self) -> None:
        rng = random.Random(8461)
        good = b"v=STSv1; id=20160831085700Z; ext=v"
        alphabet = b" \t;=vSTid0Z\x00\xff"
        for _ in range(3000):
            data = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(len(data) + 1)
                if rng.random() < 0.5 and position < len(data):
                    del data[position]
                else:
                    data.insert(position, rng.choice(alphabet))
            try:
                selectRecord([bytes(data)])
            except STSError:
                pass
