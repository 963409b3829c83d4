"""
The inbound webhook with a real C{twistd} server, C{smtplib} as the client
and a real receiver: kill -9 with webhooks pending, then restart: each
delivered, none lost; and what the server logs.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.server import REPOSITORY, freePort, serverEnvironment, waitForPort
from tests.support.webhooks import WebhookReceiver, newSecret, verifyWebhook, waitUntil

SECRET = newSecret()
MESSAGES = 8


def _send(port: int, count: int, first: int = 0) -> list[str]:
    """
    Send C{count} messages (blocking); return their subjects.
    """
    subjects = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for number in range(first, first + count):
            message = EmailMessage()
            message["From"] = "Alice <alice@gopherpost.test>"
            message["To"] = "support@gopherpost.test"
            message["Subject"] = f"Ticket {number} — ça brûle"
            message.set_content("The printer is on fire.\n")
            message.add_attachment(
                b"\x89PNG" + bytes(300), maintype="image", subtype="png", filename="fire.png"
            )
            client.send_message(message)
            subjects.append(str(message["Subject"]))
    return subjects


class _Server:
    """
    C{twistd -n gopherpost} with its output (its courier's included) in a
    file the test can read while it runs.
    """

    def __init__(self, environ: dict[str, str], logPath: str) -> None:
        self.logPath = logPath
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPOSITORY}
        env.update(environ)
        with open(logPath, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from twisted.scripts.twistd import run; run()",
                    "--nodaemon",
                    "--pidfile=",
                    "gopherpost",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> bytes:
        with open(self.logPath, "rb") as f:
            return f.read()

    def killNine(self) -> int:
        """
        SIGKILL the server and its courier at once, like a crash (blocking).
        """
        os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(30)

    def terminate(self) -> int:
        """
        SIGTERM, as systemd stops it (blocking).
        """
        self.process.terminate()
        return self.process.wait(60)

    def cleanUp(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(30)


class KillNineTests(TestCase):
    timeout = 240

    def receiver(self, *args: Any, **kwargs: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(*args, **kwargs).start()
        self.addCleanup(receiver.stop)
        return receiver

    async def server(self, environ: dict[str, str], name: str) -> _Server:
        server = _Server(environ, os.path.join(self.directory, name + ".log"))
        self.addCleanup(lambda: deferToThread(server.cleanUp))
        await deferToThread(waitForPort, int(environ["SMTP_PORT"]), time.monotonic() + 60)
        return server

    async def _killNine(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        receiver = self.receiver(default=503)
        port = freePort()
        environ = serverEnvironment(
            os.path.join(self.directory, "spool"),
            port,
            SMTP_WEBHOOK_URL=receiver.url,
            SMTP_WEBHOOK_SECRET=SECRET,
            # No retry before the kill: every webhook stays pending.
            SMTP_WEBHOOK_RETRY_INITIAL="3600",
        )
        first = await self.server(environ, "first")
        subjects = await deferToThread(_send, port, MESSAGES)
        # Some webhooks were tried (and refused); maybe not all yet.
        await receiver.waitFor(1)
        self.assertEqual(await deferToThread(first.killNine), -signal.SIGKILL)
        refused = len(receiver.requests)
        self.assertTrue(all(r.answer == 503 for r in receiver.requests))

        receiver.setDefault(200)
        second = await self.server(environ, "second")
        await waitUntil(lambda: len(receiver.requests) - refused >= MESSAGES, timeout=120)
        delivered = receiver.requests[refused:]
        documents = [verifyWebhook(SECRET, r) for r in delivered]
        self.assertEqual(sorted(d["subject"] for d in documents), sorted(subjects))
        self.assertEqual(len({r.headers["webhook-id"] for r in delivered}), MESSAGES)
        self.assertTrue(all(d["attachments"][0]["filename"] == "fire.png" for d in documents))
        await waitUntil(lambda: second.log().count(b"result=delivered") == MESSAGES)
        self.assertIn(await deferToThread(second.terminate), (0, -signal.SIGTERM))

        # A third start finds nothing left to post.
        third = await self.server(environ, "third")
        await waitUntil(lambda: b"Webhooks ready:" in third.log(), timeout=60)
        self.assertIn(b"Webhooks ready: 0 pending from before the start", third.log())
        await deferToThread(third.terminate)
        self.assertEqual(len(receiver.requests), refused + MESSAGES)
        for server in (first, second, third):
            self.assertNotIn(b"Traceback", server.log())

    def test_killNine(self):
        """
        kill -9 of the server (and its courier) with webhooks pending, then
        a restart: each webhook is delivered, none is lost, none twice
        after the restart; a third start sends nothing; no traceback.
        """
        return ensureDeferred(self._killNine())
