# -*- test-case-name: tests.test_workers -*-
"""
Inbound worker processes (C{SMTP_WORKERS} > 1): the Postfix split.

The parent binds the SMTP socket (before privileges are dropped) and starts
one L{gopherpost.inbound.worker} process per worker, each accepting on that
shared socket and writing to the spool with the same durability as a single
process.  Workers tell the parent about spooled mail and forward their audit
events over AMP, so the relay queue, health, metrics and the audit stream
in the parent see the whole group.  A worker that dies is started again.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from zope.interface import implementer

from gopherpost.config import ConfigError, Settings
from gopherpost.inbound.factory import LISTEN_BACKLOG, SHUTDOWN_GRACE
from gopherpost.inbound.ipc import ParentChannel
from gopherpost.inbound.worker import FAMILY_VARIABLE, LISTEN_FD
from gopherpost.interfaces import IAuditLog

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

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._process.closeStdin()

    def getPeer(self) -> str:
        return f"worker {self._process.pid}"

    def getHost(self) -> str:
        return f"parent {os.getpid()}"


class _WorkerProcess(ProcessProtocol):
    """
    One worker, seen from the parent.
    """

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.channel = ParentChannel(pool.audit, pool.spool)
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
    Runs C{settings.workers} inbound worker processes on one SMTP socket.

    @param environ: the configuration (environment with C{.env} and
        command-line overrides) the workers are started with.
    @param address: the IP address to listen on (C{::} for every address).
    """

    name = "inbound-workers"

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str],
        audit: IAuditLog,
        spool: Any,
        reactor: Any,
        address: str,
        grace: float = SHUTDOWN_GRACE,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.spool = spool
        self._environ = dict(environ)
        self._reactor = reactor
        self._address = address
        self._grace = grace
        self._socket: socket.socket | None = None
        self._workers: dict[int, _WorkerProcess] = {}
        self._restarts: dict[int, Any] = {}
        self._stopping = False

    @property
    def listening(self) -> bool:
        """
        Whether the socket is bound and at least one worker is running.
        """
        return self._socket is not None and bool(self._workers)

    @property
    def workerPIDs(self) -> list[int]:
        """
        The process ids of the running workers.
        """
        return [w.transport.pid for w in self._workers.values() if w.transport.pid]

    def privilegedStartService(self) -> None:
        """
        Bind the SMTP port while we may still bind port 25.
        """
        self._bind()
        Service.privilegedStartService(self)

    def _bind(self) -> None:
        if self._socket is not None:
            return
        family = socket.AF_INET6 if ":" in self._address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._address, self.settings.port))
            sock.listen(LISTEN_BACKLOG)
        except OSError as e:
            sock.close()
            raise ConfigError(
                "SMTP_PORT",
                f"cannot listen on [{self._address}]:{self.settings.port}: {e.strerror}",
            ) from None
        sock.setblocking(False)
        self._socket = sock

    def startService(self) -> None:
        """
        Start every worker.
        """
        self._bind()
        Service.startService(self)
        self._stopping = False
        for index in range(self.settings.workers):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping or self._socket is None:
            return
        worker = _WorkerProcess(self, index)
        env = dict(os.environ)
        env.update(self._environ)
        env[FAMILY_VARIABLE] = "6" if self._socket.family == socket.AF_INET6 else "4"
        self._reactor.spawnProcess(
            worker,
            sys.executable,
            [sys.executable, "-m", "gopherpost.inbound.worker"],
            env=env,
            childFDs={0: "w", 1: "r", 2: 2, LISTEN_FD: self._socket.fileno()},
        )
        self._workers[index] = worker

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
        kill those still running after the grace period, close the socket.
        """
        Service.stopService(self)
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        # Our copy of the socket goes first: once the workers close theirs,
        # new connections are refused instead of queued for nobody.
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        workers = list(self._workers.values())
        for worker in workers:
            _signal(worker, "TERM")
        if not workers:
            return succeed(None)
        killer = self._reactor.callLater(
            self._grace + 5, lambda: [_signal(w, "KILL") for w in workers]
        )

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()

        return DeferredList([worker.ended for worker in workers]).addCallback(done)


def _signal(worker: _WorkerProcess, name: str) -> None:
    try:
        worker.transport.signalProcess(name)
    except Exception:
        pass
