# -*- test-case-name: tests.test_checks_metrics -*-
"""
The counters of the MX checks, as a prometheus_client collector.

They live here until the metrics module moves onto prometheus_client; to
expose them, register the collector with the registry the metrics page
serves: C{registry.register(checks.metrics)}.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily

__all__ = ["CheckMetrics", "ForwardedCheckMetrics", "METRICS"]

#: name -> (help, label names)
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "smtp_spf_results": ("SPF results of incoming mail", ("result",)),
    "smtp_dkim_results": ("DKIM results, one per signature", ("result",)),
    "smtp_dmarc_results": ("DMARC results and what was done", ("result", "disposition")),
    "smtp_arc_results": ("ARC chain validation results", ("result",)),
    "smtp_dnsbl_hits": ("Clients listed in a DNS blocklist", ("zone",)),
    "smtp_dnsbl_errors": ("DNS blocklist error answers and failed lookups", ("zone", "kind")),
    "smtp_rate_limited": ("Commands refused by a rate limit", ("limit",)),
    "smtp_greylist": ("Greylisting decisions", ("action",)),
    "smtp_bans": ("Bans started", ()),
    "smtp_banned_connections": ("Connections refused because the client is banned", ()),
    "smtp_state_store_failovers": (
        "Calls that used this node's own state because Redis failed or was down",
        (),
    ),
    "smtp_state_store_errors": ("Checks skipped because no state store answered", ()),
}


def _validate(name: str, labels: tuple[str, ...]) -> None:
    if len(labels) != len(METRICS[name][1]):
        raise ValueError(f"{name} takes labels {METRICS[name][1]}")


class CheckMetrics:
    """
    Counters by name and label values.
    """

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, tuple[str, ...]]] = Counter()

    def inc(self, name: str, *labels: str, amount: int = 1) -> None:
        """
        Add to a counter of L{METRICS}.

        @raise KeyError: for an unknown name.
        @raise ValueError: for the wrong number of label values.
        """
        _validate(name, labels)
        self._counts[(name, tuple(labels))] += amount

    def value(self, name: str, *labels: str) -> int:
        """
        The current count (0 when never counted).
        """
        return self._counts[(name, tuple(labels))]

    def collect(self) -> Iterator[CounterMetricFamily]:
        """
        The metric families, for a prometheus_client registry.
        """
        for name, (documentation, labelNames) in METRICS.items():
            family = CounterMetricFamily(name, documentation, labels=list(labelNames))
            for (counted, labels), count in sorted(self._counts.items()):
                if counted == name:
                    family.add_metric(list(labels), count)
            yield family


class ForwardedCheckMetrics(CheckMetrics):
    """
    The counters of an inbound worker process: every increment goes to the
    parent's L{CheckMetrics} (which the metrics page serves) through
    C{forward(source, name, labels, amount)}, with source C{"checks"}.
    """

    def __init__(self, forward: Callable[[str, str, tuple[str, ...], int], None]) -> None:
        CheckMetrics.__init__(self)
        self._forward = forward

    def inc(self, name: str, *labels: str, amount: int = 1) -> None:
        _validate(name, labels)
        self._forward("checks", name, tuple(labels), amount)
