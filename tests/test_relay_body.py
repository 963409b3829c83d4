"""
Tests for L{gopherpost.relay.body}: the payload after C{354} and the
producer that writes it.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.body import CHUNK_SIZE, BodySender, prepareMessage


class PrepareMessageTests(SynchronousTestCase):
    """
    L{prepareMessage}: line ends, dot-stuffing, size, 8-bit detection.
    """

    def test_lineEnds(self) -> None:
        """
        Bare LF, bare CR and CRLF all become CRLF; no line end is doubled.
        """
        payload, size, _ = prepareMessage(b"a\nb\rc\r\nd\r\re\n\n")
        self.assertEqual(payload, b"a\r\nb\r\nc\r\nd\r\n\r\ne\r\n\r\n.\r\n")
        self.assertEqual(size, len(payload) - 3)

    def test_finalLineEnd(self) -> None:
        """
        A message not ending in a line end gets CRLF before the final dot;
        an empty one is just the dot.
        """
        self.assertEqual(prepareMessage(b"x")[0], b"x\r\n.\r\n")
        self.assertEqual(prepareMessage(b"")[0], b".\r\n")

    def test_dotStuffing(self) -> None:
        """
        Every line starting with a dot gets another, the first line too and
        lines after a bare CR; dots elsewhere are untouched.  SIZE counts the
        unstuffed message.
        """
        payload, size, _ = prepareMessage(b".a\r\nb.c\r\n.\r\n..\rd\n.e")
        self.assertEqual(payload, b"..a\r\nb.c\r\n..\r\n...\r\nd\r\n..e\r\n.\r\n")
        self.assertEqual(size, len(b".a\r\nb.c\r\n.\r\n..\r\nd\r\n.e\r\n"))

    def test_eightBit(self) -> None:
        """
        Bytes above 127 are noticed.
        """
        self.assertFalse(prepareMessage(b"plain ascii\r\n")[2])
        self.assertTrue(prepareMessage("caf\u00e9\r\n".encode("utf-8"))[2])


class _Transport(StringTransport):
    """
    Records each write; pauses its producer once C{pauseAt} bytes are in.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.pauseAt: int | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(data)
        if self.pauseAt is not None and len(self.value()) >= self.pauseAt and self.producer:
            self.pauseAt = None
            self.producer.pauseProducing()


class BodySenderTests(SynchronousTestCase):
    """
    L{BodySender}: chunks, flow control, stopping.
    """

    def sender(
        self, payload: bytes, pauseAt: int | None = None
    ) -> tuple[BodySender, _Transport, list[str]]:
        transport = _Transport()
        transport.pauseAt = pauseAt
        events: list[str] = []
        sender = BodySender(
            transport, payload, lambda: events.append("paused"), lambda: events.append("resumed")
        )
        return sender, transport, events

    def test_allAtOnce(self) -> None:
        """
        A transport that never pauses gets the whole payload in chunks of
        at most L{CHUNK_SIZE}; C{done} fires and the producer is gone.
        """
        payload = b"x" * (CHUNK_SIZE * 2 + 10)
        sender, transport, events = self.sender(payload)
        d = sender.start()
        self.assertEqual(transport.value(), payload)
        self.assertEqual([len(w) for w in transport.writes], [CHUNK_SIZE, CHUNK_SIZE, 10])
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(sender.finished)
        self.assertIsNone(transport.producer)
        self.assertEqual(events, [])

    def test_pausedAndResumed(self) -> None:
        """
        While paused nothing is written; the callbacks say so; resuming
        writes the rest.
        """
        payload = b"y" * (CHUNK_SIZE * 3)
        sender, transport, events = self.sender(payload, pauseAt=CHUNK_SIZE)
        d = sender.start()
        self.assertEqual(len(transport.value()), CHUNK_SIZE)
        self.assertEqual(events, ["paused"])
        self.assertNoResult(d)
        self.assertIs(transport.producer, sender)
        sender.resumeProducing()
        self.assertEqual(events, ["paused", "resumed"])
        self.assertEqual(transport.value(), payload)
        self.successResultOf(d)

    def test_stop(self) -> None:
        """
        Stopped half-way (the reply came early): nothing more is written,
        the producer is unregistered, C{done} never fires.
        """
        sender, transport, _ = self.sender(b"z" * (CHUNK_SIZE * 2), pauseAt=CHUNK_SIZE)
        d = sender.start()
        sender.stop()
        self.assertTrue(sender.finished)
        self.assertIsNone(transport.producer)
        sender.resumeProducing()
        self.assertEqual(len(transport.value()), CHUNK_SIZE)
        self.assertNoResult(d)

    def test_stopProducing(self) -> None:
        """
        The transport going away ends the sender without unregistering.
        """
        sender, transport, _ = self.sender(b"w" * (CHUNK_SIZE * 2), pauseAt=CHUNK_SIZE)
        sender.start()
        sender.stopProducing()
        self.assertTrue(sender.finished)
        sender.resumeProducing()
        self.assertEqual(len(transport.value()), CHUNK_SIZE)
