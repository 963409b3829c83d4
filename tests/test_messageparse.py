"""
Tests for L{gopherpost.messageparse}: the same messages as the standard
library's C{BytesParser}, under both policies the tree uses.
"""

from __future__ import annotations

import random
from email.message import Message
from email.parser import BytesParser
from email.policy import Policy, compat32, default

from twisted.trial.unittest import SynchronousTestCase

from gopherpost import messageparse
from gopherpost.messageparse import parseBytes

_POLICIES = (compat32, default)

#: Messages that take the fast path and messages that must not, each with
#: every line end the parser knows.
_CORPUS = [
    b"From: a@example.test\nTo: b@example.test\nSubject: hi\n\nbody\n",
    b"Received: from x\n\tby y\n  with z\nFrom: <a@example.test>\nDate: Tue, 1 Dec 2026 10:00:00 +0000\n\n"
    + b"line\n" * 20,
    b'Subject: =?utf-8?q?caf=C3=A9?=\nFrom: "A, B" <a@example.test>, c@example.test\n\nx\n',
    b"Subject: \xc3\xa9t\xc3\xa9 8-bit\nFrom: a@example.test\n\n8-bit body \xff\xfe\n",
    b"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\ncaf=E9\n",
    b"Content-Type: text/html\n\n<p>hi</p>\n",
    b"Content-Type: text\n\nbroken type\n",
    b"Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=a.bin\n"
    + b"Content-Transfer-Encoding: base64\n\nAAEC\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nx\n--b--\n",
    b"Content-Type: MULTIPART/Alternative; boundary=b\n\n--b\n\nx\n--b--\n",
    b"Content-Type: multipart/mixed\n\nno boundary\n",
    b"Content-Type: message/rfc822\n\nSubject: inner\n\ninner body\n",
    b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nAction: failed\n",
    b"Subject: no body, no empty line\n",
    b"Subject: no body\n\n",
    b"",
    b"\n",
    b"\nbody without headers\n",
    b"From a@example.test Tue Dec  1 10:00:00 2026\nSubject: mbox\n\nx\n",
    b"Subject: a\nFrom x\n\nmisplaced envelope header\n",
    b" continuation first\nSubject: a\n\nx\n",
    b": no name\nSubject: a\n\nx\n",
    b"Subject: a\nnot a header line\n\nx\n",
    b"Subject: a\nBad Name: space in the name\n\nx\n",
    b"Subject: a\n\xc3\xa9: 8-bit name\n\nx\n",
    b"Subject: a\n \nX-Next: whitespace-only continuation\n\nx\n",
    b"Subject: a\nX-Empty:\nX-Spaces:   \n\nx\n",
    b"Subject: a\n\nbody\n\nwith\n\n\nempty lines\n",
    b"Subject: no line end at the end\n\nlast line",
    b"Subject: a\nTo: b\n\n",
]


def _endings(message: bytes) -> list[bytes]:
    variants = [message, message.replace(b"\n", b"\r\n"), message.replace(b"\n", b"\r")]
    # Mixed: CRLF in the headers, LF in the body, and the reverse.
    head, sep, body = message.partition(b"\n\n")
    if sep:
        variants.append(head.replace(b"\n", b"\r\n") + b"\r\n\r\n" + body)
        variants.append(head + b"\n\r\n" + body.replace(b"\n", b"\r\n"))
        variants.append(head.replace(b"\n", b"\r\n") + b"\r\r\n" + body)
    return variants


def _describe(message: Message) -> object:
    """
    Everything of a parsed message that a reader can see.
    """
    payload: object = message.get_payload()
    if isinstance(payload, list):
        payload = [_describe(part) if isinstance(part, Message) else part for part in payload]
    return (
        type(message),
        message.get_unixfrom(),
        list(message.raw_items()),
        message.get_default_type(),
        message.is_multipart(),
        payload,
        [type(d) for d in message.defects],
        message.preamble,
        message.epilogue,
    )


_HEADERS = [
    "Subject: x",
    "From: a@example.test",
    "To: <b@example.test>, =?utf-8?q?C=C3=A9?= <c@example.test>",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Type: TEXT/HTML",
    "Content-Transfer-Encoding: base64",
    "X-8bit: \udcc3\udca9",
    "X-Empty:",
    "\tfolded",
    " folded",
]
_BROKEN = [
    "Content-Type: multipart/mixed; boundary=q",
    "Content-Type: message/rfc822",
    "From mbox",
    ": empty",
    "no colon",
    "\udcff: 8-bit name",
]
_BODY = ["body text", "", "--q", "--q--", "From me", "Subject: not a header", "\udcff"]
_ENDS = ["\n", "\r\n", "\r"]


def _randomMessage(rng: random.Random) -> bytes:
    """
    Mostly well-formed messages (headers, an empty line, a body), some
    with a broken or unusual line, line ends of one kind or mixed.
    """
    style = rng.choice(_ENDS)
    mixed = rng.random() < 0.2

    def end() -> str:
        return rng.choice(_ENDS) if mixed else style

    lines = [rng.choice(_HEADERS) for _ in range(rng.randint(0, 8))]
    if rng.random() < 0.2:
        lines.insert(rng.randint(0, len(lines)), rng.choice(_BROKEN))
    if rng.random() < 0.9:
        lines.append("")
    lines += [rng.choice(_BODY) for _ in range(rng.randint(0, 6))]
    text = "".join(line + end() for line in lines)
    if rng.random() < 0.2:
        text = text.rstrip("\r\n")
    return text.encode("ascii", "surrogateescape")


class ParseBytesTests(SynchronousTestCase):
    """
    L{parseBytes} gives what C{BytesParser} gives.
    """

    def assertSameAsBytesParser(self, raw: bytes, policy: Policy) -> None:
        expected = BytesParser(policy=policy).parsebytes(raw)
        self.assertEqual(_describe(parseBytes(raw, policy)), _describe(expected), (raw, policy))

    def test_corpus(self) -> None:
        """
        Every message of the corpus, with every kind of line end, under
        both policies.
        """
        for message in _CORPUS:
            for raw in _endings(message):
                for policy in _POLICIES:
                    self.assertSameAsBytesParser(raw, policy)

    def test_random(self) -> None:
        """
        A seeded random mix of header, body and broken lines.
        """
        rng = random.Random(20261201)
        fast = 0
        for _ in range(3000):
            raw = _randomMessage(rng)
            fast += messageparse._simple(raw, compat32) is not None
            for policy in _POLICIES:
                self.assertSameAsBytesParser(raw, policy)
        # Both paths were compared, each many times.
        self.assertGreater(fast, 1000)
        self.assertLess(fast, 2500)

    def test_fastPathTaken(self) -> None:
        """
        A plain message does not go through C{BytesParser}; a multipart
        one, a Unix C{From } line and a missing empty line do.
        """
        used: list[bytes] = []
        real = messageparse._slowParser

        class Recording:
            def __init__(self, policy: Policy) -> None:
                self._parser = real(policy)

            def parsebytes(self, raw: bytes) -> Message:
                used.append(raw)
                return self._parser.parsebytes(raw)

        self.patch(messageparse, "_slowParser", Recording)
        plain = _CORPUS[1].replace(b"\n", b"\r\n")
        parseBytes(plain)
        parseBytes(plain, default)
        self.assertEqual(used, [])
        others = [_CORPUS[8], _CORPUS[11], _CORPUS[13], _CORPUS[18]]
        for raw in others:
            parseBytes(raw)
        self.assertEqual(used, others)
