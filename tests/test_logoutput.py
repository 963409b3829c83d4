"""
Tests for L{gopherpost.logoutput}: log lines written once per reactor turn.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher, textFileLogObserver
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from gopherpost import logoutput
from gopherpost.logoutput import TurnBatchingFile, installFor, stdoutObserver


class RecordingFile:
    """
    A text file that records each C{write} and C{flush}.
    """

    encoding = None

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def write(self, text: str) -> None:
        self.calls.append(("write", text))

    def flush(self) -> None:
        self.calls.append(("flush", ""))

    @property
    def text(self) -> str:
        return "".join(text for call, text in self.calls if call == "write")

    @property
    def writes(self) -> int:
        return sum(1 for call, _ in self.calls if call == "write")


class ClosedFile(RecordingFile):
    def write(self, text: str) -> None:
        raise ValueError("I/O operation on closed file.")


def loggerOn(out: object) -> Logger:
    """
    A logger whose only observer is a twistd-style text observer on C{out}.
    """
    publisher = LogPublisher()
    publisher.addObserver(textFileLogObserver(out))  # type: ignore[arg-type]
    return Logger(namespace="gopherpost.test", observer=publisher)


def shutdownTriggers(reactor: MemoryReactorClock) -> list[tuple[Any, tuple, dict]]:
    """
    The triggers registered for after shutdown.
    """
    return list(reactor.triggers.get("after", {}).get("shutdown", []))


class TurnBatchingFileTests(SynchronousTestCase):
    """
    L{TurnBatchingFile} under a twistd text observer.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.out = RecordingFile()
        mainThread = threading.current_thread()
        self.file = TurnBatchingFile(
            self.out,  # type: ignore[arg-type]
            self.reactor,
            inReactorThread=lambda: threading.current_thread() is mainThread,
        )
        self.log = loggerOn(self.file)

    def test_oneWritePerTurn(self) -> None:
        """
        The lines logged during one turn of a running reactor are written
        together, in order, with one write and one flush, when the next
        turn starts.
        """
        self.reactor.running = True
        self.log.info("first {n}", n=1)
        self.log.info("second {n}", n=2)
        self.log.warn("third")
        self.assertEqual(self.out.calls, [])
        self.reactor.advance(0)
        self.assertEqual(self.out.writes, 1)
        self.assertEqual(self.out.calls[-1], ("flush", ""))
        lines = self.out.text.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[0].endswith("first 1"), lines)
        self.assertTrue(lines[1].endswith("second 2"), lines)
        self.assertTrue(lines[2].endswith("third"), lines)
        self.assertIn("[gopherpost.test#warn]", lines[2])

    def test_nextTurnWritesAgain(self) -> None:
        """
        Lines of a later turn are written at the start of the turn after
        it: nothing waits for more than one turn.
        """
        self.reactor.running = True
        self.log.info("one")
        self.reactor.advance(0)
        self.log.info("two")
        self.assertEqual(self.out.writes, 1)
        self.reactor.advance(0)
        self.assertEqual(self.out.writes, 2)
        self.assertTrue(self.out.text.splitlines()[1].endswith("two"))

    def test_notRunning(self) -> None:
        """
        Before the reactor runs (start-up) and after it stopped, every line
        is written at once.
        """
        self.log.info("at start-up")
        self.assertEqual(self.out.writes, 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_shutdownWritesWhatIsKept(self) -> None:
        """
        Lines kept when the reactor shuts down are written after shutdown,
        even if the next turn never comes.
        """
        self.reactor.running = True
        self.log.info("last words")
        triggers = shutdownTriggers(self.reactor)
        self.assertEqual(len(triggers), 1)
        for callable, args, kwargs in triggers:
            callable(*args, **kwargs)
        self.assertTrue(self.out.text.rstrip().endswith("last words"))

    def test_oneShutdownTrigger(self) -> None:
        """
        However many lines, one shutdown trigger.
        """
        self.reactor.running = True
        for i in range(5):
            self.log.info("line {i}", i=i)
            self.reactor.advance(0)
        self.assertEqual(len(shutdownTriggers(self.reactor)), 1)

    def test_otherThread(self) -> None:
        """
        A line from another thread is written at once, after the lines the
        reactor thread kept, so the order stays.
        """
        self.reactor.running = True
        self.log.info("from the reactor")
        thread = threading.Thread(target=lambda: self.log.info("from a thread"))
        thread.start()
        thread.join()
        lines = self.out.text.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].endswith("from the reactor"))
        self.assertTrue(lines[1].endswith("from a thread"))

    def test_closedOutput(self) -> None:
        """
        A closed standard output loses the lines without an error.
        """
        batching = TurnBatchingFile(ClosedFile(), self.reactor)  # type: ignore[arg-type]
        loggerOn(batching).info("nowhere to go")
        self.assertEqual(batching.pending, [])


class InstallForTests(SynchronousTestCase):
    """
    L{installFor} and its use from C{twistd gopherpost}'s options.
    """

    def test_nodaemonStdout(self) -> None:
        """
        twistd --nodaemon with nothing else about logging: GopherPost's
        observer.
        """
        options = {"nodaemon": True, "logfile": None, "syslog": False, "logger": None}
        self.assertTrue(installFor(options))
        self.assertEqual(options["logger"], "gopherpost.logoutput.stdoutObserver")

    def test_dashLogfile(self) -> None:
        """
        C{--logfile -} is standard output too.
        """
        options = {"nodaemon": True, "logfile": "-"}
        self.assertTrue(installFor(options))

    def test_othersStand(self) -> None:
        """
        A log file, syslog, an observer of the user's, daemon mode, or no
        twistd at all: twistd's choice stands.
        """
        cases: list[dict[str, object]] = [
            {"nodaemon": True, "logfile": "/var/log/gopherpost.log"},
            {"nodaemon": True, "syslog": True},
            {"nodaemon": True, "logger": "mine.observer"},
            {"nodaemon": False},
        ]
        for options in cases:
            before = dict(options)
            self.assertFalse(installFor(options))
            self.assertEqual(options, before)
        self.assertFalse(installFor(None))

    def test_twistdOptions(self) -> None:
        """
        Parsed by twistd's own options, C{--nodaemon gopherpost} resolves to
        L{stdoutObserver}, and a C{--logfile} leaves twistd's logging alone.
        """
        options = ServerOptions()
        options.parseOptions(["--nodaemon", "gopherpost"])
        self.assertIs(options["logger"], stdoutObserver)
        options = ServerOptions()
        options.parseOptions(["--nodaemon", "--logfile", self.mktemp(), "gopherpost"])
        self.assertIsNone(options["logger"])

    def test_stdoutObserver(self) -> None:
        """
        L{stdoutObserver} makes a log observer twistd accepts.
        """
        self.assertTrue(ILogObserver.providedBy(stdoutObserver()))

    def test_levels(self) -> None:
        """
        The observer formats like twistd's: level and namespace in brackets.
        """
        reactor = MemoryReactorClock()
        out = RecordingFile()
        observer = textFileLogObserver(TurnBatchingFile(out, reactor))  # type: ignore[arg-type]
        observer(
            {"log_level": LogLevel.error, "log_namespace": "x", "log_format": "boom", "log_time": 0}
        )
        self.assertIn("[x#error] boom", out.text)


class DrainAllTests(SynchronousTestCase):
    """
    L{logoutput.drainAll}: for a process that ends without its reactor's
    shutdown.
    """

    def test_drainsKeptLines(self) -> None:
        """
        What a running reactor's turn kept is written at once.
        """
        reactor = MemoryReactorClock()
        reactor.running = True
        out = RecordingFile()
        batching = TurnBatchingFile(out, reactor, inReactorThread=lambda: True)  # type: ignore[arg-type]
        loggerOn(batching).warn("stopping at once")
        self.assertEqual(out.writes, 0)
        logoutput.drainAll()
        self.assertTrue(out.text.rstrip().endswith("stopping at once"))

    def test_reentrant(self) -> None:
        """
        A line logged while the file is being written (a signal handler
        interrupting the reactor thread's drain) is neither lost nor a
        deadlock.
        """
        reactor = MemoryReactorClock()
        reactor.running = True
        batching: TurnBatchingFile

        class Interrupted(RecordingFile):
            def write(self, text: str) -> None:
                RecordingFile.write(self, text)
                if len(self.calls) == 1:
                    batching.write("from the handler\\n")
                    batching.drain()

        out = Interrupted()
        batching = TurnBatchingFile(out, reactor, inReactorThread=lambda: True)  # type: ignore[arg-type]
        batching.write("from the reactor\\n")
        batching.drain()
        self.assertEqual(out.text, "from the reactor\\nfrom the handler\\n")
