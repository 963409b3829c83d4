# -*- test-case-name: tests.test_wiring -*-
"""
GopherPost's parts, built once: for the whole server (L{buildServer}, used
by L{gopherpost.tap}) and for an inbound worker process (the same helpers,
used by L{gopherpost.inbound.worker}).

The server is::

    GopherPostService
      ThreadPoolService            DNS threads
      MXChecks                     SPF, DKIM, DMARC, DNSBL, rates, greylisting,
                                   bans: policies on every role's chain
      RelayQueue                   observes the spool
      InboundService               one ListenerService per endpoint string,
        (or WorkerPool)            one SMTP factory per role, shared limits
      WebService                   /healthz, /metrics (unless disabled)

Each listener's factory is its role's SMTP factory, inside implicit TLS for
the submissions role, inside the PROXY-protocol reader for C{haproxy:}
endpoints (L{listenerFactory}).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gopherpost.config import ConfigError, Settings, settingsFromEnvironment
from gopherpost.inbound.roles import ROLES, SMTP, SUBMISSION, SUBMISSIONS, ListenerRole
from gopherpost.listeners.endpoints import ListenerSpec, defaultListener

__all__ = [
    "GopherPostService",
    "ThreadPoolService",
    "buildServer",
    "configuredListeners",
    "listenerFactory",
    "makeMXChecks",
    "makeResolver",
    "openSpool",
    "roleByName",
    "smtpFactories",
]

_log = Logger()


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

    A listener that cannot bind when the service starts ends start-up:
    one critical log line naming the variable, then L{SystemExit} (status
    1), never a traceback.
    """

    settings: Settings
    spool: Any
    inbound: Any
    audit: Any
    metrics: Any
    relayQueue: Any = None
    acme: Any = None
    webhooks: Any = None
    filters: Any = None
    webui: Any = None
    mxChecks: Any = None

    def ready(self) -> tuple[bool, str]:
        """
        Ready when every SMTP listener is bound (and, with workers, a
        worker runs) and the spool is writable.
        """
        problem = self.inbound.notReady()
        if problem is not None:
            return (False, problem)
        # wiring: acme
        if self.acme is not None:
            ready, reason = self.acme.readiness()
            if not ready:
                return (False, reason)
        return self.spool.isWritable()

    def privilegedStartService(self) -> None:
        """
        Bind every listener before privileges are dropped.
        """
        try:
            MultiService.privilegedStartService(self)
        except ConfigError as e:
            _exit(e)

    def startService(self) -> None:
        """
        Start every part (binding what is not bound yet).
        """
        try:
            MultiService.startService(self)
        except ConfigError as e:
            _exit(e)


def _exit(error: ConfigError) -> None:
    _log.critical("Not started: {error}", error=str(error))
    raise SystemExit(1)


def openSpool(queuePath: str, reactor: Any, recover: bool = True) -> Any:
    """
    The spool in C{SMTP_QUEUE_PATH}, opened (and recovered).

    @raise ConfigError: naming C{SMTP_QUEUE_PATH}.
    """
    from gopherpost.spool import Spool, SpoolError

    spool = Spool(queuePath, reactor)
    try:
        spool.open(recover=recover)
    except SpoolError as e:
        raise ConfigError("SMTP_QUEUE_PATH", str(e)) from None
    return spool


def makeResolver(dnsServers: Sequence[tuple[str, int]], reactor: Any) -> tuple[Any, ThreadPool]:
    """
    The DNS resolver, with threads of its own: a slow resolver must never
    hold up the fsyncs that stand between a client and its 250.

    @return: the resolver and its (not yet started) thread pool.
    """
    from gopherpost import dns

    threads = ThreadPool(minthreads=0, maxthreads=dns.DNS_THREADS, name="gopherpost-dns")
    return dns.Resolver(dnsServers, reactor, threadpool=threads), threads


def configuredListeners(settings: Settings) -> list[tuple[ListenerRole, ListenerSpec]]:
    """
    Every listener with its role, in the order of L{ROLES}: C{SMTP_LISTEN}
    (by default C{SMTP_LISTEN_ADDR}/C{SMTP_PORT}), C{SMTP_SUBMISSION_LISTEN},
    C{SMTP_SUBMISSIONS_LISTEN}.
    """
    smtp = settings.listen
    if smtp is None:
        smtp = (defaultListener(settings.listenAddress, settings.port),)
    listeners: list[tuple[ListenerRole, ListenerSpec]] = [(SMTP, spec) for spec in smtp]
    listeners += [(SUBMISSION, spec) for spec in settings.submissionListen]
    listeners += [(SUBMISSIONS, spec) for spec in settings.submissionsListen]
    return listeners


def roleByName(name: str) -> ListenerRole:
    """
    The role called C{name}.
    """
    for role in ROLES:
        if role.name == name:
            return role
    raise KeyError(name)


def smtpFactories(
    settings: Settings,
    spool: Any,
    audit: Any,
    resolver: Any,
    clock: IReactorTime,
    contextFactory: Any,
    roles: Iterable[ListenerRole],
    extraPolicies: Sequence[Any] = (),
) -> dict[str, Any]:
    """
    One SMTP factory per role, all sharing one set of connection limits.

    @param extraPolicies: policies every role's chain ends with (the MX
        checks' L{gopherpost.checks.service.MXChecks.chainPolicies}).
    @return: the factories by role name, in the order of L{ROLES}.
    """
    from gopherpost.inbound.factory import ConnectionLimits, makeSMTPFactory

    wanted = set(roles)
    limits = ConnectionLimits(settings.maxConnections, settings.maxConnectionsPerIP)
    return {
        role.name: makeSMTPFactory(
            settings,
            spool,
            audit,
            resolver,
            clock,
            contextFactory,
            role=role,
            limits=limits,
            extraPolicies=extraPolicies,
        )
        for role in ROLES
        if role in wanted
    }


def listenerFactory(
    role: ListenerRole,
    spec: ListenerSpec,
    factory: Any,
    contextFactory: Any,
    clock: IReactorTime,
    handshakeTimeout: float,
) -> IProtocolFactory:
    """
    What one listener serves: its role's SMTP factory, inside implicit TLS
    (the submissions role), inside the PROXY-protocol reader (C{haproxy:}).

    @param handshakeTimeout: seconds an implicit-TLS handshake may take
        (C{SMTP_COMMAND_TIMEOUT}).
    """
    from gopherpost.listeners.implicittls import ImplicitTLSFactory
    from gopherpost.listeners.proxy import ProxyProtocolFactory

    wrapped: Any = factory
    if role.implicitTLS:
        wrapped = ImplicitTLSFactory(
            contextFactory, wrapped, clock, handshakeTimeout, spec.description
        )
    if spec.proxy:
        wrapped = ProxyProtocolFactory(wrapped, clock, spec.description)
    return wrapped


def _warnIgnored(settings: Settings, environ: Mapping[str, str]) -> None:
    if settings.listen is None:
        return
    ignored = [v for v in ("SMTP_PORT", "SMTP_LISTEN_ADDR") if environ.get(v, "").strip()]
    if ignored:
        _log.warn(
            "{ignored} ignored: SMTP_LISTEN is set and says where SMTP listens",
            ignored=" and ".join(ignored),
        )


def buildServer(environ: Mapping[str, str], reactor: Any) -> GopherPostService:
    """
    The whole server, from the configuration, not yet started (nothing is
    bound).

    @param environ: the variables, as captured at start-up (socket
        activation's C{LISTEN_*} included).
    @raise ConfigError: a setting is invalid, the spool cannot be opened, a
        C{systemd:} socket was not passed.
    """
    from gopherpost import audit as _audit
    from gopherpost import metrics as _metrics
    from gopherpost import tls, web
    from gopherpost.inbound.factory import SHUTDOWN_GRACE
    from gopherpost.inbound.workers import WorkerPool
    from gopherpost.listeners.service import InboundService, ListenerService
    from gopherpost.listeners.sockets import InheritedSockets, listenEndpoint

    settings = settingsFromEnvironment(environ)
    service = GopherPostService()
    service.settings = settings
    _warnIgnored(settings, environ)

    spool = openSpool(settings.queuePath, reactor)
    service.spool = spool
    contextFactory = tls.serverContextFactory(settings, os.path.join(spool.stateDirectory, "tls"))
    _checkOutboundTrust(settings)

    service.audit = auditLog = _audit.AuditLog(debug=settings.debug, clock=reactor)
    service.metrics = _metrics.Metrics(clock=reactor, audit=auditLog)
    resolver, dnsThreads = makeResolver(settings.dnsServers, reactor)
    ThreadPoolService(dnsThreads).setServiceParent(service)
    # wiring: mxchecks
    service.mxChecks = makeMXChecks(settings, resolver, reactor, spool)
    service.mxChecks.setServiceParent(service)
    service.metrics.registry.register(service.mxChecks.metrics)

    relayQueue = None
    if not settings.capture:
        # Capture mode (the development role) relays nothing.
        relayQueue = _buildRelay(settings, spool, auditLog, resolver, reactor, service)
    _buildWebhooks(settings, spool, reactor, environ, relayQueue, service)
    _buildFilters(settings, reactor, service)

    listeners = configuredListeners(settings)
    inherited = InheritedSockets([])
    acmeSystemd = settings.acmeEnabled and settings.acmeChallengeListen.kind == "systemd"
    if acmeSystemd or any(spec.kind == "systemd" for _, spec in listeners):
        inherited = InheritedSockets.fromEnvironment(environ)
    # wiring: acme
    if settings.acmeEnabled:
        from gopherpost.acme import makeACMEService

        service.acme = makeACMEService(settings, spool.stateDirectory, reactor, inherited=inherited)
        service.acme.setServiceParent(service)
        service.metrics.registry.register(service.acme.metrics)
        contextFactory = service.acme.contextFactory
    inbound: Any
    if settings.workers > 1:
        inbound = WorkerPool(
            settings.workers,
            listeners,
            inherited,
            environ,
            auditLog,
            spool,
            reactor,
            counters={"checks": service.mxChecks.metrics},
        )
    else:
        factories = smtpFactories(
            settings,
            spool,
            auditLog,
            resolver,
            reactor,
            contextFactory,
            [r for r, _ in listeners],
            extraPolicies=service.mxChecks.chainPolicies,
        )
        inbound = InboundService(list(factories.values()), SHUTDOWN_GRACE)
        for role, spec in listeners:
            factory = listenerFactory(
                role, spec, factories[role.name], contextFactory, reactor, settings.commandTimeout
            )
            endpoint = listenEndpoint(spec, reactor, inherited)
            inbound.addListener(ListenerService(spec, endpoint, factory))
    service.inbound = inbound
    inbound.setServiceParent(service)
    _buildWebUI(settings, spool, reactor, service)

    if not settings.healthDisable:
        resource = web.makeWebResource(settings, auditLog, service.metrics, service.ready)
        webService = web.makeWebService(settings, reactor, resource)
        if webService is not None:
            webService.setServiceParent(service)
    return service


def makeMXChecks(
    settings: Settings, resolver: Any, reactor: Any, spool: Any, metrics: Any = None
) -> Any:
    """
    The MX checks of this process (L{gopherpost.checks.service.MXChecks}),
    their state in the spool's state directory (or Redis): in the main
    process and in each inbound worker.

    @param metrics: their counters (default: new ones, for this process's
        metrics page).
    @raise ConfigError: the checks cannot be used (no Public Suffix List,
        an unusable state directory).
    """
    from gopherpost.checks.service import makeMXChecks as _makeMXChecks

    return _makeMXChecks(settings, resolver, reactor, spool.stateDirectory, metrics)


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


def _buildRelay(
    settings: Settings, spool: Any, auditLog: Any, resolver: Any, reactor: Any, service: Any
) -> Any:
    """
    The outbound queue, observing the spool.
    """
    from gopherpost.relay import queue as _queue

    relayQueue = _queue.makeRelayService(settings, spool, auditLog, resolver, reactor)
    relayQueue.setServiceParent(service)
    spool.addObserver(relayQueue)
    service.relayQueue = relayQueue
    service.metrics.setQueueDepthSource(relayQueue.queueDepth)
    return relayQueue


def _buildWebhooks(
    settings: Settings,
    spool: Any,
    reactor: Any,
    environ: Mapping[str, str],
    relayQueue: Any,
    service: Any,
) -> None:
    """
    The webhooks (inbound mail, delivery events), when configured: a spool
    observer and a delivery observer of the relay queue.
    """
    from gopherpost.webhooks.service import makeWebhookService

    webhooks = makeWebhookService(settings, spool, reactor, environ)
    service.webhooks = webhooks
    if webhooks is None:
        return
    webhooks.setServiceParent(service)
    spool.addObserver(webhooks)
    service.metrics.registry.register(webhooks.metrics)
    addDeliveryObserver = getattr(relayQueue, "addDeliveryObserver", None)
    if addDeliveryObserver is not None and webhooks.deliveryObserver is not None:
        addDeliveryObserver(webhooks.deliveryObserver)


def _buildFilters(settings: Settings, reactor: Any, service: Any) -> None:
    """
    The content filters (rspamd, spamd, milters); their policies join the
    inbound chains.
    """
    from gopherpost.filters.service import makeContentFilters

    service.filters = makeContentFilters(settings, reactor)
    service.filters.setServiceParent(service)
    service.metrics.registry.register(service.filters.metrics)


def _buildWebUI(settings: Settings, spool: Any, reactor: Any, service: Any) -> None:
    """
    The message index, the Mailpit-compatible API and the web UI, when
    C{SMTP_WEB_LISTEN} (or capture mode) asks for them.
    """
    from gopherpost.webui.service import makeWebUIService

    service.webui = makeWebUIService(settings, spool, reactor)
    if service.webui is not None:
        service.webui.setServiceParent(service)
