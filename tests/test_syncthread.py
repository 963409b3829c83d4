"""
Tests for L{gopherpost.syncthread}.
"""

from __future__ import annotations

import threading

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from gopherpost.syncthread import SyncThread, sharedSyncThread


class SyncThreadTests(TestCase):
    """
    Jobs run in the sync thread, in order, and their results come back on
    the reactor thread.
    """

    def setUp(self) -> None:
        self.thread = SyncThread(name="test-sync")
        self.addCleanup(self.thread.stop, 10)

    def test_resultOnReactorThread(self) -> Deferred:
        """
        C{run} calls the function in the thread (started at the first
        call) and fires with its result on the reactor thread.
        """
        seen = []

        def job(x: int) -> int:
            seen.append(threading.current_thread().name)
            return x * 2

        def check(result: int) -> None:
            self.assertEqual(result, 42)
            self.assertEqual(seen, ["test-sync"])
            self.assertIs(threading.current_thread(), threading.main_thread())

        return self.thread.run(reactor, job, 21).addCallback(check)

    def test_failure(self) -> Deferred:
        """
        What the function raises fails the L{Deferred}; the thread goes on.
        """

        def broken() -> None:
            raise OSError(5, "Input/output error")

        d = self.thread.run(reactor, broken)
        self.assertFailure(d, OSError)
        return d.addCallback(lambda _: self.thread.run(reactor, lambda: "still here")).addCallback(
            self.assertEqual, "still here"
        )

    def test_inOrder(self) -> Deferred:
        """
        Jobs run one at a time, in the order given.
        """
        order: list[int] = []
        jobs = [self.thread.run(reactor, order.append, n) for n in range(50)]
        return gatherResults(jobs).addCallback(lambda _: self.assertEqual(order, list(range(50))))

    def test_stopAndRestart(self) -> Deferred:
        """
        C{stop} lets queued jobs finish and ends the thread; the next call
        starts a new one.
        """
        d = self.thread.run(reactor, lambda: threading.current_thread())

        def stopped(first: threading.Thread) -> object:
            self.thread.stop(10)
            self.assertFalse(first.is_alive())
            return self.thread.run(reactor, lambda: threading.current_thread()).addCallback(
                lambda second: self.assertIsNot(second, first)
            )

        return d.addCallback(stopped)

    def test_shared(self) -> Deferred:
        """
        The process has one shared sync thread, a daemon.
        """
        self.assertIs(sharedSyncThread(), sharedSyncThread())

        def check(thread: threading.Thread) -> None:
            self.assertTrue(thread.daemon)
            self.assertEqual(thread.name, "gopherpost-sync")

        return sharedSyncThread().run(reactor, threading.current_thread).addCallback(check)
