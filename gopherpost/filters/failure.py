# -*- test-case-name: tests.test_filters_failure -*-
"""
When a filter cannot answer: the failure policy (C{SMTP_FILTER_FAIL}, or a
milter's C{default=}) and the time bound of every filter call.

A filter that is down, too slow, or says something we cannot understand
never lets a message through half-filtered and never drops a session: its
verdict becomes C{tempfail} (C{451 4.7.1}, the client tries again later),
C{accept} (the message goes on without that filter; logged and counted) or
C{reject} (C{550 5.7.1}).
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from gopherpost.filters.verdict import Verdict

__all__ = [
    "FAILURE_ACTIONS",
    "FilterFailure",
    "FilterProtocolError",
    "failureReason",
    "failureVerdict",
    "withTimeout",
]

_T = TypeVar("_T")

#: What a failure may mean.
FAILURE_ACTIONS = ("tempfail", "accept", "reject")


class FilterProtocolError(Exception):
    """
    A filter said something that breaks its protocol.
    """


class FilterFailure(Exception):
    """
    A filter could not answer.

    @ivar reason: C{"timeout"} or C{"error"} (the metrics label).
    @ivar problem: one line for the log.
    """

    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(reason, problem)
        self.reason = reason
        self.problem = problem

    def __str__(self) -> str:
        return self.problem


def failureReason(failure: Failure) -> FilterFailure:
    """
    A L{FilterFailure} describing C{failure} in one line, without a
    traceback: timeouts, refused and lost connections and protocol errors
    are expected; anything else is described by its type and message.
    """
    value = failure.value
    if isinstance(value, FilterFailure):
        return value
    if isinstance(value, TimeoutError):
        return FilterFailure("timeout", str(value) or "no answer in time")
    if isinstance(value, CancelledError):
        return FilterFailure("timeout", "no answer in time")
    if isinstance(value, ConnectError):
        return FilterFailure("error", f"cannot connect ({value.__class__.__name__}: {value})")
    if isinstance(value, (ConnectionDone, ConnectionLost)):
        return FilterFailure("error", "the connection closed in the middle of the conversation")
    if isinstance(value, FilterProtocolError):
        return FilterFailure("error", f"protocol error: {value}")
    return FilterFailure("error", f"{value.__class__.__name__}: {value}")


def failureVerdict(action: str, failure: FilterFailure) -> Verdict:
    """
    The verdict a failure stands for.

    @param action: C{tempfail}, C{accept} or C{reject}.
    """
    if action == "accept":
        return Verdict.accept(result=failure.reason)
    if action == "reject":
        return Verdict.reject(550, "5.7.1 Content filter unavailable", result=failure.reason)
    return Verdict.tempfail(
        451, "4.7.1 Content filter unavailable, try again later", result=failure.reason
    )


def withTimeout(d: Deferred[_T], seconds: float, clock: IReactorTime) -> Deferred[_T]:
    """
    C{d}, cancelled (failing with L{TimeoutError}) when it has not fired
    after C{seconds}.

    Whatever the cancelled operation failed with then (HTTP clients wrap
    the cancellation in their own errors), the result is a
    L{TimeoutError}.
    """

    def timedOut(result: _T | Failure, timeout: float) -> _T | Failure:
        if isinstance(result, Failure):
            return Failure(TimeoutError(f"no answer in {timeout:g} s"))
        return result

    return d.addTimeout(seconds, clock, onTimeoutCancel=timedOut)
