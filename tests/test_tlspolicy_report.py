"""
Tests for L{gopherpost.tlspolicy.report} (the RFC 8460 report, its record
and message) and L{gopherpost.tlspolicy.reporter} (sending it through the
spool and over HTTPS, on loopback).
"""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import os
from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost.dns import Resolver
from gopherpost.spool import Spool
from gopherpost.tlspolicy.https import HTTPSClient
from gopherpost.tlspolicy.report import (
    ReportRecordError,
    buildReport,
    parseReportRecord,
    reportBody,
    reportFilename,
    reportMessage,
    selectReportRecord,
)
from gopherpost.tlspolicy.reporter import TLSReporter
from gopherpost.tlspolicy.reportstore import (
    DomainDay,
    FailureDetail,
    PolicyCounts,
    PolicyKey,
    TLSReportStore,
)
from tests.support.certs import makeTestPKI
from tests.support.dnsserver import startDNSServer
from tests.support.httpsserver import startHTTPSServer

InlineCallbacks = Generator[Deferred[Any], Any, None]

# 2026-12-01T12:00:00Z
NOON = 1796126400.0
STS = PolicyKey(
    "sts",
    ("version: STSv1", "mode: enforce", "mx: *.example.test", "max_age: 86400"),
    ("*.example.test",),
)


class RecordTests(SynchronousTestCase):
    """
    The C{_smtp._tls} record (RFC 8460 3).
    """

    def test_uris(self) -> None:
        self.assertEqual(
            parseReportRecord("v=TLSRPTv1; rua=mailto:tls@example.test"),
            ["mailto:tls@example.test"],
        )
        self.assertEqual(
            parseReportRecord(
                "v=TLSRPTv1;rua=mailto:tls%2Brpt@example.test?subject=x , https://r.example.test/in;"
            ),
            ["mailto:tls+rpt@example.test", "https://r.example.test/in"],
        )

    def test_otherSchemesIgnored(self) -> None:
        self.assertEqual(
            parseReportRecord("v=TLSRPTv1; rua=ftp://x.test/,mailto:r@x.test"), ["mailto:r@x.test"]
        )

    def test_invalid(self) -> None:
        for text in [
            "v=TLSRPTv1",
            "v=TLSRPTv1; ext=1",
            "v=TLSRPTv2; rua=mailto:a@b.test",
            "v=TLSRPTv1 rua=mailto:a@b.test",
            "v=TLSRPTv1; rua=mailto:nobody",
            "v=TLSRPTv1; rua=mailto:a@b.test,,https://x.test",
            "v=TLSRPTv1; rua=https://",
        ]:
            with self.assertRaises(ReportRecordError, msg=text):
                parseReportRecord(text)

    def test_select(self) -> None:
        self.assertIsNone(selectReportRecord([b"v=spf1 -all"]))
        self.assertEqual(
            selectReportRecord([b"x", b"v=TLSRPTv1; rua=mailto:r@x.test"]), ["mailto:r@x.test"]
        )
        with self.assertRaises(ReportRecordError):
            selectReportRecord(
                [b"v=TLSRPTv1; rua=mailto:r@x.test", b"v=TLSRPTv1; rua=mailto:s@x.test"]
            )


def statistics() -> DomainDay:
    day = DomainDay()
    detail = FailureDetail(
        "certificate-expired", "mx1.example.test", "192.0.2.7", "certificate has expired"
    )
    day.policies[STS] = PolicyCounts(5, {detail: 2})
    day.policies[PolicyKey("no-policy-found")] = PolicyCounts(1)
    return day


class ReportTests(SynchronousTestCase):
    """
    The report (RFC 8460 4.4 and 5).
    """

    def test_json(self) -> None:
        report = buildReport(
            "example.test",
            "2026-12-01",
            statistics(),
            "gopher.test",
            "postmaster@gopher.test",
            "id-1",
        )
        self.assertEqual(
            report,
            {
                "organization-name": "gopher.test",
                "date-range": {
                    "start-datetime": "2026-12-01T00:00:00Z",
                    "end-datetime": "2026-12-01T23:59:59Z",
                },
                "contact-info": "postmaster@gopher.test",
                "report-id": "id-1",
                "policies": [
                    {
                        "policy": {
                            "policy-type": "sts",
                            "policy-domain": "example.test",
                            "policy-string": list(STS.strings),
                            "mx-host": ["*.example.test"],
                        },
                        "summary": {
                            "total-successful-session-count": 5,
                            "total-failure-session-count": 2,
                        },
                        "failure-details": [
                            {
                                "result-type": "certificate-expired",
                                "receiving-mx-hostname": "mx1.example.test",
                                "receiving-ip": "192.0.2.7",
                                "failed-session-count": 2,
                                "failure-reason-code": "certificate has expired",
                            }
                        ],
                    },
                    {
                        "policy": {
                            "policy-type": "no-policy-found",
                            "policy-domain": "example.test",
                        },
                        "summary": {
                            "total-successful-session-count": 1,
                            "total-failure-session-count": 0,
                        },
                    },
                ],
            },
        )
        self.assertEqual(json.loads(gzip.decompress(reportBody(report))), report)

    def test_filename(self) -> None:
        self.assertEqual(
            reportFilename("gopher.test", "example.test", "2026-12-01"),
            "gopher.test!example.test!1796083200!1796169599.json.gz",
        )

    def test_message(self) -> None:
        """
        A multipart/report of type tlsrpt with the headers of RFC 8460 5.3.
        """
        body = reportBody({"report-id": "x"})
        raw = reportMessage(
            "gopher.test",
            "postmaster@gopher.test",
            "tls@example.test",
            "example.test",
            "2026-12-01",
            "id-1@gopher.test",
            body,
            NOON,
        )
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "tlsrpt")
        self.assertEqual(
            message["Subject"],
            "Report Domain: example.test Submitter: gopher.test Report-ID: <id-1@gopher.test>",
        )
        self.assertEqual(message["TLS-Report-Domain"], "example.test")
        self.assertEqual(message["TLS-Report-Submitter"], "gopher.test")
        [text, attachment] = message.iter_parts()
        self.assertEqual(text.get_content_type(), "text/plain")
        self.assertEqual(attachment.get_content_type(), "application/tlsrpt+gzip")
        self.assertEqual(attachment.get_payload(decode=True), body)
        self.assertTrue(str(attachment.get_filename()).endswith(".json.gz"))


class ReporterTests(TestCase):
    """
    L{TLSReporter} on loopback: the record from the test DNS server, the
    mail report into a real spool, the https report to the test server.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOON)
        self.store = TLSReportStore(self.mktemp(), self.clock)
        self.store.load()
        self.dns = startDNSServer(self)
        pki = makeTestPKI(self.mktemp(), "reports.example.test")
        self.https = startHTTPSServer(self, pki.good)
        self.https.respond("/tlsrpt", b"", status=204)
        self.dns.addA("reports.example.test", self.https.host)
        self.resolver = Resolver([self.dns.address], reactor)
        self.spool = Spool(os.path.abspath(self.mktemp()), reactor)
        self.spool.open()
        self.reporter = TLSReporter(
            self.store,
            self.resolver,
            self.spool,
            HTTPSClient(reactor, self.resolver, timeout=5, trustRoot=pki.ca.trustRoot()),
            self.clock,
            "gopher.test",
            lambda domain: domain == "gopher.test",
        )
        self.store.recordSuccess("example.test", STS)
        self.store.recordFailure(
            "example.test", STS, FailureDetail("starttls-not-supported", "mx1.example.test")
        )

    def publish(self, text: str) -> None:
        self.dns.addTXT("_smtp._tls.example.test", text)

    @inlineCallbacks
    def test_notBeforeTheDayEnds(self) -> InlineCallbacks:
        self.publish("v=TLSRPTv1; rua=mailto:tls@example.test")
        yield self.reporter.sendDue()
        self.assertEqual(self.reporter.sent, 0)
        self.assertEqual(list(self.spool.envelopes()), [])

    @inlineCallbacks
    def test_mailAndHTTPS(self) -> InlineCallbacks:
        """
        The next day: one report message queued for the mailto address
        (remote: the relay takes it), one POST; then marked reported.
        """
        self.publish(
            f"v=TLSRPTv1; rua=mailto:tls@example.test,https://reports.example.test:{self.https.port}/tlsrpt"
        )
        self.clock.advance(86400)
        yield self.reporter.sendDue()
        self.assertEqual(self.reporter.sent, 2)
        [envelope] = list(self.spool.envelopes())
        self.assertEqual(envelope.sender, "postmaster@gopher.test")
        self.assertEqual(
            [(r.address, r.local) for r in envelope.recipients], [("tls@example.test", False)]
        )
        raw = yield self.spool.readMessage(envelope)
        message: Any = email.message_from_bytes(raw)
        self.assertEqual(message["TLS-Report-Domain"], "example.test")
        attachment = message.get_payload()[1]
        report = json.loads(gzip.decompress(attachment.get_payload(decode=True)))
        self.assertEqual(report["date-range"]["start-datetime"], "2026-12-01T00:00:00Z")
        [policy] = report["policies"]
        self.assertEqual(
            policy["summary"],
            {"total-successful-session-count": 1, "total-failure-session-count": 1},
        )
        [post] = self.https.requests
        self.assertEqual((post.method, post.path), ("POST", "/tlsrpt"))
        self.assertEqual(post.headers["content-type"], "application/tlsrpt+gzip")
        self.assertEqual(json.loads(gzip.decompress(post.body))["report-id"], report["report-id"])
        [(_, day)] = list(self.store.domains("2026-12-01"))
        self.assertTrue(day.reported)
        yield self.reporter.sendDue()
        self.assertEqual(self.reporter.sent, 2)

    @inlineCallbacks
    def test_noRecord(self) -> InlineCallbacks:
        """
        A domain without a record gets no report, and is done with.
        """
        self.clock.advance(86400)
        yield self.reporter.sendDue()
        self.assertEqual(self.reporter.sent, 0)
        [(_, day)] = list(self.store.domains("2026-12-01"))
        self.assertTrue(day.reported)

    @inlineCallbacks
    def test_retriedThenGivenUp(self) -> InlineCallbacks:
        """
        An https URI that fails: tried again at the next check, given up a
        day after the day ended.
        """
        self.https.respond("/tlsrpt", b"busy", status=503)
        self.publish(f"v=TLSRPTv1; rua=https://reports.example.test:{self.https.port}/tlsrpt")
        self.clock.advance(86400)
        yield self.reporter.sendDue()
        [(_, day)] = list(self.store.domains("2026-12-01"))
        self.assertFalse(day.reported)
        self.clock.advance(86400)
        yield self.reporter.sendDue()
        self.assertEqual(len(self.https.requests), 2)
        self.assertTrue(day.reported)

    @inlineCallbacks
    def test_schedule(self) -> InlineCallbacks:
        """
        Started, the reporter checks within the hour, then hourly.
        """
        self.publish("v=TLSRPTv1; rua=mailto:tls@example.test")
        self.clock.advance(86400)
        self.reporter.startService()
        self.addCleanup(self.reporter.stopService)
        self.clock.advance(3600)
        yield self.reporter.sendDue()  # waits for the run in progress, if any
        self.assertEqual(self.reporter.sent, 1)


class RecordFuzzTests(SynchronousTestCase):
    """
    Random mutations of good records parse or raise their own error,
    nothing else (bounded, seeded).
    """

    def test_reportRecord(self) -> None:
        import random

        rng = random.Random(8460)
        good = "v=TLSRPTv1; rua=mailto:tls@example.test,https://r.example.test/in"
        alphabet = " \t;,=:@%/.?vTLSRPmailto\x00\xe9"
        for _ in range(3000):
            text = list(good)
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(len(text) + 1)
                if rng.random() < 0.5 and position < len(text):
                    del text[position]
                else:
                    text.insert(position, rng.choice(alphabet))
            try:
                selectReportRecord(["".join(text).encode("utf-8")])
            except ReportRecordError:
                pass
