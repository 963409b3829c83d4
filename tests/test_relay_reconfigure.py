"""
Live reload of the relay queue (L{gopherpost.relay.queue.RelayQueue.reconfigure}
through L{gopherpost.reload.parts.RelayReload}): new attempts use the new
courier and settings, messages already queued get the new retry schedule,
attempts in progress finish on the courier they started with.  And the
same with a real server: an edited env file, a reload, a new smarthost.
"""

from __future__ import annotations

import os
import smtplib
from dataclasses import replace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gopherpost.relay.outcome import DEFERRED, SENT
from gopherpost.relay.state import DELIVERED
from gopherpost.reload.parts import RelayReload
from gopherpost.tap import Options, makeService
from tests.support.operations import shortDirectory
from tests.support.relay import eventually
from tests.support.server import freePort, serverEnvironment
from tests.support.smtpserver import SMTPTestServer
from tests.test_queue import QueueTestCase, ScriptedCourier, delivery


class ReconfigureTests(QueueTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.settings = replace(self.settings, retryInitial=3600.0, retryMax=7200.0)
        self.queue.reconfigure(self.settings)
        self.newCourier = ScriptedCourier()
        self.signers: list[object] = []
        self.part = RelayReload(self.queue, lambda settings: self.newCourier, self.signer)

    def signer(self, settings: object) -> object:
        self.signers.append(settings)
        return None

    def reload(self, **changes: Any) -> None:
        self.settings = replace(self.settings, **changes)
        apply = self.part.prepareReload(self.settings)
        self.successResultOf(apply())

    def test_queuedMessagesGetTheNewSchedule(self) -> None:
        """
        A message deferred under a long schedule is due under the new,
        shorter one, and goes to the new courier.
        """
        [envelope] = self.spoolMessages(1)
        [(_, [message], listener, d)] = self.courier.attempts
        listener.settled(message, [delivery(message.recipients[0], DEFERRED)])
        d.callback(None)
        [recipient] = self.state(envelope).recipients
        self.assertGreater(recipient.nextAttempt - self.clock.seconds(), 2000)
        self.reload(retryInitial=60.0, retryMax=120.0)
        self.assertEqual(len(self.signers), 1)
        self.clock.advance(60)
        self.assertEqual(len(self.courier.attempts), 1)
        [(_, [again], listener, d)] = self.newCourier.attempts
        self.assertEqual(again.queueId, envelope.queueId)
        listener.settled(again, [delivery(again.recipients[0], SENT)])
        d.callback(None)
        self.assertEqual(self.state(envelope).recipients[0].status, DELIVERED)

    def test_attemptInProgressFinishes(self) -> None:
        """
        An attempt in progress when the courier changes finishes on the old
        one; the next attempt uses the new one; stopping stops both.
        """
        [first] = self.spoolMessages(1)
        self.reload(queueLifetime=7200.0)
        [(_, [message], listener, d)] = self.courier.attempts
        listener.settled(message, [delivery(message.recipients[0], SENT)])
        d.callback(None)
        self.assertTrue(self.state(first).done)
        [second] = self.spoolMessages(1)
        self.assertEqual(len(self.courier.attempts), 1)
        [(_, [message], _, _)] = self.newCourier.attempts
        self.assertEqual(message.queueId, second.queueId)
        self.queue.stopService()
        self.assertEqual((len(self.courier.stops), len(self.newCourier.stops)), (1, 1))

    def test_longerScheduleLeavesDueTimes(self) -> None:
        """
        A longer schedule applies from the next deferral: a recipient due
        soon stays due soon.
        """
        self.reload(retryInitial=60.0, retryMax=120.0)
        [envelope] = self.spoolMessages(1)
        [(_, [message], listener, d)] = self.newCourier.attempts
        listener.settled(message, [delivery(message.recipients[0], DEFERRED)])
        d.callback(None)
        due = self.state(envelope).recipients[0].nextAttempt
        self.reload(retryInitial=3600.0, retryMax=7200.0)
        self.assertEqual(self.queue._messages[envelope.queueId].recipients[0].nextAttempt, due)

    def test_lifetime(self) -> None:
        """
        A shorter queue lifetime applies to the messages already queued, at
        their next attempt.
        """
        [envelope] = self.spoolMessages(1)
        [(_, [message], listener, d)] = self.courier.attempts
        listener.settled(message, [delivery(message.recipients[0], DEFERRED)])
        d.callback(None)
        self.reload(queueLifetime=60.0, retryInitial=60.0, retryMax=60.0)
        self.clock.advance(60)
        [(_, [again], listener, d)] = self.newCourier.attempts
        listener.settled(again, [delivery(again.recipients[0], DEFERRED)])
        d.callback(None)
        [recipient] = self.state(envelope).recipients
        self.assertEqual(recipient.status, "failed")
        self.assertTrue(recipient.lastError.startswith("5.4.7 Delivery time expired"))


class ServerReloadTests(TestCase):
    """
    A real server: the smarthost and the retry schedule changed in the env
    file, then a reload; the deferred message goes to the new smarthost.
    """

    timeout = 120

    @inlineCallbacks
    def test_newSmarthost(self):
        directory = shortDirectory(self)
        envFile = os.path.join(directory, "gopherpost.env")
        port, dead = freePort(), freePort()
        with open(envFile, "w") as f:
            f.write(f"SMTP_RELAY_HOST=127.0.0.1:{dead}\nSMTP_RETRY_INITIAL=3600\n")
        environ = serverEnvironment(os.path.join(directory, "spool"), port, SMTP_OUTBOUND_TLS="may")
        options = Options()
        options.parseOptions(["--env-file", envFile])
        service = makeService(options, environ=environ, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        sink = SMTPTestServer().start()
        self.addCleanup(sink.stop)

        def send():
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail(
                    "alice@gopherpost.test", ["bob@example.test"], b"Subject: r\r\n\r\nx\r\n"
                )

        yield deferToThread(send)
        queue = service.relayQueue
        yield eventually(
            lambda: any(
                r.attempts and not queue.busy
                for state in queue._messages.values()
                for r in state.recipients
            )
        )
        self.assertEqual(sink.messages, [])
        with open(envFile, "w") as f:
            f.write(f"SMTP_RELAY_HOST=127.0.0.1:{sink.port}\nSMTP_RETRY_INITIAL=1\n")
        outcome = yield service.reload()
        self.assertTrue(outcome.succeeded, outcome.error)
        self.assertIn("SMTP_RELAY_HOST", outcome.asJSON()["changed"])
        self.assertEqual(outcome.asJSON()["notApplied"], {}, outcome.describe())
        yield eventually(lambda: sink.messages)
        self.assertEqual(sink.messages[0].recipients, ["bob@example.test"])
