# -*- test-case-name: tests.test_reload_switch -*-
"""
A listener's factory that can be swapped while the port stays open: new
connections get the new factory's protocols, connections in progress keep
the protocols (and so the configuration) they started with.

Live reload rebuilds the whole factory tree of each listener from the new
settings (the SMTP factory of its role, implicit TLS around it, the PROXY
protocol reader) and switches each L{SwitchableFactory} to it.
"""

from __future__ import annotations

import weakref
from typing import Any

from twisted.internet.interfaces import ILoggingContext, IProtocolFactory
from zope.interface import implementer

__all__ = ["SwitchableFactory"]


@implementer(IProtocolFactory, ILoggingContext)
class SwitchableFactory:
    """
    Delegates to the factory it is switched to.

    The ports that listen with it start and stop the current factory; a
    factory switched away from is stopped (as if its port had closed) and
    the new one started.

    @ivar current: the factory new connections get.
    """

    noisy = False

    def __init__(self, factory: IProtocolFactory) -> None:
        self.current = factory
        self._ports = 0
        self._protocols: weakref.WeakSet[Any] = weakref.WeakSet()

    def logPrefix(self) -> str:
        """
        How the port names us in the log: as the factory it serves.
        """
        if ILoggingContext.providedBy(self.current):
            return str(self.current.logPrefix())
        return type(self.current).__name__

    def buildProtocol(self, addr: Any) -> Any:
        """
        A protocol of the current factory.
        """
        protocol = self.current.buildProtocol(addr)
        if protocol is not None:
            self._protocols.add(protocol)
        return protocol

    @property
    def busySessionCount(self) -> int:
        """
        Sessions built through this switch that have a message in flight
        (their innermost protocol, under TLS and PROXY wrappers, says it is
        C{busy}).
        """
        count = 0
        for protocol in list(self._protocols):
            while getattr(protocol, "wrappedProtocol", None) is not None:
                protocol = protocol.wrappedProtocol
            if getattr(protocol, "busy", False):
                count += 1
        return count

    def doStart(self) -> None:
        """
        A port started listening with us.
        """
        self._ports += 1
        self.current.doStart()

    def doStop(self) -> None:
        """
        A port stopped listening with us.
        """
        if self._ports > 0:
            self._ports -= 1
            self.current.doStop()

    def switchTo(self, factory: IProtocolFactory) -> IProtocolFactory:
        """
        Serve new connections with C{factory}.

        @return: the factory switched away from (its protocols go on).
        """
        old, self.current = self.current, factory
        for _ in range(self._ports):
            factory.doStart()
        for _ in range(self._ports):
            old.doStop()
        return old
