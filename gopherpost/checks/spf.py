# -*- test-case-name: tests.test_checks_spf -*-
"""
SPF (RFC 7208) for the MAIL FROM identity, or the HELO identity when the
reverse-path is null, with pyspf.

pyspf evaluates in a worker thread of its own pool; its DNS lookups go
through the server's resolver (L{gopherpost.checks.threaddns}).  RFC 7208's
processing limits are pyspf's: 10 DNS-querying terms, 2 void lookups, 10 MX
or PTR names, 20 seconds for the whole evaluation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from gopherpost.checks.threaddns import ThreadDNS, withSPFLookup

__all__ = ["SPF_RESULTS", "SPFChecker", "SPFResult"]

#: The results of RFC 7208, section 2.6.
SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")

#: Seconds one SPF evaluation may take in all (RFC 7208 4.6.4: at least 20).
DEFAULT_TIMEOUT = 20.0


@dataclass(frozen=True)
class SPFResult:
    """
    The outcome of one SPF check.

    @ivar result: one of L{SPF_RESULTS}.
    @ivar identity: C{"mailfrom"} or C{"helo"}: which identity was checked.
    @ivar domain: the domain whose policy was evaluated.
    @ivar sender: the identity as checked: the MAIL FROM address, or
        C{postmaster@<helo>}.
    @ivar reason: pyspf's explanation, one line.
    """

    result: str
    identity: str
    domain: str
    sender: str
    reason: str

    def asMetadata(self) -> dict[str, str]:
        """
        The result as JSON-able data for the envelope's metadata.
        """
        return {
            "result": self.result,
            "identity": self.identity,
            "domain": self.domain,
            "reason": self.reason,
        }


def _oneLine(text: object) -> str:
    line = " ".join(str(text).split())
    return "".join(c for c in line if " " <= c <= "~")[:200]


class SPFChecker:
    """
    Checks SPF in a bounded thread pool.
    """

    def __init__(
        self, dns: ThreadDNS, reactor: Any, threadpool: Any, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """
        @param dns: answers pyspf's lookups.
        @param reactor: for the thread pool's results and the timeout.
        @param threadpool: the pool pyspf runs in (not the resolver's).
        @param timeout: seconds one check may take in all.
        """
        self._dns = dns
        self._reactor = reactor
        self._threadpool = threadpool
        self.timeout = timeout

    def check(self, clientAddress: str, sender: str, helo: str) -> defer.Deferred:
        """
        Check the client against the sender's (or the HELO name's) policy.

        @param clientAddress: the client's IP address.
        @param sender: the MAIL FROM address, C{""} for C{<>}.
        @param helo: the HELO/EHLO name.
        @return: a L{defer.Deferred} firing with an L{SPFResult}; it never
            fails (a problem is a C{temperror} or C{permerror} result).
        """
        identity = "mailfrom" if sender else "helo"
        checked = sender if sender else f"postmaster@{helo}"
        domain = checked.rpartition("@")[2].lower().rstrip(".")
        try:
            ipaddress.ip_address(clientAddress)
        except ValueError:
            return defer.succeed(
                SPFResult("none", identity, domain, checked, "no IP address to check")
            )
        if not domain or "." not in domain.strip("."):
            return defer.succeed(SPFResult("none", identity, domain, checked, "no domain to check"))

        def evaluate() -> tuple[str, str]:
            import spf

            def run() -> tuple[str, str]:
                query = spf.query(
                    i=clientAddress,
                    s=sender,
                    h=helo,
                    timeout=self.timeout,
                    querytime=self.timeout,
                )
                result, _, explanation = query.check()
                return str(result), str(explanation)

            return withSPFLookup(self._dns.spfLookup, run)

        def done(outcome: tuple[str, str]) -> SPFResult:
            result, explanation = outcome
            if result not in SPF_RESULTS:
                # pyspf's harsh modes only; never configured here.
                result = "permerror"
            return SPFResult(result, identity, domain, checked, _oneLine(explanation))

        def failed(failure: Failure) -> SPFResult:
            if failure.check(defer.TimeoutError):
                reason = f"SPF check timed out after {self.timeout:g} s"
            else:
                reason = f"SPF check failed: {_oneLine(failure.value)}"
            return SPFResult("temperror", identity, domain, checked, reason)

        d = deferToThreadPool(self._reactor, self._threadpool, evaluate)
        d.addTimeout(self.timeout + 2.0, self._reactor)
        return d.addCallbacks(done, failed)
