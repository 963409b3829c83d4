"""
Mailpit's search syntax turned into SQL.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.index.query import QueryError, parseQuery, parseTimestamp, tokenize


class TokenizeTests(SynchronousTestCase):
    def test_tokens(self) -> None:
        self.assertEqual(tokenize('a "b c" subject:"d e" -f'), ["a", "b c", "subject:d e", "-f"])
        self.assertEqual(tokenize('  "unterminated quote'), ["unterminated quote"])
        self.assertEqual(tokenize(""), [])


class ParseTests(SynchronousTestCase):
    def test_conditions(self) -> None:
        query = parseQuery(
            "hello from:a@b -subject:x is:unread has:attachment tag:t larger:1k -bye"
        )
        self.assertEqual(len(query.conditions), 5)
        self.assertEqual(query.read, 0)
        self.assertEqual(query.match, ['"hello"*'])
        self.assertEqual(query.exclude, ['"bye"*'])
        self.assertEqual(query.matchExpression(), '"hello"* NOT "bye"*')
        self.assertEqual(query.parameters[0], "%a@b%")
        self.assertIn("NOT LIKE", query.conditions[1])
        source, conditions, parameters, rowid = query.source()
        self.assertIn("fulltext", source)
        self.assertEqual(
            (conditions[0], parameters[0], rowid),
            ("fulltext MATCH ?", '"hello"* NOT "bye"*', "fulltext.rowid"),
        )

    def test_onlyExcluded(self) -> None:
        source, conditions, parameters, rowid = parseQuery("-a -b").source()
        self.assertEqual((source, rowid), ("messages m", "m.rowid"))
        self.assertEqual(parameters, ['"a"* OR "b"*'])
        self.assertIn("NOT IN", conditions[0])

    def test_likeEscaped(self) -> None:
        query = parseQuery("subject:50%_off")
        self.assertEqual(query.parameters, ["%50\\%\\_off%"])

    def test_punctuationOnly(self) -> None:
        query = parseQuery("@@")
        self.assertIn("LIKE", query.conditions[0])

    def test_sizes(self) -> None:
        self.assertEqual(parseQuery("larger:1.5M").parameters, [int(1.5 * 1024 * 1024)])
        self.assertEqual(parseQuery("smaller:20kb").parameters, [20480])
        self.assertRaises(QueryError, parseQuery, "larger:big")
        self.assertRaises(QueryError, parseQuery, "larger:5tb")

    def test_dates(self) -> None:
        self.assertEqual(parseTimestamp("2026-12-01", "UTC"), 1796083200.0)
        self.assertEqual(parseTimestamp("2026-12-01T10:00:00Z"), 1796119200.0)
        self.assertEqual(parseTimestamp("Tue, 01 Dec 2026 10:00:00 +0000"), 1796119200.0)
        self.assertEqual(parseTimestamp("2026/12/01", "UTC"), 1796083200.0)
        self.assertEqual(parseTimestamp("2026-12-01", "Pacific/Auckland"), 1796036400.0)
        for bad in ("someday", "2026-13-45", "12/31"):
            self.assertRaises(QueryError, parseTimestamp, bad)
        self.assertRaises(QueryError, parseTimestamp, "2026-12-01", "No/Zone")
        before = parseQuery("before:2026-12-01", "UTC")
        self.assertEqual((before.conditions, before.ranges), ([], [("<=", 1796083200_000000)]))
        notAfter = parseQuery("-after:2026-12-01", "UTC")
        self.assertEqual(notAfter.ranges, [("<=", 1796083200_000000)])

    def test_badValues(self) -> None:
        for text in ("is:starred", "has:pdf"):
            self.assertRaises(QueryError, parseQuery, text)

    def test_emptyValuesIgnored(self) -> None:
        self.assertEqual(parseQuery("from: subject: tag: before:").conditions, [])

    def test_fuzz(self) -> None:
        """
        Random queries give SQL conditions or a QueryError, nothing else.
        """
        rng = random.Random(5)
        pieces = [
            "from:",
            "to:",
            "subject:",
            "is:",
            "has:",
            "before:",
            "after:",
            "larger:",
            "tag:",
            "-",
            "!",
            '"',
            "a",
            "1",
            "@",
            ".",
            " ",
            "%",
            "_",
            "'",
            ";",
            "k",
            "read",
        ]
        for _ in range(500):
            text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 20)))
            try:
                query = parseQuery(text)
            except QueryError:
                continue
            source, conditions, parameters, _ = query.source()
            self.assertEqual(sum(c.count("?") for c in conditions), len(parameters))
