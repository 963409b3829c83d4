"""
The content filters on the inbound chain, end to end: a whole server
(wired as C{twistd gopherpost} wires it) with Debian's rspamd, spamd,
clamav-milter and OpenDKIM (tests/filters/services.py), smtplib as the
client, and what the spool holds afterwards.

The client, 127.0.0.1, has no relay permission here (C{SMTP_RELAY_NETWORKS}
names another network): it is an inbound client sending to a local
domain, whom the filters' default scope covers.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
from collections.abc import Callable, Generator
from typing import Any, cast

import dkim
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from gopherpost.filters.headers import HeaderSection
from gopherpost.filters.inbound import inboundEditor, recipientMailbox, senderMailbox
from tests.filters import services
from tests.filters.services import EICAR, GTUBE
from tests.support.server import (
    TwistdProcess,
    freePort,
    serverEnvironment,
    startInProcess,
    waitForPort,
)

UNAVAILABLE = (451, b"4.7.1 Content filter unavailable, try again later")


def content(body: bytes = b"Hello, Bob.\r\n", subject: bytes = b"Hello") -> bytes:
    return (
        b"From: Alice <alice@example.test>\r\nTo: bob@gopherpost.test\r\n"
        b"Subject: " + subject + b"\r\nDate: Tue, 01 Dec 2026 12:00:00 +0000\r\n"
        b"Message-ID: <filters-inbound@example.test>\r\n\r\n" + body
    )


def stored(queuePath: str) -> tuple[list[bytes], list[dict[str, Any]]]:
    """
    Every stored message file and envelope (read as JSON).
    """
    files, envelopes = [], []
    for directory in sorted(os.listdir(queuePath)):
        if not directory[:4].isdigit():
            continue
        for name in sorted(os.listdir(os.path.join(queuePath, directory))):
            path = os.path.join(queuePath, directory, name)
            if name.endswith(".eml"):
                with open(path, "rb") as f:
                    files.append(f.read())
            elif name.endswith(".envelope"):
                with open(path, "rb") as f:
                    envelopes.append(json.loads(f.read()))
    return files, envelopes


def filterTags(envelope: dict[str, Any]) -> dict[str, Any]:
    """
    The filters' verdicts in an envelope's metadata.
    """
    metadata = envelope.get("metadata", {})
    tags = metadata.get("tags", metadata)
    return cast(dict[str, Any], tags.get("filters", {}))


class Client:
    """
    One smtplib session, driven a step at a time from threads.
    """

    def __init__(self, port: int, sender: str = "alice@example.test") -> None:
        self.port = port
        self.sender = sender
        self.smtp: smtplib.SMTP | None = None

    def envelope(self) -> tuple[int, bytes]:
        self.smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=60)
        self.smtp.ehlo("client.example.test")
        code, text = self.smtp.mail(self.sender)
        assert code == 250, (code, text)
        return self.smtp.rcpt("bob@gopherpost.test")

    def data(self, message: bytes) -> tuple[int, bytes]:
        assert self.smtp is not None
        reply = self.smtp.data(message)
        try:
            self.smtp.quit()
        except smtplib.SMTPException:
            pass
        return reply

    def close(self) -> None:
        if self.smtp is not None:
            self.smtp.close()

    def send(self, message: bytes) -> tuple[int, bytes]:
        code, text = self.envelope()
        assert code == 250, (code, text)
        return self.data(message)


class ServerTestCase(TestCase):
    timeout = 400

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.path = os.path.abspath(self.mktemp())
        self.port = freePort()

    def tearDown(self) -> None:
        # Nothing a filter or a client does may put a traceback in the log.
        self.assertEqual([e for e in self.events if "log_failure" in e], [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def environ(self, **settings: str) -> dict[str, str]:
        # The MX checks' sender authentication needs DNS these tests do not
        # serve (it would answer 451 before the filters are asked).
        settings.setdefault("SMTP_SENDER_AUTH", "false")
        return serverEnvironment(
            self.path, self.port, SMTP_RELAY_NETWORKS="192.0.2.0/24", **settings
        )

    def serve(self, **settings: str) -> None:
        startInProcess(self, self.environ(**settings))

    def send(self, message: bytes) -> Deferred[tuple[int, bytes]]:
        return deferToThread(Client(self.port).send, message)

    def logged(self, text: str) -> list[str]:
        from twisted.logger import formatEvent

        return [line for line in map(formatEvent, self.events) if text in line]


def milters(*entries: tuple[Any, str]) -> str:
    return ",".join(f"{daemon.milterAddress};name={name}" for daemon, name in entries)


class RspamdTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_gtubeRejected(self) -> Generator[Deferred[Any], Any, None]:
        """
        GTUBE: rspamd's reject and message at the final dot; nothing stored.
        """
        rspamd = yield services.rspamd()
        self.serve(SMTP_RSPAMD_URL=rspamd.url)
        code, text = yield self.send(content(GTUBE + b"\r\n"))
        self.assertEqual((code, text), (550, b"5.7.1 Gtube pattern"))
        self.assertEqual(stored(self.path), ([], []))
        [line] = self.logged("rspamd")
        self.assertIn("reject", line)

    @defer.inlineCallbacks
    def test_cleanAccepted(self) -> Generator[Deferred[Any], Any, None]:
        """
        A clean message is stored with rspamd's header fields and its
        verdict in the envelope's metadata; rspamd saw our C{Received:}
        (its queue id is ours, it read the client's address and HELO).
        """
        rspamd = yield services.rspamd()
        self.serve(SMTP_RSPAMD_URL=rspamd.url)
        code, text = yield self.send(content())
        self.assertEqual(code, 250, text)
        queueId = text.split()[-1]
        [file], [envelope] = stored(self.path)
        section = HeaderSection(file.partition(b"\r\n\r\n")[0] + b"\r\n")
        self.assertEqual(section.values(b"X-Rspamd-Queue-Id"), [b" " + queueId])
        self.assertTrue(section.values(b"X-Spam-Status")[0].startswith(b" No, score="))
        self.assertEqual(len(section.values(b"Received")), 1)
        self.assertTrue(file.startswith(b"Received: from client.example.test"))
        self.assertTrue(file.endswith(b"\r\n\r\nHello, Bob.\r\n"))
        verdict = filterTags(envelope)["rspamd"]
        self.assertEqual((verdict["result"], verdict["action"]), ("accept", "no action"))

    @defer.inlineCallbacks
    def test_discard(self) -> Generator[Deferred[Any], Any, None]:
        """
        rspamd's discard: the client is told 250 with a queue id, as for a
        delivery, and nothing is stored.
        """
        rspamd = yield services.rspamd()
        self.serve(SMTP_RSPAMD_URL=rspamd.url)
        code, text = yield self.send(content(subject=b"gopherpost-discard"))
        self.assertEqual(code, 250)
        self.assertTrue(text.startswith(b"2.0.0 Ok: queued as "), text)
        self.assertEqual(stored(self.path), ([], []))
        self.assertEqual(len(self.logged("Discarded")), 1)

    @defer.inlineCallbacks
    def test_relayClientBypasses(self) -> Generator[Deferred[Any], Any, None]:
        """
        The default scope leaves out clients with relay permission: GTUBE
        from one is stored, without rspamd's fields.
        """
        rspamd = yield services.rspamd()
        startInProcess(self, serverEnvironment(self.path, self.port, SMTP_RSPAMD_URL=rspamd.url))
        client = Client(self.port, sender="alice@gopherpost.test")
        code, text = yield deferToThread(client.send, content(GTUBE + b"\r\n"))
        self.assertEqual(code, 250, text)
        [file], [envelope] = stored(self.path)
        self.assertNotIn(b"X-Rspamd-Queue-Id", file)
        self.assertEqual(filterTags(envelope), {})

    @defer.inlineCallbacks
    def test_milterPortAgrees(self) -> Generator[Deferred[Any], Any, None]:
        """
        rspamd's milter port gives the same verdicts as /checkv2 (its
        proxy answers a reject with 554 where we answer 550, as Postfix
        passes on what the milter says).
        """
        rspamd = yield services.rspamd()
        self.serve(SMTP_MILTERS=f"inet:127.0.0.1:{rspamd.milter};name=rspamd-milter")
        code, text = yield self.send(content(GTUBE + b"\r\n"))
        self.assertEqual((code, text), (554, b"5.7.1 Gtube pattern"))
        code, text = yield self.send(content())
        self.assertEqual(code, 250, text)
        [file], _ = stored(self.path)
        self.assertIn(b"X-Spam-Status: No, score=", file)


class SpamdTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_gtubeRejected(self) -> Generator[Deferred[Any], Any, None]:
        spamd = yield services.spamd()
        self.serve(SMTP_SPAMD=f"127.0.0.1:{spamd.port}")
        code, text = yield self.send(content(GTUBE + b"\r\n"))
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith(b"5.7.1 "), text)
        self.assertEqual(stored(self.path), ([], []))

    @defer.inlineCallbacks
    def test_cleanAccepted(self) -> Generator[Deferred[Any], Any, None]:
        spamd = yield services.spamd()
        self.serve(SMTP_SPAMD=f"127.0.0.1:{spamd.port}")
        code, text = yield self.send(content())
        self.assertEqual(code, 250, text)
        [file], [envelope] = stored(self.path)
        self.assertIn(b"\r\nX-Spam-Status: No, score=", file)
        self.assertIn("score", filterTags(envelope)["spamassassin"])


class MilterTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_virusRejected(self) -> Generator[Deferred[Any], Any, None]:
        milter = yield services.clamavMilter()
        self.serve(SMTP_MILTERS=milters((milter, "clamav")))
        code, text = yield self.send(content(b"Here it is:\r\n" + EICAR + b"\r\n"))
        self.assertEqual(
            (code, text), (550, b"5.7.1 Virus found: GopherPost.Test.Signature.UNOFFICIAL")
        )
        self.assertEqual(stored(self.path), ([], []))

    @defer.inlineCallbacks
    def test_allFilters(self) -> Generator[Deferred[Any], Any, None]:
        """
        rspamd, spamd, clamav-milter and OpenDKIM together on a clean
        message: each one's fields, and OpenDKIM (the last) signs the
        message as it is stored: dkimpy verifies the stored file.
        """
        rspamd = yield services.rspamd()
        spamd = yield services.spamd()
        clamav = yield services.clamavMilter()
        signer = yield services.opendkim()
        self.serve(
            SMTP_RSPAMD_URL=rspamd.url,
            SMTP_SPAMD=f"127.0.0.1:{spamd.port}",
            SMTP_MILTERS=milters((clamav, "clamav"), (signer, "opendkim")),
        )
        code, text = yield self.send(content(b"Line one.\r\n\r\nLine three.\r\n"))
        self.assertEqual(code, 250, text)
        [file], [envelope] = stored(self.path)
        self.assertTrue(file.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"), file[:200])
        for field in (b"X-Rspamd-Queue-Id:", b"X-Spam-Status:", b"X-Virus-Status: Clean"):
            self.assertIn(b"\r\n" + field, file)
        self.assertTrue(dkim.verify(file, dnsfunc=signer.dnsTXT))
        self.assertFalse(dkim.verify(file.replace(b"Line one.", b"Line 1."), dnsfunc=signer.dnsTXT))
        self.assertEqual(
            sorted(filterTags(envelope)), ["clamav", "opendkim", "rspamd", "spamassassin"]
        )
        # One line per verdict, none per connection to a filter.
        self.assertEqual(len(self.logged("Filter ")), 4)
        self.assertEqual(self.logged("Starting factory"), [])
        self.assertEqual(self.logged("Stopping factory"), [])


class MilterFailureTests(ServerTestCase):
    """
    Milters that answer tempfail, time out, or go away in the middle of the
    conversation: the configured failure action, nothing stored
    half-filtered.
    """

    @defer.inlineCallbacks
    def test_tempfail(self) -> Generator[Deferred[Any], Any, None]:
        """
        clamav-milter without its clamd answers tempfail at the final dot.
        """
        milter = yield services.privateClamavMilter(self, clamdPort=services.freePort())
        self.serve(SMTP_MILTERS=milters((milter, "clamav")))
        code, text = yield self.send(content())
        self.assertEqual((code, text), (451, b"4.7.1 Service unavailable - try again later"))
        self.assertEqual(stored(self.path), ([], []))

    @defer.inlineCallbacks
    def interrupted(
        self, what: Callable[[services.Daemon], None], default: str | None
    ) -> Generator[Deferred[Any], Any, tuple[tuple[int, bytes], float]]:
        """
        A session with a milter that is stopped or killed after RCPT (a 2 s
        timeout) and a good clamav-milter behind it.

        @return: the reply at the final dot and the seconds it took.
        """
        good = yield services.clamavMilter()
        broken = yield services.privateClamavMilter(self)
        self.addCleanup(broken.resume)
        option = f";default={default}" if default else ""
        self.serve(
            SMTP_MILTERS=f"{broken.milterAddress};name=broken;timeout=2{option},"
            f"{good.milterAddress};name=clamav"
        )
        client = Client(self.port)
        self.addCleanup(client.close)
        code, text = yield deferToThread(client.envelope)
        self.assertEqual(code, 250, text)
        what(broken)
        started = reactor.seconds()
        reply = yield deferToThread(client.data, content())
        return reply, reactor.seconds() - started

    @defer.inlineCallbacks
    def test_timeout(self) -> Generator[Deferred[Any], Any, None]:
        """
        A milter that stops answering: tempfail after its timeout.
        """
        reply, seconds = yield self.interrupted(services.Daemon.pause, None)
        self.assertEqual(reply, UNAVAILABLE)
        self.assertLess(seconds, 10)
        self.assertEqual(stored(self.path), ([], []))

    @defer.inlineCallbacks
    def test_timeoutAccept(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{default=accept}: stored with the good milter's fields only.
        """
        reply, _ = yield self.interrupted(services.Daemon.pause, "accept")
        self.assertEqual(reply[0], 250)
        [file], [envelope] = stored(self.path)
        self.assertEqual(file.count(b"X-Virus-Status: Clean"), 1)
        self.assertEqual(filterTags(envelope)["broken"]["result"], "timeout")

    @defer.inlineCallbacks
    def test_closesMidConversation(self) -> Generator[Deferred[Any], Any, None]:
        reply, _ = yield self.interrupted(services.Daemon.kill, None)
        self.assertEqual(reply, UNAVAILABLE)
        self.assertEqual(stored(self.path), ([], []))

    @defer.inlineCallbacks
    def test_closesReject(self) -> Generator[Deferred[Any], Any, None]:
        reply, _ = yield self.interrupted(services.Daemon.kill, "reject")
        self.assertEqual(reply, (550, b"5.7.1 Content filter unavailable"))
        self.assertEqual(stored(self.path), ([], []))


class WorkerTests(ServerTestCase):
    """
    C{twistd -n gopherpost} with two inbound worker processes: each builds
    the filters; the parent's metrics page counts their verdicts.
    """

    @defer.inlineCallbacks
    def test_workers(self) -> Generator[Deferred[Any], Any, None]:
        rspamd = yield services.rspamd()
        httpPort = freePort()
        server = TwistdProcess(
            self.environ(
                SMTP_WORKERS="2",
                SMTP_RSPAMD_URL=rspamd.url,
                SMTP_HEALTH_DISABLE="false",
                SMTP_HEALTH_ADDR=f"127.0.0.1:{httpPort}",
            )
        )
        self.addCleanup(server.kill)
        yield deferToThread(waitForPort, self.port, reactor.seconds() + 60)
        replies = []
        for _ in range(4):
            replies.append((yield self.send(content(GTUBE + b"\r\n"))))
            replies.append((yield self.send(content())))
        self.assertEqual([code for code, _ in replies], [550, 250] * 4)
        files, _ = stored(self.path)
        self.assertEqual(len(files), 4)
        self.assertTrue(all(b"X-Rspamd-Queue-Id" in f for f in files))

        agent = Agent(reactor)
        counted: dict[str, Any] = {}
        for _ in range(300):
            response = yield agent.request(b"GET", b"http://127.0.0.1:%d/metrics" % httpPort)
            counted = json.loads((yield readBody(response)))["smtp_filter_results_total"]
            if counted.get("rspamd", {}).get("reject") == 4:
                break
            yield deferLater(0.1)
        self.assertEqual(counted["rspamd"]["reject"], 4)
        self.assertEqual(counted["rspamd"]["accept"], 4)
        server.process.send_signal(signal.SIGTERM)
        code, out, err = yield deferToThread(server.finish)
        # twistd re-raises SIGTERM after a clean shutdown.
        self.assertIn(code, (0, -signal.SIGTERM), err[-2000:])
        self.assertNotIn(b"Traceback", out + err)


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


class EnvelopeEditorTests(TestCase):
    """
    The editor milters' envelope edits go through: RFC 5321 paths.
    """

    def test_paths(self) -> None:
        self.assertEqual(senderMailbox("").text, "")
        self.assertEqual(senderMailbox("a@b.test").text, "a@b.test")
        recipient = recipientMailbox("c@d.test", {"NOTIFY": "NEVER"})
        self.assertEqual(
            (recipient.address, recipient.parameters), ("c@d.test", {"NOTIFY": "NEVER"})
        )
        self.assertRaises(ValueError, recipientMailbox, "", {})
        self.assertRaises(ValueError, senderMailbox, "not an address")
        self.assertIsNotNone(inboundEditor())


class WorkerMetricsTests(TestCase):
    """
    A worker's verdicts travel as audit events and are counted in the
    parent.
    """

    def test_forwarded(self) -> None:
        from gopherpost.filters.metrics import AuditFilterMetrics, FilterMetrics
        from tests.support.inbound import RecordingAudit

        audit = RecordingAudit()
        AuditFilterMetrics(audit).verdict("rspamd", "reject", 0.25, 15.0)
        AuditFilterMetrics(audit).verdict("clamav", "accept", 0.5, None)
        self.assertRaises(ValueError, AuditFilterMetrics(audit).verdict, "x", "bogus", 0, None)
        parent = FilterMetrics()
        for event in audit.named("filter.verdict"):
            parent.eventReceived({"event": "filter.verdict", **event})
        parent.eventReceived({"event": "filter.verdict", "filter": 3, "result": "accept"})
        parent.eventReceived({"event": "filter.verdict", "filter": "x", "result": "bogus"})
        parent.eventReceived({"event": "message.accepted"})
        results = "smtp_filter_results_total"
        self.assertEqual(parent.value(results, {"filter": "rspamd", "result": "reject"}), 1)
        self.assertEqual(parent.value(results, {"filter": "clamav", "result": "accept"}), 1)
        self.assertEqual(parent.value("smtp_spam_score_count", {"filter": "rspamd"}), 1)
        self.assertEqual(parent.value("smtp_spam_score_count", {"filter": "clamav"}), 0)


class ReloadTests(ServerTestCase):
    """
    A live reload builds new inbound factories: the filters stay on their
    chains (their own settings need a restart).
    """

    @defer.inlineCallbacks
    def test_filtersKept(self) -> Generator[Deferred[Any], Any, None]:
        from gopherpost.tap import Options, makeService

        rspamd = yield services.rspamd()
        envFile = os.path.abspath(self.mktemp())
        with open(envFile, "w") as f:
            f.write("SMTP_BANNER=first banner\n")
        options = Options()
        options.parseOptions(["--env-file", envFile])
        service = makeService(
            options, environ=self.environ(SMTP_RSPAMD_URL=rspamd.url), reactor=reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        with open(envFile, "w") as f:
            f.write("SMTP_BANNER=second banner\n")
        yield service.reload()

        def greeting() -> bytes:
            client = smtplib.SMTP()
            _, text = client.connect("127.0.0.1", self.port)
            client.quit()
            return text

        self.assertIn(b"second banner", (yield deferToThread(greeting)))
        code, text = yield self.send(content(GTUBE + b"\r\n"))
        self.assertEqual((code, text), (550, b"5.7.1 Gtube pattern"))
