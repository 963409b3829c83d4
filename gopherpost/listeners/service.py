# -*- test-case-name: tests.test_listener_service -*-
"""
The services that bind GopherPost's listeners (one process; for inbound
workers see L{gopherpost.inbound.workers}).

Every listener binds in C{privilegedStartService}, before C{twistd} drops
privileges (port 25, 465 and 587).  A listener that cannot bind raises a
L{ConfigError} naming its variable, in one line; the others are unbound
again, and L{gopherpost.wiring.GopherPostService} ends start-up with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.config import ConfigError
from gopherpost.listeners.endpoints import ListenerSpec
from gopherpost.listeners.sockets import listenProblem

__all__ = ["ListenerService", "InboundService"]

_log = Logger()


class ListenerService(Service):
    """
    One listener: an endpoint and the factory it serves.

    @ivar spec: what was configured.
    @ivar port: the listening port once bound, else L{None}.
    """

    def __init__(
        self, spec: ListenerSpec, endpoint: IStreamServerEndpoint, factory: IProtocolFactory
    ) -> None:
        self.spec = spec
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None
        self.name = spec.description

    @property
    def bound(self) -> bool:
        """
        Whether it listens.
        """
        return self.port is not None

    def privilegedStartService(self) -> None:
        """
        Bind now, while we may still bind privileged ports.

        @raise ConfigError: it cannot bind.
        """
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        """
        Bind now unless L{privilegedStartService} did.
        """
        Service.startService(self)
        if self.port is None:
            self._listen()

    def _listen(self) -> None:
        outcome: list[Any] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            # Every kind we accept binds at once; anything else is a bug.
            raise ConfigError(self.spec.variable, f"{self.spec.description}: did not bind at once")
        if isinstance(outcome[0], Failure):
            raise listenProblem(self.spec, cast(BaseException, outcome[0].value))
        self.port = outcome[0]
        address = self.port.getHost()
        host, port = getattr(address, "host", "?"), getattr(address, "port", 0)
        _log.info(
            "{variable}: listening on {address} ({description})",
            variable=self.spec.variable,
            address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            description=self.spec.description,
        )

    def stopService(self) -> Deferred:
        """
        Stop listening (connections in progress are not touched).
        """
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)


class InboundService(MultiService):
    """
    Every SMTP listener of the server and their roles' factories.

    Stopping it stops listening everywhere first, then lets the sessions of
    every factory drain (messages in DATA finish, the others get C{421}).

    @param factories: the factories of every role (each has C{drain}).
    @param grace: seconds sessions may take to finish.
    """

    name = "inbound"

    def __init__(self, factories: Sequence[Any], grace: float) -> None:
        MultiService.__init__(self)
        self.factories = list(factories)
        self.grace = grace
        self.listeners: list[ListenerService] = []

    def addListener(self, listener: ListenerService) -> None:
        """
        Add one listener.
        """
        self.listeners.append(listener)
        listener.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """
        Bind every listener, or none: on the first that cannot bind, the
        others are unbound again and its L{ConfigError} is raised.
        """
        try:
            MultiService.privilegedStartService(self)
        except ConfigError:
            for listener in self.listeners:
                if listener.port is not None:
                    listener.port.stopListening()
                    listener.port = None
            raise

    def startService(self) -> None:
        """
        Start (and bind, if not yet bound) every listener, or none.
        """
        try:
            MultiService.startService(self)
        except ConfigError:
            self.running = 0
            for listener in self.listeners:
                listener.running = 0
                if listener.port is not None:
                    listener.port.stopListening()
                    listener.port = None
            raise

    def notReady(self) -> str | None:
        """
        Why the inbound side is not ready (a listener not bound), or
        L{None}.
        """
        unbound = [each.spec for each in self.listeners if not each.bound]
        if not unbound:
            return None
        return "SMTP listener is not bound: " + ", ".join(
            f"{spec.description} ({spec.variable})" for spec in unbound
        )

    def stopService(self) -> Deferred:
        """
        Stop listening, then drain every factory's sessions.
        """
        d = MultiService.stopService(self)
        d.addCallback(
            lambda _: gatherResults([factory.drain(self.grace) for factory in self.factories])
        )
        d.addCallback(lambda _: None)
        return d
