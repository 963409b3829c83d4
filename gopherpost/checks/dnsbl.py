# -*- test-case-name: tests.test_checks_dnsbl -*-
"""
DNS blocklists (RFC 5782): is the client's address listed in one of
C{SMTP_DNSBL_ZONES}?

The address is looked up as C{<reversed octets>.<zone>} (IPv4) or
C{<reversed nibbles>.<zone>} (IPv6), type A.  An answer in 127.0.0.0/8 is a
listing, except 127.255.255.0/24, which Spamhaus uses for errors (e.g. a
query through a public resolver); answers elsewhere are errors too.  Errors
are reported, never taken for listings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from gopherpost.dns import DNSError, PermanentDNSError

__all__ = ["DNSBLChecker", "DNSBLResult", "queryName"]

_LISTING = ipaddress.ip_network("127.0.0.0/8")
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")


def queryName(address: str, zone: str) -> str:
    """
    The name to look C{address} up under C{zone}.

    @raise ValueError: when C{address} is not an IP address.
    """
    ip = ipaddress.ip_address(address.strip().strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        labels = str(ip).split(".")
    else:
        labels = list(ip.exploded.replace(":", ""))
    return ".".join(reversed(labels)) + "." + zone.strip(".").lower()


@dataclass(frozen=True)
class DNSBLResult:
    """
    What the zones said about one address.

    @ivar listed: C{(zone, answers)} for each zone that lists it.
    @ivar errors: C{(zone, reason)} for each zone that answered with an
        error code or an answer outside 127.0.0.0/8.
    @ivar temporary: C{(zone, reason)} for each zone that gave no answer.
    """

    address: str
    listed: tuple[tuple[str, tuple[str, ...]], ...] = ()
    errors: tuple[tuple[str, str], ...] = ()
    temporary: tuple[tuple[str, str], ...] = field(default=())

    @property
    def zone(self) -> str | None:
        """
        The first zone that lists the address, or L{None}.
        """
        return self.listed[0][0] if self.listed else None


class DNSBLChecker:
    """
    Looks client addresses up in DNS blocklists.
    """

    def __init__(self, resolver: Any, zones: Sequence[str]) -> None:
        """
        @param resolver: a L{gopherpost.dns.Resolver} (C{lookupRecords}).
        @param zones: the blocklist zones, in order.
        """
        self._resolver = resolver
        self.zones = tuple(z.strip(".").lower() for z in zones)

    def check(self, address: str) -> defer.Deferred:
        """
        Look C{address} up in every zone at once.

        @return: a L{defer.Deferred} firing with a L{DNSBLResult}; it never
            fails.
        """
        try:
            names = [(zone, queryName(address, zone)) for zone in self.zones]
        except ValueError:
            return defer.succeed(DNSBLResult(address))

        def lookup(zone: str, name: str) -> defer.Deferred:
            def answered(rdatas: list[Any]) -> tuple[str, str, object]:
                return ("answer", zone, tuple(str(r.address) for r in rdatas))

            def failed(failure: Failure) -> tuple[str, str, object]:
                if failure.check(PermanentDNSError):
                    return ("answer", zone, ())
                failure.trap(DNSError)
                return ("temporary", zone, str(failure.value))

            return self._resolver.lookupRecords(name, "A").addCallbacks(answered, failed)

        def combine(outcomes: list[tuple[str, str, Any]]) -> DNSBLResult:
            listed, errors, temporary = [], [], []
            for kind, zone, value in outcomes:
                if kind == "temporary":
                    temporary.append((zone, value))
                    continue
                listings = []
                for answer in value:
                    ip = ipaddress.ip_address(answer)
                    if ip in _ERROR_CODES or ip not in _LISTING:
                        errors.append((zone, f"error answer {answer}"))
                    else:
                        listings.append(answer)
                if listings:
                    listed.append((zone, tuple(listings)))
            return DNSBLResult(address, tuple(listed), tuple(errors), tuple(temporary))

        return defer.gatherResults([lookup(z, n) for z, n in names]).addCallback(combine)
