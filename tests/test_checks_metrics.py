"""
Tests for L{gopherpost.checks.metrics}.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial import unittest

from gopherpost.checks.metrics import METRICS, CheckMetrics


class CheckMetricsTests(unittest.TestCase):
    def test_exposition(self) -> None:
        """
        Registered with a prometheus_client registry, the counters come out
        with the issue's names and labels, and parse.
        """
        metrics = CheckMetrics()
        metrics.inc("smtp_spf_results", "pass")
        metrics.inc("smtp_spf_results", "pass")
        metrics.inc("smtp_dmarc_results", "fail", "reject")
        metrics.inc("smtp_dnsbl_hits", "zen.bl.test")
        metrics.inc("smtp_state_store_failovers")
        registry = CollectorRegistry()
        registry.register(metrics)
        text = generate_latest(registry).decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        self.assertEqual(samples[("smtp_spf_results_total", (("result", "pass"),))], 2)
        self.assertEqual(
            samples[("smtp_dmarc_results_total", (("disposition", "reject"), ("result", "fail")))],
            1,
        )
        self.assertEqual(samples[("smtp_dnsbl_hits_total", (("zone", "zen.bl.test"),))], 1)
        self.assertEqual(samples[("smtp_state_store_failovers_total", ())], 1)
        families = {f.name: f.type for f in text_string_to_metric_families(text)}
        for name in ("smtp_dkim_results", "smtp_arc_results"):
            self.assertEqual(families[name], "counter")

    def test_labelsChecked(self) -> None:
        metrics = CheckMetrics()
        self.assertRaises(ValueError, metrics.inc, "smtp_spf_results")
        self.assertRaises(KeyError, metrics.inc, "smtp_nonsense")
        self.assertEqual(len(METRICS), 12)
