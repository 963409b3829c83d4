"""
Tests for the resources of L{gopherpost.web}, driven in memory with
L{treq.testing.StubTreq}.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.audit import AuditLog, AuditSubscription
from gopherpost.config import Settings
from gopherpost.metrics import Metrics
from gopherpost.web import makeWebResource, wantsPrometheus

BASE = "http://gopherpost.test"
PROMETHEUS_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=underscores;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class Body(Protocol):
    """
    Collects a streamed response body.
    """

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason

    def disconnect(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]


class WebTestCase(SynchronousTestCase):
    debugMode = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1763830000)
        self.audit = AuditLog(self.debugMode, self.clock)
        self.metrics = Metrics(self.clock, self.audit)
        self.ready: tuple[bool, str] = (True, "")
        self.root = makeWebResource(
            Settings(debug=self.debugMode), self.audit, self.metrics, lambda: self.ready
        )
        self.stub: Any = StubTreq(self.root)
        self.health: Any = self.root.children[b"healthz"]  # type: ignore[attr-defined]

    def request(self, method: str, path: str, **kwargs: object):
        d = self.stub.request(method, BASE + path, **kwargs)
        self.stub.flush()
        return self.successResultOf(d)

    def get(self, path: str, accept: str | None = None):
        headers = {"Accept": [accept]} if accept is not None else {}
        return self.request("GET", path, headers=headers)

    def content(self, response) -> bytes:
        d = response.content()
        self.stub.flush()
        return self.successResultOf(d)

    def header(self, response, name: str) -> str:
        values = response.headers.getRawHeaders(name)
        return values[-1] if values else ""


class HealthTests(WebTestCase):
    def test_ready(self) -> None:
        """
        Ready: 200, C{OK}, plain text, not cacheable.
        """
        response = self.get("/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.content(response), b"OK")
        self.assertEqual(self.header(response, "Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(self.header(response, "Cache-Control"), "no-cache")

    def test_notReady(self) -> None:
        """
        Not ready: 503 and the reason.
        """
        self.ready = (False, "spool not writable")
        response = self.get("/healthz")
        self.assertEqual(response.code, 503)
        self.assertEqual(self.content(response), b"spool not writable\n")
        self.assertEqual(self.header(response, "Cache-Control"), "no-cache")

    def test_readinessFails(self) -> None:
        """
        A readiness check that raises is a 503, and is logged.
        """

        def broken() -> tuple[bool, str]:
            raise OSError("boom")

        root = makeWebResource(Settings(), self.audit, self.metrics, broken)
        stub: Any = StubTreq(root)
        d = stub.get(BASE + "/healthz")
        stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 503)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_head(self) -> None:
        """
        HEAD gives the status without a body.
        """
        response = self.request("HEAD", "/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.content(response), b"")
        self.ready = (False, "starting")
        self.assertEqual(self.request("HEAD", "/healthz").code, 503)

    def test_noStreamWithoutDebug(self) -> None:
        """
        Without debugging, C{/healthz} does not subscribe to the audit log.
        """
        self.get("/healthz")
        self.assertEqual(len(self.audit.subscriptions), 1)  # metrics only


class ProbeTests(WebTestCase):
    """
    C{/livez} and C{/readyz}.
    """

    def test_livez(self) -> None:
        """
        C{/livez} is C{200 OK}, plain text, not cacheable, whatever the
        readiness says (and without asking it).
        """
        asked = []

        def readiness() -> tuple[bool, str]:
            asked.append(True)
            return (False, "spool full")

        self.ready = (False, "spool full")
        for root in (self.root, makeWebResource(Settings(), self.audit, self.metrics, readiness)):
            stub: Any = StubTreq(root)
            d = stub.get(BASE + "/livez")
            stub.flush()
            response = self.successResultOf(d)
            self.assertEqual(response.code, 200)
            d = response.content()
            stub.flush()
            self.assertEqual(self.successResultOf(d), b"OK\n")
            self.assertEqual(self.header(response, "Content-Type"), "text/plain; charset=utf-8")
            self.assertEqual(self.header(response, "Cache-Control"), "no-cache")
        self.assertEqual(asked, [])

    def test_readyz(self) -> None:
        """
        C{/readyz}: C{200 OK} when ready, C{503} and the reason otherwise.
        """
        response = self.get("/readyz")
        self.assertEqual((response.code, self.content(response)), (200, b"OK\n"))
        self.assertEqual(self.header(response, "Cache-Control"), "no-cache")
        self.ready = (False, "spool /x: no space left: 1.0 MiB free, below the 2.0 MiB margin")
        response = self.get("/readyz")
        self.assertEqual(response.code, 503)
        self.assertEqual(
            self.content(response),
            b"spool /x: no space left: 1.0 MiB free, below the 2.0 MiB margin\n",
        )
        self.assertEqual(self.header(response, "Content-Type"), "text/plain; charset=utf-8")
        self.ready = (False, "")
        self.assertEqual(self.content(self.get("/readyz")), b"not ready\n")

    def test_readyzCheckFails(self) -> None:
        """
        A readiness check that raises is a 503 on C{/readyz}, and is logged.
        """

        def broken() -> tuple[bool, str]:
            raise OSError("boom")

        stub: Any = StubTreq(makeWebResource(Settings(), self.audit, self.metrics, broken))
        d = stub.get(BASE + "/readyz")
        stub.flush()
        self.assertEqual(self.successResultOf(d).code, 503)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_head(self) -> None:
        """
        HEAD gives the probes' status without a body.
        """
        for path in ("/livez", "/readyz"):
            response = self.request("HEAD", path)
            self.assertEqual((response.code, self.content(response)), (200, b""), path)
        self.ready = (False, "starting")
        self.assertEqual(self.request("HEAD", "/readyz").code, 503)
        self.assertEqual(self.request("HEAD", "/livez").code, 200)

    def test_readingMethodsOnly(self) -> None:
        """
        Probes answer only GET and HEAD.
        """
        for path in ("/livez", "/readyz", "/healthz"):
            self.assertEqual(self.request("POST", path).code, 405, path)


class AuditOffTests(WebTestCase):
    def test_auditOff(self) -> None:
        """
        Without debugging, C{/audit} is a 404 that says why, and subscribes
        to nothing.
        """
        response = self.get("/audit")
        self.assertEqual(response.code, 404)
        self.assertEqual(
            self.content(response),
            b"404 Not Found: the audit stream is off (SMTP_DEBUG=false)\n",
        )
        self.assertEqual(len(self.audit.subscriptions), 1)  # metrics only


class NotFoundTests(WebTestCase):
    def test_unknown(self) -> None:
        """
        Paths other than the routes are 404, the root included.
        """
        for path in (
            "/",
            "/nope",
            "/healthz/x",
            "/livez/x",
            "/readyz/",
            "/metrics/x",
            "/debug/vars",
        ):
            response = self.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(self.content(response), b"404 Not Found\n")

    def test_methodNotAllowed(self) -> None:
        """
        Only reading methods are served.
        """
        self.assertEqual(self.request("POST", "/metrics").code, 405)


class MetricsResourceTests(WebTestCase):
    def test_jsonByDefault(self) -> None:
        """
        Without a Prometheus Accept header, C{/metrics} is JSON.
        """
        self.audit.emit("session.start", client="192.0.2.1")
        for accept in (None, "*/*", BROWSER_ACCEPT, "application/json"):
            response = self.get("/metrics", accept)
            self.assertEqual(response.code, 200)
            self.assertEqual(self.header(response, "Content-Type"), "application/json")
            self.assertEqual(self.header(response, "Vary"), "Accept")
            self.assertEqual(self.header(response, "Cache-Control"), "no-cache")
            body = json.loads(self.content(response))
            self.assertEqual(body["smtp_sessions_active"], 1, accept)
            for key in (
                "smtp_messages_queued_total",
                "smtp_messages_delivered_total",
                "smtp_delivery_failures_total",
                "smtp_queue_depth",
                "smtp_messages_rejected_total",
                "smtp_received_bytes_total",
                "smtp_tls_sessions_total",
                "process_uptime_seconds",
                "process_resident_memory_bytes",
                "process_open_fds",
            ):
                self.assertIn(key, body)

    def test_prometheusText(self) -> None:
        """
        Prometheus's text Accept header gets the text format.
        """
        self.audit.emit("session.start", client="192.0.2.1")
        response = self.get("/metrics", PROMETHEUS_ACCEPT)
        self.assertTrue(
            self.header(response, "Content-Type").startswith("text/plain; version=0.0.4")
        )
        families = {
            f.name: f
            for f in text_string_to_metric_families(self.content(response).decode("utf-8"))
        }
        self.assertEqual(families["smtp_sessions_active"].samples[0].value, 1)
        self.assertEqual(families["smtp_message_size_bytes"].type, "histogram")

    def test_openMetrics(self) -> None:
        """
        Prometheus 2 and 3 prefer OpenMetrics, and get it.
        """
        for accept in (
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            PROMETHEUS_3_ACCEPT,
        ):
            response = self.get("/metrics", accept)
            self.assertTrue(
                self.header(response, "Content-Type").startswith("application/openmetrics-text")
            )
            self.assertTrue(self.content(response).endswith(b"# EOF\n"))

    def test_wantsPrometheus(self) -> None:
        """
        The negotiation follows the quality values.
        """
        self.assertTrue(wantsPrometheus("text/plain"))
        self.assertTrue(wantsPrometheus("application/openmetrics-text"))
        self.assertTrue(wantsPrometheus(PROMETHEUS_3_ACCEPT))
        self.assertFalse(wantsPrometheus(None))
        self.assertFalse(wantsPrometheus(""))
        self.assertFalse(wantsPrometheus("*/*"))
        self.assertFalse(wantsPrometheus(BROWSER_ACCEPT))
        self.assertFalse(wantsPrometheus("application/json, text/plain"))
        self.assertFalse(wantsPrometheus("text/plain;q=0.5, */*"))
        self.assertFalse(wantsPrometheus("text/plain;q=0"))
        self.assertFalse(wantsPrometheus("text/plain;q=bogus"))
        self.assertTrue(wantsPrometheus("application/json;q=0.5, text/plain"))


class StreamTests(WebTestCase):
    debugMode = True

    def openStream(self) -> Body:
        response = self.get("/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(self.header(response, "Cache-Control"), "no-cache")
        body = Body()
        response.deliverBody(body)
        self.stub.flush()
        return body

    def streams(self) -> list[AuditSubscription]:
        # The metrics subscription is the first.
        return list(self.audit.subscriptions[1:])

    def test_stream(self) -> None:
        """
        With debugging on, C{/healthz} is C{OK} and then one audit line per
        event, as they happen.
        """
        body = self.openStream()
        self.assertEqual(body.data, b"OK\n")
        self.audit.emit("session.start", client="192.0.2.1")
        self.stub.flush()
        self.assertEqual(
            body.data, b"OK\n2025-11-22T16:46:40.000Z session.start client=192.0.2.1\n"
        )
        self.clock.advance(1.5)
        self.audit.emit(
            "smtp.mail", client="192.0.2.1", accepted=True, code=250, sender="a@example.test"
        )
        self.stub.flush()
        self.assertTrue(
            body.data.endswith(
                b"16:46:41.500Z smtp.mail client=192.0.2.1 accepted=true code=250 "
                b"sender=a@example.test\n"
            )
        )
        self.assertIsNone(body.reason)
        body.disconnect()
        self.stub.flush()

    def test_disconnectRemovesSubscriber(self) -> None:
        """
        When the client goes away its subscriber is removed at once.
        """
        body = self.openStream()
        self.assertEqual(len(self.streams()), 1)
        body.disconnect()
        self.stub.flush()
        self.assertEqual(self.streams(), [])
        self.assertEqual(self.health.openStreams, 0)
        self.audit.emit("session.start", client="192.0.2.1")  # nothing to write to

    def test_notReadyNoStream(self) -> None:
        """
        When not ready, there is no stream: just the 503.
        """
        self.ready = (False, "SMTP listener not bound")
        response = self.get("/healthz")
        self.assertEqual(response.code, 503)
        self.assertEqual(self.content(response), b"SMTP listener not bound\n")
        self.assertEqual(self.streams(), [])

    def test_slowClientDropsLines(self) -> None:
        """
        While the connection pauses the stream, lines beyond the buffer are
        dropped; when it resumes the client is told how many.
        """
        body = self.openStream()
        [subscription] = self.streams()
        subscription.pauseProducing()  # what a full transport does
        for i in range(300):
            self.audit.emit("delivery.attempt", queueId=f"q{i}", mx="mx.example.test")
        self.stub.flush()
        self.assertEqual(body.data, b"OK\n")
        subscription.resumeProducing()
        self.stub.flush()
        lines = body.data.decode("ascii").splitlines()
        self.assertEqual(lines[0], "OK")
        self.assertTrue(lines[1].endswith(" ... 44 lines dropped"), lines[1])
        self.assertIn("queueId=q44 ", lines[2])
        self.assertIn("queueId=q299 ", lines[-1])
        self.assertEqual(len(lines), 2 + 256)
        body.disconnect()
        self.stub.flush()

    def test_tooManyStreams(self) -> None:
        """
        Past the stream limit, a client gets C{OK} and a note, no stream.
        """
        bodies = [self.openStream() for _ in range(16)]
        response = self.get("/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            self.content(response), b"OK\n... audit stream refused: too many open streams\n"
        )
        self.assertEqual(len(self.streams()), 16)
        for body in bodies:
            body.disconnect()
        self.stub.flush()
        self.assertEqual(self.streams(), [])

    def test_closeStreams(self) -> None:
        """
        L{HealthResource.closeStreams} ends every stream cleanly.
        """
        body = self.openStream()
        self.health.closeStreams()
        self.stub.flush()
        self.assertEqual(self.streams(), [])
        self.assertIsNotNone(body.reason)
        self.assertEqual(body.data, b"OK\n")

    def test_head(self) -> None:
        """
        HEAD never opens a stream.
        """
        for path in ("/healthz", "/audit"):
            response = self.request("HEAD", path)
            self.assertEqual(response.code, 200)
            self.assertEqual(self.streams(), [])

    def test_probesNeverStream(self) -> None:
        """
        With debugging on, C{/livez} and C{/readyz} still answer at once
        and completely, and subscribe to nothing.
        """
        for path in ("/livez", "/readyz"):
            response = self.get(path)
            self.assertEqual((response.code, self.content(response)), (200, b"OK\n"))
        self.ready = (False, "SMTP listener is not bound")
        response = self.get("/readyz")
        self.assertEqual(response.code, 503)
        self.assertEqual(self.content(response), b"SMTP listener is not bound\n")
        self.assertEqual(self.streams(), [])


class AuditStreamTests(WebTestCase):
    """
    C{/audit}, debugging on.
    """

    debugMode = True

    def openStream(self, accept: str | None = None) -> tuple[Any, Body]:
        response = self.get("/audit", accept)
        self.assertEqual(response.code, 200)
        body = Body()
        response.deliverBody(body)
        self.stub.flush()
        return response, body

    def streams(self) -> list[AuditSubscription]:
        return list(self.audit.subscriptions[1:])

    def test_text(self) -> None:
        """
        Plain text: one audit line per event, as they happen, nothing
        before them; addresses shown (debugging is on).
        """
        response, body = self.openStream()
        self.assertEqual(self.header(response, "Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(self.header(response, "Cache-Control"), "no-cache")
        self.assertEqual(self.header(response, "X-Accel-Buffering"), "no")
        self.assertEqual(body.data, b"")
        self.audit.emit("smtp.mail", client="192.0.2.1", accepted=True, sender="a@example.test")
        self.stub.flush()
        self.assertEqual(
            body.data,
            b"2025-11-22T16:46:40.000Z smtp.mail client=192.0.2.1 accepted=true "
            b"sender=a@example.test\n",
        )
        body.disconnect()
        self.stub.flush()
        self.assertEqual(self.streams(), [])

    def test_readinessIgnored(self) -> None:
        """
        The stream opens whether or not the server is ready.
        """
        self.ready = (False, "spool full")
        response, body = self.openStream()
        self.assertEqual(len(self.streams()), 1)
        body.disconnect()
        self.stub.flush()

    def test_serverSentEvents(self) -> None:
        """
        C{Accept: text/event-stream} (what C{EventSource} sends) gets one
        server-sent event per audit line.
        """
        response, body = self.openStream("text/event-stream")
        self.assertEqual(self.header(response, "Content-Type"), "text/event-stream")
        self.audit.emit("session.start", client="192.0.2.1")
        self.audit.emit("session.close", client="192.0.2.1")
        self.stub.flush()
        self.assertEqual(
            body.data,
            b"data: 2025-11-22T16:46:40.000Z session.start client=192.0.2.1\n\n"
            b"data: 2025-11-22T16:46:40.000Z session.close client=192.0.2.1\n\n",
        )
        body.disconnect()
        self.stub.flush()

    def test_eventStreamNegotiation(self) -> None:
        """
        Only an Accept header that names C{text/event-stream} with a
        non-zero quality gets events.
        """
        for accept, expected in (
            ("text/event-stream", "text/event-stream"),
            ("text/html, text/event-stream;q=0.5", "text/event-stream"),
            ("TEXT/EVENT-STREAM", "text/event-stream"),
            ("text/event-stream;q=0", "text/plain; charset=utf-8"),
            ("text/event-stream;q=x", "text/plain; charset=utf-8"),
            ("*/*", "text/plain; charset=utf-8"),
        ):
            response, body = self.openStream(accept)
            self.assertEqual(self.header(response, "Content-Type"), expected, accept)
            body.disconnect()
            self.stub.flush()

    def test_sharedLimit(self) -> None:
        """
        C{/audit} and C{/healthz} share one limit of 16 streams: past it,
        C{/audit} is a 503 and C{/healthz} gives C{OK} and a note.
        """
        bodies = [self.openStream()[1] for _ in range(10)]
        for _ in range(6):
            response = self.get("/healthz")
            body = Body()
            response.deliverBody(body)
            self.stub.flush()
            bodies.append(body)
        self.assertEqual(len(self.streams()), 16)
        response = self.get("/audit")
        self.assertEqual(response.code, 503)
        self.assertEqual(self.content(response), b"too many open audit streams\n")
        response = self.get("/healthz")
        self.assertEqual(
            self.content(response), b"OK\n... audit stream refused: too many open streams\n"
        )
        self.health.closeStreams()
        self.stub.flush()
        self.assertEqual(self.streams(), [])
        self.assertEqual(self.get("/audit").code, 200)
        self.assertEqual(len(self.streams()), 1)
        self.health.closeStreams()
        self.stub.flush()

    def test_belowAudit(self) -> None:
        """
        Nothing lives below C{/audit}.
        """
        response = self.get("/audit/x")
        self.assertEqual(response.code, 404)
        self.assertEqual(self.streams(), [])
