# -*- test-case-name: tests.test_relay_connectioncache -*-
"""
Outbound connections kept open between deliveries to the same host, as
Postfix's SMTP client caches them on demand.

When a session has sent every message it was given and nothing went wrong,
it waits here, idle, for up to L{IDLE_SECONDS} instead of saying QUIT.  A
delivery that starts meanwhile to the same host, address, port, TLS policy
and TLS mode takes it up and sends its messages at once: no TCP handshake,
greeting, EHLO or STARTTLS again.  Under a steady flow of mail to one
destination (a smarthost, a busy MX) most messages so travel on
connections that are already open.

A connection is taken up again only within L{REUSE_SECONDS} of being made
(Postfix's C{smtp_connection_reuse_time_limit}), then it says QUIT.  One
that the server closed while it waited is dropped when found; one that the
server closes just as it is taken up fails with
L{gopherpost.relay.session.StaleConnection} before anything of the new
round was answered, and the courier makes a new connection for those
messages (nothing of them was sent).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from twisted.internet.defer import Deferred

from gopherpost.relay.client import ReusedDelivery
from gopherpost.relay.session import ClientSession, ParkHook, ResultListener
from gopherpost.relay.transaction import Envelope

__all__ = ["IDLE_SECONDS", "REUSE_SECONDS", "ConnectionCache"]

#: Seconds an idle connection waits to be taken up (Postfix's
#: C{smtp_connection_cache_time_limit}).
IDLE_SECONDS = 2.0
#: Seconds after it was made that a connection may still be taken up.
REUSE_SECONDS = 300.0


class _Parked:
    def __init__(self, session: ClientSession, wake: Deferred[Any], connectedAt: float) -> None:
        self.session = session
        self.wake = wake
        self.connectedAt = connectedAt
        self.timer: Any = None


class ConnectionCache:
    """
    Idle outbound sessions by destination key.

    @param reactor: the clock (C{IReactorTime}).
    """

    def __init__(
        self,
        reactor: Any,
        idleSeconds: float = IDLE_SECONDS,
        reuseSeconds: float = REUSE_SECONDS,
    ) -> None:
        self._reactor = reactor
        self._idleSeconds = idleSeconds
        self._reuseSeconds = reuseSeconds
        self._idle: dict[Hashable, list[_Parked]] = {}
        self._stopped = False

    @property
    def idleConnections(self) -> int:
        """
        How many connections wait to be taken up.
        """
        return sum(len(parked) for parked in self._idle.values())

    def parkHook(self, key: Hashable) -> ParkHook:
        """
        The C{park} for a new connection to C{key} (see
        L{gopherpost.relay.session.ParkHook}), made now.
        """
        connectedAt = self._reactor.seconds()

        def park(session: ClientSession) -> Deferred[Any]:
            return self._park(key, session, connectedAt)

        return park

    def _park(self, key: Hashable, session: ClientSession, connectedAt: float) -> Deferred[Any]:
        wake: Deferred[Any] = Deferred()
        if self._stopped or not self._reusable(connectedAt):
            wake.callback(None)
            return wake
        parked = _Parked(session, wake, connectedAt)
        parked.timer = self._reactor.callLater(self._idleSeconds, self._expire, key, parked)
        self._idle.setdefault(key, []).append(parked)
        return wake

    def _reusable(self, connectedAt: float) -> bool:
        return self._reactor.seconds() - connectedAt < self._reuseSeconds

    def _expire(self, key: Hashable, parked: _Parked) -> None:
        waiting = self._idle.get(key, [])
        if parked in waiting:
            waiting.remove(parked)
            if not waiting:
                del self._idle[key]
        parked.wake.callback(None)

    def take(
        self, key: Hashable, envelopes: Sequence[Envelope], onResult: ResultListener
    ) -> ReusedDelivery | None:
        """
        Send C{envelopes} over an idle connection to C{key}, if there is one
        still open.

        @return: the delivery (like L{gopherpost.relay.client.DeliveryAttempt},
            but its result may fail with
            L{gopherpost.relay.session.StaleConnection}), or L{None}: no
            connection to take up.
        """
        waiting = self._idle.get(key)
        found: _Parked | None = None
        while waiting:
            parked = waiting.pop()
            if parked.timer.active():
                parked.timer.cancel()
            if parked.session.closed or not self._reusable(parked.connectedAt):
                parked.wake.callback(None)
                continue
            found = parked
            break
        if not waiting:
            self._idle.pop(key, None)
        if found is None:
            return None
        delivery = ReusedDelivery(found.session)
        found.wake.callback((envelopes, onResult, delivery))
        return delivery

    def stop(self) -> None:
        """
        Close every idle connection (with QUIT); park nothing from now on.
        """
        self._stopped = True
        idle, self._idle = self._idle, {}
        for waiting in idle.values():
            for parked in waiting:
                if parked.timer.active():
                    parked.timer.cancel()
                parked.wake.callback(None)
