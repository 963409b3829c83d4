# -*- test-case-name: tests.test_index_service -*-
"""
The message index inside the server: a spool observer that hands each
committed message to the indexer, and the threads that read and change the
index for the API.

The indexer runs in a worker process of its own (L{ProcessBackend}; see
L{gopherpost.index.worker}), so an SMTP C{250} never waits for it and the
parsing never competes with the SMTP server for the interpreter lock.
L{messageCommitted} only queues the message; the queue goes to the worker
at the next turn of the reactor, so one group commit of the spool becomes
one command.  A worker that dies is started again; at every start it
catches up with the spool, so nothing committed meanwhile is missed.

Reads run in a small thread pool, each thread with its own connection;
writes (read flags, tags, deletions) in one thread of their own.  Both
wait for the worker's L{Ready}: until then L{IndexService.read} fails with
L{IndexNotReady}.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from gopherpost.index.database import IndexDatabase
from gopherpost.index.indexer import Indexer, IndexPolicy, indexPath
from gopherpost.index.loop import IIndexListener, IndexerLoop
from gopherpost.index.protocol import MAX_ITEMS, Indexed, IndexMessages, Ready, encodeItem
from gopherpost.interfaces import ISpoolObserver
from gopherpost.spool import Envelope, Spool

__all__ = [
    "IIndexBackend",
    "IndexNotReady",
    "IndexService",
    "ProcessBackend",
    "ThreadBackend",
    "RESTART_DELAY",
    "SUBMIT_DELAY",
]

_log = Logger()

#: Seconds before a worker that died is started again.
RESTART_DELAY = 1.0
#: Seconds a stopping worker gets before it is killed.
STOP_GRACE = 10.0

#: Seconds committed messages wait in the server before they go to the
#: worker, in one command: under load a command per group commit cost the
#: worker a tenth of its CPU in AMP parsing, for batches that it gathers
#: anyway (L{gopherpost.index.loop.GATHER_DELAY}).
SUBMIT_DELAY = 0.1


class AcceptedStats:
    """
    What the spool accepted since start-up (for the API's C{info}).
    """

    def __init__(self) -> None:
        self.accepted = 0
        self.acceptedSize = 0


class IndexNotReady(Exception):
    """
    The index is not open yet (the server is starting).
    """


class IIndexBackend(Interface):
    """
    Where the indexer runs.
    """

    def start(listener: IIndexListener) -> None:
        """
        Start indexing; tell C{listener} what happens.
        """

    def submit(items: list[tuple[str, str]]) -> None:
        """
        Index these committed messages (C{(dateDirectory, queueId)}).
        """

    def stop() -> Deferred:
        """
        Stop; fires when the indexer has finished.
        """


@implementer(IIndexBackend)
class ThreadBackend:
    """
    The indexer in a thread of this process (tests, and a fallback).
    """

    def __init__(self, spool: Spool, databasePath: str, policy: IndexPolicy, reactor: Any) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=1, name="gopherpost-indexer")
        self._indexer = Indexer(spool, databasePath, policy)
        self._loop: IndexerLoop | None = None

    def _run(self, f: Callable[..., Any], *args: Any) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def start(self, listener: IIndexListener) -> None:
        self._pool.start()
        self._loop = IndexerLoop(self._indexer, self._run, listener, self._reactor)
        self._loop.start()

    def submit(self, items: list[tuple[str, str]]) -> None:
        if self._loop is not None:
            self._loop.submit(items)

    def stop(self) -> Deferred:
        loop, self._loop = self._loop, None
        if loop is None:
            return succeed(None)

        def stopped(_: object) -> Deferred:
            return self._run(self._indexer.close).addBoth(lambda _: self._pool.stop())

        return loop.stop().addCallback(stopped)


class _ToChild:
    """
    What the AMP channel writes through: the worker's standard input.
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
        return "index worker"

    def getHost(self) -> str:
        return "server"


class _ParentChannel(amp.AMP):
    def __init__(self, listener: IIndexListener) -> None:
        super().__init__()
        self._listener = listener

    @Ready.responder
    def ready(self, rebuilt: bool) -> dict[str, Any]:
        self._listener.ready(rebuilt)
        return {}

    @Indexed.responder
    def indexed(self, ids: list[str], catchUp: bool) -> dict[str, Any]:
        self._listener.indexed(ids, catchUp)
        return {}


class _WorkerProcess(ProcessProtocol):
    def __init__(self, backend: ProcessBackend, listener: IIndexListener) -> None:
        self.backend = backend
        self.channel = _ParentChannel(listener)
        self.ended: Deferred = Deferred()
        self.connected = False

    def connectionMade(self) -> None:
        self.connected = True
        self.channel.makeConnection(_ToChild(self.transport))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self.channel.dataReceived(data)

    def processEnded(self, reason: Any) -> None:
        self.connected = False
        self.channel.connectionLost(reason)
        self.backend._ended(self, reason)
        self.ended.callback(None)


def _packageRoot() -> str:
    import gopherpost

    return os.path.dirname(os.path.dirname(os.path.abspath(gopherpost.__file__)))


@implementer(IIndexBackend)
class ProcessBackend:
    """
    The indexer in a worker process (see L{gopherpost.index.worker}).
    """

    def __init__(
        self,
        spoolPath: str,
        databasePath: str,
        policy: IndexPolicy,
        reactor: Any,
        restartDelay: float = RESTART_DELAY,
    ) -> None:
        self._spoolPath = spoolPath
        self._databasePath = databasePath
        self._policy = policy
        self._reactor = reactor
        self._restartDelay = restartDelay
        self._worker: _WorkerProcess | None = None
        self._listener: IIndexListener | None = None
        self._restart: Any = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """
        The worker's process id, while it runs.
        """
        worker = self._worker
        if worker is None or worker.transport is None:
            return None
        return worker.transport.pid

    def start(self, listener: IIndexListener) -> None:
        self._listener = listener
        self._stopping = False
        self._spawn()

    def _spawn(self) -> None:
        self._restart = None
        if self._stopping or self._listener is None:
            return
        args = [
            sys.executable,
            "-m",
            "gopherpost.index.worker",
            "--spool",
            self._spoolPath,
            "--database",
            self._databasePath,
        ]
        if self._policy.everything:
            args.append("--everything")
        env = dict(os.environ)
        root = _packageRoot()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        worker = _WorkerProcess(self, self._listener)
        self._reactor.spawnProcess(
            worker, sys.executable, args, env=env, childFDs={0: "w", 1: "r", 2: 2}
        )
        self._worker = worker

    def _ended(self, worker: _WorkerProcess, reason: Any) -> None:
        if self._worker is worker:
            self._worker = None
        if self._stopping:
            return
        _log.warn(
            "Message index worker ended ({why}); starting it again",
            why=reason.getErrorMessage(),
        )
        self._restart = self._reactor.callLater(self._restartDelay, self._spawn)

    def submit(self, items: list[tuple[str, str]]) -> None:
        worker = self._worker
        if worker is None or not worker.connected:
            # The next worker catches up with the spool at its start.
            return
        encoded = [encodeItem(d, q) for d, q in items]
        for i in range(0, len(encoded), MAX_ITEMS):
            worker.channel.callRemote(IndexMessages, items=encoded[i : i + MAX_ITEMS])

    def stop(self) -> Deferred:
        self._stopping = True
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        self._restart = None
        worker = self._worker
        if worker is None:
            return succeed(None)
        if worker.transport is not None:
            worker.transport.closeStdin()
        killer = self._reactor.callLater(STOP_GRACE, _kill, worker)

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()

        return worker.ended.addCallback(done)


def _kill(worker: _WorkerProcess) -> None:
    try:
        if worker.transport is not None:
            worker.transport.signalProcess("KILL")
    except Exception:
        pass


class _Connections:
    """
    One connection per thread, opened on first use and again after the
    index was (re)opened by the indexer (a new generation).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        self.generation = 0

    def get(self) -> IndexDatabase:
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == self.generation:
            return held[1]
        if held is not None:
            try:
                held[1].close()
            except Exception:
                pass
        database = IndexDatabase.open(self._path, create=False)
        self._local.held = (self.generation, database)
        return database


@implementer(ISpoolObserver, IIndexListener)
class IndexService(Service):
    """
    The message index of one spool.

    @ivar isReady: the index may be read.
    @ivar rebuilding: the index was made anew at start-up and is still
        catching up with the spool.
    """

    name = "message-index"

    def __init__(
        self,
        spool: Spool,
        reactor: Any,
        policy: IndexPolicy,
        backend: IIndexBackend | None = None,
        readThreads: int = 2,
    ) -> None:
        self.spool = spool
        self.policy = policy
        self.databasePath = indexPath(spool.stateDirectory)
        self._reactor = reactor
        self.backend = backend or ProcessBackend(spool.path, self.databasePath, policy, reactor)
        self._readers = _Connections(self.databasePath)
        self._writer = _Connections(self.databasePath)
        self._readPool = ThreadPool(
            minthreads=0, maxthreads=readThreads, name="gopherpost-index-read"
        )
        self._writePool = ThreadPool(minthreads=0, maxthreads=1, name="gopherpost-index-write")
        self._pending: list[tuple[str, str]] = []
        self._flush: Any = None
        self._listeners: list[IIndexListener] = []
        self._readyWaiters: list[Deferred] = []
        self.isReady = False
        self.rebuilding = False
        self.stats = AcceptedStats()

    def addListener(self, listener: IIndexListener) -> None:
        """
        Tell C{listener} when the index opens and what it indexed.
        """
        self._listeners.append(listener)

    def whenReady(self) -> Deferred:
        """
        Fires once the index may be read.
        """
        if self.isReady:
            return succeed(None)
        d: Deferred = Deferred()
        self._readyWaiters.append(d)
        return d

    def startService(self) -> None:
        Service.startService(self)
        self._readPool.start()
        self._writePool.start()
        self.backend.start(self)

    def stopService(self) -> Deferred:
        if not self.running:
            return succeed(None)
        Service.stopService(self)
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self.isReady = False

        def stopped(_: object) -> None:
            self._readPool.stop()
            self._writePool.stop()

        return self.backend.stop().addBoth(stopped)

    # -- ISpoolObserver ----------------------------------------------------

    def messageCommitted(self, envelope: Envelope) -> None:
        """
        Queue the message for the indexer (nothing more on this path).
        """
        self.stats.accepted += 1
        self.stats.acceptedSize += envelope.size
        if not self.policy.wants(envelope):
            return
        self._pending.append((envelope.dateDirectory, envelope.queueId))
        if self._flush is None:
            self._flush = self._reactor.callLater(SUBMIT_DELAY, self._submit)

    def _submit(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, []
        if pending:
            self.backend.submit(pending)

    # -- IIndexListener (from the indexer) ----------------------------------

    def ready(self, rebuilt: bool) -> None:
        self._readers.generation += 1
        self._writer.generation += 1
        self.isReady = True
        self.rebuilding = rebuilt
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            d.callback(None)
        for listener in list(self._listeners):
            _tell(listener.ready, rebuilt)

    def indexed(self, ids: list[str], catchUp: bool) -> None:
        for listener in list(self._listeners):
            _tell(listener.indexed, ids, catchUp)

    # -- access for the API ------------------------------------------------

    def read(self, f: Callable[..., Any], *args: Any) -> Deferred:
        """
        Run C{f(database, *args)} in a reader thread.
        """
        if not self.isReady:
            return fail(IndexNotReady("the message index is starting"))
        connections = self._readers
        return deferToThreadPool(self._reactor, self._readPool, lambda: f(connections.get(), *args))

    def write(self, f: Callable[..., Any], *args: Any) -> Deferred:
        """
        Run C{f(database, *args)} in the writer thread.
        """
        if not self.isReady:
            return fail(IndexNotReady("the message index is starting"))
        connections = self._writer
        return deferToThreadPool(
            self._reactor, self._writePool, lambda: f(connections.get(), *args)
        )


def _tell(f: Callable[..., Any], *args: Any) -> None:
    try:
        f(*args)
    except Exception:
        _log.failure("Message index listener {f!r} failed", f=f)
