"""
Split invariance of the whole inbound path (issue 12, "Done means"): a
dialogue gives the same replies and the same stored bytes whether the
client's bytes arrive in one read, byte by byte, or split at random points:
dot-stuffing, bare CR and LF, long lines, commands pipelined after the
final dot.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.support.inbound import InboundHarness
from tests.support.properties import propertySettings
from tests.test_framing import TOKENS, split

_QUEUE_ID = re.compile(rb"[0-9A-F]{19}")

body = st.lists(st.sampled_from(TOKENS), max_size=20).map(b"".join)
after = st.lists(
    st.sampled_from([b"NOOP\r\n", b"RSET\r\n", b"VRFY x\r\n", b"HELP\r\n"]), max_size=3
).map(b"".join)
recipients = st.lists(
    st.sampled_from([b"bob@gopherpost.test", b"carol@example.test", b"Postmaster"]),
    min_size=1,
    max_size=3,
)


@st.composite
def dialogues(draw: st.DrawFn) -> bytes:
    """
    A client's side of a session: EHLO, one to three transactions (each
    with its commands after the final dot), QUIT.
    """
    data = b"EHLO client.test\r\n"
    for _ in range(draw(st.integers(1, 3))):
        data += b"MAIL FROM:<alice@gopherpost.test>\r\n"
        for recipient in draw(recipients):
            data += b"RCPT TO:<" + recipient + b">\r\n"
        data += b"DATA\r\n" + draw(body) + b"\r\n.\r\n" + draw(after)
    return data + b"QUIT\r\n"


def run(case: SynchronousTestCase, pieces: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """
    The replies (queue ids blanked) and the stored messages of one session
    fed C{pieces}.
    """
    harness = InboundHarness(case)
    proto, transport = harness.connect()
    for piece in pieces:
        proto.dataReceived(piece)
    replies = _QUEUE_ID.sub(b"QUEUEID", transport.value()).split(b"\r\n")
    stored = [_QUEUE_ID.sub(b"QUEUEID", harness.read(name)) for name in harness.storedFiles()]
    return replies, sorted(stored)


class SplitInvarianceTests(SynchronousTestCase):
    """
    One write, byte by byte, random splits: the same outcome.
    """

    @given(dialogues(), st.lists(st.integers(0, 100000), max_size=12))
    @propertySettings(60)
    def test_property(self, dialogue: bytes, cuts: list[int]) -> None:
        """
        The same replies and stored bytes for every split.
        """
        whole = run(self, [dialogue])
        self.assertEqual(whole[0][-2], b"221 2.0.0 Bye")
        self.assertEqual(run(self, split(dialogue, cuts)), whole)
        self.assertEqual(run(self, [dialogue[i : i + 1] for i in range(len(dialogue))]), whole)

    def test_fixedDialogues(self) -> None:
        """
        Hand-picked dialogues with every edge case at once, split at every
        point.
        """
        dialogue = (
            b"EHLO c.test\r\nMAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n"
            b"DATA\r\n..stuffed\r\nbare\nlf\rcr\r\n" + b"w" * 998 + b"\r\n.\r\nNOOP\r\n"
            b"MAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n"
            b"DATA\r\n" + b"v" * 999 + b"\r\n.\r\nRSET\r\n"
            b"MAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n"
            b"DATA\r\n.\r\nQUIT\r\n"
        )
        whole = run(self, [dialogue])
        self.assertIn(b"500 5.5.2 Error: line too long", whole[0])
        self.assertEqual(len(whole[1]), 2)
        for cut in range(0, len(dialogue), 7):
            self.assertEqual(run(self, [dialogue[:cut], dialogue[cut:]]), whole, cut)
