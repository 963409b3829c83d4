"""
Tests for L{gopherpost.metrics}.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.audit import AuditLog
from gopherpost.metrics import Metrics

#: Every metric family: its name in the text format, type and HELP text.
FAMILIES = (
    ("smtp_messages_queued_total", "counter", "Messages accepted and spooled."),
    ("smtp_messages_delivered_total", "counter", "Successful deliveries."),
    ("smtp_delivery_failures_total", "counter", "Permanent delivery failures."),
    ("smtp_delivery_deferrals_total", "counter", "Temporary delivery failures."),
    ("smtp_delivery_attempts_total", "counter", "Delivery attempts."),
    ("smtp_relay_queued_total", "counter", "Messages handed to the relay queue."),
    ("smtp_sessions_total", "counter", "SMTP sessions admitted."),
    ("smtp_received_bytes_total", "counter", "Bytes of accepted messages."),
    ("smtp_tls_sessions_total", "counter", "STARTTLS handshakes completed."),
    ("smtp_sessions_rejected_total", "counter", "Connections refused."),
    ("smtp_messages_rejected_total", "counter", "Messages refused."),
    ("smtp_mail_commands_total", "counter", "MAIL FROM commands."),
    ("smtp_rcpt_commands_total", "counter", "RCPT TO commands."),
    ("smtp_sessions_active", "gauge", "SMTP sessions open now."),
    ("smtp_queue_depth", "gauge", "Messages waiting in the relay queue."),
    ("smtp_message_size_bytes", "histogram", "Sizes of accepted messages."),
    ("smtp_delivery_latency_seconds", "histogram", "Time from reception to successful delivery."),
    ("process_start_time_seconds", "gauge", "Start time of the process since the epoch."),
    ("process_uptime_seconds", "gauge", "Seconds since the server started."),
    ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes."),
    ("process_open_fds", "gauge", "Number of open file descriptors."),
)

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def samples(text: bytes) -> dict[tuple, float]:
    """
    Parse Prometheus text into C{{(name, sortedLabels): value}}.
    """
    result = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


class MetricsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.audit = AuditLog(True, self.clock)
        self.metrics = Metrics(self.clock, self.audit)

    def traffic(self) -> None:
        """
        Two sessions, a TLS handshake, one message queued and delivered,
        one refused, and a few rejections.
        """
        emit = self.audit.emit
        emit("session.start", client="192.0.2.1")
        emit("session.start", client="192.0.2.2")
        emit(
            "tls.established",
            client="192.0.2.1",
            version="TLSv1.3",
            cipher="TLS_AES_128_GCM_SHA256",
        )
        emit("smtp.mail", client="192.0.2.1", accepted=True, code=250, sender="a@example.test")
        emit("smtp.rcpt", client="192.0.2.1", accepted=True, code=250, recipient="b@example.test")
        emit("smtp.rcpt", client="192.0.2.1", accepted=False, code=550, recipient="c@example.test")
        emit("message.queued", queueId="q1", client="192.0.2.1", size=3000, recipients=1, tls=True)
        emit("message.rejected", client="192.0.2.2", reason="size", size=99999999)
        emit("message.rejected", client="192.0.2.2", reason="new-reason")
        emit("session.close", client="192.0.2.2")
        emit("session.reject", client="198.51.100.1", reason="access")
        emit("session.reject", client="198.51.100.1", reason="connection-limit-ip")
        emit("delivery.queued", queueId="q1", recipients=1)
        emit("delivery.attempt", queueId="q1", mx="mx.example.test")
        emit("delivery.deferral", queueId="q1", mx="mx.example.test", reply="451 try later")
        emit("delivery.attempt", queueId="q1", mx="mx.example.test")
        emit("delivery.success", queueId="q1", mx="mx.example.test", reply="250 ok", latency=42.0)
        emit("delivery.failure", queueId="q2", mx="mx.example.test", reply="550 no")


class CountingTests(MetricsTestCase):
    def test_json(self) -> None:
        """
        The JSON view counts every kind of event.
        """
        self.traffic()
        self.metrics.setQueueDepthSource(lambda: 7)
        j = self.metrics.asJSON()
        self.assertEqual(j["smtp_messages_queued_total"], 1)
        self.assertEqual(j["smtp_messages_delivered_total"], 1)
        self.assertEqual(j["smtp_delivery_failures_total"], 1)
        self.assertEqual(j["smtp_delivery_deferrals_total"], 1)
        self.assertEqual(j["smtp_delivery_attempts_total"], 2)
        self.assertEqual(j["smtp_relay_queued_total"], 1)
        self.assertEqual(j["smtp_queue_depth"], 7)
        self.assertEqual(j["smtp_sessions_active"], 1)
        self.assertEqual(j["smtp_sessions_total"], 2)
        self.assertEqual(j["smtp_received_bytes_total"], 3000)
        self.assertEqual(j["smtp_tls_sessions_total"], 1)
        self.assertEqual(
            j["smtp_sessions_rejected_total"],
            {"access": 1, "connection-limit": 0, "connection-limit-ip": 1, "other": 0},
        )
        self.assertEqual(j["smtp_messages_rejected_total"]["size"], 1)
        self.assertEqual(j["smtp_messages_rejected_total"]["other"], 1)
        self.assertNotIn("new-reason", j["smtp_messages_rejected_total"])
        self.assertEqual(j["smtp_mail_commands_total"], {"accepted": 1, "refused": 0})
        self.assertEqual(j["smtp_rcpt_commands_total"], {"accepted": 1, "refused": 1})
        size = j["smtp_message_size_bytes"]
        self.assertEqual((size["count"], size["sum"]), (1, 3000.0))
        self.assertEqual(size["buckets"]["1024"], 0)
        self.assertEqual(size["buckets"]["4096"], 1)
        self.assertEqual(size["buckets"]["+Inf"], 1)
        latency = j["smtp_delivery_latency_seconds"]
        self.assertEqual(latency["buckets"]["15"], 0)
        self.assertEqual(latency["buckets"]["60"], 1)

    def test_sessionsActiveNeverNegative(self) -> None:
        """
        A stray C{session.close} does not make the gauge negative.
        """
        self.audit.emit("session.close", client="192.0.2.1")
        self.assertEqual(self.metrics.asJSON()["smtp_sessions_active"], 0)

    def test_badNumbersIgnored(self) -> None:
        """
        Sizes and latencies that are not non-negative numbers are not
        observed.
        """
        self.audit.emit("message.queued", queueId="q", size="big")
        self.audit.emit("delivery.success", queueId="q", latency=-1)
        j = self.metrics.asJSON()
        self.assertEqual(j["smtp_messages_queued_total"], 1)
        self.assertEqual(j["smtp_message_size_bytes"]["count"], 0)
        self.assertEqual(j["smtp_delivery_latency_seconds"]["count"], 0)

    def test_stop(self) -> None:
        """
        After L{Metrics.stop}, events are no longer counted.
        """
        self.metrics.stop()
        self.assertEqual(self.audit.subscriptions, ())
        self.audit.emit("session.start", client="192.0.2.1")
        self.assertEqual(self.metrics.asJSON()["smtp_sessions_total"], 0)

    def test_queueDepthDefault(self) -> None:
        """
        Without a source the queue depth is 0.
        """
        self.assertEqual(self.metrics.asJSON()["smtp_queue_depth"], 0)

    def test_queueDepthSourceFails(self) -> None:
        """
        A failing source gives C{null} in JSON, no sample in Prometheus, and
        a logged error, not a failed scrape.
        """

        def broken() -> int:
            raise RuntimeError("queue gone")

        self.metrics.setQueueDepthSource(broken)
        self.assertIsNone(self.metrics.asJSON()["smtp_queue_depth"])
        body, _ = self.metrics.exposition("text/plain;version=0.0.4")
        self.assertNotIn(b"smtp_queue_depth", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_uptime(self) -> None:
        """
        Uptime follows the clock from construction.
        """
        self.clock.advance(90.5)
        j = self.metrics.asJSON()
        self.assertEqual(j["process_uptime_seconds"], 90.5)
        self.assertEqual(j["process_start_time_seconds"], 1000)


class PrometheusTests(MetricsTestCase):
    def test_textFormat(self) -> None:
        """
        The Prometheus text format carries the same numbers, with
        histograms, and parses.
        """
        self.traffic()
        self.metrics.setQueueDepthSource(lambda: 3)
        body, contentType = self.metrics.exposition("text/plain;version=0.0.4")
        self.assertTrue(contentType.startswith("text/plain"))
        s = samples(body)
        self.assertEqual(s[("smtp_messages_queued_total", ())], 1)
        self.assertEqual(s[("smtp_messages_delivered_total", ())], 1)
        self.assertEqual(s[("smtp_delivery_failures_total", ())], 1)
        self.assertEqual(s[("smtp_queue_depth", ())], 3)
        self.assertEqual(s[("smtp_sessions_active", ())], 1)
        self.assertEqual(s[("smtp_received_bytes_total", ())], 3000)
        self.assertEqual(s[("smtp_tls_sessions_total", ())], 1)
        self.assertEqual(s[("smtp_sessions_rejected_total", (("reason", "access"),))], 1)
        self.assertEqual(s[("smtp_messages_rejected_total", (("reason", "size"),))], 1)
        self.assertEqual(s[("smtp_message_size_bytes_bucket", (("le", "4096.0"),))], 1)
        self.assertEqual(s[("smtp_message_size_bytes_count", ())], 1)
        self.assertEqual(s[("smtp_message_size_bytes_sum", ())], 3000)
        self.assertEqual(s[("smtp_delivery_latency_seconds_bucket", (("le", "+Inf"),))], 1)
        self.assertEqual(s[("smtp_delivery_latency_seconds_sum", ())], 42)
        self.assertIn(("process_uptime_seconds", ()), s)

    def test_families(self) -> None:
        """
        Every family is exposed under its name, with its type and HELP text,
        in the order of the table, and nothing else: in particular none of
        the C{*_created} series C{prometheus_client} would add.
        """
        body, _ = self.metrics.exposition("text/plain;version=0.0.4")
        text = body.decode("utf-8")
        exposed = []
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, help = line[len("# HELP ") :].split(" ", 1)
                exposed.append([name, None, help])
            elif line.startswith("# TYPE "):
                name, type = line[len("# TYPE ") :].split(" ", 1)
                self.assertEqual(exposed[-1][0], name)
                exposed[-1][1] = type
        self.assertEqual([tuple(family) for family in exposed], list(FAMILIES))
        self.assertNotIn("_created", text)
        parsed = list(text_string_to_metric_families(text))
        self.assertEqual(len(parsed), len(FAMILIES))
        self.assertEqual(
            [(f.type, f.documentation) for f in parsed], [(t, h) for _, t, h in FAMILIES]
        )

    def test_labelsFixedFromTheStart(self) -> None:
        """
        Before any event, every label value is exposed at 0, and the
        histograms have every bucket.
        """
        body, _ = self.metrics.exposition("text/plain;version=0.0.4")
        s = samples(body)
        for reason in ("access", "connection-limit", "connection-limit-ip", "other"):
            self.assertEqual(s[("smtp_sessions_rejected_total", (("reason", reason),))], 0)
        for reason in ("size", "line-length", "storage", "recipients", "sender", "other"):
            self.assertEqual(s[("smtp_messages_rejected_total", (("reason", reason),))], 0)
        for name in ("smtp_mail_commands_total", "smtp_rcpt_commands_total"):
            for result in ("accepted", "refused"):
                self.assertEqual(s[(name, (("result", result),))], 0)
        buckets = [k for k in s if k[0] == "smtp_message_size_bytes_bucket"]
        self.assertEqual(len(buckets), 10)
        buckets = [k for k in s if k[0] == "smtp_delivery_latency_seconds_bucket"]
        self.assertEqual(len(buckets), 11)

    def test_openMetrics(self) -> None:
        """
        A client that asks for OpenMetrics gets it, and it parses with the
        OpenMetrics parser, with the same numbers and no C{_created}.
        """
        self.traffic()
        self.metrics.setQueueDepthSource(lambda: 3)
        body, contentType = self.metrics.exposition(PROMETHEUS_ACCEPT)
        self.assertTrue(contentType.startswith("application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"))
        self.assertIn(b"smtp_messages_queued_total 1.0", body)
        self.assertNotIn(b"_created", body)
        families = {f.name: f for f in openmetrics_families(body.decode("utf-8"))}
        self.assertEqual(families["smtp_messages_queued"].type, "counter")
        self.assertEqual(families["smtp_messages_queued"].samples[0].value, 1)
        self.assertEqual(families["smtp_queue_depth"].samples[0].value, 3)
        self.assertEqual(families["smtp_message_size_bytes"].type, "histogram")

    def test_noAddressInLabels(self) -> None:
        """
        Even with debugging on (addresses in events), nothing exposed
        carries an address.
        """
        self.traffic()
        self.audit.emit("session.reject", client="192.0.2.9", reason="evil@example.test")
        self.audit.emit("message.rejected", client="192.0.2.9", reason="x@example.test")
        body, _ = self.metrics.exposition("text/plain;version=0.0.4")
        self.assertNotIn(b"@", body)
        self.assertNotIn("@", repr(self.metrics.asJSON()))

    def test_privateRegistry(self) -> None:
        """
        Each L{Metrics} has its own registry; the global one is untouched,
        so several can coexist.
        """
        other = Metrics(self.clock)
        self.assertIsNot(other.registry, self.metrics.registry)
        self.assertIsNone(REGISTRY.get_sample_value("smtp_sessions_active"))
        self.audit.emit("session.start", client="192.0.2.1")
        self.assertEqual(self.metrics.registry.get_sample_value("smtp_sessions_active"), 1)
        self.assertEqual(other.registry.get_sample_value("smtp_sessions_active"), 0)

    def test_duplicateRefused(self) -> None:
        """
        The private registry refuses a second metric of an existing name
        (here one computed when scraped), as the global one would.
        """
        self.assertRaises(
            ValueError,
            Counter,
            "smtp_queue_depth",
            "Again.",
            registry=self.metrics._instruments,
        )


class ChecksCollector:
    """
    A collector of another part, as the MX checks register theirs.
    """

    def collect(self) -> Iterator[Metric]:
        results = CounterMetricFamily(
            "smtp_dmarc_results", "DMARC results.", labels=["result", "disposition"]
        )
        results.add_metric(["pass", "none"], 3)
        results.add_metric(["fail", "reject"], 1)
        yield results
        yield CounterMetricFamily("smtp_bans", "Bans started.", labels=[])
        yield GaugeMetricFamily("smtp_greylist_entries", "Greylist entries.", value=12)
        latency = HistogramMetricFamily("smtp_check_seconds", "Check latency.", labels=["check"])
        latency.add_metric(["spf"], buckets=[("0.5", 2), ("+Inf", 3)], sum_value=4.0)
        yield latency


class OtherCollectorsTests(MetricsTestCase):
    def test_registered(self) -> None:
        """
        A collector registered with L{Metrics.registry} is shown in both
        views, next to the server's own metrics.
        """
        self.metrics.registry.register(ChecksCollector())
        body, _ = self.metrics.exposition("text/plain;version=0.0.4")
        s = samples(body)
        self.assertEqual(
            s[("smtp_dmarc_results_total", (("disposition", "none"), ("result", "pass")))], 3
        )
        self.assertEqual(s[("smtp_greylist_entries", ())], 12)
        self.assertIn(("smtp_sessions_active", ()), s)
        j = self.metrics.asJSON()
        self.assertEqual(
            j["smtp_dmarc_results_total"], {"pass": {"none": 3}, "fail": {"reject": 1}}
        )
        self.assertEqual(j["smtp_bans_total"], 0)
        self.assertEqual(j["smtp_greylist_entries"], 12)
        self.assertEqual(
            j["smtp_check_seconds"],
            {"spf": {"count": 3, "sum": 4.0, "buckets": {"0.5": 2, "+Inf": 3}}},
        )
        self.assertEqual(j["smtp_sessions_total"], 0)

    def test_clashRefused(self) -> None:
        """
        A collector whose metric names clash with the server's is refused.
        """

        class Clashing:
            def collect(self) -> Iterator[Metric]:
                yield GaugeMetricFamily("smtp_sessions_active", "Again.", value=1)

        self.assertRaises(ValueError, self.metrics.registry.register, Clashing())


class ProcessFactsTests(SynchronousTestCase):
    def test_fromProc(self) -> None:
        """
        RSS and open file descriptors are read from C{/proc}.
        """
        root = self.mktemp()
        os.makedirs(os.path.join(root, "self", "fd"))
        with open(os.path.join(root, "self", "statm"), "w") as f:
            f.write("1000 25 10 1 0 50 0\n")
        for name in ("0", "1", "2"):
            open(os.path.join(root, "self", "fd", name), "w").close()
        j = Metrics(Clock(), procRoot=root).asJSON()
        self.assertEqual(j["process_resident_memory_bytes"], 25 * os.sysconf("SC_PAGE_SIZE"))
        self.assertEqual(j["process_open_fds"], 3)

    def test_withoutProc(self) -> None:
        """
        Without C{/proc}, RSS falls back to C{getrusage} and descriptors to
        C{/dev/fd}, and neither breaks the metrics.
        """
        metrics = Metrics(Clock(), procRoot=self.mktemp())
        j = metrics.asJSON()
        self.assertIsInstance(j["process_resident_memory_bytes"], int)
        self.assertGreater(j["process_resident_memory_bytes"], 0)
        fds = j["process_open_fds"]
        self.assertTrue(fds is None or fds > 0)
        body, _ = metrics.exposition("")
        self.assertIn(b"process_resident_memory_bytes", body)
