"""
The outbound client's entry points (L{gopherpost.relay.client}): the
connection attempt, its timeout, cancelling and stopping it, and the
arguments it takes.  The session itself is tested in
L{tests.test_relay_session} and its neighbours; against real servers in
L{tests.test_client_loopback}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.channel import TIMEOUTS
from gopherpost.relay.client import Envelope, deliver
from gopherpost.relay.outcome import DEFERRED, DeliveryResult
from gopherpost.relay.transaction import STOPPED_TEXT
from tests.support.clientsession import (
    ADDRESS,
    HELO,
    HOST,
    SENDER,
    Conversation,
)


class ConnectTests(SynchronousTestCase):
    """
    Failing to connect.
    """

    def test_refused(self) -> None:
        """
        Connection refused: every recipient deferred with 4.4.1 and the
        reason.
        """
        c = Conversation(self, recipients=["a@example.test", "b@example.test"], connect=False)
        connector = c.reactor.connectors[0]
        c.reactor.tcpClients[0][2].clientConnectionFailed(
            connector, Failure(ConnectionRefusedError())
        )
        result = c.result()
        self.assertEqual([o.status for o in result.outcomes], [DEFERRED, DEFERRED])
        outcome = result.outcomes[0]
        self.assertEqual(
            (outcome.code, outcome.enhancedCode, outcome.remote), (421, "4.4.1", False)
        )
        self.assertIn("refused", outcome.text)
        self.assertIn(ADDRESS, outcome.text)
        self.assertEqual(result.failureStage, "connect")

    def test_timeout(self) -> None:
        """
        No connection within 30 s (times the scale): deferred, and the
        attempt is stopped.
        """
        c = Conversation(self, scale=2.0, connect=False)
        c.reactor.advance(TIMEOUTS["connect"] * 2 - 1)
        self.assertNoResult(c.d)
        c.reactor.advance(1)
        result = c.result()
        self.assertIn("timed out after 60s", result.outcomes[0].text)
        self.assertTrue(c.reactor.connectors[0].stoppedConnecting)

    def test_refusedReported(self) -> None:
        """
        A connection that cannot be made reports every envelope, in order;
        the result waits for listeners that return a Deferred.
        """
        pending: list[Deferred[None]] = []
        reported: list[tuple[int, DeliveryResult]] = []

        def onResult(index: int, result: DeliveryResult) -> Deferred[None]:
            reported.append((index, result))
            pending.append(Deferred())
            return pending[-1]

        envelopes = [
            Envelope(SENDER, ("a@example.test",), b"1"),
            Envelope(SENDER, ("b@example.test",), b"2"),
        ]
        c = Conversation(self, envelopes=envelopes, connect=False, onResult=onResult)
        c.reactor.advance(2)
        c.reactor.tcpClients[0][2].clientConnectionFailed(
            c.reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.assertEqual([i for i, _ in reported], [0, 1])
        self.assertEqual([r.connectSeconds for _, r in reported], [2.0, 2.0])
        self.assertNoResult(c.d)
        for d in pending:
            d.callback(None)
        self.assertEqual(self.successResultOf(c.d), [r for _, r in reported])


class CancelAndStopTests(SynchronousTestCase):
    """
    Ending an attempt early.
    """

    def test_cancel(self) -> None:
        """
        Cancelling the Deferred drops the connection.
        """
        c = Conversation(self)
        c.reply("220 mx")
        c.d.cancel()
        self.assertTrue(c.transport.aborted)
        self.failureResultOf(c.d, CancelledError)
        c.lose()

    def test_stopWhileConnecting(self) -> None:
        """
        Stopped gracefully before the connection is made: the connection
        attempt is given up, every recipient is deferred as stopped.
        """
        reported: list[DeliveryResult] = []
        c = Conversation(self, connect=False, onResult=lambda i, r: reported.append(r))
        assert c.attempt is not None
        c.attempt.stopGracefully()
        self.assertTrue(c.reactor.connectors[0].stoppedConnecting)
        [result] = self.successResultOf(c.d)
        self.assertEqual(result.outcomes[0].status, DEFERRED)
        self.assertEqual(result.outcomes[0].text, STOPPED_TEXT)
        self.assertEqual(reported, [result])

    def test_stopAfterTheEnd(self) -> None:
        """
        Stopping a finished attempt does nothing.
        """
        c = Conversation(self, connect=False, onResult=lambda i, r: None)
        c.reactor.tcpClients[0][2].clientConnectionFailed(
            c.reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        assert c.attempt is not None
        c.attempt.stopGracefully()
        [result] = self.successResultOf(c.d)
        self.assertIn("refused", result.outcomes[0].text)


class ArgumentTests(SynchronousTestCase):
    """
    What the entry points accept.
    """

    def test_notAnAddress(self) -> None:
        """
        C{address} must be an IP address: names are resolved by the caller.
        """
        self.assertRaises(
            ValueError,
            deliver,
            MemoryReactorClock(),
            HOST,
            HOST,
            25,
            HELO,
            SENDER,
            ["a@example.test"],
            b"x",
            "verify",
        )
        self.assertRaises(
            ValueError,
            deliver,
            MemoryReactorClock(),
            HOST,
            ADDRESS,
            25,
            HELO,
            SENDER,
            ["a@example.test"],
            b"x",
            "sometimes",
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 address is connected to as such.
        """
        reactor = MemoryReactorClock()
        deliver(
            reactor, HOST, "2001:db8::25", 2525, HELO, SENDER, ["a@example.test"], b"x", "verify"
        )
        self.assertEqual(reactor.tcpClients[0][:2], ("2001:db8::25", 2525))
