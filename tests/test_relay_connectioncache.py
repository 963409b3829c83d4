"""
Tests for L{gopherpost.relay.connectioncache}: an outbound session that
sent its messages waits, idle, to be taken up by the next delivery to the
same host, over a L{StringTransport} with the test playing the server.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from gopherpost.relay.client import Envelope, startDelivery
from gopherpost.relay.connectioncache import IDLE_SECONDS, REUSE_SECONDS, ConnectionCache
from gopherpost.relay.courier import Courier, IDeliveryListener, OutboundMessage
from gopherpost.relay.mx import IDestinationResolver, MailExchange
from gopherpost.relay.outcome import DEFERRED, FAILED, SENT, DeliveryResult
from gopherpost.relay.session import StaleConnection
from tests.support.clientsession import (
    ADDRESS,
    EHLO_PIPELINING_REPLY,
    EHLO_REPLY,
    HELO,
    HOST,
    SENDER,
    ClientTransport,
)
from tests.support.relay import eventually
from tests.support.smtpserver import DROP, SMTPTestServer

KEY = (HOST, ADDRESS, 25, "may", "usual")
MESSAGE = b"Subject: cached\r\n\r\nHello.\r\n"


def envelope(recipient: str = "bob@example.test") -> Envelope:
    return Envelope(SENDER, (recipient,), MESSAGE)


class CachedConnection:
    """
    One connection made through L{startDelivery} with the cache's park
    hook; the test plays the server.
    """

    def __init__(self, test: SynchronousTestCase, reactor: MemoryReactorClock, cache: Any):
        self.test = test
        self.reactor = reactor
        self.transport = ClientTransport()
        self.seen = 0
        self.reports: list[tuple[int, DeliveryResult]] = []
        self.attempt = startDelivery(
            reactor,
            HOST,
            ADDRESS,
            25,
            HELO,
            [envelope()],
            "may",
            1.0,
            lambda policy, host: None,
            self.onResult,
            park=cache.parkHook(KEY),
        )
        host, port, factory, _, _ = reactor.tcpClients[-1]
        protocol: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(self.transport)
        self.protocol = protocol

    def onResult(self, index: int, result: DeliveryResult) -> None:
        self.reports.append((index, result))

    def written(self) -> bytes:
        data = self.transport.value()[self.seen :]
        self.seen += len(data)
        return data

    def expect(self, *commands: str) -> None:
        self.test.assertEqual(self.written(), "".join(c + "\r\n" for c in commands).encode("ascii"))

    def reply(self, text: str) -> None:
        self.protocol.dataReceived(text.replace("\n", "\r\n").encode("ascii") + b"\r\n")

    def opening(self, ehlo: str = EHLO_REPLY) -> None:
        self.reply("220 mx.example.test ESMTP")
        self.expect(f"EHLO {HELO}")
        self.reply(ehlo)

    def transaction(self, recipient: str = "bob@example.test") -> None:
        """
        One message accepted, without PIPELINING.
        """
        self.expect(f"MAIL FROM:<{SENDER}> SIZE={len(MESSAGE)}")
        self.reply("250 2.1.0 ok")
        self.expect(f"RCPT TO:<{recipient}>")
        self.reply("250 2.1.5 ok")
        self.expect("DATA")
        self.reply("354 go on")
        self.test.assertTrue(self.written().endswith(b"\r\n.\r\n"))
        self.reply("250 2.0.0 queued")

    def lose(self) -> None:
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionDone("closed")))


def statuses(results: list[DeliveryResult]) -> list[list[str]]:
    return [[o.status for o in r.outcomes] for r in results]


class ReuseTests(SynchronousTestCase):
    """
    A connection that sent its messages is taken up again.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.cache = ConnectionCache(self.reactor)
        self.connection = CachedConnection(self, self.reactor, self.cache)
        self.connection.opening()
        self.connection.transaction()

    def test_parkedInsteadOfQuit(self) -> None:
        """
        Once its message is delivered, the delivery has its result and the
        connection waits, without QUIT, in the cache.
        """
        results = self.successResultOf(self.connection.attempt.result)
        self.assertEqual(statuses(results), [[SENT]])
        self.assertEqual(self.connection.written(), b"")
        self.assertEqual(self.cache.idleConnections, 1)
        self.assertFalse(self.connection.transport.disconnecting)

    def test_takenUp(self) -> None:
        """
        The next delivery to the same key goes over it at once: MAIL FROM
        without greeting or EHLO; its results are its own, reported to its
        own listener, and its connect time is zero.
        """
        reports: list[tuple[int, DeliveryResult]] = []
        reused = self.cache.take(
            KEY,
            [envelope("carol@example.test")],
            lambda i, r: reports.append((i, r)),
        )
        assert reused is not None
        self.assertEqual(self.cache.idleConnections, 0)
        self.connection.transaction("carol@example.test")
        results = self.successResultOf(reused.result)
        self.assertEqual(statuses(results), [[SENT]])
        self.assertEqual([i for i, _ in reports], [0])
        self.assertEqual(results[0].connectSeconds, 0.0)
        self.assertEqual(results[0].connectionUse, 2)
        [(_, first)] = self.connection.reports
        self.assertEqual(first.connectionUse, 1)
        self.assertEqual(len(self.connection.reports), 1, "the first listener heard only its own")
        self.assertEqual(self.cache.idleConnections, 1, "parked again")

    def test_otherKey(self) -> None:
        """
        Another host, port, TLS policy or mode does not take it.
        """
        for key in [
            ("other.example.test", ADDRESS, 25, "may", "usual"),
            (HOST, ADDRESS, 587, "may", "usual"),
            (HOST, ADDRESS, 25, "verify", "usual"),
            (HOST, ADDRESS, 25, "may", "requiretls"),
        ]:
            self.assertIsNone(self.cache.take(key, [envelope()], lambda i, r: None))
        self.assertEqual(self.cache.idleConnections, 1)

    def test_idleTimeout(self) -> None:
        """
        Not taken up within L{IDLE_SECONDS}: QUIT, and the connection closes.
        """
        self.reactor.advance(IDLE_SECONDS - 0.1)
        self.assertEqual(self.connection.written(), b"")
        self.reactor.advance(0.2)
        self.connection.expect("QUIT")
        self.connection.reply("221 2.0.0 bye")
        self.assertTrue(self.connection.transport.disconnecting)
        self.assertEqual(self.cache.idleConnections, 0)
        self.assertIsNone(self.cache.take(KEY, [envelope()], lambda i, r: None))

    def test_closedWhileIdle(self) -> None:
        """
        A connection the server closed while it waited is not taken up.
        """
        self.connection.lose()
        self.assertIsNone(self.cache.take(KEY, [envelope()], lambda i, r: None))
        self.assertEqual(self.cache.idleConnections, 0)

    def test_staleWhenTakenUp(self) -> None:
        """
        Closed by the server just as it was taken up, before any reply to
        the new round: the round fails with L{StaleConnection} and reports
        nothing, so that its messages can go over a new connection.
        """
        reports: list[Any] = []
        reused = self.cache.take(KEY, [envelope()], lambda i, r: reports.append(r))
        assert reused is not None
        self.assertTrue(self.connection.written().startswith(b"MAIL FROM:"))
        self.connection.lose()
        self.failureResultOf(reused.result, StaleConnection)
        self.assertEqual(reports, [])

    def test_lostAfterAReply(self) -> None:
        """
        Lost after the server answered something of the new round: not
        stale, the usual deferral of what was not delivered.
        """
        reused = self.cache.take(KEY, [envelope()], lambda i, r: None)
        assert reused is not None
        self.connection.written()
        self.connection.reply("250 2.1.0 ok")
        self.connection.lose()
        results = self.successResultOf(reused.result)
        self.assertEqual(statuses(results), [[DEFERRED]])

    def test_reuseTimeLimit(self) -> None:
        """
        Past L{REUSE_SECONDS} after it was made, a connection says QUIT
        instead of waiting again.
        """
        reused = None
        while self.reactor.seconds() < REUSE_SECONDS:
            reused = self.cache.take(KEY, [envelope()], lambda i, r: None)
            assert reused is not None
            self.reactor.advance(IDLE_SECONDS / 2)
            self.connection.transaction()
        assert reused is not None
        self.successResultOf(reused.result)
        self.connection.expect("QUIT")
        self.assertEqual(self.cache.idleConnections, 0)

    def test_stop(self) -> None:
        """
        L{ConnectionCache.stop} closes idle connections with QUIT, and
        nothing is parked after it.
        """
        self.cache.stop()
        self.connection.expect("QUIT")
        self.assertEqual(self.cache.idleConnections, 0)
        other = CachedConnection(self, self.reactor, self.cache)
        other.opening()
        other.transaction()
        other.expect("QUIT")


class RoundTests(SynchronousTestCase):
    """
    What decides whether a connection is parked, and what a new round
    starts with.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.cache = ConnectionCache(self.reactor)
        self.connection = CachedConnection(self, self.reactor, self.cache)

    def test_refusedRecipientResetFirst(self) -> None:
        """
        A round whose last transaction ended before DATA (every recipient
        refused) is parked; the next round starts with RSET.
        """
        c = self.connection
        c.opening()
        c.expect(f"MAIL FROM:<{SENDER}> SIZE={len(MESSAGE)}")
        c.reply("250 2.1.0 ok")
        c.expect("RCPT TO:<bob@example.test>")
        c.reply("550 5.1.1 no such user")
        results = self.successResultOf(c.attempt.result)
        self.assertEqual(statuses(results), [[FAILED]])
        reused = self.cache.take(KEY, [envelope()], lambda i, r: None)
        assert reused is not None
        c.expect("RSET")
        c.reply("250 2.0.0 ok")
        c.transaction()
        self.assertEqual(statuses(self.successResultOf(reused.result)), [[SENT]])

    def test_notParkedAfterTrouble(self) -> None:
        """
        A session that ended in trouble (a 421 here) is not parked.
        """
        c = self.connection
        c.opening()
        c.expect(f"MAIL FROM:<{SENDER}> SIZE={len(MESSAGE)}")
        c.reply("421 4.3.2 shutting down")
        self.assertEqual(self.cache.idleConnections, 0)
        c.lose()
        self.assertEqual(statuses(self.successResultOf(c.attempt.result)), [[DEFERRED]])

    def test_notParkedWhenStopping(self) -> None:
        """
        A delivery stopped gracefully says QUIT after its message.
        """
        c = self.connection
        c.opening(EHLO_PIPELINING_REPLY)
        c.written()
        c.reply("250 2.1.0 ok\n250 2.1.5 ok\n354 go on")
        c.written()
        c.attempt.stopGracefully()
        c.reply("250 2.0.0 queued")
        c.expect("QUIT")
        self.assertEqual(self.cache.idleConnections, 0)

    def test_stopWhileReused(self) -> None:
        """
        A round on a connection taken up again stops as a new one does.
        """
        c = self.connection
        c.opening()
        c.transaction()
        reused = self.cache.take(KEY, [envelope()], lambda i, r: None)
        assert reused is not None
        c.written()
        reused.stopGracefully()
        self.assertTrue(c.transport.aborted)
        c.protocol.connectionLost(Failure(ConnectionDone("aborted")))
        self.assertEqual(statuses(self.successResultOf(reused.result)), [[DEFERRED]])


@implementer(IDestinationResolver)
class _OneHost:
    """
    Every domain is the one test server.
    """

    def __init__(self, server: SMTPTestServer) -> None:
        self.port = server.port
        self._address = server.host

    def destinationKey(self, domain: str) -> str:
        return domain

    def resolveDestination(self, domain: str) -> Deferred[Any]:
        return succeed([MailExchange("mx.example.test", 10)])

    def resolveHostAddresses(self, hostname: str) -> Deferred[Any]:
        return succeed([self._address])


@implementer(IDeliveryListener)
class _Listener:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, str]] = []

    def attempting(self, messages: Any, host: str, address: str, port: int) -> None:
        pass

    def settled(self, message: OutboundMessage, deliveries: Any) -> None:
        self.statuses.extend((message.queueId, d.status) for d in deliveries)


class LoopbackTests(TestCase):
    """
    The courier with the real client and a real server on 127.0.0.1.
    """

    def courier(self, server: SMTPTestServer) -> tuple[Courier, ConnectionCache]:
        cache = ConnectionCache(reactor)
        courier = Courier(
            reactor,
            _OneHost(server),
            heloName=HELO,
            tlsPolicy="may",
            connectionCache=cache,
        )
        self.addCleanup(courier.stop)
        return courier, cache

    def server(self, **kw: Any) -> SMTPTestServer:
        server = SMTPTestServer(**kw).start()
        self.addCleanup(server.stop)
        return server

    @staticmethod
    def message(n: int) -> OutboundMessage:
        return OutboundMessage(f"Q{n}", SENDER, (f"user{n}@example.test",), MESSAGE)

    @inlineCallbacks
    def test_oneConnection(self) -> Generator[Deferred[Any], Any, None]:
        """
        Deliveries one after the other to the same host share one
        connection; stopping the courier says QUIT on it.
        """
        server = self.server()
        courier, cache = self.courier(server)
        listener = _Listener()
        for n in range(3):
            yield courier.deliver("example.test", [self.message(n)], listener)
        self.assertEqual(listener.statuses, [("Q0", SENT), ("Q1", SENT), ("Q2", SENT)])
        self.assertEqual(
            [m.recipients for m in server.messages],
            [["user0@example.test"], ["user1@example.test"], ["user2@example.test"]],
        )
        self.assertEqual(server.connectionsMade, 1)
        self.assertEqual(cache.idleConnections, 1)
        [connection] = server.sessions
        yield courier.stop()
        yield connection.lost
        self.assertEqual(server.commands[-1], b"QUIT")

    @inlineCallbacks
    def test_closedByTheServer(self) -> Generator[Deferred[Any], Any, None]:
        """
        A server that closes after each message: the next delivery makes a
        new connection, and nothing is deferred.
        """
        server = self.server(dropAfterDataEnd=True)
        courier, cache = self.courier(server)
        listener = _Listener()
        yield courier.deliver("example.test", [self.message(0)], listener)
        yield eventually(lambda: not server.sessions)
        yield courier.deliver("example.test", [self.message(1)], listener)
        self.assertEqual(listener.statuses, [("Q0", SENT), ("Q1", SENT)])
        self.assertEqual(server.connectionsMade, 2)

    @inlineCallbacks
    def test_staleRetriedAtOnce(self) -> Generator[Deferred[Any], Any, None]:
        """
        A server that closes the connection, without a reply, when the
        taken-up connection sends MAIL FROM: the courier sends the message
        over a new connection at once, delivered, not deferred.
        """
        mails = []

        def mail(argument: str) -> Any:
            mails.append(argument)
            return DROP if len(mails) == 2 else None

        server = self.server(replies={"MAIL": mail})
        courier, cache = self.courier(server)
        listener = _Listener()
        yield courier.deliver("example.test", [self.message(0)], listener)
        yield courier.deliver("example.test", [self.message(1)], listener)
        self.assertEqual(listener.statuses, [("Q0", SENT), ("Q1", SENT)])
        self.assertEqual(len(mails), 3)
        self.assertEqual(server.connectionsMade, 2)
        self.assertEqual(len(server.messages), 2)
