"""
Support for the operations tests (issue 14): spools with messages and
relay states in them, short temporary directories (a UNIX socket's path is
at most 107 bytes), the blocking gopherpostctl run in a thread.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from gopherpost.relay.state import PENDING, MessageState, StateStore
from gopherpost.spool import Envelope, Spool

__all__ = [
    "synchronous",
    "shortDirectory",
    "SpoolFixture",
    "runCtl",
    "runCtlInThread",
]


def synchronous(f: Any, *args: Any) -> Deferred[Any]:
    """
    A C{runInThread} that runs C{f} at once.
    """
    try:
        return succeed(f(*args))
    except BaseException:
        return fail()


def shortDirectory(testCase: Any) -> str:
    """
    A new directory under C{/tmp} with a short name, removed at cleanup.
    """
    path = tempfile.mkdtemp(prefix="gp", dir="/tmp")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


class SpoolFixture:
    """
    A real spool (synchronous commits, time from a L{Clock}) to fill with
    messages and relay states.
    """

    def __init__(self, testCase: Any, clock: Clock | None = None, path: str | None = None) -> None:
        self.clock = clock or Clock()
        if self.clock.seconds() == 0:
            self.clock.advance(1_800_000_000)
        self.path = path or os.path.join(shortDirectory(testCase), "spool")
        self.spool = Spool(self.path, self.clock, runInThread=synchronous)
        self.spool.open()
        self.store = StateStore(self.path)

    def message(
        self,
        recipients: Sequence[tuple[str, bool]] = (("rcpt@remote.test", False),),
        sender: str = "sender@local.test",
        content: bytes = b"Subject: test\r\nFrom: sender@local.test\r\n\r\nbody\r\n",
    ) -> Envelope:
        """
        Store a message now.
        """
        results: list[Any] = []
        self.spool.store(content, sender, list(recipients)).addBoth(results.append)
        [envelope] = results
        if not isinstance(envelope, Envelope):
            envelope.raiseException()
        return envelope

    def relayState(
        self, envelope: Envelope, statuses: dict[str, str] | None = None, **fields: Any
    ) -> MessageState:
        """
        Save the relay's state of C{envelope}: each remote recipient
        pending unless C{statuses} says otherwise; C{fields} set on every
        recipient (C{attempts}, C{lastError}, ...).
        """
        state = MessageState.forEnvelope(envelope, self.clock.seconds())
        for recipient in state.recipients:
            recipient.status = (statuses or {}).get(recipient.address, PENDING)
            for name, value in fields.items():
                setattr(recipient, name, value)
        self.store.save(state)
        return state

    def files(self, envelope: Envelope) -> list[str]:
        """
        The names of C{envelope}'s files.
        """
        directory = os.path.join(self.path, envelope.dateDirectory)
        if not os.path.isdir(directory):
            return []
        return sorted(n for n in os.listdir(directory) if n.startswith(envelope.queueId))


def runCtl(args: Sequence[str], environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """
    Run C{gopherpostctl} here (blocking).

    @return: its exit status, standard output and standard error.
    """
    from gopherpost.ctl.main import main

    out, err = io.StringIO(), io.StringIO()
    status = main(list(args), environ=environ if environ is not None else {}, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def runCtlInThread(
    args: Sequence[str], environ: dict[str, str] | None = None
) -> Deferred[tuple[int, str, str]]:
    """
    L{runCtl} in a thread, so that a server in this process can answer.
    """
    return deferToThread(runCtl, args, environ)


class ServerProcess:
    """
    C{twistd -n gopherpost} as a child process whose log goes to a file
    that tests wait on (blocking: call from a thread).

    @param environ: its whole environment (plus C{PATH} and
        C{PYTHONPATH} for this checkout).
    @param args: options after C{gopherpost} (e.g. C{--env-file PATH}).
    """

    def __init__(self, environ: dict[str, str], args: Sequence[str], logPath: str) -> None:
        import subprocess
        import sys

        from tests.support.server import REPOSITORY

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPOSITORY}
        env.update(environ)
        self.logPath = logPath
        self._log = open(logPath, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "--nodaemon",
                "--pidfile=",
                "gopherpost",
                *args,
            ],
            env=env,
            cwd=os.path.dirname(logPath),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        """
        Everything it logged so far.
        """
        with open(self.logPath, encoding="utf-8", errors="replace") as f:
            return f.read()

    def waitForLog(self, text: str, timeout: float = 60, count: int = 1) -> str:
        """
        Wait until C{text} was logged C{count} times.

        @raise AssertionError: it was not within C{timeout} seconds, or the
            process ended.
        """
        import time

        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if log.count(text) >= count:
                return log
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged {count} times; the log:\n{log}")
            time.sleep(0.05)

    def signal(self, number: int) -> None:
        """
        Send it a signal.
        """
        self.process.send_signal(number)

    def finish(self, timeout: float = 60) -> int:
        """
        Wait for it to end.

        @return: its exit status (negative: the signal that ended it).
        """
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """
        Make sure it and its workers are gone.
        """
        import signal as _signal

        try:
            os.killpg(self.process.pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)
        self._log.close()
