"""
Tests for L{gopherpost.filters.service} and its wiring in
L{gopherpost.tap}, and for L{gopherpost.filters.metrics}.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.config import settingsFromEnvironment
from gopherpost.filters.metrics import FilterMetrics
from gopherpost.filters.policies import MilterPolicy, ScannerPolicy
from gopherpost.filters.rspamd import RspamdClient
from gopherpost.filters.service import makeContentFilters
from gopherpost.filters.spamd import SpamdClient
from gopherpost.tap import Options, makeService
from tests.support.server import serverEnvironment

ALL = {
    "SMTP_RSPAMD_URL": "http://127.0.0.1:11333",
    "SMTP_SPAMD": "127.0.0.1:783",
    "SMTP_MILTERS": "inet:127.0.0.1:8891;name=opendkim,inet:127.0.0.1:7357;default=accept",
    "SMTP_FILTER_FAIL": "accept",
}


class MakeContentFiltersTests(SynchronousTestCase):
    def test_nothingConfigured(self) -> None:
        filters = makeContentFilters(
            settingsFromEnvironment({}, defaultHostname=lambda: "h.test"), Clock()
        )
        self.assertEqual(filters.policies, [])

    def test_order(self) -> None:
        """
        rspamd, SpamAssassin, then the milters (in their order).
        """
        settings = settingsFromEnvironment(ALL, defaultHostname=lambda: "h.test")
        filters = makeContentFilters(settings, Clock())
        rspamd, spamd, milters = filters.policies
        assert isinstance(rspamd, ScannerPolicy) and isinstance(spamd, ScannerPolicy)
        assert isinstance(milters, MilterPolicy)
        self.assertIsInstance(rspamd.scanner, RspamdClient)
        self.assertIsInstance(spamd.scanner, SpamdClient)
        self.assertEqual((rspamd.name, spamd.name), ("rspamd", "spamassassin"))
        self.assertEqual(
            [c.name for c in milters.clients], ["opendkim", "milter:inet:127.0.0.1:7357"]
        )
        self.assertEqual(rspamd.failAction, "accept")
        self.assertEqual(milters.clients[1].spec.default, "accept")
        filters.startService()
        self.successResultOf(filters.stopService())


class WiringTests(SynchronousTestCase):
    def test_tap(self) -> None:
        """
        C{twistd gopherpost} builds the filters and serves their metrics.
        """
        path = os.path.abspath(self.mktemp())
        service = makeService(Options(), serverEnvironment(path, 2525, **ALL), Clock())
        self.assertEqual(len(service.filters.policies), 3)
        self.assertIn(service.filters, list(service))
        service.filters.metrics.result("rspamd", "reject")
        body, _ = service.metrics.exposition()
        self.assertIn(b'smtp_filter_results_total{filter="rspamd",result="reject"} 1.0', body)

    def test_badSetting(self) -> None:
        path = os.path.abspath(self.mktemp())
        environ = serverEnvironment(path, 2525, SMTP_MILTERS="localhost:8891")
        error = self.assertRaises(SystemExit, makeService, Options(), environ, Clock())
        self.assertIn("SMTP_MILTERS", str(error.code))


class MetricsTests(SynchronousTestCase):
    def test_families(self) -> None:
        metrics = FilterMetrics()
        metrics.result("opendkim", "accept")
        metrics.duration("opendkim", 0.02)
        metrics.score("rspamd", 7.5)
        names = {family.name for family in metrics.collect()}
        self.assertEqual(
            names, {"smtp_filter_results", "smtp_filter_duration_seconds", "smtp_spam_score"}
        )
        self.assertEqual(
            metrics.value("smtp_filter_results_total", {"filter": "opendkim", "result": "accept"}),
            1,
        )
        self.assertEqual(
            metrics.value("smtp_spam_score_bucket", {"filter": "rspamd", "le": "8.0"}), 1
        )
        self.assertEqual(
            metrics.value("smtp_spam_score_bucket", {"filter": "rspamd", "le": "6.0"}), 0
        )

    def test_unknownResult(self) -> None:
        self.assertRaises(ValueError, FilterMetrics().result, "x", "maybe")
