# -*- test-case-name: tests.test_workers -*-
"""
One inbound worker process: C{python -m gopherpost.inbound.worker}.

Started by L{gopherpost.inbound.workers.WorkerPool} with the listening
sockets from file descriptor 3 on (described in C{GOPHERPOST_LISTENERS}) and
an AMP channel to the parent on standard input and output.  It accepts and
spools mail exactly as the single-process server does, built by the same
L{gopherpost.wiring} helpers; the relay queue, metrics and the audit stream
live in the parent.  SIGTERM (or the parent going away) stops accepting,
lets messages in DATA finish, and exits.  On a live reload the parent sends
the new variables (L{gopherpost.inbound.ipc.Reconfigure}): new sessions get
factories built from them, sessions in progress keep theirs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import connectionDone
from twisted.internet.stdio import StandardIO
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure

from gopherpost.inbound.ipc import QuietAMP, Reconfigure
from gopherpost.listeners.endpoints import ListenerSpec

__all__ = [
    "FIRST_LISTEN_FD",
    "LISTENERS_VARIABLE",
    "PassedListener",
    "describePassedListeners",
    "passedListeners",
    "main",
]

#: The file descriptor of the first listening socket.
FIRST_LISTEN_FD = 3
#: Environment variable describing the sockets passed (JSON).
LISTENERS_VARIABLE = "GOPHERPOST_LISTENERS"

_log = Logger()


@dataclass(frozen=True)
class PassedListener:
    """
    One listening socket a worker gets from the parent.

    @ivar fd: its file descriptor in the worker.
    @ivar family: its address family (C{socket.AF_INET} or C{AF_INET6}).
    @ivar role: the name of its L{gopherpost.inbound.roles.ListenerRole}.
    @ivar spec: the listener as configured (C{proxy}, description).
    """

    fd: int
    family: int
    role: str
    spec: ListenerSpec


def describePassedListeners(passed: Sequence[PassedListener]) -> dict[str, str]:
    """
    The environment that tells a worker about its sockets.
    """
    return {
        LISTENERS_VARIABLE: json.dumps(
            [
                {"fd": p.fd, "family": int(p.family), "role": p.role, "spec": asdict(p.spec)}
                for p in passed
            ]
        )
    }


def passedListeners(environ: Mapping[str, str]) -> list[PassedListener]:
    """
    The sockets the parent passed (see L{describePassedListeners}).
    """
    return [
        PassedListener(item["fd"], item["family"], item["role"], ListenerSpec(**item["spec"]))
        for item in json.loads(environ.get(LISTENERS_VARIABLE, "[]"))
    ]


class _ChildChannel(QuietAMP):
    """
    The worker's end of the channel: when the parent goes away, stop.

    @ivar onReconfigure: C{onReconfigure(variables) -> error} applies a new
        configuration (live reload); C{""} when done.
    """

    def __init__(self, reactor: Any) -> None:
        QuietAMP.__init__(self)
        self._reactor = reactor
        self.onReconfigure: Any = None

    @Reconfigure.responder
    def reconfigure(self, variables: str) -> dict:
        if self.onReconfigure is None:
            return {"error": "this worker cannot reload yet"}
        return {"error": self.onReconfigure(json.loads(variables))}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        QuietAMP.connectionLost(self, reason)
        if self._reactor.running:
            try:
                self._reactor.stop()
            except ReactorNotRunning:
                # Already stopping (SIGTERM to the process group: the
                # parent's pipe closes while this worker shuts down).
                pass


def _share(limit: int, workers: int) -> int:
    """
    A worker's part of a connection limit (0 stays unlimited).
    """
    return 0 if limit == 0 else max(1, -(-limit // workers))


def _workerSettings(settings: Any) -> Any:
    """
    C{settings} with this worker's part of the connection limits.
    """
    return replace(
        settings,
        maxConnections=_share(settings.maxConnections, settings.workers),
        maxConnectionsPerIP=_share(settings.maxConnectionsPerIP, settings.workers),
    )


def _prepareAuthReload(auth: Any, old: Any, new: Any) -> Any:
    """
    What a reload changes in this worker's authenticated submission (the
    users file and the C{SMTP_AUTH_*} settings): a callable that applies
    it, which does nothing when none of them changed.

    @raise gopherpost.config.ConfigError: the new users file is not valid.
    """
    from gopherpost.auth.service import AUTH_FIELDS

    if auth is None or all(getattr(old, f) == getattr(new, f) for f in AUTH_FIELDS):
        return lambda: None
    return auth.prepareReload(new)


def main(reactor: Any = None) -> None:
    """
    Run one worker until SIGTERM or until the parent goes away.
    """
    if reactor is None:
        from twisted.internet import reactor
    from gopherpost import dns, tls, wiring
    from gopherpost.checks.metrics import ForwardedCheckMetrics
    from gopherpost.config import ConfigError, settingsFromEnvironment
    from gopherpost.filters.inbound import makeInboundFilters
    from gopherpost.filters.metrics import AuditFilterMetrics
    from gopherpost.inbound.factory import SHUTDOWN_GRACE, ConnectionLimits
    from gopherpost.inbound.ipc import (
        ForwardingAuditLog,
        ForwardingCounters,
        ForwardingSpoolObserver,
    )
    from gopherpost.reload.parts import ListenerFactories, SwitchableResolver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    settings = _workerSettings(settingsFromEnvironment())
    passed = passedListeners(os.environ)
    spool = wiring.openSpool(settings.queuePath, reactor, recover=False)
    tlsDirectory = os.path.join(spool.stateDirectory, "tls")
    channel = _ChildChannel(reactor)
    StandardIO(channel, reactor=reactor)
    audit = ForwardingAuditLog(reactor, channel.callRemote)
    committed = ForwardingSpoolObserver(reactor, channel.callRemote, audit.flush)
    spool.addObserver(committed)
    firstResolver, dnsThreads = wiring.makeResolver(settings.dnsServers, reactor)
    resolver = SwitchableResolver(firstResolver)
    dnsThreads.start()
    # wiring: mxchecks (their state is shared through the spool's state
    # directory or Redis; their counts go to the parent's metrics page)
    counters = ForwardingCounters(reactor, channel.callRemote)
    mxChecks = wiring.makeMXChecks(
        settings, resolver, reactor, spool, ForwardedCheckMetrics(counters.add)
    )
    mxChecks.startService()
    roles = [wiring.roleByName(p.role) for p in passed]
    limits = ConnectionLimits(settings.maxConnections, settings.maxConnectionsPerIP)
    # wiring: auth (issue 15); its counter stays in this process
    auth = wiring.makeAuth(settings, spool, reactor, store=mxChecks.store)
    if auth is not None:
        auth.startService()
    # wiring: filters (built once: their settings need a restart; their
    # verdicts are counted in the parent)
    filters = makeInboundFilters(settings, reactor, AuditFilterMetrics(audit))
    filters.startService()

    def build(new: Any) -> tuple[list[Any], list[Any]]:
        contextFactory = tls.serverContextFactory(new, tlsDirectory)
        factories = wiring.smtpFactories(
            new,
            spool,
            audit,
            resolver,
            reactor,
            contextFactory,
            roles,
            limits=limits,
            auth=auth,
            # The MX checks, then the content filters, on every chain.
            extraPolicies=[*mxChecks.chainPolicies, *filters.policies],
        )
        outer = [
            wiring.listenerFactory(
                role,
                listener.spec,
                factories[role.name],
                contextFactory,
                reactor,
                new.commandTimeout,
            )
            for listener, role in zip(passed, roles)
        ]
        return list(factories.values()), outer

    def applyLimits(new: Any) -> None:
        limits.maxConnections = new.maxConnections
        limits.maxPerAddress = new.maxConnectionsPerIP

    generations = ListenerFactories(build, settings, applyLimits)
    current = [settings]

    def reconfigure(variables: dict) -> str:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_")}
        environ.update(variables)
        try:
            new = _workerSettings(settingsFromEnvironment(environ))
            apply = generations.prepareReload(new)
            applyAuth = _prepareAuthReload(auth, current[0], new)
        except ConfigError as e:
            return str(e)
        if new.dnsServers != current[0].dnsServers:
            resolver.current = dns.Resolver(new.dnsServers, reactor, threadpool=dnsThreads)
        apply()
        applyAuth()
        current[0] = new
        _log.info("Inbound worker {pid} reloaded", pid=os.getpid())
        return ""

    channel.onReconfigure = reconfigure
    ports = []
    for listener, switch in zip(passed, generations.switches):
        ports.append(reactor.adoptStreamPort(listener.fd, listener.family, switch))
        os.close(listener.fd)

    def drain() -> Any:
        busy = generations.busySessionCount
        if busy:
            _log.info(
                "Inbound worker {pid} stopping: waiting up to {grace:g} s for {count} "
                "sessions in DATA",
                pid=os.getpid(),
                grace=SHUTDOWN_GRACE,
                count=busy,
            )
        d = gatherResults([maybeDeferred(port.stopListening) for port in ports])
        d.addCallback(lambda _: gatherResults([f.drain() for f in generations.factories]))
        d.addBoth(lambda _: filters.stopService())
        d.addBoth(lambda _: committed.flush())
        d.addBoth(lambda _: mxChecks.stopService())
        d.addBoth(lambda _: counters.flush())
        d.addBoth(lambda _: dnsThreads.stop())
        if auth is not None:
            d.addBoth(lambda _: auth.stopService())
        return d

    reactor.addSystemEventTrigger("before", "shutdown", drain)
    _log.info(
        "Inbound worker {pid} accepting on {listeners}",
        pid=os.getpid(),
        listeners=", ".join(p.spec.description for p in passed),
    )
    reactor.run()


if __name__ == "__main__":
    main()
