# -*- test-case-name: tests.test_milter_client -*-
"""
Opening a milter conversation: connect to the milter (C{inet:} or
C{unix:}), negotiate the options, all within the milter's timeout.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory

from gopherpost.config import MilterSpec
from gopherpost.filters.failure import withTimeout
from gopherpost.filters.milter.conversation import MilterConversation, negotiate
from gopherpost.filters.milter.protocol import MilterProtocol

__all__ = ["MilterClient", "milterEndpoint"]


def milterEndpoint(reactor: Any, spec: MilterSpec) -> IStreamClientEndpoint:
    """
    The client endpoint of a milter address.
    """
    timeout = max(1, int(spec.timeout + 0.999))
    if spec.path:
        return UNIXClientEndpoint(reactor, spec.path, timeout=timeout)
    try:
        address = ipaddress.ip_address(spec.host)
    except ValueError:
        return HostnameEndpoint(reactor, spec.host, spec.port, timeout=timeout)
    if address.version == 6:
        return TCP6ClientEndpoint(reactor, spec.host, spec.port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, spec.host, spec.port, timeout=timeout)


class MilterClient:
    """
    Opens conversations with one milter.

    @param reactor: for connecting and timing.
    @param spec: the milter (C{SMTP_MILTERS} entry).
    @param endpoint: where to connect (default from C{spec}).
    """

    def __init__(
        self, reactor: Any, spec: MilterSpec, endpoint: IStreamClientEndpoint | None = None
    ) -> None:
        self._reactor = reactor
        self.spec = spec
        self.name = spec.name
        self.timeout = spec.timeout
        self._endpoint = endpoint or milterEndpoint(reactor, spec)

    def open(self) -> Deferred[MilterConversation]:
        """
        Connect and negotiate.

        @return: a L{Deferred} firing with the L{MilterConversation},
            failing when the milter cannot be reached, does not answer in
            time or negotiates what we cannot speak.
        """
        factory = Factory.forProtocol(MilterProtocol)
        # Not a log line per connection (one per SMTP session).
        factory.noisy = False
        protocols: list[MilterProtocol] = []

        def connected(protocol: Any) -> Deferred[MilterConversation]:
            protocols.append(protocol)
            return negotiate(protocol).addCallback(
                lambda negotiation: MilterConversation(protocol, negotiation, self.name)
            )

        def failed(failure: Any) -> Any:
            for protocol in protocols:
                protocol.abort()
            return failure

        d = self._endpoint.connect(factory).addCallback(connected)
        return withTimeout(d, self.timeout, self._reactor).addErrback(failed)
