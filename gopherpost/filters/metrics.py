# -*- test-case-name: tests.test_filters_metrics -*-
"""
The content filters' metrics, as a prometheus_client collector.

    smtp_filter_results_total{filter,result}   one per verdict (or failure)
    smtp_filter_duration_seconds{filter}       how long each filter took
    smtp_spam_score{filter}                    rspamd and SpamAssassin scores

C{filter} is a configured filter's name (C{rspamd}, C{spamassassin}, a
milter's C{name=}), so the label set is bounded by the configuration;
C{result} is one of L{gopherpost.filters.verdict.RESULTS}.  To expose them,
register the collector with the registry the metrics page serves:
C{registry.register(filters.metrics)}.

Inbound worker processes (C{SMTP_WORKERS} > 1) count in the main process:
their policies get an L{AuditFilterMetrics}, which sends each verdict as a
C{filter.verdict} audit event (forwarded to the main process with the
others), and the main process's L{FilterMetrics} counts those events
(L{FilterMetrics.eventReceived}, subscribed to its audit log).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import Metric
from zope.interface import implementer

from gopherpost.filters.interfaces import IFilterMetrics
from gopherpost.filters.verdict import RESULTS
from gopherpost.interfaces import IAuditLog

__all__ = [
    "DURATION_BUCKETS",
    "SCORE_BUCKETS",
    "VERDICT_EVENT",
    "AuditFilterMetrics",
    "FilterMetrics",
]

#: The audit event of one verdict in a worker process.
VERDICT_EVENT = "filter.verdict"

#: Seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)

#: Spam scores (rspamd's and SpamAssassin's scales are alike).
SCORE_BUCKETS = (-5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 50.0, 100.0)


@implementer(IFilterMetrics)
class FilterMetrics:
    """
    The counters and histograms (in no global registry).
    """

    def __init__(self) -> None:
        self._results = Counter(
            "smtp_filter_results",
            "Content filter verdicts and failures",
            ("filter", "result"),
            registry=None,
        )
        self._duration = Histogram(
            "smtp_filter_duration_seconds",
            "Time each content filter took for one stage or one message",
            ("filter",),
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self._score = Histogram(
            "smtp_spam_score",
            "Spam scores given by rspamd and SpamAssassin",
            ("filter",),
            buckets=SCORE_BUCKETS,
            registry=None,
        )

    def result(self, filterName: str, result: str) -> None:
        """
        Count one verdict or failure.

        @raise ValueError: for a result that is not one of L{RESULTS}.
        """
        if result not in RESULTS:
            raise ValueError(f"unknown filter result {result!r}")
        self._results.labels(filterName, result).inc()

    def duration(self, filterName: str, seconds: float) -> None:
        """
        Record how long a filter took.
        """
        self._duration.labels(filterName).observe(max(0.0, seconds))

    def score(self, filterName: str, score: float) -> None:
        """
        Record a spam score.
        """
        self._score.labels(filterName).observe(score)

    def verdict(self, filterName: str, result: str, seconds: float, score: float | None) -> None:
        """
        Count one verdict (or failure), its time and its spam score.
        """
        self.result(filterName, result)
        self.duration(filterName, seconds)
        if score is not None:
            self.score(filterName, score)

    def eventReceived(self, event: dict[str, Any]) -> None:
        """
        Count a L{VERDICT_EVENT} from a worker (an audit log subscriber);
        other events, and malformed ones, are ignored.
        """
        if event.get("event") != VERDICT_EVENT:
            return
        name, result = event.get("filter"), event.get("result")
        seconds, score = event.get("seconds"), event.get("score")
        if not isinstance(name, str) or result not in RESULTS:
            return
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            seconds = 0.0
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            score = None
        self.verdict(name, str(result), float(seconds), score)

    def collect(self) -> Iterator[Metric]:
        """
        The metric families, for a prometheus_client registry.
        """
        for metric in (self._results, self._duration, self._score):
            yield from metric.collect()

    def value(self, name: str, labels: dict[str, str]) -> float:
        """
        The value of one sample (0 when absent), e.g.
        C{value("smtp_filter_results_total", {"filter": "rspamd",
        "result": "reject"})}.
        """
        return _sampleValue(self.collect(), name, labels)


@implementer(IFilterMetrics)
class AuditFilterMetrics:
    """
    The metrics of a worker process's filters: each verdict goes to the
    audit log as a L{VERDICT_EVENT} (see the module docstring).
    """

    def __init__(self, audit: IAuditLog) -> None:
        self._audit = audit

    def verdict(self, filterName: str, result: str, seconds: float, score: float | None) -> None:
        """
        Send one verdict.

        @raise ValueError: for a result that is not one of L{RESULTS}.
        """
        if result not in RESULTS:
            raise ValueError(f"unknown filter result {result!r}")
        fields: dict[str, Any] = {"filter": filterName, "result": result, "seconds": seconds}
        if score is not None:
            fields["score"] = score
        self._audit.emit(VERDICT_EVENT, **fields)


def _sampleValue(families: Iterable[Metric], name: str, labels: dict[str, str]) -> float:
    for family in families:
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0
