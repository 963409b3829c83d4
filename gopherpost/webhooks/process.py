# -*- test-case-name: tests.test_webhook_process -*-
"""
The webhook courier as a child process: C{python -m
gopherpost.webhooks.process}.

Building a message's JSON document (the C{email} package, C{policy.default})
and an HTTP request through Twisted's Agent cost about 1.3 ms of CPU per
webhook, about what accepting a small message costs.  In the server's
process that would halve SMTP throughput while webhooks are being sent; in
a child process at the lowest CPU priority (C{nice} +L{NICENESS} and
C{SCHED_IDLE}, L{lowerPriority}) it runs on another core, or when SMTP
leaves time: accepting mail always comes first, and the courier catches up when the load drops (under a load that
keeps every core busy, webhooks wait, never mail).  The server only hands
over names (a few bytes a message) and records delivery events; the
courier reads the spool itself.

L{CourierProcess} is the server's side: it starts the child with the
server's configuration, starts it again when it dies (after 1 s, doubling up
to a minute while it keeps dying), and forwards operations to it.  When the
server stops, the child is told (its standard input closes; it also stops on
SIGTERM), cancels the requests in flight (tried again at the next start)
and exits.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessExitedAlready, ReactorNotRunning
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    Logger,
    LogLevel,
    PredicateResult,
    globalLogBeginner,
)
from zope.interface import implementer

from gopherpost.priority import NICENESS, lowerPriority
from gopherpost.webhooks.channel import (
    MAX_PAGE,
    CourierSide,
    CourierUnavailable,
    Drop,
    ForwardingReporter,
    ListPending,
    RetryNow,
    ServerSide,
    SkipMessages,
    TakeEvents,
    TakeMessages,
    chunks,
)
from gopherpost.webhooks.dispatcher import IWebhookReporter
from gopherpost.webhooks.logfile import BatchedTextLog
from gopherpost.webhooks.records import EventRecord

__all__ = ["CourierProcess", "NICENESS", "lowerPriority", "main"]


_log = Logger(namespace="gopherpost.webhooks.process")

#: Seconds the courier gets to stop before it is killed.
STOP_GRACE = 10.0
#: Restart delays after the courier died: first, longest; a courier that
#: ran this long is healthy again.
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 60.0
_HEALTHY_AFTER = 60.0

#: Where the C{gopherpost} package is, so the child imports the same code.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _ToChild:
    """
    The transport the server's AMP end writes through: the child's stdin.
    """

    def __init__(self, process: Any) -> None:
        self._process = process

    def write(self, data: bytes) -> None:
        self._process.writeToChild(0, data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._process.closeStdin()

    def getPeer(self) -> str:
        return f"webhook courier {self._process.pid}"

    def getHost(self) -> str:
        return f"server {os.getpid()}"


class _Child(ProcessProtocol):
    """
    One courier process, seen from the server.
    """

    def __init__(self, owner: CourierProcess, reporter: IWebhookReporter) -> None:
        self.owner = owner
        self.channel = ServerSide(reporter)
        self.connected = False
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.channel.makeConnection(_ToChild(self.transport))
        self.connected = True

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self.channel.dataReceived(data)

    def processEnded(self, reason: Any) -> None:
        self.connected = False
        self.channel.connectionLost(reason)
        self.owner._ended(self, reason)
        self.ended.callback(None)


class CourierProcess(Service):
    """
    Runs the courier in a child process and talks to it.

    @param environ: the configuration the server was started with
        (environment, C{.env}, command-line overrides).
    @param reactor: spawns the process; time for restarts.
    @param reporter: gets the numbers the courier reports (the metrics).
    """

    name = "webhook-courier-process"

    def __init__(
        self, environ: Mapping[str, str], reactor: Any, reporter: IWebhookReporter
    ) -> None:
        self._environ = dict(environ)
        self._reactor = reactor
        self._reporter = reporter
        self._child: _Child | None = None
        self._restart: Any = None
        self._delay = RESTART_DELAY
        self._startedAt = 0.0
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """
        The courier's process id while it runs.
        """
        if self._child is None or self._child.transport is None:
            return None
        return self._child.transport.pid

    def startService(self) -> None:
        Service.startService(self)
        self._stopping = False
        self._spawn()

    def _spawn(self) -> None:
        self._restart = None
        if self._stopping:
            return
        env = dict(os.environ)
        env.update(self._environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
        child = _Child(self, self._reporter)
        self._reactor.spawnProcess(
            child,
            sys.executable,
            [sys.executable, "-m", "gopherpost.webhooks.process"],
            env=env,
            childFDs={0: "w", 1: "r", 2: 2},
        )
        self._child = child
        self._startedAt = self._reactor.seconds()

    def _ended(self, child: _Child, reason: Any) -> None:
        if self._child is child:
            self._child = None
        if self._stopping:
            return
        if self._reactor.seconds() - self._startedAt >= _HEALTHY_AFTER:
            self._delay = RESTART_DELAY
        _log.warn(
            "The webhook courier ended ({why}); starting it again in {delay:g} s",
            why=reason.getErrorMessage(),
            delay=self._delay,
        )
        self._restart = self._reactor.callLater(self._delay, self._spawn)
        self._delay = min(RESTART_DELAY_MAX, self._delay * 2)

    def stopService(self) -> Deferred[None]:
        """
        Ask the courier to stop; kill it after L{STOP_GRACE} seconds.
        """
        Service.stopService(self)
        self._stopping = True
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        child = self._child
        if child is None:
            return succeed(None)
        if child.transport is not None:
            child.transport.closeStdin()
        killer = self._reactor.callLater(STOP_GRACE, self._kill, child)

        def ended(_: object) -> None:
            if killer.active():
                killer.cancel()

        return child.ended.addCallback(ended)

    @staticmethod
    def _kill(child: _Child) -> None:
        _log.warn("The webhook courier did not stop in time; killing it")
        if child.transport is not None:
            try:
                child.transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass

    # The courier's interface

    def _send(self, command: Any, **arguments: Any) -> Deferred[Any]:
        child = self._child
        if child is None or not child.connected:
            return fail(CourierUnavailable("the webhook courier is not running; try again"))
        return child.channel.callRemote(command, **arguments)

    def _sendQuietly(self, command: Any, lines: Sequence[str], argument: str) -> None:
        # Lost if the courier is down: its next start finds them in the spool.
        for piece in chunks(lines):
            d = self._send(command, **{argument: piece})
            if d is not None:
                d.addErrback(lambda _: None)

    def takeMessages(self, messages: Sequence[tuple[str, str, float]]) -> None:
        self._sendQuietly(TakeMessages, [f"{q} {d} {r!r}" for q, d, r in messages], "messages")

    def skipMessages(self, messages: Sequence[tuple[str, str]]) -> None:
        self._sendQuietly(SkipMessages, [f"{q} {d}" for q, d in messages], "messages")

    def takeEvents(self, records: Sequence[EventRecord]) -> None:
        self._sendQuietly(TakeEvents, [r.toJSON() for r in records], "events")

    def listPending(
        self, kind: str | None = None, offset: int = 0, limit: int = MAX_PAGE
    ) -> Deferred[tuple[int, list[dict[str, Any]]]]:
        arguments: dict[str, Any] = {"offset": offset, "limit": limit}
        if kind is not None:
            arguments["kind"] = kind
        d = self._send(ListPending, **arguments)
        return d.addCallback(lambda answer: (answer["total"], json.loads(answer["items"])))

    def retryNow(self, ids: Sequence[str] | None = None, kind: str | None = None) -> Deferred[int]:
        arguments: dict[str, Any] = {"ids": json.dumps(None if ids is None else list(ids))}
        if kind is not None:
            arguments["kind"] = kind
        return self._send(RetryNow, **arguments).addCallback(lambda answer: answer["count"])

    def drop(self, ids: Sequence[str], kind: str | None = None) -> Deferred[int]:
        arguments: dict[str, Any] = {"ids": json.dumps(list(ids))}
        if kind is not None:
            arguments["kind"] = kind
        return self._send(Drop, **arguments).addCallback(lambda answer: answer["count"])


#: Log namespaces whose chatter (a line per HTTP connection) is left out.
_QUIET_NAMESPACES = ("twisted.web.client._HTTP11ClientFactory",)


@implementer(ILogFilterPredicate)
class _Chatter:
    """
    Leaves out informational events of L{_QUIET_NAMESPACES}.
    """

    def __call__(self, event: dict[str, Any]) -> PredicateResult:
        if event.get("log_namespace") in _QUIET_NAMESPACES and event.get("log_level") in (
            LogLevel.debug,
            LogLevel.info,
        ):
            return PredicateResult.no
        return PredicateResult.maybe


def _quietObserver(observer: ILogObserver) -> ILogObserver:
    """
    The courier's log: C{observer} without Twisted's line for every HTTP
    connection the pool opens or closes.
    """
    return FilteringLogObserver(observer, [_Chatter()])


def main(reactor: Any = None) -> None:
    """
    Run the courier until the server goes away or SIGTERM.
    """
    if reactor is None:
        from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    from gopherpost.config import settingsFromEnvironment
    from gopherpost.spool import Spool
    from gopherpost.webhooks.courier import LocalCourier
    from gopherpost.webhooks.records import WebhookStore

    # Lines in batches: one per attempt would be a write and a wake-up of
    # the journal each.
    log = BatchedTextLog(sys.stderr, reactor)
    globalLogBeginner.beginLoggingTo([_quietObserver(log)], redirectStandardIO=False)
    lowerPriority()
    settings = settingsFromEnvironment(os.environ)
    spool = Spool(settings.queuePath, reactor)
    spool.open(recover=False)
    store = WebhookStore(spool.stateDirectory)

    def stopOnce() -> None:
        # SIGTERM and the server closing the channel often come together
        # (systemd signals the whole control group): stop once, quietly.
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    def lost() -> None:
        reactor.callFromThread(stopOnce)

    def stopSignalled(number: int) -> None:
        _log.info("Webhook courier received signal {number}; stopping", number=number)
        stopOnce()

    def signalled(number: int, frame: Any) -> None:
        # Nothing but callFromThread here: a handler runs between any two
        # bytecodes of the main thread, in the middle of logging too.
        reactor.callFromThread(stopSignalled, number)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signalled)

    channel = CourierSide(lost)
    reporter = ForwardingReporter(reactor, channel.callRemote)
    courier = LocalCourier(settings, spool, reactor, store, reporter)
    channel.courier = courier
    StandardIO(channel, reactor=reactor)

    def stop() -> Deferred[Any]:
        d = courier.stopService()
        d.addBoth(lambda _: reporter.flush())
        return d

    reactor.callWhenRunning(courier.startService)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    _log.info(
        "Webhook courier {pid} posting to {targets}",
        pid=os.getpid(),
        targets=", ".join(f"{k}={t.displayURL}" for k, t in courier.targets.items()),
    )
    reactor.run(installSignalHandlers=False)
    log.flush()


if __name__ == "__main__":
    main()
