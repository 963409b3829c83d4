"""
Tests for L{gopherpost.listeners.service}: listeners bind before privileges
drop, all or none, with one-line errors; stopping drains every role.
"""

from __future__ import annotations

import errno
import os

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.trial.unittest import TestCase

from gopherpost.config import ConfigError
from gopherpost.listeners.endpoints import ListenerSpec, parseEndpoint
from gopherpost.listeners.service import InboundService, ListenerService


class RecordingPort:
    def __init__(self) -> None:
        self.listening = True

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 2525)

    def stopListening(self) -> None:
        self.listening = False


class FakeEndpoint:
    """
    Listens at once, or fails at once with C{error}.
    """

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.ports: list[RecordingPort] = []

    def listen(self, factory: object) -> Deferred:
        if self.error is not None:
            d: Deferred = Deferred()
            d.errback(self.error)
            return d
        port = RecordingPort()
        self.ports.append(port)
        return succeed(port)


class DrainingFactory(Factory):
    protocol = Protocol

    def __init__(self) -> None:
        self.drained: list[float] = []

    def drain(self, grace: float) -> Deferred:
        self.drained.append(grace)
        return succeed(None)


def spec(text: str, variable: str = "SMTP_LISTEN") -> ListenerSpec:
    return parseEndpoint(variable, text)


class ListenerServiceTests(TestCase):
    """
    L{ListenerService}.
    """

    def test_bindsWhilePrivileged(self) -> None:
        """
        C{privilegedStartService} binds; C{startService} does not bind again.
        """
        endpoint = FakeEndpoint()
        service = ListenerService(spec("tcp:25"), endpoint, DrainingFactory())  # type: ignore[arg-type]
        service.privilegedStartService()
        self.assertTrue(service.bound)
        service.startService()
        self.assertEqual(len(endpoint.ports), 1)
        self.successResultOf(service.stopService())
        self.assertFalse(endpoint.ports[0].listening)
        self.assertFalse(service.bound)

    def test_busy(self) -> None:
        """
        A port in use (a real one) is a L{ConfigError} naming the variable.
        """
        taken = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port  # type: ignore[attr-defined]
        listener = spec(f"tcp:{port}:interface=127.0.0.1", "SMTP_SUBMISSIONS_LISTEN")
        service = ListenerService(
            listener,
            TCP4ServerEndpoint(reactor, port, interface="127.0.0.1"),
            DrainingFactory(),
        )
        error = self.assertRaises(ConfigError, service.privilegedStartService)
        self.assertEqual(error.variable, "SMTP_SUBMISSIONS_LISTEN")
        self.assertIn(f"cannot listen on 127.0.0.1:{port}", error.problem)
        self.assertIn(os.strerror(errno.EADDRINUSE), error.problem)


class InboundServiceTests(TestCase):
    """
    L{InboundService}.
    """

    def build(self, *endpoints: FakeEndpoint) -> tuple[InboundService, list[DrainingFactory]]:
        factories = [DrainingFactory(), DrainingFactory()]
        inbound = InboundService(factories, 30.0)
        for number, endpoint in enumerate(endpoints):
            inbound.addListener(
                ListenerService(spec(f"tcp:{2525 + number}"), endpoint, factories[0])  # type: ignore[arg-type]
            )
        return inbound, factories

    def test_allOrNone(self) -> None:
        """
        When one listener cannot bind, those bound before it are unbound
        again and its error is raised.
        """
        first = FakeEndpoint()
        busy = FakeEndpoint(CannotListenError("", 2526, OSError(errno.EADDRINUSE, "in use")))
        inbound, _ = self.build(first, busy)
        error = self.assertRaises(ConfigError, inbound.privilegedStartService)
        self.assertIn("tcp:2526", error.problem)
        self.assertFalse(first.ports[0].listening)
        self.assertEqual(
            inbound.notReady(),
            "SMTP listener is not bound: tcp:2525 (SMTP_LISTEN), tcp:2526 (SMTP_LISTEN)",
        )

    def test_readiness(self) -> None:
        """
        Ready when every listener is bound.
        """
        inbound, _ = self.build(FakeEndpoint(), FakeEndpoint())
        self.assertIn("tcp:2525", inbound.notReady() or "")
        inbound.startService()
        self.assertIsNone(inbound.notReady())
        inbound.listeners[1].port = None
        self.assertEqual(inbound.notReady(), "SMTP listener is not bound: tcp:2526 (SMTP_LISTEN)")

    def test_stopDrainsEveryRole(self) -> None:
        """
        Stopping stops every listener, then drains every factory.
        """
        endpoints = FakeEndpoint(), FakeEndpoint()
        inbound, factories = self.build(*endpoints)
        inbound.privilegedStartService()
        inbound.startService()
        self.successResultOf(inbound.stopService())
        self.assertEqual([e.ports[0].listening for e in endpoints], [False, False])
        self.assertEqual([f.drained for f in factories], [[30.0], [30.0]])
