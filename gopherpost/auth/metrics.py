# -*- test-case-name: tests.test_auth_session -*-
"""
The counter of AUTH attempts, C{smtp_auth_attempts_total{mechanism,result}},
as a prometheus_client collector: register it with the registry the
metrics page serves (C{Metrics.registry.register(auth.metrics)}).

Results: C{success}; C{failure} (wrong user name or password, or acting
as another user); C{locked} (refused without a check: the client or the
user is locked out); C{malformed} (not base64, not a message of the
mechanism, too long).  A cancelled exchange is not an attempt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily

from gopherpost.auth.sasl import MECHANISMS

__all__ = ["AuthMetrics", "RESULTS", "SUCCESS", "FAILURE", "LOCKED", "MALFORMED"]

SUCCESS = "success"
FAILURE = "failure"
LOCKED = "locked"
MALFORMED = "malformed"
RESULTS = (SUCCESS, FAILURE, LOCKED, MALFORMED)


class AuthMetrics:
    """
    AUTH attempts by mechanism and result.
    """

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def count(self, mechanism: str, result: str) -> None:
        """
        Count one attempt.

        @raise ValueError: an unknown mechanism or result.
        """
        if mechanism not in MECHANISMS or result not in RESULTS:
            raise ValueError(f"no AUTH counter for {mechanism!r}, {result!r}")
        self._counts[(mechanism, result)] += 1

    def value(self, mechanism: str, result: str) -> int:
        """
        The count so far.
        """
        return self._counts[(mechanism, result)]

    def collect(self) -> Iterator[CounterMetricFamily]:
        """
        The metric family (every mechanism and result, zero included).
        """
        family = CounterMetricFamily(
            "smtp_auth_attempts",
            "SMTP AUTH attempts by SASL mechanism and result",
            labels=["mechanism", "result"],
        )
        for mechanism in MECHANISMS:
            for result in RESULTS:
                family.add_metric([mechanism, result], self._counts[(mechanism, result)])
        yield family
