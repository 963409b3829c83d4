# -*- test-case-name: tests.test_checks_service -*-
"""
The MX checks built from the settings: their thread pools, their state
store and their policies, as one service.

L{makeMXChecks} is the wiring's entry point; L{MXChecks.chainPolicies} is
the ordered list to put on every role's inbound chain, after the chain's
own allow-list and relay permission (connect) and recipient and relay
checks (RCPT), before the content filters; see the README's "Running as an
internet MX".
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.python.threadpool import ThreadPool

from gopherpost.checks.abuse import BanList, Greylister, RateLimiter, RateLimits
from gopherpost.checks.chain import ChainPolicy, chainPolicies
from gopherpost.checks.dkimverify import DKIMVerifier
from gopherpost.checks.dmarc import DMARCChecker
from gopherpost.checks.dnsbl import DNSBLChecker
from gopherpost.checks.failover import FailoverStore
from gopherpost.checks.interfaces import IMXPolicy, IViolationSink
from gopherpost.checks.metrics import CheckMetrics
from gopherpost.checks.policies import (
    BanPolicy,
    DNSBLPolicy,
    GreylistPolicy,
    MessageAuthenticationPolicy,
    RateLimitPolicy,
    SPFPolicy,
)
from gopherpost.checks.psl import loadPublicSuffixList
from gopherpost.checks.spf import SPFChecker
from gopherpost.checks.store import (
    BanParameters,
    GreylistParameters,
    IStateStore,
    LocalStore,
    StoreUnavailable,
)
from gopherpost.checks.threaddns import ThreadDNS
from gopherpost.config import ConfigError

__all__ = ["CHECK_THREADS", "MXChecks", "makeMXChecks", "STATE_FILE"]

#: Threads that run pyspf and dkimpy (CPU and waiting for DNS answers).
CHECK_THREADS = 8

#: The local state's file in the spool's state directory.
STATE_FILE = "mxchecks.sqlite3"


class MXChecks(Service):
    """
    The checks of one node.

    @ivar policies: the L{IMXPolicy} objects, in chain order.
    @ivar chainPolicies: the same as policies of the inbound chain
        (L{gopherpost.checks.chain.ChainPolicy}).
    @ivar violations: where the session reports violations (bans), or
        L{None} when bans are off.
    @ivar metrics: the counters (a prometheus_client collector).
    @ivar store: the state store.
    """

    def __init__(
        self,
        policies: list[IMXPolicy],
        violations: IViolationSink | None,
        metrics: CheckMetrics,
        store: IStateStore,
        pool: ThreadPool,
        threadDNS: ThreadDNS | None = None,
    ) -> None:
        self.policies = policies
        self.chainPolicies: list[ChainPolicy] = chainPolicies(policies)
        self.violations = violations
        self.metrics = metrics
        self.store = store
        self._pool = pool
        self._threadDNS = threadDNS

    def startService(self) -> None:
        Service.startService(self)
        self._pool.start()

    def stopService(self) -> defer.Deferred:
        Service.stopService(self)
        if self._threadDNS is not None:
            self._threadDNS.close()
        self._pool.stop()
        return defer.maybeDeferred(self.store.close)


def makeStore(
    settings: Any, stateDirectory: str, reactor: Any, metrics: CheckMetrics | None = None
) -> IStateStore:
    """
    The state store: the node's SQLite file, behind Redis when
    C{SMTP_REDIS_URL} is set.

    @raise ConfigError: when the local file cannot be opened.
    """
    local = LocalStore(os.path.join(stateDirectory, STATE_FILE), reactor)
    try:
        local.open()
    except StoreUnavailable as e:
        raise ConfigError("SMTP_QUEUE_PATH", f"cannot keep the checks' state: {e}") from None
    if not settings.redisURL:
        return local
    from gopherpost.checks.redisstore import RedisStore

    shared = RedisStore(settings.redisURL, reactor, prefix=settings.redisPrefix)
    return FailoverStore(shared, local, reactor, metrics=metrics)


def makeMXChecks(
    settings: Any,
    resolver: Any,
    reactor: Any,
    stateDirectory: str,
    metrics: CheckMetrics | None = None,
) -> MXChecks:
    """
    Build the checks the settings switch on.

    @param settings: a L{gopherpost.config.Settings}.
    @param resolver: the server's L{gopherpost.dns.Resolver}
        (C{SMTP_DNS_SERVERS}); it must run its queries in a pool of its own.
    @param reactor: the reactor (time, threads).
    @param stateDirectory: the spool's state directory.
    @param metrics: the counters (default: new ones).
    @raise ConfigError: for a setting that cannot be used (no Public Suffix
        List, unusable state directory).
    """
    metrics = metrics or CheckMetrics()
    store = makeStore(settings, stateDirectory, reactor, metrics)
    pool = ThreadPool(minthreads=0, maxthreads=CHECK_THREADS, name="gopherpost-checks")
    hostname = settings.hostname
    policies: list[IMXPolicy] = []
    violations = None
    if settings.banThreshold > 0:
        bans = BanPolicy(
            BanList(
                store,
                reactor,
                BanParameters(
                    threshold=settings.banThreshold,
                    window=settings.banWindow,
                    duration=settings.banDuration,
                    maxDuration=settings.banMaxDuration,
                ),
            ),
            metrics,
            hostname,
        )
        policies.append(bans)
        violations = bans
    limits = RateLimits(
        connections=settings.rateConnections,
        messages=settings.rateMessages,
        recipients=settings.rateRecipients,
        userMessages=settings.rateUserMessages,
    )
    if any((limits.connections, limits.messages, limits.recipients, limits.userMessages)):
        policies.append(RateLimitPolicy(RateLimiter(store, reactor, limits), metrics, hostname))
    if settings.dnsblZones:
        policies.append(
            DNSBLPolicy(DNSBLChecker(resolver, settings.dnsblZones), metrics, violations)
        )
    threadDNS = ThreadDNS(resolver, reactor)
    if settings.senderAuth:
        policies.append(
            SPFPolicy(SPFChecker(threadDNS, reactor, pool), metrics, settings.spfReject == "fail")
        )
    if settings.greylist:
        parameters = GreylistParameters(
            delay=settings.greylistDelay, autoWhitelist=settings.greylistAutoWhitelist
        )
        policies.append(GreylistPolicy(Greylister(store, reactor, parameters), metrics))
    if settings.senderAuth:
        try:
            suffixes = loadPublicSuffixList()
        except OSError as e:
            raise ConfigError(
                "SMTP_SENDER_AUTH", f"DMARC needs the Public Suffix List: {e}"
            ) from None
        policies.append(
            MessageAuthenticationPolicy(
                DKIMVerifier(threadDNS, reactor, pool),
                DMARCChecker(resolver, suffixes, settings.arcTrustedSealers),
                metrics,
                hostname,
                settings.dmarcEnforce,
            )
        )
    return MXChecks(policies, violations, metrics, store, pool, threadDNS)
