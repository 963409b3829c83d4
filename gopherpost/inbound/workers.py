# -*- test-case-name: tests.test_workers -*-
"""
Inbound worker processes (C{SMTP_WORKERS} > 1): the Postfix split.

The parent binds every SMTP listener (before privileges are dropped; a
C{systemd:} listener is the socket systemd passed) and starts one
L{gopherpost.inbound.worker} process per worker, each accepting on all of
those sockets, wrapping each as its listener says (implicit TLS, PROXY
protocol) exactly as the single process does, and writing to the spool with
the same durability.  Workers tell the parent about spooled mail and forward
their audit events over AMP, so the relay queue, health, metrics and the
audit stream in the parent see the whole group.  A worker that dies is
started again.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from zope.interface import implementer

from gopherpost.config import ConfigError
from gopherpost.inbound.factory import SHUTDOWN_GRACE
from gopherpost.inbound.ipc import ParentChannel, Reconfigure
from gopherpost.inbound.roles import ListenerRole
from gopherpost.inbound.worker import FIRST_LISTEN_FD, PassedListener, describePassedListeners
from gopherpost.interfaces import IAuditLog
from gopherpost.listeners.endpoints import ListenerSpec
from gopherpost.listeners.sockets import (
    SOCKET_ACTIVATION_VARIABLES,
    InheritedSockets,
    openListeningSocket,
)

__all__ = ["WorkerPool", "RESTART_DELAY"]

_log = Logger()

#: Seconds before a worker that died is started again.
RESTART_DELAY = 1.0


@implementer(ITransport)
class _ToChild:
    """
    The transport an AMP channel writes through: the worker's standard input.
    """

    def __init__(self, process: Any) -> None:
        self._process = process

    def write(self, data: bytes) -> None:
        self._process.writeToChild(0, data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._process.closeStdin()

    def getPeer(self) -> Any:
        return f"worker {self._process.pid}"

    def getHost(self) -> Any:
        return f"parent {os.getpid()}"


class _WorkerProcess(ProcessProtocol):
    """
    One worker, seen from the parent.
    """

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.channel = ParentChannel(pool.audit, pool.spool, pool.counters)
        self.ended: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.channel.makeConnection(_ToChild(self.transport))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self.channel.dataReceived(data)

    def processEnded(self, reason: Any) -> None:
        self.channel.connectionLost(reason)
        self.pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """
    Runs C{workers} inbound worker processes on every SMTP listener.

    @param workers: how many (C{SMTP_WORKERS}).
    @param listeners: each listener with its role.
    @param inherited: the sockets systemd passed (for C{systemd:} listeners).
    @param environ: the configuration (environment with C{.env} and
        command-line overrides) the workers are started with.
    @param counters: where the workers' counter increments go, by source
        (C{{"checks": mxChecks.metrics}}).
    """

    name = "inbound-workers"

    def __init__(
        self,
        workers: int,
        listeners: Sequence[tuple[ListenerRole, ListenerSpec]],
        inherited: InheritedSockets,
        environ: Mapping[str, str],
        audit: IAuditLog,
        spool: Any,
        reactor: Any,
        grace: float = SHUTDOWN_GRACE,
        counters: Mapping[str, Any] | None = None,
    ) -> None:
        self.workers = workers
        self.counters = dict(counters or {})
        self.listeners = list(listeners)
        self.audit = audit
        self.spool = spool
        self._inherited = inherited
        self._environ = {k: v for k, v in environ.items() if k not in SOCKET_ACTIVATION_VARIABLES}
        self._reactor = reactor
        self._grace = grace
        self._sockets: list[socket.socket] = []
        self._workers: dict[int, _WorkerProcess] = {}
        self._restarts: dict[int, Any] = {}
        self._stopping = False

    @property
    def listening(self) -> bool:
        """
        Whether the sockets are bound and at least one worker is running.
        """
        return bool(self._sockets) and bool(self._workers)

    def notReady(self) -> str | None:
        """
        Why the inbound side is not ready, or L{None}.
        """
        if not self._sockets:
            return "SMTP listener is not bound: " + ", ".join(
                f"{spec.description} ({spec.variable})" for _, spec in self.listeners
            )
        if not self._workers:
            return "no inbound worker is running"
        return None

    @property
    def workerPIDs(self) -> list[int]:
        """
        The process ids of the running workers.
        """
        return [
            w.transport.pid
            for w in self._workers.values()
            if w.transport is not None and w.transport.pid
        ]

    def privilegedStartService(self) -> None:
        """
        Bind every listener while we may still bind port 25.

        @raise ConfigError: one cannot be bound (none is bound then).
        """
        self._bind()
        Service.privilegedStartService(self)

    def _bind(self) -> None:
        if self._sockets:
            return
        sockets = []
        try:
            for _, spec in self.listeners:
                sockets.append(openListeningSocket(spec, self._inherited))
        except ConfigError:
            for sock in sockets:
                sock.close()
            raise
        self._sockets = sockets

    def startService(self) -> None:
        """
        Start every worker.
        """
        self._bind()
        Service.startService(self)
        self._stopping = False
        for index in range(self.workers):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping or not self._sockets:
            return
        worker = _WorkerProcess(self, index)
        env = {k: v for k, v in os.environ.items() if k not in SOCKET_ACTIVATION_VARIABLES}
        env.update(self._environ)
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: 2}
        passed = []
        for offset, ((role, spec), sock) in enumerate(zip(self.listeners, self._sockets)):
            fd = FIRST_LISTEN_FD + offset
            childFDs[fd] = sock.fileno()
            passed.append(PassedListener(fd, sock.family, role.name, spec))
        env.update(describePassedListeners(passed))
        self._reactor.spawnProcess(
            worker,
            sys.executable,
            [sys.executable, "-m", "gopherpost.inbound.worker"],
            env=env,
            childFDs=childFDs,
        )
        self._workers[index] = worker

    def reconfigure(self, variables: Mapping[str, str]) -> Deferred:
        """
        Live reload (issue 14): tell every worker the new C{SMTP_*}
        variables (workers started later get them too).

        @return: fires when every worker answered; a worker that could not
            apply them is logged.
        """
        configuration = {k: v for k, v in variables.items() if k.startswith("SMTP_")}
        self._environ = {k: v for k, v in self._environ.items() if not k.startswith("SMTP_")}
        self._environ.update(configuration)
        encoded = json.dumps(configuration)
        calls = []
        for worker in list(self._workers.values()):
            d = worker.channel.callRemote(Reconfigure, variables=encoded)
            d.addCallback(self._reconfigured, worker)
            d.addErrback(self._reconfigureFailed, worker)
            calls.append(d)
        return DeferredList(calls).addCallback(lambda _: None)

    def _reconfigured(self, answer: dict, worker: _WorkerProcess) -> None:
        if answer.get("error"):
            _log.error(
                "Inbound worker {index} could not reload: {error}",
                index=worker.index,
                error=answer["error"],
            )

    def _reconfigureFailed(self, failure: Any, worker: _WorkerProcess) -> None:
        _log.error(
            "Inbound worker {index} could not be told to reload: {error}",
            index=worker.index,
            error=failure.getErrorMessage(),
        )

    def _ended(self, worker: _WorkerProcess, reason: Any) -> None:
        if self._workers.get(worker.index) is worker:
            del self._workers[worker.index]
        if self._stopping:
            return
        _log.warn(
            "Inbound worker {index} ended ({why}); starting it again",
            index=worker.index,
            why=reason.getErrorMessage(),
        )
        self._restarts[worker.index] = self._reactor.callLater(
            RESTART_DELAY, self._spawn, worker.index
        )

    def stopService(self) -> Deferred:
        """
        Ask every worker to finish (SIGTERM: messages in DATA complete),
        kill those still running after the grace period, close the sockets.
        """
        Service.stopService(self)
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        # Our copies of the sockets go first: once the workers close theirs,
        # new connections are refused instead of queued for nobody.
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()
        workers = list(self._workers.values())
        for worker in workers:
            _signal(worker, "TERM")
        if not workers:
            return succeed(None)

        def killAll() -> None:
            for worker in workers:
                _signal(worker, "KILL")

        killer = self._reactor.callLater(self._grace + 5, killAll)

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()

        return DeferredList([worker.ended for worker in workers]).addCallback(done)


def _signal(worker: _WorkerProcess, name: str) -> None:
    if worker.transport is None:
        return
    try:
        worker.transport.signalProcess(name)
    except Exception:
        pass
