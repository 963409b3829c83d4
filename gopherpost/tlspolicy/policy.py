# -*- test-case-name: tests.test_tlspolicy_policy -*-
"""
The outbound transport security decision, per destination and per
connection (see L{gopherpost.tlspolicy.interfaces} for how the courier
asks).

For each MX host, in order of precedence (RFC 8461 2: DANE first):

  1. DANE (RFC 7672), with C{SMTP_DANE=true}, when the destination's MX
     records validated (DNSSEC) and the host's TLSA records did too:
       - a usable record: TLS is required and the certificate must match
         one (L{DANECheck}); label C{dane};
       - records, none usable: the rules below, with TLS required
         (RFC 7672 2.2: TLS, authenticated or not);
       - the TLSA lookup failed: the host is not used now (deferred);
       - a host not named by the validated MX records is not used.
  2. MTA-STS (RFC 8461), with C{SMTP_MTA_STS=true} and no smarthost:
       - C{enforce}: only hosts matching the policy's C{mx} patterns, TLS
         required, the certificate verified for the host name (WebPKI);
         label C{mta-sts};
       - C{testing}: as the configured policy (3.), but the MTA-STS checks
         are made and their failures recorded for TLS reports.
  3. C{SMTP_OUTBOUND_TLS}: C{verify} (STARTTLS when offered, certificate
     verified), C{require} (the same, and STARTTLS required), C{may}
     (STARTTLS when offered, unverified), C{none}.

Each connection's outcome is recorded (L{HostTLSPolicy.connectionEnded}):
for TLS reports per policy domain and day (L{TLSReportStore}), and in the
metrics.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from zope.interface import implementer

from gopherpost.tlspolicy.connection import (
    CertificateCheck,
    ClientTLSContexts,
    DANECheck,
    TLSObservation,
    WebPKICheck,
)
from gopherpost.tlspolicy.dane import FAILED, DANEResolver, MXSecurity, TLSALookup, tlsaName
from gopherpost.tlspolicy.interfaces import IDestinationTLS, IHostTLSPolicy, ITransportSecurity
from gopherpost.tlspolicy.metrics import TLSPolicyMetrics
from gopherpost.tlspolicy.mtasts import STSLookup, STSResolver
from gopherpost.tlspolicy.reportstore import FailureDetail, PolicyKey, TLSReportStore
from gopherpost.tlspolicy.results import (
    DANE,
    DNSSEC_INVALID,
    MAY,
    MTA_STS,
    NONE,
    POLICY_TYPE_NONE,
    POLICY_TYPE_STS,
    POLICY_TYPE_TLSA,
    STARTTLS_NOT_SUPPORTED,
    VALIDATION_FAILURE,
    VERIFY,
)
from gopherpost.tlspolicy.sts import ENFORCE, TESTING, STSPolicy

__all__ = ["TLSFacts", "Recorder", "HostTLSPolicy", "DestinationTLS", "TransportSecurity"]

_log = Logger()

#: Failure stages of a connection that never reached the TLS negotiation.
_BEFORE_TLS = frozenset({"connect", "greeting", "EHLO", "HELO"})


class TLSFacts(NamedTuple):
    """
    What the delivery log and the metrics say of one connection.

    @ivar label: the policy: C{dane}, C{mta-sts}, C{verify}, C{may}, C{none}.
    @ivar tls: whether the session was encrypted.
    @ivar verified: whether the certificate passed the policy's check.
    @ivar failureType: the RFC 8460 failure type, if the session failed the
        policy (also in MTA-STS testing mode, where the message still went).
    """

    label: str
    tls: bool
    verified: bool
    failureType: str | None = None

    def __str__(self) -> str:
        if not self.tls:
            return self.label
        return f"{self.label} {'verified' if self.verified else 'unverified'}"


class Recorder:
    """
    Where sessions are recorded: the TLS report store and the metrics.
    """

    def __init__(self, reports: TLSReportStore | None, metrics: TLSPolicyMetrics) -> None:
        self.reports = reports
        self.metrics = metrics

    def session(
        self, label: str, domain: str, policy: PolicyKey, failure: FailureDetail | None
    ) -> None:
        """
        One connection (or refused host) under C{policy}.
        """
        self.metrics.session(label, None if failure is None else failure.resultType)
        if self.reports is None:
            return
        if failure is None:
            self.reports.recordSuccess(domain, policy)
        else:
            self.reports.recordFailure(domain, policy, failure)

    def problem(self, domain: str, policy: PolicyKey, failure: FailureDetail) -> None:
        """
        A policy could not be discovered (not a session).
        """
        if self.reports is not None:
            self.reports.recordFailure(domain, policy, failure)


@implementer(IHostTLSPolicy)
class HostTLSPolicy:
    """
    The decision for one connection; see L{IHostTLSPolicy}.

    @ivar domain: the destination (policy) domain.
    @ivar policy: the TLS report's policy (L{PolicyKey}).
    @ivar requirement: what requires TLS, for messages ("DANE", ...).
    @ivar observation: what the connection's TLS did.
    """

    def __init__(
        self,
        hostname: str,
        domain: str,
        label: str,
        clientPolicy: str,
        check: CertificateCheck | None,
        enforce: bool,
        policy: PolicyKey,
        recorder: Recorder | None,
        contexts: ClientTLSContexts,
        requirement: str = "",
        verifiedForRequireTLS: bool = False,
        strict: bool = True,
        refusal: str = "",
        extraFailure: FailureDetail | None = None,
    ) -> None:
        self.hostname = hostname
        self.domain = domain
        self.label = label
        self.clientPolicy = clientPolicy
        self.allowed = not refusal
        self.refusal = refusal
        self.policy = policy
        self.requirement = requirement
        self.verifiedForRequireTLS = verifiedForRequireTLS
        self.observation = TLSObservation()
        self._check = check
        self._enforce = enforce
        self._strict = strict
        self._recorder = recorder
        self._contexts = contexts
        self._extraFailure = extraFailure
        self._creatorMade = False
        self._ended: TLSFacts | None = None
        self._endedOnce = False

    @property
    def tlsRequired(self) -> bool:
        """
        Whether the connection must use TLS.
        """
        return self.clientPolicy == "require"

    def __repr__(self) -> str:
        state = "allowed" if self.allowed else f"refused ({self.refusal})"
        return f"<HostTLSPolicy {self.hostname} {self.label} client={self.clientPolicy} {state}>"

    def contextFactoryFor(self, policy: str, hostname: str) -> Any:
        """
        See L{IHostTLSPolicy.contextFactoryFor}.
        """
        self._creatorMade = True
        return self._contexts.creator(
            self.hostname,
            self._check,
            self._enforce,
            self.requirement or self.label,
            self.observation,
            strict=self._strict,
        )

    def _judge(self, result: Any) -> tuple[TLSFacts, FailureDetail | None] | None:
        observation = self.observation
        stage = getattr(result, "failureStage", None)
        address = getattr(result, "address", "")
        if not observation.attempted:
            if self.clientPolicy == "none" or stage in _BEFORE_TLS:
                return None
            # Past EHLO without TLS: STARTTLS not offered, or refused.
            detail = FailureDetail(
                STARTTLS_NOT_SUPPORTED,
                self.hostname,
                address,
                "STARTTLS refused" if self._creatorMade else "STARTTLS not offered",
            )
            return TLSFacts(self.label, False, False, STARTTLS_NOT_SUPPORTED), detail
        if not observation.completed:
            detail = FailureDetail(
                VALIDATION_FAILURE, self.hostname, address, "the TLS handshake failed"
            )
            return TLSFacts(self.label, False, False, VALIDATION_FAILURE), detail
        verdict = observation.verdict
        if verdict is not None and not verdict.ok:
            failureType = verdict.failureType or VALIDATION_FAILURE
            detail = FailureDetail(failureType, self.hostname, address, verdict.reason)
            return TLSFacts(self.label, True, False, failureType), detail
        return TLSFacts(self.label, True, verdict is not None), None

    def connectionEnded(self, result: Any) -> TLSFacts | None:
        """
        See L{IHostTLSPolicy.connectionEnded}.
        """
        if self._endedOnce:
            return self._ended
        self._endedOnce = True
        judged = self._judge(result)
        if judged is None:
            return None
        facts, detail = judged
        if detail is None and self._extraFailure is not None:
            # MTA-STS testing: the host is not one the policy names.
            detail = self._extraFailure._replace(receivingIP=getattr(result, "address", ""))
            facts = facts._replace(failureType=detail.resultType)
        self._ended = facts
        if self._recorder is not None:
            self._recorder.session(self.label, self.domain, self.policy, detail)
        return facts

    def explain(self, result: Any) -> str | None:
        """
        See L{IHostTLSPolicy.explain}.
        """
        if not self.tlsRequired or self.observation.attempted:
            return None
        stage = getattr(result, "failureStage", None)
        if stage == "TLS" and not self._creatorMade:
            return f"{self.hostname} does not offer STARTTLS, which {self.requirement} requires"
        return None


def _refused(
    hostname: str, domain: str, label: str, reason: str, policy: PolicyKey, contexts: Any
) -> HostTLSPolicy:
    return HostTLSPolicy(
        hostname,
        domain,
        label,
        "require",
        None,
        True,
        policy,
        None,
        contexts,
        refusal=reason,
    )


@implementer(IDestinationTLS)
class DestinationTLS:
    """
    One destination's policy during one attempt; see L{IDestinationTLS}.

    @ivar mx: the DNSSEC verdict on the MX records (L{None}: DANE is off).
    @ivar sts: the MTA-STS policy that applies, or L{None}.
    """

    def __init__(
        self,
        domain: str,
        port: int,
        configured: str,
        contexts: ClientTLSContexts,
        recorder: Recorder | None,
        mx: MXSecurity | None = None,
        sts: STSPolicy | None = None,
        dane: DANEResolver | None = None,
    ) -> None:
        self.domain = domain
        self.port = port
        self.mx = mx
        self.sts = sts
        self._configured = configured
        self._contexts = contexts
        self._recorder = recorder
        self._dane = dane

    @property
    def stsMode(self) -> str | None:
        return None if self.sts is None else self.sts.mode

    @property
    def mxSecure(self) -> bool:
        return self.mx is not None and self.mx.secure

    def forHost(
        self, hostname: str, requireTLS: bool = False, relaxed: bool = False
    ) -> Deferred[HostTLSPolicy]:
        """
        See L{IDestinationTLS.forHost}.
        """
        host = hostname.rstrip(".").lower()
        if relaxed:
            return succeed(self._fromSetting(host, "may", False, None, requireTLS, report=False))
        if self._dane is None or self.mx is None or not self.mx.secure:
            return succeed(self._afterDANE(host, False, requireTLS))
        if host not in self.mx.hosts:
            reason = (
                f"4.7.5 {host} is not a host of the DNSSEC-validated MX records of {self.domain}"
            )
            return succeed(
                _refused(host, self.domain, DANE, reason, self._tlsaKey(host, ()), self._contexts)
            )

        def decide(lookup: TLSALookup) -> HostTLSPolicy:
            return self._afterTLSA(host, lookup, requireTLS)

        return self._dane.tlsa(host, self.port).addCallback(decide)

    def _tlsaKey(self, host: str, records: tuple[Any, ...]) -> PolicyKey:
        return PolicyKey(POLICY_TYPE_TLSA, tuple(r.presentation() for r in records), (host,))

    def _afterTLSA(self, host: str, lookup: TLSALookup, requireTLS: bool) -> HostTLSPolicy:
        if lookup.state == FAILED:
            key = self._tlsaKey(host, ())
            reason = (
                f"4.7.5 {lookup.reason}: {host} is not used while its TLSA records cannot be "
                "looked up (DANE)"
            )
            if self._recorder is not None:
                self._recorder.session(
                    DANE, self.domain, key, FailureDetail(DNSSEC_INVALID, host, "", lookup.reason)
                )
            return _refused(host, self.domain, DANE, reason, key, self._contexts)
        usable = lookup.usable
        if usable:
            name = tlsaName(host, self.port)
            return HostTLSPolicy(
                host,
                self.domain,
                DANE,
                "require",
                DANECheck(usable, [host, self.domain]),
                True,
                self._tlsaKey(host, lookup.records),
                self._recorder,
                self._contexts,
                requirement=f"DANE ({name} TLSA)",
                verifiedForRequireTLS=True,
            )
        # Records, but none usable: TLS still required (RFC 7672 2.2).
        return self._afterDANE(host, bool(lookup.records), requireTLS)

    def _afterDANE(self, host: str, tlsRequired: bool, requireTLS: bool) -> HostTLSPolicy:
        sts = self.sts
        if sts is None:
            return self._fromSetting(host, self._configured, tlsRequired, None, requireTLS)
        key = PolicyKey(POLICY_TYPE_STS, tuple(sts.lines), sts.mx)
        if sts.mode == ENFORCE or (sts.mode == TESTING and requireTLS):
            if not sts.matches(host):
                reason = (
                    f"4.7.5 {host} is not an MX host the MTA-STS policy of {self.domain} allows"
                )
                if self._recorder is not None:
                    self._recorder.session(
                        MTA_STS,
                        self.domain,
                        key,
                        FailureDetail(VALIDATION_FAILURE, host, "", "MX host not in the policy"),
                    )
                return _refused(host, self.domain, MTA_STS, reason, key, self._contexts)
            return HostTLSPolicy(
                host,
                self.domain,
                MTA_STS,
                "require",
                WebPKICheck([host]),
                True,
                key,
                self._recorder,
                self._contexts,
                requirement=f"the MTA-STS policy of {self.domain}",
                verifiedForRequireTLS=True,
            )
        # Testing: the configured policy, the MTA-STS checks recorded.
        extra = None
        if not sts.matches(host):
            extra = FailureDetail(VALIDATION_FAILURE, host, "", "MX host not in the policy")
        return self._fromSetting(
            host, self._configured, tlsRequired, key, requireTLS, stsTesting=True, extra=extra
        )

    def _fromSetting(
        self,
        host: str,
        configured: str,
        tlsRequired: bool,
        key: PolicyKey | None,
        requireTLS: bool,
        report: bool = True,
        stsTesting: bool = False,
        extra: FailureDetail | None = None,
    ) -> HostTLSPolicy:
        """
        C{SMTP_OUTBOUND_TLS} for one host (made stricter by C{tlsRequired}).
        """
        key = key or PolicyKey(POLICY_TYPE_NONE)
        recorder = self._recorder if report else None
        check: CertificateCheck | None
        if configured == "none":
            label, clientPolicy, check, enforce, strict = NONE, "none", None, False, False
        elif configured == "may":
            label, clientPolicy, enforce, strict = MAY, "may", False, False
            check = WebPKICheck([host]) if stsTesting else None
        else:
            label, clientPolicy, check, enforce, strict = (
                VERIFY,
                configured,
                WebPKICheck([host]),
                True,
                True,
            )
        if tlsRequired and clientPolicy != "none":
            clientPolicy = "require"
        requirement = (
            f"the TLSA records of {host} (DANE)"
            if tlsRequired
            else f"SMTP_OUTBOUND_TLS={configured}"
        )
        return HostTLSPolicy(
            host,
            self.domain,
            label,
            clientPolicy,
            check,
            enforce,
            key,
            recorder,
            self._contexts,
            requirement=requirement,
            strict=strict,
            extraFailure=extra,
        )


@implementer(ITransportSecurity)
class TransportSecurity:
    """
    See L{ITransportSecurity} and the module docstring.
    """

    def __init__(
        self,
        configured: str,
        contexts: ClientTLSContexts,
        dane: DANEResolver | None = None,
        sts: STSResolver | None = None,
        reports: TLSReportStore | None = None,
        metrics: TLSPolicyMetrics | None = None,
        smarthost: bool = False,
    ) -> None:
        """
        @param configured: C{SMTP_OUTBOUND_TLS}.
        @param contexts: the shared OpenSSL contexts.
        @param dane: DANE's lookups (L{None}: C{SMTP_DANE=false}).
        @param sts: MTA-STS discovery (L{None}: C{SMTP_MTA_STS=false}).
        @param reports: where sessions are counted for TLS reports.
        @param metrics: the counters.
        @param smarthost: C{SMTP_RELAY_HOST} is set: neither DANE nor
            MTA-STS applies (the smarthost is not the recipient domain's MX).
        """
        self.configured = configured
        self.contexts = contexts
        self.metrics = metrics or TLSPolicyMetrics()
        self.recorder = Recorder(reports, self.metrics)
        self._smarthost = smarthost
        self._dane = None if smarthost else dane
        self._sts = None if smarthost else sts

    def useSTS(self, sts: STSResolver) -> None:
        """
        Apply MTA-STS policies found by C{sts} (unless a smarthost is used).
        """
        if not self._smarthost:
            self._sts = sts

    def forDestination(self, domain: str, port: int) -> Deferred[DestinationTLS]:
        """
        See L{ITransportSecurity.forDestination}.
        """
        name = domain.rstrip(".").lower()
        literal = name.startswith("[")
        dane = None if literal else self._dane
        sts = None if literal else self._sts
        mx: Deferred[Any] = dane.mxSecurity(name) if dane is not None else succeed(None)
        policy: Deferred[Any] = sts.policyFor(name) if sts is not None else succeed(STSLookup(None))

        def build(results: list[Any]) -> DestinationTLS:
            mxSecurity, lookup = results
            return DestinationTLS(
                name,
                port,
                self.configured,
                self.contexts,
                self.recorder,
                mx=mxSecurity,
                sts=lookup.policy,
                dane=dane,
            )

        return gatherResults([mx, policy]).addCallback(build)

    def stsFetched(self, domain: str) -> None:
        """
        An L{STSResolver}'s C{onFetched}: a policy was fetched.
        """
        self.metrics.fetch("ok")

    def stsProblem(self, domain: str, resultType: str, reason: str) -> None:
        """
        An L{STSResolver}'s C{onProblem}: a policy fetch failed.
        """
        self.metrics.fetch(resultType)
        self.recorder.problem(
            domain, PolicyKey(POLICY_TYPE_STS), FailureDetail(resultType, "", "", reason)
        )
