# -*- test-case-name: tests.test_workers -*-
"""
One inbound worker process: C{python -m gopherpost.inbound.worker}.

Started by L{gopherpost.inbound.workers.WorkerPool} with the listening
socket as file descriptor 3 and an AMP channel to the parent on standard
input and output.  It accepts and spools mail exactly as the single-process
server does; the relay queue, metrics and the audit stream live in the
parent.  SIGTERM (or the parent going away) stops accepting, lets messages
in DATA finish, and exits.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import replace
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.stdio import StandardIO
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python.threadpool import ThreadPool

from gopherpost.inbound.ipc import QuietAMP

__all__ = ["LISTEN_FD", "FAMILY_VARIABLE", "main"]

#: The file descriptor of the shared listening socket.
LISTEN_FD = 3
#: Environment variable naming the socket's address family ("4" or "6").
FAMILY_VARIABLE = "GOPHERPOST_LISTEN_FAMILY"

_log = Logger()


class _ChildChannel(QuietAMP):
    """
    The worker's end of the channel: when the parent goes away, stop.
    """

    def __init__(self, reactor: Any) -> None:
        QuietAMP.__init__(self)
        self._reactor = reactor

    def connectionLost(self, reason: Any) -> None:
        QuietAMP.connectionLost(self, reason)
        if self._reactor.running:
            self._reactor.stop()


def _share(limit: int, workers: int) -> int:
    """
    A worker's part of a connection limit (0 stays unlimited).
    """
    return 0 if limit == 0 else max(1, -(-limit // workers))


def main(reactor: Any = None) -> None:
    """
    Run one worker until SIGTERM or until the parent goes away.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    from gopherpost import dns, tls
    from gopherpost.config import settingsFromEnvironment
    from gopherpost.inbound.factory import makeSMTPFactory
    from gopherpost.inbound.ipc import ForwardingAuditLog, ForwardingSpoolObserver
    from gopherpost.spool import Spool

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    settings = settingsFromEnvironment()
    settings = replace(
        settings,
        maxConnections=_share(settings.maxConnections, settings.workers),
        maxConnectionsPerIP=_share(settings.maxConnectionsPerIP, settings.workers),
    )
    spool = Spool(settings.queuePath, reactor)
    spool.open(recover=False)
    contextFactory = tls.serverContextFactory(settings, os.path.join(spool.stateDirectory, "tls"))
    channel = _ChildChannel(reactor)
    StandardIO(channel, reactor=reactor)
    audit = ForwardingAuditLog(reactor, channel.callRemote)
    committed = ForwardingSpoolObserver(reactor, channel.callRemote, audit.flush)
    spool.addObserver(committed)
    dnsThreads = ThreadPool(minthreads=0, maxthreads=dns.DNS_THREADS, name="gopherpost-dns")
    dnsThreads.start()
    resolver = dns.Resolver(settings.dnsServers, reactor, threadpool=dnsThreads)
    factory = makeSMTPFactory(settings, spool, audit, resolver, reactor, contextFactory)
    family = socket.AF_INET6 if os.environ.get(FAMILY_VARIABLE) == "6" else socket.AF_INET
    port = reactor.adoptStreamPort(LISTEN_FD, family, factory)
    os.close(LISTEN_FD)

    def drain() -> Any:
        d = maybeDeferred(port.stopListening)
        d.addCallback(lambda _: factory.drain())
        d.addBoth(lambda _: committed.flush())
        d.addBoth(lambda _: dnsThreads.stop())
        return d

    reactor.addSystemEventTrigger("before", "shutdown", drain)
    _log.info("Inbound worker {pid} accepting", pid=os.getpid())
    reactor.run()


if __name__ == "__main__":
    main()
