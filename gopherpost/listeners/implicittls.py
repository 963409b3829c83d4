# -*- test-case-name: tests.test_implicittls -*-
"""
Implicit TLS (RFC 8314, the submissions listener): the TLS handshake comes
before the banner, and must be done within a deadline.

L{ImplicitTLSFactory} is Twisted's L{TLSMemoryBIOFactory} (server side)
whose connections are aborted when the client has not finished the handshake
within C{timeout} seconds (C{SMTP_COMMAND_TIMEOUT}): a client that connects
and stays silent, or sends half a ClientHello, would otherwise hold its
connection for ever, since a graceful close waits for a handshake that never
comes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

__all__ = ["ImplicitTLSFactory"]

_log = Logger(namespace="gopherpost.listeners.implicittls")


class _DeadlineTLSProtocol(TLSMemoryBIOProtocol):
    """
    A server TLS connection with a handshake deadline.
    """

    factory: ImplicitTLSFactory
    _deadline: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        """
        Start the handshake deadline, then TLS.
        """
        factory = self.factory
        self._deadline = factory.clock.callLater(factory.timeout, self._checkHandshake)
        TLSMemoryBIOProtocol.makeConnection(self, transport)

    def _checkHandshake(self) -> None:
        self._deadline = None
        if self.getHandle().get_peer_finished() is not None:
            return
        assert self.transport is not None
        peer = self.transport.getPeer()
        _log.info(
            "TLS handshake from {client} on {listener} not done within {timeout:g} s: closed",
            client=getattr(peer, "host", peer),
            listener=self.factory.description,
            timeout=self.factory.timeout,
        )
        self.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Cancel the deadline.
        """
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        TLSMemoryBIOProtocol.connectionLost(self, reason)


class ImplicitTLSFactory(TLSMemoryBIOFactory):
    """
    Server-side TLS around C{wrappedFactory}, with a handshake deadline.

    @ivar clock: schedules the deadline.
    @ivar timeout: seconds the handshake may take.
    @ivar description: the listener, for log lines.
    """

    protocol = _DeadlineTLSProtocol
    noisy = False

    def __init__(
        self,
        contextFactory: Any,
        wrappedFactory: Any,
        clock: IReactorTime,
        timeout: float,
        description: str = "the implicit-TLS listener",
    ) -> None:
        try:
            # Twisted 23.8 and later take the clock for their write buffer.
            TLSMemoryBIOFactory.__init__(self, contextFactory, False, wrappedFactory, clock=clock)
        except TypeError:
            TLSMemoryBIOFactory.__init__(self, contextFactory, False, wrappedFactory)
        self.clock = clock
        self.timeout = timeout
        self.description = description
