# -*- test-case-name: tests.test_acme_service -*-
"""
ACME's metrics, as a C{prometheus_client} collector to register with the
registry the metrics page serves (C{metrics.registry.register(...)}):

  - C{smtp_acme_orders_total{result}}: orders finished, C{result} being
    C{issued} or C{failed};
  - C{smtp_tls_certificate_expiry_seconds}: when the certificate new TLS
    sessions get expires, in seconds since the epoch (the served
    certificate's notAfter; alert on it minus C{time()}).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gopherpost.acme.interfaces import ICertificateSource

if TYPE_CHECKING:
    from gopherpost.acme.source import ServedCertificate

__all__ = ["ACMEMetrics", "ORDER_RESULTS"]

#: The values of C{smtp_acme_orders_total}'s C{result} label.
ORDER_RESULTS = ("issued", "failed")


class ACMEMetrics:
    """
    Counts orders; reads the certificate's expiry from its source when
    scraped.
    """

    def __init__(self, source: ICertificateSource) -> None:
        self.source = source
        self.orders = dict.fromkeys(ORDER_RESULTS, 0)

    def orderFinished(self, result: str) -> None:
        """
        Count one order that ended with C{result} (one of L{ORDER_RESULTS}).
        """
        if result not in self.orders:
            raise ValueError(f"unknown order result {result!r}")
        self.orders[result] += 1

    def _families(self, withValues: bool) -> Iterator[Metric]:
        orders = CounterMetricFamily(
            "smtp_acme_orders", "ACME certificate orders finished, by result", labels=["result"]
        )
        expiry = GaugeMetricFamily(
            "smtp_tls_certificate_expiry_seconds",
            "When the certificate served to new TLS sessions expires (Unix time)",
        )
        if withValues:
            for result in ORDER_RESULTS:
                orders.add_metric([result], self.orders[result])
            served = cast("ServedCertificate", self.source.currentCertificate())
            expiry.add_metric([], served.notAfter.timestamp())
        yield orders
        yield expiry

    def describe(self) -> Iterator[Metric]:
        """
        The families' names, so a registry refuses a clash.
        """
        return self._families(False)

    def collect(self) -> Iterator[Metric]:
        """
        The families with their values.
        """
        return self._families(True)
