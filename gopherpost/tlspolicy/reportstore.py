# -*- test-case-name: tests.test_tlspolicy_reportstore -*-
"""
What TLS reports (RFC 8460) are made of: per policy domain and UTC day,
per policy applied, the successful sessions and the failed ones by failure
type, MX host and address.

Counts are kept in memory and written, one JSON file per day in a
directory of the spool's state directory (C{.gopherpost/tlsrpt/}), by
L{TLSReportStore.flush} (the service calls it every minute and when it
stops): written atomically in a thread, so a crash forgets at most the
last minute of statistics, never a message.  Days older than
L{KEEP_DAYS} are dropped.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gopherpost.durable import replaceFile

__all__ = [
    "KEEP_DAYS",
    "PolicyKey",
    "FailureDetail",
    "PolicyCounts",
    "DomainDay",
    "TLSReportStore",
    "dayOf",
]

_log = Logger()

#: Days of statistics kept (sent or not).
KEEP_DAYS = 7

_DAY_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.json")
_REASON_LIMIT = 200


def dayOf(seconds: float) -> str:
    """
    The UTC day of a POSIX time, C{"2026-12-01"}.
    """
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).date().isoformat()


class PolicyKey(NamedTuple):
    """
    One policy as a TLS report names it (RFC 8460 4.4 C{policy}).

    @ivar policyType: C{sts}, C{tlsa} or C{no-policy-found}.
    @ivar strings: C{policy-string}: the MTA-STS policy's lines, or the
        TLSA records.
    @ivar mxHosts: C{mx-host}: the MTA-STS policy's patterns, or the MX
        host of the TLSA records.
    """

    policyType: str
    strings: tuple[str, ...] = ()
    mxHosts: tuple[str, ...] = ()


class FailureDetail(NamedTuple):
    """
    One kind of failure (RFC 8460 4.4 C{failure-details}), without its count.

    @ivar resultType: an RFC 8460 4.3 result type.
    @ivar receivingMX: the MX host name.
    @ivar receivingIP: the address connected to.
    @ivar reason: C{failure-reason-code}: our one-line diagnosis.
    """

    resultType: str
    receivingMX: str = ""
    receivingIP: str = ""
    reason: str = ""


@dataclass
class PolicyCounts:
    """
    The sessions under one policy.
    """

    successes: int = 0
    failures: dict[FailureDetail, int] = field(default_factory=dict)

    @property
    def failureCount(self) -> int:
        return sum(self.failures.values())


@dataclass
class DomainDay:
    """
    One policy domain's day.

    @ivar policies: the counts by policy.
    @ivar reported: whether its report was sent (or given up).
    """

    policies: dict[PolicyKey, PolicyCounts] = field(default_factory=dict)
    reported: bool = False


def _dayToJSON(domains: dict[str, DomainDay]) -> bytes:
    out: dict[str, Any] = {}
    for domain, day in sorted(domains.items()):
        policies = []
        for key, counts in day.policies.items():
            policies.append(
                {
                    "type": key.policyType,
                    "strings": list(key.strings),
                    "mx": list(key.mxHosts),
                    "successes": counts.successes,
                    "failures": [
                        {
                            "result-type": detail.resultType,
                            "mx": detail.receivingMX,
                            "ip": detail.receivingIP,
                            "reason": detail.reason,
                            "count": count,
                        }
                        for detail, count in counts.failures.items()
                    ],
                }
            )
        out[domain] = {"reported": day.reported, "policies": policies}
    return json.dumps(out, sort_keys=True).encode("utf-8") + b"\n"


def _dayFromJSON(data: bytes) -> dict[str, DomainDay]:
    record = json.loads(data)
    domains: dict[str, DomainDay] = {}
    for domain, entry in record.items():
        day = DomainDay(reported=bool(entry.get("reported", False)))
        for policy in entry.get("policies", []):
            key = PolicyKey(
                str(policy["type"]),
                tuple(str(s) for s in policy.get("strings", [])),
                tuple(str(m) for m in policy.get("mx", [])),
            )
            counts = PolicyCounts(int(policy.get("successes", 0)))
            for failure in policy.get("failures", []):
                detail = FailureDetail(
                    str(failure["result-type"]),
                    str(failure.get("mx", "")),
                    str(failure.get("ip", "")),
                    str(failure.get("reason", "")),
                )
                counts.failures[detail] = int(failure.get("count", 0))
            day.policies[key] = counts
        domains[str(domain)] = day
    return domains


class TLSReportStore:
    """
    The statistics, by day and domain; see the module docstring.
    """

    def __init__(
        self,
        directory: str,
        clock: IReactorTime,
        runInThread: Callable[..., Deferred[Any]] | None = None,
        keepDays: int = KEEP_DAYS,
    ) -> None:
        """
        @param directory: created (mode 0700) by L{load} if missing.
        @param clock: what day it is.
        @param runInThread: C{runInThread(f, *args)} runs a blocking write;
            default: at once (tests).
        @param keepDays: see L{KEEP_DAYS}.
        """
        self.directory = directory
        self._clock = clock
        self._runInThread = runInThread or (lambda f, *args: maybeDeferred(f, *args))
        self._keepDays = keepDays
        self._days: dict[str, dict[str, DomainDay]] = {}
        self._dirty: set[str] = set()

    def load(self) -> None:
        """
        Read the days kept (blocking: at start-up); a file that does not
        load is logged and left alone.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for name in sorted(os.listdir(self.directory)):
            match = _DAY_FILE.fullmatch(name)
            if match is None:
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as f:
                    self._days[match.group(1)] = _dayFromJSON(f.read())
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                _log.warn("Ignoring the TLS report data in {path}: {error}", path=path, error=e)

    @property
    def today(self) -> str:
        return dayOf(self._clock.seconds())

    def _domainDay(self, domain: str) -> DomainDay:
        day = self.today
        self._dirty.add(day)
        return self._days.setdefault(day, {}).setdefault(domain, DomainDay())

    def recordSuccess(self, domain: str, policy: PolicyKey) -> None:
        """
        One session to C{domain} under C{policy} succeeded.
        """
        counts = self._domainDay(domain).policies.setdefault(policy, PolicyCounts())
        counts.successes += 1

    def recordFailure(self, domain: str, policy: PolicyKey, detail: FailureDetail) -> None:
        """
        One session to C{domain} (or one policy lookup) under C{policy}
        failed.
        """
        if len(detail.reason) > _REASON_LIMIT:
            detail = detail._replace(reason=detail.reason[: _REASON_LIMIT - 3] + "...")
        counts = self._domainDay(domain).policies.setdefault(policy, PolicyCounts())
        counts.failures[detail] = counts.failures.get(detail, 0) + 1

    def days(self) -> list[str]:
        """
        The days with statistics, oldest first.
        """
        return sorted(self._days)

    def domains(self, day: str) -> Iterator[tuple[str, DomainDay]]:
        """
        The domains of C{day} and their statistics.
        """
        yield from sorted(self._days.get(day, {}).items())

    def markReported(self, day: str, domain: str) -> None:
        """
        The report of C{domain} for C{day} went out (or was given up).
        """
        entry = self._days.get(day, {}).get(domain)
        if entry is not None and not entry.reported:
            entry.reported = True
            self._dirty.add(day)

    def flush(self) -> Deferred[None]:
        """
        Write the days that changed, and drop the days too old to keep.

        @return: a L{Deferred} firing once written; failures are logged.
        """
        self._prune()
        writes = []
        for day in sorted(self._dirty):
            domains = self._days.get(day)
            if domains is None:
                continue
            path = os.path.join(self.directory, f"{day}.json")
            d = self._runInThread(replaceFile, path, _dayToJSON(domains), 0o600)
            d.addErrback(_writeFailed, path)
            writes.append(d)
        self._dirty.clear()
        if not writes:
            return succeed(None)
        return gatherResults(writes).addCallback(lambda _: None)

    def _prune(self) -> None:
        oldest = dayOf(self._clock.seconds() - self._keepDays * 86400)
        for day in [d for d in self._days if d < oldest]:
            del self._days[day]
            self._dirty.discard(day)
            path = os.path.join(self.directory, f"{day}.json")
            self._runInThread(_unlink, path).addErrback(lambda f: None)


def _writeFailed(failure: Any, path: str) -> None:
    _log.error(
        "Could not write TLS report data to {path}: {error}",
        path=path,
        error=failure.getErrorMessage(),
    )


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
