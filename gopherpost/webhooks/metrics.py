# -*- test-case-name: tests.test_webhook_metrics -*-
"""
The webhooks' numbers, kept here and read by the server's metrics:

  - C{smtp_webhook_deliveries_total{kind,result}}: attempts and outcomes,
    C{result} one of C{delivered}, C{failed} (an attempt that will be
    retried or expire), C{gone} (410), C{expired}, C{dropped};
  - C{smtp_webhook_pending{kind}}: webhooks not settled yet.

L{WebhookMetrics} is a C{prometheus_client} collector: register it with a
registry (C{registry.register(metrics)}); L{WebhookMetrics.asJSON} gives the
same numbers for the JSON view.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from zope.interface import implementer

from gopherpost.webhooks.dispatcher import RESULTS, IWebhookReporter
from gopherpost.webhooks.records import KINDS

__all__ = ["WebhookMetrics"]


@implementer(IWebhookReporter)
class WebhookMetrics:
    """
    Counters and gauges of both webhooks; an L{IWebhookReporter}.

    Unknown kinds and results are ignored, so labels stay a small fixed set.
    """

    def __init__(self) -> None:
        self.deliveries: dict[tuple[str, str], int] = {
            (kind, result): 0 for kind in KINDS for result in RESULTS
        }
        self.pendingByKind: dict[str, int] = dict.fromkeys(KINDS, 0)

    def count(self, kind: str, result: str, amount: int = 1) -> None:
        """
        Add C{amount} C{result}s for webhook C{kind}.
        """
        if (kind, result) in self.deliveries:
            self.deliveries[kind, result] += amount

    def pending(self, kind: str, count: int) -> None:
        """
        C{count} webhooks of C{kind} are pending now.
        """
        if kind in self.pendingByKind:
            self.pendingByKind[kind] = max(0, int(count))

    def collect(self) -> Iterator[Metric]:
        """
        The metric families, for C{prometheus_client}'s registry.
        """
        deliveries = CounterMetricFamily(
            "smtp_webhook_deliveries",
            "Webhook attempts and outcomes.",
            labels=["kind", "result"],
        )
        for (kind, result), value in self.deliveries.items():
            deliveries.add_metric([kind, result], value)
        yield deliveries
        pending = GaugeMetricFamily(
            "smtp_webhook_pending", "Webhooks not delivered yet.", labels=["kind"]
        )
        for kind, value in self.pendingByKind.items():
            pending.add_metric([kind], value)
        yield pending

    def asJSON(self) -> dict[str, Any]:
        """
        The same numbers as JSON: counters by C{kind} then C{result}.
        """
        deliveries: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        for (kind, result), value in self.deliveries.items():
            deliveries[kind][result] = value
        return {
            "smtp_webhook_deliveries_total": deliveries,
            "smtp_webhook_pending": dict(self.pendingByKind),
        }
