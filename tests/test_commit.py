"""
Tests for the spool's group commit (L{gopherpost.spool.Spool.commit}): the
order of writes, names and syncs, the pipeline, failures, and the strategy
and fault-injection hooks it is opened with.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet import reactor as globalReactor
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from gopherpost import spool as spoolModule
from gopherpost.durable import loadSyncfs
from gopherpost.faults import COMMIT_STEPS, CrashPoints
from gopherpost.interfaces import ISpoolObserver
from gopherpost.spool import Envelope, MessageWriter, Spool, SpoolError
from gopherpost.syncstrategy import (
    FileSync,
    FileSystemSync,
    ISyncStrategy,
    RangeSync,
    chooseSyncStrategy,
    loadSyncFileRange,
)

#: 2026-11-18, a few seconds before midnight UTC.
NOW = 1795046390.0


class StepRunner:
    """
    Stands for the sync thread: holds each step's sync until the test runs
    it with L{runOne}.
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[Deferred, Callable[..., Any], tuple]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append((d, f, args))
        return d

    def runOne(self) -> Any:
        """
        Run the one waiting sync; return its step.
        """
        assert len(self.waiting) == 1, self.waiting
        d, f, args = self.waiting.pop()
        maybeDeferred(f, *args).chainDeferred(d)
        return args[0]

    def runAll(self) -> int:
        count = 0
        while self.waiting:
            self.runOne()
            count += 1
        return count


@implementer(ISyncStrategy)
class CheckingStrategy:
    """
    A sync strategy that syncs nothing but checks the commit order: at every
    call, every visible name's data was covered by an earlier call; a name
    counts as durable once a call covered its directory after it appeared.

    @ivar calls: C{(data inodes, directories)} per call.
    @ivar failures: exceptions to raise, by call number.
    """

    name = "checking"

    def __init__(self, testCase: SynchronousTestCase, spoolPath: str) -> None:
        self.testCase = testCase
        self.spoolPath = spoolPath
        self.calls: list[tuple[set[int], list[str]]] = []
        self.safeData: set[int] = set()
        self.durableNames: set[str] = set()
        self.failures: dict[int, BaseException] = {}
        #: Names the test made itself.
        self.planted: set[str] = set()

    def visible(self) -> dict[str, int]:
        """
        Every C{.eml} and C{.envelope} name in the date directories, with
        the inode it names.
        """
        names = {}
        for entry in os.scandir(self.spoolPath):
            if entry.is_dir() and entry.name[:2] == "20":
                for name in os.scandir(entry.path):
                    if name.name.endswith((".eml", ".envelope")):
                        names[name.path] = name.inode()
        return names

    def sync(self, files: Any, directories: Any) -> None:
        visible = self.visible()
        for name, inode in visible.items():
            if name not in self.planted:
                self.testCase.assertIn(inode, self.safeData, f"{name} named before its data")
        number = len(self.calls)
        self.calls.append(({os.fstat(fd).st_ino for fd in files}, list(directories)))
        if number in self.failures:
            raise self.failures[number]
        self.safeData |= self.calls[-1][0]
        self.durableNames |= {n for n in visible if os.path.dirname(n) in directories}

    def checkDurable(self, envelope: Envelope, spool: Spool) -> None:
        """
        Every name of C{envelope}'s message is durable.
        """
        names = [spool.messagePath(envelope, r) for r in envelope.recipients]
        names.append(
            os.path.join(spool.path, envelope.dateDirectory, envelope.queueId + ".envelope")
        )
        for name in names:
            self.testCase.assertIn(name, self.durableNames, f"{name} acknowledged before durable")


class RecordingCrashPoints(CrashPoints):
    """
    Records every step reached instead of dying.
    """

    def __init__(self) -> None:
        CrashPoints.__init__(self)
        self.steps: list[str] = []

    def reached(self, step: str) -> None:
        self.steps.append(step)


class GroupCommitTests(SynchronousTestCase):
    """
    The group commit pipeline, its syncs held by a L{StepRunner}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.path = os.path.abspath(self.mktemp())
        self.runner = StepRunner()
        self.crashPoints = RecordingCrashPoints()
        self.strategy = CheckingStrategy(self, self.path)
        self.spool = Spool(
            self.path,
            self.clock,
            runInThread=self.runner,
            syncStrategy=self.strategy,
            crashPoints=self.crashPoints,
        )
        self.spool.open()
        self.acknowledged: list[Envelope] = []
        self.failed: list[Failure] = []

    def commit(self, body: bytes = b"Subject: x\r\n\r\nbody\r\n", **kwargs: Any) -> Deferred:
        writer = kwargs.pop("writer", None) or self.spool.newWriter()
        writer.write(body)
        d = self.spool.commit(
            writer,
            "alice@gopherpost.test",
            kwargs.pop(
                "recipients", [("bob@example.test", False), ("carol@gopherpost.test", True)]
            ),
            "192.0.2.1",
            "client.test",
            False,
            **kwargs,
        )

        def acknowledged(envelope: Envelope) -> None:
            self.strategy.checkDurable(envelope, self.spool)
            self.acknowledged.append(envelope)

        d.addCallbacks(acknowledged, self.failed.append)
        return d

    def tmp(self) -> list[str]:
        return os.listdir(os.path.join(self.path, "tmp"))

    def test_aloneOneHop(self) -> None:
        """
        A message with nothing else in flight costs one hop to the sync
        thread: there its data is synced, then it is named, then its names
        are synced (the spool too, for a new date directory); it is
        acknowledged after.
        """
        self.commit()
        self.assertEqual(len(self.runner.waiting), 1)
        self.assertEqual(self.strategy.visible(), {})
        self.assertEqual(len(self.tmp()), 2)  # content and envelope
        self.runner.runOne()
        self.assertEqual(self.runner.waiting, [])
        [(data, noDirectories), (noData, directories)] = self.strategy.calls
        self.assertEqual((len(data), noDirectories), (2, []))
        self.assertEqual(noData, set())
        self.assertEqual(directories, sorted([self.path, os.path.join(self.path, "2026-11-18")]))
        self.assertEqual(len(self.acknowledged), 1)
        self.assertEqual(len(self.strategy.visible()), 3)
        self.assertEqual(self.tmp(), [])
        self.assertEqual(self.crashPoints.steps, list(COMMIT_STEPS))

    def test_knownDateDirectory(self) -> None:
        """
        The spool directory itself is synced only for the first message of
        a date directory (in each process); the date directory every time.
        """
        self.commit()
        self.runner.runAll()
        self.commit()
        self.runner.runAll()
        self.clock.advance(60)  # the next day
        self.commit()
        self.runner.runAll()
        namesSynced = [d for _, d in self.strategy.calls if d]
        self.assertEqual(
            namesSynced,
            [
                sorted([self.path, os.path.join(self.path, "2026-11-18")]),
                [os.path.join(self.path, "2026-11-18")],
                sorted([self.path, os.path.join(self.path, "2026-11-19")]),
            ],
        )

    def test_dateDirectoryMadeElsewhere(self) -> None:
        """
        A date directory that already exists (made by another process on
        the spool, whose sync may not be done) has its entry synced too.
        """
        os.mkdir(os.path.join(self.path, "2026-11-18"))
        self.commit()
        self.runner.runAll()
        self.assertIn(self.path, self.strategy.calls[-1][1])
        self.assertEqual(len(self.acknowledged), 1)

    def test_pipelined(self) -> None:
        """
        Messages that arrive while a step runs go together into the next
        step; more than L{spoolModule.SAME_STEP_LIMIT} of them are written
        in one step and named in the next, whose one sync also covers the
        data of the messages that arrived meanwhile.
        """
        self.commit(b"first\r\n")
        many = spoolModule.SAME_STEP_LIMIT + 2
        for n in range(many):
            self.commit(b"message %d\r\n" % n)
        self.runner.runOne()
        self.assertEqual(len(self.acknowledged), 1)
        [(_, _, (step,))] = self.runner.waiting
        self.assertEqual((len(step.fresh), len(step.naming), step.sameStep), (many, 0, False))
        self.commit(b"late\r\n")
        self.runner.runOne()
        self.assertEqual(len(self.acknowledged), 1)
        # The next step named them at once, before its sync: not yet
        # acknowledged.
        self.assertEqual(len(self.strategy.visible()), 3 * (1 + many))
        step = self.runner.runOne()
        self.assertEqual((len(step.fresh), len(step.naming), step.sameStep), (1, many, False))
        data, directories = self.strategy.calls[-1]
        self.assertEqual((len(data), directories), (2, [os.path.join(self.path, "2026-11-18")]))
        self.assertEqual(len(self.acknowledged), 1 + many)
        step = self.runner.runOne()
        self.assertEqual((len(step.fresh), len(step.naming)), (0, 1))
        self.assertEqual(self.runner.waiting, [])
        self.assertEqual(len(self.acknowledged), 2 + many)
        self.assertEqual(self.tmp(), [])
        expected = [b"first\r\n", b"late\r\n"] + [b"message %d\r\n" % n for n in range(many)]
        for envelope in self.acknowledged:
            with open(self.spool.messagePath(envelope), "rb") as f:
                self.assertIn(f.read(), expected)
        counts = {step: self.crashPoints.steps.count(step) for step in COMMIT_STEPS}
        self.assertEqual(set(counts.values()), {2 + many})
        firsts = sorted(COMMIT_STEPS, key=self.crashPoints.steps.index)
        self.assertEqual(firsts, list(COMMIT_STEPS))

    def test_randomArrivals(self) -> None:
        """
        Whatever the arrivals between steps (a seeded random run of 300
        messages, some spilled to a file as they arrived), no name is made
        before its data is safe, none is acknowledged before its names are
        durable, every message is acknowledged once with its own content,
        and nothing is left in C{tmp/}.
        """
        generator = random.Random(20)
        bodies = {}
        sent = 0
        self.patch(spoolModule, "SPILL_THRESHOLD", 2000)
        while sent < 300 or self.runner.waiting:
            for _ in range(generator.choice([0, 0, 1, 1, 2, 5, 9, 30])):
                if sent < 300:
                    body = b"message %d\r\n" % sent * generator.choice([1, 1, 1, 300])
                    self.commit(body, queueId="%019X" % sent)
                    bodies["%019X" % sent] = body
                    sent += 1
            if self.runner.waiting:
                self.runner.runOne()
        self.assertEqual(self.failed, [])
        self.assertEqual(sorted(e.queueId for e in self.acknowledged), sorted(bodies))
        for envelope in self.acknowledged:
            for recipient in envelope.recipients:
                with open(self.spool.messagePath(envelope, recipient), "rb") as f:
                    self.assertEqual(f.read(), bodies[envelope.queueId])
        self.assertEqual(self.tmp(), [])

    def test_stepBytesBounded(self) -> None:
        """
        A step writes at most L{spoolModule.MAX_BATCH_BYTES} of in-memory
        content (but always at least one message); the rest waits for the
        next step.
        """
        self.patch(spoolModule, "MAX_BATCH_BYTES", 250)
        self.patch(spoolModule, "SAME_STEP_LIMIT", 0)
        for size in (100, 100, 100, 100, 400):
            self.commit(b"x" * size)
        shapes = []
        while self.runner.waiting:
            step = self.runner.runOne()
            shapes.append((len(step.fresh), len(step.naming)))
        self.assertEqual(shapes, [(1, 0), (2, 1), (1, 2), (1, 1), (0, 1)])
        self.assertEqual(len(self.acknowledged), 5)

    def test_syncFailureFailsStep(self) -> None:
        """
        When a sync fails, every message of its step fails, those being
        named and those whose data was being written, and leaves nothing
        visible; the next step goes on.
        """
        self.patch(spoolModule, "SAME_STEP_LIMIT", 0)
        self.commit(b"named\r\n")
        self.commit(b"fresh\r\n")
        self.runner.runOne()
        self.strategy.failures[1] = OSError(5, "Input/output error")
        step = self.runner.runOne()
        self.assertEqual((len(step.fresh), len(step.naming)), (1, 1))
        self.assertEqual(len(self.failed), 2)
        for failure in self.failed:
            failure.trap(SpoolError)
        self.assertEqual(self.runner.waiting, [])
        self.assertEqual(self.strategy.visible(), {})
        self.assertEqual(self.tmp(), [])
        self.commit(b"after\r\n")
        self.runner.runAll()
        self.assertEqual(len(self.acknowledged), 1)
        # The date directory's entry is synced again after the failure.
        self.assertIn(self.path, self.strategy.calls[-1][1])
        self.flushLoggedErrors(OSError)

    def test_unexpectedSyncErrorFailsStep(self) -> None:
        """
        A sync that fails with something other than an L{OSError} fails the
        step's messages with it (and is logged), leaving nothing visible.
        """
        self.strategy.failures[1] = RuntimeError("broken")
        self.commit()
        self.runner.runOne()
        [failure] = self.failed
        failure.trap(RuntimeError)
        self.assertEqual(self.strategy.visible(), {})
        self.assertEqual(self.tmp(), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_acknowledgedBeforeAnnounced(self) -> None:
        """
        Every message of a step gets its outcome (the client its 250) before
        the observers hear of any of them: their work is in memory, the
        message durable already.
        """
        self.patch(spoolModule, "SAME_STEP_LIMIT", 0)
        told: list[int] = []
        acknowledged = self.acknowledged

        @implementer(ISpoolObserver)
        class Observer:
            def messageCommitted(self, envelope: Envelope) -> None:
                told.append(len(acknowledged))

        self.spool.addObserver(Observer())
        self.commit(b"one\r\n")
        self.runner.runOne()
        self.commit(b"two\r\n")
        self.commit(b"three\r\n")
        self.runner.runAll()
        self.assertEqual(len(self.acknowledged), 3)
        # Each observer call came after every 250 of its step.
        self.assertEqual(told, [1, 3, 3])

    def test_cancelledStillAnnounced(self) -> None:
        """
        A committer that cancels its L{Deferred} gets L{CancelledError}; the
        commit goes on, and once it is durable the observers are told.
        """
        told: list[Envelope] = []

        @implementer(ISpoolObserver)
        class Observer:
            def messageCommitted(self, envelope: Envelope) -> None:
                told.append(envelope)

        self.spool.addObserver(Observer())
        d = self.commit(b"spilled\r\n" * 40000)
        d.cancel()
        self.failed.pop().trap(CancelledError)
        self.runner.runAll()
        [envelope] = told
        self.assertIn(self.spool.messagePath(envelope), self.strategy.visible())
        self.assertEqual(self.tmp(), [])

    def test_noThread(self) -> None:
        """
        When the sync cannot even be started (no thread), the step's
        messages fail and the next commit is tried again.
        """

        def noThread(f: Any, *args: Any) -> Deferred:
            raise RuntimeError("can't start new thread")

        self.patch(self.spool, "_runSync", noThread)
        self.commit()
        [failure] = self.failed
        failure.trap(RuntimeError)
        self.assertEqual(self.strategy.visible(), {})
        self.assertEqual(self.tmp(), [])
        self.flushLoggedErrors(RuntimeError)
        self.patch(self.spool, "_runSync", self.runner)
        self.commit()
        self.runner.runAll()
        self.assertEqual(len(self.acknowledged), 1)

    def test_writeFailureFailsThatMessage(self) -> None:
        """
        A message whose data cannot be written fails alone; the others of
        its step are stored.
        """
        self.commit(b"first\r\n")
        broken = MessageWriter(os.path.join(self.path, "missing", "x"))
        self.commit(b"a\r\n")
        self.commit(b"b\r\n", writer=broken)
        self.commit(b"c\r\n")
        self.runner.runAll()
        [failure] = self.failed
        failure.trap(SpoolError)
        self.assertEqual(len(self.acknowledged), 3)
        self.assertEqual(len(self.strategy.visible()), 9)
        self.assertEqual(self.tmp(), [])
        self.flushLoggedErrors(OSError)

    def test_nameFailureFailsThatMessage(self) -> None:
        """
        A message that cannot be named (a name already taken) fails alone
        and leaves none of its names; the others are stored.
        """
        self.commit(b"first\r\n")
        self.commit(b"other\r\n")
        queueId = "0" * 19
        os.mkdir(os.path.join(self.path, "2026-11-18"))
        taken = self.spool.contentPath(
            "2026-11-18", queueId, self.spool.tokenFor("carol@gopherpost.test")
        )
        with open(taken, "wb") as f:
            f.write(b"in the way")
        self.strategy.planted.add(taken)
        self.commit(b"clash\r\n", queueId=queueId)
        self.runner.runAll()
        [failure] = self.failed
        failure.trap(SpoolError)
        self.assertEqual(len(self.acknowledged), 2)
        self.assertFalse([n for n in self.strategy.visible() if queueId in n])
        self.assertEqual(self.tmp(), [])
        self.flushLoggedErrors(OSError)


def _strategyName(spool: Spool) -> str:
    assert spool.syncStrategy is not None
    return str(spool.syncStrategy.name)


def _collect(found: list[tuple[Envelope, bytes]], body: bytes, envelope: Envelope) -> None:
    found.append((envelope, body))


class StrategyTests(SynchronousTestCase):
    """
    Every real sync strategy stores whole messages.
    """

    def strategies(self) -> list[Any]:
        found: list[Any] = [FileSync()]
        syncfs = loadSyncfs()
        if syncfs is not None:
            found.append(FileSystemSync(syncfs, "/"))
        syncFileRange = loadSyncFileRange()
        if syncFileRange is not None:
            found.append(RangeSync(syncFileRange))
        return found

    def test_everyStrategy(self) -> None:
        """
        With each strategy this system has (on Linux, all three), small and
        spilled messages to two recipients are stored whole, alone and in
        pipelined steps.
        """
        self.assertTrue(len(self.strategies()) == 3 or not os.uname().sysname == "Linux")
        for strategy in self.strategies():
            path = os.path.abspath(self.mktemp())
            spool = Spool(path, Clock(), runInThread=maybeDeferred, syncStrategy=strategy)
            spool.open()
            results: list[tuple[Envelope, bytes]] = []
            for n, size in enumerate([10, 300_000, 1000, 5, 700_000]):
                writer = spool.newWriter()
                body = (b"%d" % n) * size
                writer.write(body)
                d = spool.commit(
                    writer,
                    "",
                    [("a@example.test", False), ("b@example.test", False)],
                    "192.0.2.1",
                    "c",
                    False,
                )
                d.addCallback(partial(_collect, results, body))
            self.assertEqual(len(results), 5, strategy.name)
            for envelope, body in results:
                for recipient in envelope.recipients:
                    with open(spool.messagePath(envelope, recipient), "rb") as f:
                        self.assertEqual(f.read(), body)
            self.assertEqual(os.listdir(os.path.join(path, "tmp")), [])

    def test_chosenAtOpen(self) -> None:
        """
        L{Spool.open} chooses the strategy for the spool's file system.
        """
        path = os.path.abspath(self.mktemp())
        spool = Spool(path, Clock(), runInThread=maybeDeferred)
        spool.open()
        self.assertEqual(_strategyName(spool), chooseSyncStrategy(path).name)

    def test_forcedByTestVariable(self) -> None:
        """
        C{GOPHERPOST_TEST_SYNC} forces a strategy; an unknown one, or an
        invalid C{GOPHERPOST_TEST_CRASH_AT}, fails L{Spool.open} with the
        variable's name.
        """
        path = os.path.abspath(self.mktemp())
        self.patch(os, "environ", {"GOPHERPOST_TEST_SYNC": "fsync"})
        spool = Spool(path, Clock(), runInThread=maybeDeferred)
        spool.open()
        self.assertEqual(_strategyName(spool), "fsync")
        for variable, value in [
            ("GOPHERPOST_TEST_SYNC", "sometimes"),
            ("GOPHERPOST_TEST_CRASH_AT", "nowhere"),
        ]:
            self.patch(os, "environ", {variable: value})
            error = self.assertRaises(SpoolError, Spool(path, Clock()).open)
            self.assertIn(variable, str(error))
        self.flushLoggedErrors()


class SyncThreadSpoolTests(TestCase):
    """
    A spool on the real reactor syncs in the process's sync thread.
    """

    def test_defaultSyncThread(self) -> Deferred:
        """
        Without C{runInThread}, commits are synced in the
        C{gopherpost-sync} thread and acknowledged on the reactor thread.
        """
        path = os.path.abspath(self.mktemp())
        spool = Spool(path, globalReactor)
        spool.open()
        seen = []
        wrapped = spool._syncStep

        def syncStep(step: Any) -> None:
            seen.append(threading.current_thread().name)
            wrapped(step)

        self.patch(spool, "_syncStep", syncStep)
        writer = spool.newWriter()
        writer.write(b"hello\r\n")
        d = spool.commit(writer, "", [("a@example.test", False)], "192.0.2.1", "c", False)

        def check(envelope: Envelope) -> None:
            self.assertEqual(seen, ["gopherpost-sync"])
            self.assertIs(threading.current_thread(), threading.main_thread())
            with open(spool.messagePath(envelope), "rb") as f:
                self.assertEqual(f.read(), b"hello\r\n")

        return d.addCallback(check)
