"""
Tests for L{gopherpost.relay.courier}: the MX walk within one attempt's
bounds, per-recipient reports, stopping and cancelling, with an in-memory
destination resolver and a scripted SMTP client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from gopherpost.dns import TemporaryDNSError
from gopherpost.relay.courier import (
    ADDRESSES_PER_HOST,
    MAX_CONNECTIONS_PER_ATTEMPT,
    Courier,
    ICourier,
    IDeliveryListener,
    OutboundMessage,
    RecipientDelivery,
)
from gopherpost.relay.mx import IDestinationResolver, MailExchange, NullMXError
from gopherpost.relay.outcome import (
    DEFERRED,
    FAILED,
    SENT,
    DeliveryResult,
    RecipientOutcome,
)
from gopherpost.relay.transaction import Envelope


@implementer(IDestinationResolver)
class FakeDestinations:
    """
    Hosts and addresses from dictionaries; a value that is an exception
    fails the lookup, a Deferred is returned as it is.
    """

    port = 2525

    def __init__(self, exchanges: Any, addresses: dict[str, Any]) -> None:
        self.exchanges = exchanges
        self.addresses = addresses
        self.lookups: list[str] = []

    def destinationKey(self, domain: str) -> str:
        return "key:" + domain

    def _answer(self, value: Any) -> Deferred[Any]:
        if isinstance(value, Deferred):
            return value
        if isinstance(value, Exception):
            return fail(value)
        return succeed(value)

    def resolveDestination(self, domain: str) -> Deferred[Any]:
        self.lookups.append(domain)
        return self._answer(self.exchanges)

    def resolveHostAddresses(self, hostname: str) -> Deferred[Any]:
        self.lookups.append(hostname)
        return self._answer(self.addresses[hostname])


class FakeConnection:
    """
    What the scripted client returns for one connection.
    """

    def __init__(self, host: str, address: str, envelopes: list[Envelope], onResult: Any) -> None:
        self.host = host
        self.address = address
        self.envelopes = envelopes
        self.onResult = onResult
        self.stopped = False
        self.cancelled = False
        self.listenerReturned: list[object] = []
        self.result: Deferred[list[DeliveryResult]] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled = True

    def stopGracefully(self) -> None:
        self.stopped = True

    def answer(self, statuses: dict[str, str], **fields: Any) -> list[DeliveryResult]:
        """
        Report each envelope with these statuses per recipient, then end
        the connection.
        """
        results = []
        for index, envelope in enumerate(self.envelopes):
            outcomes = tuple(
                RecipientOutcome(
                    r,
                    statuses.get(r, DEFERRED),
                    {SENT: 250, DEFERRED: 451, FAILED: 550}[statuses.get(r, DEFERRED)],
                    {SENT: "2.0.0", DEFERRED: "4.3.0", FAILED: "5.1.1"}[statuses.get(r, DEFERRED)],
                    "said the server",
                    True,
                )
                for r in envelope.recipients
            )
            result = DeliveryResult(self.host, self.address, 2525, outcomes, **fields)
            self.listenerReturned.append(self.onResult(index, result))
            results.append(result)
        self.result.callback(results)
        return results


@implementer(IDeliveryListener)
class RecordingListener:
    """
    Remembers what the courier says.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[list[str], str, str, int]] = []
        self.reports: list[tuple[str, list[RecipientDelivery]]] = []
        self.returns: object = None

    def attempting(
        self, messages: Sequence[OutboundMessage], host: str, address: str, port: int
    ) -> None:
        self.attempts.append(([m.queueId for m in messages], host, address, port))

    def settled(self, message: OutboundMessage, deliveries: Sequence[RecipientDelivery]) -> object:
        self.reports.append((message.queueId, list(deliveries)))
        return self.returns

    def statuses(self) -> list[tuple[str, str, str]]:
        return [(q, d.recipient, d.status) for q, ds in self.reports for d in ds]


MX1 = MailExchange("mx1.example.test", 10)
MX2 = MailExchange("mx2.example.test", 20)


class CourierTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.connections: list[FakeConnection] = []
        self.listener = RecordingListener()

    def startDelivery(
        self,
        reactor: Any,
        host: str,
        address: str,
        port: int,
        heloName: str,
        envelopes: list[Envelope],
        tlsPolicy: str,
        timeoutScale: float,
        contextFactoryFor: Any,
        onResult: Any,
    ) -> FakeConnection:
        self.assertEqual((port, heloName, tlsPolicy, timeoutScale), (2525, "gp.test", "may", 2.0))
        connection = FakeConnection(host, address, envelopes, onResult)
        self.connections.append(connection)
        return connection

    def courier(self, exchanges: Any, addresses: dict[str, Any]) -> Courier:
        self.destinations = FakeDestinations(exchanges, addresses)
        return Courier(
            self.clock,
            self.destinations,
            heloName="gp.test",
            tlsPolicy="may",
            timeoutScale=2.0,
            startDelivery=self.startDelivery,  # type: ignore[arg-type]
        )

    def messages(self, *recipientLists: tuple[str, ...]) -> list[OutboundMessage]:
        return [
            OutboundMessage(f"Q{n}", "a@gp.test", recipients, b"body %d" % n)
            for n, recipients in enumerate(recipientLists)
        ]


class InterfaceTests(CourierTestCase):
    def test_interfaces(self) -> None:
        """
        L{Courier} provides L{ICourier}; the test listener is a faithful
        L{IDeliveryListener}.
        """
        self.assertTrue(verifyClass(ICourier, Courier))
        self.assertTrue(verifyObject(ICourier, self.courier([MX1], {})))
        self.assertTrue(verifyObject(IDeliveryListener, self.listener))

    def test_destinationKey(self) -> None:
        """
        The destination key is the resolver's.
        """
        self.assertEqual(self.courier([MX1], {}).destinationKey("x.test"), "key:x.test")


class WalkTests(CourierTestCase):
    """
    Hosts in order, addresses per host, connections per attempt.
    """

    def test_failover(self) -> None:
        """
        Each host's first two addresses are tried in order, then the next
        host; each connection carries only the recipients still open; a
        message whose recipients are all final is not carried further.
        """
        courier = self.courier(
            [MX1, MX2],
            {MX1.hostname: ["192.0.2.1", "192.0.2.2", "192.0.2.3"], MX2.hostname: ["192.0.2.9"]},
        )
        [one, two] = self.messages(("a@x.test", "b@x.test"), ("c@x.test",))
        d = courier.deliver("x.test", [one, two], self.listener)
        self.connections[0].answer({})
        self.connections[1].answer({"a@x.test": SENT, "c@x.test": FAILED})
        [third] = self.connections[2:]
        self.assertEqual([e.recipients for e in third.envelopes], [("b@x.test",)])
        third.answer({"b@x.test": SENT})
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(
            [(c.host, c.address) for c in self.connections],
            [
                (MX1.hostname, "192.0.2.1"),
                (MX1.hostname, "192.0.2.2"),
                (MX2.hostname, "192.0.2.9"),
            ],
        )
        self.assertEqual(ADDRESSES_PER_HOST, 2)
        self.assertEqual(
            self.listener.attempts,
            [
                (["Q0", "Q1"], MX1.hostname, "192.0.2.1", 2525),
                (["Q0", "Q1"], MX1.hostname, "192.0.2.2", 2525),
                (["Q0"], MX2.hostname, "192.0.2.9", 2525),
            ],
        )
        self.assertEqual(
            self.listener.statuses(),
            [
                ("Q0", "a@x.test", DEFERRED),
                ("Q0", "b@x.test", DEFERRED),
                ("Q1", "c@x.test", DEFERRED),
                ("Q0", "a@x.test", SENT),
                ("Q0", "b@x.test", DEFERRED),
                ("Q1", "c@x.test", FAILED),
                ("Q0", "b@x.test", SENT),
            ],
        )

    def test_reports(self) -> None:
        """
        Every report is in order, per message, with what happened at that
        host; the courier passes the listener's return value back to the
        client (which waits for it).
        """
        courier = self.courier([MX1], {MX1.hostname: ["192.0.2.1"]})
        messages = self.messages(("a@x.test", "b@x.test"), ("c@x.test",))
        self.listener.returns = marker = object()
        courier.deliver("x.test", messages, self.listener)
        self.connections[0].answer({"a@x.test": SENT, "c@x.test": FAILED})
        self.assertEqual(
            self.listener.statuses(),
            [("Q0", "a@x.test", SENT), ("Q0", "b@x.test", DEFERRED), ("Q1", "c@x.test", FAILED)],
        )
        self.assertEqual(self.connections[0].listenerReturned, [marker, marker])
        delivery = self.listener.reports[0][1][0]
        self.assertEqual(
            (delivery.reply, delivery.dsn, delivery.remote, delivery.final),
            ("250 2.0.0 said the server", "2.0.0", True, True),
        )
        self.assertEqual(
            (delivery.host, delivery.address, delivery.port),
            (MX1.hostname, "192.0.2.1", 2525),
        )
        self.assertEqual([e.message for e in self.connections[0].envelopes], [b"body 0", b"body 1"])

    def test_maxConnections(self) -> None:
        """
        At most L{MAX_CONNECTIONS_PER_ATTEMPT} connections in one attempt.
        """
        hosts = [MailExchange(f"mx{n}.x.test", n) for n in range(5)]
        courier = self.courier(hosts, {h.hostname: ["192.0.2.1", "192.0.2.2"] for h in hosts})
        d = courier.deliver("x.test", self.messages(("a@x.test",)), self.listener)
        while len(self.connections) < 10 and not self.connections[-1].result.called:
            self.connections[-1].answer({})
        self.successResultOf(d)
        self.assertEqual(len(self.connections), MAX_CONNECTIONS_PER_ATTEMPT)

    def test_tlsAndTimings(self) -> None:
        """
        A delivery carries the connection's TLS facts; the time the attempt
        spent before the connection (DNS, earlier hosts) counts as set-up
        for the first message of that connection only.
        """
        slow: Deferred[Any] = Deferred()
        courier = self.courier([MX1], {MX1.hostname: slow})
        courier.deliver("x.test", self.messages(("a@x.test",), ("b@x.test",)), self.listener)
        self.clock.advance(3)
        slow.callback(["192.0.2.1"])
        connection = self.connections[0]
        for index, envelope in enumerate(connection.envelopes):
            outcome = RecipientOutcome(envelope.recipients[0], SENT, 250, "2.0.0", "ok", True)
            connection.onResult(
                index,
                DeliveryResult(
                    MX1.hostname,
                    "192.0.2.1",
                    2525,
                    (outcome,),
                    accepted=True,
                    tlsUsed=True,
                    tlsVersion="TLSv1.3",
                    cipher="TLS_AES_128_GCM_SHA256",
                    connectSeconds=0.5 if index == 0 else 0.0,
                    transferSeconds=0.25,
                ),
            )
        first, second = (ds[0] for _, ds in self.listener.reports)
        self.assertEqual((first.connectSeconds, first.transferSeconds), (3.5, 0.25))
        self.assertEqual((second.connectSeconds, second.transferSeconds), (0.0, 0.25))
        self.assertEqual(
            (first.tlsUsed, first.tlsVersion, first.cipher),
            (True, "TLSv1.3", "TLS_AES_128_GCM_SHA256"),
        )


class DNSTests(CourierTestCase):
    """
    DNS failures are outcomes too.
    """

    def test_permanent(self) -> None:
        """
        The destination does not take mail: every recipient fails with the
        error's status, no host named, nothing connected.
        """
        courier = self.courier(NullMXError("x.test", "null MX"), {})
        d = courier.deliver("x.test", self.messages(("a@x.test", "b@x.test")), self.listener)
        self.successResultOf(d)
        [(_, deliveries)] = self.listener.reports
        self.assertEqual([x.status for x in deliveries], [FAILED, FAILED])
        self.assertEqual((deliveries[0].dsn, deliveries[0].host), ("5.1.10", ""))
        self.assertTrue(deliveries[0].reply.startswith("5.1.10 "), deliveries[0].reply)
        self.assertFalse(deliveries[0].remote)
        self.assertEqual(self.connections, [])

    def test_temporary(self) -> None:
        """
        A temporary failure defers every recipient (4.4.3).
        """
        courier = self.courier(TemporaryDNSError("x.test", "SERVFAIL"), {})
        courier.deliver("x.test", self.messages(("a@x.test",)), self.listener)
        [(_, [delivery])] = self.listener.reports
        self.assertEqual((delivery.status, delivery.dsn, delivery.host), (DEFERRED, "4.4.3", ""))

    def test_hostAddresses(self) -> None:
        """
        A host whose addresses cannot be found defers its recipients with
        the host named in the reply, and the next host is tried.
        """
        courier = self.courier(
            [MX1, MX2],
            {MX1.hostname: TemporaryDNSError(MX1.hostname, "timeout"), MX2.hostname: ["192.0.2.9"]},
        )
        courier.deliver("x.test", self.messages(("a@x.test",)), self.listener)
        [(_, [delivery])] = self.listener.reports
        self.assertEqual((delivery.status, delivery.dsn), (DEFERRED, "4.4.3"))
        self.assertIn(MX1.hostname, delivery.reply)
        self.assertEqual([c.host for c in self.connections], [MX2.hostname])


class StopTests(CourierTestCase):
    """
    L{Courier.stop} and cancellation.
    """

    def test_stopDuringDNS(self) -> None:
        """
        Stopped while the DNS is asked: the attempt ends at once without
        reports; the late answer is ignored.
        """
        answer: Deferred[Any] = Deferred()
        courier = self.courier(answer, {})
        d = courier.deliver("x.test", self.messages(("a@x.test",)), self.listener)
        stopped = courier.stop()
        self.successResultOf(stopped)
        self.successResultOf(d)
        answer.callback([MX1])
        self.assertEqual((self.listener.reports, self.connections), ([], []))

    def test_stopDuringDelivery(self) -> None:
        """
        Stopped while a connection carries messages: the connection is
        asked to stop gracefully, C{stop} fires once it has ended, and no
        other host is tried.
        """
        courier = self.courier(
            [MX1, MX2], {MX1.hostname: ["192.0.2.1"], MX2.hostname: ["192.0.2.9"]}
        )
        d = courier.deliver("x.test", self.messages(("a@x.test",)), self.listener)
        stopped = courier.stop()
        [connection] = self.connections
        self.assertTrue(connection.stopped)
        self.assertNoResult(stopped)
        connection.answer({})
        self.successResultOf(stopped)
        self.successResultOf(d)
        self.assertEqual(len(self.connections), 1)
        self.successResultOf(courier.stop())

    def test_cancel(self) -> None:
        """
        Cancelling an attempt cancels its connection.
        """
        courier = self.courier([MX1], {MX1.hostname: ["192.0.2.1"]})
        d = courier.deliver("x.test", self.messages(("a@x.test",)), self.listener)
        d.cancel()
        self.assertTrue(self.connections[0].cancelled)
        self.failureResultOf(d)
        self.successResultOf(courier.stop())
