"""
Tests for L{gopherpost.webhooks.process} and L{gopherpost.webhooks.channel}:
the courier as a real child process, driven by the server's side.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost.config import settingsFromEnvironment
from gopherpost.spool import Spool
from gopherpost.webhooks.channel import CourierUnavailable, ForwardingReporter, Report, chunks
from gopherpost.webhooks.process import NICENESS, CourierProcess
from gopherpost.webhooks.records import INBOUND
from gopherpost.webhooks.service import WebhookService, makeWebhookService
from tests.support.server import freePort, serverEnvironment
from tests.support.webhooks import WebhookReceiver, newSecret, verifyWebhook, waitUntil

SECRET = newSecret()


class CourierProcessTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def receiver(self, *args: Any, **kwargs: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(*args, **kwargs).start()
        self.addCleanup(receiver.stop)
        return receiver

    def start(self, receiver: WebhookReceiver, **variables: str) -> tuple[WebhookService, Spool]:
        environ = serverEnvironment(
            self.path,
            freePort(),
            SMTP_WEBHOOK_URL=receiver.url,
            SMTP_WEBHOOK_SECRET=SECRET,
            SMTP_WEBHOOK_RETRY_INITIAL="3600",
            SMTP_WEBHOOK_RETRY_MAX="3600",
            **variables,
        )
        settings = settingsFromEnvironment(environ)
        spool = Spool(self.path, reactor)
        spool.open()
        service = makeWebhookService(settings, spool, reactor, environ)
        assert isinstance(service, WebhookService)
        spool.addObserver(service)
        service.startService()
        self.addCleanup(service.stopService)
        return service, spool

    async def commit(self, spool: Spool) -> str:
        envelope = await spool.store(
            b"Subject: hello\r\n\r\nhi\r\n", "a@example.test", [("support@gopherpost.test", True)]
        )
        return envelope.queueId

    async def _delivers(self) -> None:
        receiver = self.receiver()
        service, spool = self.start(receiver)
        queueId = await self.commit(spool)
        await receiver.waitFor(1)
        self.assertEqual(verifyWebhook(SECRET, receiver.requests[0])["id"], queueId)
        await waitUntil(lambda: service.metrics.deliveries[INBOUND, "delivered"] == 1)
        pid = service.courier.pid
        with open(f"/proc/{pid}/stat") as f:
            nice = int(f.read().rsplit(")", 1)[1].split()[16])
        self.assertEqual(nice, min(19, os.nice(0) + NICENESS))
        if hasattr(os, "SCHED_IDLE"):
            self.assertEqual(os.sched_getscheduler(pid), os.SCHED_IDLE)

    def test_delivers(self):
        """
        The child process posts the webhook; its numbers reach the server's
        metrics; it runs at a lower CPU priority.
        """
        return ensureDeferred(self._delivers())

    async def _operations(self) -> None:
        receiver = self.receiver(default=503)
        service, spool = self.start(receiver)
        first, second = await self.commit(spool), await self.commit(spool)
        await receiver.waitFor(2)
        await waitUntil(lambda: service.metrics.deliveries[INBOUND, "failed"] == 2)
        total, items = await service.listPending()
        self.assertEqual(total, 2)
        self.assertEqual([i["id"] for i in items], [first, second])
        self.assertEqual((items[0]["attempts"], items[0]["last_status"]), (1, 503))
        self.assertEqual(items[0]["last_error"], "HTTP 503 Service Unavailable")
        self.assertEqual((await service.listPending("events"))[0], 0)
        self.assertEqual((await service.listPending(offset=1, limit=1))[1][0]["id"], second)

        receiver.setDefault(200)
        self.assertEqual(await service.retryNow([first]), 1)
        await receiver.waitFor(3)
        self.assertEqual(receiver.ids()[2], first)
        await waitUntil(lambda: service.metrics.pendingByKind[INBOUND] == 1)

        self.assertEqual(await service.drop([second]), 1)
        self.assertEqual(await service.listPending(), (0, []))
        self.assertEqual(await service.drop([second]), 0)
        self.assertEqual(await service.retryNow(), 0)
        await waitUntil(lambda: service.metrics.deliveries[INBOUND, "dropped"] == 1)
        self.assertEqual(len(receiver.requests), 3)

    def test_operations(self):
        """
        List, retry now and drop work across the process boundary.
        """
        return ensureDeferred(self._operations())

    async def _restart(self) -> None:
        receiver = self.receiver(default=503)
        service, spool = self.start(receiver)
        queueId = await self.commit(spool)
        await receiver.waitFor(1)
        courier = service.courier
        assert isinstance(courier, CourierProcess)
        pid = courier.pid
        assert pid is not None
        receiver.setDefault(200)
        os.kill(pid, signal.SIGKILL)
        await waitUntil(lambda: courier.pid not in (None, pid))
        await receiver.waitFor(2)
        self.assertEqual(receiver.ids(), [queueId, queueId])
        lines = [formatEvent(e) for e in self.log]
        self.assertTrue(any("The webhook courier ended" in line for line in lines), lines)

    def test_restartAfterCrash(self):
        """
        A courier that dies is started again, and posts what was pending.
        """
        return ensureDeferred(self._restart())

    async def _stopped(self) -> None:
        receiver = self.receiver()
        service, spool = self.start(receiver)
        courier = service.courier
        assert isinstance(courier, CourierProcess)
        await waitUntil(lambda: courier.pid is not None)
        pid = courier.pid
        assert pid is not None
        await maybeDeferred(service.stopService)
        self.assertIsNone(courier.pid)
        with self.assertRaises(CourierUnavailable):
            await service.listPending()
        self.assertFalse(os.path.exists(f"/proc/{pid}/stat") and _alive(pid))

    def test_stop(self):
        """
        Stopping the server stops the courier; operations then fail with a
        clear error.
        """
        return ensureDeferred(self._stopped())


def _alive(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


class ChannelTests(SynchronousTestCase):
    def test_chunks(self) -> None:
        lines = [f"line {i:04d}" for i in range(1000)]
        pieces = list(chunks(lines, limit=1000))
        self.assertTrue(all(len(p.encode()) <= 1000 for p in pieces))
        self.assertEqual("\n".join(pieces).split("\n"), lines)
        self.assertEqual(list(chunks(["x" * 2000], limit=1000)), ["x" * 2000])
        self.assertEqual(list(chunks([])), [])

    def test_reporterBatches(self) -> None:
        """
        The courier's numbers go to the server in one report per interval.
        """
        clock = Clock()
        sent: list[dict[str, Any]] = []
        reporter = ForwardingReporter(clock, lambda command, **kw: sent.append(kw))
        reporter.count(INBOUND, "delivered")
        reporter.count(INBOUND, "delivered")
        reporter.pending(INBOUND, 4)
        self.assertEqual(sent, [])
        clock.advance(0.5)
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0]["counts"], '[["inbound", "delivered", 2]]')
        self.assertEqual(sent[0]["pending"], '{"inbound": 4}')
        clock.advance(10)
        self.assertEqual(len(sent), 1)
        self.assertIs(Report.requiresAnswer, False)


class CourierMainTests(TestCase):
    timeout = 120

    def test_stopTwiceQuietly(self) -> Any:
        """
        SIGTERM and the server going away at the same moment (systemd
        signals the whole control group) stop the courier once, without a
        traceback.
        """
        import subprocess
        import sys
        import time

        from twisted.internet.threads import deferToThread

        from tests.support.server import REPOSITORY

        path = os.path.abspath(self.mktemp())
        environ = serverEnvironment(
            path, freePort(), SMTP_WEBHOOK_URL="http://127.0.0.1:9/hook", SMTP_WEBHOOK_SECRET=SECRET
        )
        environ.update(PATH=os.environ.get("PATH", "/usr/bin:/bin"), PYTHONPATH=REPOSITORY)

        def run() -> tuple[int, bytes]:
            process = subprocess.Popen(
                [sys.executable, "-m", "gopherpost.webhooks.process"],
                env=environ,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            assert process.stderr is not None and process.stdin is not None
            deadline = time.monotonic() + 60
            seen = b""
            while b"Webhooks ready" not in seen and time.monotonic() < deadline:
                seen += process.stderr.readline()
            process.send_signal(signal.SIGTERM)
            process.stdin.close()
            rest = process.stderr.read()
            return process.wait(30), seen + rest

        def check(result: tuple[int, bytes]) -> None:
            code, log = result
            self.assertIn(b"Webhooks ready", log)
            self.assertNotIn(b"Traceback", log)
            self.assertNotIn(b"ReactorNotRunning", log)
            self.assertEqual(code, 0)

        return deferToThread(run).addCallback(check)
