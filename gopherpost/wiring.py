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
      RetentionService             removes delivered mail (issue 14)
      ControlService               .gopherpost/control.sock (gopherpostctl)

Each listener's factory is its role's SMTP factory, inside implicit TLS for
the submissions role, inside the PROXY-protocol reader for C{haproxy:}
endpoints (L{listenerFactory}), behind a switch that a live reload turns to
a tree built from the new settings (L{gopherpost.reload.parts}).  The
service's L{Reloader} runs reloads (SIGHUP, C{gopherpostctl config
reload}); its L{CommandRegistry} holds the control commands.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gopherpost.config import ConfigError, Settings, settingsFromEnvironment
from gopherpost.configsource import ConfigSource, LoadedEnvironment
from gopherpost.inbound.roles import ROLES, SMTP, SUBMISSION, SUBMISSIONS, ListenerRole
from gopherpost.listeners.endpoints import ListenerSpec, defaultListener

__all__ = [
    "GopherPostService",
    "ThreadPoolService",
    "buildServer",
    "configuredListeners",
    "listenerFactory",
    "makeAuth",
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

    spool: Any
    inbound: Any
    audit: Any
    metrics: Any
    relayQueue: Any = None
    transportSecurity: Any = None
    acme: Any = None
    webhooks: Any = None
    filters: Any = None
    webui: Any = None
    mxChecks: Any = None
    auth: Any = None
    _settings: Settings
    # Operations (issue 14)
    #: The L{gopherpost.reload.reloader.Reloader} of this server.
    reloader: Any = None
    #: The L{gopherpost.control.registry.CommandRegistry} of this server.
    commands: Any = None
    #: The listeners with their roles, as configured.
    listeners: Sequence[Any] = ()
    #: The inbound factories by generation (one process), or L{None}.
    listenerFactories: Any = None
    #: Whether SIGHUP reloads and a second SIGTERM/SIGINT stops at once
    #: (the real twistd process, not tests).
    installSignals: bool = False
    _reloadSignal: Any = None

    @property
    def settings(self) -> Settings:
        """
        The configuration in use (the last one a reload applied).
        """
        if self.reloader is not None:
            settings: Settings = self.reloader.settings
            return settings
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self._settings = settings

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
        Start every part (binding what is not bound yet), say what runs,
        and take SIGHUP.
        """
        try:
            MultiService.startService(self)
        except ConfigError as e:
            _exit(e)
        from gopherpost.startup import startupLine

        self.startedAt = time.time()
        _log.info("{line}", line=startupLine(self.settings, self.listeners, self.spool.path))
        if self.installSignals:
            self._installSignals()

    def _installSignals(self) -> None:
        from twisted.internet import reactor

        from gopherpost.reload.signals import ReloadSignal, installSecondSignalExit

        self._reloadSignal = ReloadSignal(reactor, self.reload)
        self._reloadSignal.install()
        reactor.addSystemEventTrigger("before", "shutdown", installSecondSignalExit)

    def reload(self) -> Any:
        """
        Reload the configuration (SIGHUP).

        @return: a Deferred of the L{gopherpost.reload.reloader.ReloadOutcome}.
        """
        if self.auth is not None:
            # wiring: auth (issue 15): SIGHUP re-reads the users file, changed
            # settings or not (workers read it again by themselves)
            self.auth.reloadUsers()
        return self.reloader.reload()

    def stopService(self) -> Any:
        """
        Stop every part; say so when sessions in DATA are waited for.
        """
        if self._reloadSignal is not None:
            self._reloadSignal.uninstall()
        busy = self.busySessionCount
        if busy:
            grace = getattr(self.inbound, "grace", 0)
            _log.info(
                "Stopping: waiting up to {grace:g} s for {count} sessions in DATA",
                grace=grace,
                count=busy,
            )
        return MultiService.stopService(self)

    @property
    def busySessionCount(self) -> int:
        """
        Sessions of this process with a message in flight (0 with workers:
        each says so itself).
        """
        if self.listenerFactories is None:
            return 0
        return int(self.listenerFactories.busySessionCount)

    def status(self) -> dict[str, Any]:
        """
        What runs (C{gopherpostctl status}).
        """
        from gopherpost import __version__
        from gopherpost.startup import relayMode, tlsMode

        settings = self.settings
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started": getattr(self, "startedAt", None),
            "hostname": settings.hostname,
            "listeners": [
                {"role": role.name, "listener": spec.description, "variable": spec.variable}
                for role, spec in self.listeners
            ],
            "workers": settings.workers,
            "spool": self.spool.path,
            "relay": relayMode(settings),
            "tls": tlsMode(settings),
            "queueDepth": self.metrics.queueDepth() if self.metrics is not None else None,
        }


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
    limits: Any = None,
    auth: Any = None,
    extraPolicies: Sequence[Any] = (),
) -> dict[str, Any]:
    """
    One SMTP factory per role, all sharing one set of connection limits.

    @param limits: the L{ConnectionLimits} to share (default: new ones
        from C{settings}); a reload passes the ones in use, so that
        sessions in progress still count.
    @param auth: the L{gopherpost.auth.service.AuthService}, or L{None}.
    @param extraPolicies: policies every role's chain ends with: the MX
        checks' (L{gopherpost.checks.service.MXChecks.chainPolicies}), then
        the content filters.
    @return: the factories by role name, in the order of L{ROLES}.
    """
    from gopherpost.inbound.factory import ConnectionLimits, makeSMTPFactory

    wanted = set(roles)
    if limits is None:
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
            auth=auth,
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


def buildServer(
    environ: Mapping[str, str],
    reactor: Any,
    source: ConfigSource | None = None,
    loaded: LoadedEnvironment | None = None,
    installSignals: bool = False,
) -> GopherPostService:
    """
    The whole server, from the configuration, not yet started (nothing is
    bound).

    @param environ: the variables, as captured at start-up (socket
        activation's C{LISTEN_*} included).
    @param source: where a reload reads the configuration again (default:
        C{environ} alone, no env file).
    @param loaded: C{environ} as C{source} loaded it (origins, env file).
    @param installSignals: SIGHUP reloads, a second SIGTERM stops at once.
    @raise ConfigError: a setting is invalid, the spool cannot be opened,
        another server runs on it, a C{systemd:} socket was not passed.
    """
    from gopherpost import audit as _audit
    from gopherpost import metrics as _metrics
    from gopherpost import tls, web
    from gopherpost.control.registry import CommandRegistry
    from gopherpost.control.service import checkNoOtherServer
    from gopherpost.inbound.factory import SHUTDOWN_GRACE, ConnectionLimits
    from gopherpost.inbound.workers import WorkerPool
    from gopherpost.listeners.service import InboundService, ListenerService
    from gopherpost.listeners.sockets import InheritedSockets, listenEndpoint
    from gopherpost.reload.parts import ListenerFactories, SwitchableResolver
    from gopherpost.startup import configurationWarnings

    if source is None:
        source = ConfigSource(environ, defaultEnvFile=None)
    if loaded is None:
        loaded = LoadedEnvironment(dict(environ))
    settings = settingsFromEnvironment(environ)
    service = GopherPostService()
    service.settings = settings
    service.installSignals = installSignals
    # Parts that own state offer their control commands here
    # (service.commands.addProvider(part); see gopherpost.control).
    service.commands = CommandRegistry()
    _warnIgnored(settings, environ)
    for warning in configurationWarnings(loaded, settings):
        _log.warn("{problem}", problem=warning)

    # Before the spool is opened: opening it recovers from a crash, which
    # must never happen under a server that is running.
    checkNoOtherServer(os.path.join(os.path.abspath(settings.queuePath), ".gopherpost"))
    spool = openSpool(settings.queuePath, reactor)
    service.spool = spool
    tlsDirectory = os.path.join(spool.stateDirectory, "tls")
    _checkOutboundTrust(settings)

    service.audit = auditLog = _audit.AuditLog(debug=settings.debug, clock=reactor)
    service.metrics = _metrics.Metrics(clock=reactor, audit=auditLog)
    firstResolver, dnsThreads = makeResolver(settings.dnsServers, reactor)
    resolver = SwitchableResolver(firstResolver)
    ThreadPoolService(dnsThreads).setServiceParent(service)
    # wiring: mxchecks
    service.mxChecks = makeMXChecks(settings, resolver, reactor, spool)
    service.mxChecks.setServiceParent(service)
    service.metrics.registry.register(service.mxChecks.metrics)

    relayQueue = None
    if not settings.capture:
        # Capture mode (the development role) relays nothing.
        # wiring: tlspolicy (MTA-STS, DANE, TLS reports; built before the
        # relay, which stops first and whose courier consults it)
        from gopherpost.tlspolicy.service import makeTransportSecurity

        service.transportSecurity = makeTransportSecurity(settings, spool, resolver, reactor)
        service.transportSecurity.setServiceParent(service)
        service.metrics.registry.register(service.transportSecurity.metrics)
        relayQueue = _buildRelay(settings, spool, auditLog, resolver, reactor, service)
    _buildWebhooks(settings, spool, reactor, environ, relayQueue, service)
    _buildFilters(settings, reactor, service)

    listeners = configuredListeners(settings)
    service.listeners = listeners
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
        service.commands.addProvider(service.acme)
    # wiring: auth (issue 15): users, password checks, lockouts
    service.auth = makeAuth(settings, spool, reactor, store=service.mxChecks.store)
    if service.auth is not None:
        service.auth.setServiceParent(service)
        service.metrics.registry.register(service.auth.metrics)
        service.commands.addProvider(service.auth)
    inbound: Any
    if settings.workers > 1:
        tls.serverContextFactory(settings, tlsDirectory)
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
        limits = ConnectionLimits(settings.maxConnections, settings.maxConnectionsPerIP)
        roles = [r for r, _ in listeners]

        def build(new: Settings) -> tuple[list[Any], list[Any]]:
            # With ACME, its certificate switch serves every generation.
            if service.acme is not None:
                contextFactory = service.acme.contextFactory
            else:
                contextFactory = tls.serverContextFactory(new, tlsDirectory)
            factories = smtpFactories(
                new,
                spool,
                auditLog,
                resolver,
                reactor,
                contextFactory,
                roles,
                limits=limits,
                auth=service.auth,
                # wiring: mxchecks, then filters (last on every chain;
                # built once, their settings need a restart)
                extraPolicies=[*service.mxChecks.chainPolicies, *service.filters.policies],
            )
            outer = [
                listenerFactory(
                    role, spec, factories[role.name], contextFactory, reactor, new.commandTimeout
                )
                for role, spec in listeners
            ]
            return list(factories.values()), outer

        def applyLimits(new: Settings) -> None:
            limits.maxConnections = new.maxConnections
            limits.maxPerAddress = new.maxConnectionsPerIP

        generations = ListenerFactories(build, settings, applyLimits)
        service.listenerFactories = generations
        inbound = InboundService(generations.factories, SHUTDOWN_GRACE)

        def drainThese(factories: list[Any]) -> None:
            inbound.factories = factories

        generations.onChange = drainThese
        for (_, spec), switch in zip(listeners, generations.switches):
            endpoint = listenEndpoint(spec, reactor, inherited)
            inbound.addListener(ListenerService(spec, endpoint, switch))
    service.inbound = inbound
    inbound.setServiceParent(service)
    _buildWebUI(settings, spool, reactor, service)

    if not settings.healthDisable:
        resource = web.makeWebResource(settings, auditLog, service.metrics, service.ready)
        webService = web.makeWebService(settings, reactor, resource)
        if webService is not None:
            webService.setServiceParent(service)

    # wiring: operations (issue 14): retention, reload, the control socket
    def newResolver(servers: Sequence[tuple[str, int]]) -> Any:
        from gopherpost import dns

        return dns.Resolver(servers, reactor, threadpool=dnsThreads)

    _buildOperations(service, source, loaded, resolver, newResolver, reactor, tlsDirectory)
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


def makeAuth(settings: Settings, spool: Any, reactor: Any, store: Any = None) -> Any:
    """
    Authenticated submission when a listener offers AUTH (its replies are
    the inbound session's), else L{None}.

    @param store: the state store its lockouts share (the MX checks', so
        that with C{SMTP_REDIS_URL} they are the cluster's), or L{None} for
        one of its own.

    @raise ConfigError: the users file is not valid (C{SMTP_USERS_FILE}).
    """
    from gopherpost.auth.service import makeAuthService
    from gopherpost.inbound.replies import Reply

    return makeAuthService(settings, spool.stateDirectory, reactor, replyType=Reply, store=store)


def _runInThreadOf(reactor: Any) -> Callable[..., Any]:
    from twisted.internet.threads import deferToThreadPool

    def runInThread(f: Callable[..., Any], *args: Any) -> Any:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return runInThread


def _buildOperations(
    service: GopherPostService,
    source: ConfigSource,
    loaded: LoadedEnvironment,
    resolver: Any,
    newResolver: Callable[[Sequence[tuple[str, int]]], Any],
    reactor: Any,
    tlsDirectory: str,
) -> None:
    """
    Retention, live reload and the control socket (issue 14).

    @param resolver: the L{SwitchableResolver} every part holds.
    @param newResolver: builds a resolver for other DNS servers.
    """
    from gopherpost import tls
    from gopherpost.configsource import describeConfiguration
    from gopherpost.control.commands import QueueViewCommands, ServerCommands
    from gopherpost.control.service import ControlService
    from gopherpost.reload.parts import (
        RELAY_FIELDS,
        STATIC_PARTS,
        RelayReload,
        ResolverReload,
        WorkerReload,
    )
    from gopherpost.reload.reloader import Reloader, ReloadMetrics
    from gopherpost.retention import RetentionPolicy, RetentionService
    from gopherpost.startup import configurationWarnings

    settings = service.settings
    spool = service.spool
    runInThread = _runInThreadOf(reactor)

    owedWebhooks: Callable[[], Callable[[str, str, float], bool]] | None = None
    if settings.webhookURL is not None:
        from gopherpost.webhooks.records import OwedInbound, WebhookStore

        webhookStore = WebhookStore(spool.stateDirectory)

        def owedWebhooks() -> OwedInbound:
            return OwedInbound(webhookStore)

    retention = RetentionService(
        spool.path,
        RetentionPolicy.fromSettings(settings),
        reactor,
        runInThread,
        owedWebhooks=owedWebhooks,
    )
    retention.setServiceParent(service)

    def warn(new: LoadedEnvironment, newSettings: Settings) -> None:
        for warning in configurationWarnings(new, newSettings):
            _log.warn("{problem}", problem=warning)

    reloadMetrics = ReloadMetrics()
    service.metrics.registry.register(reloadMetrics)
    reloader = Reloader(source, settings, settingsFromEnvironment, reloadMetrics, warn, loaded)
    service.reloader = reloader
    if service.listenerFactories is not None:
        reloader.add(service.listenerFactories)
    else:
        pool = service.inbound
        reloader.add(
            WorkerReload(
                lambda new: tls.serverContextFactory(new, tlsDirectory),
                pool.reconfigure,
                lambda: reloader.loaded.variables,
            )
        )
    reloader.add(ResolverReload(resolver, newResolver))
    relayQueue = service.relayQueue
    if callable(getattr(relayQueue, "reconfigure", None)):
        reloader.add(RelayReload(relayQueue, getattr(relayQueue, "buildCourier", None)))
    else:
        reloader.addStatic("relay queue", RELAY_FIELDS)
    reloader.add(retention)
    # wiring: auth (issue 15): the users file and SMTP_AUTH_* on reload, here
    # and (changed) in every worker; without a listener offering AUTH they
    # wait for the restart that adds one
    from gopherpost.auth.service import AUTH_FIELDS

    if service.auth is None:
        reloader.addStatic("authenticated submission", AUTH_FIELDS - {"queuePath"})
    else:
        reloader.add(service.auth)
        if service.listenerFactories is None:
            workersAuth = WorkerReload(
                lambda new: None, service.inbound.reconfigure, lambda: reloader.loaded.variables
            )
            workersAuth.name = "authenticated submission in the workers"
            workersAuth.fields = AUTH_FIELDS
            reloader.add(workersAuth)
    for name, fields in STATIC_PARTS:
        reloader.addStatic(name, fields)

    registry = service.commands
    registry.addProvider(
        ServerCommands(
            service.status,
            lambda: describeConfiguration(reloader.settings, reloader.loaded),
            lambda: reloader.reload().addCallback(lambda outcome: outcome.asJSON()),
        )
    )
    registry.addProvider(QueueViewCommands(spool.path, runInThread, reactor))
    ControlService(registry, spool.stateDirectory, reactor).setServiceParent(service)


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
    from gopherpost.relay.control import QueueCommands

    security = None if service.transportSecurity is None else service.transportSecurity.security
    relayQueue = _queue.makeRelayService(settings, spool, auditLog, resolver, reactor, security)
    relayQueue.setServiceParent(service)
    spool.addObserver(relayQueue)
    service.relayQueue = relayQueue
    service.metrics.setQueueDepthSource(relayQueue.queueDepth)
    # gopherpostctl queue flush|hold|release|delete|bounce
    service.commands.addProvider(QueueCommands(relayQueue))
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
    The content filters (rspamd, spamd, milters); their policies go last
    on every role's chain.  With inbound workers, each worker builds its
    own (L{gopherpost.inbound.worker}) and this process counts their
    verdicts from the audit events they forward.
    """
    from gopherpost.filters.inbound import makeInboundFilters

    service.filters = makeInboundFilters(settings, reactor)
    service.filters.setServiceParent(service)
    service.metrics.registry.register(service.filters.metrics)
    if settings.workers > 1 and service.filters.policies:
        service.audit.subscribe(service.filters.metrics.eventReceived)


def _buildWebUI(settings: Settings, spool: Any, reactor: Any, service: Any) -> None:
    """
    The message index, the Mailpit-compatible API and the web UI, when
    C{SMTP_WEB_LISTEN} (or capture mode) asks for them.
    """
    from gopherpost.webui.service import makeWebUIService

    service.webui = makeWebUIService(settings, spool, reactor)
    if service.webui is not None:
        service.webui.setServiceParent(service)
