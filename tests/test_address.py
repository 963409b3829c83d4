"""
Tests for L{gopherpost.inbound.address}: RFC 5321 paths.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.inbound.address import (
    NULL_PATH,
    AddressError,
    Mailbox,
    parseCommandArgument,
    parsePath,
)
from tests.support.properties import propertySettings


class CommandArgumentTests(SynchronousTestCase):
    """
    L{parseCommandArgument} splits the path from the parameters.
    """

    def test_shapes(self) -> None:
        """
        Brackets, spaces around the colon, a bare address, parameters.
        """
        for argument, expected in (
            (b"FROM:<a@b.test>", (b"<a@b.test>", b"")),
            (b"from: <a@b.test> SIZE=10 BODY=8BITMIME", (b"<a@b.test>", b"SIZE=10 BODY=8BITMIME")),
            (b"FROM:a@b.test SIZE=1", (b"<a@b.test>", b"SIZE=1")),
            (b"FROM:<>", (b"<>", b"")),
            (b'FROM:<"a>b"@c.test> X', (b'<"a>b"@c.test>', b"X")),
            (b'FROM:<"a\\">b"@c.test>', (b'<"a\\">b"@c.test>', b"")),
        ):
            self.assertEqual(parseCommandArgument(argument, b"FROM"), expected, argument)

    def test_malformed(self) -> None:
        """
        Anything else is L{None}: the caller's syntax error.
        """
        for argument in (b"", b"FROM", b"TO:<a@b.test>", b"FROM:<a@b.test", b"FROM:<a>x", b"FROM:"):
            self.assertIsNone(parseCommandArgument(argument, b"FROM"), argument)


class PathTests(SynchronousTestCase):
    """
    L{parsePath}: what is accepted and the reply for what is not.
    """

    def refused(self, path: bytes, sender: bool = False, **kwargs: object) -> tuple[int, str]:
        with self.assertRaises(AddressError) as caught:
            parsePath(path, sender=sender, **kwargs)  # type: ignore[arg-type]
        reply = caught.exception.reply
        return reply.code, reply.text

    def test_accepted(self) -> None:
        """
        Dot-atoms, quoted local parts, address literals, source routes.
        """
        for path, mailbox in (
            (b"<alice@example.test>", Mailbox("alice", "example.test")),
            (b"<first.last+tag@sub.example.test>", Mailbox("first.last+tag", "sub.example.test")),
            (b"<first..last@x.test>", Mailbox("first..last", "x.test")),
            (b'<"a b"@x.test>', Mailbox('"a b"', "x.test")),
            (b'<"a\\"b"@x.test>', Mailbox('"a\\"b"', "x.test")),
            (b"<user@[192.0.2.1]>", Mailbox("user", "[192.0.2.1]")),
            (b"<user@[IPv6:2001:db8::1]>", Mailbox("user", "[IPv6:2001:db8::1]")),
            (b"<@relay.test,@other.test:user@x.test>", Mailbox("user", "x.test")),
            (b"<u_1@host_name.test>", Mailbox("u_1", "host_name.test")),
        ):
            self.assertEqual(parsePath(path, sender=False), mailbox, path)

    def test_null(self) -> None:
        """
        C{<>} is the null reverse-path, for senders only.
        """
        self.assertIs(parsePath(b"<>", sender=True), NULL_PATH)
        self.assertTrue(NULL_PATH.isNull)
        self.assertEqual(NULL_PATH.text, "")
        self.assertEqual(self.refused(b"<>")[0], 501)

    def test_postmaster(self) -> None:
        """
        A bare C{<Postmaster>} is the server's postmaster (RFC 5321
        4.1.1.3); other addresses need a domain.
        """
        self.assertEqual(
            parsePath(b"<PostMaster>", sender=False, postmasterDomain="mx.test"),
            Mailbox("postmaster", "mx.test"),
        )
        code, text = self.refused(b"<bob>", postmasterDomain="mx.test")
        self.assertEqual(code, 501)
        self.assertIn("need fully-qualified address", text)
        self.assertEqual(self.refused(b"<postmaster>", sender=True)[0], 501)

    def test_controlCharacters(self) -> None:
        """
        CR, LF, NUL, DEL and other control characters are refused, also in
        a quoted local part or after a backslash (issue 12, item 7):
        C{501 5.1.3} for a recipient, C{501 5.1.7} for a sender.
        """
        for path in (
            b'<"a\rX-Injected: yes"@mx.gp.test>',
            b'<"a\nb"@x.test>',
            b"<a\x00b@x.test>",
            b'<"a\\\rb"@x.test>',
            b"<a@x\x7f.test>",
            b"<a\tb@x.test>",
            b"<a@x.test\x1b>",
        ):
            code, text = self.refused(path)
            self.assertEqual((code, text[:6]), (501, "5.1.3 "), path)
            self.assertTrue(text.isascii() and text.isprintable(), text)
            code, text = self.refused(path, sender=True)
            self.assertEqual((code, text[:6]), (501, "5.1.7 "), path)

    def test_eightBit(self) -> None:
        """
        8-bit octets without SMTPUTF8 are C{553 5.6.7} (RFC 6531), never an
        exception (issue 12, item 8); with SMTPUTF8, UTF-8 is taken.
        """
        for path in (
            b'<"\xff"@x.test>',
            b"<\\\xe9@x.test>",
            b"<j\xc3\xb6rg@x.test>",
            b"<a@\xc3\xa9.test>",
        ):
            self.assertEqual(
                self.refused(path),
                (553, "5.6.7 Non-ASCII address not permitted without SMTPUTF8"),
                path,
            )
            self.assertEqual(self.refused(path, sender=True)[0], 553)
        self.assertEqual(
            parsePath(b"<j\xc3\xb6rg@x.test>", sender=False, smtputf8=True),
            Mailbox("j\xf6rg", "x.test"),
        )
        self.assertEqual(self.refused(b"<\xff@x.test>", smtputf8=True)[0], 501)

    def test_lengths(self) -> None:
        """
        A local part of 64 octets passes, 65 do not; a path of 256 octets
        (with its brackets) passes, 257 do not, which also keeps domains
        within their 255 (RFC 5321 4.5.3.1).
        """
        domain = ".".join(["d" * 63] * 3 + ["e" * 61])
        self.assertEqual(len(domain), 253)
        parsePath(b"<" + b"l" * 64 + b"@x.test>", sender=False)
        parsePath(b"<a@" + domain[:-1].encode() + b">", sender=False)
        code, text = self.refused(b"<a@" + domain.encode() + b">")
        self.assertIn("path too long", text)
        code, text = self.refused(b"<" + b"l" * 65 + b"@x.test>")
        self.assertEqual(code, 501)
        self.assertIn("local part too long", text)
        code, text = self.refused(b'<"' + b"q" * 63 + b'"@x.test>')
        self.assertIn("local part too long", text)
        code, text = self.refused(b"<a@" + b"x" * 63 + b"." + domain.encode() + b">")
        self.assertEqual(code, 501)
        self.assertIn("too long", text)
        label = b"l" * 64
        self.assertEqual(self.refused(b"<a@" + label + b".test>")[0], 501)

    def test_syntax(self) -> None:
        """
        Other malformed paths are C{501}, with the address escaped.
        """
        for path in (
            b"a@b.test",
            b"<a@b.test",
            b"<a@>",
            b"<@b.test>",
            b"<a b@c.test>",
            b"<a@-b.test>",
            b"<a@b..test>",
            b"<a@b.test.>",
            b'<"a@b.test>',
            b'<"a"b@c.test>',
            b"<a@[1.2.3]>",
            b"<a@[IPv6:zz]>",
            b"<a@b@c.test>",
            b"<@x.test:>",
            b"<@x.test,y.test:a@b.test>",
        ):
            code, text = self.refused(path)
            self.assertEqual(code, 501, path)
            self.assertTrue(text.isascii() and text.isprintable(), text)

    @given(st.binary(max_size=80))
    @propertySettings(500)
    def test_neverRaisesOtherwise(self, inner: bytes) -> None:
        """
        Whatever the bytes, the answer is a mailbox or an L{AddressError}
        with a printable reply.
        """
        for sender in (False, True):
            try:
                mailbox = parsePath(b"<" + inner + b">", sender=sender, postmasterDomain="mx.test")
            except AddressError as e:
                self.assertIn(e.reply.code, (501, 553))
                self.assertTrue(e.reply.wire.isascii())
            else:
                self.assertTrue(mailbox.text.isprintable())
                self.assertNotIn("\r", mailbox.text)
