# -*- test-case-name: tests.test_access -*-
"""
Who may connect: a L{twisted.cred} portal whose checker authenticates the
client's network address against C{SMTP_ALLOW_NETWORKS} and
C{SMTP_ALLOW_HOSTS}.

Host names in C{SMTP_ALLOW_HOSTS} match only through forward-confirmed
reverse DNS: the client's address has a PTR record with that name, and the
name resolves back to the address.  The same portal can later take
user-name credentials for AUTH.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.mail.smtp import IMessageDelivery
from zope.interface import implementer

from gopherpost.interfaces import IPeerAddress

__all__ = ["PeerAddress", "AllowListChecker", "DeliveryRealm", "makePortal", "unmapAddress"]

_log = Logger()

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def unmapAddress(host: str) -> IPAddress:
    """
    Parse an address, turning IPv4-mapped IPv6 (C{::ffff:192.0.2.1}) into
    IPv4 and dropping an IPv6 zone.  Recent answers are remembered (the
    address objects are immutable): every connection parses its peer's
    address a few times.
    """
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _unmapNetwork(network: IPNetwork) -> IPNetwork:
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= 96
        and network.network_address.ipv4_mapped is not None
    ):
        return ipaddress.IPv4Network((network.network_address.ipv4_mapped, network.prefixlen - 96))
    return network


@implementer(IPeerAddress)
class PeerAddress:
    """
    Credentials naming the address a client connects from.
    """

    def __init__(self, host: str, port: int = 0) -> None:
        self.host = str(unmapAddress(host))
        self.port = port

    def __repr__(self) -> str:
        return f"<PeerAddress {self.host}:{self.port}>"


@implementer(ICredentialsChecker)
class AllowListChecker:
    """
    Allow clients by address, network, or forward-confirmed host name.

    @param networks: allowed networks (IPv4-mapped ones are unmapped).
    @param hosts: IP literals or host names.
    @param resolver: provides C{forwardConfirmedNames(ip) -> Deferred[set]};
        needed only when C{hosts} contains names.

    The avatar id is the client's address as text.
    """

    credentialInterfaces = (IPeerAddress,)

    def __init__(
        self,
        networks: Iterable[IPNetwork],
        hosts: Iterable[str],
        resolver: Any | None = None,
    ) -> None:
        self._networks = tuple(_unmapNetwork(n) for n in networks)
        self._addresses = set()
        self._names = set()
        for host in hosts:
            try:
                self._addresses.add(unmapAddress(host))
            except ValueError:
                self._names.add(host.rstrip(".").lower())
        self._resolver = resolver

    def requestAvatarId(self, credentials: IPeerAddress) -> Deferred[bytes]:
        """
        Succeed with the client's address, or fail with L{UnauthorizedLogin}.
        """
        try:
            address = unmapAddress(credentials.host)
        except ValueError:
            return fail(UnauthorizedLogin(f"not an IP address: {credentials.host!r}"))
        avatarId = str(address).encode("ascii")
        if address in self._addresses or any(
            address.version == n.version and address in n for n in self._networks
        ):
            return succeed(avatarId)
        if not self._names or self._resolver is None:
            return fail(UnauthorizedLogin(f"{address} is not allowed"))

        def checkNames(names: Iterable[str]) -> bytes:
            confirmed = {n.rstrip(".").lower() for n in names}
            if confirmed & self._names:
                return avatarId
            raise UnauthorizedLogin(
                f"{address} is not allowed (forward-confirmed names: "
                f"{', '.join(sorted(confirmed)) or 'none'})"
            )

        def lookupFailed(failure):
            if failure.check(UnauthorizedLogin):
                return failure
            _log.info(
                "Reverse DNS for {address} failed: {error}",
                address=str(address),
                error=failure.getErrorMessage(),
            )
            raise UnauthorizedLogin(f"{address} is not allowed (reverse DNS failed)")

        d = self._resolver.forwardConfirmedNames(str(address))
        d.addCallback(checkNames)
        d.addErrback(lookupFailed)
        return d


@implementer(IRealm)
class DeliveryRealm:
    """
    Gives every admitted client its own L{IMessageDelivery}.

    @param deliveryFactory: called with the avatar id (the client's address
        as text) to make the delivery object.
    """

    def __init__(self, deliveryFactory: Callable[[str], Any]) -> None:
        self._deliveryFactory = deliveryFactory

    def requestAvatar(self, avatarId: bytes, mind: object, *interfaces: Any) -> tuple:
        """
        Return C{(IMessageDelivery, delivery, logout)}.
        """
        if IMessageDelivery in interfaces:
            avatar = self._deliveryFactory(avatarId.decode("ascii"))
            return (IMessageDelivery, avatar, lambda: None)
        raise NotImplementedError("GopherPost only provides IMessageDelivery")


def makePortal(
    deliveryFactory: Callable[[str], Any],
    networks: Sequence[IPNetwork],
    hosts: Sequence[str],
    resolver: Any | None = None,
) -> Portal:
    """
    The portal every connection logs in to before it gets a greeting.
    """
    return Portal(DeliveryRealm(deliveryFactory), [AllowListChecker(networks, hosts, resolver)])
