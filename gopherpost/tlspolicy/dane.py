# -*- test-case-name: tests.test_tlspolicy_dane -*-
"""
DANE's DNS side (RFC 7672 section 2): whether a destination's MX records
are DNSSEC-validated, and the TLSA records of each MX host, read through
L{gopherpost.dns.Resolver.lookupAuthenticated} with the AD bit of the
trusted resolver (C{SMTP_DNS_SERVERS}).

The TLSA records of a host apply only when the MX records that named it
were validated too (an insecure MX RRset could name any host).  For each
host the TLSA lookup (C{_<port>._tcp.<host>}) ends in one of:
  - L{SECURE}: validated records; DANE applies if one is usable;
  - L{INSECURE}: records or a denial that did not validate: no DANE;
  - L{ABSENT}: a validated denial (no records): no DANE;
  - L{FAILED}: the lookup failed (SERVFAIL, which a validating resolver
    also answers for bogus data; a time-out): the host must not be used
    for now (RFC 7672 2.1.1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from gopherpost.dns import DNSError
from gopherpost.tlspolicy.certificates import TLSARecord

__all__ = [
    "SECURE",
    "INSECURE",
    "ABSENT",
    "FAILED",
    "MXSecurity",
    "TLSALookup",
    "DANEResolver",
    "tlsaName",
]

SECURE = "secure"
INSECURE = "insecure"
ABSENT = "absent"
FAILED = "failed"


class MXSecurity(NamedTuple):
    """
    The DNSSEC verdict on a domain's MX records.

    @ivar secure: whether the MX RRset (or its denial, for a domain
        without MX records) validated.
    @ivar hosts: the host names of the validated MX RRset (lower case, no
        trailing dot; the domain itself without MX records).
    @ivar reason: why not secure, when not.
    """

    secure: bool
    hosts: frozenset[str] = frozenset()
    reason: str = ""


class TLSALookup(NamedTuple):
    """
    The TLSA records of one MX host.

    @ivar state: L{SECURE}, L{INSECURE}, L{ABSENT} or L{FAILED}.
    @ivar records: every record found (usable or not).
    @ivar reason: one line, for L{FAILED}.
    """

    state: str
    records: tuple[TLSARecord, ...] = ()
    reason: str = ""

    @property
    def usable(self) -> tuple[TLSARecord, ...]:
        """
        The records DANE can use: validated and usable for SMTP.
        """
        if self.state != SECURE:
            return ()
        return tuple(r for r in self.records if r.usable)


def tlsaName(host: str, port: int) -> str:
    """
    Where the TLSA records of C{host}'s SMTP service on C{port} are
    (RFC 6698 3, RFC 7672 2.2.3): C{_25._tcp.mx.example.test}.
    """
    return f"_{port}._tcp.{host.rstrip('.').lower()}"


def _name(rdataName: Any) -> str:
    text = rdataName.to_text(omit_final_dot=True).lower()
    return text or "."


class DANEResolver:
    """
    DANE's lookups; see the module docstring.
    """

    def __init__(self, resolver: Any) -> None:
        """
        @param resolver: provides C{lookupAuthenticated}
            (L{gopherpost.dns.Resolver}).
        """
        self._resolver = resolver

    def mxSecurity(self, domain: str) -> Deferred[MXSecurity]:
        """
        Whether C{domain}'s MX records validated, and which hosts they name.

        @return: a L{Deferred} that always fires with an L{MXSecurity}.
        """
        name = domain.rstrip(".").lower()
        if name.startswith("["):
            return succeed(MXSecurity(False, reason="an address literal"))

        def answered(answer: Any) -> MXSecurity:
            if not answer.authenticated:
                return MXSecurity(False, reason="the MX records are not DNSSEC-validated")
            hosts = frozenset(_name(r.exchange) for r in answer.records) or frozenset([name])
            return MXSecurity(True, hosts)

        def failed(failure: Failure) -> MXSecurity:
            failure.trap(DNSError)
            return MXSecurity(False, reason=f"MX lookup: {failure.getErrorMessage()}")

        return self._resolver.lookupAuthenticated(name, "MX").addCallbacks(answered, failed)

    def tlsa(self, host: str, port: int) -> Deferred[TLSALookup]:
        """
        The TLSA records of C{host}'s SMTP service on C{port}.

        @return: a L{Deferred} that always fires with a L{TLSALookup}.
        """
        name = tlsaName(host, port)

        def answered(answer: Any) -> TLSALookup:
            if not answer.authenticated:
                return TLSALookup(INSECURE)
            if not answer.records:
                return TLSALookup(ABSENT)
            return TLSALookup(SECURE, tuple(TLSARecord.fromRdata(r) for r in answer.records))

        def failed(failure: Failure) -> TLSALookup:
            failure.trap(DNSError)
            return TLSALookup(FAILED, reason=f"TLSA lookup of {name}: {failure.getErrorMessage()}")

        return self._resolver.lookupAuthenticated(name, "TLSA").addCallbacks(answered, failed)
