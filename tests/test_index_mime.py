"""
Reading messages for the index and the API: addresses, encodings, parts,
broken input.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.index.mime import (
    Address,
    cleanTags,
    decodeHeader,
    findPart,
    htmlToText,
    parseMessage,
    snippetOf,
)
from tests.support.mailstore import makeMessage


class HeaderTests(SynchronousTestCase):
    def test_encodedWords(self) -> None:
        self.assertEqual(
            decodeHeader("=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus =?iso-8859-1?q?K=F6ln?="),
            "Grüße aus Köln",
        )
        self.assertEqual(decodeHeader("=?bogus?q?x?="), "=?bogus?q?x?=")
        self.assertEqual(decodeHeader("folded\r\n\tline"), "folded line")
        self.assertEqual(decodeHeader(None), "")

    def test_rawUTF8(self) -> None:
        raw = "Subject: Ünïcödé\r\nFrom: Jörg <jörg@exämple.test>\r\n\r\nx\r\n".encode()
        parsed = parseMessage(raw)
        self.assertEqual(parsed.subject, "Ünïcödé")
        self.assertEqual(parsed.sender, Address("Jörg", "jörg@exämple.test"))

    def test_addresses(self) -> None:
        raw = (
            b"From: plain@client.test\r\n"
            b'To: "Doe, John" <john@x.test>, =?utf-8?q?J=C3=B6rg?= <j@x.test>, <bare@x.test>\r\n'
            b"Cc: group: a@x.test, b@x.test;\r\n"
            b"Reply-To: Name <reply@x.test>\r\n\r\nbody\r\n"
        )
        parsed = parseMessage(raw)
        self.assertEqual(parsed.sender, Address("", "plain@client.test"))
        self.assertEqual(
            parsed.to,
            [
                Address("Doe, John", "john@x.test"),
                Address("Jörg", "j@x.test"),
                Address("", "bare@x.test"),
            ],
        )
        self.assertEqual([a.address for a in parsed.cc], ["a@x.test", "b@x.test"])
        self.assertEqual(parsed.replyTo, [Address("Name", "reply@x.test")])

    def test_date(self) -> None:
        self.assertEqual(parseMessage(makeMessage()).date, 1796119200.0)
        self.assertIsNone(parseMessage(b"Date: yesterday\r\n\r\nx").date)


class PartTests(SynchronousTestCase):
    def test_parts(self) -> None:
        raw = makeMessage(
            text="text body",
            html="<p>html body</p>",
            attachments=[("a.pdf", "application/pdf", b"%PDF"), ("b.png", "image/png", b"\x89PNG")],
        )
        parsed = parseMessage(raw, checksums=True)
        self.assertEqual(parsed.text.strip(), "text body")
        self.assertEqual(parsed.html.strip(), "<p>html body</p>")
        self.assertEqual([p.fileName for p in parsed.attachments], ["a.pdf", "b.png"])
        self.assertEqual([p.partId for p in parsed.attachments], ["2", "3"])
        self.assertEqual(parsed.attachments[0].size, 4)
        self.assertIsNotNone(parsed.attachments[0].checksums)
        found = findPart(raw, "3")
        assert found is not None
        self.assertEqual((found[0].contentType, found[1]), ("image/png", b"\x89PNG"))
        self.assertIsNone(findPart(raw, "9"))
        html = findPart(raw, "1.2")
        assert html is not None
        self.assertEqual(html[1].strip(), b"<p>html body</p>")

    def test_inlineRelated(self) -> None:
        raw = (
            b"MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=r\r\n\r\n"
            b'--r\r\nContent-Type: text/html\r\n\r\n<img src="cid:logo">\r\n'
            b"--r\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBO\r\n"
            b"--r--\r\n"
        )
        parsed = parseMessage(raw)
        self.assertEqual([(p.contentId, p.partId) for p in parsed.inline], [("logo", "2")])
        self.assertEqual(parsed.attachments, [])

    def test_charsets(self) -> None:
        raw = b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nK\xf6ln\r\n"
        self.assertEqual(parseMessage(raw).text.strip(), "Köln")
        raw = b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nK\xc3\xb6ln\r\n"
        self.assertEqual(parseMessage(raw).text.strip(), "Köln")

    def test_htmlOnlyBodyText(self) -> None:
        parsed = parseMessage(
            b"Content-Type: text/html\r\n\r\n<style>p{}</style><p>Hello</p><script>x()</script><p>World</p>"
        )
        self.assertEqual(parsed.bodyText().split(), ["Hello", "World"])
        self.assertEqual(htmlToText("<p>a &amp; b</p>").strip(), "a & b")

    def test_snippetAndTags(self) -> None:
        self.assertEqual(snippetOf("  a\n\n b  "), "a b")
        self.assertLessEqual(len(snippetOf("word " * 200)), 253)
        self.assertTrue(snippetOf("word " * 200).endswith("..."))
        self.assertEqual(cleanTags(["a", "A", " b!c ", "", 5]), ["a", "bc", "5"])


class BrokenInputTests(SynchronousTestCase):
    def test_neverRaises(self) -> None:
        """
        A bounded, seeded fuzz: random bytes, and messages with random bytes
        flipped, cut or repeated, never make the reader raise.
        """
        rng = random.Random(20261201)
        seeds = [
            makeMessage(
                html="<p>x</p>", attachments=[("a.bin", "application/octet-stream", b"\0" * 50)]
            ),
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x--",
            b"From: =?utf-8?b?!!!?= <\r\nTo: ,,,<<>>\r\nDate: Mon, 99 Foo 9999\r\n\r\n",
        ]
        for i in range(400):
            if i % 4 == 0:
                raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
            else:
                mutated = bytearray(rng.choice(seeds))
                for _ in range(rng.randrange(1, 8)):
                    position = rng.randrange(max(1, len(mutated)))
                    action = rng.randrange(3)
                    if action == 0 and mutated:
                        mutated[position] = rng.randrange(256)
                    elif action == 1:
                        del mutated[position : position + rng.randrange(1, 20)]
                    else:
                        mutated[position:position] = mutated[: rng.randrange(1, 40)]
                raw = bytes(mutated)
            parsed = parseMessage(raw, checksums=True)
            for part in parsed.attachments + parsed.inline:
                findPart(raw, part.partId)
            snippetOf(parsed.bodyText())
