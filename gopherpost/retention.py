# -*- test-case-name: tests.test_retention -*-
"""
Spool retention: delivered mail leaves the spool, local mail is pruned
when asked.

  - A message whose recipients are all remote and all final (delivered or
    bounced: the relay renamed its state C{<queueid>.relayed}) is removed
    C{SMTP_KEEP_DELIVERED} after it became final (default 0: at the next
    sweep).
  - A message with a local recipient is the spool's product and is kept,
    unless C{SMTP_RETENTION_DAYS} (older messages are removed) or
    C{SMTP_RETENTION_MAX_MESSAGES} (the oldest beyond that many are
    removed) say otherwise.
  - A message with a remote recipient still pending (C{<queueid>.relay},
    or no relay state yet) is never removed.

Removing a message removes its envelope first (the commit record: without
it, nothing reads the rest), then its relay state, then its content.  An
empty date directory older than yesterday is removed too, with any
content files a crash left there without an envelope.

The sweep runs every L{SWEEP_INTERVAL} seconds in the background: every
file-system call runs in the thread pool, at most L{BATCH} messages per
step, and nothing of it is kept on disk, so a restart simply sweeps again.
What is known about kept messages (which have local recipients) is cached,
so that a large local spool costs one directory listing per sweep and per
day, not one read per message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from gopherpost.config import Settings
from gopherpost.reload.interfaces import IReconfigurable
from gopherpost.reload.parts import RETENTION_FIELDS
from gopherpost.spool import Envelope

__all__ = [
    "SWEEP_INTERVAL",
    "BATCH",
    "RetentionPolicy",
    "RetentionService",
    "SweepResult",
    "removeMessage",
]

_log = Logger()

#: Seconds between two sweeps (and before the first).
SWEEP_INTERVAL = 60.0
#: Messages examined or removed in one thread step at most.
BATCH = 200
_DAY = 86400.0


@dataclass(frozen=True)
class RetentionPolicy:
    """
    What retention keeps.

    @ivar keepDelivered: seconds a finished remote-only message stays.
    @ivar retentionDays: local messages older than this many days go (0:
        kept).
    @ivar maxMessages: local messages beyond this many go, oldest first (0:
        no limit).
    """

    keepDelivered: float = 0.0
    retentionDays: int = 0
    maxMessages: int = 0

    @classmethod
    def fromSettings(cls, settings: Settings) -> RetentionPolicy:
        """
        The policy C{settings} ask for.
        """
        return cls(settings.keepDelivered, settings.retentionDays, settings.retentionMaxMessages)


@dataclass
class SweepResult:
    """
    What one sweep removed.
    """

    delivered: int = 0
    expired: int = 0
    overLimit: int = 0
    leftovers: int = 0
    directories: int = 0

    def __bool__(self) -> bool:
        return bool(self.delivered or self.expired or self.overLimit or self.leftovers)

    def describe(self, policy: RetentionPolicy) -> str:
        """
        The log line.
        """
        parts = []
        if self.delivered:
            parts.append(f"{self.delivered} delivered or bounced messages")
        if self.expired:
            parts.append(f"{self.expired} local messages older than {policy.retentionDays} days")
        if self.overLimit:
            parts.append(
                f"{self.overLimit} local messages beyond SMTP_RETENTION_MAX_MESSAGES="
                f"{policy.maxMessages}"
            )
        if self.leftovers:
            parts.append(f"{self.leftovers} files a crash left without an envelope")
        return "Retention removed " + ", ".join(parts) + " from the spool"


@dataclass(frozen=True)
class _Facts:
    """
    What never changes about a message: from its envelope.
    """

    hasLocal: bool
    hasRemote: bool
    received: float


@dataclass
class _Message:
    dateDirectory: str
    queueId: str
    envelope: bool = False
    pending: bool = False
    finished: bool = False
    files: list[str] = field(default_factory=list)


def _isDateDirectory(name: str) -> bool:
    return len(name) == 10 and name[4] == "-" and name[7] == "-" and name.replace("-", "").isdigit()


def removeMessage(directory: str, queueId: str, names: list[str]) -> None:
    """
    Remove one message's files from C{directory}: the envelope first, then
    the relay state, then the rest (content, other parts' side files).
    Blocking.

    @param names: the message's file names in C{directory}.
    """

    def rank(name: str) -> int:
        if name.endswith(".envelope"):
            return 0
        if name.endswith((".relay", ".relayed")):
            return 1
        return 2

    for name in sorted(names, key=rank):
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass


class _Sweep:
    """
    One sweep's work, done step by step in a thread.
    """

    def __init__(
        self,
        path: str,
        policy: RetentionPolicy,
        now: float,
        facts: dict[str, _Facts],
        owed: Callable[[str, str, float], bool] | None = None,
    ) -> None:
        self.path = path
        self.owed = owed
        self.policy = policy
        self.now = now
        self.facts = facts
        self.seen: set[str] = set()
        self.result = SweepResult()
        #: Local messages that may go, oldest first, and how many local
        #: messages there are in all.
        self.prunable: list[tuple[str, str, list[str]]] = []
        self.localCount = 0
        self.removals: list[tuple[str, str, list[str], str]] = []
        today = time.strftime("%Y-%m-%d", time.gmtime(now))
        yesterday = time.strftime("%Y-%m-%d", time.gmtime(now - _DAY))
        self.recent = {today, yesterday}

    def directories(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.path) if _isDateDirectory(n))
        except FileNotFoundError:
            return []

    def scan(self, dateDirectory: str) -> Iterator[None]:
        """
        Classify the messages of one directory, reading at most L{BATCH}
        envelopes per step (each C{yield} ends a step).
        """
        directory = os.path.join(self.path, dateDirectory)
        try:
            names = os.listdir(directory)
        except OSError:
            return
        messages: dict[str, _Message] = {}
        for name in names:
            queueId, suffix = _split(name)
            if queueId is None:
                continue
            message = messages.get(queueId)
            if message is None:
                message = messages[queueId] = _Message(dateDirectory, queueId)
            message.files.append(name)
            if suffix == ".envelope":
                message.envelope = True
            elif suffix == ".relay":
                message.pending = True
            elif suffix == ".relayed":
                message.finished = True
        if not messages and dateDirectory not in self.recent:
            try:
                os.rmdir(directory)
                self.result.directories += 1
            except OSError:
                pass
            return
        read = 0
        for queueId in sorted(messages):
            message = messages[queueId]
            if not message.envelope:
                if dateDirectory not in self.recent and not message.pending:
                    # A crash between the envelope's removal and the rest.
                    self.removals.append((directory, queueId, message.files, "leftovers"))
                continue
            facts = self.facts.get(queueId)
            if facts is None:
                facts = _readFacts(os.path.join(directory, queueId + ".envelope"))
                read += 1
                if facts is None:
                    continue
            self.seen.add(queueId)
            self._classify(directory, message, facts)
            if read >= BATCH:
                read = 0
                yield None

    def _classify(self, directory: str, message: _Message, facts: _Facts) -> None:
        policy = self.policy
        queueId = message.queueId
        self.facts[queueId] = facts
        remotePending = message.pending or (facts.hasRemote and not message.finished)
        if not remotePending and self.owed is not None:
            # A webhook still owed reads the message: keep it until then.
            remotePending = self.owed(message.dateDirectory, queueId, facts.received)
        if facts.hasLocal:
            expired = (
                policy.retentionDays and self.now - facts.received >= policy.retentionDays * _DAY
            )
            if remotePending or not expired:
                self.localCount += 1
            if remotePending:
                return
            if expired:
                self.removals.append((directory, queueId, message.files, "expired"))
            elif policy.maxMessages:
                self.prunable.append((directory, queueId, message.files))
            return
        if remotePending:
            return
        # Remote only, every recipient final.
        try:
            finishedAt = os.stat(os.path.join(directory, queueId + ".relayed")).st_mtime
        except OSError:
            return
        if self.now - finishedAt >= policy.keepDelivered:
            self.removals.append((directory, queueId, message.files, "delivered"))

    def overLimit(self) -> None:
        """
        Mark the oldest prunable local messages beyond the limit for removal.
        """
        excess = self.localCount - self.policy.maxMessages
        if not self.policy.maxMessages or excess <= 0:
            return
        for directory, queueId, files in self.prunable[:excess]:
            self.removals.append((directory, queueId, files, "overLimit"))

    def remove(self) -> bool:
        """
        Remove up to L{BATCH} messages marked for removal.

        @return: whether some are left for the next step.
        """
        batch, self.removals = self.removals[:BATCH], self.removals[BATCH:]
        for directory, queueId, files, why in batch:
            removeMessage(directory, queueId, files)
            self.facts.pop(queueId, None)
            setattr(self.result, why, getattr(self.result, why) + 1)
        return bool(self.removals)

    def forgetGone(self) -> None:
        """
        Drop cached facts of messages no longer in the spool.
        """
        for queueId in list(self.facts):
            if queueId not in self.seen:
                del self.facts[queueId]


def _split(name: str) -> tuple[str | None, str]:
    """
    A spool file name's queue id and kind (C{".envelope"}, C{".relay"},
    C{".relayed"}, C{".eml"}, ...).
    """
    if name.endswith(".eml"):
        queueId = name.partition("_")[0]
        return (queueId or None, ".eml")
    stem, dot, suffix = name.partition(".")
    if not dot or not stem or stem == "tmp":
        return (None, "")
    return (stem, "." + suffix)


def _readFacts(path: str) -> _Facts | None:
    try:
        with open(path, "rb") as f:
            envelope = Envelope.fromJSON(f.read())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return _Facts(
        hasLocal=any(r.local for r in envelope.recipients),
        hasRemote=any(not r.local for r in envelope.recipients),
        received=envelope.received,
    )


@implementer(IReconfigurable)
class RetentionService(Service):
    """
    Sweeps the spool every L{SWEEP_INTERVAL} seconds while it runs.

    @param spoolPath: the spool directory.
    @param policy: what to keep.
    @param clock: schedules the sweeps and gives the time.
    @param runInThread: C{runInThread(f, *args) -> Deferred}: where the
        file-system work runs.
    @param owedWebhooks: makes, for each sweep, C{owed(dateDirectory,
        queueId, received) -> bool}: whether a webhook not yet settled will
        read the message (it is kept until then); called in the thread.
    """

    name = "retention"
    fields = RETENTION_FIELDS

    def __init__(
        self,
        spoolPath: str,
        policy: RetentionPolicy,
        clock: IReactorTime,
        runInThread: Callable[..., Deferred[Any]],
        interval: float = SWEEP_INTERVAL,
        owedWebhooks: Callable[[], Callable[[str, str, float], bool]] | None = None,
    ) -> None:
        self.path = spoolPath
        self._owedWebhooks = owedWebhooks
        self.policy = policy
        self._clock = clock
        self._runInThread = runInThread
        self._interval = interval
        self._facts: dict[str, _Facts] = {}
        self._timer: Any = None
        self._sweeping: Deferred[Any] | None = None
        self._stopping = False

    def prepareReload(self, settings: Settings) -> Callable[[], None]:
        """
        The new policy applies from the next sweep.
        """
        policy = RetentionPolicy.fromSettings(settings)

        def apply() -> None:
            self.policy = policy

        return apply

    def startService(self) -> None:
        """
        Sweep after L{SWEEP_INTERVAL} seconds, then every as many.
        """
        Service.startService(self)
        self._stopping = False
        self._schedule()

    def stopService(self) -> Deferred[None]:
        """
        No more sweeps; wait for the step in progress.
        """
        Service.stopService(self)
        self._stopping = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        sweeping = self._sweeping
        if sweeping is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        sweeping.addBoth(lambda _: done.callback(None))
        return done

    def _schedule(self) -> None:
        if not self._stopping:
            self._timer = self._clock.callLater(self._interval, self._sweepAndReschedule)

    def _sweepAndReschedule(self) -> None:
        self._timer = None
        d = self.sweep()
        d.addBoth(lambda _: self._schedule())

    def sweep(self) -> Deferred[SweepResult]:
        """
        Sweep the spool now (unless a sweep is running: then its result).
        """
        if self._sweeping is not None:
            running: Deferred[SweepResult] = Deferred()

            def alsoTell(result: SweepResult) -> SweepResult:
                running.callback(result)
                return result

            self._sweeping.addCallback(alsoTell)
            return running
        d: Deferred[SweepResult] = Deferred()
        self._sweeping = d

        def finished(result: SweepResult) -> None:
            self._sweeping = None
            d.callback(result)

        self._sweep().addErrback(self._failed).addCallback(finished)
        return d

    def _failed(self, failure: Any) -> SweepResult:
        _log.failure("Retention sweep failed", failure)
        return SweepResult()

    @inlineCallbacks
    def _sweep(self) -> Any:
        policy = self.policy
        owed = self._owedWebhooks() if self._owedWebhooks is not None else None
        work = _Sweep(self.path, policy, self._clock.seconds(), self._facts, owed)
        directories = yield self._runInThread(work.directories)
        for dateDirectory in directories:
            steps = work.scan(dateDirectory)
            while (yield self._runInThread(_step, steps)) and not self._stopping:
                pass
            while work.removals and not self._stopping:
                yield self._runInThread(work.remove)
            if self._stopping:
                return work.result
        work.overLimit()
        while work.removals and not self._stopping:
            yield self._runInThread(work.remove)
        if not self._stopping:
            work.forgetGone()
        if work.result:
            _log.info("{line}", line=work.result.describe(policy))
        return work.result


def _step(steps: Iterator[None]) -> bool:
    """
    Run one step of C{steps}; whether there are more.
    """
    return next(steps, StopIteration) is not StopIteration
