# -*- test-case-name: tests.test_index_service -*-
"""
The index worker process: C{python -m gopherpost.index.worker --spool DIR
--database FILE [--everything]}.

Reading and indexing a message costs CPU (parsing MIME in Python); in a
process of its own it runs on another core than the SMTP server and never
competes with it for the interpreter lock; at the lowest CPU priority
(L{gopherpost.priority.lowerPriority}) it indexes with the CPU time SMTP
acceptance leaves over.  It speaks AMP with the server
on its standard input and output (L{gopherpost.index.protocol}), logs to
its standard error, and ends when its standard input closes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import connectionDone
from twisted.logger import ILogFilterPredicate
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.index.indexer import Indexer, IndexPolicy
from gopherpost.index.loop import IIndexListener, IndexerLoop
from gopherpost.index.protocol import MAX_ITEMS, Indexed, IndexMessages, Ready, decodeItem

__all__ = ["WorkerChannel", "main"]


@implementer(IIndexListener)
class WorkerChannel(amp.AMP):
    """
    The worker's end of the channel: commands in, the loop's news out.
    """

    def __init__(self, indexer: Indexer, reactor: Any) -> None:
        super().__init__()
        self._reactor = reactor
        self.loop = IndexerLoop(indexer, maybeDeferred, self, reactor)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.loop.start()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        d = self.loop.stop()
        d.addBoth(lambda _: self._reactor.stop() if self._reactor.running else None)

    @IndexMessages.responder
    def indexMessages(self, items: list[str]) -> dict[str, Any]:
        self.loop.submit([decodeItem(item) for item in items])
        return {}

    # IIndexListener

    def ready(self, rebuilt: bool) -> None:
        self.callRemote(Ready, rebuilt=rebuilt)

    def indexed(self, ids: list[str], catchUp: bool) -> None:
        for i in range(0, len(ids), MAX_ITEMS):
            self.callRemote(Indexed, ids=ids[i : i + MAX_ITEMS], catchUp=catchUp)


@implementer(ILogFilterPredicate)
def _worthLogging(event: dict[str, Any]) -> Any:
    """
    Our own events, and anyone's warnings and errors (not AMP's connection
    chatter or the reactor's goodbye).
    """
    from twisted.logger import LogLevel, PredicateResult

    level = event.get("log_level")
    namespace = str(event.get("log_namespace", ""))
    if namespace.startswith("gopherpost") or (level is not None and level >= LogLevel.warn):
        return PredicateResult.yes
    if event.get("isError"):
        return PredicateResult.yes
    return PredicateResult.no


def main(argv: list[str] | None = None) -> None:
    """
    Run the worker until its standard input closes.
    """
    parser = argparse.ArgumentParser(prog="gopherpost.index.worker")
    parser.add_argument("--spool", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--everything", action="store_true")
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO
    from twisted.logger import FilteringLogObserver, globalLogBeginner, textFileLogObserver

    from gopherpost.priority import lowerPriority
    from gopherpost.spool import Spool

    lowerPriority()
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [_worthLogging])],
        redirectStandardIO=False,
    )
    spool = Spool(args.spool, reactor)
    indexer = Indexer(spool, args.database, IndexPolicy(everything=args.everything))
    StandardIO(WorkerChannel(indexer, reactor))
    reactor.run()
    indexer.close()


if __name__ == "__main__":
    main()
