"""
The relay sends a message again only when it cannot know the remote took
it: a message whose final reply it read is recorded before the connection
carries the next one.  Stopping the queue (SIGTERM) sends nothing twice;
a crash (kill -9) sends again at most the message in flight on each
connection.

Real receiving servers on 127.0.0.2 (L{tests.support.smtpserver}) count
every final dot they receive (a message whose dot arrived may have been
delivered, whatever the client saw), a loopback DNS server gives
C{example.test} its MX, and the relay runs in this process (a queue on a
stepped reactor) or as a real C{twistd gopherpost} process.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gopherpost.relay.journal import JOURNAL_DIRECTORY
from gopherpost.spool import Envelope, Spool
from tests.support.relay import RelayHarness, eventually, startRemoteDomain
from tests.support.server import TwistdProcess, freePort, serverEnvironment
from tests.support.smtpserver import SILENT, ReceivedMessage

_SENDER = "alice@gopherpost.test"


def _subject(message: ReceivedMessage) -> bytes:
    for line in message.data.split(b"\r\n"):
        if line.startswith(b"Subject: "):
            return line[len(b"Subject: ") :]
    return b""


def _counts(messages: list[ReceivedMessage]) -> dict[bytes, int]:
    counts: dict[bytes, int] = {}
    for message in messages:
        counts[_subject(message)] = counts.get(_subject(message), 0) + 1
    return counts


def _spoolMessages(spool: Spool, count: int) -> Deferred[list[Envelope]]:
    """
    Store C{count} messages for C{bob@example.test}, numbered in their
    subjects, one after the other (before any relay looks at the spool).
    """

    @inlineCallbacks
    def store() -> Any:
        envelopes = []
        for n in range(count):
            envelope = yield spool.store(
                b"Subject: message %03d\r\n\r\nbody\r\n" % n, _SENDER, [("bob@example.test", False)]
            )
            envelopes.append(envelope)
        return envelopes

    return store()


def _relayStates(path: str) -> dict[str, bytes]:
    """
    The relay's state files and journals in a spool: what a crash at this
    instant would leave.
    """
    states = {}
    journals = os.path.join(".gopherpost", JOURNAL_DIRECTORY)
    for directory in os.listdir(path):
        if not directory[:1].isdigit():
            continue
        for name in os.listdir(os.path.join(path, directory)):
            if name.endswith((".relay", ".relayed")):
                with open(os.path.join(path, directory, name), "rb") as f:
                    states[os.path.join(directory, name)] = f.read()
    for name in os.listdir(os.path.join(path, journals)):
        with open(os.path.join(path, journals, name), "rb") as f:
            states[os.path.join(journals, name)] = f.read()
    return states


def _restoreStates(path: str, states: dict[str, bytes]) -> None:
    for name in _relayStates(path):
        os.unlink(os.path.join(path, name))
    for name, content in states.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(content)


class InProcessTests(TestCase):
    """
    One connection carrying six messages, interrupted after the third.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.dns, self.receiver = startRemoteDomain(self)
        self.harness = RelayHarness(self, self.dns, self.receiver.port)
        yield _spoolMessages(self.harness.spool, 6)

    def quiet(self) -> bool:
        queue = self.harness.queue
        return queue is not None and queue.queueDepth() == 0 and not queue.busy

    @inlineCallbacks
    def test_stopMidBatch(self) -> Any:
        """
        The queue is stopped while the remote is about to accept the third
        message: that reply is awaited and recorded, the rest waits for
        the next start; nothing is delivered twice.
        """
        stopping: list[Deferred[None]] = []

        def stopAtThird(argument: str) -> Any:
            if len(self.receiver.finalDots) == 3 and not stopping:
                assert self.harness.queue is not None
                stopping.append(self.harness.queue.stopService())
            return None

        self.receiver.replies["dataEnd"] = stopAtThird
        self.harness.startQueue()
        yield eventually(lambda: bool(stopping))
        yield stopping[0]
        self.assertEqual(len(self.receiver.messages), 3)
        self.assertEqual(self.receiver.connectionsMade, 1)
        self.harness.startQueue()
        yield eventually(lambda: len(self.receiver.finalDots) >= 6 and self.quiet())
        self.assertEqual(set(_counts(self.receiver.finalDots).values()), {1})
        self.assertEqual(len(self.receiver.finalDots), 6)
        self.assertEqual(self.harness.audit.named("delivery.deferral"), [])

    @inlineCallbacks
    def test_crashMidBatch(self) -> Any:
        """
        A crash image taken when the remote has the fourth message's final
        dot (three replies read, the fourth not yet sent): a queue restarted
        on it sends the fourth message again (the one in flight) and the
        ones not sent yet, not the three recorded.
        """
        image: dict[str, bytes] = {}

        def snapshotAtFourth(argument: str) -> Any:
            if len(self.receiver.finalDots) == 4:
                image.update(_relayStates(self.harness.path))
            return None

        self.receiver.replies["dataEnd"] = snapshotAtFourth
        first = self.harness.startQueue()
        yield eventually(lambda: len(self.receiver.finalDots) == 6 and self.quiet())
        yield first.stopService()
        # Three outcomes, in the attempt's journal (the states are written
        # when the attempt ends).
        [journal] = image.values()
        self.assertEqual(journal.count(b"\n"), 3)
        beforeCrash = {_subject(m) for m in self.receiver.finalDots[:4]}
        _restoreStates(self.harness.path, image)
        self.harness.startQueue()
        yield eventually(lambda: len(self.receiver.finalDots) >= 9 and self.quiet())
        inFlight = _subject(self.receiver.finalDots[3])
        notYetSent = {_subject(m) for m in self.receiver.finalDots[4:6]}
        again = [_subject(m) for m in self.receiver.finalDots[6:]]
        self.assertEqual(sorted(again), sorted({inFlight} | notYetSent))
        self.assertEqual(beforeCrash & set(again), {inFlight})
        self.assertEqual(len(self.receiver.finalDots), 9)


class DaemonTests(TestCase):
    """
    A real C{twistd gopherpost} relaying mail it found in its spool,
    stopped in the middle.
    """

    timeout = 240

    @inlineCallbacks
    def startDaemon(self, count: int, **environ: str) -> Any:
        """
        Spool C{count} messages, then start the server on that spool,
        relaying to this test's receiving server.
        """
        self.dns, self.receiver = startRemoteDomain(self)
        self.path = os.path.abspath(self.mktemp())
        spool = Spool(self.path, reactor)
        spool.open()
        yield _spoolMessages(spool, count)
        self.environ = serverEnvironment(
            self.path,
            freePort(),
            SMTP_DNS_SERVERS=f"{self.dns.host}:{self.dns.port}",
            SMTP_OUTBOUND_PORT=str(self.receiver.port),
            SMTP_OUTBOUND_TLS="may",
            **environ,
        )
        self.outputs: list[bytes] = []
        return self.start()

    def start(self) -> TwistdProcess:
        server = TwistdProcess(self.environ)
        self.addCleanup(server.kill)
        return server

    def finish(self, server: TwistdProcess) -> Deferred[int]:
        """
        Wait (in a thread) for C{server} to exit; keep what it printed.
        """

        def wait() -> int:
            code, out, err = server.finish(timeout=120)
            self.outputs.append(out + err)
            return code

        return deferToThread(wait)

    @inlineCallbacks
    def deliverTheRest(self, count: int) -> Any:
        """
        Start the server again and let it deliver everything; stop it.
        """
        server = self.start()
        yield eventually(lambda: len(_counts(self.receiver.finalDots)) >= count, timeout=120)
        # Whatever is still to come arrives now; then stop for good.
        yield deferLater(reactor, 1.0, lambda: None)
        os.kill(server.process.pid, signal.SIGTERM)
        code = yield self.finish(server)
        self.assertIn(code, (0, -signal.SIGTERM))

    def assertNoTracebacks(self) -> None:
        for output in self.outputs:
            self.assertNotIn(b"Traceback", output, output.decode("utf-8", "replace")[-3000:])

    @inlineCallbacks
    def test_sigterm(self) -> Any:
        """
        SIGTERM while the remote is about to accept the fifth of twelve
        messages on one connection: the relay waits for that reply, records
        it and exits; restarted, it sends the other seven; none twice.
        """
        server = yield self.startDaemon(12)
        terminated: list[int] = []

        def terminateAtFifth(argument: str) -> Any:
            if len(self.receiver.finalDots) == 5 and not terminated:
                terminated.append(len(self.receiver.sessions))
                os.kill(server.process.pid, signal.SIGTERM)
                return deferLater(reactor, 0.3, lambda: None)
            return None

        self.receiver.replies["dataEnd"] = terminateAtFifth
        code = yield self.finish(server)
        self.assertIn(code, (0, -signal.SIGTERM))
        self.assertEqual(terminated, [1])
        self.assertEqual(len(self.receiver.messages), 5)
        yield self.deliverTheRest(12)
        counts = _counts(self.receiver.finalDots)
        self.assertEqual(len(counts), 12)
        self.assertEqual({s: n for s, n in counts.items() if n > 1}, {})
        self.assertNoTracebacks()

    @inlineCallbacks
    def test_killNine(self) -> Any:
        """
        SIGKILL while two connections carry batches of twenty: after the
        restart every message arrives, and the ones sent twice are at most
        the messages in flight, one per connection.
        """
        server = yield self.startDaemon(60, SMTP_DESTINATION_CONCURRENCY="2")
        killed: list[int] = []

        def killAt25th(argument: str) -> Any:
            if len(self.receiver.finalDots) == 25 and not killed:
                killed.append(len(self.receiver.sessions))
                server.killGroup()
                return SILENT
            return None

        self.receiver.replies["dataEnd"] = killAt25th
        yield deferToThread(server.process.wait, 60)
        self.assertTrue(killed)
        connections = killed[0]
        self.assertTrue(1 <= connections <= 2, connections)
        del self.receiver.replies["dataEnd"]
        yield self.deliverTheRest(60)
        counts = _counts(self.receiver.finalDots)
        self.assertEqual(len(counts), 60)
        duplicates = sum(n - 1 for n in counts.values())
        self.assertLessEqual(duplicates, connections, counts)
        self.assertNoTracebacks()
