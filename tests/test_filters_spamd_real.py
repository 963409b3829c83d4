"""
SpamAssassin's spamd from Debian, started on a loopback port
(L{tests.filters.services}), through L{gopherpost.filters.spamd}.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from gopherpost.config import SpamdAddress
from gopherpost.filters.headers import HeaderSection
from gopherpost.filters.metrics import FilterMetrics
from gopherpost.filters.policies import ScannerPolicy
from gopherpost.filters.spamd import SpamdClient
from tests.filters import services
from tests.filters.services import GTUBE
from tests.support.filters import FakeContext, FakeMessage, FakeTransaction, message, noTracebacks


class SpamdTests(TestCase):
    timeout = 400

    def setUp(self) -> None:
        noTracebacks(self)

    @defer.inlineCallbacks
    def scan(
        self,
        msg: FakeMessage,
        rejectScore: float | None = 10.0,
        port: int | None = None,
        **kwargs: Any,
    ) -> Generator[Deferred[Any], Any, tuple[Any, FakeTransaction]]:
        if port is None:
            spamd = yield services.spamd()
            port = spamd.port
        self.metrics = FilterMetrics()
        client = SpamdClient(reactor, SpamdAddress("127.0.0.1", port), 30.0, rejectScore)
        policy = ScannerPolicy(
            client, kwargs.pop("failAction", "tempfail"), "all", self.metrics, reactor
        )
        transaction = FakeTransaction()
        reply = yield policy.message(FakeContext(), transaction, msg)
        return reply, transaction

    @defer.inlineCallbacks
    def test_gtubeRejected(self) -> Generator[Deferred[Any], Any, None]:
        msg = message(GTUBE + b"\r\n")
        reply, transaction = yield self.scan(msg)
        self.assertEqual(
            (reply.code, reply.text),
            (550, "5.7.1 Message rejected as spam (SpamAssassin score 1000.0)"),
        )
        self.assertEqual(msg.sectionReplaced, 0)
        entry = transaction.tags["filters"]["spamassassin"]
        self.assertEqual(
            (entry["result"], entry["score"], entry["threshold"]), ("reject", 1000.0, 5.0)
        )
        self.assertEqual(
            self.metrics.value("smtp_spam_score_bucket", {"filter": "spamassassin", "le": "+Inf"}),
            1,
        )

    @defer.inlineCallbacks
    def test_spamTagged(self) -> Generator[Deferred[Any], Any, None]:
        """
        Spam under the reject score (none here): SpamAssassin's X-Spam-Flag
        and X-Spam-Status on top; the body is never rewritten.
        """
        msg = message(GTUBE + b"\r\n")
        body = msg.body
        reply, _ = yield self.scan(msg, rejectScore=None)
        self.assertIsNone(reply)
        section = HeaderSection(msg.headerSection)
        self.assertEqual(section.values(b"X-Spam-Flag"), [b" YES"])
        (status,) = section.values(b"X-Spam-Status")
        self.assertTrue(status.startswith(b" Yes, score=1000.0 required=5.0 tests=GTUBE"), status)
        self.assertTrue(msg.headerSection.startswith(b"X-Spam-Checker-Version: SpamAssassin"))
        self.assertEqual(msg.body, body)
        self.assertEqual(section.values(b"Content-Type"), [b" text/plain; charset=us-ascii"])

    @defer.inlineCallbacks
    def test_cleanAccepted(self) -> Generator[Deferred[Any], Any, None]:
        msg = message()
        msg.headerSection += b"X-Spam-Flag: YES\r\n"
        reply, transaction = yield self.scan(msg)
        self.assertIsNone(reply)
        section = HeaderSection(msg.headerSection)
        (status,) = section.values(b"X-Spam-Status")
        self.assertTrue(status.startswith(b" No, score="), status)
        self.assertEqual(section.values(b"X-Spam-Flag"), [])
        self.assertEqual(transaction.tags["filters"]["spamassassin"]["spam"], False)

    @defer.inlineCallbacks
    def test_down(self) -> Generator[Deferred[Any], Any, None]:
        reply, _ = yield self.scan(message(GTUBE + b"\r\n"), port=services.freePort())
        self.assertEqual(reply.code, 451)
        self.assertEqual(
            self.metrics.value(
                "smtp_filter_results_total", {"filter": "spamassassin", "result": "error"}
            ),
            1,
        )
        reply, _ = yield self.scan(message(), port=services.freePort(), failAction="accept")
        self.assertIsNone(reply)
