"""
Tests for L{gopherpost.auth.sasl}: the PLAIN and LOGIN exchanges, and
responses that are not what they should be.
"""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.auth.sasl import (
    ABORTED,
    AUTHZID,
    MALFORMED,
    MAX_RESPONSE,
    MECHANISMS,
    TOO_LONG,
    Challenge,
    Credentials,
    LoginExchange,
    PlainExchange,
    SASLError,
    decodeResponse,
)

BOUND = settings(max_examples=300, deadline=None, derandomize=True)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class DecodeResponseTests(SynchronousTestCase):
    """
    L{decodeResponse}.
    """

    def assertKind(self, kind: str, line: bytes, initial: bool = False) -> None:
        error = self.assertRaises(SASLError, decodeResponse, line, initial)
        self.assertEqual(error.kind, kind)

    def test_base64(self) -> None:
        """
        Strict base64 decodes; spaces around it are ignored.
        """
        self.assertEqual(decodeResponse(b"dXNlcg=="), b"user")
        self.assertEqual(decodeResponse(b"  dXNlcg== \t"), b"user")

    def test_cancel(self) -> None:
        """
        C{*} cancels, in a response and as the initial response.
        """
        self.assertKind(ABORTED, b"*")
        self.assertKind(ABORTED, b"*", initial=True)

    def test_emptyInitial(self) -> None:
        """
        C{=} is the empty initial response; elsewhere it is not base64.
        """
        self.assertEqual(decodeResponse(b"=", initial=True), b"")
        self.assertKind(MALFORMED, b"=")

    def test_emptyLine(self) -> None:
        """
        An empty response line is an empty response.
        """
        self.assertEqual(decodeResponse(b""), b"")

    def test_notBase64(self) -> None:
        """
        Characters outside the alphabet, bad padding, inner spaces: malformed.
        """
        for line in (b"dXNlcg", b"dXN!cg==", b"dXN lcg==", b"====", b"\xff\xfe", b"dXNlcg==x"):
            self.assertKind(MALFORMED, line)

    def test_tooLong(self) -> None:
        """
        Over 12,288 octets is too long, even if it would decode; 12,288 is
        not.
        """
        self.assertKind(TOO_LONG, b"A" * (MAX_RESPONSE + 4))
        self.assertEqual(len(decodeResponse(b"A" * MAX_RESPONSE)), MAX_RESPONSE // 4 * 3)

    @BOUND
    @given(st.binary(max_size=200), st.booleans())
    def test_onlySASLError(self, line: bytes, initial: bool) -> None:
        """
        Whatever the line, the answer is octets or a L{SASLError}.
        """
        try:
            self.assertIsInstance(decodeResponse(line, initial), bytes)
        except SASLError:
            pass


class PlainTests(SynchronousTestCase):
    """
    L{PlainExchange}.
    """

    def test_initialResponse(self) -> None:
        """
        An initial response with an empty authzid gives the credentials.
        """
        step = PlainExchange().start(b"\0alice@example.org\0s3cret")
        self.assertEqual(step, Credentials("alice@example.org", "s3cret"))

    def test_continuation(self) -> None:
        """
        Without one, the server sends an empty challenge, and the response
        carries the message.
        """
        exchange = PlainExchange()
        challenge = exchange.start(None)
        self.assertEqual(challenge, Challenge(b""))
        assert isinstance(challenge, Challenge)
        self.assertEqual(challenge.text, "")
        self.assertEqual(exchange.respond(b"\0bob\0pw"), Credentials("bob", "pw"))

    def test_authzidSameUser(self) -> None:
        """
        An authorization identity naming the same user (any case) is fine.
        """
        self.assertEqual(
            PlainExchange().start(b"Alice@Example.org\0alice@example.org\0pw"),
            Credentials("alice@example.org", "pw"),
        )

    def test_authzidOtherUser(self) -> None:
        """
        Acting as someone else is refused.
        """
        error = self.assertRaises(SASLError, PlainExchange().start, b"root\0alice@example.org\0pw")
        self.assertEqual(error.kind, AUTHZID)

    def test_nulTricks(self) -> None:
        """
        Too few or too many NULs, an empty user name or password, a NUL
        where a field should be: malformed.
        """
        for message in (
            b"",
            b"alice",
            b"alice\0pw",
            b"\0alice\0pw\0",
            b"\0alice\0pw\0extra",
            b"\0\0pw",
            b"\0alice\0",
            b"\0\0",
            b"\0\0\0",
            b"\0al\x00ice\0pw",
        ):
            error = self.assertRaises(SASLError, PlainExchange().start, message)
            self.assertEqual(error.kind, MALFORMED, message)

    def test_notUTF8(self) -> None:
        """
        A user name or password that is not UTF-8 is malformed; UTF-8 is
        taken as it is.
        """
        for message in (b"\0\xff\0pw", b"\0alice\0\xc3"):
            error = self.assertRaises(SASLError, PlainExchange().start, message)
            self.assertEqual(error.kind, MALFORMED)
        self.assertEqual(
            PlainExchange().start("\0j\u00fcrgen\0p\u00e4ss".encode()),
            Credentials("j\u00fcrgen", "p\u00e4ss"),
        )

    def test_controlCharacterInName(self) -> None:
        """
        A user name with a control character (a log line forger) is
        malformed.
        """
        error = self.assertRaises(SASLError, PlainExchange().start, b"\0alice\nroot\0pw")
        self.assertEqual(error.kind, MALFORMED)

    def test_longFields(self) -> None:
        """
        A user name or password over 1,024 octets is malformed.
        """
        error = self.assertRaises(SASLError, PlainExchange().start, b"\0alice\0" + b"p" * 1025)
        self.assertEqual(error.kind, MALFORMED)
        self.assertEqual(
            PlainExchange().start(b"\0alice\0" + b"p" * 1024), Credentials("alice", "p" * 1024)
        )

    def test_passwordHidden(self) -> None:
        """
        The password never shows in a representation.
        """
        self.assertNotIn("s3cret", repr(Credentials("alice", "s3cret")))


class LoginTests(SynchronousTestCase):
    """
    L{LoginExchange}.
    """

    def test_exchange(self) -> None:
        """
        Username:, then Password:, then the credentials.
        """
        exchange = LoginExchange()
        first = exchange.start(None)
        assert isinstance(first, Challenge)
        self.assertEqual(base64.b64decode(first.text), b"Username:")
        second = exchange.respond(b"alice")
        assert isinstance(second, Challenge)
        self.assertEqual(second.text, "UGFzc3dvcmQ6")
        self.assertEqual(exchange.respond(b"pw"), Credentials("alice", "pw"))

    def test_initialResponse(self) -> None:
        """
        An initial response is the user name.
        """
        exchange = LoginExchange()
        self.assertEqual(exchange.start(b"alice"), LoginExchange.PASSWORD)
        self.assertEqual(exchange.respond(b"pw"), Credentials("alice", "pw"))

    def test_empty(self) -> None:
        """
        An empty user name (also as C{=}) or password is malformed.
        """
        self.assertEqual(self.assertRaises(SASLError, LoginExchange().start, b"").kind, MALFORMED)
        exchange = LoginExchange()
        exchange.start(None)
        self.assertEqual(self.assertRaises(SASLError, exchange.respond, b"").kind, MALFORMED)
        exchange = LoginExchange()
        exchange.start(b"alice")
        self.assertEqual(self.assertRaises(SASLError, exchange.respond, b"").kind, MALFORMED)

    def test_nul(self) -> None:
        """
        A NUL in the user name or the password is malformed.
        """
        exchange = LoginExchange()
        exchange.start(None)
        self.assertRaises(SASLError, exchange.respond, b"al\0ice")
        exchange = LoginExchange()
        exchange.start(b"alice")
        self.assertRaises(SASLError, exchange.respond, b"p\0w")


class AnyInputTests(SynchronousTestCase):
    """
    Whatever a client sends, an exchange answers with a step or a
    L{SASLError}, never another exception.
    """

    @BOUND
    @given(
        st.sampled_from(sorted(MECHANISMS)),
        st.one_of(st.none(), st.binary(max_size=60)),
        st.lists(st.binary(max_size=60), max_size=4),
    )
    def test_exchanges(self, mechanism: str, initial: bytes | None, responses: list[bytes]) -> None:
        exchange = MECHANISMS[mechanism]()
        try:
            step = exchange.start(initial)
            for response in responses:
                if isinstance(step, Credentials):
                    break
                step = exchange.respond(response)
            self.assertIsInstance(step, (Challenge, Credentials))
        except SASLError as e:
            self.assertIn(e.kind, (MALFORMED, AUTHZID))
