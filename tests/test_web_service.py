"""
Tests for L{gopherpost.web.makeWebService}: where it listens, what happens
when it cannot, and the routes over real loopback sockets.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import Logger, LogLevel, LogPublisher, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from zope.interface import implementer

from gopherpost.audit import AuditLog, AuditSubscription
from gopherpost.config import Settings
from gopherpost.metrics import Metrics
from gopherpost.web import WebService, makeWebResource, makeWebService


def warnings(observer: EventLoggingObserver) -> list[dict]:
    return [
        e
        for e in observer
        if e.get("log_namespace") == "gopherpost.web" and e["log_level"] == LogLevel.warn
    ]


class RecordingPort:
    """
    A fake listening port that remembers whether it was stopped.
    """

    def __init__(self, address: object) -> None:
        self.address = address
        self.listening = True

    def getHost(self) -> object:
        return self.address

    def stopListening(self) -> None:
        self.listening = False


class RefusingReactor(MemoryReactorClock):
    """
    A memory reactor on which some interfaces cannot be bound.
    """

    def __init__(self, refuse: tuple = ()) -> None:
        super().__init__()
        self.refuse = refuse

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if interface in self.refuse:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        fake = super().listenTCP(port, factory, backlog, interface)
        return RecordingPort(fake.getHost())


@implementer(IHostnameResolver)
class FakeResolver:
    """
    Resolves names from a dict, at once.
    """

    def __init__(self, names: dict) -> None:
        self.names = names

    def resolveHostName(
        self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"
    ):
        receiver.resolutionBegan(None)
        for host in self.names.get(hostName, ()):
            cls = IPv6Address if ":" in host else IPv4Address
            receiver.addressResolved(cls("TCP", host, portNumber))
        receiver.resolutionComplete()


class AddressTests(TestCase):
    def start(
        self,
        reactor: MemoryReactorClock,
        resolver: FakeResolver | None = None,
        **settings: Any,
    ) -> WebService:
        service = makeWebService(
            Settings(**settings),
            reactor,
            Resource(),
            resolver,
        )
        assert service is not None
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def interfaces(self, reactor: MemoryReactorClock) -> list[tuple]:
        return [(interface, port) for port, _, _, interface in reactor.tcpServers]

    def test_disabled(self) -> None:
        """
        With C{SMTP_HEALTH_DISABLE=true} there is no service.
        """
        service = makeWebService(Settings(healthDisable=True), MemoryReactorClock(), Resource())
        self.assertIsNone(service)

    def test_allInterfaces(self) -> None:
        """
        An empty host (the default C{:8080}) is every interface: C{::}, and
        C{0.0.0.0} where C{::} does not take IPv4 too.  Bound once, even
        after both start calls.
        """
        reactor = MemoryReactorClock()
        self.start(reactor)
        self.assertEqual(self.interfaces(reactor), [("::", 8080), ("0.0.0.0", 8080)])

    def test_dualStackQuiet(self) -> None:
        """
        On a dual-stack host the C{0.0.0.0} bind fails after C{::}
        succeeded: that is expected, not a warning.  Without IPv6, C{::}
        fails and C{0.0.0.0} serves, quietly too.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for refuse in (("0.0.0.0",), ("::",)):
            service = self.start(RefusingReactor(refuse))
            self.assertEqual(len(service.ports), 1)
        self.assertEqual(warnings(observer), [])

    def test_portOverride(self) -> None:
        """
        C{SMTP_HEALTH_PORT} replaces the port of an IPv6 literal address.
        """
        reactor = MemoryReactorClock()
        self.start(reactor, healthAddr="[::1]:8080", healthPort=9090)
        self.assertEqual(self.interfaces(reactor), [("::1", 9090)])

    def test_localhost(self) -> None:
        """
        C{localhost} is both loopback addresses, without asking a resolver.
        """
        reactor = MemoryReactorClock()
        self.start(reactor, FakeResolver({}), healthAddr="localhost", healthPort=9090)
        self.assertEqual(self.interfaces(reactor), [("127.0.0.1", 9090), ("::1", 9090)])

    def test_hostname(self) -> None:
        """
        Another host name is resolved and each of its addresses bound.
        """
        reactor = MemoryReactorClock()
        resolver = FakeResolver({"metrics.test": ["192.0.2.7", "2001:db8::7"]})
        self.start(reactor, resolver, healthAddr="metrics.test:8081")
        self.assertEqual(self.interfaces(reactor), [("192.0.2.7", 8081), ("2001:db8::7", 8081)])

    def test_unresolvable(self) -> None:
        """
        A name with no address is one warning; the service keeps running.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reactor = MemoryReactorClock()
        service = self.start(reactor, FakeResolver({}), healthAddr="nowhere.test:8081")
        self.assertEqual(reactor.tcpServers, [])
        self.assertTrue(service.running)
        [warning] = warnings(observer)
        self.assertIn("nowhere.test:8081", warning["address"])

    def test_nothingBindable(self) -> None:
        """
        When no address can be bound: exactly one warning, no exception, the
        service keeps running (and so does SMTP).
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = self.start(RefusingReactor(("::", "0.0.0.0")))
        self.assertEqual(service.ports, [])
        self.assertTrue(service.running)
        [warning] = warnings(observer)
        self.assertEqual(warning["address"], "*:8080")
        self.assertIn("Address already in use", warning["errors"])

    def test_partlyBindable(self) -> None:
        """
        A name some of whose addresses cannot be bound is served on the
        others, with one warning.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = self.start(RefusingReactor(("::1",)), healthAddr="localhost:9090")
        self.assertEqual(len(service.ports), 1)
        [warning] = warnings(observer)
        self.assertIn("[::1]:9090", warning["errors"])

    def test_stop(self) -> None:
        """
        Stopping stops listening.
        """
        service = self.start(RefusingReactor(), healthAddr="127.0.0.1:8080")
        [port] = service.ports
        self.successResultOf(service.stopService())
        self.assertEqual(service.ports, [])
        self.assertFalse(port.listening)  # type: ignore[attr-defined]


class UnbindableTests(TestCase):
    def test_portInUse(self) -> None:
        """
        A port already taken on 127.0.0.1 is one warning; nothing raises.
        """
        taken = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port  # type: ignore[attr-defined]
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = makeWebService(Settings(healthAddr=f"127.0.0.1:{port}"), reactor, Resource())
        assert service is not None
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(service.ports, [])
        self.assertTrue(service.running)
        [warning] = warnings(observer)
        self.assertEqual(warning["address"], f"127.0.0.1:{port}")


class NotifyingAuditLog(AuditLog):
    """
    An audit log that tells when a subscription goes away.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.unsubscribed: list[Deferred] = []

    def _unsubscribe(self, subscription: AuditSubscription) -> None:
        super()._unsubscribe(subscription)
        waiting, self.unsubscribed = self.unsubscribed, []
        for d in waiting:
            d.callback(subscription)

    def nextUnsubscribe(self) -> Deferred:
        d: Deferred = Deferred()
        self.unsubscribed.append(d)
        return d


class Collector(Protocol):
    """
    Collects a response body; fires C{waiting} when it contains a marker.
    """

    def __init__(self) -> None:
        self.data = b""
        self.marker = b""
        self.waiting: Deferred | None = None

    def waitFor(self, marker: bytes) -> Deferred:
        self.marker = marker
        self.waiting = Deferred()
        d = self.waiting
        self._check()
        return d

    def _check(self) -> None:
        if self.waiting is not None and self.marker in self.data:
            d, self.waiting = self.waiting, None
            d.callback(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def connectionLost(self, reason: Failure | None = None) -> None:
        pass

    def disconnect(self) -> None:
        """
        Stop receiving the body: the client closes the connection.
        """
        self.transport.stopProducing()  # type: ignore[union-attr]


class Silent(Protocol):
    """
    Sends one request, then never reads.
    """

    transport: Any

    def connectionMade(self) -> None:
        self.transport.write(b"GET /healthz HTTP/1.1\r\nHost: gopherpost.test\r\n\r\n")
        self.transport.pauseProducing()


class LoopbackTestCase(TestCase):
    """
    A real server on 127.0.0.1 (any free port) and a real HTTP client.
    """

    debugMode = False

    def setUp(self) -> None:
        # Its log events go nowhere: under trial -j they would be queued for
        # the parent process and count in the memory the stream tests see.
        self.audit = NotifyingAuditLog(
            self.debugMode, reactor, logger=Logger(observer=LogPublisher())
        )
        self.metrics = Metrics(reactor, self.audit)
        self.requested: list[Deferred] = []
        resource = makeWebResource(
            Settings(debug=self.debugMode), self.audit, self.metrics, self.readiness
        )
        # SMTP_HEALTH_PORT=0 would not pass validation; Settings takes it.
        settings = Settings(healthAddr="127.0.0.1", healthPort=0)
        service = makeWebService(settings, reactor, resource)
        assert service is not None
        service.startService()
        self.addCleanup(service.stopService)
        self.service = service
        [port] = service.ports
        self.base = f"http://127.0.0.1:{port.getHost().port}".encode()  # type: ignore[attr-defined]
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=pool)

    def readiness(self):
        waiting, self.requested = self.requested, []
        for d in waiting:
            reactor.callLater(0, d.callback, None)
        return (True, "")

    def nextRequest(self) -> Deferred:
        d: Deferred = Deferred()
        self.requested.append(d)
        return d

    def get(self, path: bytes, accept: bytes | None = None) -> Deferred:
        headers = Headers({b"Accept": [accept]}) if accept else None
        return self.agent.request(b"GET", self.base + path, headers)


class LoopbackTests(LoopbackTestCase):
    """
    Each route once over a real socket.
    """

    @inlineCallbacks
    def test_healthz(self):
        """
        C{/healthz} over a real socket.
        """
        response = yield self.get(b"/healthz")
        body = yield readBody(response)
        self.assertEqual((response.code, body), (200, b"OK"))
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-cache"])

    @inlineCallbacks
    def test_metrics(self):
        """
        C{/metrics} over a real socket, both formats.
        """
        self.audit.emit(
            "message.queued", queueId="q1", client="127.0.0.1", size=10, recipients=1, tls=False
        )
        response = yield self.get(b"/metrics")
        body = json.loads((yield readBody(response)))
        self.assertEqual(body["smtp_messages_queued_total"], 1)
        self.assertGreater(body["process_open_fds"], 0)
        response = yield self.get(b"/metrics", b"text/plain;version=0.0.4")
        text = yield readBody(response)
        self.assertIn(b"\nsmtp_messages_queued_total 1.0\n", text)

    @inlineCallbacks
    def test_probes(self):
        """
        C{/livez} and C{/readyz} over a real socket.
        """
        for path in (b"/livez", b"/readyz"):
            response = yield self.get(path)
            body = yield readBody(response).addTimeout(10, reactor)
            self.assertEqual((response.code, body), (200, b"OK\n"), path)
            self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-cache"])

    @inlineCallbacks
    def test_notFound(self):
        """
        Anything else is 404 over a real socket.
        """
        response = yield self.get(b"/favicon.ico")
        yield readBody(response)
        self.assertEqual(response.code, 404)


class LoopbackStreamTests(LoopbackTestCase):
    """
    The audit stream over a real socket.
    """

    debugMode = True

    def streamSubscriptions(self) -> list[AuditSubscription]:
        return [s for s in self.audit.subscriptions if s is not self.metrics._subscription]

    @inlineCallbacks
    def test_stream(self):
        """
        A real client gets C{OK} and then live audit lines; when it
        disconnects, its subscriber goes away.
        """
        response = yield self.get(b"/healthz")
        self.assertEqual(response.code, 200)
        collector = Collector()
        response.deliverBody(collector)
        yield collector.waitFor(b"OK\n")
        self.audit.emit("session.start", client="127.0.0.1")
        data = yield collector.waitFor(b"session.start client=127.0.0.1\n")
        self.assertTrue(data.startswith(b"OK\n"))
        gone = self.audit.nextUnsubscribe()
        collector.disconnect()
        yield gone
        self.assertEqual(self.streamSubscriptions(), [])

    @inlineCallbacks
    def test_probesNeverStream(self):
        """
        With debugging on, a real client reads C{/livez} and C{/readyz} to
        the end at once (C{/healthz} would stream), and nothing subscribes.
        """
        for path in (b"/livez", b"/readyz"):
            response = yield self.get(path)
            body = yield readBody(response).addTimeout(10, reactor)
            self.assertEqual((response.code, body), (200, b"OK\n"), path)
        self.assertEqual(self.streamSubscriptions(), [])

    @inlineCallbacks
    def test_auditEventStream(self):
        """
        C{/audit} over a real socket: the headers come before any event,
        then one server-sent event per audit event.
        """
        response = yield self.get(b"/audit", b"text/event-stream")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/event-stream"])
        collector = Collector()
        response.deliverBody(collector)
        self.audit.emit("session.start", client="127.0.0.1")
        data = yield collector.waitFor(b"\n\n")
        self.assertTrue(data.startswith(b"data: "), data)
        self.assertIn(b" session.start client=127.0.0.1\n\n", data)
        gone = self.audit.nextUnsubscribe()
        collector.disconnect()
        yield gone
        self.assertEqual(self.streamSubscriptions(), [])

    @inlineCallbacks
    def test_neverReadingClient(self):
        """
        A client that never reads pauses its stream once the connection's
        buffer is full: lines are dropped, memory stays flat, SMTP (emit) is
        never blocked.
        """
        requested = self.nextRequest()
        address = self.service.ports[0].getHost()
        assert isinstance(address, IPv4Address)
        client = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", address.port), Silent()
        )
        yield requested
        [subscription] = self.streamSubscriptions()

        def burst(n: int) -> None:
            for i in range(n):
                self.audit.emit("delivery.attempt", queueId=f"{i:032x}", mx="mx.example.test")

        tracemalloc.start()
        try:
            burst(5000)
            before = tracemalloc.get_traced_memory()[0]
            burst(20000)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertTrue(subscription.paused)
        self.assertEqual(subscription.buffered, 256)
        self.assertGreater(subscription.droppedTotal, 20000)
        self.assertLess(after - before, 300_000)

        gone = self.audit.nextUnsubscribe()
        client.transport.abortConnection()
        yield gone
        self.assertEqual(self.streamSubscriptions(), [])
