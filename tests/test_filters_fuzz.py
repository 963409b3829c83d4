"""
Property tests (hypothesis, bounded and seeded) for what filters send us:
whatever a milter, rspamd or spamd says, the client answers with a verdict
or a protocol error, never another exception; and the milter stream means
the same however it is split.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, seed, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.filters.envelope import AttributeEnvelopeEditor, FilterMessage, SessionFacts
from gopherpost.filters.failure import FilterProtocolError
from gopherpost.filters.headers import HeaderSection
from gopherpost.filters.milter import codec
from gopherpost.filters.milter.conversation import MilterConversation
from gopherpost.filters.milter.protocol import MilterProtocol
from gopherpost.filters.rspamd import verdictFromReply
from gopherpost.filters.spamd import parseResponse
from gopherpost.filters.verdict import Verdict
from tests.test_milter_codec import CLAMAV_INFECTED, INSHEADER_OPENDKIM, REPLYCODE_RSPAMD

BOUND = settings(max_examples=100, deadline=None, derandomize=True)

#: Packets a milter may send at the end of the message.
_KINDS = b"+-24abcdefhilmpqrsty"


def packets() -> st.SearchStrategy[bytes]:
    one = st.builds(
        lambda kind, data: codec.packet(bytes([kind]), data),
        st.sampled_from(list(_KINDS)),
        st.binary(max_size=40),
    )
    return st.lists(one, max_size=8).map(b"".join)


FACTS = SessionFacts("192.0.2.10", 4000)


def endOfMessage(stream: bytes, splits: list[int]) -> Any:
    """
    Feed C{stream} (split at C{splits}) as the milter's answer to the end
    of a message; the outcome as a comparable value.
    """
    negotiation = codec.Negotiation(6, codec.OFFERED_ACTIONS, codec.Step(0x3FF))
    protocol = MilterProtocol()
    protocol.makeConnection(StringTransport())
    conversation = MilterConversation(protocol, negotiation, "fuzz")
    message = FilterMessage("Q1", HeaderSection(b"Subject: x\r\n"), b"", "a@example.test", [])
    d = conversation.message(FACTS, message)
    outcome: list[Any] = []
    d.addCallbacks(outcome.append, lambda f: outcome.append(f.trap(FilterProtocolError)))
    start = 0
    for cut in sorted(set(splits)) + [len(stream)]:
        if cut > start:
            protocol.dataReceived(stream[start:cut])
            start = cut
    if outcome and isinstance(outcome[0], Verdict):
        return outcome[0]
    return outcome[0] if outcome else None


class MilterStreamTests(SynchronousTestCase):
    @seed(21)
    @BOUND
    @given(packets(), st.lists(st.integers(min_value=0, max_value=400), max_size=10))
    def test_anyAnswer(self, stream: bytes, splits: list[int]) -> None:
        """
        Any sequence of packets gives a verdict, a protocol error or no
        answer yet, and the same one however the bytes arrive.
        """
        whole = endOfMessage(stream, [])
        self.assertEqual(endOfMessage(stream, splits), whole)
        self.assertTrue(
            whole is None or whole is FilterProtocolError or isinstance(whole, Verdict), whole
        )

    @seed(22)
    @BOUND
    @given(st.binary(max_size=200))
    def test_garbage(self, data: bytes) -> None:
        endOfMessage(data, list(range(0, len(data), 7)))

    def test_recordedByteByByte(self) -> None:
        for stream in (
            CLAMAV_INFECTED,
            INSHEADER_OPENDKIM + b"\x00\x00\x00\x01a",
            REPLYCODE_RSPAMD,
        ):
            whole = endOfMessage(stream, [])
            self.assertIsInstance(whole, Verdict)
            self.assertEqual(endOfMessage(stream, list(range(len(stream)))), whole)

    @seed(23)
    @BOUND
    @given(st.binary(max_size=60), st.integers(min_value=0, max_value=2**32 - 1))
    def test_negotiation(self, data: bytes, version: int) -> None:
        try:
            codec.parseReply(b"O", struct.pack("!I", version) + data)
        except FilterProtocolError:
            pass


json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)

actions = st.sampled_from(
    ["reject", "soft reject", "greylist", "add header", "rewrite subject", "no action", "discard"]
)


class RspamdReplyTests(SynchronousTestCase):
    @seed(24)
    @BOUND
    @given(json)
    def test_anyJSON(self, reply: Any) -> None:
        try:
            verdictFromReply(reply)
        except FilterProtocolError:
            pass

    @seed(25)
    @BOUND
    @given(
        actions,
        st.dictionaries(
            st.sampled_from(["milter", "subject", "messages", "score", "dkim-signature"]), json
        ),
    )
    def test_anyFields(self, action: str, fields: dict[str, Any]) -> None:
        """
        Whatever the other fields hold, a reply with an action is a verdict
        whose header edits can be made.
        """
        verdict = verdictFromReply(dict(fields, action=action))
        working = FilterMessage(
            "Q1", HeaderSection(b"Subject: x\r\nX-Spam: no\r\n"), b"", "a@example.test", []
        )
        try:
            working.apply(verdict.modifications, AttributeEnvelopeEditor())
        except ValueError:
            return  # a header name that is not one: the scanner's failure
        self.assertNotIn(b"\r\n\r\n", working.headers.render())


class SpamdResponseTests(SynchronousTestCase):
    @seed(26)
    @BOUND
    @given(st.binary(max_size=200))
    def test_anyBytes(self, data: bytes) -> None:
        try:
            parseResponse(data)
        except FilterProtocolError:
            pass

    @seed(27)
    @BOUND
    @given(st.text(max_size=40), st.binary(max_size=100))
    def test_anySpamLine(self, spam: str, body: bytes) -> None:
        data = b"SPAMD/1.1 0 EX_OK\r\nSpam: " + spam.encode("utf-8", "replace") + b"\r\n\r\n" + body
        try:
            parseResponse(data)
        except FilterProtocolError:
            pass


class HeaderEditTests(SynchronousTestCase):
    @seed(28)
    @BOUND
    @given(st.binary(max_size=80))
    def test_addedFieldIsOneField(self, value: bytes) -> None:
        """
        Whatever a filter puts in a value, it adds exactly one field and
        never ends the header section.
        """
        section = HeaderSection(b"From: a@example.test\r\n")
        section.add(b"X-Filter", value)
        rendered = section.render()
        self.assertEqual(len(HeaderSection(rendered)), 2)
        self.assertNotIn(b"\r\n\r\n", rendered)
        self.assertNotIn(b"\x00", rendered)
