# -*- test-case-name: tests.test_web_service -*-
"""
The HTTP listener of the health/metrics server.

It never stops SMTP: an address that cannot be resolved or bound is logged
as one warning and the service simply serves nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Generator, Sequence
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IListeningPort,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IResolutionReceiver,
)
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import implementer

__all__ = ["WebService", "QuietSite", "TrackingFactory", "formatAddress"]

#: The addresses tried, in order, for "every interface".  On a dual-stack
#: host C{::} takes IPv4 too and the second bind fails, silently.
_ANY = ("::", "0.0.0.0")


def formatAddress(host: str, port: int) -> str:
    """
    C{host:port}, C{[v6]:port}, or C{*:port} for every interface.
    """
    if not host:
        return f"*:{port}"
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class QuietSite(Site):
    """
    A L{Site} that keeps no access log (probes and scrapes would flood it)
    and does not announce itself.
    """

    noisy = False
    displayTracebacks = False

    def log(self, request: object) -> None:
        """
        No access log.
        """


class TrackingFactory(WrappingFactory):
    """
    Remembers open connections so that stopping can close them (the health
    server's and the web UI's sites).

    @param name: how the listening port names it in the log.
    """

    noisy = False

    def __init__(self, wrappedFactory: Site, name: str = "gopherpost.web") -> None:
        super().__init__(wrappedFactory)
        self._name = name
        self._idle: list[Deferred] = []

    def logPrefix(self) -> str:
        """
        How the listening port names us in the log.
        """
        return self._name

    def unregisterProtocol(self, p: object) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def closeAll(self) -> Deferred:
        """
        Abort every open connection.

        @return: fires when all are gone.
        """
        if not self.protocols:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d


@implementer(IResolutionReceiver)
class _Addresses:
    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.done: Deferred = Deferred()

    def resolutionBegan(self, resolution: object) -> None:
        pass

    def addressResolved(self, address: object) -> None:
        host = getattr(address, "host", None)
        if host is not None and host not in self.hosts:
            self.hosts.append(host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.hosts)


def _isLocalhost(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


class WebService(Service):
    """
    Listen for HTTP on one configured address.

    The address is a host and a port: an empty host means every interface
    (C{::} and C{0.0.0.0}); an IP literal is used as it is; C{localhost}
    means C{127.0.0.1} and C{::1}; any other name is resolved and every
    address it has is bound (at the same port).

    Binding happens in L{privilegedStartService} (or L{startService} when
    that was not called).

    @ivar ports: the L{IListeningPort}s bound.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        host: str,
        port: int,
        site: Site,
        nameResolver: IHostnameResolver | None = None,
    ) -> None:
        """
        @param reactor: the reactor to listen with.
        @param host: the configured host (see above).
        @param port: the port (0: any free one).
        @param site: the HTTP factory to serve.
        @param nameResolver: resolves host names (default: the reactor's).
        """
        self._reactor = reactor
        self._host = host
        self._port = port
        self._factory = TrackingFactory(site)
        self._nameResolver = nameResolver
        self._starting: Deferred | None = None
        self._stopped = False
        self.ports: list[IListeningPort] = []
        self._log = Logger(namespace="gopherpost.web")

    @property
    def address(self) -> str:
        """
        The configured address, for messages.
        """
        return formatAddress(self._host, self._port)

    def privilegedStartService(self) -> None:
        """
        Bind before privileges are dropped.
        """
        Service.privilegedStartService(self)
        self._startListening()

    def startService(self) -> None:
        """
        Bind now unless L{privilegedStartService} already did.
        """
        Service.startService(self)
        if self._starting is None:
            self._startListening()

    def _startListening(self) -> None:
        self._stopped = False
        d = maybeDeferred(self._resolve)
        d.addCallback(self._bindAll)
        d.addErrback(self._startFailed)
        self._starting = d

    def _resolve(self) -> Deferred:
        host = self._host
        if not host:
            return succeed(list(_ANY))
        try:
            return succeed([str(ipaddress.ip_address(host))])
        except ValueError:
            pass
        if _isLocalhost(host):
            return succeed(["127.0.0.1", "::1"])
        resolver = self._nameResolver
        if resolver is None:
            pluggable = IReactorPluggableNameResolver(self._reactor, None)
            if pluggable is None:
                raise RuntimeError("this reactor cannot resolve host names")
            resolver = pluggable.nameResolver
        receiver = _Addresses()
        resolver.resolveHostName(receiver, host, 0, transportSemantics="TCP")
        return receiver.done

    @inlineCallbacks
    def _bindAll(self, hosts: Sequence[str]) -> Generator[Deferred, Any, None]:
        if not hosts:
            raise RuntimeError(f"{self._host} has no address")
        port = self._port
        errors: list[tuple[str, str]] = []
        for host in hosts:
            if self._stopped:
                return
            endpointType = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
            endpoint = endpointType(self._reactor, port, interface=host)
            try:
                listening = yield endpoint.listen(self._factory)
            except Exception as e:
                errors.append((formatAddress(host, port), _describe(e)))
                continue
            if self._stopped:
                yield listening.stopListening()
                return
            self.ports.append(listening)
            if port == 0:
                port = getattr(listening.getHost(), "port", 0)
        if self._stopped:
            return
        bound = ", ".join(_formatPort(p) for p in self.ports)
        if not self.ports:
            self._log.warn(
                "Health and metrics HTTP server not started: cannot listen on "
                "{address}: {errors}; SMTP goes on without it",
                address=self.address,
                errors="; ".join(f"{a}: {e}" for a, e in errors),
            )
        elif errors and self._host:
            self._log.warn(
                "Health and metrics HTTP server listening on {bound} only; "
                "cannot listen on {errors}",
                bound=bound,
                errors="; ".join(f"{a}: {e}" for a, e in errors),
            )
        else:
            self._log.info("Health and metrics HTTP server listening on {bound}", bound=bound)

    def _startFailed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return None
        self._log.warn(
            "Health and metrics HTTP server not started: cannot listen on "
            "{address}: {error}; SMTP goes on without it",
            address=self.address,
            error=_describe(cast(BaseException, failure.value)),
        )
        return None

    def stopService(self) -> Deferred:
        """
        Stop listening and close every open connection (audit streams
        included).

        @return: fires when all is closed.
        """
        Service.stopService(self)
        self._stopped = True
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.cancel()
        ports, self.ports = self.ports, []
        waiting = [maybeDeferred(p.stopListening) for p in ports]
        waiting.append(self._factory.closeAll())
        return gatherResults(waiting).addCallback(lambda _: None)


def _formatPort(port: IListeningPort) -> str:
    address = port.getHost()
    return formatAddress(getattr(address, "host", "?"), getattr(address, "port", 0))


def _describe(error: BaseException) -> str:
    if isinstance(error, CannotListenError) and error.socketError is not None:
        error = error.socketError
    text = str(error).strip()
    return text or type(error).__name__
