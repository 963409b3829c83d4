"""
Tests for inbound worker processes: L{gopherpost.inbound.ipc} and
L{gopherpost.inbound.workers}.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import threading
import time
import urllib.request

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ReactorNotRunning
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost.inbound.ipc import (
    FLUSH_INTERVAL,
    MAX_EVENTS_PER_BATCH,
    AuditEvents,
    ForwardingAuditLog,
    ForwardingSpoolObserver,
    ParentChannel,
    QuietAMP,
)
from gopherpost.inbound.worker import _ChildChannel, _share
from gopherpost.spool import Envelope
from tests.support.inbound import RecordingAudit
from tests.support.relay import eventually, startRemoteDomain
from tests.support.server import TwistdProcess, freePort, serverEnvironment, waitForPort


class RecordingSpool:
    """
    The parent's spool, as the channel sees it.
    """

    def __init__(self):
        self.spooled = []

    def announceStored(self, dateDirectory, queueId):
        self.spooled.append((queueId, dateDirectory))


def committed(queueId: str, dateDirectory: str) -> Envelope:
    """
    The envelope of a message a worker committed.
    """
    return Envelope(queueId, dateDirectory, 0.0, "", (), "192.0.2.1", "x", 1, False)


class ChannelTests(SynchronousTestCase):
    """
    What a worker sends reaches the parent's audit log and relay queue.
    """

    def setUp(self) -> None:
        self.audit = RecordingAudit()
        self.relay = RecordingSpool()
        self.parent = ParentChannel(self.audit, self.relay)
        self.parentTransport = StringTransport()
        self.parent.makeConnection(self.parentTransport)
        self.child = QuietAMP()
        self.childTransport = StringTransport()
        self.child.makeConnection(self.childTransport)
        self.clock = Clock()
        self.forwardingAudit = ForwardingAuditLog(self.clock, self.child.callRemote)
        self.sent: list[object] = []

        def send(command, **arguments):
            self.sent.append(command)
            return self.child.callRemote(command, **arguments)

        self.forwardingRelay = ForwardingSpoolObserver(self.clock, send, self.forwardingAudit.flush)

    def pump(self) -> None:
        self.parent.dataReceived(self.childTransport.value())
        self.childTransport.clear()

    def test_auditBatched(self) -> None:
        """
        Events wait at most L{FLUSH_INTERVAL} and go in one message, and the
        parent emits each again with its fields.
        """
        self.forwardingAudit.emit("session.start", client="192.0.2.1")
        self.forwardingAudit.emit("smtp.helo", client="192.0.2.1", helo="c.test")
        self.assertEqual(self.childTransport.value(), b"")
        self.clock.advance(FLUSH_INTERVAL)
        self.pump()
        self.assertEqual(
            self.audit.events,
            [
                ("session.start", {"client": "192.0.2.1"}),
                ("smtp.helo", {"client": "192.0.2.1", "helo": "c.test"}),
            ],
        )

    def test_fullBatchGoesAtOnce(self) -> None:
        """
        A full batch does not wait for the timer.
        """
        for n in range(MAX_EVENTS_PER_BATCH):
            self.forwardingAudit.emit("x", n=n)
        self.pump()
        self.assertEqual(len(self.audit.events), MAX_EVENTS_PER_BATCH)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_messageSpooled(self) -> None:
        """
        A spooled message reaches the parent's relay queue, after the audit
        events that came before it.
        """
        self.forwardingAudit.emit(
            "message.queued", queueId="Q1", client="192.0.2.1", size=1, recipients=1, tls=False
        )
        self.forwardingRelay.messageCommitted(committed("Q1", "2026-11-22"))
        self.clock.advance(0)
        self.pump()
        self.assertEqual(self.relay.spooled, [("Q1", "2026-11-22")])
        self.assertEqual([name for name, _ in self.audit.events], ["message.queued"])

    def test_messagesSpooledTogether(self) -> None:
        """
        Messages spooled in one reactor turn go to the parent in one AMP
        message at the end of the turn, in order; a large turn is split.
        """
        from gopherpost.inbound.ipc import MAX_MESSAGES_PER_NOTICE, MessagesSpooled

        for n in range(3):
            self.forwardingRelay.messageCommitted(committed(f"Q{n}", "2026-11-22"))
        self.assertEqual(self.childTransport.value(), b"")
        self.clock.advance(0)
        self.pump()
        self.assertEqual(self.relay.spooled, [(f"Q{n}", "2026-11-22") for n in range(3)])
        self.assertEqual(self.sent, [MessagesSpooled])
        for n in range(MAX_MESSAGES_PER_NOTICE + 1):
            self.forwardingRelay.messageCommitted(committed(f"R{n}", "2026-11-23"))
        self.forwardingRelay.flush()
        self.pump()
        self.assertEqual(len(self.relay.spooled), 3 + MAX_MESSAGES_PER_NOTICE + 1)
        self.assertEqual(self.sent, [MessagesSpooled] * 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_wireFormat(self) -> None:
        """
        Audit events travel as a JSON list of C{[name, fields]}.
        """
        self.child.callRemote(AuditEvents, events=json.dumps([["a", {"k": 1}]]))
        self.pump()
        self.assertEqual(self.audit.events, [("a", {"k": 1})])

    def test_counterIncrements(self) -> None:
        """
        A worker's counter increments are added up for about a second and
        reach the parent's counters of that source; unknown sources and
        counters are ignored.
        """
        from gopherpost.checks.metrics import CheckMetrics, ForwardedCheckMetrics
        from gopherpost.inbound.ipc import COUNTER_FLUSH_INTERVAL, ForwardingCounters

        parentCounts = CheckMetrics()
        self.parent = ParentChannel(self.audit, self.relay, {"checks": parentCounts})
        self.parent.makeConnection(self.parentTransport)
        counters = ForwardingCounters(self.clock, self.child.callRemote)
        workerCounts = ForwardedCheckMetrics(counters.add)
        workerCounts.inc("smtp_spf_results", "pass")
        workerCounts.inc("smtp_spf_results", "pass")
        workerCounts.inc("smtp_bans")
        with self.assertRaises(ValueError):
            workerCounts.inc("smtp_bans", "extra")
        counters.add("other", "smtp_bans", ())
        counters.add("checks", "no_such_counter", ())
        self.pump()
        self.assertEqual(parentCounts.value("smtp_spf_results", "pass"), 0)
        self.clock.advance(COUNTER_FLUSH_INTERVAL)
        self.pump()
        self.assertEqual(parentCounts.value("smtp_spf_results", "pass"), 2)
        self.assertEqual(parentCounts.value("smtp_bans"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_share(self) -> None:
        """
        Connection limits are divided between workers, rounding up; 0 stays
        unlimited.
        """
        self.assertEqual(_share(1000, 2), 500)
        self.assertEqual(_share(5, 2), 3)
        self.assertEqual(_share(1, 4), 1)
        self.assertEqual(_share(0, 2), 0)


class ChildChannelTests(SynchronousTestCase):
    """
    The worker's end of the channel.
    """

    def test_parentGoneStops(self) -> None:
        """
        When the parent's pipe closes, the worker's reactor stops.
        """

        class Reactor:
            running = True
            stops = 0

            def stop(self) -> None:
                self.stops += 1

        reactor = Reactor()
        channel = _ChildChannel(reactor)
        channel.makeConnection(StringTransport())
        channel.connectionLost()
        self.assertEqual(reactor.stops, 1)

    def test_parentGoneWhileStopping(self) -> None:
        """
        A pipe that closes while the worker already shuts down (SIGTERM to
        the process group) is no error.
        """

        class Reactor:
            running = True

            def stop(self) -> None:
                raise ReactorNotRunning("Can't stop reactor that isn't running.")

        channel = _ChildChannel(Reactor())
        channel.makeConnection(StringTransport())
        channel.connectionLost()


class WorkerPoolTests(TestCase):
    """
    A real C{twistd gopherpost} with two inbound workers.
    """

    timeout = 120

    @inlineCallbacks
    def test_group(self):
        """
        Mail accepted by the workers is stored, relayed by the parent through
        the loopback DNS to the MX, and counted in the parent's metrics; a
        worker killed with SIGKILL is replaced and mail keeps flowing.
        """
        dns, receiver = startRemoteDomain(self)
        path = os.path.abspath(self.mktemp())
        port, httpPort = freePort(), freePort()
        server = TwistdProcess(
            serverEnvironment(
                path,
                port,
                SMTP_WORKERS="2",
                SMTP_DNS_SERVERS="%s:%d" % dns.address,
                SMTP_OUTBOUND_PORT=str(receiver.port),
                SMTP_OUTBOUND_TLS="none",
                SMTP_HEALTH_DISABLE="false",
                SMTP_HEALTH_ADDR="127.0.0.1:%d" % httpPort,
            )
        )
        self.addCleanup(server.kill)
        sent = []

        def send(count, tag):
            def one(n):
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    client.sendmail(
                        "alice@gopherpost.test",
                        ["bob@example.test", "carol@gopherpost.test"],
                        b"Subject: %s %d\r\n\r\nhello\r\n" % (tag, n),
                    )
                    sent.append((tag, n))

            threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)

        def metrics():
            # No proxy: Debian's package builds set http_proxy to a dead port.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open("http://127.0.0.1:%d/metrics" % httpPort, timeout=10) as r:
                return json.load(r)

        def workerPIDs():
            out = os.popen("pgrep -f gopherpost.inbound.worker -P %d" % server.process.pid).read()
            return sorted(int(pid) for pid in out.split())

        def waitForWorkers(ready):
            # Polls another process tree, in a thread, bounded.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = workerPIDs()
                if ready(now):
                    return now
                time.sleep(0.05)
            return workerPIDs()

        def first():
            waitForPort(port, time.monotonic() + 60)
            pids = waitForWorkers(lambda now: len(now) >= 2)
            send(10, b"first")
            return pids

        pids = yield deferToThread(first)
        self.assertEqual(len(pids), 2)
        yield eventually(lambda: len(receiver.messages) == 10, timeout=60)
        counted = yield deferToThread(metrics)
        self.assertEqual(counted["smtp_messages_queued_total"], 10)

        def killOne():
            os.kill(pids[0], signal.SIGKILL)
            replaced = waitForWorkers(lambda now: len(now) == 2 and pids[0] not in now)
            send(10, b"second")
            return replaced

        replaced = yield deferToThread(killOne)
        self.assertEqual(len(replaced), 2)
        self.assertNotIn(pids[0], replaced)
        self.assertEqual(len(sent), 20)
        yield eventually(lambda: len(receiver.messages) == 20, timeout=60)
        self.assertEqual(
            sorted(m.recipients[0] for m in receiver.messages), ["bob@example.test"] * 20
        )
