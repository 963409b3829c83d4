# -*- test-case-name: tests.test_tap -*-
"""
C{twistd gopherpost}: command-line options and the wiring of every part into
one L{MultiService}.

No policy lives here: configuration is parsed by L{gopherpost.config}, and
each part is built by its own module.  A bad setting ends start-up before
anything is bound, with one line naming the variable.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from gopherpost.config import ConfigError, Settings, loadEnvironment, settingsFromEnvironment
from gopherpost.inbound.factory import LISTEN_BACKLOG

__all__ = ["Options", "makeService", "GopherPostService", "ThreadPoolService"]


class Options(usage.Options):
    """
    Command-line options of C{twistd gopherpost}.

    Each option overrides the environment variable it names; the
    environment alone is enough.
    """

    optParameters = [
        ["port", "p", None, "SMTP port (overrides SMTP_PORT)."],
        ["interface", "i", None, "Address to listen on (overrides SMTP_LISTEN_ADDR)."],
        ["hostname", None, None, "Host name to announce (overrides SMTP_HOSTNAME)."],
        ["queue-path", "q", None, "Spool directory (overrides SMTP_QUEUE_PATH)."],
    ]

    _variables = {
        "port": "SMTP_PORT",
        "interface": "SMTP_LISTEN_ADDR",
        "hostname": "SMTP_HOSTNAME",
        "queue-path": "SMTP_QUEUE_PATH",
    }

    def environment(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """
        The environment (with C{.env}) with command-line overrides applied.
        """
        merged = loadEnvironment() if environ is None else dict(environ)
        for option, variable in self._variables.items():
            if self[option] is not None:
                merged[variable] = self[option]
        return merged


class ThreadPoolService(Service):
    """
    Runs a L{ThreadPool} while the service runs.
    """

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        Service.startService(self)
        self.pool.start()

    def stopService(self) -> None:
        Service.stopService(self)
        self.pool.stop()


class GopherPostService(MultiService):
    """
    The whole server.  Its attributes give tests and the health check a
    handle on the parts.
    """

    settings: Settings
    spool: Any
    inbound: Any
    audit: Any
    metrics: Any
    relayQueue: Any = None
    acme: Any = None

    def ready(self) -> tuple[bool, str]:
        """
        Ready when the SMTP listener is bound and the spool is writable.
        """
        if not self.inbound.listening:
            return (False, "SMTP listener is not bound")
        # wiring: acme
        if self.acme is not None:
            ready, reason = self.acme.readiness()
            if not ready:
                return (False, reason)
        return self.spool.isWritable()


def _listenAddress(settings: Settings) -> str:
    """
    The address SMTP listens on: C{SMTP_LISTEN_ADDR}, else every address
    (IPv6 and IPv4 where the host has IPv6).
    """
    if settings.listenAddress:
        return settings.listenAddress
    return "::" if _ipv6Available() else "0.0.0.0"


def _listenEndpoint(reactor: Any, settings: Settings) -> Any:
    address = _listenAddress(settings)
    if ":" in address:
        return TCP6ServerEndpoint(reactor, settings.port, LISTEN_BACKLOG, address)
    return TCP4ServerEndpoint(reactor, settings.port, LISTEN_BACKLOG, address)


def _ipv6Available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def makeService(
    options: Options,
    environ: Mapping[str, str] | None = None,
    reactor: Any = None,
) -> GopherPostService:
    """
    Build the GopherPost service from options and environment.

    @raise SystemExit: with a one-line message naming the variable, if the
        configuration is invalid; nothing has been bound then.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    try:
        return _build(options.environment(environ), reactor)
    except ConfigError as e:
        raise SystemExit(f"gopherpost: configuration error: {e}") from None


def _build(environ: Mapping[str, str], reactor: Any) -> GopherPostService:
    from gopherpost import audit as _audit
    from gopherpost import dns, tls, web
    from gopherpost import metrics as _metrics
    from gopherpost.inbound.factory import SMTPService, makeSMTPFactory
    from gopherpost.inbound.workers import WorkerPool
    from gopherpost.spool import Spool, SpoolError

    settings = settingsFromEnvironment(environ)
    service = GopherPostService()
    service.settings = settings

    spool = Spool(settings.queuePath, reactor)
    try:
        spool.open()
    except SpoolError as e:
        raise ConfigError("SMTP_QUEUE_PATH", str(e)) from None
    service.spool = spool
    contextFactory = tls.serverContextFactory(settings, os.path.join(spool.stateDirectory, "tls"))
    _checkOutboundTrust(settings)

    service.audit = auditLog = _audit.AuditLog(debug=settings.debug, clock=reactor)
    service.metrics = _metrics.Metrics(clock=reactor, audit=auditLog)
    # wiring: acme
    if settings.acmeEnabled:
        from gopherpost.acme import makeACMEService

        service.acme = makeACMEService(settings, spool.stateDirectory, reactor)
        service.acme.setServiceParent(service)
        service.metrics.registry.register(service.acme.metrics)
        contextFactory = service.acme.contextFactory
    # DNS gets its own threads: a slow resolver must never hold up the
    # fsyncs that stand between a client and its 250.
    dnsThreads = ThreadPool(minthreads=0, maxthreads=dns.DNS_THREADS, name="gopherpost-dns")
    ThreadPoolService(dnsThreads).setServiceParent(service)
    resolver = dns.Resolver(settings.dnsServers, reactor, threadpool=dnsThreads)

    _buildRelay(settings, spool, auditLog, resolver, reactor, service)

    if settings.workers > 1:
        inbound = WorkerPool(settings, environ, auditLog, spool, reactor, _listenAddress(settings))
    else:
        factory = makeSMTPFactory(settings, spool, auditLog, resolver, reactor, contextFactory)
        listener = StreamServerEndpointService(_listenEndpoint(reactor, settings), factory)
        # Fail start-up (not just log) when the port cannot be bound.
        listener._raiseSynchronously = True
        inbound = SMTPService(listener, factory)
    service.inbound = inbound
    inbound.setServiceParent(service)

    if not settings.healthDisable:
        resource = web.makeWebResource(settings, auditLog, service.metrics, service.ready)
        webService = web.makeWebService(settings, reactor, resource)
        if webService is not None:
            webService.setServiceParent(service)
    return service


def _checkOutboundTrust(settings: Settings) -> None:
    """
    With a verifying outbound TLS policy, the trust store must load now,
    not at the first delivery.
    """
    from gopherpost import tls

    if settings.outboundTLS not in ("verify", "require"):
        return
    try:
        tls.clientContextFor(settings.outboundTLS, settings.hostname)
    except Exception as e:
        variable = "SSL_CERT_DIR" if "SSL_CERT_DIR" in str(e) else "SSL_CERT_FILE"
        raise ConfigError(variable, f"the outbound TLS trust store does not load: {e}") from None


def _buildRelay(settings, spool, auditLog, resolver, reactor, service) -> Any:
    """
    The outbound queue.
    """
    from gopherpost.relay import queue as _queue

    relayQueue = _queue.makeRelayService(settings, spool, auditLog, resolver, reactor)
    relayQueue.setServiceParent(service)
    spool.addObserver(relayQueue)
    service.relayQueue = relayQueue
    service.metrics.setQueueDepthSource(relayQueue.queueDepth)
    return relayQueue
