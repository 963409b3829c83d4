# -*- test-case-name: tests.test_tlspolicy_policy -*-
"""
Outbound transport security's metrics, as a prometheus_client collector.

    smtp_outbound_tls_sessions_total{policy,result}   per connection judged:
        policy one of dane, mta-sts, verify, may, none; result success or
        failure
    smtp_outbound_tls_failures_total{policy,type}     failures by RFC 8460 type
    smtp_mta_sts_fetches_total{result}                policy fetches: ok, or
        the RFC 8460 type of the failure

Every label takes values from a fixed list.  To expose them, register the
collector with the registry the metrics page serves.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import Metric

__all__ = ["TLSPolicyMetrics"]


class TLSPolicyMetrics:
    """
    The counters (in no global registry).
    """

    def __init__(self) -> None:
        self._sessions = Counter(
            "smtp_outbound_tls_sessions",
            "Outbound connections judged by the transport security policy",
            ("policy", "result"),
            registry=None,
        )
        self._failures = Counter(
            "smtp_outbound_tls_failures",
            "Outbound TLS failures by RFC 8460 result type",
            ("policy", "type"),
            registry=None,
        )
        self._fetches = Counter(
            "smtp_mta_sts_fetches",
            "MTA-STS policy fetches by result",
            ("result",),
            registry=None,
        )

    def session(self, policy: str, failureType: str | None) -> None:
        """
        Count one judged connection.
        """
        self._sessions.labels(policy, "success" if failureType is None else "failure").inc()
        if failureType is not None:
            self._failures.labels(policy, failureType).inc()

    def fetch(self, result: str) -> None:
        """
        Count one MTA-STS policy fetch: C{"ok"} or a failure type.
        """
        self._fetches.labels(result).inc()

    def collect(self) -> Iterator[Metric]:
        """
        The metric families, for a prometheus_client registry.
        """
        for metric in (self._sessions, self._failures, self._fetches):
            yield from metric.collect()

    def value(self, name: str, labels: dict[str, str]) -> float:
        """
        The value of one sample (0 when absent).
        """
        for family in self.collect():
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0
