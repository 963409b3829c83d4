"""
A client that shuts down its sending side (half-close, as Exim does after
pipelining QUIT) still gets every reply: L{SMTPServerProtocol} is an
L{IHalfCloseableProtocol}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.trial.unittest import SynchronousTestCase

from tests.support.inbound import InboundHarness, replies

START = (
    b"EHLO client.test\r\nMAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\n"
)


class HalfCloseTests(SynchronousTestCase):
    """
    Replies after the client's half-close.
    """

    def test_provided(self) -> None:
        harness = InboundHarness(self)
        proto, _ = harness.connect()
        self.assertTrue(IHalfCloseableProtocol.providedBy(proto))

    def test_answeredThenClosed(self) -> None:
        """
        The last chunk's 250 (once durable) and QUIT's 221 are written
        after the client shut down its side; then the connection closes.
        """
        harness = InboundHarness(self, synchronousThreads=False)
        proto, transport = harness.connect()
        proto.dataReceived(START + b"BDAT 4 LAST\r\nabc\nQUIT\r\n")
        proto.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        harness.runThreads()
        lines = replies(transport)
        self.assertRegex(lines[-2], rb"^250 2\.0\.0 Ok: queued as ")
        self.assertEqual(lines[-1], b"221 2.0.0 Bye")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(harness.storedFiles()), 1)

    def test_withoutQUIT(self) -> None:
        """
        Without QUIT: the commands are answered, then the server closes.
        """
        harness = InboundHarness(self)
        proto, transport = harness.connect()
        proto.dataReceived(START + b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
        proto.readConnectionLost()
        self.assertRegex(replies(transport)[-1], rb"^250 2\.0\.0 Ok: queued as ")
        self.assertTrue(transport.disconnecting)

    def test_unfinishedMessage(self) -> None:
        """
        A half-close inside a message: nothing is stored, the connection
        closes.
        """
        harness = InboundHarness(self)
        proto, transport = harness.connect()
        proto.dataReceived(START + b"BDAT 10 LAST\r\nabc")
        proto.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        transport.lost = True
        self.assertEqual(harness.storedFiles(), [])

    def test_writeSideLost(self) -> None:
        """
        When the client can no longer read, the connection is aborted.
        """
        harness = InboundHarness(self)
        proto, transport = harness.connect()
        proto.writeConnectionLost()
        self.assertTrue(transport.aborted)
