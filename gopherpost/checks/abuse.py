# -*- test-case-name: tests.test_checks_policies -*-
"""
Rate limits, greylisting and bans over an L{IStateStore}.

Clients are counted by network, as Postfix's anvil and postgrey do: rate
limits and bans by the IPv4 address or the IPv6 /64, greylisting by the
IPv4 /24 or the IPv6 /64 (a sender's pool of outgoing servers retries from
a neighbour address).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from gopherpost.checks.store import BanParameters, GreylistParameters, IStateStore

__all__ = [
    "BanList",
    "Greylister",
    "RateLimiter",
    "RateLimits",
    "clientNetwork",
    "normalizeSender",
]


def clientNetwork(address: str, ipv4Prefix: int = 32, ipv6Prefix: int = 64) -> str:
    """
    The network a client address is counted under, as text (C{"192.0.2.7"}
    for /32, C{"2001:db8:1:2::/64"}); an address that is not an IP address
    is returned as it is.
    """
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4Prefix if ip.version == 4 else ipv6Prefix
    if prefix == ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


_BATV = re.compile(r"^(?:prvs|msprvs\d*|btv1)=[^=]*=", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")


def normalizeSender(sender: str) -> str:
    """
    A reverse-path as postgrey compares it: lower case, without a BATV tag,
    digit runs in the local part (VERP, ticket numbers) replaced by C{#}.
    """
    local, at, domain = sender.strip().lower().rpartition("@")
    if not at:
        return sender.strip().lower()
    local = _BATV.sub("", local)
    return _DIGITS.sub("#", local) + "@" + domain


@dataclass(frozen=True)
class RateLimits:
    """
    The limits, each off at 0.

    @ivar connections: connections per client per minute.
    @ivar messages: messages (MAIL commands) per client per minute.
    @ivar recipients: recipients (RCPT commands) per client per minute.
    @ivar userMessages: messages per authenticated user per hour.
    """

    connections: int = 600
    messages: int = 0
    recipients: int = 0
    userMessages: int = 500


class RateLimiter:
    """
    Fixed-window counters (a minute, an hour), as Postfix's anvil keeps.
    """

    def __init__(self, store: IStateStore, clock: Any, limits: RateLimits) -> None:
        """
        @param store: where the counters live.
        @param clock: an C{IReactorTime}: the windows follow it.
        @param limits: the limits.
        """
        self._store = store
        self._clock = clock
        self.limits = limits

    def _hit(self, kind: str, subject: str, limit: int, window: float) -> defer.Deferred:
        if limit <= 0:
            return defer.succeed(True)
        now = self._clock.seconds()
        key = f"rate:{kind}:{subject}:{int(now // window)}"
        d = self._store.increment(key, now, window)
        return d.addCallback(lambda count: count <= limit)

    def connection(self, address: str) -> defer.Deferred:
        """
        Count a connection of C{address}.

        @return: a L{defer.Deferred} firing with whether it is within the
            limit.
        """
        return self._hit("conn", clientNetwork(address), self.limits.connections, 60.0)

    def message(self, address: str) -> defer.Deferred:
        """
        Count a message (MAIL) of C{address}; see L{connection}.
        """
        return self._hit("msg", clientNetwork(address), self.limits.messages, 60.0)

    def recipient(self, address: str) -> defer.Deferred:
        """
        Count a recipient (RCPT) of C{address}; see L{connection}.
        """
        return self._hit("rcpt", clientNetwork(address), self.limits.recipients, 60.0)

    def userMessage(self, user: str) -> defer.Deferred:
        """
        Count a message of the authenticated C{user}; see L{connection}.
        """
        return self._hit("user", user.lower(), self.limits.userMessages, 3600.0)


class Greylister:
    """
    Greylisting of (client network, sender, recipient) triplets.
    """

    def __init__(
        self, store: IStateStore, clock: Any, parameters: GreylistParameters | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self.parameters = parameters or GreylistParameters()

    def check(self, address: str, sender: str, recipient: str) -> defer.Deferred:
        """
        Record an attempt and decide.

        @return: a L{defer.Deferred} firing with a
            L{gopherpost.checks.store.GreylistDecision}.
        """
        network = clientNetwork(address, 24, 64)
        triplet = "\0".join((network, normalizeSender(sender), recipient.strip().lower()))
        # Hashed: no address is kept in the store in the clear.
        digest = hashlib.sha256(triplet.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return self._store.greylist(digest, network, self._clock.seconds(), self.parameters)


class BanList:
    """
    Bans clients that collect too many violations.
    """

    def __init__(self, store: IStateStore, clock: Any, parameters: BanParameters) -> None:
        self._store = store
        self._clock = clock
        self.parameters = parameters

    @staticmethod
    def subject(address: str) -> str:
        """
        The key a client address is banned under (its /32 or /64).
        """
        return "client:" + clientNetwork(address)

    def violation(self, address: str) -> defer.Deferred:
        """
        Count a violation of C{address}.

        @return: a L{defer.Deferred} firing with the end of the ban it
            started, or L{None}.
        """
        if self.parameters.threshold <= 0:
            return defer.succeed(None)
        return self._store.addViolation(
            self.subject(address), self._clock.seconds(), self.parameters
        )

    def bannedUntil(self, address: str) -> defer.Deferred:
        """
        @return: a L{defer.Deferred} firing with the end of C{address}'s
            ban, or L{None}.
        """
        if self.parameters.threshold <= 0:
            return defer.succeed(None)
        return self._store.bannedUntil(self.subject(address), self._clock.seconds())
