"""
Kill -9 at every step of the spool's commit path, with a real C{twistd}
process: the server SIGKILLs itself when a message reaches the step named by
C{GOPHERPOST_TEST_CRASH_AT} (L{gopherpost.faults}), and the test checks what
it left on disk before and after recovery.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import time

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gopherpost.faults import COMMIT_STEPS
from gopherpost.spool import Spool
from tests.support.server import TwistdProcess, freePort, serverEnvironment, waitForPort

RECIPIENTS = ("bob@gopherpost.test", "carol@gopherpost.test")


def body(number: int) -> bytes:
    """
    Message C{number}: odd ones are larger than the spool's spill threshold
    (written to their file while they arrive), even ones stay in memory.
    """
    lines = 4000 if number % 2 else 10
    return (
        b"Subject: crash test %d\r\n\r\n" % number
        + (b"y" * 70 + b"\r\n") * lines
        + b"END %d\r\n" % number
    )


def onDisk(queuePath: str) -> dict:
    """
    What the spool holds: per queue id its C{.eml} contents and its envelope
    (parsed, or C{"unreadable"}), and what is under C{tmp/}.
    """
    messages: dict = {}
    envelopes: dict = {}
    for directory in sorted(os.listdir(queuePath)):
        if not directory[:4].isdigit():
            continue
        for name in os.listdir(os.path.join(queuePath, directory)):
            path = os.path.join(queuePath, directory, name)
            with open(path, "rb") as f:
                data = f.read()
            if name.endswith(".eml"):
                messages.setdefault(name.split("_")[0], []).append(data)
            elif name.endswith(".envelope"):
                try:
                    envelopes[name[: -len(".envelope")]] = json.loads(data)
                except ValueError:
                    envelopes[name[: -len(".envelope")]] = "unreadable"
    return {
        "messages": messages,
        "envelopes": envelopes,
        "tmp": os.listdir(os.path.join(queuePath, "tmp")),
    }


class CrashAtEveryStepTests(TestCase):
    """
    For every step of the commit path: one client sends messages one after
    the other (small and spilled, two recipients each) until the server
    kills itself at that step of a message.  Then every acknowledged message
    is on disk whole, every visible message (one with an envelope) is whole,
    and after the next start's recovery nothing half-written is left.
    """

    timeout = 180

    def crash(self, step: str, occurrence: int, strategy: str | None) -> object:
        path = os.path.abspath(self.mktemp())
        port = freePort()
        environ = serverEnvironment(path, port, GOPHERPOST_TEST_CRASH_AT=f"{step}:{occurrence}")
        if strategy:
            environ["GOPHERPOST_TEST_SYNC"] = strategy
        server = TwistdProcess(environ)
        self.addCleanup(server.kill)
        acknowledged: dict[str, int] = {}

        def send() -> tuple[int, dict[str, int], int]:
            waitForPort(port, time.monotonic() + 60)
            number = 0
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    client.ehlo("client.test")
                    while number < occurrence + 2:
                        client.mail("alice@gopherpost.test")
                        for recipient in RECIPIENTS:
                            client.rcpt(recipient)
                        code, text = client.data(body(number))
                        if code == 250:
                            acknowledged[text.split()[-1].decode()] = number
                        number += 1
            except (OSError, smtplib.SMTPException):
                pass
            return server.process.wait(timeout=60), dict(acknowledged), number

        def check(result: tuple[int, dict[str, int], int]) -> None:
            code, acked, sent = result
            self.assertEqual(code, -signal.SIGKILL, f"the server was not killed at {step}")
            # The killed message was the occurrence-th; from "acknowledged"
            # on, its 250 was sent before the kill.
            afterAck = COMMIT_STEPS.index(step) >= COMMIT_STEPS.index("acknowledged")
            self.assertEqual(sent, occurrence if afterAck else occurrence - 1)
            self.assertEqual(len(acked), occurrence if afterAck else occurrence - 1)
            before = onDisk(path)
            for queueId, number in acked.items():
                self.assertIn(queueId, before["envelopes"], step)
                contents = before["messages"][queueId]
                self.assertEqual(len(contents), len(RECIPIENTS), step)
                for content in contents:
                    self.assertTrue(content.startswith(b"Received: "), step)
                    self.assertTrue(content.endswith(body(number)), step)
            for queueId, envelope in before["envelopes"].items():
                self.assertNotEqual(envelope, "unreadable", step)
                contents = before["messages"].get(queueId, [])
                self.assertEqual(len(contents), len(envelope["recipients"]), step)
                self.assertEqual(len(set(contents)), 1, step)
                self.assertEqual(len(contents[0]), envelope["size"], step)
                self.assertRegex(contents[0][-12:], rb"END \d+\r\n$")
            Spool(path, reactor).open()
            after = onDisk(path)
            self.assertEqual(after["tmp"], [], step)
            self.assertEqual(set(after["messages"]), set(after["envelopes"]), step)
            self.assertEqual(after["envelopes"], before["envelopes"], step)
            self.assertLessEqual(set(acked), set(after["envelopes"]), step)
            self.flushLoggedErrors()

        return deferToThread(send).addCallback(check)


def _addTests() -> None:
    for index, step in enumerate(COMMIT_STEPS):
        name = step.replace("-", "_")

        def rangeTest(self: CrashAtEveryStepTests, step: str = step) -> object:
            return self.crash(step, 3, "range")

        def defaultTest(self: CrashAtEveryStepTests, step: str = step) -> object:
            return self.crash(step, 2, None)

        rangeTest.__doc__ = f"Killed at {step!r} of a small message, journaled strategy."
        defaultTest.__doc__ = (
            f"Killed at {step!r} of a spilled message, the strategy chosen for this file system."
        )
        setattr(CrashAtEveryStepTests, f"test_{index}_{name}_range", rangeTest)
        setattr(CrashAtEveryStepTests, f"test_{index}_{name}_default", defaultTest)


_addTests()
