"""
The transport security decision driven as the relay's courier drives it
(L{gopherpost.tlspolicy.interfaces}), over the real MX walk
(L{gopherpost.relay.mx.MXResolver}) and the real SMTP client, for loopback
tests of DANE and MTA-STS end to end.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from gopherpost.relay.client import DEFERRED, deliver
from gopherpost.relay.mx import MXResolver
from gopherpost.tlspolicy.policy import HostTLSPolicy, TLSFacts, TransportSecurity

__all__ = ["Attempt", "HostTry", "attemptDelivery"]


@dataclass
class HostTry:
    """
    One host tried (or refused).

    @ivar policy: the host's decision.
    @ivar status: the recipient's status after it (L{None}: refused).
    @ivar reply: the reply line (refusal, explanation or outcome).
    @ivar facts: the connection's L{TLSFacts}.
    """

    policy: HostTLSPolicy
    status: str | None
    reply: str
    facts: TLSFacts | None = None


@dataclass
class Attempt:
    """
    One delivery attempt.

    @ivar tries: every host tried, in order.
    @ivar status: the final status (C{sent}, C{deferred}, C{failed}).
    """

    tries: list[HostTry] = field(default_factory=list)
    status: str = DEFERRED

    @property
    def last(self) -> HostTry:
        return self.tries[-1]


@inlineCallbacks
def attemptDelivery(
    reactor: Any,
    security: TransportSecurity,
    mx: MXResolver,
    domain: str,
    recipient: str,
    message: bytes = b"Subject: t\r\n\r\nbody\r\n",
    requireTLS: bool = False,
) -> Generator[Deferred[Any], Any, Attempt]:
    """
    Deliver one message to C{recipient} at C{domain} as the courier would.
    """
    attempt = Attempt()
    destination = yield security.forDestination(domain, mx.port)
    exchanges = yield mx.resolveDestination(domain)
    for exchange in exchanges:
        addresses = yield mx.resolveHostAddresses(exchange.hostname)
        for address in addresses[:2]:
            host = yield destination.forHost(exchange.hostname, requireTLS=requireTLS)
            if not host.allowed:
                attempt.tries.append(HostTry(host, None, host.refusal))
                continue
            result = yield deliver(
                reactor,
                exchange.hostname,
                address,
                mx.port,
                "gopher.example.test",
                "alice@gopher.example.test",
                [recipient],
                message,
                host.clientPolicy,
                contextFactoryFor=host.contextFactoryFor,
            )
            facts = host.connectionEnded(result)
            outcome = result.outcomes[0]
            explained = host.explain(result)
            reply = outcome.text if explained is None else explained
            attempt.tries.append(HostTry(host, outcome.status, reply, facts))
            if outcome.status != DEFERRED:
                attempt.status = outcome.status
                return attempt
    return attempt
