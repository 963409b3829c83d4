# -*- test-case-name: tests.test_mx -*-
"""
Where outbound mail for a domain goes: MX resolution (RFC 5321 section 5.1,
RFC 7505) or a configured smarthost (C{SMTP_RELAY_HOST}).

The queue asks an L{IDestinationResolver} for the ordered list of hosts of a
recipient domain, then for the addresses of each host in turn, and connects
to L{IDestinationResolver.port}.  Use L{destinationResolverFromSettings} to
get the right one.

Failures are L{gopherpost.dns.PermanentDNSError} (bounce now: the domain
does not exist, has a null MX, has no mail host at all) or
L{gopherpost.dns.TemporaryDNSError} (try again later).  Each carries an RFC
3463 C{status} for the bounce.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from itertools import groupby
from typing import NamedTuple

from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer

from gopherpost.dns import IDNSResolver, PermanentDNSError, TemporaryDNSError
from gopherpost.esmtp.idn import toALabel

__all__ = [
    "IDestinationResolver",
    "MailExchange",
    "MXResolver",
    "SmarthostResolver",
    "NullMXError",
    "NoMailHostError",
    "MailLoopError",
    "destinationResolverFromSettings",
    "normalizeDomain",
    "PermanentDNSError",
    "TemporaryDNSError",
]


class NullMXError(PermanentDNSError):
    """
    The domain publishes a null MX (RFC 7505): it accepts no mail.
    """

    status = "5.1.10"


class NoMailHostError(PermanentDNSError):
    """
    The domain (or an MX host) has neither MX nor address records.
    """

    status = "5.4.4"


class MailLoopError(PermanentDNSError):
    """
    The best MX of the domain is this server: delivering would loop.
    """

    status = "5.4.6"


class MailExchange(NamedTuple):
    """
    One host to try for a domain.

    @ivar hostname: the host's name (or an IP address for an address
        literal destination); the name a TLS certificate is checked against.
    @ivar preference: its MX preference (0 for implicit MX, literals and
        smarthosts).
    """

    hostname: str
    preference: int


class IDestinationResolver(Interface):
    """
    Finds the hosts that take mail for a recipient domain.
    """

    port = Attribute("The TCP port to connect to on every host.")

    def destinationKey(domain: str) -> str:
        """
        The name of the destination mail for C{domain} goes to: recipients
        with equal keys can share a connection and count against the same
        per-destination limit.
        """

    def resolveDestination(domain: str) -> defer.Deferred:
        """
        The hosts to try for C{domain}, best first.

        @return: a L{defer.Deferred} firing with a non-empty list of
            L{MailExchange}, or failing with L{PermanentDNSError} or
            L{TemporaryDNSError}.
        """

    def resolveHostAddresses(hostname: str) -> defer.Deferred:
        """
        The IP addresses to connect to for one host.

        @return: a L{defer.Deferred} firing with a non-empty list of
            addresses as text (IPv4 first), or failing with
            L{PermanentDNSError} or L{TemporaryDNSError}.
        """


def normalizeDomain(domain: str) -> str:
    """
    A mail domain as a lookup key: stripped, lower case, no trailing dot,
    internationalised names as A-labels.  Address literals are kept.

    @raise PermanentDNSError: when C{domain} is empty or not encodable.
    """
    text = domain.strip()
    if text.startswith("[") and text.endswith("]"):
        return text
    text = text.rstrip(".").lower()
    if not text:
        raise PermanentDNSError(domain, "empty domain")
    if not text.isascii():
        # esmtp: IDNA 2008 (Python's "idna" codec is IDNA 2003).
        aLabels = toALabel(text)
        if aLabels is None:
            raise PermanentDNSError(domain, "not a valid domain name")
        text = aLabels
    return text


def _addressLiteral(domain: str) -> str | None:
    """
    The address of an RFC 5321 address literal (C{[192.0.2.1]},
    C{[IPv6:2001:db8::1]}), or L{None} if C{domain} is not one.

    @raise PermanentDNSError: when it looks like a literal but is not valid.
    """
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return str(ipaddress.IPv6Address(inner[5:]))
        return str(ipaddress.IPv4Address(inner))
    except ValueError:
        raise PermanentDNSError(domain, "not a valid address literal") from None


def _ipAddress(hostname: str) -> str | None:
    try:
        return str(ipaddress.ip_address(hostname.strip("[]")))
    except ValueError:
        return None


def _hostAddresses(resolver: IDNSResolver, hostname: str) -> defer.Deferred:
    address = _ipAddress(hostname)
    if address is not None:
        return defer.succeed([address])

    def nonEmpty(addresses: list[str]) -> list[str]:
        if not addresses:
            raise NoMailHostError(hostname, "host has no A or AAAA record")
        return addresses

    return resolver.lookupAddresses(hostname).addCallback(nonEmpty)


@implementer(IDestinationResolver)
class MXResolver:
    """
    MX resolution per RFC 5321 section 5.1 and RFC 7505.

    MX hosts are sorted by preference; hosts of equal preference are
    shuffled on every call.  A domain without MX records (but existing) is
    its own mail host if it has an address.  A null MX (C{0 .}) is a
    permanent failure at once, so is NXDOMAIN; SERVFAIL and timeouts are
    temporary.

    @ivar port: the port to connect to (C{SMTP_OUTBOUND_PORT}).
    """

    def __init__(
        self,
        resolver: IDNSResolver,
        randomSource: random.Random | None = None,
        port: int = 25,
        localHostnames: Iterable[str] = (),
    ) -> None:
        """
        @param resolver: the DNS (a L{gopherpost.dns.Resolver}).
        @param randomSource: shuffles hosts of equal preference (default a
            fresh L{random.Random}; tests pass a seeded one).
        @param port: see L{MXResolver.port}.
        @param localHostnames: this server's own names.  An MX host with one
            of these names, and every host of equal or worse preference, is
            dropped (RFC 5321 section 5.1); when none is left, the domain
            fails with L{MailLoopError}.
        """
        self._resolver = resolver
        self._random = randomSource if randomSource is not None else random.Random()
        self.port = port
        self._localHostnames = frozenset(h.rstrip(".").lower() for h in localHostnames)

    def destinationKey(self, domain: str) -> str:
        """
        See L{IDestinationResolver.destinationKey}: the domain itself.
        """
        return normalizeDomain(domain)

    def resolveDestination(self, domain: str) -> defer.Deferred:
        """
        See L{IDestinationResolver.resolveDestination}.

        An address literal (C{[192.0.2.1]}, C{[IPv6:...]}) is delivered to
        that address without any lookup.
        """
        try:
            name = normalizeDomain(domain)
            literal = _addressLiteral(name)
        except PermanentDNSError as e:
            return defer.fail(e)
        if literal is not None:
            return defer.succeed([MailExchange(literal, 0)])
        d = self._resolver.lookupMX(name)
        d.addCallback(self._gotMX, name)
        return d

    def _gotMX(self, records: list[tuple[int, str]], domain: str) -> object:
        if not records:
            return self._implicitMX(domain)
        hosts = [(pref, host) for pref, host in records if host != "."]
        if not hosts:
            raise NullMXError(domain, "domain does not accept mail (null MX, RFC 7505)")
        best: dict = {}
        for pref, host in hosts:
            if host not in best or pref < best[host]:
                best[host] = pref
        ordered = sorted(best.items(), key=lambda item: item[1])
        localPrefs = [pref for host, pref in ordered if host in self._localHostnames]
        if localPrefs:
            ordered = [(h, p) for h, p in ordered if p < min(localPrefs)]
            if not ordered:
                raise MailLoopError(domain, "best MX host is this server (mail loop)")
        result: list[MailExchange] = []
        for pref, group in groupby(ordered, key=lambda item: item[1]):
            names = [host for host, _ in group]
            self._random.shuffle(names)
            result.extend(MailExchange(host, pref) for host in names)
        return result

    def _implicitMX(self, domain: str) -> defer.Deferred:
        def gotAddresses(addresses: list[str]) -> list[MailExchange]:
            if not addresses:
                raise NoMailHostError(domain, "domain has no MX and no A or AAAA record")
            return [MailExchange(domain, 0)]

        return self._resolver.lookupAddresses(domain).addCallback(gotAddresses)

    def resolveHostAddresses(self, hostname: str) -> defer.Deferred:
        """
        See L{IDestinationResolver.resolveHostAddresses}.  An IP address is
        returned as it is.
        """
        return _hostAddresses(self._resolver, hostname)


@implementer(IDestinationResolver)
class SmarthostResolver:
    """
    All mail goes to one host (C{SMTP_RELAY_HOST}); no MX lookup.

    @ivar host: the smarthost's name or address.
    @ivar port: its port.
    """

    def __init__(self, resolver: IDNSResolver, host: str, port: int) -> None:
        """
        @param resolver: resolves C{host} when it is a name.
        @param host: see L{SmarthostResolver.host}.
        @param port: see L{SmarthostResolver.port}.
        """
        self._resolver = resolver
        self.host = host.rstrip(".").lower()
        self.port = port

    def destinationKey(self, domain: str) -> str:
        """
        See L{IDestinationResolver.destinationKey}: the same for every
        domain, C{"[host]:port"}.
        """
        return f"[{self.host}]:{self.port}"

    def resolveDestination(self, domain: str) -> defer.Deferred:
        """
        See L{IDestinationResolver.resolveDestination}: always the smarthost.
        """
        return defer.succeed([MailExchange(self.host, 0)])

    def resolveHostAddresses(self, hostname: str) -> defer.Deferred:
        """
        See L{IDestinationResolver.resolveHostAddresses}.
        """
        return _hostAddresses(self._resolver, hostname)


def destinationResolverFromSettings(
    settings: object,
    resolver: IDNSResolver,
    randomSource: random.Random | None = None,
) -> IDestinationResolver:
    """
    The L{IDestinationResolver} for a server: a L{SmarthostResolver} when
    C{SMTP_RELAY_HOST} is set, else an L{MXResolver} on
    C{SMTP_OUTBOUND_PORT} that drops MX hosts named C{SMTP_HOSTNAME} (and
    worse).

    @param settings: a L{gopherpost.config.Settings}.
    @param resolver: the DNS, see L{gopherpost.dns.resolverFromSettings}.
    @param randomSource: see L{MXResolver.__init__}.
    """
    relayHost = settings.relayHost  # type: ignore[attr-defined]
    if relayHost is not None:
        host, port = relayHost
        return SmarthostResolver(resolver, host, port)
    return MXResolver(
        resolver,
        randomSource,
        port=settings.outboundPort,  # type: ignore[attr-defined]
        localHostnames=(settings.hostname,),  # type: ignore[attr-defined]
    )
