# -*- test-case-name: tests.test_tlspolicy_mtasts -*-
"""
Which MTA-STS policy applies to a destination domain now (RFC 8461 section
5): the C{_mta-sts.<domain>} TXT record through GopherPost's DNS, the policy
from C{https://mta-sts.<domain>/.well-known/mta-sts.txt} (L{HTTPSClient}:
verified, no redirects, at most 64 KiB, a short time-out; status 200 and
C{text/plain} only), parsed strictly (L{gopherpost.tlspolicy.sts}), and the
durable cache (L{STSPolicyCache}).

  - A cached policy that has not expired applies as long as the TXT record
    keeps its C{id}; it is fetched again when the C{id} changes or when it
    is within a day (or half its C{max_age}) of expiring.
  - When fetching fails, or the TXT record is gone or broken, a cached
    policy that has not expired keeps applying; without one, the domain has
    no policy (and the failure is reported for TLS reporting).  A domain
    whose fetch failed is not fetched again for L{FETCH_BACKOFF} seconds.
  - A policy of mode C{none} is cached like the others: the domain has no
    policy until the C{id} changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.dns import DNSError, IDNSResolver, PermanentDNSError
from gopherpost.tlspolicy.https import HTTPSClient, HTTPSError
from gopherpost.tlspolicy.results import (
    STS_POLICY_FETCH_ERROR,
    STS_POLICY_INVALID,
    STS_WEBPKI_INVALID,
)
from gopherpost.tlspolicy.sts import NONE, STSError, STSPolicy, STSRecord, parsePolicy, selectRecord
from gopherpost.tlspolicy.stscache import CachedPolicy, STSPolicyCache

__all__ = [
    "POLICY_LIMIT",
    "FETCH_BACKOFF",
    "REFRESH_MARGIN",
    "STSLookup",
    "STSResolver",
    "policyURL",
]

_log = Logger()

#: Bytes of a policy file read at most (RFC 8461 3.3).
POLICY_LIMIT = 65536
#: Seconds before a domain whose policy fetch failed is fetched again.
FETCH_BACKOFF = 300.0
#: A cached policy this close to expiring (or half its max_age) is fetched
#: again.
REFRESH_MARGIN = 86400.0

#: C{(domain, resultType, reason)}: told once per failed fetch, for TLS
#: reports.
ProblemListener = Callable[[str, str, str], None]


class STSLookup(NamedTuple):
    """
    The MTA-STS verdict for one domain.

    @ivar policy: the policy that applies (mode C{enforce} or C{testing}),
        or L{None}.
    @ivar cached: whether it came from the cache without a fetch now.
    """

    policy: STSPolicy | None
    cached: bool = False


def policyURL(domain: str, port: int = 443) -> str:
    """
    Where a domain's policy is served (RFC 8461 3.3).
    """
    netloc = f"mta-sts.{domain}" if port == 443 else f"mta-sts.{domain}:{port}"
    return f"https://{netloc}/.well-known/mta-sts.txt"


class _FetchProblem(Exception):
    def __init__(self, resultType: str, reason: str) -> None:
        super().__init__(reason)
        self.resultType = resultType
        self.reason = reason


class STSResolver:
    """
    Finds the MTA-STS policy of destination domains; see the module
    docstring.
    """

    def __init__(
        self,
        resolver: IDNSResolver,
        client: HTTPSClient,
        cache: STSPolicyCache,
        clock: IReactorTime,
        port: int = 443,
        onProblem: ProblemListener | None = None,
        onFetched: Callable[[str], None] | None = None,
    ) -> None:
        """
        @param resolver: for the TXT records (C{SMTP_DNS_SERVERS}).
        @param client: fetches the policies.
        @param cache: the durable cache, loaded.
        @param clock: the time policies are fetched and expire by.
        @param port: the HTTPS port (C{SMTP_MTA_STS_PORT}; 443 but in tests).
        @param onProblem: told of each failed fetch.
        @param onFetched: told of each policy fetched (its domain).
        """
        self._resolver = resolver
        self._client = client
        self._cache = cache
        self._clock = clock
        self._port = port
        self._onProblem = onProblem
        self._onFetched = onFetched
        self._fetching: dict[str, list[Deferred[CachedPolicy]]] = {}
        self._failedAt: dict[str, float] = {}

    def policyFor(self, domain: str) -> Deferred[STSLookup]:
        """
        The policy that applies to mail for C{domain} now.

        @param domain: the destination domain, lower case, A-labels.
        @return: a L{Deferred} that always fires with an L{STSLookup}.
        """
        name = domain.rstrip(".").lower()
        d = self._resolver.lookupTXT(f"_mta-sts.{name}")
        d.addCallbacks(self._gotRecords, self._noRecords, callbackArgs=(name,), errbackArgs=(name,))
        d.addErrback(self._bug, name)
        return d

    # -- the steps ------------------------------------------------------------

    def _valid(self, domain: str) -> CachedPolicy | None:
        cached = self._cache.get(domain)
        if cached is None:
            return None
        if cached.expires <= self._clock.seconds():
            self._cache.remove(domain)
            return None
        return cached

    def _applying(self, cached: CachedPolicy | None, fromCache: bool) -> STSLookup:
        if cached is None or cached.policy.mode == NONE:
            return STSLookup(None, fromCache)
        return STSLookup(cached.policy, fromCache)

    def _noRecords(self, failure: Failure, domain: str) -> STSLookup:
        """
        No TXT record, or it could not be looked up: a valid cached policy
        still applies (RFC 8461 5.1).
        """
        failure.trap(DNSError)
        if not failure.check(PermanentDNSError):
            _log.debug(
                "MTA-STS TXT lookup for {domain} failed: {error}",
                domain=domain,
                error=failure.getErrorMessage(),
            )
        return self._applying(self._valid(domain), True)

    def _gotRecords(self, texts: list[bytes], domain: str) -> STSLookup | Deferred[STSLookup]:
        try:
            record = selectRecord(texts)
        except STSError as e:
            cached = self._valid(domain)
            if cached is None:
                self._problem(domain, STS_POLICY_INVALID, f"the _mta-sts TXT record: {e.reason}")
            return self._applying(cached, True)
        cached = self._valid(domain)
        if record is None:
            return self._applying(cached, True)
        if cached is not None and cached.id == record.id and not self._stale(cached):
            return self._applying(cached, True)
        failedAt = self._failedAt.get(domain)
        if failedAt is not None and self._clock.seconds() - failedAt < FETCH_BACKOFF:
            return self._applying(cached, True)
        return self._refresh(domain, record, cached)

    def _stale(self, cached: CachedPolicy) -> bool:
        margin = min(REFRESH_MARGIN, cached.policy.maxAge / 2)
        return cached.expires - self._clock.seconds() < margin

    def _refresh(
        self, domain: str, record: STSRecord, cached: CachedPolicy | None
    ) -> Deferred[STSLookup]:
        def fetched(fresh: CachedPolicy) -> STSLookup:
            return self._applying(fresh, False)

        def failed(failure: Failure) -> STSLookup:
            failure.trap(_FetchProblem)
            return self._applying(cached, True)

        return self._fetchOnce(domain, record).addCallbacks(fetched, failed)

    def _fetchOnce(self, domain: str, record: STSRecord) -> Deferred[CachedPolicy]:
        """
        Fetch the policy, sharing a fetch already in flight for C{domain}.
        """
        waiter: Deferred[CachedPolicy] = Deferred()
        if domain in self._fetching:
            self._fetching[domain].append(waiter)
            return waiter
        self._fetching[domain] = [waiter]

        def done(result: CachedPolicy | Failure) -> None:
            for d in self._fetching.pop(domain, []):
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(result)

        self._fetch(domain, record).addBoth(done)
        return waiter

    def _fetch(self, domain: str, record: STSRecord) -> Deferred[CachedPolicy]:
        url = policyURL(domain, self._port)
        started = self._clock.seconds()

        def received(response: Any) -> CachedPolicy:
            if response.status != 200:
                raise _FetchProblem(
                    STS_POLICY_FETCH_ERROR, f"{url} answered HTTP {response.status}, not 200"
                )
            if response.contentType != "text/plain":
                raise _FetchProblem(
                    STS_POLICY_INVALID,
                    f"{url} is {response.contentType or 'without a type'}, not text/plain",
                )
            try:
                policy = parsePolicy(response.body)
            except STSError as e:
                raise _FetchProblem(STS_POLICY_INVALID, f"{url}: {e.reason}") from None
            return CachedPolicy(domain, record.id, policy, started)

        def requestFailed(failure: Failure) -> None:
            failure.trap(HTTPSError)
            error = failure.value
            assert isinstance(error, HTTPSError)
            kind = STS_WEBPKI_INVALID if error.certificate else STS_POLICY_FETCH_ERROR
            raise _FetchProblem(kind, f"{url}: {error.reason}")

        def stored(fresh: CachedPolicy) -> CachedPolicy:
            self._failedAt.pop(domain, None)
            self._cache.put(fresh)
            if self._onFetched is not None:
                self._onFetched(domain)
            _log.info(
                "MTA-STS policy of {domain}: mode {mode}, max_age {maxAge}, id {id}",
                domain=domain,
                mode=fresh.policy.mode,
                maxAge=fresh.policy.maxAge,
                id=fresh.id,
            )
            return fresh

        def problem(failure: Failure) -> Failure:
            failure.trap(_FetchProblem)
            error = failure.value
            assert isinstance(error, _FetchProblem)
            self._failedAt[domain] = self._clock.seconds()
            self._problem(domain, error.resultType, error.reason)
            return failure

        d: Deferred[Any] = self._client.get(url, POLICY_LIMIT)
        d.addCallbacks(received, requestFailed)
        d.addCallbacks(stored, problem)
        return d

    def _problem(self, domain: str, resultType: str, reason: str) -> None:
        cached = self._cache.get(domain)
        _log.warn(
            "MTA-STS policy of {domain} not fetched ({resultType}): {reason}{cached}",
            domain=domain,
            resultType=resultType,
            reason=reason,
            cached="; the cached policy still applies" if cached is not None else "",
        )
        if self._onProblem is not None:
            try:
                self._onProblem(domain, resultType, reason)
            except Exception:
                _log.failure("Could not record an MTA-STS problem of {domain}", domain=domain)

    def _bug(self, failure: Failure, domain: str) -> STSLookup:
        _log.failure("MTA-STS lookup of {domain} failed", failure, domain=domain)
        return self._applying(self._valid(domain), True)
