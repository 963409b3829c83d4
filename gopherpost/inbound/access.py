# -*- test-case-name: tests.test_access -*-
"""
Who may connect: a L{twisted.cred} portal whose checker authenticates the
client's network address against C{SMTP_ALLOW_NETWORKS} and
C{SMTP_ALLOW_HOSTS}.

Host names in C{SMTP_ALLOW_HOSTS} match only through forward-confirmed
reverse DNS: the client's address has a PTR record with that name, and the
name resolves back to the address.  An admitted client's avatar is an
L{IClientIdentity}; the same portal can later take user-name credentials
for AUTH, with a second checker.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from gopherpost.interfaces import IPeerAddress

__all__ = [
    "PeerAddress",
    "AllowListChecker",
    "IClientIdentity",
    "ClientIdentity",
    "ClientRealm",
    "makePortal",
    "unmapAddress",
    "unmapNetwork",
]

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


def unmapNetwork(network: IPNetwork) -> IPNetwork:
    """
    A network written as IPv4-mapped IPv6 (C{::ffff:192.0.2.0/120}) as the
    IPv4 network it means; any other network as it is.
    """
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= 96
        and network.network_address.ipv4_mapped is not None
    ):
        return ipaddress.IPv4Network((network.network_address.ipv4_mapped, network.prefixlen - 96))
    return network


@implementer(IPeerAddress, ICredentials)
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
        self._networks = tuple(unmapNetwork(n) for n in networks)
        self._addresses = set()
        self._names = set()
        for host in hosts:
            try:
                self._addresses.add(unmapAddress(host))
            except ValueError:
                self._names.add(host.rstrip(".").lower())
        self._resolver = resolver

    def requestAvatarId(self, credentials: IPeerAddress) -> Deferred[bytes | tuple[()]]:
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


class IClientIdentity(Interface):
    """
    The avatar of an admitted client: who the portal says it is.
    """

    name = Attribute(
        "The avatar id as text: the client's address for the allow-list, "
        "later the user name for AUTH."
    )


@implementer(IClientIdentity)
class ClientIdentity:
    """
    An admitted client (see L{IClientIdentity}).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<ClientIdentity {self.name}>"


@implementer(IRealm)
class ClientRealm:
    """
    Gives every admitted client an L{IClientIdentity} named by its avatar
    id.  AUTH adds a second checker to the same portal; its users get their
    identity here too.
    """

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: Any
    ) -> tuple[Any, Any, Any]:
        """
        Return C{(IClientIdentity, identity, logout)}.
        """
        if IClientIdentity in interfaces:
            name = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
            return (IClientIdentity, ClientIdentity(name), lambda: None)
        raise NotImplementedError("GopherPost only provides IClientIdentity")


def makePortal(
    networks: Sequence[IPNetwork],
    hosts: Sequence[str],
    resolver: Any | None = None,
) -> Portal:
    """
    The portal every connection logs in to before it gets a greeting: the
    allow-list checker for L{IPeerAddress} credentials.
    """
    return Portal(ClientRealm(), [AllowListChecker(networks, hosts, resolver)])
