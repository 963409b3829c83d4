# -*- test-case-name: tests.test_checks_dmarc -*-
"""
DMARC (RFC 7489): the policy of the domain in a message's From header field,
evaluated against the SPF and DKIM results.

The policy record is looked up at C{_dmarc.<from domain>}, else at
C{_dmarc.<organizational domain>} (whose C{sp=} then applies); alignment is
relaxed (same organizational domain, from the Public Suffix List) or strict
(same domain) as the record's C{aspf=} and C{adkim=} say.  C{pct=} samples
as section 6.6.4 says: a message left out of the sample gets the next
milder policy (reject becomes quarantine, quarantine becomes none).  A
valid ARC chain sealed by a trusted forwarder overrides the policy
(section 7.2, "local policy").
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from gopherpost.checks.dkimverify import ARCResult, DKIMResult
from gopherpost.checks.psl import PublicSuffixList
from gopherpost.checks.spf import SPFResult
from gopherpost.dns import DNSError, PermanentDNSError

__all__ = [
    "DMARCChecker",
    "DMARCRecord",
    "DMARCResult",
    "InvalidRecord",
    "fromDomains",
    "parseRecord",
]

_POLICIES = ("none", "quarantine", "reject")
_MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


class InvalidRecord(ValueError):
    """
    A TXT record starting with C{v=DMARC1} that is not a valid DMARC record.
    """


@dataclass(frozen=True)
class DMARCRecord:
    """
    The tags of a DMARC record that decide what a receiver does.
    """

    p: str
    sp: str | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"


def parseRecord(text: str) -> DMARCRecord:
    """
    Parse a DMARC record (RFC 7489, section 6.3).

    Unknown tags are ignored; a record without a valid C{p=} but with
    C{rua=} is read as C{p=none} (section 6.6.3).

    @raise InvalidRecord: when C{v=DMARC1} is not the first tag or a tag
        that matters has a bad value.
    """
    tags: dict[str, str] = {}
    for index, part in enumerate(text.split(";")):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not name and not value:
            continue
        if index == 0 and (name != "v" or value != "DMARC1"):
            raise InvalidRecord("the record does not start with v=DMARC1")
        if not sep:
            raise InvalidRecord(f"{part.strip()!r} is not a tag")
        tags.setdefault(name, value)
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        if "rua" in tags:
            policy = "none"
        else:
            raise InvalidRecord(f"p={tags.get('p', '')!r} is not none, quarantine or reject")
    sp = tags.get("sp")
    if sp is not None:
        sp = sp.lower()
        if sp not in _POLICIES:
            sp = None
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    pct = min(max(pct, 0), 100)
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DMARCRecord(
        p=policy,
        sp=sp,
        pct=pct,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
    )


def fromDomains(fromValues: Sequence[str]) -> list[str]:
    """
    The distinct domains of the addresses in the From header fields, lower
    case, in order.
    """
    domains: list[str] = []
    cleaned = [v.replace("\r", "").replace("\n", "") for v in fromValues]
    for _, address in getaddresses(cleaned):
        if "@" not in address:
            continue
        domain = address.rpartition("@")[2].strip().strip(".").lower()
        if domain and domain not in domains:
            domains.append(domain)
    return domains


@dataclass(frozen=True)
class DMARCResult:
    """
    The DMARC outcome of one message.

    @ivar result: C{pass}, C{fail}, C{none} (no policy, or no From
        domain), C{temperror} or C{permerror} (a broken record).
    @ivar domain: the From domain evaluated (the strictest, when there are
        several).
    @ivar policy: the policy that applies: C{none}, C{quarantine},
        C{reject} (after C{sp=}), or C{""} without a record.
    @ivar disposition: what the policy asks for this message after C{pct=}
        sampling and any trusted-ARC override: C{none}, C{quarantine},
        C{reject}, or C{tempfail} (a temporary error where a failing
        message would be rejected).
    @ivar spfAligned: whether SPF passed for an aligned domain.
    @ivar dkimAligned: whether a DKIM signature of an aligned domain passed.
    @ivar override: why the policy was not applied (C{"sampled_out"},
        C{"trusted_forwarder"}), or C{""}.
    @ivar reason: one line.
    """

    result: str
    domain: str = ""
    policy: str = ""
    disposition: str = "none"
    spfAligned: bool = False
    dkimAligned: bool = False
    override: str = ""
    reason: str = ""
    recordDomain: str = ""

    def asMetadata(self) -> dict[str, object]:
        """
        The result as JSON-able data for the envelope's metadata.
        """
        return {
            "result": self.result,
            "domain": self.domain,
            "policy": self.policy,
            "disposition": self.disposition,
            "spfAligned": self.spfAligned,
            "dkimAligned": self.dkimAligned,
            "override": self.override,
            "reason": self.reason,
        }


_SEVERITY = {"reject": 3, "tempfail": 2, "quarantine": 1, "none": 0}


class DMARCChecker:
    """
    Looks DMARC policies up and evaluates them.
    """

    def __init__(
        self,
        resolver: Any,
        suffixes: PublicSuffixList,
        trustedSealers: Sequence[str] = (),
        random: Callable[[], float] = random.random,
    ) -> None:
        """
        @param resolver: an L{gopherpost.dns.IDNSResolver} (C{lookupTXT}).
        @param suffixes: the Public Suffix List.
        @param trustedSealers: domains whose valid ARC seal overrides a
            failing DMARC policy (C{SMTP_ARC_TRUSTED_SEALERS}).
        @param random: returns a float in [0, 1), for C{pct=} sampling.
        """
        self._resolver = resolver
        self._suffixes = suffixes
        self.trustedSealers = frozenset(d.lower().rstrip(".") for d in trustedSealers)
        self._random = random

    def organizationalDomain(self, domain: str) -> str:
        """
        See L{PublicSuffixList.organizationalDomain}.
        """
        return self._suffixes.organizationalDomain(domain)

    def _aligned(self, mode: str, domain: str, other: str) -> bool:
        domain, other = domain.lower().rstrip("."), other.lower().rstrip(".")
        if not other:
            return False
        if mode == "s":
            return domain == other
        return self.organizationalDomain(domain) == self.organizationalDomain(other)

    def lookupPolicy(self, domain: str) -> defer.Deferred:
        """
        Find the DMARC record for a From domain (RFC 7489, 6.6.3).

        @return: a L{defer.Deferred} firing with C{(record, recordDomain)},
            or L{None} when there is no record; failing with
            L{InvalidRecord} for a broken record and with
            L{gopherpost.dns.TemporaryDNSError} when DNS gave no answer.
        """
        organizational = self.organizationalDomain(domain)

        def records(name: str) -> defer.Deferred:
            def found(values: list[bytes]) -> list[str]:
                texts = [v.decode("utf-8", "replace") for v in values]
                return [t for t in texts if t[:8].lower().replace(" ", "") == "v=dmarc1"]

            def missing(failure: Failure) -> list[str]:
                failure.trap(PermanentDNSError)
                return []

            return self._resolver.lookupTXT(f"_dmarc.{name}").addCallbacks(found, missing)

        def choose(texts: list[str], name: str) -> defer.Deferred | tuple | None:
            if len(texts) == 1:
                return (parseRecord(texts[0]), name)
            if len(texts) > 1:
                # Several records: none applies (6.6.3, step 2).
                return None
            if name != organizational:
                return records(organizational).addCallback(choose, organizational)
            return None

        return records(domain).addCallback(choose, domain)

    def check(
        self,
        fromValues: Sequence[str],
        spf: SPFResult | None,
        dkim: Sequence[DKIMResult],
        arc: ARCResult | None = None,
    ) -> defer.Deferred:
        """
        Evaluate DMARC for a message.

        @param fromValues: the values of its From header fields.
        @param spf: the SPF result (of MAIL FROM, or of HELO for C{<>}).
        @param dkim: the result of each DKIM signature.
        @param arc: the ARC chain's result, for the trusted-sealer override.
        @return: a L{defer.Deferred} firing with a L{DMARCResult}; it never
            fails.
        """
        domains = fromDomains(fromValues)
        if not domains:
            return defer.succeed(DMARCResult("none", reason="no From address"))
        checks = [self._checkDomain(d, spf, dkim, arc) for d in domains]

        def strictest(results: list[DMARCResult]) -> DMARCResult:
            return max(results, key=lambda r: (_SEVERITY.get(r.disposition, 0), r.result == "fail"))

        return defer.gatherResults(checks).addCallback(strictest)

    def _checkDomain(
        self,
        domain: str,
        spf: SPFResult | None,
        dkim: Sequence[DKIMResult],
        arc: ARCResult | None,
    ) -> defer.Deferred:
        def evaluate(found: tuple[DMARCRecord, str] | None) -> DMARCResult:
            if found is None:
                return DMARCResult("none", domain, reason="no DMARC record")
            record, recordDomain = found
            return self.evaluate(domain, record, recordDomain, spf, dkim, arc)

        def failed(failure: Failure) -> DMARCResult:
            if failure.check(InvalidRecord):
                return DMARCResult("permerror", domain, reason=f"bad DMARC record: {failure.value}")
            failure.trap(DNSError)
            # Without the policy a failing message cannot be judged; an
            # aligned pass needs no policy.
            aligned = self._alignedResults(domain, DMARCRecord(p="none"), spf, dkim)
            if any(aligned):
                return DMARCResult(
                    "temperror",
                    domain,
                    spfAligned=aligned[0],
                    dkimAligned=aligned[1],
                    reason=f"policy lookup failed, aligned pass: {failure.value}",
                )
            return DMARCResult(
                "temperror",
                domain,
                disposition="tempfail",
                reason=f"policy lookup failed: {failure.value}",
            )

        return self.lookupPolicy(domain).addCallbacks(evaluate, failed)

    def _alignedResults(
        self,
        domain: str,
        record: DMARCRecord,
        spf: SPFResult | None,
        dkim: Sequence[DKIMResult],
    ) -> tuple[bool, bool]:
        spfAligned = (
            spf is not None
            and spf.result == "pass"
            and self._aligned(record.aspf, domain, spf.domain)
        )
        dkimAligned = any(
            r.result == "pass" and self._aligned(record.adkim, domain, r.domain) for r in dkim
        )
        return spfAligned, dkimAligned

    def evaluate(
        self,
        domain: str,
        record: DMARCRecord,
        recordDomain: str,
        spf: SPFResult | None,
        dkim: Sequence[DKIMResult],
        arc: ARCResult | None = None,
    ) -> DMARCResult:
        """
        Apply a DMARC record to the authentication results (no I/O).
        """
        spfAligned, dkimAligned = self._alignedResults(domain, record, spf, dkim)
        policy = record.p
        if recordDomain != domain and record.sp is not None:
            policy = record.sp
        common = {
            "domain": domain,
            "policy": policy,
            "spfAligned": spfAligned,
            "dkimAligned": dkimAligned,
            "recordDomain": recordDomain,
        }
        if spfAligned or dkimAligned:
            return DMARCResult("pass", disposition="none", **common)  # type: ignore[arg-type]
        temporary = (spf is not None and spf.result == "temperror") or any(
            r.result == "temperror" for r in dkim
        )
        result = "temperror" if temporary else "fail"
        disposition, override = policy, ""
        if disposition != "none" and record.pct < 100 and self._random() * 100 >= record.pct:
            disposition, override = _MILDER[disposition], "sampled_out"
        if (
            disposition != "none"
            and arc is not None
            and arc.result == "pass"
            and arc.sealer in self.trustedSealers
        ):
            disposition, override = "none", "trusted_forwarder"
        if temporary and disposition == "reject":
            disposition = "tempfail"
        reason = "no aligned SPF or DKIM pass"
        if temporary:
            reason += " (a check had a temporary error)"
        return DMARCResult(
            result,
            disposition=disposition,
            override=override,
            reason=reason,
            **common,  # type: ignore[arg-type]
        )
